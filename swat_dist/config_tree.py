"""The config tree: one frozen dataclass per section, with defaults (the DeiT/Swin recipe of SWAT_SPEC 6.2)
and the checks each section makes of itself when built. Loading, deriving and saving live in
:mod:`.config`, which re-exports everything here.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from .config_types import ConfigError, FrozenDict, Node

Interpolation = Literal["bicubic", "bilinear", "nearest", "lanczos", "box", "hamming"]
TrainInterpolation = Literal["random", "bicubic", "bilinear", "nearest", "lanczos", "box", "hamming"]
# DeepSpeed keys that would be a second source of truth for a setting of ours.
DEEPSPEED_REFUSED = {
    "optimizer": "optim.* (we pass a client torch AdamW: DeepSpeed's own optimizers JIT-compile ~50 s)",
    "scheduler": "sched.* (our schedule is stepped by the trainer)",
    "bfloat16": "engine.precision",
    "amp": "engine.precision",
}


@dataclass(frozen=True)
class ModelConfig(Node):
    """What to train: a timm registry name and the knobs ``timm.create_model`` takes."""

    _key: ClassVar[str] = "model"
    name: str = "swat_deit_tiny_patch16_224"
    num_classes: int = 1000
    img_size: int | None = None  # None: the model's pretrained cfg (input_size)
    drop_rate: float = 0.0
    drop_path_rate: float = 0.1
    kwargs: Mapping[str, Any] = field(default_factory=FrozenDict)  # extra create_model kwargs
    finetune: str | None = None  # checkpoint to start from; the head is re-initialised if num_classes differs
    backbone_weights: str | None = None  # task segment: classification weights (run, checkpoint, .safetensors)

    def _check(self) -> None:
        self._need("name", bool(self.name.strip()), "must name a model")
        self._range("num_classes", "img_size", lo=1)
        self._range("drop_rate", "drop_path_rate", lo=0, hi=1, open_hi=True)


@dataclass(frozen=True)
class DataConfig(Node):
    """The data and the augmentation recipe; batch sizes are per rank (timm's ``--batch-size``)."""

    _key: ClassVar[str] = "data"
    format: Literal["folder", "wds", "ffcv", "synthetic"] = "folder"
    path: str | None = None  # required unless format is synthetic
    batch_size: int = 128
    val_batch_size: int | None = None  # None: batch_size
    workers: int = 8
    crop_pct: float | None = None  # eval centre crop; None: the model's pretrained cfg
    interpolation: Interpolation | None = "bicubic"  # eval resize; None: the model's pretrained cfg
    train_interpolation: TrainInterpolation = "random"
    mean: tuple[float, float, float] | None = None  # None: the model's pretrained cfg
    std: tuple[float, float, float] | None = None
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: float = 0.5
    auto_augment: str | None = "rand-m9-mstd0.5-inc1"  # timm string; color_jitter applies only without it
    color_jitter: float = 0.4
    reprob: float = 0.25  # random erasing, pixel mode, one box
    mixup: float = 0.8  # alpha; mixup and cutmix are timm's batch mode
    cutmix: float = 1.0
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    smoothing: float = 0.1
    shard_group: int = 8  # shards shuffled together (wds): see swat_dist.data.loaders.plan
    # wds under s3://bucket/prefix: a node-local cache the plan fills ahead (docs/data.md "Object stores")
    cache_dir: str | None = None  # None: <tmp>/swat_dist-cache-<uid> ($TMPDIR: node-local on clusters)
    cache_gb: float = 50.0  # bound on the cache folder per dataset; must hold (prefetch + 2) shard groups
    prefetch: int = 2  # shard groups downloaded ahead of the one being read (0: fetch when first read)
    synthetic_samples: int = 1024
    synthetic_classes: int | None = None  # None: model.num_classes
    # where decode + crop + flip + RandAugment run (docs/data.md "Where augmentation runs"): loader = PIL on
    # the CPU workers; device = workers read bytes and plan, the GPU decodes and executes whole batches
    augment_on: Literal["loader", "device"] = "loader"

    def _check_path(self, path: str) -> None:
        """A URL is ``s3://`` (the only scheme read) and wds (the only format streamed); never a local folder."""
        from .data.sources.location import parse_location  # string work only: no boto3, no torch

        try:
            where = parse_location(path)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        if not isinstance(where, str) and self.format != "wds":
            raise ConfigError(f"data.path {path}: data.format {self.format!r} reads local files; object stores: wds")

    @property
    def mixup_active(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0

    def _device_check(self) -> None:
        """What the device pipeline reads and implements of the recipe (swat_dist.data.pixels.device_plan)."""
        if self.format == "synthetic":
            raise ConfigError(
                "data.augment_on 'device' executes a recipe on stored images: data.format must be folder, wds "
                "or ffcv, not 'synthetic' (its random pixels need no augmentation)"
            )
        self._need("train_interpolation", self.train_interpolation in ("random", "bilinear", "bicubic"),
                   "must be random, bilinear or bicubic with data.augment_on 'device'")  # fmt: skip
        aa = self.auto_augment
        self._need("auto_augment", aa is None or aa.startswith("rand"),
                   "must be a RandAugment policy ('rand-...') or null with data.augment_on 'device'")  # fmt: skip
        if aa is None and self.color_jitter > 0:
            raise ConfigError("data.color_jitter has no device version: set it to 0, or data.augment_on 'loader'")

    def _check(self) -> None:
        if self.format != "synthetic" and not self.path:
            raise ConfigError(f"data.path is required for data.format {self.format!r} (only synthetic data needs none)")
        if self.path and self.format != "synthetic":  # synthetic data reads no path: one left by a base config
            self._check_path(self.path)  # or an override is ignored, as before
        self._range("batch_size", "val_batch_size", "shard_group", "synthetic_samples", "synthetic_classes", lo=1)
        self._range("prefetch", lo=0)
        self._range("cache_gb", lo=0, open_lo=True)
        self._range("workers", "mixup", "cutmix", "color_jitter", lo=0)
        self._range("hflip", "reprob", "mixup_prob", "mixup_switch_prob", lo=0, hi=1)
        self._range("smoothing", lo=0, hi=1, open_hi=True)
        self._range("crop_pct", lo=0, hi=1, open_lo=True)
        self._need("std", self.std is None or min(self.std) > 0, "must be > 0")
        for name in ("scale", "ratio"):
            lo, hi = getattr(self, name)
            self._need(name, 0 < lo <= hi and (name == "ratio" or hi <= 1), "must be [low, high] with 0 < low <= high")
        self._need("auto_augment", self.auto_augment != "", "must be a timm policy string or null (no augmentation)")
        if self.augment_on == "device":
            self._device_check()
        if self.mixup_active:  # timm's batch-mode Mixup pairs each sample with its mirror in the batch
            self._need("batch_size", self.batch_size % 2 == 0, "must be even when data.mixup or data.cutmix is on")


@dataclass(frozen=True)
class SegConfig(Node):
    """Semantic segmentation (``task: segment``; SEG_SPEC 2-5): the mmseg ADE20K pipeline, UperNet, the metric.

    ``model.name`` is the backbone; ``data.hflip``, ``data.mean``/``std``, ``data.batch_size`` and
    ``data.workers`` apply as for classification; the other classification augmentation keys
    (auto_augment, color_jitter, reprob, mixup, cutmix, smoothing, scale, ratio, crop_pct) do not. The
    val batch is one image per rank (images keep their own sizes).
    """

    _key: ClassVar[str] = "seg"
    crop_size: int = 512
    scale: tuple[int, int] = (2048, 512)  # (long, short) side bound of the resize; train multiplies it by a ratio
    ratio_range: tuple[float, float] = (0.5, 2.0)
    cat_max_ratio: float = 0.75  # a train crop in which one class covers more of the labels is re-drawn (10 tries)
    photometric: bool = True  # brightness, contrast, saturation, hue as mmseg's PhotoMetricDistortion
    reduce_zero_label: bool | None = None  # raw 0 -> ignore, l -> l - 1; None: the index's (wds), true (folder)
    aux_weight: float = 0.4  # auxiliary FCN head's loss weight
    channels: int = 512  # UperNet width
    aux_channels: int = 256
    eval_mode: Literal["whole", "slide"] = "whole"
    eval_stride: int = 341  # slide: window step (windows are crop_size)

    def _check(self) -> None:
        self._range("crop_size", "channels", "aux_channels", "eval_stride", lo=1)
        self._range("aux_weight", lo=0)
        self._range("cat_max_ratio", lo=0, hi=1, open_lo=True)
        lo, hi = self.ratio_range
        self._need("ratio_range", 0 < lo <= hi, "must be [low, high] with 0 < low <= high")
        self._need("scale", min(self.scale) >= 1, "must be [long side, short side] in pixels")


@dataclass(frozen=True)
class OptimConfig(Node):
    """AdamW. ``lr`` is the base lr at ``lr_base_batch``; the lr used is :func:`derived`'s ``lr``."""

    _key: ClassVar[str] = "optim"
    opt: Literal["adamw"] = "adamw"
    lr: float = 5e-4  # 1e-3 at 128 x 8 = 1024 (SWAT_SPEC 6.2) under the linear rule
    lr_base_batch: int = 512
    lr_scale: Literal["linear", "sqrt", "none"] = "linear"  # none: lr is absolute (timm train.py files)
    weight_decay: float = 0.05
    eps: float = 1e-8
    betas: tuple[float, float] = (0.9, 0.999)
    clip_grad: float | None = 5.0  # global grad-norm clip; null: none
    layer_decay: float | None = None

    def _check(self) -> None:
        self._range("lr", "eps", "clip_grad", lo=0, open_lo=True)
        self._range("lr_base_batch", lo=1)
        self._range("weight_decay", lo=0)
        self._need("betas", all(0 <= b < 1 for b in self.betas), "must each be in [0, 1)")
        self._range("layer_decay", lo=0, hi=1, open_lo=True)


@dataclass(frozen=True)
class SchedConfig(Node):
    """Cosine with warmup and cooldown, timm's CosineLRScheduler semantics, stepped per optimizer step;
    or ``kind: poly`` (segmentation, mmseg's LinearLR + PolyLR).

    The lr rises linearly from ``warmup_lr`` over ``warmup_epochs``; the cosine runs from the lr at
    step 0 to ``min_lr`` at ``epochs`` (the warmup overlaps its start, timm's warmup_prefix=False); then
    ``cooldown_epochs`` more epochs at ``min_lr``. Training therefore runs ``epochs + cooldown_epochs``
    epochs, as timm train.py does (``--epochs 300 --cooldown-epochs 10`` trains 310). ``min_lr`` and
    ``warmup_lr`` are absolute, never scaled with the batch (timm scales only the lr).

    ``poly``: linear warmup from ``warmup_lr`` over ``warmup_steps`` (or ``warmup_epochs``), then
    ``(lr - min_lr) * (1 - t) ** power + min_lr``, t running from 0 after the warmup to 1 at the run's last
    step (``max_steps`` when set: segmentation schedules are step-based, 160k iterations).
    """

    _key: ClassVar[str] = "sched"
    kind: Literal["cosine", "poly"] = "cosine"
    epochs: int = 300
    warmup_epochs: int = 20
    cooldown_epochs: int = 10
    min_lr: float = 1e-5
    warmup_lr: float = 1e-6
    warmup_steps: int | None = None  # a warmup in optimizer steps; None: warmup_epochs
    power: float = 1.0  # poly

    @property
    def total_epochs(self) -> int:
        return self.epochs + self.cooldown_epochs

    def _check(self) -> None:
        self._range("epochs", lo=1)
        self._range("warmup_epochs", "cooldown_epochs", "min_lr", "warmup_lr", "warmup_steps", lo=0)
        self._range("power", lo=0, open_lo=True)
        self._need("warmup_epochs", self.warmup_epochs < self.epochs, f"must be < sched.epochs ({self.epochs})")


@dataclass(frozen=True)
class EMAConfig(Node):
    _key: ClassVar[str] = "ema"
    enabled: bool = False
    decay: float = 0.99996
    eval: bool = True  # also evaluate the EMA weights

    def _check(self) -> None:
        self._range("decay", lo=0, hi=1, open_lo=True, open_hi=True)


@dataclass(frozen=True)
class EngineConfig(Node):
    """DeepSpeed: ZeRO stage, precision, accumulation; ``deepspeed`` is merged last into the generated config."""

    _key: ClassVar[str] = "engine"
    # 1, not 0: DeepSpeed 0.19.8 wraps a client AdamW at stage 0 in bf16/fp16 in FP16_UnfusedOptimizer, which
    # steps Adam once on zero gradients when built (the first update ~0.74x too small) and reads one bool per
    # parameter tensor per step (a host sync each on CUDA). ZeRO-1 steps AdamW exactly; its cost next to
    # stage 0 is an all-gather of the updated bf16 weights per step, for a reduce-scatter instead of the
    # gradient all-reduce (about the same bytes), and it keeps 1/world of the fp32 master and moments.
    zero_stage: Literal[0, 1, 2, 3] = 1
    precision: Literal["bf16", "fp16", "fp32"] = "bf16"
    grad_accum: int = 1
    offload_optimizer: bool = False
    offload_params: bool = False
    # torch.compile the model in place (Module.compile: checkpoints keep their names). Opt-in: the first
    # steps pay the compile (about a minute for a 224 px model on CPU, recompiles at eval and new shapes).
    compile: bool = False
    # CUDA: cuDNN picks the fastest algorithm per input shape (train/cuda_math.py); false for bit-exact
    # resume on CUDA, at some speed.
    cudnn_benchmark: bool = True
    deepspeed: Mapping[str, Any] = field(default_factory=FrozenDict)

    def _check(self) -> None:
        self._range("grad_accum", lo=1)
        self._need(
            "zero_stage",
            self.zero_stage > 0 or self.precision == "fp32",
            f"must be >= 1 with engine.precision {self.precision}: at stage 0 DeepSpeed wraps the AdamW in "
            "FP16_UnfusedOptimizer, which takes one Adam step on zero gradients before training (or use "
            "engine.precision fp32)",
        )
        self._need(
            "offload_optimizer", not self.offload_optimizer or self.zero_stage >= 1, "needs engine.zero_stage >= 1"
        )
        self._need("offload_params", not self.offload_params or self.zero_stage == 3, "needs engine.zero_stage 3")
        for key, owner in DEEPSPEED_REFUSED.items():
            if key in self.deepspeed:
                raise ConfigError(f"engine.deepspeed.{key} is not allowed: it comes from {owner}")


@dataclass(frozen=True)
class CheckpointConfig(Node):
    _key: ClassVar[str] = "checkpoint"
    every_steps: int | None = None
    every_minutes: float | None = 30.0
    keep_last: int = 3
    resume: str = "auto"  # 'auto' (latest in the run folder, if any), 'none', or a checkpoint path

    def _check(self) -> None:
        self._range("every_steps", "keep_last", lo=1)
        self._range("every_minutes", lo=0, open_lo=True)
        self._need("resume", bool(self.resume), "must be 'auto', 'none' or a checkpoint path")


@dataclass(frozen=True)
class EvalConfig(Node):
    _key: ClassVar[str] = "eval"
    every_epochs: int = 1  # 0: only at the end
    at_end: bool = True

    def _check(self) -> None:
        self._range("every_epochs", lo=0)


@dataclass(frozen=True)
class TrackingConfig(Node):
    """Where rank 0 logs (README "Track and compare runs in MLflow")."""

    _key: ClassVar[str] = "tracking"
    backend: Literal["mlflow", "none"] = "mlflow"
    experiment: str | None = None  # None: env MLFLOW_EXPERIMENT_NAME, else 'swat_dist'
    # None: env MLFLOW_TRACKING_URI, else sqlite:///<output root>/mlflow.db (the folder holding the run folder)
    uri: str | None = None
    run_name: str | None = None  # None: the run's name
    system_metrics: bool = True  # CPU, memory (and GPU) of each node, sampled in the background
    system_metrics_interval_s: float = 10.0
    log_weights: bool = False  # upload the exported fp32 (and EMA) weights at the end (model-sized upload)
    start_timeout_s: float = 30.0  # how long the start waits for the run to open (then it opens in the background)
    flush_timeout_s: float = 120.0  # how long the end waits for queued metrics to reach the store
    http_timeout_s: float = 10.0  # one HTTP call to a tracking server (MLFLOW_HTTP_REQUEST_TIMEOUT wins if set)

    def _check(self) -> None:
        self._need("experiment", self.experiment is None or bool(self.experiment), "must not be empty")
        self._range("system_metrics_interval_s", "http_timeout_s", lo=0, open_lo=True)
        self._range("start_timeout_s", "flush_timeout_s", lo=0)


@dataclass(frozen=True)
class Config(Node):
    """The whole run. Build it with :func:`load_config` or :func:`from_dict`; it cannot be changed."""

    name: str | None = None  # None: the model name
    task: Literal["classify", "segment"] = "classify"  # what is learned (swat_dist.tasks): loss, metrics, best keys
    output_dir: str = "runs/{name}"  # template; {name} is the run's name
    seed: int = 42
    log_every: int = 10  # optimizer steps
    progress_every: int = 50  # optimizer steps between plain progress lines when stderr is not a terminal (logs)
    max_steps: int | None = None  # stop early (tests, benchmarks)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)  # no default data: data.path is required
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    seg: SegConfig = field(default_factory=SegConfig)

    @property
    def run_name(self) -> str:
        return self.name or self.model.name

    def _check(self) -> None:
        self._need("name", self.name is None or (bool(self.name) and "/" not in self.name), "must be a non-empty word")
        try:
            names = {f for _, f, _, _ in string.Formatter().parse(self.output_dir) if f is not None}
        except ValueError as err:
            raise ConfigError(f"output_dir: {self.output_dir!r} is not a valid template ({err})") from None
        self._need("output_dir", names <= {"name"}, "may only use the placeholder {name}")
        self._range("seed", lo=0)
        self._range("log_every", "progress_every", "max_steps", lo=1)
        if self.task == "segment":
            self._segment_check()
        classes = self.data.synthetic_classes
        if classes is not None and classes > self.model.num_classes:
            raise ConfigError(
                f"data.synthetic_classes ({classes}) must be <= model.num_classes ({self.model.num_classes})"
            )

    def _segment_check(self) -> None:
        fmt = self.data.format
        if fmt not in ("folder", "wds"):
            why = "FFCV has no lossless mask field" if fmt == "ffcv" else "there is no synthetic segmentation set"
            raise ConfigError(f"data.format {fmt!r} cannot hold segmentation masks ({why}): use wds or folder")
        if self.data.augment_on == "device":
            raise ConfigError("data.augment_on 'device' runs the classification recipe: task segment needs 'loader'")
        if self.data.val_batch_size not in (None, 1):
            raise ConfigError("data.val_batch_size must be 1 (or null) for task segment: val images keep their sizes")
        if self.model.finetune:
            raise ConfigError(
                "model.finetune is for classification; a segmentation backbone takes model.backbone_weights"
            )
