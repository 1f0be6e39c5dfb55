"""`swat-dist compare --sweep` on fixture runs in a real (sqlite) MLflow store: the children of one parent,
grouped over seeds, give the means and sample stds numpy computes from the logged values; SWAT is set
beside its baseline with the difference and the seed-noise verdict; other runs, and children not FINISHED
(running or failed), are left out."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from swat_dist.cli import main
from swat_dist.tracking.mlflow_store import open_parent

MODELS = {"swat_deit_micro_patch4_32": (0.48, 0.036), "deit_micro_patch4_32": (0.46, 0.029)}  # params M, GFLOPs
SEEDS = (0, 1, 2)


def _child(client, exp_id, parent, model, seed, curve, ema, status="FINISHED"):
    params, gflops = MODELS[model]
    run = client.create_run(exp_id, run_name=f"sw/{model}-{seed}",
                            tags={"mlflow.parentRunId": parent, "swat.model": model} if parent else {})  # fmt: skip
    rid = run.info.run_id
    client.log_batch(rid, params=[Param("sweep.model.name", model), Param("sweep.seed", str(seed)),
                                  Param("model_params_m", str(params)), Param("model_gflops", str(gflops))],
                     tags=[RunTag("swat.sweep_point", f"model.name={model},seed={seed}")],
                     metrics=[*(Metric("val/top1", v, 0, s) for s, v in curve),
                              *(Metric("val_ema/top1", v, 0, s) for s, v in ema),
                              Metric("throughput/images_per_sec", 100.0 + seed, 0, 10)])  # fmt: skip
    if status != "RUNNING":
        client.set_terminated(rid, status)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """3 seeds x 2 models as children of one parent; one loose run and one child of another parent."""
    tmp_path = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{tmp_path / 'sw' / 'mlflow.db'}"
    (tmp_path / "sw").mkdir()
    parent = open_parent(uri, "exp", None, "sw", tmp_path / "sw" / "mlartifacts", {"grid.seed": "0,1,2"}, {})
    other = open_parent(uri, "exp", None, "other", None, {}, {})
    client = MlflowClient(tracking_uri=uri)
    exp_id = client.get_experiment_by_name("exp").experiment_id
    rng = np.random.default_rng(7)
    logged: dict[str, dict[str, list[float]]] = {}
    for model in MODELS:
        shift = 6.0 if model.startswith("swat_") else 0.0  # SWAT well ahead: beyond the noise
        for seed in SEEDS:
            curve = [(10, 40 + rng.normal()), (20, 60 + shift + rng.normal()), (30, 58 + shift + rng.normal())]
            ema = [(10, 41 + rng.normal()), (30, 61 + shift + rng.normal())]
            _child(client, exp_id, parent, model, seed, curve, ema)
            v = logged.setdefault(model, {"best": [], "final": [], "ema_best": [], "ema_final": []})
            v["best"].append(max(x for _, x in curve))
            v["final"].append(curve[-1][1])
            v["ema_best"].append(max(x for _, x in ema))
            v["ema_final"].append(ema[-1][1])
    _child(client, exp_id, None, "deit_micro_patch4_32", 9, [(10, 99.0)], [(10, 99.0)])  # not a child
    _child(client, exp_id, other, "deit_micro_patch4_32", 8, [(10, 1.0)], [(10, 1.0)])  # another sweep's
    # this sweep's, not (yet) results: an element still running and one that failed
    _child(client, exp_id, parent, "deit_micro_patch4_32", 3, [(10, 99.0)], [(10, 99.0)], status="RUNNING")
    _child(client, exp_id, parent, "swat_deit_micro_patch4_32", 4, [(10, 1.0)], [(10, 1.0)], status="FAILED")
    manifest = {"name": "sw", "grid": [], "elements": {}, "tracking": {"uri": uri, "experiment": "exp",
                                                                       "parent_run_id": parent}}  # fmt: skip
    (tmp_path / "sw" / "sweep.json").write_text(json.dumps(manifest))
    return tmp_path / "sw", uri, parent, logged


def _read(path):
    with path.open() as f:
        return list(csv.DictReader(f))


def test_groups_hold_the_mean_and_sample_std_over_seeds(sweep, tmp_path, capsys):
    folder, _, _, logged = sweep
    assert main(["compare", "--sweep", str(folder), "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "left out 2 child run(s) not FINISHED: sw/deit_micro_patch4_32-3 (RUNNING), " in err, err
    groups = {g["model"]: g for g in _read(tmp_path / "out" / "sweep_groups.csv")}
    assert set(groups) == set(MODELS)  # the loose run and the other sweep's child are not here
    for model, values in logged.items():
        g = groups[model]
        assert int(g["n"]) == len(SEEDS)
        for stem, key in (("best_top1", "best"), ("final_top1", "final"), ("best_ema_top1", "ema_best"),
                          ("final_ema_top1", "ema_final")):  # fmt: skip
            assert float(g[f"{stem}_mean"]) == pytest.approx(np.mean(values[key]))
            assert float(g[f"{stem}_std"]) == pytest.approx(np.std(values[key], ddof=1))
        assert float(g["gflops_mean"]) == pytest.approx(MODELS[model][1]) and float(g["gflops_std"]) == 0
        assert float(g["images_per_sec_mean"]) == pytest.approx(101.0)
    md = (tmp_path / "out" / "sweep.md").read_text()
    assert "| swat_deit_micro_patch4_32 | 3 |" in md
    assert (tmp_path / "out" / "figure1.png").stat().st_size > 10_000


def test_swat_beside_its_baseline_with_the_difference_and_the_noise_verdict(sweep, tmp_path):
    _, uri, parent, logged = sweep
    assert main(["compare", "--parent", parent, "--uri", uri, "--out", str(tmp_path / "out")]) == 0
    rows = {r["value"]: r for r in _read(tmp_path / "out" / "sweep_pairs.csv")}
    assert set(rows) == {"best_top1", "final_top1", "best_ema_top1", "final_ema_top1"}
    s, b = logged["swat_deit_micro_patch4_32"]["best"], logged["deit_micro_patch4_32"]["best"]
    r = rows["best_top1"]
    assert r["swat"] == "swat_deit_micro_patch4_32" and r["baseline"] == "deit_micro_patch4_32"
    assert float(r["diff"]) == pytest.approx(np.mean(s) - np.mean(b))
    noise = 2 * math.sqrt(np.var(s, ddof=1) / 3 + np.var(b, ddof=1) / 3)
    assert float(r["noise_2se"]) == pytest.approx(noise)
    assert r["exceeds_noise"] == str(abs(np.mean(s) - np.mean(b)) > noise) == "True"  # a 6-point lead, sd ~1


def test_a_sweep_without_tracking_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "sw").mkdir()
    (tmp_path / "sw" / "sweep.json").write_text(json.dumps({"elements": {}, "tracking": None}))
    assert main(["compare", "--sweep", str(tmp_path / "sw"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "ran without MLflow tracking" in err


def test_figure_labels_are_short_and_nearby_ones_get_rows_of_their_own():
    from swat_dist.tracking.sweep_compare import _label_rows, short_name

    assert (
        short_name("swat_swin_micro_patch4_window4_32 model.kwargs={depth: 1}")
        == "swat_swin_micro model.kwargs={depth: 1}"
    )
    assert short_name("deit_small_patch16_224") == "deit_small"
    # the three SWAT points of runs/fig1 (GFLOPs, top-1) crowd each other; the baselines lie far below
    points = [(0.0356, 95.9), (0.0379, 93.8), (0.0403, 96.5), (0.0075, 91.9), (0.0293, 30.1), (0.0070, 12.7)]
    rows = _label_rows(points)
    assert sorted(rows[:3]) == [0, 1, 2] and rows[2] == 0  # the highest keeps its place
    assert rows[4] == 0 and rows[5] == 0
