"""Create a model by name, with a useful error for a name timm does not know."""

from __future__ import annotations

import difflib
from typing import Any

import timm
from torch import nn

from .zoo import ZOO


def closest_models(name: str, n: int = 3) -> list[str]:
    """Registered model names closest to ``name`` (ours first, then all of timm's)."""
    ours = [n for e in ZOO for n in (e.name, e.baseline)]  # every SWAT model and the baseline it is compared with
    found = difflib.get_close_matches(name, ours, n=n, cutoff=0.5)
    return found or difflib.get_close_matches(name, timm.list_models(), n=n, cutoff=0.5)


def check_model_name(name: str) -> None:
    """Raise ``ValueError`` naming the closest registered models when ``name`` is unknown."""
    if not timm.is_model(name):
        close = closest_models(name)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see `swat-dist models`"
        raise ValueError(f"unknown model {name!r}{hint}")


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """``timm.create_model`` after :func:`check_model_name`."""
    check_model_name(name)
    return timm.create_model(name, **kwargs)
