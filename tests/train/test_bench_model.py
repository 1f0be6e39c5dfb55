"""``bench model`` measures a SWAT model and its baseline, with their step-time and FLOPs ratios."""

import pytest

from swat_dist.models.complexity import count_gflops, create_unfused
from swat_dist.train.bench import bench_pair, render


def test_bench_pair_reports_both_models_and_ratios():
    rows = bench_pair("swat_deit_micro_patch4_32", batch=4, steps=1, rounds=1, device="cpu")
    assert [r["model"] for r in rows] == ["swat_deit_micro_patch4_32", "deit_micro_patch4_32"]
    assert all(r["images_per_sec"] > 0 for r in rows)
    assert all(r["mfu"] != r["mfu"] for r in rows)  # NaN: no known CPU peak unless SWAT_DIST_PEAK_TFLOPS
    assert rows[0]["step_ratio"] == pytest.approx(rows[0]["step_s"] / rows[1]["step_s"])
    for row in rows:  # counted with attention visible to fvcore (timm's baseline fuses it otherwise)
        assert row["gflops"] == pytest.approx(count_gflops(create_unfused(str(row["model"])), 32))
    assert "| deit_micro_patch4_32 |" in render(rows, 4, "CPU", "test machine")


def test_bench_refuses_a_model_outside_the_zoo():
    with pytest.raises(ValueError, match="not a SWAT model"):
        bench_pair("resnet50", batch=2)


def test_bf16_bench_steps_fp32_master_weights_as_deepspeed_does():
    """CUDA's regime (tested on CPU): bf16 module, AdamW on fp32 masters, masters rounded back into the module."""
    import torch

    from swat_dist.train.bench import _MasterWeights

    torch.manual_seed(0)
    model = torch.nn.Linear(8, 4).to(torch.bfloat16)
    opt = _MasterWeights(model)
    before = [m.clone() for m in opt.masters]
    model(torch.randn(2, 8, dtype=torch.bfloat16)).float().sum().backward()
    opt.step()
    assert all(m.dtype == torch.float32 for m in opt.masters)
    assert all(not torch.equal(m, b) for m, b in zip(opt.masters, before))  # lr 1e-4: below bf16's resolution
    for p, m in zip(model.parameters(), opt.masters):
        assert p.dtype == torch.bfloat16 and p.grad is None
        assert torch.equal(p, m.to(torch.bfloat16))
