"""Our models enter timm's registry when timm is imported, so ``import swat_dist`` itself stays light.

``import swat_dist`` must let ``timm.create_model('swat_...')`` work, yet the CLI, the config and
``submit`` run on login nodes and must not pay for torch + timm (~3 s). So: if timm is already imported,
the models are registered at once; otherwise a one-shot import hook registers them right after timm's
own module has executed, whoever imports it (the user's ``import timm``, or our model builders). The
hook is removed from ``sys.meta_path`` the first time it sees timm; it adds nothing to any other import.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any


def register_models() -> None:
    """Import the model families (importing each registers its swat_* models and our baselines)."""
    from .models import FAMILIES  # the zoo table only: no torch

    for family in FAMILIES:
        importlib.import_module(f"swat_dist.models.{family}")


class _AfterTimm:
    """A meta path finder (no importlib.abc base: ~10 ms to import). It finds nothing itself: it wraps
    the loader that finds ``timm`` so that registration follows timm's own execution."""

    def find_spec(self, name: str, path: Sequence[str] | None, target: ModuleType | None = None) -> ModuleSpec | None:
        if name != "timm":
            return None
        uninstall()  # before find_spec below, which would otherwise come back here
        spec = importlib.util.find_spec("timm")
        if spec is None or spec.loader is None:
            return None  # no timm here: the import fails as it would without us
        loader: Any = spec.loader
        run = loader.exec_module

        def exec_then_register(module: ModuleType) -> None:
            run(module)
            register_models()  # timm is complete in sys.modules now; our models import it freely

        loader.exec_module = exec_then_register  # this spec's loader only; every attribute else is timm's
        return spec


_HOOK = _AfterTimm()


def install() -> None:
    """Register now if timm is loaded, else when it is (see the module docstring)."""
    if "timm" in sys.modules:
        register_models()
    elif _HOOK not in sys.meta_path:
        sys.meta_path.insert(0, _HOOK)


def uninstall() -> None:
    if _HOOK in sys.meta_path:
        sys.meta_path.remove(_HOOK)
