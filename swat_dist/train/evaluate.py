"""Validation of any task: every rank runs the same batches, the task's sums are all-reduced once.

The val loaders pad the last batches so that every rank runs the same number of them (ZeRO-3's
forward gathers are collective); the task makes padding count for nothing, so the totals cover the
val set exactly once. No host sync inside the loop: one at the end, when the task reads the totals.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from .. import collectives
from ..tasks import Task
from ..tasks.base import Forward

Metrics = dict[str, float]


@torch.no_grad()
def evaluate(
    forward: Forward, loader: Iterable[tuple[Tensor, Tensor]], task: Task, device: torch.device
) -> dict[str, float]:
    """The task's metrics (``samples`` among them) over all ranks' val batches."""
    sums = task.eval_zeros(device)
    for images, targets in loader:
        x, y = task.batch(images, targets, device, train=False)
        sums += task.eval_sums(forward, x, y)
    return task.metrics(collectives.sum_(sums))
