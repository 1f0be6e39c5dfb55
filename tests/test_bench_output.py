"""``swat-dist bench loader|model`` print their table; they append it to docs/benchmarks.md only when asked
(``--record``: this clone's file; ``--out FILE``), and a destination that cannot be written is refused
before the benchmark runs, not after it. The measurements are stubbed: only where the table goes is tested."""

from __future__ import annotations

from pathlib import Path

import pytest

from swat_dist import bench_cli
from swat_dist.cli import main

LOADER = ["bench", "loader", "--images", "128", "--batch", "64", "--workers", "0"]
MODEL = ["bench", "model", "swat_deit_micro_patch4_32", "--batch", "2", "--device", "cpu"]


@pytest.fixture
def stubbed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """Fake measurements (calls recorded); the cwd is an empty folder, not a clone."""
    import swat_dist.data.bench as data_bench
    import swat_dist.train.bench as train_bench

    calls: list[str] = []

    def loader_run(*args: object, **kwargs: object) -> list[tuple[str, float, float]]:
        calls.append("loader")
        return [("folder crop", 100.0, 1.0)]

    def model_pair(*args: object, **kwargs: object) -> list[object]:
        calls.append("model")
        return []

    monkeypatch.setattr(data_bench, "run", loader_run)
    monkeypatch.setattr(train_bench, "bench_pair", model_pair)
    monkeypatch.setattr(train_bench, "render", lambda *a, **k: "### Model throughput\n")
    monkeypatch.chdir(tmp_path)
    return calls


@pytest.mark.parametrize("argv", [LOADER, MODEL])
def test_by_default_the_table_is_printed_and_nothing_is_written(stubbed, tmp_path, capsys, argv):
    assert main(argv) == 0
    assert "throughput" in capsys.readouterr().out.lower()
    assert list(tmp_path.iterdir()) == []  # was: docs/benchmarks.md of the cwd, or an error after the run


@pytest.mark.parametrize("argv", [LOADER, MODEL])
def test_an_out_in_a_missing_folder_is_refused_before_the_benchmark(stubbed, tmp_path, capsys, argv):
    out = tmp_path / "docs" / "benchmarks.md"
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"error: --out: no folder {out.parent} to write benchmarks.md in") and "\n" not in err
    assert stubbed == []  # nothing was measured


def test_out_and_record_append_where_asked(stubbed, tmp_path, monkeypatch, capsys):
    out = tmp_path / "mine.md"
    assert main([*LOADER, "--out", str(out)]) == 0
    assert main([*MODEL, "--out", str(out)]) == 0
    text = out.read_text()
    assert "| folder crop | 100 | 1.00x |" in text and "### Model throughput" in text
    record = tmp_path / "clone" / "docs" / "benchmarks.md"
    monkeypatch.setattr(bench_cli, "RECORD", record)
    assert main([*LOADER, "--record"]) == 2  # installed, not a clone: said before measuring
    assert f"--record: no {record} (not a clone of swat_dist?); use --out FILE" in capsys.readouterr().err
    record.parent.mkdir(parents=True)
    record.write_text("# Benchmarks\n")
    assert main([*LOADER, "--record"]) == 0
    assert record.read_text().startswith("# Benchmarks\n\n### Loader throughput")
    assert stubbed == ["loader", "model", "loader"]


def test_the_record_file_is_the_clones():
    clone = Path(__file__).resolve().parents[1]
    assert clone / "docs" / "benchmarks.md" == bench_cli.RECORD
    assert bench_cli.RECORD.is_file()
