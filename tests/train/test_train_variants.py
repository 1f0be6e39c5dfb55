"""Trainer settings beside the ZeRO stages: gradient accumulation, bf16, the minutes cadence of checkpoints."""

from __future__ import annotations

import json
import math

import pytest
from safetensors.torch import load_file

from .test_train_runs import losses, overrides, spawn


@pytest.mark.slow
def test_accumulating_two_half_batches_equals_one_batch(tmp_path):
    """Same global batch (32), same samples per optimizer step: in fp32 the losses agree to rounding."""
    whole = tmp_path / "whole"
    half = tmp_path / "half"
    common = ("max_steps=6", "checkpoint.every_steps=null", "ema.enabled=false")
    spawn(2, overrides(whole, *common), tmp_path)
    summary = spawn(2, overrides(half, *common, "data.batch_size=8", "engine.grad_accum=2"), tmp_path)
    a, b = losses(whole), losses(half)
    assert sorted(a) == sorted(b) == list(range(1, 7))
    assert max(abs(a[s] - b[s]) for s in a) < 1e-5, (a, b)
    assert a[6] < a[1]  # it did train
    assert summary["steps"] == 6


@pytest.mark.slow
def test_bf16_trains_and_checkpoints_fp32_weights(tmp_path):
    run = tmp_path / "bf16"
    summary = spawn(2, overrides(run, "engine.precision=bf16", "engine.zero_stage=1"), tmp_path)
    loss = losses(run)
    assert all(math.isfinite(v) for v in loss.values())
    assert loss[12] < 0.8 * loss[1], loss  # a memorisable set: bf16 must still learn it
    assert summary["steps"] == 12 and summary["skipped_batches"] == 0
    ckpt = run / "checkpoints"
    weights = load_file(str(ckpt / (ckpt / "latest").read_text().strip() / "model.safetensors"))
    assert {str(t.dtype) for t in weights.values()} == {"torch.float32"}


@pytest.mark.slow
def test_minutes_cadence_saves_when_due_on_every_rank(tmp_path):
    """A tiny ``every_minutes`` makes every step due: a save per step, agreed by both ranks (no hang)."""
    run = tmp_path / "minutes"
    args = ("checkpoint.every_steps=null", "checkpoint.every_minutes=0.0001", "checkpoint.keep_last=100",
            "max_steps=4", "ema.enabled=false")  # fmt: skip
    spawn(2, overrides(run, *args), tmp_path)
    steps = sorted(json.loads((p / "meta.json").read_text())["step"] for p in (run / "checkpoints").glob("step_*"))
    assert steps == [1, 2, 3, 4]
