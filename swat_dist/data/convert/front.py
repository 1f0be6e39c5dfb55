"""``swat-dist data convert SRC DST``: an ImageNet-style folder -> WebDataset shards or FFCV .beton files.

The pipeline, per split (train, then val), streaming so ImageNet never sits in memory:

1. ``scan``: classes (sorted train folder names) and every file below each class folder.
2. A seeded shuffle of the split's files, so shards and .beton pages mix classes (a class-sorted shard
   read sequentially would feed a model one class at a time).
3. ``--workers`` processes decode every file robustly (``images``); bad files become (path, reason).
   wds: the main process writes the JPEGs into size-bounded shards in that order (``wds``).
   ffcv: the workers only check files, then FFCV's own writer workers decode the survivors (``ffcv``).
4. Report (``report.json``, ``report.txt``), ``SHA256SUMS``, and ``index.json`` last, all in a staging
   folder that is renamed to DST in one step (``staging``): DST is either absent, the previous
   dataset, or complete. A rerun after a crash simply starts again (files are small; a resume would need
   per-shard bookkeeping for no real gain on a job that takes minutes per 100k images).

``--overwrite`` replaces a previous conversion in DST, whole; it refuses (naming one) while DST holds
anything that conversion did not write - its index's shards or .beton files, the names in its
``SHA256SUMS``, ``index.json`` and the reports - so a file a person put there is never deleted unseen.

``--strict`` turns any skipped file into exit 1 and a class without usable images is always exit 1;
either way nothing is published and the report is kept beside DST as ``DST-rejected-report.json``.

``--task segment`` reads an ADEChallengeData2016 layout instead (``seg_scan``) and writes image + mask
shards (``seg_convert``, wds only) through the same steps; see docs/data.md.
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ...files import atomic_write
from ...progress import Progress, progress
from ..pixels.images import PIL_BOMB_PIXELS, Encoded, ImageOptions, check, encode
from ..pixels.masks import IGNORE_INDEX
from ..sources.index import INDEX_NAME, DatasetIndex, ShardInfo, SplitInfo, read_index, write_index
from . import report
from .scan import SPLITS, Source, scan
from .staging import StagedFolder, fsync_file

FORMATS = ("wds", "ffcv")
TASKS = ("classify", "segment")
FFCV_NO_MASKS = (
    "--format ffcv --task segment: not supported - FFCV has no field type that stores a mask losslessly "
    "and paired with its variable-sized image; use --format wds"
)
T = TypeVar("T")


@dataclass(frozen=True)
class ConvertOptions:
    fmt: str
    workers: int = 0  # decode processes; 0 = every core this process may use
    shard_bytes: int = 256 * 2**20  # wds: upper bound of a shard's size
    max_resolution: int = 512
    jpeg_quality: int = 90
    compress_probability: float = 1.0  # ffcv: share of images stored as JPEG (the rest raw pixels)
    strict: bool = False
    overwrite: bool = False
    seed: int = 0  # sample order in shards / .beton files
    max_pixels: int = PIL_BOMB_PIXELS  # larger source images are skipped (decompression-bomb guard)
    task: str = "classify"  # segment: an ADEChallengeData2016 layout -> image + mask samples
    num_classes: int = 150  # segment: classes the model predicts (ADE20K: 150)
    reduce_zero_label: bool = True  # segment: raw 0 = unlabelled -> ignore, raw l -> class l - 1

    def __post_init__(self) -> None:
        top = 254 if self.reduce_zero_label else 255  # raw labels must stay below 255, the ignore value
        checks = [
            (self.task in TASKS, f"task must be one of {', '.join(TASKS)}, got {self.task!r}"),
            (not (self.task == "segment" and self.fmt == "ffcv"), FFCV_NO_MASKS),
            (1 <= self.num_classes <= top, f"--num-classes must be in [1, {top}], got {self.num_classes}"),
            (self.fmt in FORMATS, f"format must be one of {', '.join(FORMATS)}, got {self.fmt!r}"),
            (self.workers >= 0, f"--workers must be >= 0 (0 = all cores), got {self.workers}"),
            (self.shard_bytes >= 2**14, f"--shard-size-mb must be >= 1/64 (16 KiB), got {self.shard_bytes} bytes"),
            (16 <= self.max_resolution <= 16384, f"--max-resolution must be in [16, 16384], got {self.max_resolution}"),
            (1 <= self.jpeg_quality <= 100, f"--jpeg-quality must be in [1, 100], got {self.jpeg_quality}"),
            (
                0 <= self.compress_probability <= 1,
                f"--compress-probability must be in [0, 1], got {self.compress_probability}",
            ),
            (self.max_pixels > 0, f"max_pixels must be positive, got {self.max_pixels}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def recorded(self) -> dict[str, Any]:
        """What shapes the output, saved in the index (not how the run was driven)."""
        if self.task == "segment":  # images keep their size: max_resolution plays no part
            keep = ["jpeg_quality", "seed", "max_pixels", "shard_bytes", "task", "num_classes", "reduce_zero_label"]
            return {k: v for k, v in asdict(self).items() if k in keep}
        keep = ["max_resolution", "jpeg_quality", "seed", "max_pixels"]
        keep.append("shard_bytes" if self.fmt == "wds" else "compress_probability")
        return {k: v for k, v in asdict(self).items() if k in keep}

    def processes(self) -> int:
        return self.workers or cores()

    def image(self) -> ImageOptions:
        return ImageOptions(self.max_resolution, self.jpeg_quality, self.max_pixels)


@dataclass
class _Written:
    splits: dict[str, SplitInfo] = field(default_factory=dict)
    sha256: dict[str, str] = field(default_factory=dict)
    skipped: list[dict[str, str]] = field(default_factory=list)
    notes: list[dict[str, str]] = field(default_factory=list)  # converted, but changed: {"path", "note"}


Mapper = Callable[[Callable[[Any], Any], list[Any]], Iterator[Any]]


def _encode_one(root: str, opts: ImageOptions, rel: str) -> Encoded | str:
    return encode(os.path.join(root, rel), opts)


def _check_one(root: str, opts: ImageOptions, rel: str) -> str | None:
    return check(os.path.join(root, rel), opts)


def cores() -> int:
    """The cores this process may use (a Slurm/cgroup allocation), not the machine's count."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _batches(items: list[Any], size: int) -> Iterable[list[Any]]:
    return (items[i : i + size] for i in range(0, len(items), size))


@contextmanager
def ordered_map(workers: int) -> Iterator[Mapper]:
    """An ordered, lazy ``map`` over ``workers`` processes (in-process for one worker).

    ``Pool.imap`` alone reads its whole input at once and buffers results the consumer has not taken:
    for ImageNet that is every JPEG in memory whenever writing is slower than decoding. Two windows of
    ``4 x workers`` chunks in flight bound it (16 workers: <= 4,096 results, ~450 MB of 512 px JPEGs) and
    keep the workers busy: the next window is queued while the main process drains the older one.
    """
    if workers == 1:
        yield lambda fn, items: map(fn, items)
        return
    # fork: workers inherit the imported modules; spawn would re-import torch + timm in each (seconds)
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
    with ctx.Pool(workers) as pool:

        def imap(fn: Callable[[Any], Any], items: list[Any]) -> Iterator[Any]:
            chunk = max(1, min(32, len(items) // (workers * 8)))
            pending: deque[Iterator[Any]] = deque()
            for batch in _batches(items, workers * chunk * 4):
                pending.append(pool.imap(fn, batch, chunk))
                if len(pending) == 2:
                    yield from pending.popleft()
            while pending:
                yield from pending.popleft()

        yield imap


def _shuffled(files: list[T], seed: int, split: str) -> list[tuple[int, T]]:
    """(position in the sorted list, file) in a seeded order; the position makes stable sample keys."""
    rng = np.random.default_rng([seed, SPLITS.index(split)])
    return [(int(n), files[n]) for n in rng.permutation(len(files))]


def _bar(total: int, desc: str) -> Progress:
    """A bar on a terminal; off one (a Slurm log), a plain line at the start, every minute and at the end."""
    return progress(total, desc, unit="img", interval_s=60.0)


def _write_wds(source: Source, out: Path, opts: ConvertOptions, imap: Mapper, written: _Written) -> None:
    from ..sources.wds import ShardSink, sample_key

    for split in SPLITS:
        order = _shuffled(source.files[split], opts.seed, split)
        sink = ShardSink(out, split, opts.shard_bytes)
        per_class = [0] * len(source.classes)
        fn = partial(_encode_one, str(source.root), opts.image())
        with _bar(len(order), f"{split} (wds)") as bar:
            for (n, f), result in zip(order, imap(fn, [f.rel for _, f in order])):
                bar.update()
                if isinstance(result, str):
                    written.skipped.append({"path": f.rel, "reason": result})
                    continue
                sink.write(sample_key(f.label, n, f.rel), result.jpeg, f.label)
                per_class[f.label] += 1
        shards = sink.close()
        written.sha256.update(sink.sha256)
        written.splits[split] = SplitInfo(sum(per_class), per_class, shards)


def _write_ffcv(source: Source, out: Path, opts: ConvertOptions, imap: Mapper, written: _Written) -> None:
    from ..sources.ffcv import BetonOptions, write_beton

    for split in SPLITS:
        order = _shuffled(source.files[split], opts.seed, split)
        kept: list[tuple[str, int]] = []
        with _bar(len(order), f"{split} (check)") as bar:
            fn = partial(_check_one, str(source.root), opts.image())
            for (_, f), reason in zip(order, imap(fn, [f.rel for _, f in order])):
                bar.update()
                if reason is None:
                    kept.append((f.rel, f.label))
                else:
                    written.skipped.append({"path": f.rel, "reason": reason})
        name, failures = f"{split}.beton", out / f".{split}.failures"
        beton = BetonOptions(opts.image(), opts.compress_probability, opts.seed)
        write_beton(out / name, source.root, kept, beton, opts.processes(), failures)
        if failures.exists():
            lines = failures.read_text().splitlines()
            raise ValueError(
                f"{len(lines)} files passed the check but failed to decode while writing {name} "
                f"(changed during the conversion?), e.g. {lines[0]}"
            )
        fsync_file(out / name)
        written.sha256[name] = _sha256(out / name)
        per_class = np.bincount([label for _, label in kept], minlength=len(source.classes)).tolist()
        size = (out / name).stat().st_size
        written.splits[split] = SplitInfo(len(kept), per_class, [ShardInfo(name, len(kept), size)])


def _sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(2**22):
            sha.update(block)
    return sha.hexdigest()


def _check_destination(src: Path, dst: Path, opts: ConvertOptions) -> bool:
    """True if ``dst`` already holds this very conversion; raise if it holds anything we must not touch."""
    if dst == src or src in dst.parents:
        raise ValueError(f"{dst}: destination is inside the source folder (it would be read as data)")
    if dst in src.parents:
        raise ValueError(f"{dst}: destination contains the source folder")
    if dst.exists() and not dst.is_dir():
        raise ValueError(f"{dst}: destination exists and is not a folder")
    if not dst.exists() or not any(dst.iterdir()):
        return False
    if not (dst / INDEX_NAME).is_file():
        raise ValueError(f"{dst}: holds files but no {INDEX_NAME}; not ours to replace - remove it or pick another DST")
    if opts.overwrite:
        _check_only_ours(dst)
        return False
    old = read_index(dst)
    if old.format == opts.fmt and old.options == opts.recorded() and old.source == str(src):
        return True
    raise ValueError(f"{dst}: holds a complete {old.format} dataset made with other settings; --overwrite replaces it")


OWN_FILES = (INDEX_NAME, "SHA256SUMS", "report.json", "report.txt")  # beside the shards/.beton files


def _check_only_ours(dst: Path) -> None:
    """``--overwrite`` replaces DST whole: refuse when DST holds anything the previous conversion did not write
    (its index's data files, the names in its SHA256SUMS, the index and reports), naming one such entry."""
    ours = set(OWN_FILES)
    ours |= {f.path for split in read_index(dst).splits.values() for f in split.files}
    sums = dst / "SHA256SUMS"
    if sums.is_file():
        ours |= {line.split(maxsplit=1)[1] for line in sums.read_text().splitlines() if len(line.split()) == 2}
    foreign = sorted(p.name for p in dst.iterdir() if p.name not in ours)
    if foreign:
        more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
        raise ValueError(
            f"{dst}: --overwrite replaces the whole folder, but {dst / foreign[0]}{more} was not written by the "
            "conversion there; move it out of DST first"
        )


def _source_and_writer(src: str | Path, opts: ConvertOptions) -> tuple[Any, Callable[..., None]]:
    """The scanned source and the writer for ``opts``' task and format."""
    if opts.task == "segment":
        from .seg_scan import scan_segment
        from .segment import write_seg_wds

        return scan_segment(src, opts.num_classes, opts.reduce_zero_label), write_seg_wds
    return scan(src), (_write_wds if opts.fmt == "wds" else _write_ffcv)


def convert(src: str | Path, dst: str | Path, opts: ConvertOptions) -> int:
    """Convert ``src`` into ``dst``; return the exit code (0 done, 1 rejected: strict or an empty class)."""
    if opts.fmt == "ffcv":
        from ..sources import ffcv  # noqa: F401  (imported up front: seconds of numba/cv2 that the rate should not count)
    started = time.perf_counter()
    src_root = Path(src).expanduser().resolve()
    dst_path = Path(dst).expanduser().resolve()
    if src_root.exists() and _check_destination(src_root, dst_path, opts):
        print(f"{dst_path}: complete already ({INDEX_NAME} present); nothing to do; --overwrite redoes it")
        return 0
    source, write = _source_and_writer(src, opts)
    rejected = dst_path.parent / f"{dst_path.name}-rejected-report.json"
    with StagedFolder(dst_path) as staged, ordered_map(opts.processes()) as imap:
        written = _Written(skipped=list(source.skipped))
        write(source, staged.path, opts, imap, written)
        seconds = time.perf_counter() - started
        rep = report.build(source, written.splits, written.skipped, opts.fmt, opts.recorded(), seconds, dst_path)
        rep["task"], rep["notes"] = opts.task, written.notes
        problem = report.problem(rep, strict=opts.strict)
        if problem:
            atomic_write(rejected, report.to_json(rep))
            print(report.render(rep, full=False))
            print(f"error: {problem}; nothing published at {dst_path}; full report: {rejected}", file=sys.stderr)
            return 1
        report.save(staged.path, rep)
        atomic_write(staged.path / "SHA256SUMS", "".join(f"{h}  {n}\n" for n, h in sorted(written.sha256.items())))
        root, options, skipped = str(source.root), opts.recorded(), rep["skipped"]
        index = DatasetIndex(opts.fmt, source.classes, written.splits, options, root, skipped, task=opts.task)
        if opts.task == "segment":
            index = replace(index, ignore_index=IGNORE_INDEX, reduce_zero_label=opts.reduce_zero_label)
        write_index(staged.path, index)
        staged.commit()  # before any printing: a closed stdout (`| head`) must not cost the finished work
    rejected.unlink(missing_ok=True)
    print(report.render(rep, full=False))
    print(f"wrote {dst_path} (full report: {dst_path / 'report.txt'})")
    return 0
