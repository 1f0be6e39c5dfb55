"""swat_dist.dist: the launcher environment -> DistEnv, from fake environ dicts."""

from __future__ import annotations

import pytest

from swat_dist.dist import DEFAULT_PORT, DistEnv, expand_nodelist, port_from_job, read_env, tasks_per_node


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


def test_slurm_unresolvable_first_host_falls_back_to_loopback():
    env = read_env(dict(SLURM, SLURM_JOB_NODELIST="n-does-not-resolve-x[1-2]", MASTER_PORT="4321"))
    assert env.master_addr == "127.0.0.1" and env.master_port == 4321


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
