"""Real 2-rank gloo runs on a tiny model and synthetic data: every ZeRO stage trains (memorises a small
set), evaluates each val sample exactly once, checkpoints, exports to timm; a run killed with SIGKILL
resumes bit for bit."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import timm
import torch
import torch.multiprocessing as mp

from swat_dist.config import load_config
from swat_dist.data.loaders.build import build_loaders
from swat_dist.dist import DistEnv
from swat_dist.tasks import build_task
from swat_dist.train.evaluate import evaluate
from swat_dist.train.export import evaluate_checkpoint, export

ROOT = Path(__file__).resolve().parents[2]
MODEL = "swat_deit_micro_patch4_32"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def overrides(out: Path, *extra: str) -> list[str]:
    """32 synthetic samples, 2 ranks x 16: every step sees the same 32 images, so the loss must fall."""
    return [
        f"model.name={MODEL}", "model.num_classes=10", "model.drop_path_rate=0", "model.kwargs={depth: 1}",
        "data.format=synthetic", "data.synthetic_samples=32", "data.batch_size=16", "data.workers=0",
        "data.smoothing=0", "data.mixup=0", "data.cutmix=0", "data.reprob=0", "optim.lr=2e-3",
        "optim.lr_scale=none", "sched.epochs=100", "sched.warmup_epochs=0",
        "sched.cooldown_epochs=0", "engine.precision=fp32", "ema.enabled=true", "ema.decay=0.9",
        "tracking.backend=none", "checkpoint.every_steps=4", "checkpoint.every_minutes=null",
        "checkpoint.keep_last=1", "log_every=1", "max_steps=12", "eval.every_epochs=0", f"output_dir={out}", *extra,
    ]  # fmt: skip


def _rank(rank: int, world: int, port: int, args: list[str], result: str) -> None:
    from swat_dist.train.run import run

    torch.set_num_threads(1)
    env = DistEnv(rank=rank, local_rank=rank, world_size=world, local_world_size=world, master_port=port,
                  launcher="torchrun" if world > 1 else "single")  # fmt: skip
    summary = run(load_config([], args), env)
    if rank == 0:
        Path(result).write_text(json.dumps(summary))


def spawn(world: int, args: list[str], tmp: Path) -> dict:
    result = tmp / f"summary-{time.monotonic_ns()}.json"
    mp.spawn(_rank, args=(world, _port(), args, str(result)), nprocs=world, join=True)
    return json.loads(result.read_text())


def losses(run_dir: Path) -> dict[int, float]:
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in lines if "train/loss" in r]
    assert len({r["step"] for r in train}) == len(train), "a step was logged twice (resume must truncate the log)"
    return {r["step"]: r["train/loss"] for r in train}


def eval_export(file: Path, out: Path) -> dict:
    """Load an export through timm's pretrained path and evaluate it in this (single) process."""
    model = timm.create_model(
        MODEL, pretrained=True, num_classes=10, depth=1, pretrained_cfg_overlay=dict(file=str(file), num_classes=10)
    ).eval()
    cfg = load_config([], overrides(out))
    loaders = build_loaders(cfg.data, model.pretrained_cfg, world_size=1, rank=0, seed=cfg.seed, num_classes=10)
    return evaluate(model, loaders.val, build_task(cfg, loaders.augment), torch.device("cpu"))


@pytest.mark.slow
@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_zero_stage_trains_evaluates_checkpoints_and_exports(stage, tmp_path):
    out = tmp_path / "run"
    summary = spawn(2, overrides(out, f"engine.zero_stage={stage}"), tmp_path)
    loss = losses(out)
    assert sorted(loss) == list(range(1, 13))
    first, last = sum(loss[s] for s in (1, 2, 3)) / 3, sum(loss[s] for s in (10, 11, 12)) / 3
    assert last < first - 0.05, loss
    assert summary["steps"] == 12 and summary["val_set_size"] == 6
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    waits = [(r["time/data_wait_fraction"], r["time/data_wait_fraction_max"]) for r in rows if "train/loss" in r]
    assert len(waits) == 12 and all(0 <= mean <= worst < 1 for mean, worst in waits)  # every rank's share, logged
    final = summary["final"]
    assert final["val/samples"] == final["val_ema/samples"] == summary["val_samples"] == 6
    assert final["val/loss"] != final["val_ema/loss"]  # the EMA really is swapped in
    ckpts = out / "checkpoints"
    assert (ckpts / "latest").read_text().strip() == "step_00000012"
    assert sorted(p.name for p in ckpts.iterdir() if p.name.startswith("step_")) == ["step_00000012"]  # keep_last=1
    for ema, key in ((False, "val/loss"), (True, "val_ema/loss")):
        file = export(out, tmp_path / f"export-{ema}.safetensors", ema=ema)
        res = eval_export(file, out)
        assert res["samples"] == 6
        assert res["loss"] == pytest.approx(final[key], rel=1e-5, abs=1e-6)
    if stage == 0:  # `swat-dist eval` on the run folder reproduces the run's final evaluation
        for ema, key in ((False, "val/loss"), (True, "val_ema/loss")):
            res = evaluate_checkpoint(load_config([], overrides(out)), str(out), ema=ema)
            assert res is not None and res["samples"] == 6
            assert res["loss"] == pytest.approx(final[key], rel=1e-5, abs=1e-6)
        # another world size resumes with the same global batch: tests/train/test_elastic.py


def torchrun(args: list[str], log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_port()),
           "-m", "swat_dist", "train", *args]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL torchrun and every process under it at once: torchrun (torch 2.14) starts each rank in a
    session of its own, so killing torchrun's process group alone would leave the ranks training on."""
    ranks = psutil.Process(proc.pid).children(recursive=True)
    for p in [psutil.Process(proc.pid), *ranks]:
        p.kill()
    proc.wait(timeout=60)  # torchrun is reaped by Popen (psutil's wait would take its exit status)
    psutil.wait_procs(ranks, timeout=60)


RESUME_STAGES = [int(s) for s in os.environ.get("SWAT_TEST_RESUME_STAGES", "1").split(",")]


@pytest.mark.slow
@pytest.mark.parametrize("stage", RESUME_STAGES)
def test_sigkill_then_resume_auto_gives_identical_losses(stage, tmp_path):
    # 4 steps per epoch: the checkpoints every 5 steps fall mid-epoch. One stage by default (75 s each);
    # SWAT_TEST_RESUME_STAGES=0,1,2,3 runs them all.
    steps = ["max_steps=40", "data.synthetic_samples=128", "checkpoint.every_steps=5", "checkpoint.keep_last=2",
             f"engine.zero_stage={stage}"]  # fmt: skip
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    assert torchrun(overrides(ref, *steps), tmp_path / "ref.log").wait(timeout=300) == 0
    proc = torchrun(overrides(cut, *steps), tmp_path / "cut.log")
    pointer, killed_at = cut / "checkpoints" / "latest", None
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline:
        if pointer.is_file() and pointer.read_text().strip():
            kill_tree(proc)  # the launcher and both ranks, mid-training
            killed_at = int(pointer.read_text().strip().split("_")[1])
            break
        time.sleep(0.01)
    proc.wait(timeout=60)
    assert killed_at is not None and 5 <= killed_at < 40, "the run finished before it could be killed"
    assert proc.returncode == -signal.SIGKILL and max(losses(cut)) < 40, "the ranks trained on after the kill"
    resumed = torchrun(overrides(cut, *steps), tmp_path / "resumed.log")
    assert resumed.wait(timeout=300) == 0, (tmp_path / "resumed.log").read_text()[-3000:]
    a, b = losses(ref), losses(cut)
    assert sorted(a) == sorted(b) == list(range(1, 41))
    assert max(abs(a[s] - b[s]) for s in a) <= 1e-6, {s: (a[s], b[s]) for s in a if a[s] != b[s]}
    sa = json.loads((ref / "summary.json").read_text())
    sb = json.loads((cut / "summary.json").read_text())
    for key in ("val/loss", "val/top1", "val_ema/loss", "val_ema/top1"):
        assert sa["final"][key] == pytest.approx(sb["final"][key], abs=1e-6)


@pytest.mark.slow
def test_non_finite_losses_stop_the_run_naming_the_last_checkpoint(tmp_path):
    # lr 1e30: the first step blows the weights up, every later loss is NaN and is skipped, not stepped
    args = overrides(tmp_path / "run", "optim.lr=1e30", "checkpoint.every_steps=1", "ema.enabled=false")
    with pytest.raises(Exception, match=r"not finite for 10 micro-batches in a row at step 1.*checkpoint: step 1"):
        spawn(1, args, tmp_path)
    assert (tmp_path / "run" / "checkpoints" / "latest").read_text().strip() == "step_00000001"
