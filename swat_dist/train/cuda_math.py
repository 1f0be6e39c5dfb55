"""CUDA's math settings for training and evaluation: TF32 for fp32 work, cuDNN's autotuner for fixed shapes.

TF32: fp32 matmuls and convolutions on tensor cores with a 10-bit mantissa (torch's default keeps matmuls
in full fp32, ~8x slower on A100/H100). It changes fp32 runs and fp32 evaluation only; bf16 runs do not
use fp32 kernels for their model. Deterministic: the same inputs give the same bits.

``cudnn.benchmark`` (``engine.cudnn_benchmark``): cuDNN times its algorithms on the first batch of each
new shape and keeps the fastest; training batches have one shape, evaluation's last batch one more. Cost:
a few hundred ms at the first step of each shape. The fastest algorithm can differ between two processes,
so a run resumed on CUDA may differ from an uninterrupted one in the last bits; set it false when that
matters more than speed (CPU runs are unaffected).
"""

from __future__ import annotations

import torch


def apply(device: torch.device, benchmark: bool) -> None:
    """Set both for this process when ``device`` is CUDA (no effect on CPU)."""
    if device.type != "cuda":
        return
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = benchmark
