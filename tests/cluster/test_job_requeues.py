"""The job entry's two Slurm gaps (issue 17 item 5), without a cluster: the stop flag is armed as soon as
submitit unpickles the job, and only the job's own preemption requeues count towards max_requeues."""

from __future__ import annotations

import pickle
import signal

import pytest

from swat_dist.cluster.submit import JobStopped, TrainJob
from swat_dist.dist import DistEnv
from swat_dist.train import preempt


@pytest.fixture(autouse=True)
def _restore_usr2():
    before = signal.getsignal(signal.SIGUSR2)
    preempt.reset()
    yield
    signal.signal(signal.SIGUSR2, before)
    preempt.reset()


def test_unpickling_the_job_arms_the_stop_flag_at_once():
    blob = pickle.dumps(TrainJob(["c.yaml"], [], "USR2", max_requeues=2))
    signal.signal(signal.SIGUSR2, signal.SIG_DFL)  # what a fresh task has: the default action ends it
    job = pickle.loads(blob)
    assert job.requeues == 0
    signal.raise_signal(signal.SIGUSR2)  # a preemption warning during start-up: a flag, not the end
    assert preempt.received() == signal.SIGUSR2


def test_a_pickle_from_before_the_counter_starts_at_zero():
    job = TrainJob(["c.yaml"], [], "USR2", max_requeues=1)
    del job.requeues
    assert pickle.loads(pickle.dumps(job)).requeues == 0


def test_administrator_requeues_do_not_use_up_max_requeues():
    calls: list[int] = []

    def submitits_handler(signum, frame):  # stands in for submitit's checkpoint-and-requeue
        calls.append(signum)
        raise SystemExit(0)

    signal.signal(signal.SIGUSR2, submitits_handler)
    job = TrainJob(["c.yaml"], [], "USR2", max_requeues=1)
    signum = preempt.install("USR2")  # as __call__ does, after submitit installed its handler
    env = DistEnv(launcher="slurm", restart_count=3)  # three restarts by `scontrol requeue`, none by us
    with pytest.raises(SystemExit):
        job._requeue(env, signum, step=10)
    assert calls == [signal.SIGUSR2] and job.requeues == 1  # counted before submitit pickles the job
    with pytest.raises(JobStopped, match=r"already requeued 1 times \(max_requeues 1"):
        job._requeue(env, signum, step=20)
