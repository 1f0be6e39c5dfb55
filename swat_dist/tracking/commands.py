"""``swat-dist tracking-server`` and ``swat-dist compare``: parsing only; the work is imported when run."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def server_command(port: int, host: str, store: str, artifacts: str, workers: int) -> list[str]:
    """The ``mlflow server`` line: our venv's mlflow, artifacts proxied by the server (clients need no
    access to the artifact folder)."""
    if not 0 < port < 65536:
        raise ValueError(f"--port must be 1-65535, got {port}")
    if not store.startswith(("sqlite:///", "postgresql", "mysql", "mssql")):
        raise ValueError(
            f"--backend-store-uri {store!r}: expected sqlite:///FILE or a postgresql:// (mysql, mssql) URI"
        )
    if store.startswith("sqlite:///"):
        Path(store[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    exe = Path(sys.executable).with_name("mlflow")
    mlflow = [str(exe)] if exe.exists() else [shutil.which("mlflow") or "mlflow"]
    return [*mlflow, "server", "--backend-store-uri", store, "--host", host, "--port", str(port),
            "--workers", str(workers), "--serve-artifacts", "--artifacts-destination", artifacts]  # fmt: skip


def _server(args: argparse.Namespace) -> int:
    store = args.backend_store_uri or "sqlite:///" + str(Path("runs/mlflow.db").resolve())
    artifacts = args.artifacts_destination or str(Path("runs/mlartifacts").resolve())
    cmd = server_command(args.port, args.host, store, artifacts, args.workers)
    from .server import check_artifacts_destination, run_server

    check_artifacts_destination(artifacts)  # s3://: the bucket answers now, not at a run's first upload
    if args.host not in LOOPBACK:
        print(f"swat-dist tracking-server: warning: MLflow has no authentication; {args.host} exposes every run "
              "to anyone who can reach this port", file=sys.stderr)  # fmt: skip
    address = f"http://{'127.0.0.1' if args.host in ('0.0.0.0', '::') else args.host}:{args.port}"
    print(f"[tracking] {' '.join(cmd)}\n[tracking] train against it: export MLFLOW_TRACKING_URI={address}", flush=True)
    return run_server(cmd)  # Ctrl-C or `kill PID` stops mlflow and every process it started


def _compare(args: argparse.Namespace) -> int:
    from ..config_tree import TrackingConfig
    from .mlflow_store import fail_fast

    # a server that does not answer: one line within seconds, as training says it (MLflow's own retries
    # held compare silent for ~250 s); MLFLOW_HTTP_REQUEST_TIMEOUT / _MAX_RETRIES set by the user win
    fail_fast(TrackingConfig.http_timeout_s)
    if args.sweep or args.parent:  # a sweep's children, aggregated over seeds
        if args.runs or args.experiment:
            raise ValueError("--sweep/--parent compare a sweep's own runs: drop --runs/--experiment")
        from .sweep_compare import compare_sweep

        sweep = Path(args.sweep) if args.sweep else None
        for path in compare_sweep(sweep, args.parent, args.uri, Path(args.out)):
            print(f"wrote {path}")
        return 0
    from .compare import compare

    for path in compare(args.uri, args.experiment, args.runs, Path(args.out)):
        print(f"wrote {path}")
    return 0


def add_tracking_parsers(sub: argparse._SubParsersAction) -> None:
    srv = sub.add_parser("tracking-server", help="run an MLflow tracking server (sqlite or PostgreSQL), loopback only")
    srv.add_argument("--port", type=int, default=5000)
    srv.add_argument("--host", default="127.0.0.1", help="bind address (default loopback: MLflow has no auth)")
    srv.add_argument("--backend-store-uri", help="default sqlite:///runs/mlflow.db, the store local runs write")
    srv.add_argument(
        "--artifacts-destination",
        help="where uploaded artifacts go: a folder (default "
        "runs/mlartifacts) or s3://bucket/prefix (AWS_* variables; checked before the server starts)",
    )
    srv.add_argument("--workers", type=int, default=1)
    srv.set_defaults(func=_server)

    cmp = sub.add_parser(
        "compare", help="a table (markdown, CSV) and plots of MLflow runs: loss, top-1, top-1 vs GFLOPs"
    )
    cmp.add_argument("--experiment", help="every finished run of this experiment (default: MLFLOW_EXPERIMENT_NAME "
                     "or swat_dist)")  # fmt: skip
    cmp.add_argument("--runs", nargs="+", default=[], metavar="ID", help="these run ids instead")
    which = cmp.add_mutually_exclusive_group()
    which.add_argument("--sweep", metavar="SWEEP_DIR", help="a sweep's folder: its runs aggregated over seeds, "
                       "each SWAT model beside its baseline, and Figure 1")  # fmt: skip
    which.add_argument("--parent", metavar="RUN_ID", help="the same from a sweep's MLflow parent run id")
    cmp.add_argument("--uri", help="tracking URI (default: MLFLOW_TRACKING_URI, else sqlite:///runs/mlflow.db)")
    cmp.add_argument("--out", required=True, help="folder for compare.md, compare.csv and the PNG plots")
    cmp.set_defaults(func=_compare)
