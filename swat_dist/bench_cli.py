"""``swat-dist bench ...``: benchmarks that print numbers and append them to docs/benchmarks.md."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


def _loader(args: argparse.Namespace) -> int:
    from .data.bench import render, run

    if args.workers < 0 or args.images < args.batch * 2 or args.rounds < 1 or args.epochs < 1:
        raise ValueError(f"need --workers >= 0, --rounds/--epochs >= 1 and --images >= 2 x --batch ({2 * args.batch})")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.root) if args.root else Path(tmp)
        rows = run(root, args.images, args.workers, args.batch, rounds=args.rounds, timed_epochs=args.epochs)
        text = render(rows, args.images, args.workers, args.batch, args.rounds)
    print(text)
    if args.out:
        with open(args.out, "a") as f:
            f.write("\n" + text)
        print(f"appended to {args.out}")
    return 0


def _model(args: argparse.Namespace) -> int:
    import torch

    from .data.bench import machine
    from .train.bench import bench_pair, render

    rows = bench_pair(args.name, args.batch, steps=args.steps, rounds=args.rounds, device=args.device)
    dev = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    label = torch.cuda.get_device_name() if dev.startswith("cuda") else f"CPU ({torch.get_num_threads()} threads)"
    text = render(rows, args.batch, label, machine())
    print(text)
    if args.out:
        with open(args.out, "a") as f:
            f.write("\n" + text)
        print(f"appended to {args.out}")
    return 0


def add_bench_parser(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="benchmarks (recorded in docs/benchmarks.md)")
    cmds = bench.add_subparsers(dest="bench_command", required=True, metavar="BENCH_COMMAND")
    loader = cmds.add_parser("loader", help="images/s per loader backend beside a JPEG decode ceiling")
    loader.add_argument("--images", type=int, default=2000, help="synthetic 256 px train images")
    loader.add_argument("--workers", type=int, default=os_cpus(), help="loader processes (default: all cores)")
    loader.add_argument("--batch", type=int, default=64)
    loader.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians and paired ratios")
    loader.add_argument("--epochs", type=int, default=2, help="timed epochs per measurement (after a warm-up)")
    loader.add_argument("--root", default=None, help="keep the data here (reused next time) instead of a temp dir")
    loader.add_argument("--out", default="docs/benchmarks.md", help="append the table here ('' to skip)")
    loader.set_defaults(func=_loader)

    model = cmds.add_parser("model", help="training images/s and MFU of a SWAT model beside its baseline")
    model.add_argument("name", help="a SWAT model, e.g. swat_deit_small_patch16_224")
    model.add_argument("--batch", type=int, default=256)
    model.add_argument("--steps", type=int, default=10, help="timed steps per round")
    model.add_argument("--rounds", type=int, default=3, help="alternating rounds; the best counts")
    model.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    model.add_argument("--out", default="docs/benchmarks.md", help="append the table here ('' to skip)")
    model.set_defaults(func=_model)


def os_cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
