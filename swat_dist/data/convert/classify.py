"""Classification writers: labelled images (:mod:`.scan`) -> WebDataset shards or FFCV ``.beton`` files.

wds: ``--workers`` processes decode every file robustly (:mod:`..pixels.images`) and the main process writes
the JPEGs into size-bounded shards in the split's seeded order (:mod:`..sources.wds`). ffcv: the workers only
check the files, then FFCV's own writer workers decode the survivors (:mod:`..sources.ffcv`).
"""

from __future__ import annotations

import hashlib
import os
from functools import partial
from pathlib import Path

import numpy as np

from ..pixels.images import Encoded, ImageOptions, check, encode
from ..sources.index import ShardInfo, SplitInfo
from .base import ConvertOptions, Mapper, Written, progress_bar, shuffled
from .scan import SPLITS, Source
from .staging import fsync_file


def _encode_one(root: str, opts: ImageOptions, rel: str) -> Encoded | str:
    return encode(os.path.join(root, rel), opts)


def _check_one(root: str, opts: ImageOptions, rel: str) -> str | None:
    return check(os.path.join(root, rel), opts)


def write_wds(source: Source, out: Path, opts: ConvertOptions, imap: Mapper, written: Written) -> None:
    from ..sources.wds import ShardSink, sample_key

    for split in SPLITS:
        order = shuffled(source.files[split], opts.seed, split)
        sink = ShardSink(out, split, opts.shard_bytes, on_close=opts.on_shard)
        per_class = [0] * len(source.classes)
        fn = partial(_encode_one, str(source.root), opts.image())
        with progress_bar(len(order), f"{split} (wds)") as bar:
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


def write_ffcv(source: Source, out: Path, opts: ConvertOptions, imap: Mapper, written: Written) -> None:
    from ..sources.ffcv import BetonOptions, write_beton

    for split in SPLITS:
        order = shuffled(source.files[split], opts.seed, split)
        kept: list[tuple[str, int]] = []
        with progress_bar(len(order), f"{split} (check)") as bar:
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
