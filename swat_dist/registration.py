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
            # timm is complete in sys.modules now, and our models import it freely - unless one of our model
            # modules is itself half-imported (``from swat_dist.models.layers import ...`` imports timm from
            # inside that package): the families need its names, so register when it completes
            half = _half_imported()
            if half:
                _register_when_done(half)
            else:
                register_models()

        loader.exec_module = exec_then_register  # this spec's loader only; every attribute else is timm's
        return spec


def _half_imported() -> list[ModuleSpec]:
    """The specs of the ``swat_dist.models`` modules executing now (in sys.modules, not yet complete)."""
    ours = [m for name, m in list(sys.modules.items()) if name.startswith("swat_dist.models")]
    specs = [getattr(m, "__spec__", None) for m in ours]
    return [spec for spec in specs if spec is not None and getattr(spec, "_initializing", False)]


class _RegisterWhenDone(ModuleSpec):
    """A half-imported module's own spec, re-classed: importlib sets ``spec._initializing = False`` once the
    module has executed (importlib._bootstrap._load_unlocked); when the last of them completes, and its
    import succeeded, the models register. No other behaviour of the spec changes."""

    @property
    def _initializing(self) -> bool:
        return bool(self.__dict__.get("_initializing", False))

    @_initializing.setter
    def _initializing(self, value: bool) -> None:
        self.__dict__["_initializing"] = value
        self.__class__ = ModuleSpec  # type: ignore[assignment]  # once: back to the plain spec
        if not value and self.name in sys.modules and not _half_imported():
            register_models()


def _register_when_done(specs: list[ModuleSpec]) -> None:
    for spec in specs:
        spec.__class__ = _RegisterWhenDone


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
