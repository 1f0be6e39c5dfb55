"""The run configuration: one typed tree, built from defaults + YAML overlays + dotted overrides.

``load_config(["a.yaml", "b.yaml"], ["optim.lr=1e-3", "data.scale=[0.5,1.0]"])``:

1. the defaults are the dataclass defaults of :mod:`.config_tree` (the DeiT/Swin recipe of SWAT_SPEC 6.2);
2. each YAML file is a short overlay, a nested mapping shaped like the tree, deep-merged in order
   (mappings merge, anything else replaces); ``base: other.yaml`` (relative to the file, or a list)
   inherits. A flat timm ``train.py`` file is mapped onto the tree first (:mod:`.config_timm`);
3. dotted ``key=value`` overrides, values parsed as YAML (``x=null``, ``x=[1,2]``, ``x={a: 1}``).

Every node is a frozen dataclass that coerces and checks its fields when built (:mod:`.config_types`);
the free-form mappings in it (``model.kwargs``, ``engine.deepspeed``) are read-only too. Every error
is a :class:`ConfigError` (a ``ValueError``) naming the key and what is allowed. No torch import: this
runs on a login node. Quantities that combine settings with the world size (global batch, scaled lr,
run folder) come from one place, :func:`derived`; the DeepSpeed config is generated from this tree
(:mod:`.train.ds_config`).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from typing import Any, TypedDict

import yaml

from .config_timm import from_timm, is_timm_flat
from .config_tree import (  # the tree, re-exported: callers import it from here
    DEEPSPEED_REFUSED,
    CheckpointConfig,
    Config,
    DataConfig,
    EMAConfig,
    EngineConfig,
    EvalConfig,
    Interpolation,
    ModelConfig,
    OptimConfig,
    SchedConfig,
    SegConfig,
    TrackingConfig,
    TrainInterpolation,
)
from .config_types import ConfigError, check_keys, merge, parse_yaml, to_plain
from .files import atomic_write
from .redact import redact_tree

__all__ = [
    "DEEPSPEED_REFUSED",
    "CheckpointConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "EMAConfig",
    "EngineConfig",
    "EvalConfig",
    "Interpolation",
    "ModelConfig",
    "OptimConfig",
    "SchedConfig",
    "SegConfig",
    "TrackingConfig",
    "TrainInterpolation",
    "apply_overrides",
    "check_model_name",
    "check_runtime",
    "config_hash",
    "derived",
    "from_dict",
    "load_config",
    "save_config",
    "to_dict",
]


# -- loading ---------------------------------------------------------------------------------------


def _read_file(path: Path, notes: list[str], stack: tuple[Path, ...] = ()) -> dict[str, Any]:
    if path in stack:
        raise ConfigError(f"{path}: 'base' chain loops back to itself ({' -> '.join(map(str, stack))})")
    where = stack[-1] if stack else "config"
    if path.is_dir():
        raise ConfigError(f"{where}: {str(path)!r} is a folder, not a config file (a .yaml file is expected)")
    if not path.is_file():
        raise ConfigError(f"{where}: no such config file {str(path)!r}")
    raw = read_yaml_file(path) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, got {type(raw).__name__}")
    bases = raw.pop("base", None) or []
    timm = is_timm_flat(raw)
    try:
        layer = from_timm(raw, notes, str(path)) if timm else raw
        check_keys(layer, Config, root=Config)
    except ConfigError as err:
        raise ConfigError(f"{path}{' (read as a flat timm train.py file)' if timm else ''}: {err}") from None
    inherited: dict[str, Any] = {}
    for base in [bases] if isinstance(bases, str) else bases:
        inherited = merge(inherited, _read_file((path.parent / base).resolve(), notes, (*stack, path)))
    return merge(inherited, layer)


def read_yaml_file(path: Path) -> Any:
    """A YAML file's values; a binary file, an unreadable one or bad YAML is a ConfigError naming ``path``."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read it ({err.strerror or err})") from None
    bad = data.find(b"\0")  # no YAML text holds a NUL byte; an image, a checkpoint or an archive does
    try:
        text = data.decode()
    except UnicodeDecodeError as err:
        bad = err.start if bad < 0 else min(bad, err.start)
    if bad >= 0:
        raise ConfigError(f"{path}: not a YAML text file (binary data at byte {bad})")
    try:
        return parse_yaml(text)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """``'optim.lr=1e-3'`` -> (['optim', 'lr'], 0.001); the value is YAML (``null``, ``[1, 2]``, ``{a: 1}``)."""
    key, sep, value = text.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        raise ConfigError(f"override {text!r}: expected key=value, e.g. optim.lr=1e-3")
    try:
        return parts, parse_yaml(value)
    except ConfigError as err:
        raise ConfigError(f"override {text!r}: {err}") from None


def _apply(tree: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        parts, value = parse_override(text)
        for i in range(len(parts) - 1, 0, -1):
            value = {parts[i]: value}
        tree = merge(tree, {parts[0]: value})
    return tree


def load_config(files: list[str], overrides: list[str], notes: list[str] | None = None) -> Config:
    """Defaults <- each file in order (with its ``base`` chain) <- dotted overrides; validated, frozen.

    ``notes`` (if given) collects what a timm file mapping ignored or translated.
    """
    tree: dict[str, Any] = {}
    for f in files:
        tree = merge(tree, _read_file(Path(f).resolve(), notes if notes is not None else []))
    return from_dict(_apply(tree, overrides))


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """A new config: ``cfg`` with dotted overrides applied (and validated)."""
    return from_dict(_apply(to_dict(cfg), overrides))


def from_dict(raw: Mapping[str, Any]) -> Config:
    """Build a config from a nested mapping (missing keys take defaults; unknown keys raise)."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"expected a mapping of settings, got {raw!r}")
    check_keys(raw, Config, root=Config)
    cfg = Config(**raw)
    check_model_name(cfg.model.name)
    return cfg


@cache
def zoo_names() -> frozenset[str]:
    """Every model name of ours: each SWAT model and its baseline in :data:`swat_dist.models.zoo.ZOO` (a plain
    table: importing it costs no torch or timm)."""
    from .models.zoo import ZOO

    return frozenset(n for e in ZOO for n in (e.name, e.baseline))


def check_model_name(name: str) -> None:
    """``model.name`` checked against the zoo when it is, or looks like, one of ours (``swat_*``, ``*micro*``:
    timm has no micro models); any other name is timm's to know, checked where the model is built."""
    ours = zoo_names()
    if name in ours or not (name.startswith("swat_") or "micro" in name):
        return
    close = difflib.get_close_matches(name, sorted(ours), n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else "see `swat-dist models`"
    raise ConfigError(f"model.name: unknown model {name!r}; {hint}")


def to_dict(cfg: Config) -> dict[str, Any]:
    """The tree as plain dicts, lists and scalars (YAML/JSON-ready, in field order)."""
    return to_plain(cfg)


# -- derived values, hash, saving, runtime checks ---------------------------------------------------


class Derived(TypedDict):
    world_size: int
    global_batch: int  # data.batch_size x engine.grad_accum x world_size: samples per optimizer step
    lr: float  # the peak lr the schedule uses
    lr_rule: str  # how lr was obtained, for the log
    warmup_lr: float  # absolute (not scaled)
    min_lr: float  # absolute (not scaled)
    total_epochs: int  # sched.epochs + sched.cooldown_epochs
    name: str
    output_dir: str


def derived(cfg: Config, world_size: int) -> Derived:
    """Everything that combines settings with the world size: the one place it is computed."""
    if world_size < 1:
        raise ConfigError(f"world size must be >= 1, got {world_size}")
    o = cfg.optim
    batch = cfg.data.batch_size * cfg.engine.grad_accum * world_size
    ratio = batch / o.lr_base_batch
    if o.lr_scale == "linear":
        lr, rule = o.lr * ratio, f"linear: {o.lr:g} x {batch} / {o.lr_base_batch}"
    elif o.lr_scale == "sqrt":
        lr, rule = o.lr * math.sqrt(ratio), f"sqrt: {o.lr:g} x sqrt({batch} / {o.lr_base_batch})"
    else:
        lr, rule = o.lr, "none: optim.lr as given (absolute for the recipe's global batch)"
    return Derived(
        world_size=world_size,
        global_batch=batch,
        lr=lr,
        lr_rule=rule,
        warmup_lr=cfg.sched.warmup_lr,
        min_lr=cfg.sched.min_lr,
        total_epochs=cfg.sched.total_epochs,
        name=cfg.run_name,
        output_dir=cfg.output_dir.format(name=cfg.run_name),
    )


def config_hash(cfg: Config) -> str:
    """First 12 hex digits of the sha256 of the tree's canonical JSON (sorted keys, no spaces), credentials
    replaced by ``***`` first (:mod:`.redact`'s rules): a password is no part of what a run is, and a run
    resumed from its saved config.yaml (which holds ``***``) must keep the hash it started with."""
    text = json.dumps(redact_tree(to_dict(cfg)), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class _Dumper(yaml.SafeDumper):
    """Block mappings, flow lists (``scale: [0.08, 1.0]``)."""


_Dumper.add_representer(list, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True))


def to_yaml(cfg: Config) -> str:
    """The resolved tree as YAML, in field order; loads back to an equal config."""
    return _dump(to_dict(cfg))


def _dump(tree: dict[str, Any]) -> str:
    return yaml.dump(tree, Dumper=_Dumper, sort_keys=False, default_flow_style=False)


def save_config(cfg: Config, run_dir: str | Path, redact: Callable[[Any], Any] | None = None) -> Path:
    """Write ``run_dir/config.yaml``: the resolved tree (loads back to an equal config), hash in its header.

    ``redact`` (the run passes tracking's ``redact_tree``) replaces credentials in the tree first: the file
    then loads back to the config less its secrets, which a run takes from the environment again, and to the
    same hash (the hash is of the config less its secrets)."""
    tree = to_dict(cfg) if redact is None else redact(to_dict(cfg))
    path = Path(run_dir) / "config.yaml"
    atomic_write(path, f"# swat_dist resolved config; config_hash: {config_hash(cfg)}\n{_dump(tree)}")
    return path


def train_samples(cfg: Config) -> int | None:
    """Training samples per epoch when knowable without a scan: synthetic, or a converted dataset's index."""
    if cfg.data.format == "synthetic":
        return cfg.data.synthetic_samples
    if cfg.data.path and (Path(cfg.data.path) / "index.json").is_file():
        from .data.sources.index import read_index  # json only; imported here so config stays dependency-free

        split = read_index(cfg.data.path).splits.get("train")
        return split.samples if split else 0
    return None


def check_runtime(cfg: Config, world_size: int, device_type: str) -> None:
    """The checks that need the world size or the device: raise ConfigError naming the setting."""
    d = derived(cfg, world_size)
    if device_type == "cpu" and cfg.engine.precision == "fp16":
        raise ConfigError("engine.precision: fp16 is not supported on cpu (DeepSpeed refuses it); use bf16 or fp32")
    if device_type == "cpu" and (cfg.engine.offload_optimizer or cfg.engine.offload_params):
        raise ConfigError("engine.offload_optimizer/offload_params: the model already lives in cpu memory")
    samples = train_samples(cfg)
    if samples is not None and samples < d["global_batch"]:
        raise ConfigError(
            f"{samples} training samples cannot fill one optimizer step of {d['global_batch']} "
            f"(data.batch_size {cfg.data.batch_size} x engine.grad_accum {cfg.engine.grad_accum} x {world_size} ranks)"
        )
