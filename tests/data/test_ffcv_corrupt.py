"""A damaged .beton stops training with one line naming the sample (issue 28 item 5).

Before: 4 KiB of 0xff over a record - ``data verify`` said "sample 1 does not decode", ``train`` exited 0
with ``skipped_batches: 0``, having trained on whatever FFCV's buffer held (FFCV ignores libjpeg-turbo's
return code). Now the decoder keeps that code per image and the loader raises when it reaches the batch,
worded as the wds reader's error. Raw-pixel records cannot be checked this way (any bytes are pixels):
only ``data verify``'s SHA256 tells. FFCV runs without its JIT here (as in test_ffcv_loader.py); the JIT
path was measured by hand (see the commit).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from swat_dist.cli import main
from swat_dist.data.convert.base import ConvertOptions
from swat_dist.data.convert.front import convert
from swat_dist.data.loaders.ffcv_loader import BetonSplit, FfcvTrainLoader, FfcvValLoader
from swat_dist.data.sources.ffcv import Beton

from .helpers import write_id_folder

pytestmark = pytest.mark.usefixtures("no_jit")  # conftest.py


@pytest.fixture(scope="module")
def jpeg_beton(tmp_path_factory) -> Path:
    """Every record a JPEG (compress_probability 1), so each one can be refused by the decoder."""
    root = tmp_path_factory.mktemp("ffcvbad")
    write_id_folder(root / "src", classes=2, per_class={"train": 12, "val": 3})
    opts = ConvertOptions(fmt="ffcv", workers=1, max_resolution=64, compress_probability=1.0)
    assert convert(root / "src", root / "ffcv", opts) == 0
    return root / "ffcv"


def _damage(src: Path, dst: Path, sample: int, split: str = "train") -> int:
    """A copy of ``src`` with ``sample``'s JPEG bytes overwritten by 0xff, as in the issue; its byte offset."""
    shutil.copytree(src, dst)
    path = dst / f"{split}.beton"
    record = next(Beton(path).records(sample, sample + 1))
    at = Beton(path).data_ptr(sample)
    with path.open("r+b") as f:
        f.seek(at)
        f.write(b"\xff" * len(record.data))
    return at


def _epoch(loader) -> list[np.ndarray]:
    return [x.numpy() for x, _ in loader]


def test_an_intact_file_reads_every_batch(jpeg_beton):
    """The check must not refuse good records: the whole epoch arrives."""
    loader = FfcvTrainLoader(BetonSplit(jpeg_beton, "train"), world_size=1, rank=0, batch_size=4, size=16)
    assert len(_epoch(loader)) == 6


def test_a_refused_record_names_the_sample_its_file_and_byte(jpeg_beton, tmp_path):
    at = _damage(jpeg_beton, tmp_path / "d", sample=5)
    split = BetonSplit(tmp_path / "d", "train")
    loader = FfcvTrainLoader(split, world_size=1, rank=0, batch_size=4, size=16, seed=1)
    planned = loader.plan().batches(0)
    bad = next(i for i, ids in enumerate(planned) if 5 in ids)
    seen: list[np.ndarray] = []
    with pytest.raises(ValueError) as raised:
        for x, _ in loader:
            seen.append(x)
    assert len(seen) == bad  # every batch before the damaged one, none after
    assert str(raised.value) == (
        f"{split.path}: sample 5 (JPEG at byte {at:,}) does not decode (libjpeg-turbo refused it); "
        "run swat-dist data verify"
    )


def test_val_reads_are_checked_too(jpeg_beton, tmp_path):
    _damage(jpeg_beton, tmp_path / "d", sample=1, split="val")
    loader = FfcvValLoader(BetonSplit(tmp_path / "d", "val"), world_size=1, rank=0, batch_size=8, size=16,
                           crop_pct=1.0)  # fmt: skip
    with pytest.raises(ValueError, match=r"val\.beton: sample 1 \(JPEG at byte [\d,]+\) does not decode"):
        _epoch(loader)


TRAIN = [
    "model.name=swat_deit_micro_patch4_32", "model.num_classes=2", "model.kwargs={depth: 1}", "data.format=ffcv",
    "data.batch_size=4", "data.workers=0", "data.mixup=0", "data.cutmix=0", "data.reprob=0",
    "engine.precision=fp32", "tracking.backend=none", "eval.every_epochs=0", "eval.at_end=false",
    "checkpoint.every_steps=null", "checkpoint.every_minutes=null", "max_steps=6", "sched.epochs=1",
    "sched.warmup_epochs=0",
]  # fmt: skip


@pytest.mark.slow
def test_train_stops_with_one_line(jpeg_beton, tmp_path, capfd):
    """The CLI in this process: exit 1 and one line of ours naming the file and sample (was exit 0)."""
    at = _damage(jpeg_beton, tmp_path / "d", sample=7)
    args = [*TRAIN, f"data.path={tmp_path / 'd'}", f"output_dir={tmp_path / 'run'}"]
    assert main(["train", *args]) == 1
    ours = [x for x in capfd.readouterr().err.splitlines() if x.startswith("swat-dist ")]
    assert len(ours) == 1, ours
    assert re.fullmatch(
        rf"swat-dist train: rank 0 failed: ValueError: {re.escape(str(tmp_path / 'd' / 'train.beton'))}: sample 7 "
        rf"\(JPEG at byte {at:,}\) does not decode \(libjpeg-turbo refused it\); run swat-dist data verify "
        r"\(ffcv\.py:\d+\)",
        ours[0],
    )
