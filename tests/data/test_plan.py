"""The distributed sample plan: exactly-once, equal steps, determinism, resume and world-size invariance."""

import numpy as np
import pytest

from swat_dist.data.loaders.plan import (
    PAD,
    TrainPlan,
    check_layout,
    full_permutation,
    shard_group_permutation,
    val_batches,
)


def _epoch(n, world, batch, seed=0, epoch=0):
    order = full_permutation(n, seed, epoch)
    return [TrainPlan(order, world, r, batch) for r in range(world)]


@pytest.mark.parametrize("n,world,batch", [(103, 2, 8), (100, 4, 5), (64, 3, 7), (10, 1, 3)])
def test_train_epoch_is_exactly_once_with_equal_steps(n, world, batch):
    plans = _epoch(n, world, batch)
    assert len({p.steps for p in plans}) == 1
    seen = np.concatenate([b for p in plans for b in p.batches()])
    assert len(seen) == len(set(seen.tolist()))  # no sample twice
    assert len(seen) == (n // (world * batch)) * world * batch  # all but the drop_last remainder
    assert set(seen.tolist()) <= set(range(n))


def test_order_depends_on_seed_and_epoch_only():
    a = _epoch(50, 2, 4, seed=1, epoch=3)[1].batches()
    b = _epoch(50, 2, 4, seed=1, epoch=3)[1].batches()
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(full_permutation(50, 1, 3), full_permutation(50, 1, 4))
    assert not np.array_equal(full_permutation(50, 1, 3), full_permutation(50, 2, 3))


def test_dropped_remainder_changes_between_epochs():
    def used(epoch):
        return frozenset(np.concatenate([b for p in _epoch(23, 2, 5, epoch=epoch) for b in p.batches()]).tolist())

    assert len({used(e) for e in range(4)}) > 1


def test_resume_replays_exactly_the_remaining_batches():
    plan = _epoch(97, 2, 6)[1]
    full = plan.batches()
    resumed = plan.batches(start_step=3)
    assert len(resumed) == len(full) - 3
    assert all(np.array_equal(x, y) for x, y in zip(full[3:], resumed))


def test_global_batches_do_not_depend_on_world_size():
    # 4 ranks x 4 and 2 ranks x 8 and 1 rank x 16: the same global batch at every step
    layouts = [(4, 4), (2, 8), (1, 16)]
    globals_ = []
    for world, batch in layouts:
        plans = _epoch(200, world, batch)
        globals_.append([np.concatenate([p.batch(s) for p in plans]) for s in range(plans[0].steps)])
    for other in globals_[1:]:
        assert all(np.array_equal(x, y) for x, y in zip(globals_[0], other))


@pytest.mark.parametrize("n,world,batch", [(10, 3, 4), (7, 4, 2), (3, 4, 5), (100, 2, 16)])
def test_val_is_exactly_once_with_equal_forward_passes(n, world, batch):
    per_rank = [val_batches(n, world, r, batch) for r in range(world)]
    assert len({len(b) for b in per_rank}) == 1
    assert all(len(x) == batch for b in per_rank for x in b)
    ids = np.concatenate([x for b in per_rank for x in b])
    real = ids[ids != PAD]
    assert sorted(real.tolist()) == list(range(n))


def test_shard_group_permutation_is_a_permutation_local_to_groups():
    sizes = [5, 3, 8, 4, 6, 2]
    shard_of = np.repeat(np.arange(len(sizes)), sizes)
    order = shard_group_permutation(sizes, seed=0, epoch=0, group=2)
    assert sorted(order.tolist()) == list(range(sum(sizes)))
    # The order must split into segments that are each the union of exactly two whole shards: find the
    # prefixes made of whole shards only and count the shards in them.
    counts = np.zeros(len(sizes), dtype=int)
    whole_prefixes = []
    for sid in order:
        counts[shard_of[sid]] += 1
        if all(c in (0, s) for c, s in zip(counts, sizes)):
            whole_prefixes.append(int((counts > 0).sum()))
    assert {2, 4, 6} <= set(whole_prefixes)  # (a full shuffle essentially never closes after 2 or 4 shards)
    assert not np.array_equal(order, shard_group_permutation(sizes, seed=0, epoch=1, group=2))


def test_check_layout_counts_and_refusals():
    r = check_layout(1437, 360, world_size=2, batch_size=64, workers=2)
    assert r.train_steps == 11 and r.train_dropped == 1437 - 11 * 128
    assert r.val_steps == 3 and r.val_per_rank == (180, 180)
    with pytest.raises(ValueError, match="0 steps"):
        check_layout(100, 10, world_size=4, batch_size=32, workers=1)
    with pytest.raises(ValueError, match="batch size"):
        check_layout(100, 10, world_size=1, batch_size=0, workers=1)
