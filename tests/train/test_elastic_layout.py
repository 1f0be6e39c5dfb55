"""The pieces of a resume on another world size, without a run: the re-derived layout, the re-counted
loader position, the re-cut ZeRO-3 EMA, and the universal copy's all-or-nothing folder."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from swat_dist.config import derived, load_config
from swat_dist.data.loaders.plan import TrainPlan, full_permutation
from swat_dist.train import elastic
from swat_dist.train.ema import ema_state


def cfg(*extra: str):
    return load_config(
        [], ["model.num_classes=10", "data.format=synthetic", "data.batch_size=4", "engine.zero_stage=1", *extra]
    )


@pytest.mark.parametrize("world", [1, 2, 3, 4, 6, 8, 12, 24])
def test_the_global_batch_is_kept_with_the_largest_micro_batch_that_fits(world):
    meta = {"step": 7, "world_size": 2, "global_batch": 24}
    out, line = elastic.relayout(cfg("data.mixup=0", "data.cutmix=0"), meta, world, Path("ck"))
    micro, accum = out.data.batch_size, out.engine.grad_accum
    assert micro * accum * world == 24 == derived(out, world)["global_batch"]
    assert micro <= 4 and micro == max(m for m in range(1, 5) if (24 // world) % m == 0)
    assert f"data.batch_size={micro} x engine.grad_accum={accum} x {world} ranks" in line and "\n" not in line


def test_the_micro_batch_follows_the_configs_rules():
    meta = {"step": 7, "world_size": 2, "global_batch": 24}
    out, _ = elastic.relayout(cfg("data.mixup=0.8"), meta, 4, Path("ck"))  # 6 per rank: 3 is odd, 2 is not
    assert (out.data.batch_size, out.engine.grad_accum) == (2, 3)
    with pytest.raises(ValueError, match=r"no micro-batch keeps its global batch 24 on 8 ranks \(data.batch_size must"):
        elastic.relayout(cfg("data.mixup=0.8"), meta, 8, Path("ck"))  # 3 per rank: only odd divisors


def test_a_world_size_that_does_not_divide_the_global_batch_is_refused_in_one_line():
    with pytest.raises(ValueError, match=r"global batch of 24 on 2 ranks; 5 ranks cannot keep it") as err:
        elastic.relayout(cfg(), {"step": 7, "world_size": 2, "global_batch": 24}, 5, Path("ck"))
    assert "resume on 1, 2, 3, 4, 6, 8, 12, 24 ranks" in str(err.value) and "\n" not in str(err.value)


def test_an_older_checkpoint_without_global_batch_ran_this_config():
    out, _ = elastic.relayout(cfg("engine.grad_accum=3"), {"step": 1, "world_size": 2}, 1, Path("ck"))
    assert out.data.batch_size * out.engine.grad_accum == 4 * 3 * 2


def test_zero3_checkpoints_continue_on_another_world_size():
    meta = {"step": 7, "world_size": 2, "global_batch": 8, "zero_stage": 3}
    assert elastic.relayout(cfg(), meta, 1, Path("ck"))[0].engine.grad_accum == 2


@pytest.mark.parametrize(("old", "new"), [((2, 4), (1, 4)), ((1, 4), (4, 2)), ((4, 2), (2, 1))])
def test_the_recounted_loader_position_continues_with_the_next_unseen_sample(old, new):
    """(world, micro) before and after, at a step boundary of global batch 8: the samples the new layout
    takes next are exactly those the old one would have taken."""
    order = full_permutation(100, seed=3, epoch=0)
    (w0, b0), (w1, b1) = old, new
    done_micro = 2 * 8 // (w0 * b0)  # two optimizer steps
    seen_old = {int(i) for s in range(done_micro) for r in range(w0) for i in TrainPlan(order, w0, r, b0).batch(s)}
    state = elastic.loader_state({"epoch": 0, "step": done_micro, "seed": 3, "global_batch": w0 * b0}, w1 * b1)
    nxt = [int(i) for r in range(w1) for i in TrainPlan(order, w1, r, b1).batch(state["step"])]
    assert state["global_batch"] == w1 * b1
    assert seen_old == {int(i) for i in order[:16]} and nxt == [int(i) for i in order[16 : 16 + w1 * b1]]


def test_a_position_between_micro_steps_of_the_new_layout_is_refused():
    with pytest.raises(ValueError, match="not a whole number of micro-steps of 8"):
        elastic.loader_state({"epoch": 0, "step": 1, "seed": 0, "global_batch": 4}, 8)


def test_the_zero3_ema_is_joined_and_cut_again_for_the_new_world(tmp_path):
    numels = [10, 7, 1]
    full = [torch.arange(n, dtype=torch.float32) + 100 * k for k, n in enumerate(numels)]

    def part(t: torch.Tensor, world: int, rank: int) -> torch.Tensor:  # ZeRO-3's split, written out
        size = math.ceil(t.numel() / world)
        return torch.cat([t, torch.full((size * world - t.numel(),), -1.0)])[rank * size : (rank + 1) * size]

    for r in range(3):
        shadow = [part(t, 3, r) for t in full]
        torch.save({"ema": {"decay": 0.9, "updates": 5, "shadow": shadow}}, tmp_path / f"rank{r:05d}.pt")
    for world in (1, 2, 4):
        for rank in range(world):
            got = ema_state(tmp_path, 3, 3, world, rank, numels)
            assert got["updates"] == 5
            for t, s in zip(full, got["shadow"]):
                size = math.ceil(t.numel() / world)
                assert s.shape == (size,)
                real = t[rank * size : (rank + 1) * size]
                assert torch.equal(s[: real.numel()], real)  # the padding beyond is zeros, not a neighbour's


def test_zero_0_2_takes_rank_0s_whole_ema(tmp_path):
    torch.save({"ema": {"decay": 0.9, "updates": 2, "shadow": [torch.ones(3)]}}, tmp_path / "rank00000.pt")
    assert torch.equal(ema_state(tmp_path, 2, 1, 5, 4, [3])["shadow"][0], torch.ones(3))


def test_the_change_is_recorded_under_a_key_of_its_own():
    out, _ = elastic.relayout(cfg(), {"step": 7, "world_size": 2, "global_batch": 8}, 1, Path("ck"))
    assert elastic.change_note({"step": 7, "world_size": 2}, 1, out) == {
        "elastic.step_00000007": "2->1 ranks, batch 4 x accum 2"
    }


def test_the_universal_copy_is_all_or_nothing_and_made_once(tmp_path):
    from swat_dist.dist import DistEnv
    from swat_dist.train.engine import universal_copy

    env = DistEnv(rank=0, local_rank=0, world_size=1, local_world_size=1, master_port=0, launcher="single")
    tag = tmp_path / "step_00000005"
    tag.mkdir()
    (tag / ".universal-123").mkdir()  # a conversion that crashed: removed, never taken for a copy
    (tag / "mp_rank_00_model_states.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"converting .*step_00000005 to DeepSpeed's universal format failed") as err:
        universal_copy(tag, env)
    assert "\n" not in str(err.value) and (tag / "universal-failed.log").is_file()
    assert sorted(p.name for p in tag.iterdir()) == ["mp_rank_00_model_states.pt", "universal-failed.log"]
    (tag / "universal").mkdir()  # a finished copy (it only ever appears whole, by rename): reused as it is
    assert universal_copy(tag, env) == tag / "universal"


def test_swat_dist_jobs_lists_the_world_size_changes(tmp_path):
    from swat_dist.cluster import jobs

    run = tmp_path / "run"
    for meta, world in (
        ({"step": 5, "world_size": 2, "global_batch": 8}, 1),
        ({"step": 9, "world_size": 1, "global_batch": 8}, 4),
    ):
        elastic.record_change(run, meta, world, elastic.relayout(cfg(), meta, world, Path("ck"))[0])
    jobs.record(run, "999999999", executor="local")  # no such process: FINISHED
    text = jobs.render(run)
    assert "world size changed at step 5: 2 -> 1 ranks (data.batch_size=4 x engine.grad_accum=2)" in text
    assert "world size changed at step 9: 1 -> 4 ranks (data.batch_size=2 x engine.grad_accum=1)" in text
