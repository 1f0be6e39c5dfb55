"""Re-running the command of a finished run (the same output_dir, checkpoint.resume=auto) trains nothing and
rewrites nothing: ``summary.json`` and ``metrics.jsonl`` keep their bytes, one line says the run is
finished, and the run's own summary is returned. A run stopped after its last step but before its
summary still evaluates and writes one."""

from __future__ import annotations

import json

import pytest

from .test_train_runs import overrides, spawn


@pytest.mark.slow
def test_rerunning_a_finished_run_keeps_its_outputs(tmp_path, capfd):
    out = tmp_path / "run"
    args = overrides(out, "max_steps=4", "checkpoint.every_steps=4")
    first = spawn(1, args, tmp_path)
    assert first["steps"] == 4 and first["images_per_sec"] > 0
    files = {name: (out / name).read_bytes() for name in ("summary.json", "metrics.jsonl", "config.yaml")}
    latest = (out / "checkpoints" / "latest").stat().st_mtime_ns
    capfd.readouterr()

    again = spawn(1, args, tmp_path)  # the spawned rank writes to this process's stdout: capfd sees it
    assert again == first == json.loads(files["summary.json"])
    assert {name: (out / name).read_bytes() for name in files} == files
    assert (out / "checkpoints" / "latest").stat().st_mtime_ns == latest  # no save either
    lines = [ln for ln in capfd.readouterr().out.splitlines() if "already finished" in ln]
    assert lines == [
        f"[swat-dist] run {out} already finished at step 4, nothing to do; its summary: {out / 'summary.json'}"
    ]

    # stopped after the last step's save, before the summary: the resumed run evaluates and sums up
    (out / "summary.json").unlink()
    resumed = spawn(1, args, tmp_path)
    assert resumed["steps"] == 4 and json.loads((out / "summary.json").read_text()) == resumed
    assert resumed["final"] == first["final"]  # the same checkpoint, evaluated again
    assert "already finished" not in capfd.readouterr().out
