"""``swat-dist data convert SRC s3://bucket/prefix``: convert into a local folder, then publish it to the store.

The conversion is the local one (:func:`.front.convert`: staging, report, SHA256SUMS, index last), written
under ``$TMPDIR`` (so it needs the dataset's size on local disk once; the folder is removed afterwards).
Then every file is uploaded, **index.json last**: a reader (the loader checks the index first) sees either
no dataset or a complete one, and an interrupted upload leaves no index that looks complete. A rerun
uploads again from the start (objects are put whole; an object either exists complete or not at all).

The store already holding a dataset at the prefix is treated as a local DST is: the same conversion (same
format, options and source) is left alone; another needs ``--overwrite``, which deletes the old index
first (so nothing looks complete meanwhile), uploads, writes the new index, then deletes the old index's
data files that the new one does not list.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from ..sources.index import INDEX_NAME, DatasetIndex, parse_index, read_index
from ..sources.location import S3Location
from ..sources.object_store import ObjectStore
from .base import ConvertOptions
from .front import convert


def _existing(store: ObjectStore) -> DatasetIndex | None:
    if INDEX_NAME not in store.names():
        return None
    return parse_index(store.read(INDEX_NAME).decode(), store.location.url(INDEX_NAME))


def convert_to_store(src: str | Path, dst: S3Location, opts: ConvertOptions) -> int:
    """Convert ``src`` locally, then upload it to ``dst`` (index last); the exit code of the conversion."""
    store = ObjectStore(dst)
    old = _existing(store)  # reads the store first: a wrong endpoint or key fails before minutes of converting
    src = Path(src).expanduser().resolve()
    if old is not None and not opts.overwrite:
        if old.format == opts.fmt and old.options == opts.recorded() and old.source == str(src):
            print(f"{dst}: already holds this conversion; nothing to do")
            return 0
        raise ValueError(
            f"{dst}: holds a complete {old.format} dataset made with other settings; --overwrite replaces it"
        )
    with tempfile.TemporaryDirectory(prefix="swat_dist-convert-") as tmp:
        local = Path(tmp) / "dataset"
        code = convert(src, local, opts)
        if code != 0 or not (local / INDEX_NAME).is_file():
            return code or 1
        new = read_index(local)
        if old is not None:
            store.delete(INDEX_NAME)  # from here until the new index lands, no complete dataset is visible
        publish(local, store)
    if old is not None:
        kept = {f.path for split in new.splits.values() for f in split.files}
        for split in old.splits.values():
            for f in split.files:
                if f.path not in kept:
                    store.delete(f.path)
    return 0


def publish(local: Path, store: ObjectStore) -> None:
    """Upload every file of the converted folder ``local``, ``index.json`` last (it marks the dataset complete)."""
    files = sorted(p for p in local.iterdir() if p.is_file() and p.name != INDEX_NAME)
    for n, path in enumerate(files, 1):
        store.upload(path, path.name)
        print(f"\ruploaded {n}/{len(files)} files to {store.location}", end="", flush=True)
    store.upload(local / INDEX_NAME, INDEX_NAME)
    print(f"\n{store.location}: {INDEX_NAME} written last; the dataset is complete")
