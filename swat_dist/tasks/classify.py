"""Image classification: soft-target cross-entropy (mixup/cutmix/smoothing targets), top-1 and top-5.

Training targets come from :class:`~swat_dist.data.pixels.transforms.DeviceAugment` (mixup / cutmix or label
smoothing as soft targets, random erasing), or with ``data.augment_on: device`` from its device pipeline,
which also decodes and runs crop, flip and RandAugment on the batch. Evaluation is plain cross-entropy and
top-k over the real samples only: the val loaders pad with label -1, which ``ignore_index`` and the top-k
match skip, so a padded batch adds exactly nothing and no per-batch host sync is needed to find the real ones.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from timm.loss import SoftTargetCrossEntropy
from torch import Tensor

from ..data.pixels.transforms import DeviceAugment
from .base import Forward

if TYPE_CHECKING:
    from ..data.pixels.device_pipeline import EncodedBatch

PAD = -1  # the val loaders' label for padding samples


class ClassificationTask:
    best_keys: tuple[str, ...] = ("top1", "top5")

    def __init__(self, augment: DeviceAugment) -> None:
        self.augment = augment
        self.criterion = SoftTargetCrossEntropy()

    def batch(
        self, images: Tensor | EncodedBatch, targets: Tensor, device: torch.device, train: bool
    ) -> tuple[Tensor, Tensor]:
        if not isinstance(images, Tensor):  # data.augment_on: device - decoded and augmented there, whole batches
            assert self.augment.pipeline is not None, "an EncodedBatch needs the device pipeline (build_loaders)"
            return self.augment.pipeline(images, targets, device)
        x, y = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        return self.augment(x, y, train=train)

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        return self.criterion(output.float(), target)

    def eval_zeros(self, device: torch.device) -> Tensor:
        return torch.zeros(4, dtype=torch.float64, device=device)  # loss sum, top-1 hits, top-5 hits, samples

    def eval_sums(self, forward: Forward, x: Tensor, target: Tensor) -> Tensor:
        logits = forward(x).float()  # an all-padding batch still runs the forward (ZeRO-3 gathers are collective)
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits = top == target.unsqueeze(1)  # a PAD label matches no class
        loss = F.cross_entropy(logits, target, ignore_index=PAD, reduction="sum")
        parts = (loss, hits[:, 0].sum(), hits.any(dim=1).sum(), (target != PAD).sum())
        return torch.stack([p.double() for p in parts])

    def metrics(self, sums: Tensor) -> dict[str, float]:
        loss, top1, top5, n = sums.tolist()  # one host sync per evaluation
        n_safe = max(n, 1.0)
        return dict(loss=loss / n_safe, top1=100 * top1 / n_safe, top5=100 * top5 / n_safe, samples=int(n))
