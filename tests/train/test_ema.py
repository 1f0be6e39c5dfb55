"""The EMA update: one multi-tensor lerp, bit for bit the per-tensor fp32 lerp it replaced (issue 24 item 5)."""

from __future__ import annotations

import torch

from swat_dist.train.ema import EMA


def test_the_fused_update_is_the_per_tensor_fp32_lerp_exactly():
    gen = torch.Generator().manual_seed(0)
    params = [torch.randn(shape, generator=gen, dtype=dtype) for shape, dtype in
              (((7, 5), torch.float32), ((13,), torch.bfloat16), ((3, 4, 2), torch.float32))]  # fmt: skip
    ema = EMA(params, decay=0.9)
    want = [p.float().clone() for p in params]
    for _ in range(5):
        for p in params:
            p.add_(torch.randn(p.shape, generator=gen).to(p.dtype))
        ema.update()
        for w, p in zip(want, params):
            w.lerp_(p.float(), 1.0 - 0.9)
    assert ema.updates == 5 and all(s.dtype == torch.float32 for s in ema.shadow)
    assert all(torch.equal(s, w) for s, w in zip(ema.shadow, want))
    assert not torch.equal(ema.shadow[0], params[0])  # it really averaged
