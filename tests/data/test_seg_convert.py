"""``data convert --task segment`` and ``data seg-digits``: exact masks, skips, --strict, verify, reruns."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from swat_dist.cli import main
from swat_dist.data.convert.base import ConvertOptions
from swat_dist.data.convert.front import convert
from swat_dist.data.convert.segment import seg_key
from swat_dist.data.convert.verify import verify
from swat_dist.data.sets.seg_digits import write_seg_digits
from swat_dist.data.sources.index import DatasetIndex, read_index
from swat_dist.data.sources.wds import ShardSink

from .seg_corpus import NUM_CLASSES, Bad, Good, write_seg_corpus

SHARD_BYTES = 16 * 1024  # a few pairs per shard, so the corpus spans several


def seg_options(**kw: object) -> ConvertOptions:
    base: dict[str, object] = dict(
        fmt="wds", task="segment", num_classes=NUM_CLASSES, workers=1, shard_bytes=SHARD_BYTES
    )
    return ConvertOptions(**{**base, **kw})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def seg_corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Good], list[Bad]]:
    root = tmp_path_factory.mktemp("seg") / "src"
    good, bad = write_seg_corpus(root)
    return root, good, bad


@pytest.fixture(scope="module")
def seg_dataset(seg_corpus, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dst = tmp_path_factory.mktemp("segwds") / "out"
    assert convert(seg_corpus[0], dst, seg_options(workers=2)) == 0  # the process pool path
    return dst


def _read(dst: Path, split: str) -> dict[str, dict[str, bytes]]:
    """The split's samples by key, read with WebDataset itself."""
    urls = [str(dst / f.path) for f in read_index(dst).splits[split].files]
    return {s["__key__"]: s for s in wds.WebDataset(urls, shardshuffle=False, empty_check=False)}


def _stem(rel: str) -> str:
    return seg_key(0, rel).split("_", 1)[1]


def test_shards_hold_exactly_the_good_pairs_with_pixel_exact_masks(seg_corpus, seg_dataset) -> None:
    _, good, _ = seg_corpus
    for split in ("train", "val"):
        samples = _read(seg_dataset, split)
        want = {_stem(g.image): g for g in good if g.split == split}
        assert sorted(k.split("_", 1)[1] for k in samples) == sorted(want)
        for key, sample in samples.items():
            assert {k for k in sample if not k.startswith("__")} == {"jpg", "png"}
            g = want[key.split("_", 1)[1]]
            mask = Image.open(io.BytesIO(sample["png"]))
            image = Image.open(io.BytesIO(sample["jpg"]))
            assert mask.format == "PNG" and mask.mode == "L" and image.mode == "RGB"
            assert np.array_equal(np.asarray(mask), g.labels), g.image  # lossless, P read as indices
            assert image.size == mask.size
            if g.note:  # exif.jpg: stored 48x24 left red / right blue, upright 24x48 red on top
                assert image.size == (24, 48)
                px = np.asarray(image).astype(int)
                assert px[5, 12, 0] > 200 > px[5, 12, 2] and px[42, 12, 2] > 200 > px[42, 12, 0]


def test_index_records_the_task_label_rule_counts_and_shards(seg_corpus, seg_dataset) -> None:
    _, good, _ = seg_corpus
    raw = json.loads((seg_dataset / "index.json").read_text())
    assert raw["task"] == "segment" and raw["num_classes"] == NUM_CLASSES
    assert raw["ignore_index"] == 255 and raw["reduce_zero_label"] is True
    index = read_index(seg_dataset)
    assert index.classes == [str(v) for v in range(1, NUM_CLASSES + 1)]  # class c <- raw value c + 1
    for split in ("train", "val"):
        info, pairs = index.splits[split], [g for g in good if g.split == split]
        hist = sum(np.bincount(g.labels.reshape(-1), minlength=256) for g in pairs)
        assert info.samples == len(pairs) == sum(f.samples for f in info.files)
        assert info.label_pixels == hist.tolist()
        assert info.per_class == [sum(1 for g in pairs if (g.labels == c + 1).any()) for c in range(NUM_CLASSES)]
        assert [f.path for f in info.files] == [f"{split}-{i:06d}.tar" for i in range(len(info.files))]
        for f in info.files:
            assert (seg_dataset / f.path).stat().st_size == f.bytes <= SHARD_BYTES
            with tarfile.open(seg_dataset / f.path) as tar:
                names = tar.getnames()
            keys = [n.split(".", 1)[0] for n in names[::2]]
            assert names == [f"{k}.{ext}" for k in keys for ext in ("jpg", "png")] and len(keys) == f.samples
    assert len(index.splits["train"].files) >= 2
    sums = dict(line.split()[::-1] for line in (seg_dataset / "SHA256SUMS").read_text().splitlines())
    assert set(sums) == {f.path for s in index.splits.values() for f in s.files}


def test_each_bad_file_is_reported_once_with_its_reason(seg_corpus, seg_dataset) -> None:
    _, good, bad = seg_corpus
    report = json.loads((seg_dataset / "report.json").read_text())
    paths = [k["path"] for k in report["skipped"]]
    assert sorted(paths) == sorted(b.path for b in bad)  # each once, nothing else
    got = {k["path"]: k["reason"].lower() for k in report["skipped"]}
    assert all(b.reason.lower() in got[b.path] for b in bad), got
    assert {k["path"] for k in read_index(seg_dataset).skipped} == set(paths)
    assert report["splits"]["train"]["skipped"] == len(bad) - 1 and report["splits"]["val"]["skipped"] == 1
    notes = {k["path"]: k["note"] for k in report["notes"]}
    exif = next(g for g in good if g.note)
    assert list(notes) == [exif.image] and "the mask matched the upright size" in notes[exif.image]
    assert "images/training/exif.jpg: EXIF orientation 6 applied" in (seg_dataset / "report.txt").read_text()


def test_strict_fails_naming_the_first_bad_file(seg_corpus, tmp_path, capsys) -> None:
    _, _, bad = seg_corpus
    dst = tmp_path / "out"
    assert convert(seg_corpus[0], dst, seg_options(strict=True)) == 1
    first = min(b.path for b in bad)
    err = capsys.readouterr().err
    assert f"--strict: {len(bad)} files skipped, first {first}: " in err
    assert not dst.exists() and (tmp_path / "out-rejected-report.json").is_file()


def test_verify_passes_then_names_the_shard_whose_mask_is_corrupt(seg_dataset, tmp_path, capsys) -> None:
    assert verify(seg_dataset, workers=1) == 0
    assert "segment" in capsys.readouterr().out
    dst = Path(shutil.copytree(seg_dataset, tmp_path / "copy"))
    shard = dst / read_index(dst).splits["train"].files[0].path
    with tarfile.open(shard) as tar:
        png = next(m for m in tar.getmembers() if m.name.endswith(".png"))
    data = bytearray(shard.read_bytes())
    data[png.offset_data + 41 : png.offset_data + png.size - 12] = b"\x00" * (png.size - 53)  # IDAT data zeroed
    shard.write_bytes(bytes(data))
    code = main(["data", "verify", str(dst), "--workers", "1"])
    out = capsys.readouterr().out
    key = png.name.split(".")[0]
    named = f"  {shard.name}: {key}: mask does not decode"
    assert code == 1 and any(line.startswith(named) for line in out.splitlines()), out
    assert "Traceback" not in out


def test_ffcv_and_max_resolution_are_one_line_errors(seg_corpus, tmp_path, capsys) -> None:
    src, dst = str(seg_corpus[0]), str(tmp_path / "o")
    for extra, message in (
        (["--format", "ffcv"], "FFCV has no field type that stores a mask losslessly"),
        (["--format", "wds", "--max-resolution", "64"], "keeps every image at its source size"),
    ):
        assert main(["data", "convert", src, dst, "--task", "segment", *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and message in err, err
    (tmp_path / "flat").mkdir()
    assert main(["data", "convert", str(tmp_path / "flat"), dst, "--task", "segment", "--format", "wds"]) == 2
    assert "no images/training/, annotations/training/" in capsys.readouterr().err


def test_failure_mid_conversion_leaves_nothing_then_rerun_completes(seg_corpus, tmp_path, monkeypatch) -> None:
    dst, real, calls = tmp_path / "out", ShardSink.write_members, []

    def failing(self, *args):
        calls.append(1)
        if len(calls) == 4:
            raise OSError("disk full (simulated)")
        real(self, *args)

    monkeypatch.setattr(ShardSink, "write_members", failing)
    with pytest.raises(OSError, match="simulated"):
        convert(seg_corpus[0], dst, seg_options())
    assert not dst.exists() and not any(p.name.startswith(".out.") for p in tmp_path.iterdir())
    monkeypatch.undo()
    assert convert(seg_corpus[0], dst, seg_options()) == 0 and verify(dst, workers=1) == 0


def test_rerun_on_a_complete_dataset(seg_corpus, seg_dataset, tmp_path, capsys) -> None:
    dst = Path(shutil.copytree(seg_dataset, tmp_path / "out"))
    stamp = (dst / "index.json").stat().st_mtime_ns
    capsys.readouterr()
    assert convert(seg_corpus[0], dst, seg_options()) == 0  # same settings (workers do not count)
    assert "complete already" in capsys.readouterr().out and (dst / "index.json").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="other settings; --overwrite replaces it"):
        convert(seg_corpus[0], dst, seg_options(num_classes=6))
    assert convert(seg_corpus[0], dst, seg_options(overwrite=True)) == 0
    assert (dst / "SHA256SUMS").read_text() == (seg_dataset / "SHA256SUMS").read_text()  # byte-identical
    # without reduce_zero_label raw 0..5 are 6 classes
    assert convert(seg_corpus[0], dst, seg_options(reduce_zero_label=False, num_classes=6, overwrite=True)) == 0
    index = read_index(dst)
    assert index.reduce_zero_label is False and index.classes == [str(v) for v in range(6)]
    assert index.splits["train"].per_class[0] == index.splits["train"].samples  # every mask holds raw 0


def test_an_index_without_a_task_is_classification(seg_dataset) -> None:
    raw = json.loads((seg_dataset / "index.json").read_text())
    for key in ("task", "num_classes", "ignore_index", "reduce_zero_label"):
        del raw[key]
    for split in raw["splits"].values():
        del split["label_pixels"]
    old = DatasetIndex.from_dict(raw)
    assert old.task == "classify" and old.ignore_index is None and old.splits["train"].label_pixels is None
    assert "ignore_index" not in json.loads(old.to_json()) and json.loads(old.to_json())["task"] == "classify"


@pytest.fixture(scope="module")
def digits_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dst = tmp_path_factory.mktemp("segdigits") / "src"
    assert main(["data", "seg-digits", str(dst), "--train", "24", "--val", "8", "--size", "48"]) == 0
    return dst


def test_seg_digits_layout_labels_and_determinism(digits_set, tmp_path) -> None:
    for split, n in (("training", 24), ("validation", 8)):
        images = sorted((digits_set / "images" / split).glob("*.jpg"))
        masks = sorted((digits_set / "annotations" / split).glob("*.png"))
        assert len(images) == len(masks) == n and [p.stem for p in images] == [p.stem for p in masks]
        for image, mask in zip(images, masks):
            m = Image.open(mask)
            assert m.mode == "L" and m.size == Image.open(image).size and 36 <= min(m.size) <= max(m.size) <= 48
            labels = np.unique(np.asarray(m))
            assert {0, 1} <= set(labels.tolist()) and labels.max() <= 11 and labels.max() >= 2
    write_seg_digits(tmp_path / "again", train=24, val=8, size=48, seed=0)
    write_seg_digits(tmp_path / "other", train=24, val=8, size=48, seed=1)
    first = digits_set / "annotations/training/segdigits_train_00000.png"
    assert (tmp_path / "again/annotations/training/segdigits_train_00000.png").read_bytes() == first.read_bytes()
    assert (tmp_path / "other/annotations/training/segdigits_train_00000.png").read_bytes() != first.read_bytes()


def test_seg_digits_converts_strictly_with_zero_skips(digits_set, tmp_path) -> None:
    dst = tmp_path / "out"
    args = ["data", "convert", str(digits_set), str(dst), "--task", "segment", "--format", "wds"]
    assert main([*args, "--num-classes", "11", "--strict", "--workers", "1"]) == 0
    index = read_index(dst)
    assert index.skipped == [] and index.splits["train"].samples == 24 and index.splits["val"].samples == 8
    pixels = np.asarray(index.splits["train"].label_pixels)
    assert pixels[0] > 0 and pixels[1] > 0 and (pixels[2:12] > 0).sum() >= 5 and pixels[12:].sum() == 0
    assert verify(dst, workers=1) == 0
