"""The SWAT demo and its baseline (one ``model.name`` override, the same ``name``) share ``runs/{name}``: the
second would resume the first's checkpoint. That is refused in one line that says how to fix it - a
different ``name=`` or ``output_dir=`` - by ``train`` (``check_model``) and already by ``submit --dry-run``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from swat_dist.cli import main
from swat_dist.train.checkpoint_paths import check_model

from .tiny import overrides

SWAT, BASELINE = "swat_deit_micro_patch4_32", "deit_micro_patch4_32"


def _run_of(run: Path, model: str, world_size: int = 2) -> Path:
    """A run folder whose latest checkpoint records ``model`` (meta.json is what the checks read)."""
    tag = run / "checkpoints" / "step_00000010"
    tag.mkdir(parents=True)
    (tag / "meta.json").write_text(json.dumps({"step": 10, "world_size": world_size, "model": model}))
    (run / "checkpoints" / "latest").write_text("step_00000010\n")
    return tag


def test_resuming_another_models_checkpoint_says_to_use_another_name_or_output_dir(tmp_path):
    tag = _run_of(tmp_path / "runs" / "demo_digits", SWAT)
    with pytest.raises(ValueError) as info:
        check_model(tag, BASELINE)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"checkpoint {tag} holds {SWAT} weights, but model.name is {BASELINE}: ")
    assert f"the run folder {tmp_path / 'runs' / 'demo_digits'} is another model's run" in message
    assert "name=<another name> or output_dir=<another folder>" in message
    assert f"model.name={SWAT}" in message and f"model.finetune={tag / 'model.safetensors'}" in message
    check_model(tag, SWAT)  # the same model resumes


def test_submit_dry_run_refuses_it_before_the_queue(tmp_path, capsys):
    run = tmp_path / "run"
    _run_of(run, SWAT)
    argv = ["submit", "--cluster", "local-test", "--dry-run", *overrides(run)]
    assert main([*argv, f"model.name={BASELINE}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("swat-dist submit: error: checkpoint ")
    assert "give this one its own with name=<another name> or output_dir=<another folder>" in err
    assert main(argv) == 0  # the SWAT model itself resumes it
