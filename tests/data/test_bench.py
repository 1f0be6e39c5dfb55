"""The loader benchmark runs end to end on tiny data and reports every backend beside the ceiling."""

from swat_dist.data.bench import render, run
from swat_dist.data.sources.ffcv import set_jit


def test_bench_loader_measures_every_backend(tmp_path):
    set_jit(False)  # numba would compile FFCV's pipelines for 10-30 s each
    try:
        rows = run(tmp_path, images=64, workers=0, batch=16, rounds=2, timed_epochs=1, size=48, crop=32)
    finally:
        set_jit(True)
    names = [name for name, _, _ in rows]
    assert names == [
        "decode-only ceiling (PIL, full size)",
        "folder crop",
        "wds crop",
        "ffcv crop",
        "folder recipe",
        "wds recipe",
        "ffcv recipe",
    ]
    assert all(rate > 0 and ratio > 0 for _, rate, ratio in rows)
    ratios = {name: ratio for name, _, ratio in rows}
    assert ratios["folder crop"] == ratios["folder recipe"] == 1.0  # each paired with itself, every round
    table = render(rows, 64, 0, 16, 2)
    assert table.count("\n| ") == 8 and "| folder crop |" in table and "median of 2 alternating rounds" in table
