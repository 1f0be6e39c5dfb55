"""Training runs tracked in the embedded sqlite store: one run per job, exact steps across resumes."""

from __future__ import annotations

import json
import shutil
import time

import pytest

from swat_dist.tracking import mlflow_store

from .conftest import free_port
from .helpers import assert_matches_jsonl, jsonl, run_id, train, train_args

KEYS = ("train/loss", "lr", "throughput/images_per_sec", "throughput/mfu", "val/top1", "val_ema/top1")


@pytest.mark.slow
def test_one_run_with_params_tags_artifacts_then_resume_without_duplicate_or_missing_steps(tmp_path):
    out = tmp_path / "runs" / "tiny"
    common = ("eval.every_epochs=1", "data.path=https://bob:hunter2@host/x", "checkpoint.every_steps=4",
              "checkpoint.keep_last=2", "tracking.log_weights=true")  # fmt: skip
    summary = train(out, "max_steps=6", *common)
    uri = f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"  # the output root's store
    first = run_id(out)
    info = mlflow_store.run_info(uri, first)
    assert info["status"] == "FINISHED"
    steps = assert_matches_jsonl(uri, first, out, KEYS)
    assert steps["train/loss"] == [1, 2, 3, 4, 5, 6]
    assert steps["val/top1"] == [2, 4, 6]  # 2 steps per epoch, evaluated every epoch
    params, tags = info["params"], info["tags"]
    assert params["model.name"] == "swat_deit_micro_patch4_32" and params["data.batch_size"] == "16"
    assert params["global_batch"] == "16" and params["world_size"] == "1" and float(params["model_gflops"]) > 0
    assert params["config_hash"] == summary["config_hash"] == tags["swat.config_hash"]
    assert params["data.path"] == "https://bob:***@host/x"
    assert params["output_dir"] == str(out) and params["name"] == "swat_deit_micro_patch4_32"  # resolved, not templates
    assert tags["swat.variant"] == "swat" and tags["swat.data_format"] == "synthetic"
    assert tags["mlflow.runName"] == "swat_deit_micro_patch4_32" and len(tags["mlflow.source.git.commit"]) == 40
    arts = tmp_path / "runs" / "mlartifacts"
    uploaded = {str(p.relative_to(arts / first / "artifacts")) for p in arts.rglob("*") if p.is_file()}
    assert uploaded == {"config.yaml", "summary.json", "metrics.jsonl", "weights/model.safetensors",
                        "weights/model_ema.safetensors"}  # fmt: skip
    config = next(arts.rglob("config.yaml")).read_text()
    assert "hunter2" not in config and "bob:***@host" in config
    assert json.loads(next(arts.rglob("summary.json")).read_text())["steps"] == 6

    # A crash after step 6 was logged but before its checkpoint: the job restarts from step 4 and logs
    # 5, 6 and the evaluations at 4 and 6 again (deterministic); MLflow keeps one point per step.
    ckpts = out / "checkpoints"
    shutil.rmtree(ckpts / "step_00000006")
    (ckpts / "latest").write_text("step_00000004\n")
    summary = train(out, "max_steps=10", *common)
    assert summary["steps"] == 10 and run_id(out) == first
    steps = assert_matches_jsonl(uri, first, out, ("train/loss", "lr", "grad_norm", "val/top1", "val_ema/top1"))
    assert steps["train/loss"] == list(range(1, 11)) and steps["val/top1"] == [2, 4, 6, 8, 10]
    # timings differ between attempts: steps 5-6 keep the first attempt's value, still one point per step
    assert [s for s, _, _ in mlflow_store.history(uri, first, "throughput/mfu")] == list(range(1, 11))
    assert len(mlflow_store.find_runs(uri, "swat_dist", [])) == 1
    assert mlflow_store.run_info(uri, first)["status"] == "FINISHED"


@pytest.mark.slow
def test_unreachable_store_at_start_trains_and_the_resume_sends_what_was_missing(tmp_path, monkeypatch, capfd):
    out = tmp_path / "runs" / "tiny"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    summary = train(out, "max_steps=6", "checkpoint.every_steps=4", "tracking.flush_timeout_s=2")
    assert summary["steps"] == 6 and len(jsonl(out)) == 7  # 6 steps + the final evaluation
    err = capfd.readouterr().err
    assert err.count("[tracking] warning: opening the run") == 1, err  # one warning for the whole outage
    assert err.count("nothing was tracked") == 1 and str(out / "metrics.jsonl") in err and "view it" not in err
    assert not (out / "tracking" / "run.json").exists()
    # the requeued job finds a store: one run holding steps 1-6 (replayed from metrics.jsonl) and 7-10
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    train(out, "max_steps=10", "checkpoint.every_steps=4")
    (only,) = mlflow_store.find_runs(uri, "swat_dist", [])
    assert only["run_id"] == run_id(out) and only["status"] == "FINISHED"
    steps = assert_matches_jsonl(uri, only["run_id"], out, ("train/loss", "lr"))
    assert steps["train/loss"] == list(range(1, 11))
    # the first attempt's final evaluation (step 6, before its last save) is replayed too; metrics.jsonl
    # drops it on resume, MLflow keeps it
    assert [s for s, _, _ in mlflow_store.history(uri, only["run_id"], "val/top1")] == [6, 10]


def test_a_store_that_never_answers_costs_seconds_at_close_and_one_line_saying_nothing_was_tracked(tmp_path, capfd):
    from swat_dist.config import load_config
    from swat_dist.dist import DistEnv
    from swat_dist.tracking.choose import make_tracker

    out = tmp_path / "runs" / "tiny"
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    cfg = load_config([], train_args(out, f"tracking.uri={uri}", "tracking.start_timeout_s=2"))
    assert cfg.tracking.flush_timeout_s == 60  # what close used to wait out, for a run that never existed
    tracker = make_tracker(cfg, DistEnv(), out)
    for step in range(1, 6):
        tracker.log_metrics({"train/loss": 1.0 / step}, step)
    start = time.monotonic()
    tracker.close()
    took = time.monotonic() - start
    captured = capfd.readouterr()
    text = captured.out + captured.err
    assert took < 5, f"close took {took:.1f} s\n{text}"
    (nothing,) = [line for line in text.splitlines() if "nothing was tracked" in line]
    assert uri in nothing and str(out / "metrics.jsonl") in nothing and "checkpoint.resume=auto" in nothing
    assert "view it" not in text and "were not sent" not in text, text
    (opening,) = [line for line in text.splitlines() if "opening the run" in line]
    assert "Connection refused" in opening, opening  # the error's cause, not a cut mid-word at 200 characters
    assert not (out / "tracking" / "run.json").exists()


@pytest.mark.parametrize("uri", ["htp://typo:5000", "file:///tmp/mlruns"])
def test_a_uri_mlflow_cannot_use_is_one_warning_and_a_null_tracker(tmp_path, capfd, uri):
    from swat_dist.config import load_config
    from swat_dist.dist import DistEnv
    from swat_dist.tracking.base import NullTracker
    from swat_dist.tracking.choose import make_tracker

    out = tmp_path / "runs" / "tiny"
    cfg = load_config([], train_args(out, f"tracking.uri={uri}"))
    tracker = make_tracker(cfg, DistEnv(), out)
    assert isinstance(tracker, NullTracker)  # the loop logs into it as into any tracker, and trains on
    err = capfd.readouterr().err
    assert err.count(f"[tracking] warning: tracking URI '{uri}'") == 1 and err.count("\n") == 1, err
    assert not (tmp_path / "runs" / "mlflow.db").exists()


@pytest.mark.slow
def test_which_run_a_start_continues(tmp_path, monkeypatch):
    """run.json (written at creation) lets a job that died before its first checkpoint continue its run;
    ``checkpoint.resume=none`` and another run folder's checkpoint start a new one; MLFLOW_RUN_ID picks one."""
    from swat_dist.config import load_config
    from swat_dist.dist import DistEnv
    from swat_dist.tracking.choose import make_tracker
    from swat_dist.tracking.mlflow_store import MlflowStore

    out = tmp_path / "runs" / "tiny"
    uri = f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"

    def start(*extra: str, resume_from=None, step=0, ckpt_run=None) -> str | None:
        cfg = load_config([], train_args(out, *extra))
        tracker = make_tracker(cfg, DistEnv(), out, step=step, run_id=ckpt_run, resume_from=resume_from)
        rid = tracker.run_id
        tracker.close()
        return rid

    first = start()
    assert first is not None and run_id(out) == first
    assert start() == first  # no checkpoint yet, same job restarted: same run
    fresh = start("checkpoint.resume=none")
    assert fresh not in (None, first) and run_id(out) == fresh
    other = tmp_path / "elsewhere" / "checkpoints" / "step_00000004"
    assert start(resume_from=other, step=4, ckpt_run=first) not in (None, first, fresh)
    mine = out / "checkpoints" / "step_00000004"
    assert start(resume_from=mine, step=4, ckpt_run=first) == first  # the checkpoint wins
    chosen = MlflowStore(uri, "swat_dist", None, "chosen").open()
    monkeypatch.setenv("MLFLOW_RUN_ID", chosen)
    assert start("checkpoint.resume=none") == chosen
    assert len(mlflow_store.find_runs(uri, "swat_dist", [])) == 4


EXIT_WITHOUT_CLOSE = """
import sys
from pathlib import Path
from swat_dist.config import load_config
from swat_dist.dist import DistEnv
from swat_dist.tracking.tracker import open_tracker
cfg = load_config([], sys.argv[2:])
tracker = open_tracker(cfg, DistEnv(), Path(sys.argv[1]), None, [])
for step in range(1, 6):
    tracker.log_metrics({"train/loss": 1.0 / step}, step)
raise SystemExit(0)  # a preemption stop (or an exception) leaves run() without tracker.close()
"""


@pytest.mark.slow
def test_a_process_that_ends_without_close_flushes_and_marks_the_run_killed(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "runs" / "tiny"
    args = [sys.executable, "-c", EXIT_WITHOUT_CLOSE, str(out), *train_args(out)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    uri = f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    assert mlflow_store.run_info(uri, run_id(out))["status"] == "KILLED"
    assert [s for s, _, _ in mlflow_store.history(uri, run_id(out), "train/loss")] == [1, 2, 3, 4, 5]
