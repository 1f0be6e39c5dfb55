"""``swat-dist data convert SRC s3://bucket/prefix``: convert locally, uploading each shard as it completes.

The conversion is the local one (:func:`.front.convert`: staging, report, SHA256SUMS, index last), written
under ``$TMPDIR`` (so it needs the dataset's size on local disk once; the folder is removed afterwards).
Each wds shard is uploaded by a thread as soon as the converter closes it, while the next ones are
written; the reports and checksums follow, and **index.json last**: a reader (the loader checks the
index first) sees either no dataset or a complete one, and an interrupted or failed run leaves shards
but no index. A rerun uploads again from the start (objects are put whole). FFCV's .beton files are
uploaded after the conversion.

The store already holding a dataset at the prefix is treated as a local DST is: the same conversion (same
format, options and source) is left alone; another needs ``--overwrite``, which deletes the old index
first (shards of the same names are replaced as the conversion goes), then deletes the old index's data
files that the new one does not list, once the new index is written.
"""

from __future__ import annotations

import os
import queue
import shutil
import tempfile
import threading
from dataclasses import replace
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


class _Uploader:
    """Uploads each wds shard as the converter closes it, in a thread, while the next ones are written.

    The converter's staging folder is renamed when it finishes, so a shard is hard-linked (copied where a
    link cannot be made) into ``side`` at once and uploaded from there; the link goes once uploaded."""

    def __init__(self, store: ObjectStore, side: Path) -> None:
        self.store, self.side, self.done = store, side, set[str]()
        self.side.mkdir()
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="shard-upload", daemon=True)
        self._thread.start()

    def put(self, shard: Path) -> None:
        if self._error is not None:  # fail the conversion early: nothing would be published anyway
            raise self._error
        try:
            os.link(shard, self.side / shard.name)
        except OSError:
            shutil.copyfile(shard, self.side / shard.name)
        self._queue.put(shard.name)

    def _run(self) -> None:
        while (name := self._queue.get()) is not None:
            try:
                if self._error is None:
                    self.store.upload(self.side / name, name)
                    self.done.add(name)
            except BaseException as err:
                self._error = err
            (self.side / name).unlink(missing_ok=True)

    def finish(self) -> set[str]:
        """Wait for the uploads; the names uploaded, or the first error."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self.done


def convert_to_store(src: str | Path, dst: S3Location, opts: ConvertOptions) -> int:
    """Convert ``src`` locally, uploading each shard when complete, then the rest; index.json last."""
    store = ObjectStore(dst)
    old = _existing(store)  # reads the store first: a wrong endpoint or key fails before minutes of converting
    src = Path(src).expanduser().resolve()
    if old is not None and not opts.overwrite:
        if old.format == opts.fmt and old.options == opts.recorded() and old.source == str(src):
            print(f"{dst}: already holds this conversion; nothing to do")
            return 0
        raise ValueError(f"{dst}: holds a complete {old.format} dataset of other settings; --overwrite replaces it")
    if old is not None:
        # shards upload while converting and may replace the old ones of the same names: from here until the
        # new index lands, no complete dataset is visible (a failed run leaves none)
        store.delete(INDEX_NAME)
    with tempfile.TemporaryDirectory(prefix="swat_dist-convert-") as tmp:
        local, uploader = Path(tmp) / "dataset", _Uploader(store, Path(tmp) / "uploading")
        try:
            code = convert(src, local, replace(opts, on_shard=uploader.put))
        finally:
            uploaded = uploader.finish()
        if code != 0 or not (local / INDEX_NAME).is_file():
            return code or 1
        new = read_index(local)
        publish(local, store, skip=uploaded)
    if old is not None:
        kept = {f.path for split in new.splits.values() for f in split.files}
        for split in old.splits.values():
            for f in split.files:
                if f.path not in kept:
                    store.delete(f.path)
    return 0


def publish(local: Path, store: ObjectStore, skip: set[str] | None = None) -> None:
    """Upload every file of the converted folder ``local`` but ``skip`` (uploaded already), ``index.json`` last
    (it marks the dataset complete)."""
    files = sorted(p for p in local.iterdir() if p.is_file() and p.name != INDEX_NAME and p.name not in (skip or ()))
    for n, path in enumerate(files, 1):
        store.upload(path, path.name)
        print(f"\ruploaded {n}/{len(files)} files to {store.location}", end="", flush=True)
    store.upload(local / INDEX_NAME, INDEX_NAME)
    print(f"\n{store.location}: {INDEX_NAME} written last; the dataset is complete")
