"""Every shipped config loads, validates, names a registered model and opens with the command that runs it.

The paper recipes must also say what SWAT_SPEC section 6 says at the paper's 8 GPUs.
"""

from pathlib import Path

import pytest
import timm

from swat_dist.config import derived, load_config
from swat_dist.models import ZOO
from swat_dist.train.ds_config import deepspeed_config

CONFIGS = sorted(Path(__file__).resolve().parents[1].joinpath("configs").rglob("*.yaml"))
RECIPES = Path(__file__).resolve().parents[1] / "configs" / "recipes"


def _load(path: Path):
    # A flat timm file has no data path (timm takes it on the command line); its header command gives one.
    flat = path.name.startswith("official_")
    return load_config([str(path)], ["data.path=/data/in1k-wds"] if flat else [])


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_loads_and_names_a_model(path):
    cfg = _load(path)
    assert timm.is_model(cfg.model.name), cfg.model.name
    assert deepspeed_config(cfg, 8)["train_batch_size"] == derived(cfg, 8)["global_batch"]
    head = path.read_text().splitlines()[:8]
    assert head[0].startswith("#") and any("swat_dist train" in line for line in head), "say how to run it"


def test_every_paper_model_and_baseline_has_a_recipe():
    for entry in (e for e in ZOO if e.params is not None):
        for name in (entry.name, entry.baseline):
            cfg = load_config([str(RECIPES / f"{name}.yaml")], [])
            assert cfg.model.name == name


@pytest.mark.parametrize(
    "name,batch,lr,wd,ema",
    [
        ("swat_deit_tiny_patch16_224", 2048, 7.5e-4, 0.3, True),  # SWAT_SPEC 6.1 (released)
        ("swat_mixer_s16_224", 2048, 7.5e-4, 0.3, True),
        ("swat_swin_tiny_patch4_window7_224", 1024, 1e-3, 0.05, False),  # 6.2
        ("official_vit_i1k_scratch", 2048, 7.5e-4, 0.3, True),  # the flat timm file
    ],
)
def test_recipes_match_the_spec_on_eight_gpus(name, batch, lr, wd, ema):
    cfg = _load(RECIPES / f"{name}.yaml")
    d = derived(cfg, 8)
    assert d["global_batch"] == batch and d["lr"] == pytest.approx(lr)
    assert cfg.optim.weight_decay == wd and cfg.ema.enabled is ema
    assert d["total_epochs"] == 310
