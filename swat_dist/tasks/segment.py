"""Semantic segmentation (ADE20K + UperNet, SEG_SPEC 3-5): pixel cross-entropy + 0.4 x auxiliary, mIoU.

Training: the model returns (main logits at stride 4, auxiliary logits at stride 16); both are
upsampled bilinearly to the crop and scored with cross-entropy ignoring 255 (mean over labelled
pixels, PyTorch's convention; mmseg's default divides by all pixels), the auxiliary weighted 0.4.

Evaluation is dataset-level (SEG_SPEC 5): one int64 confusion matrix (target x prediction) per rank,
summed over the whole val set and across ranks once, at the ORIGINAL label size (the logits of the
resized image are resized back). Pixels labelled 255 (ignored) and -1 (padding of a rank's last
batches) never reach it. ``mode='whole'`` runs one forward per image (padded to a multiple of 32);
``'slide'`` runs ``crop``-sized windows ``stride`` apart and averages the logits where they overlap
(bounded memory on large images, and a backbone that only takes its crop size).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Forward

IGNORE = 255  # unlabelled pixels (ADE's 0 after reduce_zero_label)
PAD = -1  # the mask value of a padding sample (the val loaders' padding)
MEAN = (123.675, 116.28, 103.53)  # ImageNet, 0-255 scale (SEG_SPEC 2.6)
STD = (58.395, 57.12, 57.375)
SIZE_DIVISOR = 32  # whole-image inference pads to this: the coarsest stride of the UperNet pyramid


def confusion(pred: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """(C*C,) int64 counts of (target, prediction) pairs over labelled pixels; no host sync.

    Pixels whose target is not a class (255, -1) go to one extra bin that is dropped, instead of being
    masked out (boolean indexing would wait for the device to count them).
    """
    valid = (target >= 0) & (target < num_classes)
    index = torch.where(valid, target * num_classes + pred, num_classes * num_classes).flatten()
    counts = torch.zeros(num_classes * num_classes + 1, dtype=torch.int64, device=pred.device)
    counts.scatter_add_(0, index, torch.ones_like(index))
    return counts[:-1]


def scores(matrix: Tensor) -> dict[str, float]:
    """mIoU, mAcc, aAcc in percent from a (C, C) confusion matrix (rows: target, columns: prediction).

    mIoU averages IoU over the classes with a non-empty union; mAcc the per-class accuracy over the
    classes present in the targets; aAcc is the pixel accuracy (SEG_SPEC 5).
    """
    m = matrix.double()
    inter, target, pred = m.diagonal(), m.sum(1), m.sum(0)
    union = target + pred - inter
    iou = inter[union > 0] / union[union > 0]
    acc = inter[target > 0] / target[target > 0]
    total = float(target.sum())
    return dict(
        mIoU=100 * float(iou.mean()) if len(iou) else 0.0,
        mAcc=100 * float(acc.mean()) if len(acc) else 0.0,
        aAcc=100 * float(inter.sum()) / total if total else 0.0,
    )


class SegmentationTask:
    best_keys: tuple[str, ...] = ("mIoU", "mAcc", "aAcc")

    def __init__(
        self, num_classes: int, aux_weight: float = 0.4, mode: str = "whole", crop: int = 512, stride: int = 341,
        mean: tuple[float, ...] = MEAN, std: tuple[float, ...] = STD,
    ) -> None:  # fmt: skip
        if mode not in ("whole", "slide"):
            raise ValueError(f"eval mode {mode!r}: use whole or slide")
        self.num_classes, self.aux_weight, self.mode = num_classes, aux_weight, mode
        self.crop, self.stride = crop, stride
        self.mean = torch.tensor(mean).view(1, -1, 1, 1)
        self.std = torch.tensor(std).view(1, -1, 1, 1)

    def batch(self, images: Tensor, targets: Tensor, device: torch.device, train: bool) -> tuple[Tensor, Tensor]:
        """uint8 images -> normalised floats, masks -> int64 (photometric augmentation ran on the loader)."""
        x, y = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        self.mean, self.std = self.mean.to(device), self.std.to(device)  # once: .to of a tensor already there is free
        return (x.float() - self.mean) / self.std, y.long()

    def loss(self, output: Tensor | tuple[Tensor, Tensor], target: Tensor) -> Tensor:
        main, aux = output if isinstance(output, (tuple, list)) else (output, None)
        loss = self._ce(main, target)
        return loss + self.aux_weight * self._ce(aux, target) if aux is not None else loss

    @staticmethod
    def _ce(logits: Tensor, target: Tensor) -> Tensor:
        up = F.interpolate(logits.float(), size=target.shape[-2:], mode="bilinear", align_corners=False)
        return F.cross_entropy(up, target, ignore_index=IGNORE)

    def eval_zeros(self, device: torch.device) -> Tensor:
        return torch.zeros(self.num_classes**2 + 1, dtype=torch.int64, device=device)  # confusion + images

    def eval_sums(self, forward: Forward, x: Tensor, target: Tensor) -> Tensor:
        logits = self._whole(forward, x) if self.mode == "whole" else self._slide(forward, x)
        logits = _upsampled(logits, target.shape[-2:])
        images = (target.flatten(1)[:, 0] != PAD).sum().reshape(1)
        return torch.cat([confusion(logits.argmax(1), target, self.num_classes), images])

    def _whole(self, forward: Forward, x: Tensor) -> Tensor:
        """One forward of the image zero-padded (the mean colour, after normalisation) to a multiple of 32
        on the bottom and right, so any backbone's strides divide it; logits cropped back to the image."""
        h, w = x.shape[-2:]
        padded = F.pad(x, (0, -w % SIZE_DIVISOR, 0, -h % SIZE_DIVISOR))
        return _upsampled(forward(padded), padded.shape[-2:])[..., :h, :w]

    def _slide(self, forward: Forward, x: Tensor) -> Tensor:
        """Windows of ``crop`` every ``stride`` pixels (the last flush with the border), logits averaged where
        they overlap; an image smaller than a window is zero-padded to it first."""
        h, w = x.shape[-2:]
        x = F.pad(x, (0, max(self.crop - w, 0), 0, max(self.crop - h, 0)))
        ph, pw = x.shape[-2:]
        out: Tensor | None = None
        count = torch.zeros((1, 1, ph, pw), device=x.device)
        for top in _starts(ph, self.crop, self.stride):
            for left in _starts(pw, self.crop, self.stride):
                window = _upsampled(forward(x[..., top : top + self.crop, left : left + self.crop]), (self.crop,) * 2)
                if out is None:
                    out = torch.zeros((x.shape[0], window.shape[1], ph, pw), device=x.device)
                out[..., top : top + self.crop, left : left + self.crop] += window
                count[..., top : top + self.crop, left : left + self.crop] += 1
        assert out is not None
        return (out / count)[..., :h, :w]

    def metrics(self, sums: Tensor) -> dict[str, float]:
        values = sums.cpu()  # one host sync per evaluation
        matrix = values[:-1].view(self.num_classes, self.num_classes)
        return dict(scores(matrix), samples=int(values[-1]))


def _upsampled(logits: Tensor, size: Any) -> Tensor:
    return F.interpolate(logits.float(), size=tuple(size), mode="bilinear", align_corners=False)


def _starts(size: int, window: int, stride: int) -> list[int]:
    """Window starts covering [0, size): every ``stride``, the last one flush with the end."""
    last = max(size - window, 0)
    starts = list(range(0, last, stride))
    return [*starts, last]
