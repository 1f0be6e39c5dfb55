"""What is being learned, behind one small interface (:class:`.base.Task`): the loop never asks which.

``build_task(cfg, augment)`` picks the task of ``cfg.task``: classification (:mod:`.classify`) or
semantic segmentation (:mod:`.segment`, ADE20K + UperNet), each with its own loss, metric and batch
preparation.
"""

from __future__ import annotations

from typing import Any

from ..config import Config
from .base import Task

__all__ = ["Task", "build_task"]


def build_task(cfg: Config, augment: Any) -> Task:
    """The task of ``cfg.task``; ``augment`` is the device-side augmentation the data side built (classify)."""
    if cfg.task == "classify":
        from .classify import ClassificationTask

        return ClassificationTask(augment)
    if cfg.task == "segment":
        from .segment import MEAN, STD, SegmentationTask

        s, d = cfg.seg, cfg.data
        mean = tuple(255 * m for m in d.mean) if d.mean else MEAN  # data.mean/std are on the 0-1 scale
        std = tuple(255 * v for v in d.std) if d.std else STD
        return SegmentationTask(
            cfg.model.num_classes, s.aux_weight, s.eval_mode, s.crop_size, s.eval_stride, mean=mean, std=std
        )
    raise ValueError(f"task: {cfg.task!r} has no implementation (available: classify, segment)")
