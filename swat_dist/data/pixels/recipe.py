"""The train recipe ``data.augment_on: device`` executes: the ``data.*`` settings the plan and the device read."""

from __future__ import annotations

from dataclasses import dataclass

_INTERPOLATIONS = ("random", "bilinear", "bicubic")  # what the device resize and ops implement


@dataclass(frozen=True)
class Recipe:
    """The train recipe the device executes (the ``data.*`` settings of the loader path)."""

    img_size: int
    num_classes: int
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: float = 0.5
    interpolation: str = "random"
    auto_augment: str | None = None
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    reprob: float = 0.0
    mixup: float = 0.0
    cutmix: float = 0.0
    mixup_prob: float = 1.0
    switch_prob: float = 0.5
    smoothing: float = 0.1
    color_jitter: float = 0.0

    def __post_init__(self) -> None:
        if self.interpolation not in _INTERPOLATIONS:
            raise ValueError(f"data.interpolation={self.interpolation!r}: the device pipeline has {_INTERPOLATIONS}")
        aa = self.auto_augment
        if aa and not aa.startswith("rand"):
            raise ValueError(f"data.auto_augment={aa!r}: only RandAugment policies ('rand-...') run on the device")
        if not aa and self.color_jitter > 0:
            raise ValueError("data.augment_on=device needs data.color_jitter=0 or a RandAugment data.auto_augment")
