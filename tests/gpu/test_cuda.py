"""CUDA-only checks (``-m gpu``; skipped without a GPU, run by launch/gpu_check.sh on a lent GPU machine):
one ZeRO-1 bf16 training run through DeepSpeed on NCCL, the EMA under bf16, our collectives on NCCL, the
segmentation model in bf16, and the FFCV loader feeding the GPU (where ffcv is installed)."""

from __future__ import annotations

import importlib.util
import json
import math
import socket

import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp

from swat_dist import collectives
from swat_dist.train.ema import EMA

from ..train.test_train_runs import losses, overrides, spawn

pytestmark = pytest.mark.gpu


def test_zero1_bf16_training_through_deepspeed_on_nccl(tmp_path):
    out = tmp_path / "run"
    args = overrides(out, "engine.zero_stage=1", "engine.precision=bf16", "max_steps=6", "eval.every_epochs=1")
    summary = spawn(1, args, tmp_path)  # one rank: the process group is NCCL because the device is CUDA
    loss = losses(out)
    assert sorted(loss) == list(range(1, 7)) and all(math.isfinite(v) for v in loss.values())
    assert summary["steps"] == 6 and summary["final"]["val/samples"] == summary["val_set_size"]
    assert summary["final"]["val/loss"] != summary["final"]["val_ema/loss"]  # the bf16 EMA moved away
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(r["memory/peak_gb"] > 0 for r in rows if "memory/peak_gb" in r)


def test_ema_of_bf16_weights_is_an_fp32_lerp():
    p = torch.randn(1000, device="cuda", dtype=torch.bfloat16)
    ema = EMA([p], decay=0.9)
    want = p.float().clone()
    for _ in range(3):
        p.add_(torch.randn_like(p))
        ema.update()
        want.lerp_(p.float(), 0.1)
    assert ema.shadow[0].dtype == torch.float32 and ema.shadow[0].is_cuda
    torch.testing.assert_close(ema.shadow[0], want, rtol=0, atol=1e-6)


def test_collectives_on_nccl_take_cuda_tensors_and_refuse_cpu_ones():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tdist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        collectives.set_device(torch.device("cuda", 0))
        assert collectives.sum_(torch.ones(3, device="cuda")).tolist() == [1.0, 1.0, 1.0]
        with pytest.raises(RuntimeError, match="process group runs on cuda"):
            collectives.max_(torch.ones(3))
        assert collectives.broadcast_object({"run": 1}) == {"run": 1}
    finally:
        collectives.set_device(torch.device("cpu"))
        tdist.destroy_process_group()


def test_segmentation_model_trains_in_bf16():
    from swat_dist.models.seg import SegmentationModel
    from swat_dist.tasks.segment import SegmentationTask

    model = SegmentationModel("swat_swin_micro_patch4_window4_32", 11, img_size=64, channels=32, aux_channels=16)
    model = model.cuda().to(torch.bfloat16)
    task = SegmentationTask(11)
    x, y = task.batch(torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8), torch.randint(0, 11, (2, 64, 64)),
                      torch.device("cuda"), train=True)  # fmt: skip
    loss = task.loss(model(x.to(torch.bfloat16)), y)
    loss.backward()
    assert math.isfinite(loss.item()) and all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.skipif(importlib.util.find_spec("ffcv") is None, reason="ffcv is not installed here (C extension)")
def test_ffcv_batches_reach_the_gpu_pinned_and_normalised(tmp_path):
    from swat_dist.data.convert.base import ConvertOptions
    from swat_dist.data.convert.front import convert
    from swat_dist.data.loaders.ffcv_loader import BetonSplit, FfcvTrainLoader
    from swat_dist.data.pixels.transforms import DeviceAugment, colour_transform
    from swat_dist.tasks.classify import ClassificationTask

    from ..data.helpers import write_id_folder

    write_id_folder(tmp_path / "src", classes=3, per_class={"train": 8, "val": 2})
    assert convert(tmp_path / "src", tmp_path / "ffcv", ConvertOptions(fmt="ffcv", workers=1, max_resolution=64)) == 0
    loader = FfcvTrainLoader(BetonSplit(tmp_path / "ffcv", "train"), world_size=1, rank=0, batch_size=4, size=32)
    task = ClassificationTask(DeviceAugment(3))
    images, labels = next(iter(loader))
    assert images.is_pinned()  # allocated page-locked where it is written (ffcv.host_batch)
    coloured = FfcvTrainLoader(BetonSplit(tmp_path / "ffcv", "train"), world_size=1, rank=0, batch_size=4, size=32,
                               workers=2, colour=colour_transform(32, "rand-m9-mstd0.5-inc1", 0.0))  # fmt: skip
    assert next(iter(coloured))[0].is_pinned()  # gathered from the colour processes into a pinned batch
    coloured.close()
    x, y = task.batch(images, labels, torch.device("cuda"), train=True)
    assert x.is_cuda and y.is_cuda and x.dtype == torch.float32 and x.shape == (4, 3, 32, 32)


def test_each_sample_position_draws_its_own_drop_path_mask_on_cuda():
    """The CUDA generator is seeded per micro-batch from its global sample position (issue 24): two ranks
    draw different stochastic-depth masks, an elastic layout the same ones, a rerun the same ones."""
    from timm.layers import DropPath

    from swat_dist.data.loaders.plan import sample_position
    from swat_dist.data.loaders.seeds import seed_everything
    from swat_dist.train.trainer import step_seed

    cuda, x = torch.device("cuda", 0), torch.ones(64, 4, 8, device="cuda")
    drop = DropPath(0.5).train()

    def mask(step: int, world: int, rank: int) -> torch.Tensor:
        seed_everything(step_seed(0, 0, sample_position(step, world, rank, 64)), cuda)
        return drop(x)[:, 0, 0].cpu()

    rank0, rank1 = mask(3, 2, 0), mask(3, 2, 1)
    assert not torch.equal(rank0, rank1)  # before: the same default CUDA seed on every rank, the same mask
    assert torch.equal(rank0, mask(6, 1, 0)) and torch.equal(rank1, mask(7, 1, 0))  # 1 rank, accumulation 2
    assert torch.equal(rank0, mask(3, 2, 0))


def test_device_from_what_the_task_sees_on_cuda():
    """One visible GPU (--gpus-per-task, --gpu-bind) is cuda:0 for any local rank: set_device(local_rank)
    failed there with "invalid device ordinal" (issue 24)."""
    import os
    import subprocess
    import sys

    code = (
        "from swat_dist.dist import DistEnv; from swat_dist.train.engine import device_for; "
        "print(device_for(DistEnv(rank=3, local_rank=3, world_size=4, local_world_size=4)))"
    )
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "0"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "cuda:0"


def test_system_metrics_read_every_gpu_without_creating_a_cuda_context():
    """NVML, not torch.cuda.mem_get_info (which made a ~0.3-0.5 GB context on every GPU it asked about:
    every other rank's); utilisation is logged too (issue 24)."""
    import subprocess
    import sys

    code = (
        "import json, torch; from swat_dist.tracking.system import sample; s = sample('node0'); "
        "print(json.dumps({'initialized': torch.cuda.is_initialized(), 'keys': sorted(s)}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["initialized"] is False
    for key in ("memory_usage_megabytes", "memory_usage_percentage", "utilization_percentage"):
        assert f"system/node0/gpu_0_{key}" in got["keys"], got["keys"]


def test_our_micro_step_makes_one_host_sync(tmp_path):
    """Per micro-batch the trainer itself waits for the GPU once (the flags read that decides whether to
    skip the backward); the flags' host part goes up from page-locked memory without a wait (issue 24).
    Counted with torch's sync debug mode, by the Python frame that caused each sync; DeepSpeed's own are
    printed for docs/benchmarks.md, not asserted."""
    out = tmp_path / "run"
    args = overrides(out, "engine.zero_stage=1", "engine.precision=bf16", "max_steps=8", "log_every=100",
                     "checkpoint.every_steps=null", "eval.at_end=false", "ema.enabled=false")  # fmt: skip
    result = tmp_path / "syncs.json"
    mp.spawn(_count_syncs, args=(args, str(result)), nprocs=1, join=True)
    counts = json.loads(result.read_text())
    print("host syncs per micro-batch by file:", counts)
    ours = {f: n for f, n in counts["per_step"].items() if f.startswith("swat_dist:")}
    assert counts["steps"] >= 5 and ours == {"swat_dist:trainer.py": 1.0}, counts


def _count_syncs(rank: int, args: list[str], result: str) -> None:
    import collections
    import warnings
    from pathlib import Path

    from swat_dist.config import load_config
    from swat_dist.dist import DistEnv
    from swat_dist.train import trainer as T
    from swat_dist.train.run import run

    seen: collections.Counter[str] = collections.Counter()
    original, steps = T.Trainer._micro_step, [0]

    def counted(self, images, labels):  # type: ignore[no-untyped-def]
        if self.state.step < 2:  # warm-up steps (allocations, first kernels) are not counted
            return original(self, images, labels)
        torch.cuda.set_sync_debug_mode("warn")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            stepped = original(self, images, labels)
        torch.cuda.set_sync_debug_mode("default")
        steps[0] += 1
        for w in caught:
            if "synchroniz" in str(w.message):
                seen[("swat_dist:" if "/swat_dist/" in w.filename else "other:") + Path(w.filename).name] += 1
        return stepped

    T.Trainer._micro_step = counted
    run(load_config([], args), DistEnv(rank=0, local_rank=0, world_size=1, local_world_size=1, launcher="single"))
    per_step = {k: v / steps[0] for k, v in seen.items()}
    Path(result).write_text(json.dumps({"steps": steps[0], "per_step": per_step}))
