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
