"""``swat-dist config -c FILE [-c FILE2] [key=value ...] [--world-size N]``: what a run would use.

Prints the resolved config (YAML that loads back to the same config), the values derived from it and
the world size (global batch, the lr after scaling and the rule used, epochs, steps per epoch when the
dataset size is known without a scan), the config hash, and the DeepSpeed config it generates. Only
parsing happens at import time; the handler imports the config modules when it runs (no torch).
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any


def add_config_parser(sub: Any) -> None:
    """Register ``config`` on the ``swat-dist`` sub-command parsers."""
    p = sub.add_parser("config", help="the resolved config, its derived values (global batch, lr) and DeepSpeed config")
    p.add_argument("-c", "--config", dest="files", action="append", default=[], metavar="FILE",
                   help="YAML overlay or flat timm train.py file; repeat to layer them (later wins)")  # fmt: skip
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="dotted overrides (YAML values), in one run: optim.lr=1e-3 data.scale=[0.5,1]")  # fmt: skip
    p.add_argument("--world-size", type=int, default=None, help="number of ranks (default: env WORLD_SIZE, else 1)")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="device type the runtime checks assume")
    p.set_defaults(func=_config)


def _world_size(arg: int | None) -> tuple[int, str]:
    from .config import ConfigError

    if arg is not None:
        return arg, "--world-size"
    env = os.environ.get("WORLD_SIZE")
    if env is None:
        return 1, "default"
    try:
        return int(env), "env WORLD_SIZE"
    except ValueError:
        raise ConfigError(f"env WORLD_SIZE: {env!r} is not an integer") from None


def render(cfg: Any, world_size: int, source: str = "", notes: tuple[str, ...] = ()) -> str:
    """The text ``swat-dist config`` prints."""
    from .config import config_hash, derived, to_yaml, train_samples
    from .train.ds_config import deepspeed_config

    d = derived(cfg, world_size)
    samples = train_samples(cfg)
    steps = (
        f"{samples // d['global_batch']}  # {samples} samples // {d['global_batch']}, the rest dropped each epoch"
        if samples is not None
        else "null  # unknown until the loader scans the folder"
    )
    accum = cfg.engine.grad_accum
    rows = [
        ("world_size", f"{world_size}  # {source}" if source else str(world_size)),
        ("global_batch", f"{d['global_batch']}  # {cfg.data.batch_size} per rank x {accum} accum x {world_size} ranks"),
        ("lr", f"{d['lr']:.6g}  # {d['lr_rule']}"),
        ("warmup_lr", f"{d['warmup_lr']:g}  # absolute, not scaled"),
        ("min_lr", f"{d['min_lr']:g}  # absolute, not scaled"),
        ("total_epochs", f"{d['total_epochs']}  # sched.epochs + sched.cooldown_epochs"),
        ("steps_per_epoch", steps),
        ("output_dir", d["output_dir"]),
        ("config_hash", config_hash(cfg)),
    ]
    lines = [f"# note: {n}" for n in notes]
    lines += ["# config", to_yaml(cfg).rstrip(), "", "# derived"]
    lines += [f"{k}: {v}" for k, v in rows]
    lines += ["", "# deepspeed", json.dumps(deepspeed_config(cfg, world_size), indent=2)]
    return "\n".join(lines)


def _config(args: argparse.Namespace) -> int:
    from .config import check_runtime, load_config

    notes: list[str] = []
    cfg = load_config(args.files, args.overrides, notes)
    world, source = _world_size(args.world_size)
    check_runtime(cfg, world, args.device)
    print(render(cfg, world, source, tuple(notes)))
    return 0
