"""Reading a checkpoint's ``.pt`` files without running code from them (issue 27).

A checkpoint is data someone else may have written: a shared run folder, a copied or downloaded run. Its
``manifest.json`` proves a file is whole, not who wrote it (anyone can rewrite it). ``torch.load`` with
``weights_only=False`` is pickle, which calls whatever a crafted file names. So every ``.pt`` file of
a resume (ours, and DeepSpeed's, which it loads with ``weights_only=False`` itself) is read by torch's
weights-only unpickler: tensors, containers and numbers, and beyond those only the globals listed here.

- :data:`DEEPSPEED_GLOBALS`: what DeepSpeed 0.19.8's ZeRO 1-3 optimizer files hold besides tensors
  (measured for ZeRO 0-3 x fp32/bf16 and its universal copies: a loss scaler, a stage enum, fragment
  addresses). Plain data: the unpickler sets their ``__dict__`` and calls no method of theirs.
  :mod:`.engine` resolves the names (it is the deepspeed importer) and forces ``weights_only`` on
  DeepSpeed's own ``torch.load`` calls with :func:`weights_only` (torch's TORCH_FORCE_WEIGHTS_ONLY_LOAD).
- numpy's RNG state in our ``rankNNNNN.pt`` (an ndarray of uint32): numpy's own reconstructors are not
  allow-listed (torch declines them by default too: numpy's ``__setstate__`` code is not under its
  control); three stand-ins under their names accept exactly a uint32 vector and nothing else.

:func:`refusal` checks a folder statically before anything loads (torch's scan of each file's GLOBAL
opcodes), so a crafted file is refused in one line naming it; the forced weights-only load stays the
guard for anything the scan cannot see.
"""

from __future__ import annotations

import contextlib
import os
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

DEEPSPEED_GLOBALS = (
    "deepspeed.runtime.fp16.loss_scaler.LossScaler",
    "deepspeed.runtime.fp16.loss_scaler.DynamicLossScaler",  # fp16 (CUDA only): read from the source, not measured
    "deepspeed.runtime.zero.config.ZeroStageEnum",
    "deepspeed.utils.tensor_fragment.fragment_address",
)
_FORCE = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"  # torch.load then ignores an explicit weights_only=False


class RefusedFile(ValueError):
    """A checkpoint file that names code to run (or is not a torch file): nothing of it was executed."""


class _UInt32:
    """Stand-in for ``numpy.dtype``: only ``u4`` (the MT19937 key's dtype), either byte order."""

    def __init__(self, spec: object, align: object = False, copy: object = True) -> None:
        if spec != "u4":
            raise pickle.UnpicklingError(f"numpy dtype {spec!r} (only the uint32 of numpy's RNG state is read)")
        self.order = "<"

    def __setstate__(self, state: object) -> None:
        order = state[1] if isinstance(state, tuple) and len(state) > 1 else None
        if order not in ("<", ">", "|", "="):
            raise pickle.UnpicklingError("a numpy dtype with an unreadable state")
        self.order = "<" if order in ("|", "=") else order


class _UInt32Array:
    """Stand-in for ``numpy.ndarray``: a 1-d uint32 array from its raw bytes (``.array``)."""

    array: np.ndarray

    def __setstate__(self, state: object) -> None:
        parts: tuple[Any, ...] = state if isinstance(state, tuple) and len(state) == 5 else (None,) * 5
        shape, dtype, raw = parts[1], parts[2], parts[4]
        n = shape[0] if isinstance(shape, tuple) and len(shape) == 1 and isinstance(shape[0], int) else -1
        if not (isinstance(dtype, _UInt32) and isinstance(raw, bytes) and len(raw) == 4 * n):
            raise pickle.UnpicklingError("a numpy array other than a 1-d uint32 vector")
        self.array = np.frombuffer(raw, dtype=np.dtype(dtype.order + "u4")).astype(np.uint32)


def _reconstruct(cls: object, shape: object, typecode: object) -> _UInt32Array:
    if cls is not _UInt32Array:
        raise pickle.UnpicklingError("numpy's _reconstruct of a type other than ndarray")
    return _UInt32Array()


NUMPY_STANDINS: list[Any] = [
    (_reconstruct, "numpy._core.multiarray._reconstruct"),
    (_reconstruct, "numpy.core.multiarray._reconstruct"),  # written by numpy 1.x
    (_UInt32Array, "numpy.ndarray"),
    (_UInt32, "numpy.dtype"),
]
_NUMPY_NAMES = {name for _, name in NUMPY_STANDINS}


def _unwrap(obj: Any) -> Any:
    if isinstance(obj, _UInt32Array):
        return obj.array
    if isinstance(obj, dict):
        return {k: _unwrap(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_unwrap(v) for v in obj)
    return obj


def what_was_refused(err: BaseException) -> str:
    """torch's weights-only message runs to many lines around the unpickler's own; that one says what."""
    lines = [x.strip() for x in str(err).splitlines() if x.strip()]
    said = next((x for x in lines if "GLOBAL" in x), None)
    if said is None:  # the unpickler's (or a stand-in's) message follows "WeightsUnpickler error:"
        after = [i + 1 for i, x in enumerate(lines) if x.endswith("WeightsUnpickler error:")]
        said = lines[after[0]] if after and after[0] < len(lines) else (lines or [type(err).__name__])[0]
    return said.split(" Please use")[0].split("WeightsUnpickler error: ")[-1]


def load_state(path: Path) -> Any:
    """One of our own ``rankNNNNN.pt`` files (loop, loader, RNG and EMA state), weights-only; numpy's
    RNG key comes back as a numpy array. A crafted file is a :class:`RefusedFile` naming it."""
    try:
        with torch.serialization.safe_globals(NUMPY_STANDINS):
            return _unwrap(torch.load(path, map_location="cpu", weights_only=True))
    except pickle.UnpicklingError as err:
        raise RefusedFile(f"{path}: refused to load ({what_was_refused(err)}): nothing of it was run") from None


@contextlib.contextmanager
def weights_only(allowed: list[Any]) -> Iterator[None]:
    """Every ``torch.load`` inside the block is weights-only (even one that passes ``weights_only=False``:
    torch's TORCH_FORCE_WEIGHTS_ONLY_LOAD, read at each call), with ``allowed`` added to its globals.
    The variable is process-wide for the block's length: loads in other threads meanwhile are forced too."""
    before = os.environ.get(_FORCE)
    os.environ[_FORCE] = "1"
    try:
        with torch.serialization.safe_globals(allowed):
            yield
    finally:
        if before is None:
            os.environ.pop(_FORCE, None)
        else:
            os.environ[_FORCE] = before


def _unsafe_globals(path: Path) -> list[str]:
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception as err:  # not a zip, an opcode the scan does not know, ...: nothing is loaded from it
        return [f"unreadable ({type(err).__name__}: {(str(err).splitlines() or [''])[0]})"]
    return sorted(set(names) - set(DEEPSPEED_GLOBALS) - _NUMPY_NAMES)


def refusal(folder: Path) -> str | None:
    """Why a ``.pt`` file under ``folder`` will not be loaded (it names a global outside the allow-list),
    as one line naming the file; None when every one is data only. Cost: reads each file's pickle record
    (not its tensors): milliseconds per file."""
    for path in sorted(folder.rglob("*.pt")):
        names = _unsafe_globals(path)
        if names:
            return (
                f"{path}: refused to load: it names {', '.join(names)}, not data a checkpoint holds (a file "
                "written or edited by someone else?); nothing of it was run"
            )
    return None
