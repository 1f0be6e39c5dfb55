"""Golden outputs: what every SWAT model and our own baselines compute, pinned so refactors cannot drift.

Weights do not come from the models' init (which depends on the order modules consume the RNG) but from
each state-dict entry's own name, so a refactor that builds modules in another order but keeps the
state-dict layout (issue 16's hard constraint) still gets the same weights. The file holds a few numbers
per model (logits on a fixed input and their sum), so it stays small and diffable.

Regenerate only when a model is *meant* to change: ``python -m tests.models.golden``.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import timm
import torch

from swat_dist.models import ZOO

FILE = Path(__file__).parent / "data" / "golden_outputs.json"
# Every SWAT model, and the baselines we define ourselves (timm's own are timm's to pin).
OURS = [e.name for e in ZOO] + [e.baseline for e in ZOO if e.baseline == "mixer_ti16_224" or "_micro_" in e.baseline]
NUM_CLASSES = 10  # a small head: fewer numbers to store, every logit stored


def _fill(name: str, t: torch.Tensor) -> None:
    """Deterministic weights keyed by the entry's name, scaled so activations stay O(1) through depth."""
    g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    r = torch.randn(t.shape, generator=g, dtype=torch.float32)
    if t.dim() >= 2:
        r = r * (t[0].numel() ** -0.5)  # fan-in scaling (Linear, conv, position tables)
    elif name.endswith(("weight", "alpha", "ls1", "ls2", "gamma")):
        r = 1.0 + 0.1 * r  # norm / Affine / LayerScale scales near one
    else:
        r = 0.1 * r  # biases and shifts
    t.copy_(r.to(t.dtype))


def model_with_golden_weights(name: str) -> torch.nn.Module:
    model = timm.create_model(name, num_classes=NUM_CLASSES).eval()
    with torch.no_grad():
        for key, t in model.state_dict().items():
            if t.is_floating_point():
                _fill(key, t)
    return model


def golden_input(model: torch.nn.Module) -> torch.Tensor:
    size = model.pretrained_cfg["input_size"]
    return torch.randn(2, *size, generator=torch.Generator().manual_seed(0))


def golden_output(name: str) -> torch.Tensor:
    """(2, NUM_CLASSES) fp32 logits of ``name`` with the golden weights on the golden input."""
    model = model_with_golden_weights(name)
    with torch.no_grad():
        return model(golden_input(model)).float()


def main() -> None:
    torch.set_num_threads(1)  # as tests/conftest.py runs them: the thread count changes fp32 summation order
    FILE.parent.mkdir(parents=True, exist_ok=True)
    out = {name: golden_output(name).tolist() for name in OURS}
    FILE.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {FILE} ({len(out)} models)")


if __name__ == "__main__":
    main()
