"""The reference backend: an ImageNet-style folder read with PIL (what timm's and DeiT's loaders do).

Slow next to the sharded formats - one small file per image - but it needs no conversion and is the
yardstick the benchmark compares them with.
"""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from torch import Tensor

from ..pixels.transforms import ImageTransform

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}


def list_split(root: str | Path, split: str) -> tuple[list[str], list[tuple[str, int]]]:
    """Sorted class names and (path, label) pairs of ``root/split``; a missing or empty split is an error."""
    base = Path(root) / split
    if not base.is_dir():
        raise ValueError(f"{root}: no {split}/ folder (expected {split}/<class>/<image>)")
    classes = sorted(p.name for p in base.iterdir() if p.is_dir())
    if not classes:
        raise ValueError(f"{base}: no class folders")
    samples = [
        (str(f), label)
        for label, name in enumerate(classes)
        for f in sorted((base / name).iterdir())
        if f.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not samples:
        raise ValueError(f"{base}: no images")
    return classes, samples


class FolderSource:
    """Random access to ``root/split`` images with a transform per image (train or eval)."""

    def __init__(self, root: str | Path, split: str, train_tf: ImageTransform, eval_tf: ImageTransform) -> None:
        self.classes, self.samples = list_split(root, split)
        self.train_tf, self.eval_tf = train_tf, eval_tf

    def __len__(self) -> int:
        return len(self.samples)

    def load_encoded(self, index: int) -> tuple[bytes, int]:
        """Sample ``index``'s file as stored, and its label (``data.augment_on: device``)."""
        path, label = self.samples[index]
        try:
            return Path(path).read_bytes(), label
        except OSError as err:  # deleted or unreadable since the listing
            raise ValueError(self.unreadable(index, err)) from None

    def unreadable(self, index: int, err: Exception) -> str:
        """The one line for sample ``index`` when its file does not read, open or decode."""
        reason = getattr(err, "strerror", None) or str(err)  # an OSError's text without its errno and path
        why = "not an image" if isinstance(err, UnidentifiedImageError) else reason
        return f"{self.samples[index][0]}: does not decode ({why})"

    def load(self, index: int, train: bool) -> tuple[Tensor, int]:
        data, label = self.load_encoded(index)
        try:
            with Image.open(BytesIO(data)) as img:
                rgb = img.convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            raise ValueError(self.unreadable(index, err)) from None
        return (self.train_tf if train else self.eval_tf)(rgb), label
