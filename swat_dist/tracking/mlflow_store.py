"""The only module that imports mlflow (STYLE.md 7): one MLflow run opened, continued and written to.

Runs in the tracking worker thread (see :mod:`.sender`); every method may raise, and :meth:`transient`
tells the sender whether to retry. Continuing a run is exact: at open we read which (key, step) points
the run already holds and skip those when they are logged again, so a resumed, deterministic run that
re-logs the steps after its checkpoint adds no duplicate points, and the replay of ``metrics.jsonl``
fills any the previous attempt queued but never delivered.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from .sender import Item, note, warn
from .system import SYSTEM_STEP

MAX_PARAMS_TAGS_PER_BATCH = 100  # MLflow's log_batch limit
# Error codes of failures that may go away on their own; any other MlflowException is the store refusing.
TRANSIENT_CODES = {"INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "DEADLINE_EXCEEDED"}


def fail_fast(timeout_s: float) -> None:
    """Bound every HTTP call: MLflow's defaults (120 s timeout, 7 retries with backoff) can hold one call for
    minutes, during which the queue would not move. We retry ourselves, so one attempt per call is enough.
    Values the user already set win."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(max(1, round(timeout_s))))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")


class MlflowStore:
    """One run in one tracking store. ``run_id``: continue that run (a new one if the store lacks it)."""

    def __init__(
        self,
        uri: str,
        experiment: str,
        run_id: str | None,
        run_name: str,
        artifact_root: Path | None = None,
        on_open: Callable[[str], None] | None = None,
        create: bool = True,
    ) -> None:
        self.uri, self.experiment, self.run_id, self.run_name = uri, experiment, run_id, run_name
        self.artifact_root, self.on_open, self.create = artifact_root, on_open, create
        self.start_ms = 0  # the run's start: system metrics count their step in seconds from it
        self.present: dict[str, set[int]] = {}  # the (key, step) points the run holds
        self.params: dict[str, str] = {}
        self.resumed = False
        self._client: MlflowClient | None = None

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    def open(self) -> str:
        run = self._existing()
        if run is None and not self.create:  # another node's system metrics: only rank 0 creates the run
            raise RuntimeError(f"run {self.run_id} is not in {self.uri} (yet)")
        run = run or self._create()
        run_id, self.start_ms = run.info.run_id, run.info.start_time or 0
        if self.resumed and self.create:
            # One history call per metric key: a few MB for a long run, once per (re)start.
            keys = [k for k in run.data.metrics if not k.startswith("system/")]  # system metrics are never repeated
            self.present = {k: {m.step for m in self.client.get_metric_history(run_id, k)} for k in keys}
            self.params = dict(run.data.params)
            self.client.update_run(run_id, status="RUNNING")
            note(f"continuing MLflow run {run_id} ({sum(map(len, self.present.values()))} metric points so far)")
        self.run_id = run_id
        if self.on_open is not None:
            self.on_open(run_id)
        return run_id

    def _existing(self) -> Any:
        if self.run_id is None:
            return None
        try:
            run = self.client.get_run(self.run_id)
        except MlflowException as err:
            if err.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            warn(f"run {self.run_id} is not in {self.uri}; starting a new run")
            return None
        if run.info.lifecycle_stage == "deleted":
            warn(f"run {self.run_id} was deleted; starting a new run")
            return None
        self.resumed = True
        return run

    def _create(self) -> Any:
        exp = self.client.get_experiment_by_name(self.experiment)
        if exp is not None:
            exp_id = exp.experiment_id
        else:
            where = self.artifact_root.resolve().as_uri() if self.artifact_root else None
            try:
                exp_id = self.client.create_experiment(self.experiment, artifact_location=where)
            except MlflowException:  # another job created it between our two calls
                exp = self.client.get_experiment_by_name(self.experiment)
                if exp is None:
                    raise
                exp_id = exp.experiment_id
        return self.client.create_run(exp_id, run_name=self.run_name)

    def transient(self, err: BaseException) -> bool:
        if isinstance(err, MlflowException):
            return err.error_code in TRANSIENT_CODES
        return True  # connection errors, timeouts, a locked sqlite file

    def send(self, items: list[Item]) -> None:
        kind = items[0].kind
        if kind == "metrics":
            self._metrics([p for item in items for p in item.payload])
        elif kind == "params":
            self._params(items[0].payload)
        elif kind == "tags":
            tags = [RunTag(k, v) for k, v in items[0].payload.items()]
            for i in range(0, len(tags), MAX_PARAMS_TAGS_PER_BATCH):
                self.client.log_batch(self._id, tags=tags[i : i + MAX_PARAMS_TAGS_PER_BATCH])
        elif kind == "artifacts":
            for path, folder in items[0].payload:
                self.client.log_artifact(self._id, str(path), folder)
        elif kind == "end":
            self.client.set_terminated(self._id, status=items[0].payload)

    @property
    def _id(self) -> str:
        assert self.run_id is not None, "send before open"
        return self.run_id

    def _metrics(self, points: list[tuple[str, float, int, int]]) -> None:
        system = [(k, v, max(0, (ts - self.start_ms) // 1000), ts) for k, v, step, ts in points if step == SYSTEM_STEP]
        new = [p for p in points if p[2] != SYSTEM_STEP and p[2] not in self.present.get(p[0], ())]
        if new or system:
            metrics = [Metric(key, value, ts, step) for key, value, step, ts in new + system]
            self.client.log_batch(self._id, metrics=metrics)
        for key, _, step, _ in new:
            self.present.setdefault(key, set()).add(step)

    def _params(self, params: dict[str, str]) -> None:
        # MLflow params are write-once: a resumed run keeps what it first logged (a changed value would be
        # refused and block the queue), and says which differ.
        changed = sorted(k for k, v in params.items() if k in self.params and self.params[k] != v)
        if changed:
            warn(f"run {self.run_id} keeps its first value of params {changed} (MLflow params cannot change)")
        todo = [Param(k, v) for k, v in params.items() if k not in self.params]
        for i in range(0, len(todo), MAX_PARAMS_TAGS_PER_BATCH):
            chunk = todo[i : i + MAX_PARAMS_TAGS_PER_BATCH]
            self.client.log_batch(self._id, params=chunk)
            self.params.update({p.key: p.value for p in chunk})


def run_info(uri: str, run_id: str) -> dict[str, Any]:
    """Status, params, tags and latest metrics of one run (for tests and ``compare``)."""
    run = MlflowClient(tracking_uri=uri).get_run(run_id)
    info = {"status": run.info.status, "experiment_id": run.info.experiment_id}
    return {**info, "params": dict(run.data.params), "tags": dict(run.data.tags), "metrics": dict(run.data.metrics)}


def history(uri: str, run_id: str, key: str) -> list[tuple[int, float, int]]:
    """(step, value, timestamp) of every point of ``key``, in step order."""
    points = MlflowClient(tracking_uri=uri).get_metric_history(run_id, key)
    return sorted((m.step, m.value, m.timestamp) for m in points)


def summary(uri: str, run_id: str) -> dict[str, Any] | None:
    """The run's ``summary.json`` artifact (uploaded when the run finishes), or None when it has none (yet).

    Cost: one artifact listing and one small download.
    """
    client = MlflowClient(tracking_uri=uri)
    try:
        if not any(f.path == "summary.json" for f in client.list_artifacts(run_id)):
            return None
        with tempfile.TemporaryDirectory() as tmp:
            record = json.loads(Path(client.download_artifacts(run_id, "summary.json", tmp)).read_text())
    except (MlflowException, OSError, ValueError):  # an artifact store out of reach: the table shows "-"
        return None
    return record if isinstance(record, dict) else None


def find_runs(uri: str, experiment: str, run_ids: list[str]) -> list[dict[str, Any]]:
    """The named runs, else every run of ``experiment`` (oldest first), as plain dicts."""
    client = MlflowClient(tracking_uri=uri)
    try:
        if run_ids:
            runs = [client.get_run(r) for r in run_ids]
        else:
            exp = client.get_experiment_by_name(experiment)
            if exp is None:
                raise ValueError(f"no experiment {experiment!r} in {uri}")
            runs = client.search_runs([exp.experiment_id], max_results=1000, order_by=["attributes.start_time ASC"])
    except MlflowException as err:
        raise ValueError(f"{uri}: {err.message}") from None
    return [_plain(r) for r in runs]


def _plain(r: Any) -> dict[str, Any]:
    return {"run_id": r.info.run_id, "name": r.info.run_name, "status": r.info.status, "start_ms": r.info.start_time,
            "end_ms": r.info.end_time, "params": dict(r.data.params), "tags": dict(r.data.tags),
            "metrics": dict(r.data.metrics)}  # fmt: skip


# -- sweeps: one parent run, every element a child (mlflow.parentRunId) ---------------------------------


def open_parent(uri: str, experiment: str, run_id: str | None, name: str, artifact_root: Path | None,
                params: dict[str, str], tags: dict[str, str]) -> str:  # fmt: skip
    """A sweep's parent run: ``run_id`` continued (a re-run sweep), else a new one; params and tags logged
    once (params are write-once: a continued parent keeps its first values). Raises ValueError (one line)
    when the store cannot be reached or refuses, so the sweep stops before anything is queued."""
    store = MlflowStore(uri, experiment, run_id, name, artifact_root=artifact_root)
    try:
        rid = store.open()
        todo = [Param(k, v) for k, v in params.items() if k not in store.params]
        tag_list = [RunTag(k, v) for k, v in tags.items()]
        for i in range(0, max(len(todo), len(tag_list)), MAX_PARAMS_TAGS_PER_BATCH):
            chunk = slice(i, i + MAX_PARAMS_TAGS_PER_BATCH)
            store.client.log_batch(rid, params=todo[chunk], tags=tag_list[chunk])
    except MlflowException as err:
        raise ValueError(f"MLflow at {uri} refused the sweep's parent run: {err.message}") from None
    except OSError as err:  # connection refused, a locked or unwritable sqlite file, a timeout
        raise ValueError(f"MLflow at {uri} cannot be reached for the sweep's parent run ({err})") from None
    return rid


def end_run(uri: str, run_id: str, status: str) -> None:
    MlflowClient(tracking_uri=uri).set_terminated(run_id, status=status)


def find_children(uri: str, parent_id: str) -> list[dict[str, Any]]:
    """Every live run whose ``mlflow.parentRunId`` is ``parent_id`` (oldest first), as :func:`find_runs` gives."""
    client = MlflowClient(tracking_uri=uri)
    try:
        parent = client.get_run(parent_id)
        runs = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'",
                                  max_results=5000, order_by=["attributes.start_time ASC"])  # fmt: skip
    except MlflowException as err:
        raise ValueError(f"{uri}: {err.message}") from None
    return [_plain(r) for r in runs]
