"""``swat-dist data verify DST``: decode every record and check every count against ``index.json``.

Checked, per data file: its size and (when ``SHA256SUMS`` is present) its checksum - the only check that
catches a flipped bit inside JPEG data, which decoders often accept silently; that it reads to the end
(a truncated tar or .beton is reported with how far it got); per record, a label in range and an image
that decodes fully to RGB no larger than the index's ``max_resolution``; wds: each sample has exactly a
``.jpg`` and a ``.cls`` and keys are unique in the split. Then samples per file, per class and per split
against the index. Prints a summary and returns 0, or prints every problem and returns 1; damage is a
reported problem, never a traceback. Files are checked in parallel (``--workers``, 0 = all cores);
progress goes to stderr (:mod:`...progress`: a bar on a terminal, plain lines in a log), the result to stdout.

A dataset in an object store (``s3://bucket/prefix``) is checked the same way: the index, SHA256SUMS and
listing are read from the store, and each worker downloads one shard at a time into a temporary folder,
checks it and deletes it (local disk: one shard per worker; network: the dataset once). Problems name the
``s3://`` objects. A .beton is then one task (each chunk would download the whole file again).

Segmentation (``task: "segment"``): each sample has exactly a ``.jpg`` and a ``.png``; the mask decodes as
a single-channel 8-bit PNG of the image's size with labels in range (:mod:`..pixels.masks`), and the images
holding each class and the pixels per raw mask value are held against the index.
"""

from __future__ import annotations

import contextlib
import hashlib
import tarfile
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image

from ...progress import progress
from ..pixels import masks
from ..sources.index import INDEX_NAME, DatasetIndex, ShardInfo, parse_index, read_index
from ..sources.location import S3Location, parse_location
from .base import cores, ordered_map

MAX_PER_FILE = 10  # problems listed per file before "... and N more"
BETON_CHUNK = 4096  # records per task when one .beton is checked by several workers


@dataclass
class Task:
    fmt: str
    path: Path
    info: ShardInfo
    classes: int
    max_side: int
    sha256: str | None = None  # expected; checked by the task that starts at record 0
    start: int = 0
    stop: int | None = None
    task: str = "classify"
    reduce_zero_label: bool = True  # segment: the label rule masks are checked against
    remote: Remote | None = None  # in an object store: downloaded to ``path`` by the worker, then checked


@dataclass(frozen=True)
class Remote:
    location: S3Location
    size: int  # the object's, from the listing: a size unlike the index's is downloaded and reported


@dataclass
class Checked:
    path: str
    samples: int = 0
    per_class: Counter[int] = field(default_factory=Counter)
    keys: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    pixels: Counter[int] = field(default_factory=Counter)  # segment: raw mask value -> pixels


def _image_problem(data: bytes, max_side: int, size_out: list[tuple[int, int]] | None = None) -> str | None:
    try:
        with Image.open(BytesIO(data)) as img:
            img.load()
            size, mode = img.size, img.mode
    except Exception as err:
        return f"image does not decode ({err.__class__.__name__}: {err})"
    if size_out is not None:
        size_out.append(size)
    if mode != "RGB":
        return f"image mode is {mode}, not RGB"
    if max(size) > max_side:
        return f"image is {size[0]}x{size[1]}, larger than max_resolution {max_side}"
    return None


def _file_level(task: Task, out: Checked) -> None:
    size = task.path.stat().st_size
    if size != task.info.bytes:
        out.problems.append(f"{size:,} bytes, index says {task.info.bytes:,}")
    if task.sha256 is not None:
        sha = hashlib.sha256()
        with open(task.path, "rb") as f:
            while block := f.read(2**22):
                sha.update(block)
        if sha.hexdigest() != task.sha256:
            out.problems.append("SHA256 differs from SHA256SUMS (the file changed after conversion)")


def _check_pair(task: Task, out: Checked, key: str, sample: dict[str, bytes]) -> None:
    """One segmentation sample: image, mask, their sizes, the mask's labels."""
    out.samples += 1
    sizes: list[tuple[int, int]] = []
    problem = _image_problem(sample["jpg"], task.max_side, sizes)
    try:
        labels_HW = masks.decode(sample["png"])
    except masks.BadMask as err:
        out.problems += [f"{key}: {p}" for p in (problem, str(err)) if p]
        return
    hist = masks.histogram(labels_HW)
    mask_size = (labels_HW.shape[1], labels_HW.shape[0])
    if sizes and sizes[0] != mask_size:
        problem = f"mask is {mask_size[0]}x{mask_size[1]}, image is {sizes[0][0]}x{sizes[0][1]}"
    problem = problem or masks.label_problem(hist, task.classes, task.reduce_zero_label)
    if problem:
        out.problems.append(f"{key}: {problem}")
        return
    out.per_class.update(masks.classes_present(hist, task.classes, task.reduce_zero_label))
    out.pixels.update({v: int(hist[v]) for v in np.flatnonzero(hist).tolist()})


def _member_name_problem(member: tarfile.TarInfo) -> str | None:
    """Why a member must not be in a shard: a tool that extracts it (``tar x``, webdataset's tar
    readers feeding a cache) would write outside the folder, or follow a link to any file."""
    if member.issym() or member.islnk():
        return f"{member.name}: a link (to {member.linkname}), not a file"
    if not (member.isfile() or member.isdir()):
        return f"{member.name}: not a regular file (tar type {member.type!r})"
    if member.name.startswith("/") or ".." in member.name.split("/"):
        return f"{member.name}: the name leaves the folder (absolute or with ..)"
    return None


def _check_member_names(task: Task, out: Checked) -> None:
    # headers only: on a file, tarfile seeks past each member's data (cost: one 512-byte read per member)
    with tarfile.open(task.path, mode="r:") as tar:
        for member in tar:
            problem = _member_name_problem(member)
            if problem:
                out.problems.append(problem)


def _check_wds(task: Task, out: Checked) -> None:
    from ..sources.wds import read_shard

    with contextlib.suppress(tarfile.TarError, OSError):  # damage: reported by the full read below, with where
        _check_member_names(task, out)
    expected = {"jpg", "png"} if task.task == "segment" else {"jpg", "cls"}
    try:
        for key, sample in read_shard(task.path):
            out.keys.append(key)
            if set(sample) == expected and task.task == "segment":
                _check_pair(task, out, key, sample)
                continue
            if set(sample) != expected:
                out.samples += task.task == "segment"  # a segment sample counts even when damaged
                out.problems.append(f"{key}: members {sorted(sample)}, expected {sorted(expected)}")
                continue
            label = int(sample["cls"]) if sample["cls"].strip().isdigit() else -1
            _record(out, key, label, task.classes, _image_problem(sample["jpg"], task.max_side))
    except Exception as err:  # tarfile.ReadError, EOFError, ...: report how far it got
        out.problems.append(f"unreadable after {out.samples} samples ({err.__class__.__name__}: {err})")


def _check_ffcv(task: Task, out: Checked) -> None:
    from ..sources.ffcv import open_beton

    try:
        beton = open_beton(str(task.path))
        if task.start == 0 and beton.num_samples != task.info.samples:
            out.problems.append(f"header holds {beton.num_samples} samples, index says {task.info.samples}")
        for r in beton.records(task.start, min(task.stop or beton.num_samples, beton.num_samples)):
            if r.mode == "jpg":
                problem = _image_problem(r.data, task.max_side)
            elif r.mode == "raw":
                problem = None if len(r.data) >= 3 * r.width * r.height else "raw pixels cut short"
            else:
                problem = r.mode
            _record(out, f"sample {r.index}", r.label, task.classes, problem)
    except Exception as err:
        out.problems.append(f"unreadable after record {task.start + out.samples} ({err.__class__.__name__}: {err})")


def _record(out: Checked, name: str, label: int, classes: int, problem: str | None) -> None:
    out.samples += 1
    if not 0 <= label < classes:
        out.problems.append(f"{name}: label {label} outside [0, {classes})")
    else:
        out.per_class[label] += 1
    if problem:
        out.problems.append(f"{name}: {problem}")


def check_file(task: Task) -> Checked:
    if task.remote is not None:
        return _check_remote(task, task.remote)
    out = Checked(task.info.path)
    if not task.path.is_file():
        if task.start == 0:
            out.problems.append("missing")
        return out
    if task.start == 0:
        _file_level(task, out)
    (_check_wds if task.fmt == "wds" else _check_ffcv)(task, out)
    return out


def _check_remote(task: Task, remote: Remote) -> Checked:
    """Download the object to ``task.path`` (the worker's own client), check it as a local file, delete it."""
    from ..sources.object_store import ObjectStore  # boto3: only for a dataset in an object store

    try:
        ObjectStore(remote.location).download(task.info.path, task.path, remote.size)
    except ValueError as err:  # gone since the listing, or the store stopped answering: a problem, not a crash
        task.path.unlink(missing_ok=True)
        out = Checked(task.info.path)
        out.problems.append(f"not read ({str(err).removeprefix(remote.location.url(task.info.path) + ': ')})")
        return out
    try:
        return check_file(replace(task, remote=None))
    finally:
        task.path.unlink(missing_ok=True)


def _tasks(root: Path, index: DatasetIndex, sums: dict[str, str], chunks: bool = True) -> list[tuple[str, Task]]:
    """One task per shard; a .beton is cut into ranges of records so several workers share it (``chunks``)."""
    max_side = int(index.options.get("max_resolution", 2**16))
    tasks = []
    for split, info in index.splits.items():
        for f in info.files:
            task = Task(index.format, root / f.path, f, len(index.classes), max_side, sums.get(f.path))
            task = replace(task, task=index.task, reduce_zero_label=bool(index.reduce_zero_label))
            if index.format == "wds" or not chunks:
                tasks.append((split, task))
            else:
                starts = range(0, max(f.samples, 1), BETON_CHUNK)
                tasks += [(split, replace(task, start=s, stop=s + BETON_CHUNK)) for s in starts]
    return tasks


def _read_sums(root: Path) -> dict[str, str]:
    path = root / "SHA256SUMS"
    return _parse_sums(path.read_text()) if path.is_file() else {}


def _parse_sums(text: str) -> dict[str, str]:
    return {name: digest for digest, name in (line.split(maxsplit=1) for line in text.splitlines() if line)}


def _compare(
    index: DatasetIndex, results: list[tuple[str, Checked]], problems: list[str], name: Callable[[str], str] = str
) -> None:
    """Merge per-task results into per-file and per-split counts and hold them against the index; each file's
    problems start with ``name(its path in the index)``."""
    by_file: dict[str, Checked] = {}
    for _, r in results:
        merged = by_file.setdefault(r.path, Checked(r.path))
        merged.samples += r.samples
        merged.per_class.update(r.per_class)
        merged.keys += r.keys
        merged.problems += r.problems
        merged.pixels.update(r.pixels)
    for split, info in index.splits.items():
        per_class: Counter[int] = Counter()
        pixels: Counter[int] = Counter()
        for f in info.files:
            got = by_file[f.path]
            if got.samples != f.samples:
                got.problems.append(f"{got.samples} samples, index says {f.samples}")
            per_class.update(got.per_class)
            pixels.update(got.pixels)
            problems += [f"{name(f.path)}: {p}" for p in got.problems[:MAX_PER_FILE]]
            if len(got.problems) > MAX_PER_FILE:
                problems.append(f"{name(f.path)}: ... and {len(got.problems) - MAX_PER_FILE} more problems")
        keys = Counter(k for f in info.files for k in by_file[f.path].keys)
        dupes = [k for k, n in keys.items() if n > 1]
        if dupes:
            problems.append(f"{split}: {len(dupes)} keys occur more than once, e.g. {dupes[0]}")
        counts = [per_class[c] for c in range(len(index.classes))]
        if counts != list(info.per_class):
            wrong = [index.classes[c] for c in range(len(counts)) if counts[c] != info.per_class[c]]
            problems.append(f"{split}: per-class counts differ from the index in {len(wrong)} classes, e.g. {wrong[0]}")
        if info.label_pixels is not None and [pixels[v] for v in range(masks.LEVELS)] != info.label_pixels:
            problems.append(f"{split}: pixels per mask value differ from the index's label_pixels")
        classify = index.task == "classify"
        if (classify and sum(info.per_class) != info.samples) or sum(f.samples for f in info.files) != info.samples:
            problems.append(f"{split}: the index's own counts disagree (samples {info.samples})")


def verify(dst: str | Path, workers: int = 0) -> int:
    """Check the dataset at ``dst`` (a folder or ``s3://bucket/prefix``); print a summary (0) or every problem (1)."""
    where = parse_location(str(dst), "DST")
    if isinstance(where, S3Location):
        return _verify_store(where, workers)
    root = Path(dst)
    index = read_index(root)
    sums = _read_sums(root)
    unit = "file" if index.format == "wds" else "chunk"  # a .beton is checked in chunks of BETON_CHUNK records
    return _run(str(root), root.name, index, sums, _tasks(root, index, sums), workers, str, unit)


def _verify_store(where: S3Location, workers: int) -> int:
    """The index, SHA256SUMS and listing from the store; each shard downloaded by the worker that checks it."""
    from ..sources.object_store import ObjectStore  # boto3: only for a dataset in an object store

    store = ObjectStore(where)
    index = parse_index(store.read(INDEX_NAME).decode(), where.url(INDEX_NAME))
    listed = store.names()
    sums = _parse_sums(store.read("SHA256SUMS").decode()) if "SHA256SUMS" in listed else {}
    with tempfile.TemporaryDirectory(prefix="swat_dist-verify-") as tmp:
        tasks = _tasks(Path(tmp), index, sums, chunks=False)
        for n, (_, task) in enumerate(tasks):
            # a flat name of our own: index paths may hold folders (or worse, "..": verify must not follow it)
            task.path = Path(tmp) / f"{n:06d}{Path(task.info.path).suffix}"
            if task.info.path in listed:  # not listed: check_file reports it "missing" without a request
                task.remote = Remote(where, listed[task.info.path])
        return _run(where.url(), where.url(), index, sums, tasks, workers, where.url, "file")


def _run(
    shown: str, label: str, index: DatasetIndex, sums: dict[str, str], tasks: list[tuple[str, Task]], workers: int,
    name: Callable[[str], str], unit: str,
) -> int:  # fmt: skip
    results: list[tuple[str, Checked]] = []
    with ordered_map(workers or cores()) as imap, progress(len(tasks), f"verify {label}", unit=unit) as bar:
        for (split, _), r in zip(tasks, imap(check_file, [t for _, t in tasks])):
            results.append((split, r))
            bar.update(1)
    problems: list[str] = []
    _compare(index, results, problems, name)
    total = sum(s.samples for s in index.splits.values())
    files = sum(len(s.files) for s in index.splits.values())
    if problems:
        print(f"{shown}: {len(problems)} problems in {index.format} dataset ({total:,} samples in the index):")
        print("\n".join(f"  {p}" for p in problems))
        return 1
    checksums = "checksums match" if sums else "no SHA256SUMS, checksums not checked"
    masks_ok = " (masks: 8-bit, image-sized, labels in range)" if index.task == "segment" else ""
    print(
        f"{shown}: ok - {index.format}, {index.task}, {len(index.classes)} classes, "
        + ", ".join(f"{s} {info.samples:,}" for s, info in index.splits.items())
        + f" samples in {files} files; every record decodes{masks_ok}; counts match the index; {checksums}"
    )
    return 0
