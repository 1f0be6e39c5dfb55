"""`swat-dist submit` before anything runs: profiles, validation, --dry-run, the stop flag, and the local
executor (no Slurm needed)."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from swat_dist.cli import main
from swat_dist.cluster.profile import CLUSTERS_DIR, known_profiles, time_minutes
from swat_dist.train import preempt

from .tiny import losses, overrides, plan

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_profiles_load_and_the_generic_one_is_commented():
    assert {"generic-8gpu", "local-test"} <= set(known_profiles())
    text = (CLUSTERS_DIR / "generic-8gpu.yaml").read_text()
    assert text.count("#") >= 15  # every setting explained
    p = plan(Path("/tmp/x"), "data.synthetic_samples=4096", cluster="generic-8gpu", nodes=2)
    assert (p.nodes, p.gpus_per_node, p.tasks_per_node, p.world_size) == (2, 8, 8, 16)  # one task per GPU


def test_shipped_profiles_use_current_nccl_names():
    """torch reads TORCH_NCCL_ASYNC_ERROR_HANDLING; NCCL_ASYNC_ERROR_HANDLING is deprecated (issue 24)."""
    from swat_dist.cluster.profile import load_profile

    for name in known_profiles():
        assert "NCCL_ASYNC_ERROR_HANDLING" not in load_profile(name).env, name
    assert load_profile("generic-8gpu").env["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "1"


@pytest.mark.parametrize(
    ("yaml_text", "kw", "message"),
    [
        (None, {}, r"--cluster: unknown cluster profile 'nope' \(known in .*local-test"),
        ("time: 10\n", {}, r"partition is required"),
        ("partition: p\nparttion: q\n", {}, r"unknown setting 'parttion'"),
        ("partition: p\ntime: 1:xx\n", {}, r"time: '1:xx' is not a Slurm time"),
        ("partition: p\nsignal: USR9\n", {}, r"signal: 'USR9' is not a signal name"),
        # 4 nodes x 1 task x 16 images = 64 per step, but only 32 samples exist
        (
            "partition: p\nnodes: 2\n",
            {"nodes": 4},
            r"--nodes 4 x tasks_per_node 1 = 4 ranks: 32 training samples cannot fill",
        ),
        ("partition: p\n", {"nodes": 0}, r"--nodes must be >= 1"),
        ("partition: p\ngpus_per_node: 1\n", {"gpus_per_node": 4}, r"--nodes 1 x --gpus-per-node 4 = 4 ranks: 32"),
        ("partition: p\n", {"precision": "fp16"}, r"= 1 ranks: engine.precision: fp16 is not supported on cpu"),
    ],
)
def test_bad_input_fails_before_submitting_naming_the_setting(tmp_path, yaml_text, kw, message):
    cluster = "nope"
    if yaml_text is not None:
        (tmp_path / "c.yaml").write_text(yaml_text)
        cluster = str(tmp_path / "c.yaml")
    extra = [f"engine.precision={kw.pop('precision')}"] if "precision" in kw else []
    with pytest.raises(ValueError, match=message):
        plan(tmp_path / "run", *extra, cluster=cluster, **kw)
    assert not (tmp_path / "run").exists()  # nothing was created, let alone submitted


def test_cli_turns_a_bad_profile_into_one_line(capsys):
    assert main(["submit", "--cluster", "nope", "--dry-run", "model.num_classes=10"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("swat-dist submit: error: --cluster: unknown cluster profile 'nope'") and "\n" not in err


def test_a_world_size_that_cannot_keep_the_global_batch_is_refused_at_submit(tmp_path):
    ckpt = tmp_path / "run" / "checkpoints"
    (ckpt / "step_00000005").mkdir(parents=True)
    meta = ckpt / "step_00000005" / "meta.json"
    meta.write_text(json.dumps({"step": 5, "world_size": 3, "global_batch": 9}))
    (ckpt / "latest").write_text("step_00000005\n")
    with pytest.raises(ValueError, match=r"= 2 ranks, but .*step_00000005 .*global batch of 9 on 3 ranks; 2 ranks "
                       r"cannot keep it .*resume on 1, 3, 9 ranks"):  # fmt: skip
        plan(tmp_path / "run")
    assert plan(tmp_path / "run", "checkpoint.resume=none").world_size == 2
    meta.write_text(json.dumps({"step": 5, "world_size": 4, "global_batch": 8}))  # 2 ranks keep 8: submitted
    assert plan(tmp_path / "run").world_size == 2


def test_time_syntax():
    assert [time_minutes(t) for t in (90, "90", "1:30:00", "2-00:00:00", "0:30", "1-2")] == [90, 90, 90, 2880, 1, 1560]


def test_dry_run_prints_the_sbatch_script_and_imports_no_gpu_stack(tmp_path):
    code = (
        "import sys, torch; from swat_dist.cli import main; "
        f"rc = main(['submit', '--cluster', 'generic-8gpu', '--nodes', '4', '--dry-run', *{overrides(tmp_path)!r}, "
        "'data.synthetic_samples=4096']); "
        "assert rc == 0; assert 'deepspeed' not in sys.modules, 'deepspeed imported'; "
        "assert not torch.cuda.is_initialized()"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout
    for line in ("#SBATCH --nodes=4", "#SBATCH --ntasks-per-node=8", "#SBATCH --gpus-per-node=8",
                 "#SBATCH --partition=gpu", "#SBATCH --signal=USR2@120", "#SBATCH --time=1440",
                 "#SBATCH --cpus-per-task=10", f"#SBATCH --mem={8 * 60 * 1024}M", "#SBATCH --exclusive",
                 "#SBATCH --open-mode=append", "export OMP_NUM_THREADS=8", "srun "):  # fmt: skip
        assert line in text, f"{line!r} missing from:\n{text}"
    assert "ranks: 32" in text
    assert not (tmp_path / "slurm").exists()  # a dry run submits and writes nothing


def test_stop_signal_only_sets_a_flag_and_keeps_the_previous_handler():
    calls: list[int] = []
    old = signal.signal(signal.SIGUSR2, lambda s, f: calls.append(s))
    try:
        preempt.reset()
        signum = preempt.install("USR2")
        assert signum == signal.SIGUSR2 and not preempt.requested()
        os.kill(os.getpid(), signal.SIGUSR2)
        assert preempt.requested() and preempt.received() == signal.SIGUSR2 and calls == []
        handler = preempt.previous(signum)
        assert callable(handler)
        handler(signum, None)  # what the launcher chains to after the collective save
        assert calls == [signal.SIGUSR2]
    finally:
        signal.signal(signal.SIGUSR2, old)
        preempt.reset()


def test_local_executor_runs_two_ranks_without_slurm(tmp_path, monkeypatch):
    (tmp_path / "local.yaml").write_text("executor: local\ntasks_per_node: 2\ntime: 5\nenv: {OMP_NUM_THREADS: '1'}\n")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # submitting exports the profile's env here; restored after
    out = tmp_path / "run"
    rc = main(["submit", "--cluster", str(tmp_path / "local.yaml"), *overrides(out, "max_steps=6")])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 6
    assert sorted(losses(out)) == list(range(1, 7))
    record = json.loads((out / "slurm" / "jobs.jsonl").read_text())
    assert record["executor"] == "local" and record["tasks_per_node"] == 2


@pytest.mark.parametrize("recipe", ["upernet_swat_swin_tiny", "upernet_deit_small"])
def test_segmentation_recipes_submit_as_eight_gpu_dry_runs(recipe, tmp_path, capsys):
    path = ROOT / "configs" / "recipes" / "seg" / f"{recipe}.yaml"
    args = ["submit", "-c", str(path), "--cluster", "generic-8gpu", "--dry-run", f"output_dir={tmp_path / 'run'}"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "ranks: 8" in text and "#SBATCH --ntasks-per-node=8" in text and "#SBATCH --gpus-per-node=8" in text
    assert not (tmp_path / "run").exists()  # nothing written


def test_a_password_in_the_tracking_uri_stays_out_of_what_is_submitted(tmp_path, monkeypatch):
    """submitit pickles the job's overrides into RUN/slurm/ (and a dry run prints them): the URI goes without
    its credentials, which travel in the environment sbatch hands the job (issue 27 item 4)."""
    from swat_dist.cluster.submit import TrainJob

    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.setenv(key, "")  # so that what the code exports is removed after the test
        monkeypatch.delenv(key)
    p = plan(tmp_path / "run", "tracking.uri=http://alice:pw-5ecr3t@127.0.0.1:5999", slurm=False, nodes=1)
    assert "tracking.uri=http://127.0.0.1:5999" in p.overrides
    job = TrainJob(p.config_files, p.overrides, p.profile.signal, p.profile.max_requeues)
    assert b"pw-5ecr3t" not in pickle.dumps(job) and b"alice" not in pickle.dumps(job)
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "alice" and os.environ["MLFLOW_TRACKING_PASSWORD"] == "pw-5ecr3t"
