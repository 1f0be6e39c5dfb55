"""System metrics per node: two ranks posing as two nodes both log into rank 0's one run."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from swat_dist.config import load_config
from swat_dist.dist import DistEnv
from swat_dist.tracking import mlflow_store
from swat_dist.tracking.system import NodeMonitor, sample

from .conftest import free_port
from .helpers import jsonl, run_id, train_args

PERCENT = ("cpu_utilization_percentage", "system_memory_usage_percentage")


def _node(rank: int, port: int, args: list[str]) -> None:
    from swat_dist.train.run import run

    torch.set_num_threads(1)
    # each rank is local rank 0 of its own "node": the layout of one GPU per node
    env = DistEnv(rank=rank, local_rank=0, world_size=2, local_world_size=1, node_rank=rank, num_nodes=2,
                  master_port=port, launcher="torchrun")  # fmt: skip
    run(load_config([], args), env)


def test_sample_reads_this_machine():
    values = sample("node3")
    for key in PERCENT:
        assert 0 <= values[f"system/node3/{key}"] <= 100
    assert values["system/node3/system_memory_usage_megabytes"] > 0


def test_monitor_samples_on_its_own_thread_until_closed():
    got: list[dict[str, float]] = []
    monitor = NodeMonitor(got.append, "n", 0.1)
    end = time.perf_counter() + 0.5
    while time.perf_counter() < end:  # keep a core busy: CPU readings must not be psutil's unprimed 0.0
        pass
    monitor.close()
    count = len(got)
    time.sleep(0.3)
    assert len(got) == count >= 3  # nothing after close
    assert all(g["system/n/cpu_utilization_percentage"] > 0 for g in got), got


@pytest.mark.slow
def test_each_node_logs_system_metrics_into_the_one_run(tmp_path: Path):
    out = tmp_path / "runs" / "two_nodes"
    args = train_args(out, "max_steps=20", "tracking.system_metrics=true", "tracking.system_metrics_interval_s=0.2")
    start = time.time()
    mp.spawn(_node, args=(free_port(), args), nprocs=2, join=True)
    wall = time.time() - start
    uri = f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    (only,) = mlflow_store.find_runs(uri, "swat_dist", [])
    assert only["run_id"] == run_id(out)
    assert {"swat.host.node0", "swat.host.node1"} <= set(only["tags"])
    for node in ("node0", "node1"):
        for key in PERCENT:
            points = mlflow_store.history(uri, only["run_id"], f"system/{node}/{key}")
            assert len(points) >= 2, (node, key, points)
            steps = [s for s, _, _ in points]
            assert all(0 <= s <= wall + 5 for s in steps), steps  # seconds since the run began
            assert all(0 <= v <= 100 for _, v, _ in points)
            assert key != "cpu_utilization_percentage" or max(v for _, v, _ in points) > 0
    assert [r["step"] for r in jsonl(out) if "train/loss" in r] == list(range(1, 21))
    assert json.loads((out / "summary.json").read_text())["world_size"] == 2
