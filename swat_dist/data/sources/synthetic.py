"""The ``synthetic`` loader backend (:class:`SyntheticSource`): random tensors, no files, no decode.

Its class names are the folder names ``swat-dist data synthetic`` (:mod:`..sets.synthetic`) writes.
"""

from __future__ import annotations

import torch


def class_names(classes: int) -> list[str]:
    return [f"class_{k:0{max(3, len(str(classes - 1)))}d}" for k in range(classes)]


class SyntheticSource:
    """The ``synthetic`` loader backend: no files, sample ``i`` is random uint8 noise seeded by (seed, i).

    For throughput ceilings (no decode, no I/O) and tests. Labels are ``i % classes``: nothing to learn.
    """

    def __init__(self, samples: int, classes: int, img_size: int, seed: int = 0) -> None:
        if samples < 1 or classes < 1 or img_size < 1:
            raise ValueError(
                f"synthetic data needs samples, classes, img_size >= 1; got {samples}, {classes}, {img_size}"
            )
        self.samples, self.num_classes, self.img_size, self.seed = samples, classes, img_size, seed
        self.classes = class_names(classes)

    def __len__(self) -> int:
        return self.samples

    def load(self, index: int, train: bool) -> tuple[torch.Tensor, int]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        img = torch.randint(0, 256, (3, self.img_size, self.img_size), dtype=torch.uint8, generator=gen)
        return img, index % self.num_classes
