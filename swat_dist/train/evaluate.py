"""Validation: plain cross-entropy, top-1 and top-5 over the real samples (label >= 0) only.

Every rank runs the same number of batches (the val loader pads with label -1); sums are all-reduced
once at the end, so the count is exactly the val set size on every rank.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as tdist
import torch.nn.functional as F
from torch import Tensor

from ..data.loader import ValLoader
from ..data.transforms import DeviceAugment


@torch.no_grad()
def evaluate(
    forward: Callable[[Tensor], Tensor], loader: ValLoader, augment: DeviceAugment, device: torch.device
) -> dict[str, float]:
    """``{'loss', 'top1', 'top5', 'samples'}``; accuracies in percent, over all ranks."""
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, top1 hits, top5 hits, count
    for images, labels in loader:
        x, y = augment(images.to(device, non_blocking=True), labels.to(device), train=False)
        real = y >= 0
        if not bool(real.any()):  # an all-padding batch still runs the forward (ZeRO-3 gathers are collective)
            forward(x)
            continue
        logits = forward(x).float()[real]
        y = y[real]
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        hits = top == y.unsqueeze(1)
        sums += torch.stack(
            [
                F.cross_entropy(logits, y, reduction="sum").double(),
                hits[:, 0].sum().double(),
                hits.any(dim=1).sum().double(),
                torch.tensor(float(len(y)), dtype=torch.float64, device=device),
            ]
        )
    if tdist.is_initialized():
        tdist.all_reduce(sums)
    loss, top1, top5, n = sums.tolist()
    n_safe = max(n, 1.0)
    return dict(loss=loss / n_safe, top1=100 * top1 / n_safe, top5=100 * top5 / n_safe, samples=int(n))
