"""Launching training jobs: cluster profiles (:mod:`.profile`), submission through submitit (:mod:`.submit`,
the only submitit importer), and the run's job records (:mod:`.jobs`). Nothing here imports torch's
distributed stack or DeepSpeed at submit time: the training code is imported inside the job."""
