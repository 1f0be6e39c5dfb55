"""The task seam (the shape of timm's ``ClassificationTask`` and torchtitan's ``TrainSpec.loss_fn``).

A task owns what differs between learning problems and nothing else: how a loader batch becomes the
model's input and target on the device (augmentation included), the training loss, the evaluation
sums and how they become metrics, and which metrics count as "best". The loop (:mod:`swat_dist.train`)
owns everything else: steps, collectives, checkpoints, logging.

Evaluation is split so that the loop does the one collective: :meth:`Task.eval_sums` returns this
batch's contribution as one float64/int64 tensor on the device (no host sync), the loop adds them up,
sums them across ranks once (:func:`swat_dist.collectives.sum_`), and :meth:`Task.metrics` turns the
total into numbers. Padding the loaders add (so every rank runs the same batches) must add nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from torch import Tensor

Forward = Callable[[Tensor], Tensor]


class Task(Protocol):
    best_keys: tuple[str, ...]  # evaluation metrics whose best value (max) the run keeps, e.g. ("top1", "top5")

    def batch(self, images: Tensor, targets: Tensor, device: torch.device, train: bool) -> tuple[Tensor, Tensor]:
        """A loader batch -> (model input, target) on ``device``; ``train`` adds the training augmentation."""
        ...

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        """The scalar training loss of the model's output."""
        ...

    def eval_zeros(self, device: torch.device) -> Tensor:
        """The empty evaluation sums (the same shape and dtype as :meth:`eval_sums` returns)."""
        ...

    def eval_sums(self, forward: Forward, x: Tensor, target: Tensor) -> Tensor:
        """Run ``forward`` on one evaluation batch; its contribution to the sums, on the device."""
        ...

    def metrics(self, sums: Tensor) -> dict[str, float]:
        """All ranks' summed evaluation sums -> the metrics, with ``samples`` (how many were evaluated)."""
        ...
