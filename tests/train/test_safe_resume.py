"""No code runs from a checkpoint (issue 27 item 1), and a resume says what it did (item 5).

One 1-rank ZeRO-1 run (a checkpoint at step 4, EMA on: our rank file, DeepSpeed's model and optimizer
files) is crafted once per module as someone else could: an object whose ``__reduce__`` creates a marker
file is added to every ``.pt`` file and the manifest rewritten with our own ``write_manifest``, so the
folder verifies. Every way in (train resume ``auto`` and ``=PATH``, an elastic resume at 2 ranks, eval,
export, fine-tune) must refuse in one line naming the file, or load without running anything: the marker
never appears. The 1-rank resumes run in this process (no spawn: ~2 s each); the elastic one is the one
2-rank case. With the folder scan bypassed, the loads themselves (ours, DeepSpeed's, its converter's)
must refuse too. A full disk during a save (a real 6 MB tmpfs, where mounting is allowed) is one line.
"""

from __future__ import annotations

import errno
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from swat_dist.cli import main
from swat_dist.config import load_config
from swat_dist.dist import DistEnv
from swat_dist.train import checkpoint
from swat_dist.train.checkpoint import disk_full, resume_point
from swat_dist.train.checkpoint_paths import write_manifest
from swat_dist.train.ema import ema_state
from swat_dist.train.engine import _convert
from swat_dist.train.finetune import build_model
from swat_dist.train.safe_load import RefusedFile, load_state, refusal

from .test_train_runs import _port, overrides, spawn

TAG = "step_00000004"
ARGS = ["engine.zero_stage=1", "max_steps=4"]  # ZeRO-1: DeepSpeed's optimizer file holds its own classes


class Payload:
    """What a crafted checkpoint carries: unpickling it (pickle, not weights-only) creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("clean")
    spawn(1, overrides(tmp / "run", *ARGS), tmp)
    return tmp / "run"


@pytest.fixture(scope="module")
def crafted(clean: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the crafted run folder, the marker its payload would create); tests copy it before running in it."""
    tmp = tmp_path_factory.mktemp("crafted")
    run, marker = tmp / "run", tmp / "payload-ran"
    shutil.copytree(clean, run)
    folder = run / "checkpoints" / TAG
    files = sorted(folder.glob("*.pt"))
    assert {f.name for f in files} >= {"rank00000.pt", "mp_rank_00_model_states.pt"} and len(files) == 3
    for file in files:
        state = torch.load(file, weights_only=False)  # our own clean file
        state["payload"] = Payload(marker)
        torch.save(state, file)
    write_manifest(folder)
    return run, marker


def copy(crafted: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    run, marker = crafted
    shutil.copytree(run, tmp_path / "run")
    assert not marker.exists()
    return tmp_path / "run", marker


def _train_without_scan(rank: int, port: int, args: list[str]) -> None:
    from swat_dist.train.run import run

    checkpoint.refusal = lambda folder: None  # type: ignore[assignment]  # the scan bypassed: the loads alone
    torch.set_num_threads(1)
    run(load_config([], args), DistEnv(master_port=port))


def train_1_rank(args: list[str], tmp: Path, scan: bool = True) -> None:
    """A 1-rank training in a process of its own: DeepSpeed keeps process-wide state that a second engine
    in one process trips on (``Group ... is not registered``)."""
    if scan:
        spawn(1, args, tmp)
    else:
        mp.spawn(_train_without_scan, args=(_port(), args), nprocs=1, join=True)


def one_error_line(err: str) -> str:
    """Our one line (DeepSpeed's import adds its own ``ld: cannot find -laio`` noise on this machine)."""
    lines = [x for x in err.splitlines() if x.startswith("swat-dist ")]
    assert len(lines) == 1, err[-3000:]
    return lines[0]


def test_the_payload_is_live(crafted):
    """The test's own check: pickle runs each crafted file's payload (else every test below is vacuous)."""
    run, marker = crafted
    for file in sorted((run / "checkpoints" / TAG).glob("*.pt")):
        torch.load(file, weights_only=False)
        assert marker.exists(), file
        marker.unlink()


@pytest.mark.slow
@pytest.mark.parametrize("resume", ["auto", "path"])
def test_train_resume_refuses_naming_the_file(resume, crafted, tmp_path, capfd):
    run, marker = copy(crafted, tmp_path)
    where = "auto" if resume == "auto" else str(run / "checkpoints" / TAG)
    assert main(["train", *overrides(run, *ARGS, "max_steps=8", f"checkpoint.resume={where}")]) == 1
    line = one_error_line(capfd.readouterr().err)
    assert "refused to load" in line and f"{run / 'checkpoints' / TAG}/" in line and ".pt" in line, line
    assert not marker.exists()


@pytest.mark.slow
def test_the_loads_themselves_are_weights_only(crafted, tmp_path, capfd):
    """Without the folder scan: DeepSpeed's load (forced weights-only), ours, and DeepSpeed's converter
    (an elastic resume's first step) each refuse the file; nothing ran."""
    run, marker = copy(crafted, tmp_path)
    with pytest.raises(Exception, match="RankFailed"):
        train_1_rank(overrides(run, *ARGS, "max_steps=8"), tmp_path, scan=False)
    line = one_error_line(capfd.readouterr().err)
    assert "refused by the weights-only load (Unsupported global: GLOBAL exec was not" in line, line
    folder = run / "checkpoints" / TAG
    rank_file = re.escape(str(folder / "rank00000.pt"))
    with pytest.raises(RefusedFile, match=f"^{rank_file}: refused to load .*GLOBAL exec was not"):
        load_state(folder / "rank00000.pt")
    with pytest.raises(RefusedFile, match=r"rank00000\.pt: refused"):
        ema_state(folder, 1, 1, 2, 0, [])
    why = _convert(folder, folder / "universal")
    assert why is not None and "failed (" in why and "\n" not in why and not (folder / "universal").exists(), why
    assert not marker.exists()


def test_numpy_state_other_than_a_uint32_vector_is_refused(tmp_path):
    """The stand-ins read numpy's RNG key and nothing else numpy can pickle (an object array, floats)."""
    key = np.random.get_state()[1]
    torch.save({"rng": {"numpy": ("MT19937", key, 0, 0, 0.0)}}, tmp_path / "ok.pt")
    assert np.array_equal(load_state(tmp_path / "ok.pt")["rng"]["numpy"][1], key)
    cases = {"floats": np.zeros(3), "objects": np.array([None, 1], dtype=object), "matrix": np.zeros((2, 2), "u4")}
    for name, value in cases.items():
        torch.save({"x": value}, tmp_path / f"{name}.pt")
        with pytest.raises(RefusedFile, match=rf"{name}\.pt: refused to load \((numpy dtype '[fO]8'|a numpy arr)"):
            load_state(tmp_path / f"{name}.pt")


@pytest.mark.slow
def test_a_planted_universal_copy_is_refused(clean, crafted, tmp_path):
    """An elastic resume reuses CHECKPOINT/universal/ when it exists, and the manifest does not list it."""
    run = tmp_path / "run"
    shutil.copytree(clean, run)
    planted = run / "checkpoints" / TAG / "universal" / "zero" / "head.weight" / "fp32.pt"
    planted.parent.mkdir(parents=True)
    shutil.copy(crafted[0] / "checkpoints" / TAG / "rank00000.pt", planted)
    why = refusal(run / "checkpoints" / TAG)
    assert why is not None and why.startswith(f"{planted}: refused to load: it names builtins.exec"), why


@pytest.mark.slow
def test_an_elastic_resume_refuses(crafted, tmp_path, capfd):
    """The one 2-rank case: another world size than the checkpoint's 1 (the universal-copy path)."""
    run, marker = copy(crafted, tmp_path)
    with pytest.raises(Exception, match="refused to load"):
        spawn(2, overrides(run, *ARGS, "max_steps=8"), tmp_path)
    err = capfd.readouterr().err
    # both ranks refuse alike, so the line is printed once, by rank 0 (train/failure.py)
    lines = [x for x in err.splitlines() if "refused to load" in x and "swat-dist train: rank" in x]
    assert len(lines) == 1 and "rank 0" in lines[0], err[-3000:]
    assert not marker.exists() and not (run / "checkpoints" / TAG / "universal").exists()


@pytest.mark.slow
def test_eval_export_and_finetune_read_only_safetensors(crafted, tmp_path, capfd):
    run, marker = copy(crafted, tmp_path)
    assert main(["export", str(run), str(tmp_path / "out.safetensors")]) == 0
    assert main(["eval", "--checkpoint", str(run), *overrides(run, *ARGS)]) == 0
    cfg = load_config([], overrides(tmp_path / "ft", *ARGS, f"model.finetune={run}", "model.num_classes=5"))
    assert build_model(cfg).get_classifier().out_features == 5
    assert not marker.exists()


@pytest.mark.slow
def test_a_resume_names_its_checkpoint_and_the_unfinished_save_it_skips(clean, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(clean, run)
    unfinished = run / "checkpoints" / "step_00000008"  # a kill mid-save: some files, no manifest, no `latest`
    unfinished.mkdir()
    (unfinished / "mp_rank_00_model_states.pt").write_bytes(b"PK")
    env = DistEnv(rank=0, local_rank=0, world_size=1, local_world_size=1, launcher="single")
    assert resume_point(run, "auto", load_config([], overrides(run)).model.name, env) == run / "checkpoints" / TAG
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "[checkpoint] skipping step_00000008: newer than 'latest', a save that did not complete",
        f"[checkpoint] resuming from {run / 'checkpoints' / TAG} (step 4)",
    ]


def test_disk_full_is_named_with_the_bytes_needed_and_free(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "step_00000008"
    path.mkdir(parents=True)
    (tmp_path / "checkpoints" / "latest").write_text("step_00000004\n")
    full = disk_full(OSError(errno.ENOSPC, "No space left on device"), path, 1000, "the size of step_00000004")
    assert full is not None and full.errno == errno.ENOSPC
    free = shutil.disk_usage(tmp_path).free
    assert str(full) == (
        f"[Errno 28] checkpoint {path}: no space left on the device (ENOSPC): a save needs ~1,000 bytes (the size "
        f"of step_00000004), {free:,} are free in {path.parent}; the last complete checkpoint stays the latest: "
        "step_00000004"
    )
    torch_said = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
    assert disk_full(torch_said, path, 10 * free, "") is not None  # torch keeps no errno: the free space decides
    assert disk_full(torch_said, path, 1000, "") is None  # room enough: another failure, re-raised as it is
    assert disk_full(OSError(errno.EACCES, "Permission denied"), path, 10 * free, "") is None
    first = tmp_path / "new" / "checkpoints" / "step_00000004"  # the first save, failing before its mkdir
    assert "the latest: none yet" in str(disk_full(OSError(errno.ENOSPC, "No space left"), first, 1, ""))


@pytest.fixture
def tmpfs(tmp_path: Path):
    """A 6 MB file system: one checkpoint of the test model (~3.6 MB) fits, two do not. Needs root."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs is not allowed here (the ENOSPC wording is checked above)")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=True)


@pytest.mark.slow
def test_a_full_disk_during_a_save_is_one_line_and_keeps_the_last_checkpoint(tmpfs, capfd):
    run = tmpfs / "run"
    with pytest.raises(Exception, match="RankFailed"):
        train_1_rank(overrides(run, *ARGS, "max_steps=8", "checkpoint.keep_last=2"), tmpfs.parent)
    line = one_error_line(capfd.readouterr().err)
    assert "DiskFull" in line and "no space left on the device (ENOSPC)" in line, line
    assert f"checkpoint {run / 'checkpoints' / 'step_00000008'}: " in line and "the latest: step_00000004" in line
    assert (run / "checkpoints" / "latest").read_text().strip() == TAG
