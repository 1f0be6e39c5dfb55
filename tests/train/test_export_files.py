"""``swat-dist export``'s sharp edges: an unwritable OUT is one line, an existing OUT needs ``--overwrite``, and
the weights files swat_dist writes (the export, a checkpoint's model/EMA safetensors) have the mode ``open()``
would give them (0644 under umask 022), not the 0600 of safetensors' temporary file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from swat_dist.cli import main
from swat_dist.config import CheckpointConfig
from swat_dist.dist import DistEnv
from swat_dist.train.checkpoint import CheckpointManager


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    file = tmp_path / "source.safetensors"
    save_file({"w": torch.arange(6, dtype=torch.bfloat16).reshape(2, 3)}, str(file))
    return file


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _one_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


def test_export_writes_fp32_readable_by_all(weights, tmp_path, umask_022, capsys):
    out = tmp_path / "out" / "model.safetensors"
    assert main(["export", str(weights), str(out)]) == 0
    assert load_file(str(out))["w"].dtype == torch.float32
    assert _mode(out) == 0o644  # safetensors alone leaves 0600


def test_export_refuses_an_existing_file_without_overwrite(weights, tmp_path, capsys):
    out = tmp_path / "model.safetensors"
    out.write_bytes(b"someone else's file")
    assert _one_line(capsys, ["export", str(weights), str(out)]) == (
        f"swat-dist export: error: {out}: exists already; --overwrite replaces it"
    )
    assert out.read_bytes() == b"someone else's file"
    assert main(["export", str(weights), str(out), "--overwrite"]) == 0
    assert set(load_file(str(out))) == {"w"}


@pytest.mark.parametrize("where", ["under_a_file", "proc"])
def test_export_onto_an_unwritable_path_is_one_line(weights, tmp_path, capsys, where):
    # root may write anywhere it can chmod, so "unwritable" is a path no one can create files in
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    out = blocker / "model.safetensors" if where == "under_a_file" else Path("/proc/model.safetensors")
    err = _one_line(capsys, ["export", str(weights), str(out)])
    assert err.startswith(f"swat-dist export: error: {out}: cannot write it (")  # was a SafetensorError traceback


def test_checkpoint_weights_are_readable_by_all(tmp_path, umask_022):
    class Engine:  # what CheckpointManager.save asks of the DeepSpeed engine, single process
        def save(self, folder: str, tag: str) -> None:
            (Path(folder) / tag).mkdir(parents=True, exist_ok=True)  # as DeepSpeed: the manager made it

        def full_state_dict(self, keep: bool = True) -> dict[str, torch.Tensor]:
            return {"w": torch.zeros(2)}

    class Ema:
        def state_dict(self) -> dict[str, torch.Tensor]:
            return {}

        def swapped(self):
            import contextlib

            return contextlib.nullcontext()

    manager = CheckpointManager(tmp_path, CheckpointConfig(), DistEnv(), Engine(), Ema())  # type: ignore[arg-type]
    path = manager.save(3, {"trainer": {}}, {"model": "m"})
    assert {p.name: _mode(p) for p in path.glob("*.safetensors")} == {
        "model.safetensors": 0o644,
        "ema.safetensors": 0o644,
    }
