"""Weights out of a run: one fp32 ``.safetensors`` state_dict that timm loads, a checked ONNX model for
serving (:func:`export_onnx`, the ``export`` extra), and evaluating a checkpoint.

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
from .checkpoint_paths import weights_file


def export(source: str | Path, out: str | Path, ema: bool = False, overwrite: bool = True) -> Path:
    """Write the fp32 state_dict of ``source`` (run, checkpoints folder, checkpoint, or file) to ``out``.

    ``out`` is replaced whole or not at all (safetensors writes a temporary file and renames it) and is
    readable like any file (0644 under the usual umask). ``overwrite=False`` (``swat-dist export``
    without ``--overwrite``) refuses an existing ``out``; the run's own exports replace theirs.
    """
    out = _check_out(out, ".safetensors", "the export", overwrite)
    state = {k: v.float().contiguous() for k, v in load_file(str(weights_file(source, ema))).items()}
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        save_file(state, str(out), metadata={"format": "pt"})
    except (OSError, SafetensorError) as err:
        raise ValueError(f"{out}: cannot write it ({_why(err)})") from None
    as_if_opened(out)  # save_file's temporary file is 0600
    return out


ONNX_TOLERANCE = 1e-4  # max |onnxruntime - PyTorch| allowed, absolute and relative (allclose), on fp32 logits


def export_onnx(source: str | Path, out: str | Path, ema: bool = False, overwrite: bool = True) -> Path:
    """Export ``source``'s model (the run's config.yaml + its weights) to ONNX with a dynamic batch axis, checked.

    torch's ONNX exporter writes a temporary file next to ``out``; onnxruntime (CPU) runs it on a fixed input of
    another batch size than the one exported with, and only if it gives PyTorch's output within
    :data:`ONNX_TOLERANCE` does the file become ``out``; otherwise one line says what differed and nothing is left.
    """
    out = _check_out(out, ".onnx", "an ONNX export", overwrite)
    file = weights_file(source, ema)
    model, size = _model_of(file)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        _to_onnx(model, size, tmp)
        try:
            check_onnx(tmp, model, torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(0)))
        except ValueError as err:
            raise ValueError(f"{out}: not written: {err}") from None
        tmp.replace(out)
    except OSError as err:
        raise ValueError(f"{out}: cannot write it ({_why(err)})") from None
    finally:
        tmp.unlink(missing_ok=True)
    as_if_opened(out)
    return out


def _model_of(file: Path) -> tuple[torch.nn.Module, int]:
    """The eval-mode model ``file``'s weights belong to, built from the run's config.yaml, and its input side."""
    config = next((d / "config.yaml" for d in file.parents[:4] if (d / "config.yaml").is_file()), None)
    if config is None:
        raise ValueError(f"{file}: no run config.yaml above it, so the model is unknown; export from the run folder")
    import timm

    from ..config import load_config
    from ..dist import read_env
    from .spec import spec_for

    # The run's weights replace any a build would load, so the build needs none of its files.
    cfg = load_config([str(config)], ["model.finetune=null", "model.backbone_weights=null"])
    model = spec_for(cfg).build_model(cfg, read_env({}))
    try:
        model.load_state_dict(load_file(str(file)))
    except RuntimeError as err:  # torch's report is many lines; the first names the problem
        raise ValueError(f"{file}: does not fit {cfg.model.name} of {config}: {str(err).splitlines()[0]}") from None
    size = cfg.model.img_size or int((timm.get_pretrained_cfg_value(cfg.model.name, "input_size") or (3, 224, 224))[-1])
    return model.eval(), size


def _to_onnx(model: torch.nn.Module, size: int, path: Path) -> None:
    # Exported at batch 2 (torch.export specialises sizes 0 and 1), the batch axis symbolic: any batch runs.
    x = torch.randn(2, 3, size, size)
    batch = torch.export.Dim("batch")
    try:
        with torch.no_grad():
            torch.onnx.export(model, (x,), str(path), dynamo=True, dynamic_shapes=({0: batch},),
                              input_names=["image"], output_names=["output"], external_data=False)  # fmt: skip
    except Exception as err:  # the exporter's errors are pages long; the first line names the op or the cause
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"torch's ONNX exporter failed on {type(model).__name__}: {first}") from None


def check_onnx(path: Path, model: torch.nn.Module, x: torch.Tensor) -> None:
    """Run ``path`` in onnxruntime (CPU) on ``x``; raise one line unless it matches ``model(x)`` to ONNX_TOLERANCE."""
    import onnx  # the only importers of onnx / onnxruntime: the `export` extra, loaded when an export runs
    import onnxruntime

    onnx.checker.check_model(str(path))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        want = model(x).float()
    got_t = torch.from_numpy(got)
    if got_t.shape != want.shape:
        raise ValueError(f"onnxruntime's output has shape {tuple(got_t.shape)}, PyTorch's {tuple(want.shape)}")
    if not torch.allclose(got_t, want, rtol=ONNX_TOLERANCE, atol=ONNX_TOLERANCE):
        diff = (got_t - want).abs().max().item()
        raise ValueError(
            f"onnxruntime's output differs from PyTorch's by up to {diff:.3g} (tolerance {ONNX_TOLERANCE:g}) "
            f"on a fixed {tuple(x.shape)} input"
        )


def _check_out(out: str | Path, suffix: str, what: str, overwrite: bool) -> Path:
    """``out`` as a Path, or one line saying why an export may not be written there."""
    out = Path(out)
    if out.suffix != suffix:
        raise ValueError(f"{out}: {what} is a {suffix} file (name it *{suffix})")
    if out.is_dir():
        raise ValueError(f"{out}: is a folder; name the {suffix} file to write")
    if out.exists() and not overwrite:
        raise ValueError(f"{out}: exists already; --overwrite replaces it")
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
