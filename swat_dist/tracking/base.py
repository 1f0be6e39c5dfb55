"""The tracker seam the training loop logs into: the protocol, the null tracker, and what a record logs.

Rank logic is decided at construction (STYLE.md 8): rank 0 gets the MLflow tracker
(:mod:`.tracker`), every other rank (and ``tracking.backend: none``) the :class:`NullTracker`, so the
loop never asks its rank. :mod:`.choose` makes that choice. Torch-free and mlflow-free.
"""

from __future__ import annotations

from typing import Any, Protocol


class Tracker(Protocol):
    """An experiment tracker; only rank 0 gets a real one."""

    @property
    def run_id(self) -> str | None: ...  # read-only: a tracker may learn its run id in the background

    def log_params(self, params: dict[str, Any]) -> None: ...

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...

    def close(self) -> None: ...


class NullTracker:
    run_id: str | None = None

    def log_params(self, params: dict[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        pass

    def close(self) -> None:
        pass


def metric_values(record: dict[str, Any]) -> dict[str, float]:
    """The numbers of a ``metrics.jsonl`` record, as a tracker logs them (the step is its axis, not a value)."""
    return {k: float(v) for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            and k != "step"}  # fmt: skip
