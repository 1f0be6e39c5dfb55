"""Where a run goes: cluster profiles, submit and sweep through submitit (its only importer), job records, containers.
May import config, dist, files, train's torch-free modules and tracking; the training run only inside the job."""
