"""The trainer as users run it, on one GPU (launch/gpu_check.sh; issue 24 item 6): a markdown report.

    .venv/bin/python launch/gpu_trainer.py --make-seg-data launch/gpu_wheels/seg-wds   # here (--prepare)
    python launch/gpu_trainer.py --out DIR --seg-data launch/gpu_wheels/seg-wds      # there (gpu_check.sh)
    .venv/bin/python launch/gpu_trainer.py --dry --out DIR   # here: micro models on the CPU, the same plumbing

Three parts, each a real ``swat-dist train`` process under a timeout (a hung NCCL init costs its timeout,
not the machine's whole lease):
1. the default engine (bf16, ZeRO-1, the full DeiT/SWAT recipe, synthetic 224 px data) for DeiT-S, Swin-T
   and Mixer-S, SWAT and baseline: images/s, MFU, data-wait fraction and peak memory of the last logged
   window (the first one holds the warm-up);
2. resume on the device: 10 steps straight vs 5 + resumed 5, per-step losses compared (RNG and loader
   restored; engine.cudnn_benchmark=false, the autotuner's choice may differ between processes);
3. the segmentation model (UperNet, BatchNorm) trained through DeepSpeed in bf16 on seg-digits: finite
   losses, the val mIoU, and the dtype the export keeps BatchNorm's running statistics in.
Host syncs per micro-batch are counted by tests/gpu (test_our_micro_step_makes_one_host_sync).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

PAIRS = [("deit_small_patch16_224", "swat_deit_small_patch16_224"),
         ("swin_tiny_patch4_window7_224", "swat_swin_tiny_patch4_window7_224"),
         ("mixer_s16_224", "swat_mixer_s16_224")]  # fmt: skip
DRY_PAIRS = [("deit_micro_patch4_32", "swat_deit_micro_patch4_32")]
QUIET = ["tracking.backend=none", "eval.every_epochs=0", "checkpoint.every_minutes=null", "sched.warmup_epochs=0"]


def train(args: list[str], log: Path, timeout: float) -> tuple[list[dict], str | None]:
    """Run ``swat-dist train ARGS``; (metrics.jsonl records, None) or ([], why it failed)."""
    out = next(Path(a.split("=", 1)[1]) for a in args if a.startswith("output_dir="))
    cmd = [sys.executable, "-m", "swat_dist", "train", *args]
    try:
        done = subprocess.run(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, timeout=timeout)
    except subprocess.TimeoutExpired:
        return [], f"timed out after {timeout:.0f} s (log: {log})"
    if done.returncode != 0:
        tail = log.read_text().strip().splitlines()[-1:] or ["?"]
        return [], f"exit {done.returncode}: {tail[0][:200]} (log: {log})"
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return rows, None


def throughput(work: Path, dry: bool, timeout: float) -> list[str]:
    batch, steps = (16, 6) if dry else (128, 40)
    lines = ["| model | images/s | MFU | data wait | peak GB |", "|---|---|---|---|---|"]
    for pair in DRY_PAIRS if dry else PAIRS:
        for name in pair:
            args = [f"model.name={name}", "model.num_classes=1000", "data.format=synthetic",
                    f"data.synthetic_samples={batch * (steps + 2)}", f"data.batch_size={batch}",
                    f"data.workers={2 if dry else 12}", f"max_steps={steps}", f"log_every={steps // 2}",
                    "sched.epochs=1", "checkpoint.every_steps=null", "eval.at_end=false", *QUIET,
                    f"output_dir={work / name}"]  # fmt: skip
            if dry:
                args += ["model.num_classes=10", "model.kwargs={depth: 1}"]
            rows, why = train(args, work / f"{name}.log", timeout)
            last = [r for r in rows if "throughput/images_per_sec" in r][-1:] if rows else []
            if why or not last:
                lines.append(f"| {name} | failed: {why or 'no metrics'} | | | |")
                continue
            r = last[0]
            wait = r["time/data_wait_s"] / r["time/step_s"]
            lines.append(f"| {name} | {r['throughput/images_per_sec']:,.0f} | {100 * r['throughput/mfu']:.1f}% | "
                         f"{100 * wait:.0f}% | {r['memory/peak_gb']:.2f} |")  # fmt: skip
    return lines


def resume(work: Path, dry: bool, timeout: float) -> list[str]:
    base = ["model.name=swat_deit_micro_patch4_32", "model.num_classes=10", "model.kwargs={depth: 1}",
            "data.format=synthetic", "data.synthetic_samples=64", "data.batch_size=16", "data.workers=0",
            "sched.epochs=10", "log_every=1", "eval.at_end=false", "engine.cudnn_benchmark=false", *QUIET]  # fmt: skip
    straight, why = train([*base, "max_steps=10", f"output_dir={work / 'straight'}"], work / "straight.log", timeout)
    if why:
        return [f"resume: the straight run failed: {why}"]
    half = [*base, "checkpoint.every_steps=5", f"output_dir={work / 'resumed'}"]
    for steps in (5, 10):
        rows, why = train([*half, f"max_steps={steps}"], work / f"resumed{steps}.log", timeout)
        if why:
            return [f"resume: the run to step {steps} failed: {why}"]
    want = {r["step"]: r["train/loss"] for r in straight if "train/loss" in r}
    got = {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}
    worst = max(abs(want[s] - got[s]) for s in range(6, 11))
    return [f"resume on the device: steps 6-10 after a resume at 5 vs straight, largest loss difference {worst:.3g}"]


def seg_data(dst: Path) -> Path:
    """seg-digits (80 pairs, 128 px) as wds shards in ``dst``: made here by --prepare and carried, since the
    GPU machine has no scikit-learn (where the digits come from)."""
    from swat_dist.data.convert.base import ConvertOptions
    from swat_dist.data.convert.front import convert
    from swat_dist.data.sets.seg_digits import write_seg_digits

    if not (dst / "index.json").is_file():
        write_seg_digits(dst.parent / f"{dst.name}-src", train=64, val=16, size=128)
        opts = ConvertOptions(fmt="wds", workers=2, task="segment", num_classes=11)
        if convert(dst.parent / f"{dst.name}-src", dst, opts) != 0:
            raise SystemExit(f"gpu_trainer: the seg-digits conversion into {dst} failed")
    return dst


SEG_DATA: list[Path] = []  # --seg-data, else made in the work folder


def seg(work: Path, dry: bool, timeout: float) -> list[str]:
    data = SEG_DATA[0] if SEG_DATA else seg_data(work / "seg-wds")
    args = ["-c", "configs/demo_seg_digits.yaml", f"data.path={data}", f"output_dir={work / 'seg'}",
            "engine.precision=bf16" if not dry else "engine.precision=fp32", "engine.zero_stage=1",
            f"max_steps={4 if dry else 40}", "log_every=2", "tracking.backend=none", "eval.at_end=true",
            "eval.every_epochs=0", "checkpoint.every_minutes=null"]  # fmt: skip
    rows, why = train(args, work / "seg.log", timeout)
    if why:
        return [f"segmentation: {why}"]
    losses = [r["train/loss"] for r in rows if "train/loss" in r]
    val = next((r for r in reversed(rows) if any(k.startswith("val/") for k in r)), {})
    from safetensors import safe_open

    from swat_dist.train.export import export

    file = export(work / "seg", work / "seg.safetensors")
    with safe_open(str(file), "pt") as f:
        dtypes = sorted({str(f.get_tensor(k).dtype) for k in f.keys() if k.endswith("running_var")})  # noqa: SIM118
    finite = all(math.isfinite(v) for v in losses)
    miou = {k: round(v, 4) for k, v in val.items() if k.startswith("val/")}
    return [f"segmentation in {'fp32' if dry else 'bf16'}: {len(losses)} logged losses, all finite: {finite}; "
            f"{miou}; BatchNorm running_var in the export: {dtypes}"]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="folder for runs, logs and trainer.md")
    parser.add_argument("--dry", action="store_true", help="micro models on the CPU: checks the plumbing here")
    parser.add_argument("--timeout", type=float, default=150.0, help="seconds per training process")
    parser.add_argument("--seg-data", type=Path, help="seg-digits wds shards made by --make-seg-data")
    parser.add_argument("--make-seg-data", type=Path, help="only make them in this folder, then exit")
    args = parser.parse_args()
    if args.make_seg_data:
        print(f"gpu_trainer: seg-digits shards in {seg_data(args.make_seg_data)}")
        return 0
    if args.out is None:
        parser.error("--out is required (unless --make-seg-data)")
    SEG_DATA.extend([args.seg_data] if args.seg_data else [])
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    report = [f"# trainer on {'CPU (dry run)' if args.dry else 'the GPU'}", ""]
    for part in (throughput, resume, seg):
        start = time.monotonic()
        work = out / part.__name__
        work.mkdir(exist_ok=True)
        report += [*part(work, args.dry, args.timeout), f"({part.__name__}: {time.monotonic() - start:.0f} s)", ""]
        (out / "trainer.md").write_text("\n".join(report) + "\n")
        print("\n".join(report[-3:]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
