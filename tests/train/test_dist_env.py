"""swat_dist.dist: the launcher environment -> DistEnv, from fake environ dicts."""

from __future__ import annotations

from dataclasses import replace

import pytest

from swat_dist.dist import DEFAULT_PORT, DistEnv, cuda_index, expand_nodelist, port_from_job, read_env, tasks_per_node


def test_no_launcher_is_one_process():
    assert read_env({}) == DistEnv()
    assert read_env({}).launcher == "single" and not read_env({}).distributed


def test_torchrun_variables():
    env = read_env(
        dict(RANK="3", LOCAL_RANK="1", WORLD_SIZE="4", LOCAL_WORLD_SIZE="2", MASTER_ADDR="node7", MASTER_PORT="1234")
    )
    assert (env.rank, env.local_rank, env.world_size, env.local_world_size) == (3, 1, 4, 2)
    assert (env.node_rank, env.num_nodes, env.master_addr, env.master_port) == (1, 2, "node7", 1234)
    assert env.launcher == "torchrun" and env.distributed and not env.is_main


def test_torchrun_wins_over_slurm():
    env = read_env(dict(RANK="0", WORLD_SIZE="2", SLURM_PROCID="5", SLURM_NTASKS="8", SLURM_JOB_ID="77"))
    assert env.launcher == "torchrun" and env.world_size == 2 and env.job_id == "77"


SLURM = dict(
    SLURM_PROCID="5",
    SLURM_LOCALID="1",
    SLURM_NTASKS="8",
    SLURM_TASKS_PER_NODE="4(x2)",
    SLURM_NODEID="1",
    SLURM_NNODES="2",
    SLURM_JOB_ID="123456",
    SLURM_RESTART_COUNT="2",
    SLURM_JOB_NODELIST="localhost,gpu[002-003]",
)


def test_slurm_variables():
    env = read_env(SLURM)
    assert (env.rank, env.local_rank, env.world_size, env.local_world_size) == (5, 1, 8, 4)
    assert (env.node_rank, env.num_nodes, env.job_id, env.restart_count) == (1, 2, "123456", 2)
    assert env.master_addr == "localhost"  # first host of the list, and it resolves
    assert env.master_port == 20000 + 123456 % 10000 and env.launcher == "slurm"


ONE_NODE = dict(SLURM, SLURM_PROCID="1", SLURM_NODEID="0", SLURM_NNODES="1", SLURM_NTASKS="4", SLURM_TASKS_PER_NODE="4")


def test_slurm_unresolvable_first_host_falls_back_to_loopback_on_one_node():
    env = read_env(dict(ONE_NODE, SLURM_JOB_NODELIST="n-does-not-resolve-x1", MASTER_PORT="4321"))
    assert env.master_addr == "127.0.0.1" and env.master_port == 4321


def test_slurm_unresolvable_first_host_is_an_error_on_several_nodes():
    """127.0.0.1 on 2 nodes: the other node's ranks would wait at the rendezvous until the timeout."""
    with pytest.raises(ValueError, match=r"'n-does-not-resolve-x1' .* does not resolve .* 2 nodes: set MASTER_ADDR"):
        read_env(dict(SLURM, SLURM_JOB_NODELIST="n-does-not-resolve-x[1-2]"))
    assert read_env(dict(SLURM, SLURM_JOB_NODELIST="n-x[1-2]", MASTER_ADDR="127.0.0.1")).master_addr == "127.0.0.1"


def test_the_local_test_slurm_profile_names_its_master():
    """Its virtual nodes n1/n2 do not resolve: 2-node test jobs need the address from the profile."""
    from swat_dist.cluster.profile import load_profile

    assert load_profile("local-test").env["MASTER_ADDR"] == "127.0.0.1"


@pytest.mark.parametrize(
    "variables,given",
    [
        ({}, None),
        ({"CUDA_VISIBLE_DEVICES": ""}, None),
        ({"CUDA_VISIBLE_DEVICES": "-1"}, None),
        ({"SLURM_GPUS_ON_NODE": "0"}, None),
        ({"CUDA_VISIBLE_DEVICES": "2"}, "CUDA_VISIBLE_DEVICES=2"),
        ({"SLURM_JOB_GPUS": "0,1", "CUDA_VISIBLE_DEVICES": "0,1"}, "SLURM_JOB_GPUS=0,1"),
        ({"SLURM_GPUS_ON_NODE": "8"}, "SLURM_GPUS_ON_NODE=8"),
    ],
)
def test_gpus_given(variables, given):
    assert read_env(variables).gpus_given == given
    assert read_env(dict(SLURM, **variables)).gpus_given == given
    assert read_env(dict(RANK="0", WORLD_SIZE="1", **variables)).gpus_given == given


TASK = DistEnv(rank=5, local_rank=3, world_size=8, local_world_size=4, launcher="slurm")


def test_device_from_what_the_task_sees():
    assert cuda_index(TASK, visible=1, why_none="") == 0  # --gpus-per-task / --gpu-bind: its own GPU is 0
    assert cuda_index(TASK, visible=4, why_none="") == 3  # the node's 4 GPUs: the one of this local rank
    assert cuda_index(TASK, visible=0, why_none="") is None  # no GPU given: the CPU (gloo)
    with pytest.raises(ValueError, match="local rank 3 has no GPU: this task sees 2"):
        cuda_index(TASK, visible=2, why_none="")


def test_gpus_given_but_cuda_sees_none_is_a_one_line_error():
    given = replace(TASK, gpus_given="SLURM_JOB_GPUS=0,1,2,3")
    with pytest.raises(ValueError, match="SLURM_JOB_GPUS=0,1,2,3 gives this task GPUs, but CUDA sees none: old") as e:
        cuda_index(given, visible=0, why_none="old driver")
    assert "\n" not in str(e.value)


def test_engine_device_for_names_the_driver_requirement(monkeypatch):
    """The engine's device choice runs :func:`cuda_index` on what torch sees (here: no CUDA)."""
    import torch

    from swat_dist.train.engine import device_for

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device_for(TASK) == torch.device("cpu")
    why = r"CUDA sees none: (the NVIDIA driver must support CUDA .* built for|torch .* is a CPU-only build)"
    with pytest.raises(ValueError, match=why):
        device_for(replace(TASK, gpus_given="CUDA_VISIBLE_DEVICES=0"))


@pytest.mark.parametrize(
    "text,hosts",
    [
        ("gpu[001-003,007],cpu5", ["gpu001", "gpu002", "gpu003", "gpu007", "cpu5"]),
        ("n1", ["n1"]),
        ("a[9-11]", ["a9", "a10", "a11"]),
        ("x[1,3],y[08-09]", ["x1", "x3", "y08", "y09"]),
        ("", []),
    ],
)
def test_expand_nodelist(text, hosts):
    assert expand_nodelist(text) == hosts


def test_small_parsers():
    assert tasks_per_node("4(x2),3") == 4 and tasks_per_node("2") == 2
    assert port_from_job("29999") == 29999 and port_from_job("12_3") == 20012 and port_from_job(None) == DEFAULT_PORT


def test_bad_integer_names_the_variable():
    with pytest.raises(ValueError, match="WORLD_SIZE"):
        read_env(dict(RANK="0", WORLD_SIZE="two"))
