"""What a run reports: ``metrics.jsonl`` (one object per logged step), ``summary.json``, and a tracker seam.

Rank logic is decided at construction (STYLE.md 8): rank 0 gets a :class:`MetricsWriter` and the real
tracker; every other rank gets :class:`NullMetrics` and the null tracker (:mod:`swat_dist.tracking.base`), so
the loop never asks its rank.

MFU convention: training FLOPs per image = 3 x forward (backward ~ 2x forward) x 2 FLOPs per
multiply-add x fvcore forward GMACs; MFU = that x global images/s / (devices x peak FLOP/s).
"""

from __future__ import annotations

import json
import os
import resource
import sys
from pathlib import Path
from typing import Any

import torch

from ..files import atomic_write
from ..tracking.base import Tracker, metric_values

# Peak dense FLOP/s per device, matched by substring of the device name (bf16/fp16 tensor cores on GPUs).
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "A10G": 125e12, "L40S": 362e12, "V100": 125e12}
# CPU: a nominal 100 GFLOP/s per process (one AVX2 core at ~3 GHz with 2 FMA units is ~96 fp32 GFLOP/s).
# It makes CPU MFU comparable between runs, not meaningful in absolute terms. Override any device's
# value with the environment variable SWAT_DIST_PEAK_TFLOPS.
CPU_PEAK_FLOPS = 100e9


def peak_flops(device: torch.device) -> float:
    override = os.environ.get("SWAT_DIST_PEAK_TFLOPS")
    if override:
        return float(override) * 1e12
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return next((v for k, v in PEAK_FLOPS.items() if k in name), float("nan"))
    return CPU_PEAK_FLOPS


def train_flops_per_image(forward_gmacs: float) -> float:
    return 3 * 2 * forward_gmacs * 1e9


def memory_gb(device: torch.device) -> float:
    """Peak device memory (CUDA) or peak resident memory of this process (CPU), in GB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / 1e9 if sys.platform == "darwin" else rss * 1024 / 1e9


class NullMetrics:
    """What ranks other than 0 write: nothing."""

    def log(self, record: dict[str, Any]) -> None:
        pass

    def summary(self, record: dict[str, Any]) -> None:
        pass


def _before(record: dict[str, Any], step: int) -> bool:
    """Logged before the checkpoint of ``step``: its training lines, not an evaluation at that step (the
    resumed run repeats an end-of-epoch evaluation that ran after the save)."""
    return record["step"] < step or (record["step"] == step and "train/loss" in record)


class MetricsWriter:
    """Appends one JSON object per logged step to ``run_dir/metrics.jsonl`` and forwards it to the tracker.

    On resume the lines after the checkpoint's step are dropped first, so the file reads as one run.
    """

    def __init__(self, run_dir: Path, tracker: Tracker, resume_step: int | None) -> None:
        self.path, self.tracker = run_dir / "metrics.jsonl", tracker
        self.summary_path = run_dir / "summary.json"
        if self.path.exists():
            keep = []
            if resume_step is not None:
                lines = self.path.read_text().splitlines()
                keep = [ln for ln in lines if ln.strip() and _before(json.loads(ln), resume_step)]
            self.path.write_text("".join(ln + "\n" for ln in keep))

    def log(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        self.tracker.log_metrics(metric_values(record), step=int(record["step"]))

    def summary(self, record: dict[str, Any]) -> None:
        atomic_write(self.summary_path, json.dumps(record, indent=2) + "\n")


def finished_summary(run_dir: Path, step: int, config_hash: str, world_size: int) -> dict[str, Any] | None:
    """``run_dir/summary.json`` when it says the run already finished at ``step`` (the checkpoint being
    resumed), or None: the run has work left.

    A summary is written only after the last step, its evaluation and its save, so one that records this
    step, this config's hash and this world size belongs to a run with nothing left to do (the same config
    and world size give the same total steps). A run stopped after its last step but before its summary
    has none, or an older one of another step, so it resumes, evaluates and writes its own. Another config
    (a raised ``max_steps``, say) is not judged here: that run resumes as before.
    """
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict):
        return None
    same = (summary.get("steps"), summary.get("config_hash"), summary.get("world_size"))
    return summary if same == (step, config_hash, world_size) else None
