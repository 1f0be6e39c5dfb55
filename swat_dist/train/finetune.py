"""Building the model to train: from scratch, or fine-tuned from earlier weights (``model.finetune``).

Fine-tuning goes through timm's own pretrained path (``pretrained=True`` with a file overlay), so the
model's filter runs exactly as for any timm checkpoint: DeiT position embeddings are resampled to the
new grid, Swin's relative-position tables travel as they are, and Mixer/ResMLP refuse a resolution whose
token count differs (their token-mixing weights have no meaningful resampling). The classifier is
dropped and re-initialised when the class count changes.

timm loads with ``strict=False`` whenever it drops the classifier, which would also hide every other
missing weight; :func:`_check_loaded` restores that guarantee by comparing names with the source file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
from safetensors import safe_open
from torch import nn

from ..config import Config
from ..models.factory import check_model_name
from .checkpoint_paths import weights_file


def build_model(cfg: Config) -> Any:
    """The model ``cfg`` describes, with ``model.finetune``'s weights loaded when set."""
    m = cfg.model
    if ":" not in m.name:  # hf-hub:/local-dir: names are not in the registry; timm resolves them
        check_model_name(m.name)  # one line naming the closest models, not timm's RuntimeError traceback
    kwargs: dict[str, Any] = dict(num_classes=m.num_classes, drop_rate=m.drop_rate, drop_path_rate=m.drop_path_rate)
    if m.img_size:
        kwargs["img_size"] = m.img_size
    kwargs |= m.kwargs
    if not m.finetune:
        return timm.create_model(m.name, **kwargs)
    return finetuned(m.name, weights_file(m.finetune), kwargs)


def _classifier(name: str) -> str:
    cfg = timm.models.get_pretrained_cfg(name)
    head = cfg.classifier if cfg is not None else None
    if not head:
        raise ValueError(f"{name} names no classifier in its pretrained cfg, so it cannot be fine-tuned here")
    return head if isinstance(head, str) else head[0]


def finetuned(name: str, file: Path, kwargs: dict[str, Any]) -> nn.Module:
    """``name`` built with ``kwargs`` and initialised from ``file`` (new head if the class count differs)."""
    head = _classifier(name)
    with safe_open(str(file), framework="pt") as f:
        keys = set(f.keys())
        if f"{head}.weight" not in keys:
            raise ValueError(f"{file} has no {head}.weight: it does not hold {name} weights")
        source_classes = f.get_slice(f"{head}.weight").get_shape()[0]
    overlay = dict(file=str(file), num_classes=source_classes)
    try:
        model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
    except RuntimeError as err:  # torch's size-mismatch report: many lines; keep the first
        raise ValueError(f"model.finetune={file}: {str(err).splitlines()[0]}") from None
    _check_loaded(model, keys, head, file)
    return model


def _check_loaded(model: nn.Module, source_keys: set[str], head: str, file: Path) -> None:
    missing = [k for k in model.state_dict() if k not in source_keys and not k.startswith(f"{head}.")]
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise ValueError(f"model.finetune={file} lacks weights the model needs: {shown}")
