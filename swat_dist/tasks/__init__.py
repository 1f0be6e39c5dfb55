"""What is being learned, behind one small interface (:class:`.base.Task`): the loop never asks which.

``build_task(cfg, augment)`` picks the task of ``cfg.task``. Classification is :mod:`.classify`;
segmentation (ADE20K + UperNet) comes in beside it with its own loss, metric and batch preparation.
"""

from __future__ import annotations

from typing import Any

from ..config import Config
from .base import Task

__all__ = ["Task", "build_task"]


def build_task(cfg: Config, augment: Any) -> Task:
    """The task of ``cfg.task``, with the device-side batch preparation the data side built for it."""
    if cfg.task == "classify":
        from .classify import ClassificationTask

        return ClassificationTask(augment)
    raise ValueError(f"task: {cfg.task!r} has no implementation (available: classify)")
