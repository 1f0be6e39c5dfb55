"""``swat-dist train | eval | export``: parsing only; the work is imported when a command runs.

``train`` runs as one process or under ``torchrun --nproc_per_node N`` / Slurm (ranks from
:mod:`swat_dist.dist`).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys


def _config(args: argparse.Namespace, extra: list[str] | None = None) -> object:
    from ..config import load_config

    return load_config(args.config, [*args.overrides, *(extra or [])])


def _train(args: argparse.Namespace) -> int:
    from ..dist import read_env
    from . import preempt
    from .failure import RankFailed
    from .run import run
    from .run_lock import FolderInUse
    from .trainer import NonFiniteLoss

    cfg = _config(args)
    env = read_env()
    preempt.install_interrupts()  # Ctrl-C / kill: one checkpoint at the next step, then exit 130 / 143
    try:
        summary = run(cfg, env)  # type: ignore[arg-type]
    except NonFiniteLoss as err:
        print(f"swat-dist train: stopped: {err}", file=sys.stderr)
        return 3
    except FolderInUse as err:  # raised on every rank: one line in the job log, not one per rank
        if env.is_main:
            print(f"swat-dist train: error: {err}", file=sys.stderr)
        return 2
    except RankFailed:  # its line is printed, its traceback in RUN/failures/ (failure.py)
        return 1
    if summary.get("stopped"):
        signum = preempt.received() or int(signal.SIGTERM)
        if env.is_main:
            print(f"swat-dist train: stopped by {signal.Signals(signum).name} at step {summary['steps']}; checkpoint "
                  f"{summary['checkpoint']}: the same command resumes from it", file=sys.stderr)  # fmt: skip
        return 128 + signum
    if env.is_main:
        print(json.dumps(summary, indent=2))
        print(f"[swat-dist] run folder: {summary['run_dir']}; last checkpoint: {summary['checkpoint']}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from .export import evaluate_checkpoint

    overrides = [o for o in args.overrides if not o.startswith("checkpoint=")]
    given = [o.split("=", 1)[1] for o in args.overrides if o.startswith("checkpoint=")]
    checkpoint = args.checkpoint or (given[-1] if given else None)
    if not checkpoint:
        raise ValueError("eval needs a checkpoint: checkpoint=PATH or --checkpoint PATH")
    args.overrides = overrides
    result = evaluate_checkpoint(_config(args), checkpoint, ema=args.ema)  # type: ignore[arg-type]
    if result is not None:
        print(json.dumps(result, indent=2))
    return 0


def _export(args: argparse.Namespace) -> int:
    from .export import export, export_onnx

    fmt = args.format or ("onnx" if args.out.endswith(".onnx") else "safetensors")
    write = export_onnx if fmt == "onnx" else export
    out = write(args.run_dir, args.out, ema=args.ema, overwrite=args.overwrite)
    print(f"wrote {out}" + (" (onnxruntime matches PyTorch on a fixed input)" if fmt == "onnx" else ""))
    return 0


def add_train_parsers(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="train a model (one process, torchrun or Slurm)")
    train.add_argument("-c", "--config", action="append", default=[], help="YAML overlay (repeatable)")
    train.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. optim.lr=1e-3")
    train.set_defaults(func=_train)

    ev = sub.add_parser("eval", help="evaluate a checkpoint's weights on the val split (top-1/top-5, exact count)")
    ev.add_argument("-c", "--config", action="append", default=[], help="YAML overlay (repeatable)")
    ev.add_argument("--checkpoint", help="a .safetensors file, a checkpoint folder, or a run folder")
    ev.add_argument("--ema", action="store_true", help="the EMA weights")
    ev.add_argument("overrides", nargs="*", help="key=value overrides; checkpoint=PATH names the checkpoint")
    ev.set_defaults(func=_eval)

    ex = sub.add_parser(
        "export", help="a run's latest weights as one fp32 .safetensors file timm can load, or a checked .onnx model"
    )
    ex.add_argument("run_dir", help="a run folder, its checkpoints folder, or one checkpoint folder")
    ex.add_argument("out", help="the file to write: *.safetensors, or *.onnx (needs the `export` extra)")
    ex.add_argument("--format", choices=("safetensors", "onnx"), help="default: from OUT's extension")
    ex.add_argument("--ema", action="store_true", help="the EMA weights")
    ex.add_argument("--overwrite", action="store_true", help="replace OUT if it exists (refused without)")
    ex.set_defaults(func=_export)
