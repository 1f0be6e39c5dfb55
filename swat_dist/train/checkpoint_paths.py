"""Where checkpoints are, which is the latest, and whether one is whole: path and file logic only (no
torch: hashlib, json, zipfile), so the login-node commands (``swat-dist submit``, ``jobs``) and the
trainer read the ``latest`` pointer and verify a checkpoint the same way. :func:`weights_file` turns a run,
checkpoint or ``.safetensors`` path into the verified weights file that export, fine-tuning and the
segmentation backbone load.

A checkpoint folder is *verifiable* through ``manifest.json``: the size and sha256 of every file in it,
written by rank 0 after every rank's files are complete and just before ``latest`` moves, from the
digests every rank took of its share of the files (:func:`shares`; see :mod:`.checkpoint`). A folder
verifies when each listed file has its recorded size (and, with ``hashes=True``, its recorded sha256),
and its ``meta.json`` parses.

The rule for a folder without a manifest (written before manifests existed, or with the manifest
deleted): it is accepted, unverified, when its ``meta.json`` parses and each ``.pt`` / ``.safetensors``
file in it is structurally whole (torch's zip directory readable; the safetensors header accounts for
the file's size exactly). That catches truncation, not a flipped byte, and not a file that is missing.

Resuming from a run or checkpoints folder takes the newest checkpoint that verifies, counting down from
the one ``latest`` names; folders newer than that (saves that never completed) are named in one line,
and what it skipped among the others, and why, in another.
"""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..files import atomic_write

TAG = re.compile(r"^step_(\d+)$")
MANIFEST = "manifest.json"
Report = Callable[[str], None]
# Compares files with their manifest sha256 ({name: digest}); returns the first that differs, as a phrase
# ("X does not match ..."), or None. The trainer's splits the files over the ranks (checkpoint.py).
Verify = Callable[[Path, dict[str, str]], str | None]


def tag_for(step: int) -> str:
    return f"step_{step:08d}"


def step_of(tag: str) -> int:
    """The optimizer step a tag (``step_00000120``) was saved at."""
    match = TAG.match(tag)
    if match is None:
        raise ValueError(f"{tag!r} is not a checkpoint tag (step_<digits>)")
    return int(match.group(1))


def latest_tag(ckpt_dir: Path) -> str | None:
    pointer = ckpt_dir / "latest"
    return pointer.read_text().strip() if pointer.is_file() else None


def sha256_of(path: Path) -> str:
    """Cost: one read of the file; sha256 runs at ~0.5-1 GB/s on one core."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def checkpoint_files(folder: Path) -> dict[str, int]:
    """Every file of a checkpoint folder but the manifest (and hidden files), with its size: stat calls only."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST and not p.name.startswith("."))
    return {p.relative_to(folder).as_posix(): p.stat().st_size for p in files}


def shares(sizes: dict[str, int], world: int) -> list[list[str]]:
    """``sizes``' files split into ``world`` lists of about equal bytes, for ranks to hash in parallel.

    Largest file first, each to the rank with the fewest bytes so far (ties: the lowest rank), so the
    slowest rank hashes at most the largest file more than the mean: (total / world + largest) bytes.
    """
    load: list[int] = [0] * world
    out: list[list[str]] = [[] for _ in range(world)]
    for name in sorted(sizes, key=lambda n: (-sizes[n], n)):
        rank = load.index(min(load))
        out[rank].append(name)
        load[rank] += sizes[name]
    return out


def hash_files(folder: Path, names: list[str]) -> dict[str, dict[str, int | str]]:
    """Manifest entries (bytes, sha256) of ``names`` in ``folder``: one read of each (see :func:`sha256_of`)."""
    return {n: {"bytes": (folder / n).stat().st_size, "sha256": sha256_of(folder / n)} for n in names}


def write_manifest(folder: Path, entries: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Record size and sha256 of every file in ``folder`` in ``folder/manifest.json`` (atomically).

    ``entries``: the files' entries as hashed elsewhere (by every rank, its share: :func:`shares`);
    without them this process hashes the whole checkpoint, 0.25-0.5 s per 250 MB (see :func:`sha256_of`).
    """
    if entries is None:
        entries = hash_files(folder, list(checkpoint_files(folder)))
    manifest = {"files": {name: entries[name] for name in sorted(entries)}}
    atomic_write(folder / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    return manifest


def _meta_or_why(folder: Path) -> dict[str, Any] | str:
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except FileNotFoundError:
        return "meta.json is missing"
    except (ValueError, UnicodeDecodeError) as err:
        return f"meta.json is not valid JSON ({err})"
    if not isinstance(meta, dict) or not all(isinstance(meta.get(k), int) for k in ("step", "world_size")):
        return "meta.json lacks the integer 'step' and 'world_size' of a checkpoint"
    return meta


def read_meta(folder: Path) -> dict[str, Any]:
    """``folder/meta.json``, checked for the keys a resume needs; a one-line ValueError naming it otherwise."""
    meta = _meta_or_why(folder)
    if isinstance(meta, str):
        raise ValueError(f"checkpoint {folder}: {meta}")
    return meta


def check_model(folder: Path, model: str) -> None:
    """Refuse to resume ``folder`` as ``model`` when its meta.json records another model (older ones record none)."""
    saved = read_meta(folder).get("model")
    if saved is not None and saved != model:
        # the usual cause: a config that sets `name` (runs/{name}) run again with another model.name
        run = folder.parent.parent if folder.parent.name == "checkpoints" else folder.parent
        raise ValueError(
            f"checkpoint {folder} holds {saved} weights, but model.name is {model}: the run folder {run} is "
            f"another model's run - give this one its own with name=<another name> or output_dir=<another folder> "
            f"(output_dir runs/{{name}} is shared by every model run under one name); or resume with "
            f"model.name={saved}; or start from its weights with model.finetune={folder / 'model.safetensors'}"
        )


def safetensors_problem(path: Path) -> str | None:
    """Why ``path`` is not a whole safetensors file, as a phrase to follow its name ("is 10 bytes, ..."), or
    None. Reads the header only: cheap whatever the file's size."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        length = int.from_bytes(head, "little") if len(head) == 8 else 0
        if length == 0 or 8 + length > size:
            return f"is {size} bytes, too short for its safetensors header (truncated?)"
        try:
            header = json.loads(f.read(length))
            end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            return "has no readable safetensors header"
    if 8 + length + end != size:
        return f"is {size} bytes, its safetensors header says {8 + length + end} (truncated?)"
    return None


def _zip_problem(path: Path) -> str | None:
    """torch.save writes a zip archive whose directory sits at the end: a truncated one has none."""
    try:
        with zipfile.ZipFile(path):
            return None
    except (zipfile.BadZipFile, OSError):
        return f"{path.name} ({path.stat().st_size} bytes) is not a whole torch file (truncated?)"


def _manifest_problem(folder: Path, hashes: bool | Verify) -> str | None:
    try:
        files = json.loads((folder / MANIFEST).read_text())["files"]
        listed = {str(name): int(entry["bytes"]) for name, entry in files.items()}
    except (ValueError, TypeError, KeyError, AttributeError, UnicodeDecodeError):
        return f"{MANIFEST} is not readable"
    for name, size in listed.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing (the manifest lists it)"
        if path.stat().st_size != size:
            return f"{name} is {path.stat().st_size} bytes, the manifest says {size}"
    if hashes:  # cost: one read of the whole checkpoint (see sha256_of), split over the ranks by the trainer
        expected = {name: str(files[name].get("sha256")) for name in listed}
        return (hashes if callable(hashes) else verify_here)(folder, expected)
    return None


def verify_here(folder: Path, expected: dict[str, str]) -> str | None:
    """This process hashes every file of ``expected`` (see :data:`Verify`)."""
    for name, digest in expected.items():
        if sha256_of(folder / name) != digest:
            return f"{name} does not match its sha256 in the manifest"
    return None


def _legacy_problem(folder: Path) -> str | None:
    for path in sorted(folder.iterdir()):
        why = _zip_problem(path) if path.suffix == ".pt" else None
        sft = safetensors_problem(path) if path.suffix == ".safetensors" else None
        why = why or (f"{path.name} {sft}" if sft else None)
        if why:
            return f"{why}; no {MANIFEST} (an older checkpoint)"
    return None


def problem(folder: Path, hashes: bool | Verify = False) -> str | None:
    """Why ``folder`` is not a whole checkpoint, or None when it verifies (see the module docstring)."""
    if not folder.is_dir():
        return "the folder is missing"
    if not any(folder.iterdir()):
        return "the folder is empty"
    has_manifest = (folder / MANIFEST).is_file()
    why = _manifest_problem(folder, hashes) if has_manifest else _legacy_problem(folder)
    meta = _meta_or_why(folder)
    return why or (meta if isinstance(meta, str) else None)


def _candidates(ckpt_dir: Path) -> list[str]:
    """The tag ``latest`` names, then older tags, newest first; [] without a ``latest``."""
    tag = latest_tag(ckpt_dir)
    if not tag:
        return []
    if not TAG.match(tag):
        raise ValueError(f"{ckpt_dir / 'latest'} holds {tag!r}, not a checkpoint tag (step_<digits>)")
    older = [p.name for p in ckpt_dir.iterdir() if TAG.match(p.name) and step_of(p.name) < step_of(tag)]
    return [tag, *sorted(older, key=step_of, reverse=True)]


def _unfinished(ckpt_dir: Path, latest: str | None) -> list[str]:
    """Tag folders newer than ``latest`` (all of them without one): saves killed before they completed.
    A save moves ``latest`` last, so such a folder is never resumed from, whatever it holds."""
    if not ckpt_dir.is_dir():
        return []
    tags = [p.name for p in ckpt_dir.iterdir() if TAG.match(p.name) and p.is_dir()]
    return sorted(t for t in tags if latest is None or step_of(t) > step_of(latest))


def newest_verified(ckpt_dir: Path, hashes: bool | Verify = False, report: Report | None = None) -> Path | None:
    """The newest checkpoint in ``ckpt_dir`` that verifies (None without a ``latest``).

    ``report`` gets one line naming the folders of saves that did not complete, and one naming what
    was skipped and why, when anything was; a ValueError naming ``ckpt_dir`` when no checkpoint verifies.
    """
    skipped: list[str] = []
    tags = _candidates(ckpt_dir)
    unfinished = _unfinished(ckpt_dir, tags[0] if tags else None)
    if unfinished and report is not None:
        reason = "newer than 'latest'" if tags else "no 'latest' yet"
        report(f"[checkpoint] skipping {', '.join(unfinished)}: {reason}, a save that did not complete")
    for tag in tags:
        why = problem(ckpt_dir / tag, hashes)
        if why is None:
            if skipped and report is not None:
                report(f"[checkpoint] skipping {'; '.join(skipped)}; falling back to {tag}")
            return ckpt_dir / tag
        skipped.append(f"{tag}: {why}")
    if tags:
        raise ValueError(
            f"no checkpoint in {ckpt_dir} verifies ({'; '.join(skipped)}): start afresh with another output_dir "
            "or checkpoint.resume=none"
        )
    return None


def resolve(run_dir: Path, resume: str, hashes: bool | Verify = False, report: Report | None = None) -> Path | None:
    """The checkpoint folder ``resume`` names, verified: 'auto' (the run's newest that verifies, if any),
    'none', or a path (a tag folder, which must verify, or a checkpoints folder / run folder with a ``latest``).

    ``hashes`` also compares sha256 sums (one read of the checkpoint; a :data:`Verify` to do it another way,
    e.g. split over ranks); without it sizes only (stat calls).
    ``report`` gets the one line about skipped checkpoints (see :func:`newest_verified`).
    """
    if resume == "none":
        return None
    if resume == "auto":
        return newest_verified(run_dir / "checkpoints", hashes, report)
    path = Path(resume)
    for folder in (path, path / "checkpoints"):
        if latest_tag(folder):
            return newest_verified(folder, hashes, report)
    if (TAG.match(path.name) and path.is_dir()) or (path / "meta.json").is_file():
        why = problem(path, hashes)
        if why:
            raise ValueError(f"checkpoint {path} does not verify: {why}")
        return path
    raise ValueError(f"{resume!r} is not a checkpoint folder, a checkpoints folder or a run folder with a 'latest'")


def weights_file(source: str | Path, ema: bool = False) -> Path:
    """The ``.safetensors`` file ``source`` names: itself, or the newest verified checkpoint's model/EMA
    weights. A truncated file is refused here, in one line naming it, not when a loader trips on it."""
    path = Path(source)
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise FileNotFoundError(f"no such weights file: {path}")
        file = path
    else:
        folder = resolve(Path("."), str(path), report=print)
        if folder is None:
            raise ValueError(f"{source}: no checkpoint found")
        file = folder / ("ema.safetensors" if ema else "model.safetensors")
        if not file.is_file():
            raise ValueError(f"{folder} has no {file.name}{' (was ema.enabled on?)' if ema else ''}")
    why = safetensors_problem(file)  # reads the header only: cheap whatever the file's size
    if why:
        raise ValueError(f"{file} {why}")
    return file
