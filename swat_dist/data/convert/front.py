"""``swat-dist data convert SRC DST``: a source folder -> WebDataset shards or FFCV .beton files, for both tasks.

The pipeline, per split (train, then val), streaming so ImageNet never sits in memory:

1. :mod:`.scan`: classes (sorted train folder names) and every file below each class folder; with
   ``--task segment`` an ADEChallengeData2016 layout, paired into (image, mask) files instead.
2. A seeded shuffle of the split's files, so shards and .beton pages mix classes (a class-sorted shard
   read sequentially would feed a model one class at a time).
3. The task's writer (the task switch below): :mod:`.classify` (wds or ffcv) or :mod:`.segment` (image +
   mask shards, wds only); ``--workers`` processes decode every file robustly; bad files become (path, reason).
4. Report (``report.json``, ``report.txt``), ``SHA256SUMS``, and ``index.json`` last, all in a staging
   folder that is renamed to DST in one step (:mod:`.staging`): DST is either absent, the previous
   dataset, or complete. A rerun after a crash simply starts again (files are small; a resume would need
   per-shard bookkeeping for no real gain on a job that takes minutes per 100k images).

``--overwrite`` replaces a previous conversion in DST, whole; it refuses (naming one) while DST holds
anything that conversion did not write - its index's shards or .beton files, the names in its
``SHA256SUMS``, ``index.json`` and the reports - so a file a person put there is never deleted unseen.

``--strict`` turns any skipped file into exit 1 and a class without usable images is always exit 1;
either way nothing is published and the report is kept beside DST as ``DST-rejected-report.json``.
See docs/data.md.
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from ...files import atomic_write
from ..pixels.masks import IGNORE_INDEX
from ..sources.index import INDEX_NAME, DatasetIndex, read_index, write_index
from . import classify, report, segment
from .base import ConvertOptions, Writer, Written, ordered_map
from .scan import scan, scan_segment
from .staging import StagedFolder


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


def _source_and_writer(src: str | Path, opts: ConvertOptions) -> tuple[Any, Writer]:
    """The task switch: the scanned source and the writer for ``opts``' task and format."""
    if opts.task == "segment":  # wds only: ConvertOptions refuses ffcv for it
        return scan_segment(src, opts.num_classes, opts.reduce_zero_label), segment.write_wds
    return scan(src), (classify.write_wds if opts.fmt == "wds" else classify.write_ffcv)


def convert(src: str | Path, dst: str | Path, opts: ConvertOptions) -> int:
    """Convert ``src`` into ``dst``; return the exit code (0 done, 1 rejected: strict or an empty class)."""
    if opts.fmt == "ffcv":
        # imported up front: seconds of numba/cv2 that the rate should not count
        from ..sources import ffcv  # noqa: F401
    started = time.perf_counter()
    src_root = Path(src).expanduser().resolve()
    dst_path = Path(dst).expanduser().resolve()
    if src_root.exists() and _check_destination(src_root, dst_path, opts):
        print(f"{dst_path}: complete already ({INDEX_NAME} present); nothing to do; --overwrite redoes it")
        return 0
    source, write = _source_and_writer(src, opts)
    rejected = dst_path.parent / f"{dst_path.name}-rejected-report.json"
    with StagedFolder(dst_path) as staged, ordered_map(opts.processes()) as imap:
        written = Written(skipped=list(source.skipped))
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
