"""``run(cfg, env)``: build everything one rank needs, resume, fit, evaluate, summarise, tear down."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from torch import nn

from .. import collectives
from ..config import Config, check_runtime, config_hash, derived, save_config
from ..data.loaders.seeds import seed_everything
from ..dist import DistEnv
from ..redact import redact_tree
from ..tasks import build_task
from ..tracking.choose import make_tracker
from . import cuda_math, elastic, failure, run_lock
from .checkpoint import CheckpointManager, resume_point
from .checkpoint_paths import read_meta, tag_for
from .cpu_memory import keep_freed_memory
from .ema import EMA
from .engine import Engine, destroy, device_for, init_distributed, universal_copy
from .metrics import MetricsWriter, NullMetrics, finished_summary, peak_flops, train_flops_per_image
from .optim import param_groups
from .spec import spec_for
from .trainer import NonFiniteLoss, Trainer, TrainState


def _export_weights(run_dir: Path, ema: bool) -> list[Path]:
    from .export import export

    out = run_dir / "tracking"
    files = [export(run_dir, out / "model.safetensors")]
    return files + ([export(run_dir, out / "model_ema.safetensors", ema=True)] if ema else [])


def _forward_gmacs(model: nn.Module, img_size: int) -> float:
    from ..models.complexity import count_gflops  # fvcore: a jit trace, ~1 s for a 224 px model

    gmacs = count_gflops(model, img_size)
    model.train()  # count_gflops leaves the model in eval mode
    return gmacs


def _already_finished(run_dir: Path, resume_from: Path | None, chash: str, env: DistEnv) -> dict[str, Any] | None:
    """The summary of a finished run whose command runs again (a requeue, a re-run sweep), else None.

    Nothing is built, trained or written for it: a resumed loop with no steps left would rewrite
    ``summary.json`` with its own empty throughput and wall time, and ``metrics.jsonl`` without the final
    evaluation. Rank 0 reads the files and decides for every rank, so all return or none does.
    """
    if resume_from is None:
        return None
    step = int(read_meta(resume_from)["step"])
    done = collectives.broadcast_object(finished_summary(run_dir, step, chash, env.world_size) if env.is_main else None)
    if done is not None and env.is_main:
        print(f"[swat-dist] run {run_dir} already finished at step {step}, nothing to do; its summary: "
              f"{run_dir / 'summary.json'}", flush=True)  # fmt: skip
    return done


def run(cfg: Config, env: DistEnv) -> dict[str, Any]:
    """Train ``cfg`` as rank ``env.rank``; return the summary (also written to ``RUN/summary.json``)."""
    device = device_for(env)
    check_runtime(cfg, env.world_size, device.type)
    if device.type == "cpu":
        keep_freed_memory()  # no page faults re-fetching each step's activations (cpu_memory.py)
    cuda_math.apply(device, cfg.engine.cudnn_benchmark)
    init_distributed(env, device)
    run_dir, held = Path(derived(cfg, env.world_size)["output_dir"]), None
    start = failure.Start()
    try:
        start.look(run_dir, env)  # before the lock makes the folder
        # before anything is read or written in the folder; every rank stops at once if it is in use
        held = run_lock.take(run_dir, env)
        summary = _run(cfg, env, device, start)
    except (run_lock.FolderInUse, NonFiniteLoss):  # raised on every rank at the same point: leave together
        destroy()
        run_lock.release(held)
        raise
    except BaseException as err:  # this rank alone, maybe: say why now, then leave without waiting (failure.py)
        failed = failure.report(err, env, run_dir, in_run=not start.leaves_nothing)
        destroy(failed=True)
        run_lock.release(held)
        start.clean_up(env)
        raise failed from err
    destroy()  # its barrier: every rank is done with the folder before the lock goes
    run_lock.release(held)
    return summary


def _elastic(
    cfg: Config, run_dir: Path, resume_from: Path | None, env: DistEnv, device: Any
) -> tuple[Config, dict[str, str]]:
    """On another world size than the checkpoint's: the re-laid-out config (printed in one line) and the
    tracking param that records the change; else ``cfg`` as it is. Before anything is built."""
    meta = read_meta(resume_from) if resume_from is not None else None
    if meta is None or int(meta["world_size"]) == env.world_size:
        return cfg, {}
    cfg, line = elastic.relayout(cfg, meta, env.world_size, resume_from)  # type: ignore[arg-type]
    check_runtime(cfg, env.world_size, device.type)
    if env.is_main:
        print(line, flush=True)
        elastic.record_change(run_dir, meta, env.world_size, cfg)
    return cfg, elastic.change_note(meta, env.world_size, cfg)


def _run(cfg: Config, env: DistEnv, device: Any, phase: failure.Start) -> dict[str, Any]:
    run_dir = Path(derived(cfg, env.world_size)["output_dir"])
    # verified, and of this model, before anything is built or the run's config.yaml is replaced
    resume_from = resume_point(run_dir, cfg.checkpoint.resume, cfg.model.name, env)
    cfg, change = _elastic(cfg, run_dir, resume_from, env, device)
    d = derived(cfg, env.world_size)
    chash = config_hash(cfg)
    done = _already_finished(run_dir, resume_from, chash, env)
    if done is not None:
        return done
    if env.is_main:
        save_config(cfg, run_dir, redact=redact_tree)  # no credentials in the run folder (swat_dist/redact.py)
    seed_everything(cfg.seed)  # the same initial weights on every rank and in every run of this config
    spec = spec_for(cfg)
    model = spec.build_model(cfg, env)
    loaders = spec.build_loaders(cfg, model, env)
    flops_per_step = train_flops_per_image(_forward_gmacs(model, loaders.img_size)) * d["global_batch"]
    universal = bool(change) and cfg.engine.zero_stage > 0  # ZeRO 1-3 on another world size: the universal copy
    if universal:
        universal_copy(resume_from, env)  # type: ignore[arg-type]
    if cfg.engine.compile:  # after the fvcore count (a jit trace); in place, so no `_orig_mod.` in checkpoints
        model.compile()
    engine = Engine(model.to(device), param_groups(model, cfg.optim), cfg, env, universal=universal)
    ema = EMA(engine.local_params(), cfg.ema.decay, engine.release_gathered) if cfg.ema.enabled else None
    ckpt = CheckpointManager(run_dir, cfg.checkpoint, env, engine, ema)
    state = TrainState()
    if resume_from is not None:
        rank_state, _ = ckpt.load(resume_from, chash)
        state = TrainState(**rank_state["trainer"])
        loader = rank_state["loader"]
        if change:  # the position counted in the new micro-steps
            loader = elastic.loader_state(loader, env.world_size * cfg.data.batch_size)
        loaders.train.load_state_dict(loader)
    phase.set_up = True  # from here on the folder is a run's (a tracking run points at it): kept on failure
    tracker = make_tracker(
        cfg, env, run_dir, step=state.step, run_id=state.tracking_run_id, resume_from=resume_from,
        exporter=lambda: _export_weights(run_dir, ema=cfg.ema.enabled),
    )  # fmt: skip
    state.tracking_run_id = tracker.run_id or state.tracking_run_id
    # for `swat-dist compare`: parameters, and GFLOPs as fvcore counts them (forward multiply-adds per image)
    params_m = sum(p.numel() for p in model.parameters()) / 1e6
    sizes = {"model_params_m": params_m, "model_gflops": flops_per_step / d["global_batch"] / train_flops_per_image(1)}
    tracker.log_params({"config_hash": chash, "world_size": env.world_size, **d, **sizes, **change})
    metrics = MetricsWriter(run_dir, tracker, state.step if resume_from else None) if env.is_main else NullMetrics()
    task = build_task(cfg, loaders.augment)
    trainer = Trainer(
        cfg=cfg, env=env, d=d, engine=engine, loaders=loaders, task=task, ema=ema, ckpt=ckpt, metrics=metrics,
        tracker=tracker, flops_per_step=flops_per_step, peak_flops=peak_flops(device), state=state, config_hash=chash,
    )  # fmt: skip
    start, first_step = time.perf_counter(), state.step
    trainer.fit()
    if trainer.stopped:  # a stop signal (preemption): checkpoint written; the resumed run evaluates and sums up
        where = str(ckpt.dir / tag_for(state.step))
        return {"stopped": True, "steps": state.step, "world_size": env.world_size, "checkpoint": where}
    train_wall = time.perf_counter() - start
    if cfg.eval.at_end and state.val_step != state.step:
        trainer.validate()
    if ckpt.last_step != state.step:
        trainer.save()
    summary = {
        "steps": state.step,
        "epochs": state.epoch,
        "final": state.last_val,
        "best": state.best,
        "val_samples": int(state.last_val.get("val/samples", 0)),
        "val_set_size": loaders.val.num_samples,
        "skipped_batches": state.skipped,
        "images_per_sec": (state.step - first_step) * d["global_batch"] / max(train_wall, 1e-9),
        "wall_time_s": trainer.elapsed_s(),  # every attempt's, not only this one's
        "world_size": env.world_size,
        "config_hash": chash,
        "run_dir": str(run_dir),
        "checkpoint": str(ckpt.dir / tag_for(state.step)),
    }
    metrics.summary(summary)
    tracker.close()
    return summary
