"""The tiny training job the launcher tests submit (as tests/train/test_train_runs.py: a 1-block micro
DeiT on 32 synthetic 32 px images), and a helper that resolves it against a cluster profile."""

from __future__ import annotations

import json
from pathlib import Path

from swat_dist.cluster.profile import Plan, load_profile, resolve
from swat_dist.config import load_config


def overrides(out: Path, *extra: str) -> list[str]:
    """2 ranks x 16 = one optimizer step per epoch; no periodic checkpoint (only a stop or the end saves)."""
    return [
        "model.name=swat_deit_micro_patch4_32", "model.num_classes=10", "model.drop_path_rate=0",
        "model.kwargs={depth: 1}", "data.format=synthetic", "data.synthetic_samples=32", "data.batch_size=16",
        "data.workers=0", "data.smoothing=0", "data.mixup=0", "data.cutmix=0", "data.reprob=0", "optim.lr=2e-3",
        "optim.lr_scale=none", "sched.epochs=100", "sched.warmup_epochs=0", "sched.cooldown_epochs=0",
        "engine.precision=fp32", "ema.enabled=true", "ema.decay=0.9", "tracking.backend=none",
        "checkpoint.every_minutes=null", "checkpoint.keep_last=1", "log_every=1", "max_steps=40",
        "eval.every_epochs=0", f"output_dir={out}", *extra,
    ]  # fmt: skip


def plan(out: Path, *extra: str, cluster: str = "local-test", slurm: bool = True, **kw: int | None) -> Plan:
    args = overrides(out, *extra)
    return resolve(load_config([], args), [], args, load_profile(cluster), slurm_available=slurm,
                   nodes=kw.get("nodes"), gpus_per_node=kw.get("gpus_per_node"))  # fmt: skip


def losses(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    train = [r for r in rows if "train/loss" in r]
    assert len({r["step"] for r in train}) == len(train), "a step was logged twice"
    return {r["step"]: r["train/loss"] for r in train}


def profile_with(tmp_path: Path, name: str, *lines: str) -> Path:
    """The local-test cluster profile with ``lines`` appended (``max_requeues: 0``, say) as ``tmp_path/name.yaml``."""
    path = tmp_path / f"{name}.yaml"
    base = (Path(__file__).parents[2] / "launch/clusters/local-test.yaml").read_text()
    path.write_text(base + "".join(f"{line}\n" for line in lines))
    return path
