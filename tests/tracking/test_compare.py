"""``swat-dist compare``: the table holds each run's numbers, the plots are written, errors are one line."""

from __future__ import annotations

import csv
import json
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from matplotlib.colors import to_rgba

from swat_dist.cli import main
from swat_dist.tracking.compare import collect, figures
from swat_dist.tracking.mlflow_store import MlflowStore, find_runs
from swat_dist.tracking.sender import Item

RUNS = {  # model: (params M, GFLOPs, val top-1 per eval)
    "swat_deit_micro_patch4_32": (0.3, 0.05, [40.0, 61.5, 60.0]),
    "deit_micro_patch4_32": (0.3, 0.04, [35.0, 55.0, 57.25]),
    "swat_mixer_micro": (0.5, 0.08, [50.0, 66.0, 70.0]),
}


def _log(uri: str, model: str, params_m: float, gflops: float, top1: list[float], *, name: str | None = None,
         ema: list[float] | None = None, summary: dict[str, Any] | None = None,
         params: dict[str, str] | None = None) -> str:  # fmt: skip
    """One finished run as the tracker logs it; ``summary``: its ``summary.json`` artifact (uploaded at close)."""
    db = Path(uri.removeprefix("sqlite:///"))
    store = MlflowStore(uri, "cmp", None, name or model, artifact_root=db.parent / "mlartifacts")
    rid = store.open()
    variant = "swat" if model.startswith("swat_") else "baseline"
    store.send([Item("tags", {"swat.model": model, "swat.variant": variant})])
    store.send([Item("params", {"model_params_m": str(params_m), "model_gflops": str(gflops), **(params or {})})])
    loss = [("train/loss", 2.0 / s, s, 1000 + s) for s in range(1, 31)]
    speed = [("throughput/images_per_sec", 100.0 + s, s, 1000 + s) for s in range(1, 31)]
    speed += [("time/data_wait_fraction_max", s / 100, s, 1000 + s) for s in range(1, 31)]
    val = [("val/top1", v, 10 * (i + 1), 2000 + i) for i, v in enumerate(top1)]
    val += [("val_ema/top1", v, 10 * (i + 1), 2000 + i) for i, v in enumerate(ema or [])]
    store.send([Item("metrics", loss + speed + val, points=90 + len(val))])
    if summary is not None:
        file = db.parent / f"summary-{rid}" / "summary.json"
        file.parent.mkdir()
        file.write_text(json.dumps(summary))
        store.send([Item("artifacts", [(file, None)])])
    store.send([Item("end", "FINISHED")])
    return rid


def test_compare_writes_the_table_and_plots(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ids = {m: _log(uri, m, *v) for m, v in RUNS.items()}
    out = tmp_path / "cmp"
    assert main(["compare", "--uri", uri, "--experiment", "cmp", "--out", str(out)]) == 0
    rows = {r["model"]: r for r in csv.DictReader((out / "compare.csv").open())}
    assert set(rows) == set(RUNS)
    for model, (params_m, gflops, top1) in RUNS.items():
        r = rows[model]
        assert r["run_id"] == ids[model] and float(r["best_top1"]) == max(top1)
        assert float(r["gflops"]) == gflops and float(r["params_m"]) == params_m
        assert float(r["images_per_sec"]) == 115.5 and r["steps"] == "30" and r["status"] == "FINISHED"
        assert float(r["data_wait"]) == pytest.approx(0.155)  # the median of the slowest rank's share
    assert rows["deit_micro_patch4_32"]["variant"] == "baseline"
    table = (out / "compare.md").read_text()
    assert table.startswith("| run_id | label | name | model | variant |") and table.count("\n") == 2 + len(RUNS)
    for png in ("train_loss.png", "val_top1.png", "top1_vs_gflops.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # --runs picks runs by id
    assert main(["compare", "--uri", uri, "--runs", ids["swat_mixer_micro"], "--out", str(tmp_path / "one")]) == 0
    assert [r["model"] for r in csv.DictReader((tmp_path / "one" / "compare.csv").open())] == ["swat_mixer_micro"]


def test_compare_errors_are_one_line(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["compare", "--uri", uri, "--out", str(tmp_path / "x")]) == 2
    assert (
        capsys.readouterr().err == f"swat-dist compare: error: no tracking database at {tmp_path / 'mlflow.db'} "
        "(train with tracking on first, or pass --uri)\n"
    )
    _log(uri, "deit_micro_patch4_32", 0.3, 0.04, [1.0])
    capsys.readouterr()
    assert main(["compare", "--uri", uri, "--experiment", "nope", "--out", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err == f"swat-dist compare: error: no experiment 'nope' in {uri}\n"
    assert main(["compare", "--uri", uri, "--runs", "0123abc", "--out", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err.strip().startswith("swat-dist compare: error:")
    assert main(["tracking-server", "--backend-store-uri", "s3://bucket/x"]) == 2
    assert "expected sqlite:///FILE" in capsys.readouterr().err


def test_tracking_server_command_is_loopback_with_proxied_artifacts(tmp_path):
    from swat_dist.tracking.commands import server_command

    cmd = server_command(5123, "127.0.0.1", f"sqlite:///{tmp_path / 'db' / 'm.db'}", str(tmp_path / "art"), 1)
    assert cmd[0].endswith("mlflow") and cmd[1] == "server"
    flags = dict(zip(cmd[2::2], cmd[3::2]))
    assert flags["--host"] == "127.0.0.1" and flags["--port"] == "5123" and flags["--workers"] == "1"
    assert "--serve-artifacts" in cmd and (tmp_path / "db").is_dir()  # the sqlite file's folder is made


def test_compare_shows_miou_for_segmentation_runs(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    runs = {"swat_deit_micro_patch4_32": [20.0, 41.5, 39.0], "deit_micro_patch4_32": [18.0, 35.25]}
    for model, miou in runs.items():
        store = MlflowStore(uri, "seg", None, model)
        store.open()
        variant = "swat" if model.startswith("swat_") else "baseline"
        store.send([Item("tags", {"swat.model": model, "swat.variant": variant})])
        store.send([Item("params", {"model_params_m": "0.4", "model_gflops": "0.2"})])
        points = [("train/loss", 1.0 / s, s, 1000 + s) for s in range(1, 11)]
        points += [("val/mIoU", v, 5 * (i + 1), 2000 + i) for i, v in enumerate(miou)]
        points += [("val_ema/mIoU", v + 1, 5 * (i + 1), 2000 + i) for i, v in enumerate(miou)]
        store.send([Item("metrics", points, points=len(points))])
        store.send([Item("end", "FINISHED")])
    _log(uri, "swat_mixer_micro", 0.5, 0.08, [50.0])  # a classification run beside them (another experiment)
    out = tmp_path / "cmp"
    assert main(["compare", "--uri", uri, "--experiment", "seg", "--out", str(out)]) == 0
    rows = {r["model"]: r for r in csv.DictReader((out / "compare.csv").open())}
    assert set(rows) == set(runs)
    for model, miou in runs.items():
        assert rows[model]["task"] == "segment" and float(rows[model]["best_mIoU"]) == max(miou)
        assert float(rows[model]["ema_mIoU"]) == max(miou) + 1 and rows[model]["best_top1"] == ""
    assert "best_mIoU" in (out / "compare.md").read_text().splitlines()[0]
    for png in ("train_loss.png", "val_mIoU.png", "miou_vs_gflops.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows_, curves = collect(uri, "seg", [])
    ax = figures(rows_, curves)["val_mIoU"].axes[0]  # each run's mIoU, and its EMA dashed, with markers
    assert sorted(ln.get_linestyle() for ln in ax.lines) == ["-", "-", "--", "--"]
    assert all(ln.get_marker() == "o" for ln in ax.lines)


def test_wall_time_is_the_runs_own_record_not_the_stores_timestamps(tmp_path):
    # MLflow's end - start is milliseconds here (the run is created and ended at once), as for a run whose
    # store answered late: the table must show the 27.25 s of its summary.json, and nothing without one.
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = _log(uri, "deit_micro_patch4_32", 0.3, 0.04, [50.0], summary={"steps": 30, "wall_time_s": 27.25})
    unfinished = _log(uri, "swat_deit_micro_patch4_32", 0.3, 0.05, [55.0])  # no summary.json (yet)
    out = tmp_path / "cmp"
    assert main(["compare", "--uri", uri, "--experiment", "cmp", "--out", str(out)]) == 0
    rows = {r["run_id"]: r for r in csv.DictReader((out / "compare.csv").open())}
    assert float(rows[done]["wall_time_s"]) == 27.25
    assert rows[unfinished]["wall_time_s"] == ""


def test_runs_of_one_config_are_told_apart(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    model = "deit_micro_patch4_32"
    ids = [
        _log(uri, model, 0.3, 0.04, [40.0 + i], name="deit-run", params={"output_dir": f"/runs/{i}"}) for i in (0, 1)
    ]
    rows, curves = collect(uri, "cmp", [])
    assert sorted(r["run_id"] for r in rows) == sorted(ids) and {r["name"] for r in rows} == {"deit-run"}
    labels = [r["label"] for r in rows]
    assert len(set(labels)) == 2
    starts = {r["run_id"]: r["start_ms"] for r in find_runs(uri, "cmp", [])}
    for r in rows:  # the model and the start time (and the run id's start when two started in one second)
        stamp = datetime.fromtimestamp(starts[r["run_id"]] / 1000, timezone.utc).strftime("%m-%d %H:%M:%S")
        assert re.fullmatch(rf"{model} {stamp}( {r['run_id'][:8]})?", r["label"]), r["label"]
    assert {r["run_id"]: r["run_dir"] for r in rows} == {ids[0]: "/runs/0", ids[1]: "/runs/1"}
    figs = figures(rows, curves)
    for name in ("train_loss", "val_top1"):
        assert [t.get_text() for t in figs[name].axes[0].get_legend().get_texts()] == labels
    out = tmp_path / "cmp"
    assert main(["compare", "--uri", uri, "--experiment", "cmp", "--out", str(out)]) == 0
    table = (out / "compare.md").read_text().splitlines()[2:]
    assert [line.split(" | ")[1] for line in table] == labels


def test_plots_show_single_evaluations_and_ema_in_one_colour_per_run(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    once = _log(uri, "swat_mixer_micro", 0.5, 0.08, [50.0], ema=[51.0])  # evaluated once: one point
    swat = _log(uri, "swat_deit_micro_patch4_32", 0.3, 0.05, [40.0, 61.5], ema=[41.0, 62.0])
    base = _log(uri, "deit_micro_patch4_32", 0.3, 0.04, [35.0, 55.0])  # no EMA
    rows, curves = collect(uri, "cmp", [])
    label = {r["run_id"]: r["label"] for r in rows}
    figs = figures(rows, curves)
    lines = {ln.get_label(): ln for ln in figs["val_top1"].axes[0].lines}
    assert set(lines) == {label[once], label[once] + " EMA", label[swat], label[swat] + " EMA", label[base]}
    assert len(lines[label[once]].get_xdata()) == 1
    assert all(ln.get_marker() == "o" for ln in lines.values())  # a lone point is drawn
    for rid in (once, swat):
        main_line, ema_line = lines[label[rid]], lines[label[rid] + " EMA"]
        assert main_line.get_linestyle() == "-" and ema_line.get_linestyle() == "--"
        assert to_rgba(ema_line.get_color()) == to_rgba(main_line.get_color())
    # one colour per run, and the same one in every figure
    colour = {rid: to_rgba(lines[label[rid]].get_color()) for rid in label}
    assert len(set(colour.values())) == 3
    loss = {ln.get_label(): to_rgba(ln.get_color()) for ln in figs["train_loss"].axes[0].lines}
    assert loss == {label[rid]: colour[rid] for rid in label}
    assert all(ln.get_marker() == "None" for ln in figs["train_loss"].axes[0].lines)  # 30 points: a line
    scatter = figs["top1_vs_gflops"].axes[0].collections
    assert {c.get_label(): tuple(c.get_facecolor()[0]) for c in scatter} == {label[rid]: colour[rid] for rid in label}


def test_a_server_that_does_not_answer_is_one_line_within_seconds(tmp_path):
    """A listening socket that never replies (loopback): compare used MLflow's defaults (120 s per call, 7
    retries with backoff) and sat silent for ~250 s; now it gives up after one call of the tracking
    timeout. MLFLOW_HTTP_REQUEST_TIMEOUT=2 (a user's value wins) keeps the test short."""
    import os
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_HTTP_REQUEST")}
        env["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "2"
        start = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "swat_dist", "compare", "--uri", f"http://127.0.0.1:{port}",
                               "--experiment", "x", "--out", str(tmp_path / "cmp")], capture_output=True, text=True,
                              env=env, timeout=120)  # fmt: skip
        seconds = time.monotonic() - start
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("swat-dist compare: error:"), done.stderr
    assert seconds < 30, seconds
