"""Rank 0's MLflow tracker: the training loop's side of the queue, the run-id file, and the final report.

One run per training job. The run id is looked up in this order: the checkpoint being resumed
(``TrainState.tracking_run_id``), ``RUN/tracking/run.json`` (written the moment the run is created, so a
requeue that died before its first checkpoint still continues the run), ``MLFLOW_RUN_ID``; else a new run.
"""

from __future__ import annotations

import atexit
import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from ..config import Config, to_dict
from ..dist import DistEnv
from ..files import atomic_write
from ..redact import redact, redact_text, redact_tree
from .base import metric_values
from .describe import check_uri, experiment_name, param_value, run_params, run_tags, tracking_uri, ui_command
from .sender import Item, Sender, note, warn
from .system import SYSTEM_STEP, NodeMonitor, node_id

ID_FILE = Path("tracking") / "run.json"
AT_EXIT_FLUSH_S = 10.0


def read_run_id(run_dir: Path, uri: str) -> str | None:
    """The run id a previous attempt of this job created in the same store, if any."""
    try:
        saved = json.loads((run_dir / ID_FILE).read_text())
    except (OSError, ValueError):
        return None
    return saved.get("run_id") if saved.get("uri") == redact_text(uri) else None


def write_run_id(run_dir: Path, uri: str, experiment: str, run_id: str) -> None:
    record = {"run_id": run_id, "uri": redact_text(uri), "experiment": experiment}
    atomic_write(run_dir / ID_FILE, json.dumps(record) + "\n")


def system_item(values: dict[str, float]) -> Item:
    now_ms = int(time.time() * 1000)
    return Item("metrics", [(k, v, SYSTEM_STEP, now_ms) for k, v in values.items()], points=len(values))


class MlflowTracker:
    """Implements the ``Tracker`` protocol of :mod:`.base` by queueing (never blocking)."""

    def __init__(self, sender: Sender, run_dir: Path, uri: str, experiment: str, flush_timeout_s: float,
                 config_params: dict[str, str]) -> None:  # fmt: skip
        self.sender, self.run_dir, self.uri, self.experiment = sender, run_dir, uri, experiment
        # Sent with the first log_params call, whose resolved values (name, output_dir) replace the config's
        # templates: one value per key, as MLflow params are write-once.
        self.config_params: dict[str, str] | None = config_params
        self.flush_timeout_s = flush_timeout_s
        self.artifacts: list[tuple[Path, str | None]] = []  # (file, artifact folder) to upload at close
        self.exporter: Callable[[], list[Path]] | None = None  # exported weights, made at close
        self.monitor: NodeMonitor | None = None  # this node's system metrics
        self.closed = False
        # A run that ends without close() (an exception, a preemption stop) still flushes its queue and is
        # marked KILLED, not left RUNNING; a resume sets it RUNNING again. Not reached on SIGKILL.
        atexit.register(self._at_exit)

    @property
    def run_id(self) -> str | None:
        return self.sender.run_id

    def log_params(self, params: dict[str, Any]) -> None:
        given = {k: param_value(v) for k, v in redact(params).items()}
        self.sender.put(Item("params", {**(self.config_params or {}), **given}))
        self.config_params = None

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        now_ms = int(time.time() * 1000)  # fixed here, so a retried batch is the same points, not new ones
        points = [(k, float(v), int(step), now_ms) for k, v in metrics.items()]
        if points:
            self.sender.put(Item("metrics", points, points=len(points)))

    def log_system(self, values: dict[str, float]) -> None:
        self.sender.put(system_item(values))

    def close(self, status: str = "FINISHED", timeout_s: float | None = None) -> None:
        """Upload the artifacts, end the run, wait at most ``timeout_s`` (``flush_timeout_s``); say where the run is.

        A run the store never opened costs no wait: one line says nothing was tracked and how to send it later."""
        if self.closed:
            return
        self.closed = True
        atexit.unregister(self._at_exit)
        if self.monitor is not None:
            self.monitor.close()
        if self.config_params is not None:
            self.log_params({})
        self.sender.put(Item("artifacts", self._artifacts(weights=status == "FINISHED")))
        self.sender.put(Item("end", status))
        wait = self.flush_timeout_s if timeout_s is None else timeout_s
        left = self.sender.close(wait)  # returns at once if the store never opened the run
        if self.run_id is None:  # one line, and no link to a run that does not exist
            warn(
                f"nothing was tracked: MLflow at {redact_text(self.uri)} never opened the run (experiment "
                f"{self.experiment!r}); every value is in {self.run_dir / 'metrics.jsonl'}, and resuming this run "
                "(the same command, checkpoint.resume=auto) sends them once the store answers"
            )
            return
        where = f"MLflow run {self.run_id} (experiment {self.experiment!r}) in {redact_text(self.uri)}"
        if left:
            points = sum(i.points for i in left)
            warn(
                f"{points} metric values and {len(left) - sum(i.kind == 'metrics' for i in left)} other calls were not "
                f"sent to {where} within {wait:.0f} s; every value is in "
                f"{self.run_dir / 'metrics.jsonl'}, and resuming this run sends what is missing"
            )
        elif self.sender.dropped:
            warn(f"{self.sender.dropped} metric values were refused by {where}; they are in metrics.jsonl")
        note(f"{where}\n[tracking] view it: {ui_command(redact_text(self.uri))}")

    def _at_exit(self) -> None:
        # A stopped (preempted) or failed job: a short wait, as the requeued job replays metrics.jsonl anyway
        # and the time before Slurm's kill belongs to the checkpoint.
        self.close(status="KILLED", timeout_s=min(self.flush_timeout_s, AT_EXIT_FLUSH_S))

    def _artifacts(self, weights: bool) -> list[tuple[Path, str | None]]:
        ends = (self.run_dir / "summary.json", self.run_dir / "metrics.jsonl")
        files: list[tuple[Path, str | None]] = [(f, None) for f in ends if f.is_file()]
        if self.exporter is not None and weights:  # not for a stopped job: exporting takes its time
            try:
                files += [(f, "weights") for f in self.exporter()]
            except (OSError, ValueError) as err:
                warn(f"exporting the weights for MLflow failed ({err}); the checkpoints are in {self.run_dir}")
        return [*self.artifacts, *files]


def open_tracker(cfg: Config, env: DistEnv, run_dir: Path, run_id: str | None, replay: list[dict[str, Any]],
                 reuse_file: bool = True) -> MlflowTracker:  # fmt: skip
    """Start rank 0's tracker; waits for the first attempt to open the run (``tracking.start_timeout_s`` at most).

    ``replay``: records of ``metrics.jsonl`` the run may lack (sent unless already there).
    Raises ValueError for a URI MLflow cannot log to (the caller trains without tracking).
    """
    t = cfg.tracking
    uri, experiment = tracking_uri(t.uri, run_dir.parent), experiment_name(t.experiment)
    check_uri(uri)
    run_id = run_id or (read_run_id(run_dir, uri) if reuse_file else None) or os.environ.get("MLFLOW_RUN_ID")
    from .mlflow_store import MlflowStore, fail_fast  # mlflow itself: ~1-2 s to import, only when tracking

    fail_fast(t.http_timeout_s)
    local = uri.startswith("sqlite:")
    store = MlflowStore(
        uri, experiment, run_id, t.run_name or cfg.run_name,
        artifact_root=run_dir.parent / "mlartifacts" if local else None,
        on_open=lambda rid: write_run_id(run_dir, uri, experiment, rid),
    )  # fmt: skip
    sender = Sender(store, where=f"MLflow at {redact_text(uri)}")
    sweep_tags, sweep_params = sweep_membership(run_dir, uri, experiment)
    sender.put(Item("tags", {**run_tags(cfg, env), **sweep_tags}))
    tracker = MlflowTracker(sender, run_dir, uri, experiment, t.flush_timeout_s, run_params(cfg, sweep_params))
    for record in replay:
        tracker.log_metrics(metric_values(record), int(record["step"]))
    tracker.artifacts.append((_redacted_config(cfg, run_dir), None))
    if t.system_metrics:
        tracker.monitor = NodeMonitor(tracker.log_system, node_id(env.node_rank), t.system_metrics_interval_s)
    sender.attempted.wait(t.start_timeout_s)
    return tracker


def sweep_membership(run_dir: Path, uri: str, experiment: str) -> tuple[dict[str, str], dict[str, str]]:
    """(tags, params) that make this run a child of its sweep's parent run: ``mlflow.parentRunId``, the
    ``swat.sweep_point`` tag and each grid value as a ``sweep.<key>`` param. Read from ``SWEEP/sweep.json``
    (written by ``swat-dist sweep`` before submitting); nothing for a run outside a sweep, or for a sweep
    whose parent lives in another store or experiment (a child there would point at a run it cannot see)."""
    try:
        manifest = json.loads((run_dir.parent / "sweep.json").read_text())
        values = manifest["elements"][run_dir.name]
        where = manifest.get("tracking") or {}
    except (OSError, ValueError, KeyError, TypeError):
        return {}, {}
    tags = {"swat.sweep": str(manifest.get("name", run_dir.parent.name)),
            "swat.sweep_point": ",".join(f"{k}={v}" for k, v in values.items())}  # fmt: skip
    if where.get("parent_run_id") and (where.get("uri"), where.get("experiment")) == (redact_text(uri), experiment):
        tags["mlflow.parentRunId"] = where["parent_run_id"]
    return tags, {f"sweep.{k}": str(v) for k, v in values.items()}


def open_sweep_parent(cfg: Config, sweep_dir: Path, name: str, grid: list[tuple[str, list[str]]],
                      run_id: str | None) -> dict[str, str] | None:  # fmt: skip
    """Open (or continue) a sweep's parent run in the store its elements will log to; None when tracking is off.

    The children find the returned record (uri, experiment, parent_run_id) in ``SWEEP/sweep.json``.
    Login-node code: mlflow is imported here, only when tracking is on (~1-2 s)."""
    t = cfg.tracking
    if t.backend != "mlflow":
        return None
    uri, experiment = tracking_uri(t.uri, sweep_dir), experiment_name(t.experiment)  # as each element resolves it
    check_uri(uri)
    from .mlflow_store import fail_fast, open_parent

    fail_fast(t.http_timeout_s)
    local = uri.startswith("sqlite:")
    params = {f"grid.{k}": param_value(",".join(v)) for k, v in grid}
    tags = {"swat.sweep": name, "swat.sweep_dir": str(sweep_dir), "swat.sweep_size": str(_size(grid))}
    rid = open_parent(uri, experiment, run_id, name, sweep_dir / "mlartifacts" if local else None, params, tags)
    return {"uri": redact_text(uri), "experiment": experiment, "parent_run_id": rid}


def end_sweep_parent(cfg: Config, sweep_dir: Path, run_id: str, status: str) -> None:
    """Mark the parent run ended (the driver waited for every element); a store out of reach: one warning."""
    from .mlflow_store import end_run

    uri = tracking_uri(cfg.tracking.uri, sweep_dir)
    try:
        end_run(uri, run_id, status)
    except Exception as err:  # mlflow's and the transport's errors alike: the children are done, only a status is lost
        warn(f"could not mark the sweep's parent run {run_id} {status} in {redact_text(uri)} ({err})")


def _size(grid: list[tuple[str, list[str]]]) -> int:
    n = 1
    for _, values in grid:
        n *= len(values)
    return n


class NodeWatch:
    """System metrics of a node other than rank 0's, logged into rank 0's run (which it never creates)."""

    def __init__(self, cfg: Config, env: DistEnv, run_dir: Path, run_id: str) -> None:
        from .mlflow_store import MlflowStore, fail_fast

        t = cfg.tracking
        uri = tracking_uri(t.uri, run_dir.parent)
        fail_fast(t.http_timeout_s)
        store = MlflowStore(uri, experiment_name(t.experiment), run_id, "", create=False)
        self.sender, self.flush_timeout_s = Sender(store, where=f"MLflow at {redact_text(uri)}"), t.flush_timeout_s
        self.sender.put(Item("tags", {f"swat.host.{node_id(env.node_rank)}": socket.gethostname()}))
        self.monitor = NodeMonitor(self._put, node_id(env.node_rank), t.system_metrics_interval_s)
        atexit.register(self.close)  # the trainer knows nothing of it: it ends with the process

    def _put(self, values: dict[str, float]) -> None:
        self.sender.put(system_item(values))

    def close(self) -> None:
        self.monitor.close()
        self.sender.close(self.flush_timeout_s)


def _redacted_config(cfg: Config, run_dir: Path) -> Path:
    """The resolved config as uploaded: ``config.yaml`` with credentials replaced."""
    path = run_dir / "tracking" / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(redact_tree(to_dict(cfg)), sort_keys=False))
    return path
