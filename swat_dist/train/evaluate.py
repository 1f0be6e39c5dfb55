"""Validation of any task: every rank runs the same batches, the task's sums are all-reduced once.

The val loaders pad the last batches so that every rank runs the same number of them (ZeRO-3's
forward gathers are collective); the task makes padding count for nothing, so the totals cover the
val set exactly once. No host sync inside the loop: one at the end, when the task reads the totals.
Progress (:mod:`..progress`): a bar on a terminal, plain lines at the start, the end and each minute in
a log; shown by rank 0 only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sized

import torch
import torch.distributed as tdist
from torch import Tensor

from .. import collectives
from ..progress import progress
from ..tasks import Task
from ..tasks.base import Forward

Metrics = dict[str, float]


@torch.no_grad()
def evaluate(
    forward: Forward,
    loader: Iterable[tuple[Tensor, Tensor]],
    task: Task,
    device: torch.device,
    *,
    show: bool | None = None,
    desc: str = "eval",
) -> Metrics:
    """The task's metrics (``samples`` among them) over all ranks' val batches.

    ``show``: print progress (the trainer passes whether it is rank 0); None: when this is rank 0 of the
    process group, or there is none.
    """
    if show is None:
        show = not tdist.is_initialized() or tdist.get_rank() == 0
    total = len(loader) if isinstance(loader, Sized) else None
    sums = task.eval_zeros(device)
    with progress(total, desc, unit="batch", show=show, leave=False) as bar:
        for images, targets in loader:
            x, y = task.batch(images, targets, device, train=False)
            sums += task.eval_sums(forward, x, y)
            bar.update(1)
    return task.metrics(collectives.sum_(sums))
