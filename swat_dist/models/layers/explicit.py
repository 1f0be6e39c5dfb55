"""Which form SWAT's layers run in: the fast one (default) or the official op structure fvcore counts.

Fast: :class:`StructuredLinear` as one folded Linear, attention through ``F.scaled_dot_product_attention``,
a channels-last tokenizer stem, depthwise convs with their own CPU backward (issue 12). Explicit: the
Linear and the within-token conv as two ops, attention as QK^T / softmax / AV matmuls, an NCHW stem, the
plain depthwise conv: SWAT_SPEC section 7's FLOP figures count this form (fvcore sees neither a folded
weight's conv nor a fused kernel's matmuls). Both compute the same function within fp32 rounding
(tests/models/test_fold.py, test_sdpa.py, test_layers.py, test_depthwise.py); only
``complexity.count_gflops``, the golden-logit test and those tests switch to explicit.

A process-wide switch read at call time, not a module attribute: a model built once is counted and
trained without rebuilding. TorchScript compiles the fast form (``torch.jit.is_scripting()`` guards the
read); torch.fx traces whichever form is on while it traces.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

_STATE = {"explicit": False}


def explicit_ops() -> bool:
    """True inside :func:`explicit_mode`: layers run the unfolded, unfused ops."""
    return _STATE["explicit"]


@contextlib.contextmanager
def explicit_mode(enabled: bool = True) -> Iterator[None]:
    """Run SWAT layers in their explicit (fvcore-countable) form inside the block; restores the previous mode."""
    previous = _STATE["explicit"]
    _STATE["explicit"] = enabled
    try:
        yield
    finally:
        _STATE["explicit"] = previous
