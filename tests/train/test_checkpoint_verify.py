"""A damaged newest checkpoint never strands a run: every save records a manifest (size and sha256 of
each file); a resume skips a checkpoint that does not verify, in one line, and resumes bit for bit from
the one before; nothing verifying, a truncated weights file, or another model is a one-line error.

One 2-rank training (checkpoints at steps 8 and 12) is shared by the module; the damage cases that only
need verification run on copies of its folder, and only three resumes train again."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from safetensors.torch import load_file

from swat_dist.cli import main
from swat_dist.train.checkpoint_paths import MANIFEST, check_model, resolve, weights_file
from swat_dist.train.export import export

from .test_train_runs import MODEL, losses, overrides, spawn

STEPS = ["checkpoint.keep_last=2"]  # with overrides(): 12 steps, checkpoints at 4, 8, 12; 8 and 12 kept
NEWEST, PREVIOUS = "step_00000012", "step_00000008"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted 2-rank run; tests copy it (``copy_run``) before damaging anything."""
    tmp = tmp_path_factory.mktemp("ref")
    spawn(2, overrides(tmp / "run", *STEPS), tmp)
    return tmp / "run"


def copy_run(trained: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    return out


def truncate(name: str) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        os.truncate(folder / name, (folder / name).stat().st_size // 2)

    return damage


def garble(name: str) -> Callable[[Path], None]:
    """Same size, other bytes: only a parse or a hash can tell."""

    def damage(folder: Path) -> None:
        data = bytearray((folder / name).read_bytes())
        data[0] = ord("#") if data[0] != ord("#") else ord("!")
        (folder / name).write_bytes(bytes(data))

    return damage


def empty(folder: Path) -> None:
    shutil.rmtree(folder)
    folder.mkdir()


def ckpts(run: Path) -> Path:
    return run / "checkpoints"


@pytest.mark.slow
def test_every_checkpoint_has_a_manifest_written_last(trained):
    assert (ckpts(trained) / "latest").read_text().strip() == NEWEST
    for tag in (PREVIOUS, NEWEST):
        folder = ckpts(trained) / tag
        listed = json.loads((folder / MANIFEST).read_text())["files"]
        files = {p.name for p in folder.iterdir() if p.name != MANIFEST}
        assert set(listed) == files >= {"meta.json", "model.safetensors", "ema.safetensors", "rank00000.pt",
                                        "rank00001.pt", "mp_rank_00_model_states.pt"}  # fmt: skip
        for name, entry in listed.items():
            data = (folder / name).read_bytes()
            assert entry == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        newest_file = max((folder / name).stat().st_mtime_ns for name in files)
        assert (folder / MANIFEST).stat().st_mtime_ns >= newest_file
    lines: list[str] = []
    assert resolve(trained, "auto", hashes=True, report=lines.append) == ckpts(trained) / NEWEST and lines == []


DAMAGES = {  # what is done to the newest checkpoint -> the reason the skip line gives
    "truncated DeepSpeed file": (truncate("mp_rank_00_model_states.pt"), r"mp_rank_00_model_states.pt is \d+ bytes"),
    "truncated rank state": (truncate("rank00001.pt"), r"rank00001.pt is \d+ bytes, the manifest says \d+"),
    "truncated weights": (truncate("model.safetensors"), r"model.safetensors is \d+ bytes, the manifest says"),
    "truncated EMA weights": (truncate("ema.safetensors"), r"ema.safetensors is \d+ bytes, the manifest says"),
    "emptied folder": (empty, "the folder is empty"),
    "deleted folder": (shutil.rmtree, "the folder is missing"),
    "garbled meta.json": (garble("meta.json"), "meta.json does not match its sha256"),
    "flipped byte": (garble("rank00000.pt"), "rank00000.pt does not match its sha256"),
    "garbled manifest": (garble(MANIFEST), "manifest.json is not readable"),
}


@pytest.mark.slow
@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_newest_checkpoint_is_skipped_in_one_line(damage, trained, tmp_path):
    run = copy_run(trained, tmp_path)
    harm, why = DAMAGES[damage]
    harm(ckpts(run) / NEWEST)
    lines: list[str] = []
    assert resolve(run, "auto", hashes=True, report=lines.append) == ckpts(run) / PREVIOUS
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"[checkpoint] skipping {NEWEST}: ") and lines[0].endswith(f"falling back to {PREVIOUS}")
    assert re.search(why, lines[0]), lines[0]


@pytest.mark.slow
def test_sizes_only_verification_catches_truncation_and_bad_json_not_flipped_bytes(trained, tmp_path):
    # what hashes=False (the login-node default: stat calls, no read) can and cannot see
    run = copy_run(trained, tmp_path)
    garble("rank00000.pt")(ckpts(run) / NEWEST)
    assert resolve(run, "auto") == ckpts(run) / NEWEST
    garble("meta.json")(ckpts(run) / NEWEST)
    lines: list[str] = []
    assert resolve(run, "auto", report=lines.append) == ckpts(run) / PREVIOUS
    assert len(lines) == 1 and "meta.json is not valid JSON" in lines[0]


@pytest.mark.slow
def test_a_checkpoint_without_manifest_is_accepted_only_when_its_files_are_whole(trained, tmp_path):
    run = copy_run(trained, tmp_path)
    for tag in (PREVIOUS, NEWEST):
        (ckpts(run) / tag / MANIFEST).unlink()  # as written before manifests existed
    assert resolve(run, "auto", report=pytest.fail) == ckpts(run) / NEWEST
    whole = {"rank00001.pt": "rank00001.pt .* is not a whole torch file",
             "ema.safetensors": r"ema.safetensors is \d+ bytes, its safetensors header says \d+"}  # fmt: skip
    for name, why in whole.items():
        again = copy_run(run, tmp_path / name)
        truncate(name)(ckpts(again) / NEWEST)
        lines: list[str] = []
        assert resolve(again, "auto", report=lines.append) == ckpts(again) / PREVIOUS
        assert len(lines) == 1 and re.search(why, lines[0]), lines


@pytest.mark.slow
def test_nothing_verifying_is_one_line_naming_the_folder(trained, tmp_path):
    run = copy_run(trained, tmp_path)
    truncate("rank00000.pt")(ckpts(run) / NEWEST)
    empty(ckpts(run) / PREVIOUS)
    with pytest.raises(
        ValueError, match=f"no checkpoint in {re.escape(str(ckpts(run)))} verifies .*{NEWEST}: .*{PREVIOUS}: "
    ) as err:
        resolve(run, "auto")
    assert "\n" not in str(err.value)
    with pytest.raises(
        ValueError, match=f"checkpoint {re.escape(str(ckpts(run) / NEWEST))} does not verify: rank00000.pt is"
    ):
        resolve(run, str(ckpts(run) / NEWEST))  # a tag folder named explicitly: no fallback


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated rank state", "emptied folder"])
def test_resume_falls_back_to_the_previous_checkpoint_bit_for_bit(damage, trained, tmp_path, capfd):
    run = copy_run(trained, tmp_path)
    DAMAGES[damage][0](ckpts(run) / NEWEST)
    capfd.readouterr()
    summary = spawn(2, overrides(run, *STEPS), tmp_path)  # the same command as the uninterrupted run
    lines = [line for line in capfd.readouterr().out.splitlines() if "[checkpoint]" in line]
    skips = [line for line in lines if line.startswith("[checkpoint] skipping")]
    assert len(skips) == 1 and skips[0].startswith(f"[checkpoint] skipping {NEWEST}: "), skips  # rank 0 only
    assert skips[0].endswith(f"falling back to {PREVIOUS}")
    assert lines[1:] == [f"[checkpoint] resuming from {ckpts(run) / PREVIOUS} (step 8)"], lines
    assert summary["steps"] == 12
    a, b = losses(trained), losses(run)
    assert sorted(a) == sorted(b) == list(range(1, 13))
    assert max(abs(a[s] - b[s]) for s in a) <= 1e-6, {s: (a[s], b[s]) for s in a if a[s] != b[s]}
    assert resolve(run, "auto", hashes=True, report=pytest.fail) == ckpts(run) / NEWEST  # saved afresh


@pytest.mark.slow
def test_truncated_weights_are_refused_in_one_line_naming_the_file(trained, tmp_path, capsys):
    run = copy_run(trained, tmp_path)
    file = tmp_path / "export.safetensors"  # an export: no manifest, its header tells its size
    shutil.copy(ckpts(run) / NEWEST / "model.safetensors", file)
    assert weights_file(file) == file
    truncate(file.name)(tmp_path)
    with pytest.raises(
        ValueError, match=rf"^{re.escape(str(file))} is \d+ bytes, its safetensors header says \d+ \(truncated\?\)$"
    ):
        weights_file(file)
    assert main(["export", str(file), str(tmp_path / "out.safetensors")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"swat-dist export: error: {file} is ") and "\n" not in err
    cfg_args = overrides(run, *STEPS)
    assert main(["eval", "--checkpoint", str(file), *cfg_args]) == 2
    err = capsys.readouterr().err.strip()
    assert f"error: {file} is " in err and "\n" not in err
    # inside a checkpoint: named explicitly it is refused; through the run folder the previous one is used
    truncate("ema.safetensors")(ckpts(run) / NEWEST)
    with pytest.raises(ValueError, match=f"{NEWEST} does not verify: ema.safetensors is"):
        export(ckpts(run) / NEWEST, tmp_path / "ema.safetensors", ema=True)
    out = export(run, tmp_path / "ema.safetensors", ema=True)
    assert capsys.readouterr().out.strip().endswith(f"falling back to {PREVIOUS}")
    want = load_file(str(ckpts(run) / PREVIOUS / "ema.safetensors"))
    assert all(load_file(str(out))[k].equal(v) for k, v in want.items())


@pytest.mark.slow
def test_resuming_as_another_model_is_one_line_naming_both(trained, tmp_path):
    run = copy_run(trained, tmp_path)
    with pytest.raises(ValueError, match=f"holds {MODEL} weights, but model.name is deit_micro_patch4_32"):
        check_model(ckpts(run) / NEWEST, "deit_micro_patch4_32")
    config = (run / "config.yaml").read_text()
    with pytest.raises(Exception, match=f"ValueError: checkpoint .*{NEWEST} holds {MODEL} weights, but model.name"):
        spawn(2, overrides(run, *STEPS, "model.name=deit_micro_patch4_32"), tmp_path)  # both ranks raise: no hang
    assert (run / "config.yaml").read_text() == config  # refused before the run folder was touched
