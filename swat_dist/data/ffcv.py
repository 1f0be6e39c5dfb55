"""FFCV ``.beton`` files: the only module that imports ``ffcv``.

Format written: one ``<split>.beton`` per split with fields ``image`` (``RGBImageField``) and ``label``
(``IntField``), the layout ffcv-imagenet's loaders read. (Absolute imports mean ``import ffcv`` here is the
real package, not this module.)

How writing is parallel: FFCV's ``DatasetWriter`` must know the sample count before it starts and runs
its own worker processes, each pulling ``dataset[i]`` and encoding it. So the converter first runs the
cheap check of every file (``images.check``, 1/8-scale JPEG decode) in its own pool, then hands the
survivors to the writer with ``num_workers`` = our workers, and each FFCV worker decodes its images with
our robust decoder. Bad files never reach FFCV; a file that passes the check but fails the real decode
(it changed in between) becomes a 1x1 placeholder *and* a line in ``failures`` so the caller can reject
the whole split - raising inside an FFCV worker would hang the writer, which waits for every sample.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from .images import ImageOptions, load_rgb

_threads = torch.get_num_threads()
import ffcv  # noqa: E402  (sets torch to 1 thread at import; restored below)
from ffcv.fields import IntField, RGBImageField  # noqa: E402
from ffcv.reader import Reader  # noqa: E402

torch.set_num_threads(_threads)

MIN_PAGE = 8 * 2**20  # FFCV's default page; a sample must fit in one page or its worker dies


@dataclass(frozen=True)
class BetonOptions:
    image: ImageOptions
    compress_probability: float  # share stored as JPEG; the rest raw uint8 pixels
    seed: int = 0


def _page_size(max_resolution: int) -> int:
    # worst case: a raw max_resolution^2 image, or a JPEG of noise at quality 100 (~2x raw, with margin)
    need = 2 * 3 * max_resolution**2 + 2**16
    return max(MIN_PAGE, 1 << (need - 1).bit_length())


class _Decoded:
    """Indexable dataset FFCV's writer workers read: ``[i]`` -> (HxWx3 uint8, label), never raising."""

    def __init__(self, root: Path, items: Sequence[tuple[str, int]], opts: BetonOptions, failures: Path) -> None:
        self.root, self.items, self.opts, self.failures = root, items, opts, failures

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        rel, label = self.items[i]
        # RGBImageField draws raw-vs-JPEG from np.random right after this call: seeding per sample makes
        # which images are stored raw reproducible, whatever worker handles them.
        np.random.seed((self.opts.seed * 1_000_003 + i) % 2**32)
        try:
            return np.asarray(load_rgb(self.root / rel, self.opts.image)), label
        except Exception as err:
            with open(self.failures, "a") as f:  # one short append per line: atomic under O_APPEND
                f.write(f"{rel}\t{err.__class__.__name__}: {err}\n".replace("\n", " ").rstrip() + "\n")
            return np.zeros((1, 1, 3), np.uint8), label


def write_beton(
    path: Path, root: Path, items: Sequence[tuple[str, int]], opts: BetonOptions, workers: int, failures: Path
) -> None:
    """Write ``items`` ((path relative to ``root``, label), in this order) into ``path``."""
    p = opts.compress_probability
    mode = "jpg" if p >= 1 else "raw" if p <= 0 else "proportion"
    fields = {
        "image": RGBImageField(
            write_mode=mode,
            max_resolution=opts.image.max_resolution,
            jpeg_quality=opts.image.jpeg_quality,
            compress_probability=p,
        ),
        "label": IntField(),
    }
    writer = ffcv.DatasetWriter(
        str(path), fields, page_size=_page_size(opts.image.max_resolution), num_workers=max(1, workers)
    )
    writer.from_indexed_dataset(_Decoded(root, items, opts, failures), chunksize=64)


@dataclass(frozen=True)
class BetonRecord:
    index: int
    label: int
    mode: str  # "jpg" or "raw"
    width: int
    height: int
    data: bytes


class Beton:
    """Read-only view of a .beton's records, without FFCV's JIT pipeline (for checking, not training).

    Opening parses the header, field table, metadata and allocation table; a damaged file raises.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        reader = Reader(str(path))
        if reader.field_names[:2] != ["image", "label"]:
            raise ValueError(f"fields are {reader.field_names}, expected ['image', 'label']")
        self.num_samples = int(reader.num_samples)
        meta = reader.metadata
        if len(meta) != self.num_samples:
            raise ValueError(f"metadata holds {len(meta)} of {self.num_samples} samples (file truncated?)")
        image, label = list(meta.dtype.names or ["", ""])[:2]  # FFCV names metadata columns f0, f1, ...
        self._image, self.labels = meta[image], np.asarray(meta[label], dtype=np.int64)
        table = np.sort(reader.alloc_table, order="ptr")
        self._ptrs, self._sizes = table["ptr"], table["size"]

    def records(self, start: int = 0, stop: int | None = None) -> Iterator[BetonRecord]:
        """Records ``start:stop``; a pointer outside the file raises ``ValueError``."""
        data = np.memmap(self.path, dtype=np.uint8, mode="r")
        modes = {0: "jpg", 1: "raw"}
        for i in range(start, self.num_samples if stop is None else stop):
            m = self._image[i]
            ptr = int(m["data_ptr"])
            at = int(np.searchsorted(self._ptrs, ptr))
            size = int(self._sizes[at]) if at < len(self._ptrs) and self._ptrs[at] == ptr else None
            if size is None or ptr + size > len(data):
                raise ValueError(f"sample {i}: data pointer {ptr} is not an allocation inside the file")
            mode = modes.get(int(m["mode"]), f"unknown mode {int(m['mode'])}")
            width, height = int(m["width"]), int(m["height"])
            yield BetonRecord(i, int(self.labels[i]), mode, width, height, bytes(data[ptr : ptr + size]))


@lru_cache(maxsize=2)
def open_beton(path: str) -> Beton:
    """A :class:`Beton`, parsed once per process (its tables are ~50 bytes per sample)."""
    return Beton(path)
