"""The converters' worker pool ends whatever stop handlers its process has (a trainer's flag, submitit's
SIGTERM bypass, a local sweep's exit): Pool's own exit, with such a handler, waited forever on a worker."""

import subprocess
import sys

SCRIPT = """
import signal, sys, time
from swat_dist.data.convert.base import ordered_map
signal.signal(signal.SIGTERM, lambda *a: None)  # a stop-flag handler: SIGTERM alone no longer ends a process
with ordered_map(2) as imap:
    assert list(imap(abs, [-1, -2, 3])) == [1, 2, 3]
try:
    with ordered_map(2) as imap:
        results = imap(time.sleep, [0.01] + [0.5] * 8)
        next(results)
        raise RuntimeError("the consumer fails while the workers are busy")
except RuntimeError:
    pass
import multiprocessing
print("ended", multiprocessing.active_children())
"""


def test_the_pool_ends_on_success_and_on_failure_under_a_sigterm_flag_handler():
    # before the fix the second block hung for good; SIGKILL at 60 s turns a hang into a failure
    done = subprocess.run(["timeout", "-s", "KILL", "60", sys.executable, "-c", SCRIPT], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ended []"  # no worker left behind
