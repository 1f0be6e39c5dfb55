"""The ``swat-dist`` command: parse, dispatch, and turn user errors into one line (no traceback).

Each sub-command imports what it needs when it runs, so ``swat-dist --help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .bench_cli import add_bench_parser
from .cluster.commands import add_cluster_parsers
from .config_cli import add_config_parser
from .config_types import ConfigError
from .data.commands import add_data_parser
from .dist import DistEnv, read_env, tell_launcher
from .tracking.commands import add_tracking_parsers
from .train.commands import add_train_parsers


def _models(args: argparse.Namespace) -> int:
    from .models.table import render, rows

    print(render(rows(args.pattern, flops=args.flops)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="swat-dist", description="Distributed pretraining of SWAT vision models.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    models = sub.add_parser("models", help="SWAT models beside their baselines: params, GFLOPs, deltas")
    models.add_argument("pattern", nargs="?", default="*", help="shell-style name filter, e.g. 'swat_deit*'")
    models.add_argument("--flops", action="store_true", help="also count fvcore GFLOPs (about 1 s per model)")
    models.set_defaults(func=_models)
    add_data_parser(sub)
    add_config_parser(sub)
    add_bench_parser(sub)
    add_train_parsers(sub)
    add_tracking_parsers(sub)
    add_cluster_parsers(sub)
    return parser


# OpenMP threads that wait for each other spin before they sleep (libgomp's default): on a machine shared with
# other processes a descheduled thread stalls every parallel op. A single-process run (2 threads on 2 cores, beside
# other jobs) trained at 25-70 img/s where 1 thread gave 97-129 and torchrun's 2 ranks x 1 thread 146-166;
# PASSIVE: 154-167. On idle cores PASSIVE costs ~10% of a CPU step (model step alone: 207-226 vs 228-283
# img/s) and nothing on a GPU. Read by libgomp when torch loads: set before any command imports torch.
WAIT_POLICY = ("OMP_WAIT_POLICY", "PASSIVE")


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault(*WAIT_POLICY)  # a user's own setting wins
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as err:
        sub = getattr(args, "data_command", None) or getattr(args, "bench_command", None)
        what = " ".join(filter(None, [args.command, sub]))
        _error(f"swat-dist {what}: error: {err}", alike=isinstance(err, ConfigError))
        return 2


def _error(text: str, alike: bool) -> None:
    """Print ``text``; under a launcher, an error every rank meets ``alike`` (the config: every rank reads the
    same files and arguments) is printed by rank 0 alone, and torchrun's summary gets it from each rank."""
    try:
        env = read_env()
    except ValueError:  # the launcher's own variables are what failed
        env = DistEnv()
    tell_launcher(env, text)
    if env.is_main or not alike:
        print(text, file=sys.stderr)
