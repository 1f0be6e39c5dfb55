"""``swat-dist data convert``: exact contents, the report, --strict, one-line errors, atomicity and reruns."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from swat_dist.cli import main
from swat_dist.data.convert.front import convert
from swat_dist.data.convert.verify import verify
from swat_dist.data.sources.index import read_index
from swat_dist.data.sources.wds import ShardSink

from .conftest import SHARD_BYTES, options
from .corpus import CLASSES, Entry, Sample, unmatched, write_classes


def _expected_per_class(entries: list[Entry], split: str) -> list[int]:
    return [sum(1 for e in entries if e.rgb and e.split == split and e.label == c) for c in range(len(CLASSES))]


def _sample(name: str, label: int, img: Image.Image) -> Sample:
    px = np.asarray(img.convert("RGB"))
    return Sample(name, label, tuple(px.reshape(-1, 3).mean(0)), (px.shape[1], px.shape[0]))


def _read_wds(dst: Path, split: str) -> list[Sample]:
    """Read the shards with WebDataset itself: the format must be what its readers expect."""
    urls = [str(dst / f.path) for f in read_index(dst).splits[split].files]
    samples = []
    for sample in wds.WebDataset(urls, shardshuffle=False, empty_check=False):
        assert {k for k in sample if not k.startswith("__")} == {"jpg", "cls"}
        img = Image.open(io.BytesIO(sample["jpg"]))
        samples.append(_sample(sample["__key__"], int(sample["cls"]), img))
    return samples


def test_wds_holds_every_decodable_file_once_with_its_label(corpus, wds_dataset) -> None:
    _, entries = corpus
    for split in ("train", "val"):
        samples = _read_wds(wds_dataset, split)
        assert len(samples) == sum(1 for e in entries if e.rgb and e.split == split)
        assert not unmatched(entries, samples, split)


def test_wds_index_counts_shard_bounds_and_keys(corpus, wds_dataset) -> None:
    _, entries = corpus
    index = read_index(wds_dataset)
    assert index.format == "wds" and index.classes == CLASSES and index.source == str(corpus[0])
    train = index.splits["train"]
    assert train.per_class == _expected_per_class(entries, "train") and train.samples == sum(train.per_class)
    assert index.splits["val"].per_class == _expected_per_class(entries, "val")
    assert len(train.files) >= 3  # the bound forces several shards
    labels_in_order = []
    for f in train.files:
        path = wds_dataset / f.path
        assert f.path.startswith("train-") and path.stat().st_size == f.bytes <= SHARD_BYTES
        with tarfile.open(path) as tar:
            names = tar.getnames()
        keys = [n.split(".", 1)[0] for n in names]
        assert names == [f"{k}.{ext}" for k in keys[::2] for ext in ("cls", "jpg")]  # cls, jpg per key
        assert len(keys) // 2 == f.samples
        labels_in_order += [int(k[:4]) for k in keys[::2]]
    assert labels_in_order != sorted(labels_in_order)  # shuffled across classes, not class by class
    sums = dict(line.split()[::-1] for line in (wds_dataset / "SHA256SUMS").read_text().splitlines())
    assert set(sums) == {f.path for s in index.splits.values() for f in s.files}


def test_report_lists_every_skipped_file_with_its_reason(corpus, wds_dataset) -> None:
    _, entries = corpus
    bad = {e.rel: e.reason for e in entries if e.reason}
    report = json.loads((wds_dataset / "report.json").read_text())
    got = {k["path"]: k["reason"] for k in report["skipped"]}
    assert set(got) == set(bad)
    assert all(bad[p] in r.lower() for p, r in got.items()), got
    assert {k["path"] for k in read_index(wds_dataset).skipped} == set(bad)
    text = (wds_dataset / "report.txt").read_text()
    assert all(f"{p}: {r}" in text for p, r in got.items())
    assert report["splits"]["train"]["per_class"] == dict(zip(CLASSES, _expected_per_class(entries, "train")))
    assert (
        report["images"] == sum(1 for e in entries if e.rgb)
        and report["images_per_second"] > 0
        and report["bytes_written"] > 0
    )


def test_ffcv_holds_every_decodable_file_once_in_both_storage_modes(corpus, ffcv_dataset) -> None:
    from swat_dist.data.sources.ffcv import Beton

    _, entries = corpus
    index = read_index(ffcv_dataset)
    modes = set()
    for split in ("train", "val"):
        beton = Beton(ffcv_dataset / f"{split}.beton")
        samples = []
        for r in beton.records():
            modes.add(r.mode)
            if r.mode == "jpg":
                img = Image.open(io.BytesIO(r.data))
            else:
                img = Image.fromarray(
                    np.frombuffer(r.data, np.uint8)[: r.width * r.height * 3].reshape(r.height, r.width, 3)
                )
            assert img.size == (r.width, r.height)
            samples.append(_sample(f"{split}[{r.index}]", r.label, img))
        assert not unmatched(entries, samples, split)
        assert index.splits[split].per_class == _expected_per_class(entries, split)
    assert modes == {"jpg", "raw"}


def test_ffcv_loader_reads_the_labels(corpus, ffcv_dataset) -> None:
    from ffcv.fields.decoders import CenterCropRGBImageDecoder, IntDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.pipeline.compiler import Compiler

    Compiler.set_enabled(False)  # no numba JIT: seconds saved, this is about the format not speed
    try:
        loader = Loader(
            str(ffcv_dataset / "train.beton"),
            batch_size=4,
            num_workers=1,
            drop_last=False,
            order=OrderOption.SEQUENTIAL,
            pipelines={"image": [CenterCropRGBImageDecoder((8, 8), 1.0)], "label": [IntDecoder()]},
        )
        labels = [int(v) for _, y in loader for v in y.reshape(-1)]
    finally:
        Compiler.set_enabled(True)
    assert sorted(labels) == sorted(e.label for e in corpus[1] if e.rgb and e.split == "train")


def test_strict_rejects_any_skip_and_publishes_nothing(corpus, tmp_path, capsys) -> None:
    dst = tmp_path / "out"
    assert convert(corpus[0], dst, options("wds", strict=True)) == 1
    assert not dst.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["out-rejected-report.json"]
    rejected = json.loads((tmp_path / "out-rejected-report.json").read_text())
    assert len(rejected["skipped"]) == sum(1 for e in corpus[1] if e.reason)
    captured = capsys.readouterr()
    assert (
        f"--strict: {len(rejected['skipped'])} files skipped" in captured.err
        and "train/zebra x/bomb.png: too large" in captured.out
    )


def test_class_without_usable_images_is_rejected(tmp_path) -> None:
    write_classes(tmp_path / "src", {"a": 2, "b": 1}, {"a": 1, "b": 1})
    (tmp_path / "src/val/b/img_0.jpg").write_bytes(b"not a jpeg")
    assert convert(tmp_path / "src", tmp_path / "out", options("wds")) == 1
    assert not (tmp_path / "out").exists()
    report = json.loads((tmp_path / "out-rejected-report.json").read_text())
    assert report["splits"]["val"]["per_class"] == {"a": 1, "b": 0}


def _layout(root: Path, case: str) -> tuple[Path, Path]:
    src, dst = root / "src", root / "out"
    if case != "missing source":
        write_classes(src, {"a": 1, "b": 1}, {"a": 1, "b": 1})
    if case == "empty class":
        (src / "val/b/img_0.jpg").unlink()
    elif case == "no val":
        for p in sorted((src / "val").rglob("*"), reverse=True):
            p.rmdir() if p.is_dir() else p.unlink()
        (src / "val").rmdir()
    elif case == "val classes differ":
        (src / "val/b").rename(src / "val/c")
    elif case == "dst inside src":
        dst = src / "train" / "out"
    elif case == "dst not a dataset":
        dst.mkdir()
        (dst / "thesis.tex").write_text("keep me")
    return src, dst


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing source", "source folder does not exist"),
        ("no val", "no val/ folder"),
        ("empty class", "empty class folder"),
        ("val classes differ", "only in train: 'b'; only in val: 'c'"),
        ("dst inside src", "destination is inside the source folder"),
        ("dst not a dataset", "holds files but no index.json"),
    ],
)
def test_layout_problems_are_one_line_errors(tmp_path, capsys, case, message) -> None:
    src, dst = _layout(tmp_path, case)
    assert main(["data", "convert", str(src), str(dst), "--format", "wds", "--workers", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("swat-dist data convert: error: ") and message in err, err
    if case == "dst not a dataset":
        assert (dst / "thesis.tex").read_text() == "keep me"


def test_bad_option_is_a_one_line_error(tmp_path, capsys) -> None:
    assert main(["data", "convert", str(tmp_path), str(tmp_path / "o"), "--format", "wds", "--jpeg-quality", "0"]) == 2
    assert "--jpeg-quality must be in [1, 100], got 0" in capsys.readouterr().err


def _no_leftovers(parent: Path, name: str = "out") -> bool:
    return not any(p.name.startswith(f".{name}.") for p in parent.iterdir())


def test_failure_mid_conversion_leaves_nothing_then_rerun_completes(corpus, tmp_path, monkeypatch) -> None:
    dst = tmp_path / "out"
    real_write, calls = ShardSink.write, []

    def failing_write(self, *args):
        calls.append(1)
        if len(calls) == 8:  # after the first shards are on disk
            raise OSError("disk full (simulated)")
        real_write(self, *args)

    monkeypatch.setattr(ShardSink, "write", failing_write)
    with pytest.raises(OSError, match="simulated"):
        convert(corpus[0], dst, options("wds"))
    assert not dst.exists() and _no_leftovers(tmp_path)
    monkeypatch.undo()
    assert convert(corpus[0], dst, options("wds")) == 0
    assert verify(dst, workers=1) == 0 and _no_leftovers(tmp_path)


KILLED_RUN = """
import sys, time
from pathlib import Path
from swat_dist.data.sources import wds
from swat_dist.data.convert.base import ConvertOptions
from swat_dist.data.convert.front import convert

real_close = wds.ShardSink._close_current
def close_then_hang(self):
    real_close(self)
    if self.shards and Path(self.folder, self.shards[0].path).exists():
        Path(sys.argv[3]).write_text("a shard is on disk")
        time.sleep(120)
wds.ShardSink._close_current = close_then_hang
convert(sys.argv[1], sys.argv[2], ConvertOptions("wds", workers=1, shard_bytes=20480, max_resolution=64))
"""


def test_sigkill_mid_conversion_then_rerun_redoes_it(corpus, tmp_path) -> None:
    dst, marker = tmp_path / "out", tmp_path / "marker"
    cmd = [sys.executable, "-c", textwrap.dedent(KILLED_RUN), str(corpus[0]), str(dst), str(marker)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert marker.exists(), proc.stderr.read().decode() if proc.poll() is not None else "timed out"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    staging = tmp_path / ".out.partial"
    assert not dst.exists() and any(staging.glob("train-*.tar")) and not (staging / "index.json").exists()
    assert convert(corpus[0], dst, options("wds")) == 0  # removes the stale staging folder, redoes the job
    assert verify(dst, workers=1) == 0 and _no_leftovers(tmp_path)


def test_rerun_on_a_complete_dataset(corpus, tmp_path, capsys) -> None:
    dst = tmp_path / "out"
    assert convert(corpus[0], dst, options("wds")) == 0
    first = (dst / "SHA256SUMS").read_text()
    stamp = (dst / "index.json").stat().st_mtime_ns
    capsys.readouterr()
    assert convert(corpus[0], dst, options("wds")) == 0  # same settings: nothing to do
    assert "complete already" in capsys.readouterr().out and (dst / "index.json").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="other settings; --overwrite replaces it"):
        convert(corpus[0], dst, options("wds", jpeg_quality=80))
    assert convert(corpus[0], dst, options("wds", overwrite=True)) == 0
    assert (dst / "SHA256SUMS").read_text() == first  # same input, same settings: byte-identical shards
    assert convert(corpus[0], dst, options("wds", jpeg_quality=80, overwrite=True)) == 0
    assert read_index(dst).options["jpeg_quality"] == 80 and _no_leftovers(tmp_path)
