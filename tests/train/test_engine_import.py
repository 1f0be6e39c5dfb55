"""Importing the engine (hence DeepSpeed) does not import mlflow (issue 28 item 7), and mlflow still imports after.

DeepSpeed's config imports its autotuner, which imports mlflow whenever it is installed: 1.3 s of every rank's
start on an idle 2-core machine, ~2 s on a loaded one (docs/benchmarks.md), tracking off or not.
"""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
{first}
import swat_dist.train.engine
import deepspeed.autotuning.autotuner as autotuner
print("loaded", "mlflow" in sys.modules, "deepspeed_sees", autotuner.has_mlflow)
import mlflow
print("after", mlflow.__name__)
"""


def _probe(first: str) -> list[str]:
    cmd = [sys.executable, "-c", PROBE.format(first=first)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return [line for line in done.stdout.splitlines() if line.startswith(("loaded", "after"))]


def test_engine_import_leaves_mlflow_unloaded_and_importable():
    assert _probe("") == ["loaded False deepspeed_sees False", "after mlflow"]


def test_mlflow_imported_first_stays_as_it_is():
    # rank 0 of a tracked run may import mlflow (swat_dist.tracking) before the engine: nothing is hidden then
    assert _probe("import mlflow") == ["loaded True deepspeed_sees True", "after mlflow"]
