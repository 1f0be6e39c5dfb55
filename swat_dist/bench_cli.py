"""``swat-dist bench ...``: benchmarks that print numbers and append them to docs/benchmarks.md."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


def _loader(args: argparse.Namespace) -> int:
    from .data.bench import render, run

    if args.workers < 0 or args.images < args.batch * 2:
        raise ValueError(f"need --workers >= 0 and --images >= 2 x --batch ({2 * args.batch})")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.root) if args.root else Path(tmp)
        text = render(run(root, args.images, args.workers, args.batch), args.images, args.workers, args.batch)
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
    loader.add_argument("--root", default=None, help="keep the data here (reused next time) instead of a temp dir")
    loader.add_argument("--out", default="docs/benchmarks.md", help="append the table here ('' to skip)")
    loader.set_defaults(func=_loader)


def os_cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
