"""A checkpoint's cost does not grow with the world size (issue 24 item 3).

Real gloo runs of the tiny model at 1, 2 and 4 ranks under ZeRO-1 with EMA, one save each: the bytes
written grow only with the sharded state (per-file overhead), not one fp32 EMA per rank; every rank
hashes a share of the files and rank 0's manifest holds their digests. Expected sizes come from the
model's parameter count. Then, without DeepSpeed, 2 gloo ranks verify a checkpoint at resume: each
hashes a disjoint share, and a file damaged in rank 1's share makes both ranks fall back alike.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import timm
import torch.distributed as tdist
import torch.multiprocessing as mp

from swat_dist.dist import DistEnv
from swat_dist.train import checkpoint_paths
from swat_dist.train.checkpoint import resume_point
from swat_dist.train.checkpoint_paths import MANIFEST, tag_for, write_manifest

from .test_train_runs import MODEL, _port, overrides

WORLDS = (1, 2, 4)
STEPS = 2


def _rank(rank: int, world: int, port: int, args: list[str], result: str) -> None:
    """test_train_runs' rank, each file it hashes (sha256_of) recorded in ``result.hashed.<rank>``."""
    from . import test_train_runs

    hashed = _recording()
    try:
        test_train_runs._rank(rank, world, port, args, result)
    finally:
        Path(f"{result}.hashed.{rank}").write_text(json.dumps(hashed))


def _recording() -> list[str]:
    """Record the name of every file this process hashes from now on (its own copy of the module)."""
    hashed: list[str] = []
    real = checkpoint_paths.sha256_of

    def sha256_of(path: Path) -> str:
        hashed.append(f"{path.parent.name}/{path.name}")
        return real(path)

    checkpoint_paths.sha256_of = sha256_of
    return hashed


@pytest.fixture(scope="module")
def saves(tmp_path_factory) -> dict[int, tuple[Path, list[set[str]]]]:
    """world size -> (the folder of its one save (ZeRO-1, EMA, 2 steps of 8 samples a rank), what each rank hashed)."""
    out = {}
    for world in WORLDS:
        tmp = tmp_path_factory.mktemp(f"world{world}")
        args = overrides(tmp / "run", "engine.zero_stage=1", "data.batch_size=8", "data.synthetic_samples=32",
                         f"max_steps={STEPS}", f"checkpoint.every_steps={STEPS}")  # fmt: skip
        result = tmp / "summary.json"
        mp.spawn(_rank, args=(world, _port(), args, str(result)), nprocs=world, join=True)
        hashed = [set(json.loads(Path(f"{result}.hashed.{r}").read_text())) for r in range(world)]
        out[world] = (tmp / "run" / "checkpoints" / tag_for(STEPS), hashed)
    return out


def _params() -> int:
    model = timm.create_model(MODEL, num_classes=10, depth=1)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _sizes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in folder.iterdir() if p.is_file()}


def test_bytes_grow_only_with_the_sharded_state(saves):
    ema = 4 * _params()  # one fp32 EMA of the model
    sizes = {world: _sizes(folder) for world, (folder, _) in saves.items()}
    for world, files in sizes.items():
        assert files["rank00000.pt"] > ema  # rank 0 holds the EMA...
        others = [files[f"rank{r:05d}.pt"] for r in range(1, world)]
        assert all(size < ema / 10 for size in others), others  # ...the other ranks their small state only
        optim = sum(v for k, v in files.items() if "optim_states" in k)
        assert 3 * ema <= optim < 3 * ema + world * ema / 10  # fp32 master + 2 moments, sharded: 12 B/param
    # 3 more ranks than 1 cost less than one EMA copy (the old layout wrote 3 more: one per rank file)
    total = {world: sum(files.values()) for world, files in sizes.items()}
    assert total[2] - total[1] < ema / 10 and total[4] - total[1] < ema / 4, total


def test_every_rank_hashes_a_share_and_the_manifest_holds_the_digests(saves):
    for folder, hashed in saves.values():
        entries = json.loads((folder / MANIFEST).read_text())["files"]
        assert set(entries) == {p.name for p in folder.iterdir() if p.name != MANIFEST}
        for name, entry in entries.items():
            data = (folder / name).read_bytes()
            assert entry == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        # each file hashed once, by one rank, every rank some (the save's: the resume-time check hashes none)
        assert all(hashed) and sum(len(h) for h in hashed) == len(set().union(*hashed)) == len(entries)
        assert set().union(*hashed) == {f"{folder.name}/{name}" for name in entries}


def _verify(rank: int, port: int, run: str, result: str) -> None:
    tdist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    hashed = _recording()
    env = DistEnv(rank=rank, local_rank=rank, world_size=2, local_world_size=2, master_port=port, launcher="torchrun")
    choice = resume_point(Path(run), "auto", MODEL, env)
    Path(f"{result}.{rank}").write_text(json.dumps(dict(choice=str(choice), hashed=hashed)))
    tdist.destroy_process_group()


def _checkpoint(folder: Path, step: int) -> None:
    folder.mkdir(parents=True)
    for name, size in (("a.bin", 3000), ("b.bin", 2000), ("c.bin", 1500), ("d.bin", 100)):
        (folder / name).write_bytes(bytes([step]) * size)
    (folder / "meta.json").write_text(json.dumps(dict(step=step, world_size=2, model=MODEL)))
    write_manifest(folder)


def _resume_on_two(run: Path, tmp: Path) -> list[dict]:
    result = tmp / f"verify-{len(list(tmp.glob('verify-*')))}"
    mp.spawn(_verify, args=(_port(), str(run), str(result)), nprocs=2, join=True)
    return [json.loads(Path(f"{result}.{r}").read_text()) for r in range(2)]


def test_two_ranks_verify_disjoint_shares_and_agree(tmp_path):
    ckpts = tmp_path / "run" / "checkpoints"
    _checkpoint(ckpts / tag_for(1), 1)
    _checkpoint(ckpts / tag_for(2), 2)
    (ckpts / "latest").write_text(tag_for(2) + "\n")
    ranks = _resume_on_two(tmp_path / "run", tmp_path)
    assert ranks[0]["choice"] == ranks[1]["choice"] == str(ckpts / tag_for(2))
    shares = [set(r["hashed"]) for r in ranks]
    assert shares[0] and shares[1] and not shares[0] & shares[1]
    assert shares[0] | shares[1] == {
        f"{tag_for(2)}/{n}" for n in json.loads((ckpts / tag_for(2) / MANIFEST).read_text())["files"]
    }
    damaged = sorted(shares[1])[0]  # a byte flipped (same size) in a file only rank 1 hashes
    data = bytearray((ckpts / damaged).read_bytes())
    data[0] ^= 1
    (ckpts / damaged).write_bytes(bytes(data))
    ranks = _resume_on_two(tmp_path / "run", tmp_path)
    assert ranks[0]["choice"] == ranks[1]["choice"] == str(ckpts / tag_for(1))


def test_gather_object_is_every_ranks_object_on_rank_0_only(tmp_path):
    mp.spawn(_gather, args=(_port(), str(tmp_path)), nprocs=2, join=True)
    assert json.loads((tmp_path / "gather.0").read_text()) == [{"rank": 0}, {"rank": 1}]
    assert json.loads((tmp_path / "gather.1").read_text()) is None


def _gather(rank: int, port: int, tmp: str) -> None:
    from swat_dist import collectives

    tdist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    Path(tmp, f"gather.{rank}").write_text(json.dumps(collectives.gather_object({"rank": rank})))
    tdist.destroy_process_group()
