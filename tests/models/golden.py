"""Golden outputs: what every SWAT model and our own baselines compute, pinned so refactors cannot drift.

Weights do not come from the models' init (which depends on the order modules consume the RNG) but from
each state-dict entry's own name, so a refactor that builds modules in another order but keeps the
state-dict layout (issue 16's hard constraint) still gets the same weights. The file holds a few numbers
per model (logits on a fixed input), so it stays small and diffable.

The logits are computed and stored in **float64** (issue 29). fp32 results of the same code differ in
their last bits from one CPU to another (MKL/oneDNN/ATen pick kernels and summation orders per
instruction set and thread count: an Intel Xeon with AVX-512/AMX differed from an AMD EPYC by up to
8.6e-7), so fp32 bit-equality pins the machine, not the function. In float64 every kernel's rounding
stays near 1e-15 on these O(1) logits, so a tolerance far below any real change holds on every CPU
(tests/models/test_golden.py states it). The weights and the input are drawn so that their bits, too,
are the same on every CPU (``_unit``).

Regenerate only when a model is *meant* to change: ``python -m tests.models.golden``;
``python -m tests.models.golden --spread`` prints how far this machine's kernels are from the stored ones.
"""

from __future__ import annotations

import json
import os
import sys
import zlib
from pathlib import Path

import timm
import torch

from swat_dist.models import ZOO
from swat_dist.models.layers.explicit import explicit_mode

FILE = Path(__file__).parent / "data" / "golden_outputs.json"
# Every SWAT model, and the baselines we define ourselves (timm's own are timm's to pin).
OURS = [e.name for e in ZOO] + [e.baseline for e in ZOO if e.baseline == "mixer_ti16_224" or "_micro_" in e.baseline]
NUM_CLASSES = 10  # a small head: fewer numbers to store, every logit stored


def _unit(shape: torch.Size | tuple[int, ...], seed: int) -> torch.Tensor:
    """float64 draws of mean 0 and variance 1 that are the same bits on every CPU and kernel choice.

    Uniform on [-sqrt(3), sqrt(3)): torch.rand turns generator integers into floats exactly, and the map is
    two separately rounded IEEE operations. torch.randn is not portable: its float32 kernel is vectorised
    per instruction set (ATen's AVX2 Box-Muller gives other last bits than its portable one), so weights
    drawn with it differed between kernel choices before any model ran.
    """
    u = torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (u * 2 - 1) * 3**0.5


def _fill(name: str, t: torch.Tensor) -> None:
    """Deterministic weights keyed by the entry's name, scaled so activations stay O(1) through depth."""
    r = _unit(t.shape, zlib.crc32(name.encode()))
    if t.dim() >= 2:
        r = r * (t[0].numel() ** -0.5)  # fan-in scaling (Linear, conv, position tables)
    elif name.endswith(("weight", "alpha", "ls1", "ls2", "gamma")):
        r = 1.0 + 0.1 * r  # norm / Affine / LayerScale scales near one
    else:
        r = 0.1 * r  # biases and shifts
    t.copy_(r.to(t.dtype))


def model_with_golden_weights(name: str, dtype: torch.dtype = torch.float64) -> torch.nn.Module:
    """``name`` with the golden weights (drawn in float64, rounded once to ``dtype``), in eval mode."""
    model = timm.create_model(name, num_classes=NUM_CLASSES).eval().to(dtype)
    with torch.no_grad():
        for key, t in model.state_dict().items():
            if t.is_floating_point():
                _fill(key, t)
    return model


def golden_input(model: torch.nn.Module, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    size = model.pretrained_cfg["input_size"]
    return _unit((2, *size), 0).to(dtype)


def output(model: torch.nn.Module, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """(2, NUM_CLASSES) float64 logits of ``model`` (already in ``dtype``) on the golden input."""
    with torch.no_grad():
        return model(golden_input(model, dtype)).double()


def golden_output(name: str, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """(2, NUM_CLASSES) logits of ``name`` with the golden weights, computed in ``dtype``, as float64."""
    return output(model_with_golden_weights(name, dtype), dtype)


def spread() -> str:
    """One line: how far this process's kernels are from the stored goldens, float64 and float32, all models."""
    stored = json.loads(FILE.read_text())
    far = {torch.float64: 0.0, torch.float32: 0.0}
    for name in OURS:
        for dtype in far:
            diff = (golden_output(name, dtype) - torch.tensor(stored[name], dtype=torch.float64)).abs().max()
            far[dtype] = max(far[dtype], diff.item())
    cap, threads = torch.backends.cpu.get_cpu_capability(), torch.get_num_threads()
    f64, f32 = far[torch.float64], far[torch.float32]
    return f"{cap} {threads} thread(s): max |logit - golden| float64 {f64:.1e}, float32 {f32:.1e}"


def main() -> None:
    if sys.argv[1:] == ["--spread"]:  # launch/kernel_matrix.sh: the measured spread under one kernel choice
        torch.set_num_threads(int(os.environ.get("SWAT_TEST_THREADS", "1")))
        print(spread())
        return
    torch.set_num_threads(1)  # any count gives the same goldens to ~1e-15; one is how the tests run
    FILE.parent.mkdir(parents=True, exist_ok=True)
    with explicit_mode():  # the official op structure; the fast form agrees to ~2e-15 in float64
        out = {name: golden_output(name).tolist() for name in OURS}  # json keeps a float64 exactly (repr)
    FILE.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {FILE} ({len(out)} models, float64)")


if __name__ == "__main__":
    main()
