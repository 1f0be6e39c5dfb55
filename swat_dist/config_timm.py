"""Flat timm ``train.py`` YAML - how published recipes (the official SWAT ones too) are written - as our tree.

A timm file means what timm 0.4.13's ``train.py`` (the version SWAT used, SWAT_SPEC 9) would do with it:
keys the file lacks take **timm's** defaults, not ours (no ``opt`` means SGD, which we refuse).
Each key is either mapped onto our tree, ignored with a note (it cannot change the trained model
here: logging, loader tuning, BatchNorm options for models without BatchNorm), or accepted only at
timm's no-op value (anything else would train a different recipe, so it is refused, not dropped).

Learning rate: timm 0.4.13 does not scale it. The file's ``lr`` is absolute for the file's per-GPU
batch x world size (SWAT's recipes assume 8 GPUs), so a mapped file sets ``optim.lr_scale: none``;
changing the batch or the GPU count later leaves the lr alone. Newer timm files that give ``lr_base``
instead of ``lr`` map to our linear/sqrt scaling (timm's rule). ``min_lr``/``warmup_lr`` are absolute
in both. The schedule is stepped per optimizer step here (timm 0.4.13 steps it once per epoch).
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable
from typing import Any

from .config_tree import Config
from .config_types import ConfigError

# timm 0.4.13 train.py defaults, for the keys that we map or that must keep their no-op value.
TIMM_DEFAULTS: dict[str, Any] = {
    "model": "resnet101", "num_classes": None, "img_size": None, "input_size": None, "crop_pct": None,
    "mean": None, "std": None, "interpolation": "", "batch_size": 32, "validation_batch_size_multiplier": 1,
    "opt": "sgd", "opt_eps": None, "opt_betas": None, "weight_decay": 1e-4, "clip_grad": None,
    "clip_mode": "norm", "sched": "step", "lr": 0.01, "lr_noise": None, "lr_cycle_mul": 1.0,
    "lr_cycle_limit": 1, "warmup_lr": 1e-4, "min_lr": 1e-5, "epochs": 200, "epoch_repeats": 0.0,
    "start_epoch": None, "warmup_epochs": 3, "cooldown_epochs": 10, "no_aug": False, "scale": [0.08, 1.0],
    "ratio": [3 / 4, 4 / 3], "hflip": 0.5, "vflip": 0.0, "color_jitter": 0.4, "aa": None, "aug_splits": 0,
    "jsd": False, "reprob": 0.0, "remode": "const", "recount": 1, "mixup": 0.0, "cutmix": 0.0,
    "cutmix_minmax": None, "mixup_prob": 1.0, "mixup_switch_prob": 0.5, "mixup_mode": "batch",
    "mixup_off_epoch": 0, "smoothing": 0.1, "train_interpolation": "random", "drop": 0.0, "drop_connect": None,
    "drop_path": None, "drop_block": None, "bn_tf": False, "bn_momentum": None, "bn_eps": None,
    "model_ema": False, "model_ema_decay": 0.9998, "seed": 42, "checkpoint_hist": 10, "workers": 4,
    "amp": False, "apex_amp": False, "native_amp": False, "pretrained": False, "initial_checkpoint": "",
    "resume": "", "gp": None, "tta": 0, "data_dir": None,
}  # fmt: skip
# Newer timm keys (0.5-1.x) with their no-op defaults: accepted, mapped or checked the same way.
NEWER_DEFAULTS: dict[str, Any] = {
    "validation_batch_size": None, "layer_decay": None, "lr_base": None, "lr_base_size": 256,
    "lr_base_scale": "", "lr_k_decay": 1.0, "aug_repeats": 0, "jsd_loss": False, "bce_loss": False,
    "bce_target_thresh": None, "grad_accum_steps": 1, "warmup_prefix": False,
}  # fmt: skip

# Copied straight onto our tree (where timm allows None, so does our field, with the same meaning).
DIRECT = {
    "model": "model.name", "img_size": "model.img_size", "drop": "model.drop_rate", "crop_pct": "data.crop_pct",
    "mean": "data.mean", "std": "data.std", "batch_size": "data.batch_size", "workers": "data.workers",
    "validation_batch_size": "data.val_batch_size", "scale": "data.scale", "ratio": "data.ratio",
    "hflip": "data.hflip", "color_jitter": "data.color_jitter", "reprob": "data.reprob", "mixup": "data.mixup",
    "cutmix": "data.cutmix", "mixup_prob": "data.mixup_prob", "mixup_switch_prob": "data.mixup_switch_prob",
    "smoothing": "data.smoothing", "train_interpolation": "data.train_interpolation",
    "weight_decay": "optim.weight_decay", "clip_grad": "optim.clip_grad", "layer_decay": "optim.layer_decay",
    "epochs": "sched.epochs", "warmup_epochs": "sched.warmup_epochs", "cooldown_epochs": "sched.cooldown_epochs",
    "min_lr": "sched.min_lr", "warmup_lr": "sched.warmup_lr", "model_ema": "ema.enabled",
    "model_ema_decay": "ema.decay", "seed": "seed", "checkpoint_hist": "checkpoint.keep_last",
    "grad_accum_steps": "engine.grad_accum",
}  # fmt: skip
_EMPTY_IS_NONE: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "aa": ("data.auto_augment", lambda v: v or None),
    "interpolation": ("data.interpolation", lambda v: v or None),  # '' = the model's pretrained cfg
    "opt_eps": ("optim.eps", lambda v: 1e-8 if v is None else v),  # None = torch AdamW's default
    "opt_betas": ("optim.betas", lambda v: [0.9, 0.999] if v is None else v),
    "drop_path": ("model.drop_path_rate", lambda v: 0.0 if v is None else v),  # None = the models' default, 0
}
# Keys that only ever hold timm's default here (a different value trains a different recipe).
ONLY_DEFAULT = (
    "clip_mode", "lr_noise", "lr_cycle_mul", "lr_cycle_limit", "lr_k_decay", "epoch_repeats", "start_epoch",
    "no_aug", "vflip", "aug_splits", "aug_repeats", "jsd", "jsd_loss", "bce_loss", "bce_target_thresh",
    "cutmix_minmax", "mixup_off_epoch", "drop_connect", "drop_block", "bn_tf", "bn_momentum", "bn_eps",
    "pretrained", "gp", "tta", "warmup_prefix",
)  # fmt: skip
# No effect on the trained model here (logging, loader and output plumbing, BatchNorm sync for models
# without BatchNorm, options of schedulers/optimizers we do not run): reported, then dropped.
IGNORED = frozenset((
    "sync_bn", "dist_bn", "split_bn", "pin_mem", "log_interval", "output", "experiment", "channels_last",
    "no_prefetcher", "save_images", "recovery_interval", "eval_metric", "local_rank", "use_multi_epochs_loader",
    "torchscript", "log_wandb", "no_ddp_bb", "worker_seeding", "fuser", "grad_checkpointing", "dataset",
    "train_split", "val_split", "dataset_download", "class_map", "no_resume_opt", "model_ema_force_cpu",
    "momentum", "decay_epochs", "decay_rate", "patience_epochs", "decay_milestones", "lr_noise_pct",
    "lr_noise_std", "lr_cycle_decay", "resplit",
))  # fmt: skip
# Handled one by one in from_timm.
SPECIAL = {"opt", "sched", "lr", "lr_base", "lr_base_size", "lr_base_scale", "amp", "apex_amp", "native_amp"}
SPECIAL |= {"num_classes", "input_size", "validation_batch_size_multiplier", "remode", "recount", "mixup_mode"}
SPECIAL |= {"data_dir", "initial_checkpoint", "resume"}
KNOWN = set(TIMM_DEFAULTS) | set(NEWER_DEFAULTS) | IGNORED
# SWAT's release patched timm in place, so there these baseline names meant the SWAT models (SWAT_SPEC 8.5).
SWAT_NAMES = {
    "vit_tiny_patch16_224": "swat_deit_tiny_patch16_224", "vit_small_patch16_224": "swat_deit_small_patch16_224",
    "vit_base_patch32_224": "swat_deit_base_patch32_224", "mixer_ti16_224": "swat_mixer_ti16_224",
    "mixer_s16_224": "swat_mixer_s16_224", "mixer_b32_224": "swat_mixer_b32_224", "resmlp_12_224": "swat_resmlp_12_224",
    "swin_tiny_patch4_window7_224": "swat_swin_tiny_patch4_window7_224",
    "swin_small_patch4_window7_224": "swat_swin_small_patch4_window7_224",
}  # fmt: skip
OUR_TOP = {f.name for f in dataclasses.fields(Config)} | {"base"}
OUR_SECTIONS = {f.name for f in dataclasses.fields(Config) if dataclasses.is_dataclass(f.default_factory)}


def is_timm_flat(raw: dict[str, Any]) -> bool:
    """A flat timm file: no section of ours holds a mapping, and ``model``/``sched`` is a scalar or a
    timm-only key (``batch_size``, ``lr``, ...) is present."""
    if any(isinstance(raw.get(s), dict) for s in OUR_SECTIONS):
        return False
    scalar = any(k in raw and not isinstance(raw[k], dict) for k in ("model", "sched"))
    return scalar or bool((set(raw) - OUR_TOP) & KNOWN)


def _fail(key: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"timm key '{key}': {value!r} is not supported (only {allowed})")


def _num(args: dict[str, Any], key: str) -> float:
    value = args[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"timm key '{key}': expected a number, got {value!r}")
    return float(value)


def _check_only_default(args: dict[str, Any]) -> None:
    defaults = TIMM_DEFAULTS | NEWER_DEFAULTS
    for key in ONLY_DEFAULT:
        if key in args and args[key] != defaults[key]:
            raise _fail(key, args[key], repr(defaults[key]))
    if _num(args, "reprob") > 0:  # remode/recount matter only when random erasing is on
        if args["remode"] != "pixel":
            raise _fail("remode", args["remode"], "'pixel' when reprob > 0")
        if args["recount"] != 1:
            raise _fail("recount", args["recount"], "1 when reprob > 0")
    if (_num(args, "mixup") > 0 or _num(args, "cutmix") > 0) and args["mixup_mode"] != "batch":
        raise _fail("mixup_mode", args["mixup_mode"], "'batch'")
    if str(args["sched"]).lower() != "cosine":
        raise _fail("sched", args["sched"], "'cosine'")
    if str(args["opt"]).lower() != "adamw":
        raise _fail("opt", args["opt"], "'adamw'")


def from_timm(raw: dict[str, Any], notes: list[str], source: str = "timm config") -> dict[str, Any]:
    """Map a flat timm file onto a nested overlay of our tree; ``notes`` gets what was ignored or translated."""
    for key in raw:
        if key not in KNOWN:
            near = difflib.get_close_matches(key, sorted(KNOWN), n=1)
            hint = f"did you mean '{near[0]}'?" if near else "not a timm train.py key we know"
            raise ConfigError(f"unknown timm key '{key}' ({hint})")
    args = TIMM_DEFAULTS | NEWER_DEFAULTS | raw
    _check_only_default(args)
    tree: dict[str, Any] = {}

    def put(path: str, value: Any) -> None:
        *parents, leaf = path.split(".")
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value

    for key, path in DIRECT.items():
        put(path, args[key])
    for key, (path, convert) in _EMPTY_IS_NONE.items():
        put(path, convert(args[key]))
    put("optim.opt", "adamw")
    if args["num_classes"] is not None:
        put("model.num_classes", args["num_classes"])
    if args["input_size"] is not None:
        c, h, w = args["input_size"]
        if c != 3 or h != w:
            raise _fail("input_size", args["input_size"], "[3, N, N]")
        put("model.img_size", h)
    if args["validation_batch_size"] is None and args["validation_batch_size_multiplier"] != 1:
        put("data.val_batch_size", args["batch_size"] * args["validation_batch_size_multiplier"])
    paths = {"data_dir": "data.path", "initial_checkpoint": "model.finetune", "resume": "checkpoint.resume"}
    for key, path in paths.items():
        if args[key]:
            put(path, args[key])
    _map_lr(raw, args, put, notes, source)
    amp = bool(args["amp"] or args["apex_amp"] or args["native_amp"])
    put("engine.precision", "bf16" if amp else "fp32")
    notes.append(
        f"{source}: timm AMP -> engine.precision bf16 (timm's is fp16 with a loss scaler: engine.precision=fp16)"
        if amp
        else f"{source}: no timm amp -> engine.precision fp32 (as timm would train it)"
    )
    _notes(raw, args, source, notes)
    return tree


def _map_lr(raw: dict[str, Any], args: dict[str, Any], put: Callable[..., None], notes: list[str], source: str) -> None:
    if raw.get("lr") is None and args["lr_base"] is not None:  # timm >= 0.6: lr from lr_base at lr_base_size
        rule = args["lr_base_scale"] or ("sqrt" if "ada" in str(args["opt"]).lower() else "linear")
        if rule not in ("linear", "sqrt"):
            raise _fail("lr_base_scale", rule, "'linear' or 'sqrt'")
        put("optim.lr", args["lr_base"])
        put("optim.lr_base_batch", args["lr_base_size"])
        put("optim.lr_scale", rule)
        return
    put("optim.lr", args["lr"])
    put("optim.lr_scale", "none")
    notes.append(f"{source}: lr {args['lr']} is absolute (timm 0.4.13 does not scale it): optim.lr_scale none")


def _notes(raw: dict[str, Any], args: dict[str, Any], source: str, notes: list[str]) -> None:
    ignored = sorted(k for k in raw if k in IGNORED)
    if ignored:
        notes.append(f"{source}: ignored timm keys (no effect here): {', '.join(ignored)}")
    mapped = (DIRECT.keys() | _EMPTY_IS_NONE.keys() | {"opt", "sched", "lr"}) & TIMM_DEFAULTS.keys()
    missing = sorted(k for k in mapped if k not in raw)
    if missing:
        notes.append(f"{source}: not in the file, so timm 0.4.13 defaults: {', '.join(missing)}")
    if args["model"] in SWAT_NAMES:
        notes.append(
            f"{source}: model {args['model']!r} is timm's baseline here; SWAT's release patched timm so that this "
            f"name meant SWAT - for the SWAT model use model.name={SWAT_NAMES[args['model']]}"
        )
    notes.append(f"{source}: the lr schedule is stepped per optimizer step (timm 0.4.13 steps it per epoch)")
