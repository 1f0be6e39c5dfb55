"""Segmentation training end to end (task: segment): 2 gloo ranks through DeepSpeed on the seg-digits set,
a run killed with SIGKILL mid-epoch and resumed gives the same per-step losses and the same mIoU."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from swat_dist.config import load_config
from swat_dist.data.sets.seg_digits import write_seg_digits
from swat_dist.train.export import evaluate_checkpoint

from .test_train_runs import losses, torchrun


@pytest.fixture(scope="module")
def seg_digits(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("segdigits")
    write_seg_digits(root, train=24, val=7, size=64, seed=1)
    return root


def seg_overrides(data: Path, out: Path, *extra: str) -> list[str]:
    """A micro SWAT DeiT + small UperNet on 64 px crops: 2 ranks x 2 images = 6 steps an epoch."""
    return [
        "task=segment", "model.name=swat_deit_micro_patch4_32", "model.num_classes=11", "model.drop_path_rate=0.1",
        "data.format=folder", f"data.path={data}", "data.batch_size=2", "data.workers=0", "seg.crop_size=64",
        "seg.scale=[256,64]", "seg.channels=32", "seg.aux_channels=16", "seg.eval_mode=slide", "seg.eval_stride=43",
        "optim.lr=1e-3", "optim.lr_scale=none", "sched.epochs=3", "sched.warmup_epochs=0", "sched.cooldown_epochs=0",
        "engine.precision=fp32", "tracking.backend=none", "checkpoint.every_minutes=null", "checkpoint.every_steps=5",
        "checkpoint.keep_last=2", "log_every=1", "eval.every_epochs=1", f"output_dir={out}", *extra,
    ]  # fmt: skip


@pytest.mark.slow
def test_segmentation_sigkill_then_resume_gives_identical_losses_and_miou(seg_digits, tmp_path):
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    assert torchrun(seg_overrides(seg_digits, ref), tmp_path / "ref.log").wait(timeout=300) == 0, (
        tmp_path / "ref.log"
    ).read_text()[-3000:]
    proc = torchrun(seg_overrides(seg_digits, cut), tmp_path / "cut.log")
    pointer, killed_at = cut / "checkpoints" / "latest", None
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline:
        if pointer.is_file() and pointer.read_text().strip():
            os.killpg(proc.pid, signal.SIGKILL)  # launcher and both ranks, mid-epoch (step 5 of 6)
            killed_at = int(pointer.read_text().strip().split("_")[1])
            break
        time.sleep(0.01)
    proc.wait(timeout=60)
    assert killed_at is not None and 5 <= killed_at < 18, "the run finished before it could be killed"
    resumed = torchrun(seg_overrides(seg_digits, cut), tmp_path / "resumed.log")
    assert resumed.wait(timeout=300) == 0, (tmp_path / "resumed.log").read_text()[-3000:]
    a, b = losses(ref), losses(cut)
    assert sorted(a) == sorted(b) == list(range(1, 19))
    assert max(abs(a[s] - b[s]) for s in a) <= 1e-6, {s: (a[s], b[s]) for s in a if a[s] != b[s]}
    assert a[18] < a[1]  # it learns
    sa, sb = (json.loads((p / "summary.json").read_text()) for p in (ref, cut))
    assert sa["final"]["val/samples"] == sb["final"]["val/samples"] == 7
    for key in ("val/mIoU", "val/mAcc", "val/aAcc"):
        assert sa["final"][key] == pytest.approx(sb["final"][key], abs=1e-9), key
    # `swat-dist eval` on the run: slide (the run's mode) reproduces its final evaluation exactly - every rank
    # evaluated rank 0's BatchNorm statistics, the ones the checkpoint keeps; whole mode works too
    cfg = load_config([str(ref / "config.yaml")], [])
    again = evaluate_checkpoint(cfg, str(ref))
    assert again is not None and again["samples"] == 7
    assert again["mIoU"] == pytest.approx(sa["final"]["val/mIoU"], abs=1e-9)
    whole = evaluate_checkpoint(load_config([str(ref / "config.yaml")], ["seg.eval_mode=whole"]), str(ref))
    assert whole is not None and whole["samples"] == 7 and 0 < whole["aAcc"] <= 100
    assert sa["best"]["val/mIoU"] == max(
        r["val/mIoU"] for r in map(json.loads, (ref / "metrics.jsonl").read_text().splitlines()) if "val/mIoU" in r
    )
