"""``data.augment_on: device``: a loader worker's share - read each sample's bytes, plan its augmentation.

The worker decodes nothing it can hand over encoded: a JPEG in RGB or greyscale (L) goes to the device as
its bytes (``torchvision.io.decode_jpeg`` there: nvJPEG on CUDA), and only the header is read here, with
PIL (size, format, mode: microseconds, no pixels), for the crop the plan draws. Anything else - PNG, a
CMYK or alpha JPEG, palette images - is decoded here exactly as the source's ``load`` decodes it
(``convert("RGB")``) and joins the batch as pixels (:attr:`EncodedBatch.decoded`): nothing is skipped.

Each sample's plan is drawn right after ``seed_everything(sample_seed(seed, epoch, id))``, the state the
loader path's timm transform starts from, so the draws are the same ones; the batch's mixup/cutmix plan
is drawn from :func:`mix_seed` of the micro-batch's global position (:func:`.plan.sample_position`), so
2 ranks x B at step s mix what 1 rank x B with accumulation 2 mixes at steps 2s and 2s + 1.
"""

from __future__ import annotations

from io import BytesIO
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms.functional import pil_to_tensor

ON_DEVICE_MODES = ("RGB", "L")  # JPEG modes decode_jpeg(mode=RGB) reads as PIL's convert("RGB") does
MIX_TAG = 0x6D6978  # "mix": keeps the mixup stream apart from the trainer's step_seed of the same position


class EncodedSource(Protocol):
    """A source that can hand over a sample's stored bytes (folder files, wds ``.jpg`` members)."""

    def __len__(self) -> int: ...

    def load_encoded(self, index: int) -> tuple[bytes, int]:
        """(the sample's bytes as stored, its label)."""
        ...

    def unreadable(self, index: int, err: Exception) -> str:
        """The one-line message for sample ``index`` whose bytes do not open or decode."""
        ...


class Planning(Protocol):
    """What the worker asks of :class:`swat_dist.data.pixels.device_plan.Planner`."""

    def sample(self, width: int, height: int) -> Any: ...

    def cropped(self) -> Any: ...

    def batch(self, plans: list[Any], mix_seed: int) -> Any: ...


def mix_seed(seed: int, epoch: int, position: int) -> int:
    """The mixup/cutmix seed of the micro-batch starting at global ``position`` of ``epoch``'s order."""
    return int(np.random.SeedSequence([seed, epoch, position, MIX_TAG]).generate_state(1)[0])


def read_sample(source: EncodedSource, index: int) -> tuple[bytes, Tensor | None, tuple[int, int], int]:
    """(the JPEG's bytes, or b"" when decoded here; decoded uint8 (3, h, w) or None; (width, height); label)."""
    data, label = source.load_encoded(index)
    try:
        with Image.open(BytesIO(data)) as img:
            size = img.size
            if img.format == "JPEG" and img.mode in ON_DEVICE_MODES:
                return data, None, size, label
            rgb = img.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise ValueError(source.unreadable(index, err)) from None
    return b"", pil_to_tensor(rgb), size, label


def pack(datas: list[bytes]) -> list[Tensor]:
    """The batch's JPEGs as uint8 views of ONE tensor. A tensor leaving a worker holds a shared-memory file
    descriptor per storage until it is freed: one per batch, not one per image (64 x the prefetched
    batches would near the usual 1,024-descriptor limit). Costs one copy of the bytes."""
    buffer = (
        torch.frombuffer(bytearray(b"".join(datas)), dtype=torch.uint8)
        if any(datas)
        else torch.empty(0, dtype=torch.uint8)
    )
    ends = np.cumsum([len(d) for d in datas]).tolist()
    return [buffer[end - len(d) : end] for d, end in zip(datas, ends, strict=True)]
