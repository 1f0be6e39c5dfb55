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

Reading for training (:class:`BetonStream`, used by ``ffcv_loader.py``): FFCV's ``Loader`` with our
traversal order and a decode -> seeded crop pipeline; the plan, seeds and colour ops live in ffcv-free
modules (``ffcv_loader.py``, ``ffcv_crop.py``).
"""

from __future__ import annotations

import queue
import sys
import traceback
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..pixels.images import ImageOptions, load_rgb

_threads = torch.get_num_threads()
import ffcv  # noqa: E402  (sets torch to 1 thread at import; restored below)
import numba  # noqa: E402  (ffcv's JIT; imported here for its thread limit)
from ffcv.fields import IntField, RGBImageField  # noqa: E402
from ffcv.fields.basics import IntDecoder  # noqa: E402
from ffcv.libffcv import imdecode, memcpy, resize_crop  # noqa: E402
from ffcv.pipeline.allocation_query import AllocationQuery  # noqa: E402
from ffcv.pipeline.compiler import Compiler  # noqa: E402
from ffcv.pipeline.operation import Operation  # noqa: E402
from ffcv.pipeline.pipeline_spec import PipelineSpec  # noqa: E402
from ffcv.pipeline.state import State  # noqa: E402
from ffcv.reader import Reader  # noqa: E402
from ffcv.traversal_order.base import TraversalOrder  # noqa: E402

torch.set_num_threads(_threads)


def _without_numba_gc_noise(hook: Callable[[Any], object]) -> Callable[[Any], object]:
    """numba's dispatcher finalizer raises a harmless KeyError when an FFCV pipeline is garbage-collected
    (PLATFORM.md); Python prints it as a traceback in the middle of a user's output. Drop exactly that one."""

    def hook_(unraisable: Any) -> None:
        frames = traceback.extract_tb(unraisable.exc_traceback) if unraisable.exc_traceback else []
        last = frames[-1].filename.replace("\\", "/") if frames else ""
        if isinstance(unraisable.exc_value, KeyError) and last.endswith("numba/core/dispatcher.py"):
            return
        hook(unraisable)

    return hook_


sys.unraisablehook = _without_numba_gc_noise(sys.unraisablehook)

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

    def data_ptr(self, i: int) -> int:
        """Where sample ``i``'s image bytes start in the file."""
        return int(self._image[i]["data_ptr"])

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


# ---- reading: FFCV's compiled pipeline driven by our plan (used by ffcv_loader.py) ----

JPG = 0  # RGBImageField's storage modes: 0 JPEG, 1 raw pixels
CropParams = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]  # (ids, heights, widths) -> (B, 5)


def set_jit(enabled: bool) -> None:
    """Compile FFCV pipelines with numba (default) or run them as plain Python: no JIT cost (10-30 s per
    pipeline), but the per-pixel loops run interpreted - for tests on tiny images only."""
    Compiler.set_enabled(enabled)


@contextmanager
def _torch_threads_kept() -> Iterator[None]:
    # FFCV's Loader sets torch's thread count to its own worker count on creation and on every epoch
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class _WholeImageDecoder(Operation):
    """Decode each image whole into a row of a max-size scratch buffer; the next stage crops it.

    FFCV's crop decoders crop inside the decoder, where only the sample ids reach the compiled code -
    not the epoch our crop seeds need. Decoding whole first costs the same scratch memory as FFCV's own
    random-resized-crop decoder (max height x max width x 3 bytes per sample and batch slot) and one extra
    copy for images stored raw.

    The row's last byte says whether libjpeg-turbo refused the record (``imdecode`` returned -1: an error
    or a warning such as "corrupt JPEG data"), which FFCV's own decoders ignore - a damaged .beton then
    trained on whatever the buffer held. It costs one byte per row and one comparison per image.
    """

    def declare_state_and_memory(self, previous_state: State) -> tuple[State, AllocationQuery]:
        row = (int(self.metadata["height"].max()) * int(self.metadata["width"].max()) * 3 + 1,)  # + status byte
        u8 = np.dtype("u1")
        return replace(previous_state, jit_mode=True, shape=row, dtype=u8), AllocationQuery(row, u8)

    def generate_code(self) -> Callable:
        read, loop = self.memory_read, Compiler.get_iterator()
        jpeg, copy = Compiler.compile(imdecode), Compiler.compile(memcpy)

        def decode(ids, out, metadata, storage_state):
            for k in loop(len(ids)):
                rec = metadata[ids[k]]
                data = read(rec["data_ptr"], storage_state)
                h, w = np.uint32(rec["height"]), np.uint32(rec["width"])
                if rec["mode"] == JPG:
                    out[k, -1] = jpeg(data, out[k], h, w, h, w, 0, 0, 1, 1, False, False) < 0
                else:  # raw pixels: any bytes are pixels, only data verify's SHA256 can tell
                    copy(data, out[k])
                    out[k, -1] = 0
            return out[: len(ids)]

        decode.is_parallel = True  # type: ignore[attr-defined]  # FFCV compiles it with prange
        return decode


# Page-locked batches on a GPU machine, allocated where they are written, so the trainer's
# .to(device, non_blocking=True) is a real asynchronous copy without a second host copy (the DataLoader's
# pin thread makes one per batch). torch's caching host allocator reuses freed blocks, and it allocates in
# whichever device context already exists (pytorch#21081), so FFCV's threads create none on GPU 0.
_PIN = torch.cuda.is_available()


def host_batch(shape: tuple[int, ...]) -> np.ndarray:
    """An uninitialised uint8 array for a batch: page-locked when there is a GPU to copy it to."""
    return torch.empty(shape, dtype=torch.uint8, pin_memory=_PIN).numpy()


class _Refused(np.ndarray):
    """A batch in which libjpeg-turbo refused the records ``ids``. Raising in FFCV's thread would kill it
    with a traceback and leave the consumer only "thread died"; the batch carries the news instead."""

    ids: np.ndarray


class _CropStage(Operation):
    """A Python stage that sees the batch's sample ids: crop parameters from ``params`` (ffcv_crop.py),
    then one compiled, threaded pass of crop + resize (FFCV's OpenCV INTER_AREA resize) + flip + HWC->CHW.

    The output is a fresh (B, 3, size, size) array per batch (pinned on a GPU machine: :func:`host_batch`),
    not one of FFCV's reused buffers: the
    consumer keeps it without a copy (a clone costs ~6 ms per 64 images here, a torch permute-copy ~16 ms,
    both on the consuming thread; the transposition here runs in the decoding threads instead).
    """

    def __init__(self, size: int, params: CropParams) -> None:
        super().__init__()
        self.size, self.params = size, params

    def declare_state_and_memory(self, previous_state: State) -> tuple[State, AllocationQuery]:
        scratch = (self.size, self.size, 3)  # OpenCV's resize writes HWC
        u8 = np.dtype("u1")
        out = replace(previous_state, jit_mode=False, shape=(3, self.size, self.size), dtype=u8)
        return out, AllocationQuery(scratch, u8)

    def generate_code(self) -> Callable:
        heights = self.metadata["height"].astype(np.int64)
        widths = self.metadata["width"].astype(np.int64)
        loop, resize, size = Compiler.get_iterator(), Compiler.compile(resize_crop), self.size

        def crop(images, hs, ws, params, scratch, out):
            for k in loop(len(params)):
                src = images[k][: hs[k] * ws[k] * 3].reshape(hs[k], ws[k], 3)
                top, left, h, w, flip = params[k, 0], params[k, 1], params[k, 2], params[k, 3], params[k, 4]
                resize(src, top, top + h, left, left + w, scratch[k])
                for y in range(size):
                    for x in range(size):
                        sx = size - 1 - x if flip else x
                        for c in range(3):
                            out[k, c, y, x] = scratch[k, y, sx, c]

        crop.is_parallel = True  # type: ignore[attr-defined]  # FFCV compiles it with prange
        compiled = Compiler.compile(crop)

        def stage(images, scratch, ids):
            hs, ws = heights[ids], widths[ids]
            out = host_batch((len(ids), 3, size, size))
            compiled(images, hs, ws, np.ascontiguousarray(self.params(ids, hs, ws), dtype=np.int64), scratch, out)
            refused = np.flatnonzero(images[:, -1])  # the decoder's status bytes: B bytes, on the host
            if refused.size:  # raised by the consumer when it reaches this batch (BetonStream.epoch)
                marked = out.view(_Refused)
                marked.ids = np.asarray(ids)[refused]
                return marked
            return out

        stage.with_indices = True  # type: ignore[attr-defined]  # FFCV then passes the batch's sample ids
        return stage


class _PlanOrder(TraversalOrder):
    """A traversal order that is whatever ``ids()`` says: the rest of this rank's planned epoch.

    FFCV's Loader takes a custom order as an *instance* and calls it with itself, so ``__call__``
    finishes the set-up. The epoch FFCV passes is ignored: ours (and the resume position) live in ``ids``.
    """

    def __init__(self, ids: Callable[[], np.ndarray]) -> None:
        self.ids = ids

    def __call__(self, loader: Any) -> _PlanOrder:
        super().__init__(loader)
        return self

    def sample_order(self, epoch: int) -> np.ndarray:
        return np.asarray(self.ids(), dtype=np.uint64)


class BetonStream:
    """FFCV's Loader over ``path`` yielding (uint8 (B, 3, size, size) images, labels) for ``ids()``.

    Images are fresh arrays; labels are views of FFCV's reused buffers: copy them before the next batch.
    """

    def __init__(
        self, path: str, size: int, batch_size: int, workers: int, ids: Callable[[], np.ndarray], params: CropParams
    ) -> None:
        open_beton(path)  # a missing or malformed file is a clear ValueError, before FFCV's own errors
        self.path = path
        # numba's thread pool cannot grow past NUMBA_NUM_THREADS (the core count by default)
        self.threads = max(1, min(workers, numba.config.NUMBA_NUM_THREADS))  # type: ignore[attr-defined]
        with _torch_threads_kept():
            self.loader = ffcv.Loader(
                path,
                batch_size=batch_size,
                num_workers=self.threads,
                os_cache=True,  # pages shared by every rank on the node, as for the other backends
                order=_PlanOrder(ids),
                drop_last=False,  # the plan only hands out whole batches
                pipelines={
                    # the decoder goes in `decoder=`: as the first of a plain list FFCV would take it for a
                    # transform (it recognises only RGBImageField's own decoder classes there)
                    "image": PipelineSpec("image", decoder=_WholeImageDecoder(), transforms=[_CropStage(size, params)]),
                    "label": PipelineSpec("label", decoder=IntDecoder(), transforms=[]),
                },
            )

    def epoch(self) -> Generator[tuple[np.ndarray, np.ndarray]]:
        """One pass over ``ids()``; close it to stop early."""
        with _torch_threads_kept():
            it = iter(self.loader)
        try:
            while True:
                # FFCV's own __next__ waits forever if its thread died (an exception in a stage): poll
                # instead. (It also syncs CUDA streams; our pipeline never touches the device.)
                try:
                    item = it.output_queue.get(timeout=1.0)
                except queue.Empty:
                    if not it.is_alive():
                        raise RuntimeError("FFCV's loader thread died (its traceback is printed above)") from None
                    continue
                if item is None:
                    return
                images, labels = item[1]
                if isinstance(images, _Refused):
                    raise ValueError(self._refused(images.ids))
                yield images, labels.reshape(-1)
        finally:  # a consumer that stops early must not leave FFCV's thread decoding into the void
            it.close()

    def _refused(self, ids: np.ndarray) -> str:
        """The one line for records that do not decode, worded as the wds reader's."""
        first = int(ids[0])
        more = f" (and {len(ids) - 1} more in its batch)" if len(ids) > 1 else ""
        at = open_beton(self.path).data_ptr(first)
        return (f"{self.path}: sample {first} (JPEG at byte {at:,}) does not decode{more} (libjpeg-turbo refused "
                "it); run swat-dist data verify")  # fmt: skip
