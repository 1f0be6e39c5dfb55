"""Weights out of a run: one fp32 ``.safetensors`` state_dict that timm loads, and evaluating it.

Every checkpoint already holds ``model.safetensors`` (and ``ema.safetensors``), gathered at save time
under any ZeRO stage, so exporting needs no DeepSpeed and no GPU. Load an export with::

    timm.create_model(name, pretrained=True, num_classes=N,
                      pretrained_cfg_overlay=dict(file=OUT, num_classes=N))

(``num_classes`` in the overlay too: timm drops the classifier when it differs from the pretrained cfg's.)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..config import Config
from ..files import as_if_opened
from .checkpoint_paths import resolve, safetensors_problem


def weights_file(source: str | Path, ema: bool = False) -> Path:
    """The ``.safetensors`` file ``source`` names: itself, or the newest verified checkpoint's model/EMA
    weights. A truncated file is refused here, in one line naming it, not when a loader trips on it."""
    path = Path(source)
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise FileNotFoundError(f"no such weights file: {path}")
        file = path
    else:
        folder = resolve(Path("."), str(path), report=print)
        if folder is None:
            raise ValueError(f"{source}: no checkpoint found")
        file = folder / ("ema.safetensors" if ema else "model.safetensors")
        if not file.is_file():
            raise ValueError(f"{folder} has no {file.name}{' (was ema.enabled on?)' if ema else ''}")
    why = safetensors_problem(file)  # reads the header only: cheap whatever the file's size
    if why:
        raise ValueError(f"{file} {why}")
    return file


def export(source: str | Path, out: str | Path, ema: bool = False, overwrite: bool = True) -> Path:
    """Write the fp32 state_dict of ``source`` (run, checkpoints folder, checkpoint, or file) to ``out``.

    ``out`` is replaced whole or not at all (safetensors writes a temporary file and renames it) and is
    readable like any file (0644 under the usual umask). ``overwrite=False`` (``swat-dist export``
    without ``--overwrite``) refuses an existing ``out``; the run's own exports replace theirs.
    """
    out = Path(out)
    if out.suffix != ".safetensors":
        raise ValueError(f"{out}: the export is a .safetensors file (name it *.safetensors)")
    if out.is_dir():
        raise ValueError(f"{out}: is a folder; name the .safetensors file to write")
    if out.exists() and not overwrite:
        raise ValueError(f"{out}: exists already; --overwrite replaces it")
    state = {k: v.float().contiguous() for k, v in load_file(str(weights_file(source, ema))).items()}
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        save_file(state, str(out), metadata={"format": "pt"})
    except (OSError, SafetensorError) as err:
        raise ValueError(f"{out}: cannot write it ({_why(err)})") from None
    as_if_opened(out)  # save_file's temporary file is 0600
    return out


def _why(err: OSError | SafetensorError) -> str:
    """The OS's reason, without safetensors' wrapping (which names its temporary file, not ours)."""
    if isinstance(err, OSError):
        return f"{err.strerror}: {err.filename}" if err.strerror and err.filename else str(err)
    found = re.search(r"I/O error: (.+?) \(os error \d+\)", str(err))
    return found.group(1) if found else str(err)


def evaluate_checkpoint(cfg: Config, checkpoint: str, ema: bool = False) -> dict[str, Any] | None:
    """Evaluate ``checkpoint``'s weights on ``cfg``'s val split (one process, or all ranks of a launch).

    Returns the metrics on rank 0 and None elsewhere.
    """
    from ..dist import read_env
    from ..tasks import build_task
    from .engine import destroy, device_for, init_distributed
    from .evaluate import evaluate
    from .spec import spec_for

    env = read_env()
    device = device_for(env)
    file = weights_file(checkpoint, ema)
    if env.distributed:
        init_distributed(env, device)
    try:
        spec = spec_for(cfg)
        model = spec.build_model(cfg, env)
        model.load_state_dict(load_file(str(file)))
        model.to(device).eval()
        loaders = spec.build_loaders(cfg, model, env)
        with torch.no_grad():
            result = evaluate(model, loaders.val, build_task(cfg, loaders.augment), device)
    finally:
        destroy()
    return dict(result, weights=str(file)) if env.is_main else None
