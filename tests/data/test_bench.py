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


def test_bench_loader_augment_on_device_prints_both_workers_and_the_projection(tmp_path, capsys):
    from swat_dist.cli import main

    args = ["bench", "loader", "--augment-on", "device", "--images", "32", "--batch", "8", "--rounds", "1",
            "--epochs", "1", "--size", "240", "--root", str(tmp_path)]  # fmt: skip
    set_jit(False)  # numba would compile both FFCV pipelines for 10-30 s each
    try:
        assert main(args) == 0
    finally:
        set_jit(True)
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ")]
    assert rows[0] == "| per core | wds | folder | ffcv | ffcv, 1 worker |"
    names = [r.split(" | ")[0] for r in rows[1:]]
    assert names == [
        "| loader worker: read + decode + crop + flip + RandAugment (images/CPU-s)",
        "| device-mode worker: read + plan; ffcv: + decode + crop + flip (images/CPU-s)",
        "| worker cost per image, loader / device",
        "| cores per GPU for 1,600 images/s, loader worker",
        "| cores per GPU for 1,600 images/s, device worker",
        "| cores per GPU for 8,000 images/s, loader worker",
        "| cores per GPU for 8,000 images/s, device worker",
    ]

    def cells(row: str) -> list[float]:
        return [float(c.rstrip("x").replace(",", "")) for c in row.strip("| ").split(" | ")[1:]]

    assert all(v > 0 for r in (rows[1], rows[2], rows[3]) for v in cells(r))
    # the projection is the feed over the rate: 1,600 / device images per CPU-second, per backend
    device, cores = cells(rows[2]), cells(rows[5])
    # (printed rounded: the rate to whole images, up to 0.5 / rate of it; the cores to 0.01, up to 0.005 / cores)
    assert len(cores) == 4
    assert all(abs(c * d / 1600 - 1) <= 0.6 / d + 0.006 / c for c, d in zip(cores, device, strict=True))
    assert "Device side on this CPU" in out and "batch 8 at 224 px" in out and "ffcv " in out.split("Device side")[1]


def test_bench_loader_augment_on_device_refuses_a_size_below_the_crop(capsys):
    from swat_dist.cli import main

    assert main(["bench", "loader", "--augment-on", "device", "--size", "64"]) == 2
    assert "--size >= 224" in capsys.readouterr().err
