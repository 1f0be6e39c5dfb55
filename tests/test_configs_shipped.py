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


@pytest.mark.parametrize(
    "name,model,drop_path",
    [
        ("upernet_swat_swin_tiny", "swat_swin_tiny_patch4_window7_224", 0.3),
        ("upernet_swin_tiny", "swin_tiny_patch4_window7_224", 0.3),
        ("upernet_swat_swin_small", "swat_swin_small_patch4_window7_224", 0.3),
        ("upernet_swin_small", "swin_small_patch4_window7_224", 0.3),
        ("upernet_swat_deit_small", "swat_deit_small_patch16_224", 0.1),
        ("upernet_deit_small", "deit_small_patch16_224", 0.1),
    ],
)
def test_segmentation_recipes_match_seg_spec_on_eight_gpus(name, model, drop_path):
    from swat_dist.train.optim import lr_at

    cfg = load_config([str(RECIPES / "seg" / f"{name}.yaml")], [])
    d = derived(cfg, 8)
    assert cfg.task == "segment" and cfg.model.name == model and cfg.model.drop_path_rate == drop_path
    assert cfg.model.num_classes == 150 and cfg.seg.crop_size == 512 and tuple(cfg.seg.scale) == (2048, 512)
    assert d["global_batch"] == 16 and d["lr"] == pytest.approx(6e-5) and cfg.optim.weight_decay == 0.01
    assert cfg.max_steps == 160_000 and cfg.seg.aux_weight == 0.4 and cfg.seg.cat_max_ratio == 0.75
    # SEG_SPEC 4: linear warmup over 1,500 iterations from 1e-6 x lr, then poly (power 1) to 0 at 160k
    lr = lambda s: lr_at(s, 1263, cfg.sched, d, run_steps=cfg.max_steps)  # noqa: E731
    assert lr(0) == pytest.approx(6e-11) and lr(750) == pytest.approx(3e-5, rel=1e-5)
    assert lr(1500) == pytest.approx(6e-5) and lr(80_750) == pytest.approx(3e-5) and lr(160_000) == 0.0
