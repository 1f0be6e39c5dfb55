"""Fine-tuning from earlier weights (``model.finetune``): what is loaded, what is re-initialised, what is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

from swat_dist.config import load_config
from swat_dist.dist import DistEnv
from swat_dist.train.finetune import build_model

from .test_train_runs import MODEL, _port, overrides

MIXER = "swat_mixer_micro_patch4_32"


def _source(tmp_path: Path, name: str = MODEL, **kwargs) -> tuple[Path, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=10, depth=1, **kwargs)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    file = tmp_path / "source.safetensors"
    save_file(state, str(file))
    return file, state


def _cfg(tmp_path: Path, *extra: str):
    return load_config([], overrides(tmp_path / "run", *extra))


def test_new_classes_and_resolution_keep_every_trunk_weight(tmp_path):
    file, source = _source(tmp_path)
    model = build_model(_cfg(tmp_path, f"model.finetune={file}", "model.num_classes=5", "model.img_size=48"))
    state = model.state_dict()
    assert state["head.weight"].shape[0] == 5  # a new head for the new classes
    assert state["pos_embed"].shape[1] == (48 // 4) ** 2  # the 8x8 grid resampled to 12x12
    for key, value in source.items():
        if key.startswith("head.") or key == "pos_embed":
            continue
        assert torch.equal(state[key], value), key
    # resampling the grid to its own size is the identity: the embeddings did travel
    same = build_model(_cfg(tmp_path, f"model.finetune={file}", "model.num_classes=5"))
    assert torch.equal(same.state_dict()["pos_embed"], source["pos_embed"])


def test_same_classes_load_the_head_too(tmp_path):
    file, source = _source(tmp_path)
    model = build_model(_cfg(tmp_path, f"model.finetune={file}"))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in source.items())


def test_a_weight_missing_from_the_file_is_refused_by_name(tmp_path):
    file, source = _source(tmp_path)
    del source["blocks.0.norm1.weight"]
    save_file(source, str(file))
    with pytest.raises(ValueError, match=r"lacks weights the model needs: blocks\.0\.norm1\.weight"):
        build_model(_cfg(tmp_path, f"model.finetune={file}", "model.num_classes=5"))


def test_a_file_of_another_model_is_refused(tmp_path):
    file = tmp_path / "other.safetensors"
    save_file({"fc.weight": torch.zeros(2, 2)}, str(file))
    with pytest.raises(ValueError, match=r"has no head\.weight"):
        build_model(_cfg(tmp_path, f"model.finetune={file}"))
    with pytest.raises(FileNotFoundError):
        build_model(_cfg(tmp_path, f"model.finetune={tmp_path / 'absent.safetensors'}"))


def test_mixer_at_another_token_count_is_one_clear_line(tmp_path):
    file, _ = _source(tmp_path, MIXER)
    with pytest.raises(ValueError) as err:
        build_model(_cfg(tmp_path, f"model.name={MIXER}", f"model.finetune={file}", "model.img_size=48"))
    assert "\n" not in str(err.value)


def test_finetune_run_starts_from_the_file(tmp_path):
    """One optimizer step at lr 0 (the first warmup step): the run's weights are the file's, head apart."""
    from swat_dist.train.run import run

    file, source = _source(tmp_path)
    args = [f"model.finetune={file}", "model.num_classes=7", "optim.layer_decay=0.75", "sched.warmup_epochs=1",
            "sched.warmup_lr=0", "max_steps=1", "data.batch_size=32", "checkpoint.every_steps=1",
            "ema.enabled=false"]  # fmt: skip
    cfg = _cfg(tmp_path, *args)
    summary = run(cfg, DistEnv(master_port=_port()))
    assert summary["steps"] == 1
    ckpt = tmp_path / "run" / "checkpoints"
    trained = load_file(str(ckpt / (ckpt / "latest").read_text().strip() / "model.safetensors"))
    assert trained["head.weight"].shape[0] == 7
    for key, value in source.items():
        if not key.startswith("head."):
            assert torch.equal(trained[key], value), key


LEAVES_NOTHING = """
import os, torch
from swat_dist.dist import DistEnv
from swat_dist.train.engine import destroy, init_distributed
keys = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
os.environ["MASTER_ADDR"] = "kept"
before = {k: os.environ.get(k) for k in keys}
init_distributed(DistEnv(), torch.device("cpu"))
during = os.environ.get("RANK"), os.environ.get("WORLD_SIZE")
destroy()
print(during, {k: os.environ.get(k) for k in keys} == before)
"""


def test_leaving_the_process_group_restores_the_launch_variables():
    # a run in a process that goes on (a notebook, this test suite) must not leave RANK/WORLD_SIZE/MASTER_PORT:
    # a later `swat-dist train` subprocess took them for a torchrun launch on a used port (EADDRINUSE)
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", LEAVES_NOTHING], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "('0', '1') True"
