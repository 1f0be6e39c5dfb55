"""``swat-dist bench ...``: benchmarks that print numbers; ``--record`` appends them to the clone's
docs/benchmarks.md, ``--out FILE`` to another file. Where the table goes is checked before the benchmark
runs, so a missing folder does not cost the measurement."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

RECORD = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"  # in a clone; absent when installed


def _destination(args: argparse.Namespace) -> Path | None:
    """The file the table is appended to (``--out``, else ``--record``'s), or None: checked up front."""
    if args.out and args.record:
        raise ValueError("--out and --record: give one (--record means --out docs/benchmarks.md of this clone)")
    if not args.out and not args.record:
        return None
    out = Path(args.out) if args.out else RECORD
    if args.record and not out.is_file():
        raise ValueError(f"--record: no {out} (not a clone of swat_dist?); use --out FILE")
    if out.is_dir():
        raise ValueError(f"--out: {out} is a folder; name the markdown file to append to")
    if not out.parent.is_dir():
        raise ValueError(f"--out: no folder {out.parent} to write {out.name} in")
    return out


def _append(out: Path | None, text: str) -> None:
    if out is None:
        return
    with open(out, "a") as f:
        f.write("\n" + text)
    print(f"appended to {out}")


def _loader(args: argparse.Namespace) -> int:
    from .data.bench import render, render_s3, run, run_s3

    if args.workers < 0 or args.images < args.batch * 2 or args.rounds < 1 or args.epochs < 1:
        raise ValueError(f"need --workers >= 0, --rounds/--epochs >= 1 and --images >= 2 x --batch ({2 * args.batch})")
    if args.augment_on == "device" and (args.s3 or args.size < 224):
        raise ValueError("--augment-on device: local data only (no --s3), and --size >= 224 (the crop is 224)")
    out = _destination(args)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.root) if args.root else Path(tmp)
        if args.augment_on == "device":  # the worker's cost per image in each mode, and the device side's rate
            from .data.bench_device import render_device, run_device

            dev_rows, device = run_device(root, args.images, args.batch, args.rounds, args.epochs, size=args.size)
            text = render_device(dev_rows, device, args.images, args.batch, args.rounds, args.size)
        elif args.s3:  # local wds against the same shards in the store: first batch and images/s
            s3_rows = run_s3(root, args.s3, args.images, args.workers, args.batch, args.rounds, args.epochs)
            text = render_s3(s3_rows, args.s3, args.images, args.workers, args.batch, args.rounds)
        else:
            rows = run(root, args.images, args.workers, args.batch, rounds=args.rounds, timed_epochs=args.epochs)
            text = render(rows, args.images, args.workers, args.batch, args.rounds)
    print(text)
    _append(out, text)
    return 0


def _model(args: argparse.Namespace) -> int:
    import torch

    from .data.bench import machine
    from .train.bench import bench_pair, render

    out = _destination(args)
    rows = bench_pair(args.name, args.batch, steps=args.steps, rounds=args.rounds, device=args.device)
    dev = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    label = torch.cuda.get_device_name() if dev.startswith("cuda") else f"CPU ({torch.get_num_threads()} threads)"
    text = render(rows, args.batch, label, machine())
    print(text)
    _append(out, text)
    return 0


def add_bench_parser(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="benchmarks (printed; --record appends them to docs/benchmarks.md)")
    cmds = bench.add_subparsers(dest="bench_command", required=True, metavar="BENCH_COMMAND")
    loader = cmds.add_parser("loader", help="images/s per loader backend beside a JPEG decode ceiling")
    loader.add_argument("--images", type=int, default=2000, help="synthetic 256 px train images")
    loader.add_argument("--workers", type=int, default=os_cpus(), help="loader processes (default: all cores)")
    loader.add_argument("--batch", type=int, default=64)
    loader.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians and paired ratios")
    loader.add_argument("--epochs", type=int, default=2, help="timed epochs per measurement (after a warm-up)")
    loader.add_argument("--root", default=None, help="keep the data here (reused next time) instead of a temp dir")
    loader.add_argument(
        "--s3", default=None, metavar="URL", help="s3://bucket/prefix: upload the wds shards there, compare with local"
    )
    loader.add_argument(
        "--augment-on", choices=("loader", "device"), default="loader",
        help="device: a worker's cost per image, reading bytes + planning vs the full recipe (data.augment_on)",
    )  # fmt: skip
    loader.add_argument("--size", type=int, default=256, help="JPEG side in px (--augment-on device)")
    _add_output(loader)
    loader.set_defaults(func=_loader)

    model = cmds.add_parser("model", help="training images/s and MFU of a SWAT model beside its baseline")
    model.add_argument("name", help="a SWAT model, e.g. swat_deit_small_patch16_224")
    model.add_argument("--batch", type=int, default=256)
    model.add_argument("--steps", type=int, default=10, help="timed steps per round")
    model.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians and paired ratios")
    model.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    _add_output(model)
    model.set_defaults(func=_model)


def _add_output(p: argparse.ArgumentParser) -> None:
    p.add_argument("--record", action="store_true", help="append the table to this clone's docs/benchmarks.md")
    p.add_argument("--out", default=None, metavar="FILE", help="append the table to FILE (default: print only)")


def os_cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
