"""``swat-dist compare``: MLflow runs side by side - a table (markdown + CSV) and the plots users ask for:
train loss and val top-1 against step, and top-1 against GFLOPs with each SWAT model joined to its
baseline (the paper's Figure 1, for the user's own runs). Segmentation runs (those that log ``val/mIoU``)
get their mIoU in the table, a ``val_mIoU.png`` curve and ``miou_vs_gflops.png``.

Costs: one metric-history request per run and plotted key (a few per run), then matplotlib (~1 s import).
"""

from __future__ import annotations

import csv
import statistics
from pathlib import Path
from typing import Any

from .describe import experiment_name, local_db, tracking_uri

COLUMNS = ["run_id", "name", "model", "variant", "task", "params_m", "gflops", "best_top1", "ema_top1", "best_mIoU",
           "ema_mIoU", "images_per_sec", "wall_time_s", "steps", "status"]  # fmt: skip
CURVES = ("train/loss", "val/top1", "val/mIoU")  # a curve no run has is not drawn
PRIMARY = {"top1": "best_top1", "mIoU": "best_mIoU"}  # the Figure-1 plot of each task: its metric


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def row(run: dict[str, Any], curves: dict[str, list[tuple[int, float, int]]]) -> dict[str, Any]:
    """One table row from a run (see :func:`.mlflow_store.find_runs`) and its metric histories."""
    params, tags = run["params"], run["tags"]
    model = tags.get("swat.model") or params.get("model.name", "?")
    best = {k: max((v for _, v, _ in curves.get(k, [])), default=None) for k in _BEST}
    speed = [v for _, v, _ in curves.get("throughput/images_per_sec", [])]
    wall = (run["end_ms"] - run["start_ms"]) / 1000 if run["end_ms"] and run["start_ms"] else None
    return {
        "run_id": run["run_id"], "name": run["name"], "model": model,
        "variant": tags.get("swat.variant") or ("swat" if model.startswith("swat_") else "baseline"),
        "task": "segment" if "val/mIoU" in curves else "classify",
        "params_m": _float(params.get("model_params_m")), "gflops": _float(params.get("model_gflops")),
        **{column: best[key] for key, column in _BEST.items()},
        "images_per_sec": statistics.median(speed) if speed else None, "wall_time_s": wall,
        "steps": max((s for s, _, _ in curves.get("train/loss", [])), default=None), "status": run["status"],
    }  # fmt: skip


_BEST = {"val/top1": "best_top1", "val_ema/top1": "ema_top1", "val/mIoU": "best_mIoU", "val_ema/mIoU": "ema_mIoU"}


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cell(r[c]) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def pair_key(model: str) -> str:
    """SWAT models and their baselines share a key: the baseline's name (``swat_`` stripped, the convention)."""
    return model.removeprefix("swat_")


def plot(
    rows: list[dict[str, Any]], curves: dict[str, dict[str, list[tuple[int, float, int]]]], out: Path
) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a login node
    import matplotlib.pyplot as plt

    written = []
    for key in CURVES:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for r in rows:
            points = curves[r["run_id"]].get(key, [])
            if points:
                ax.plot([s for s, _, _ in points], [v for _, v, _ in points], label=f"{r['name']} ({r['variant']})")
        if not ax.get_legend_handles_labels()[0] and key == "val/mIoU":  # no segmentation run here
            plt.close(fig)
            continue
        ax.set(xlabel="optimizer step", ylabel=key, title=f"{key} against step")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        written.append(_save(fig, out / f"{key.replace('/', '_')}.png"))
        plt.close(fig)
    written.append(_pareto(rows, out / "top1_vs_gflops.png", plt, "top1"))
    if any(r["best_mIoU"] is not None for r in rows):
        written.append(_pareto(rows, out / "miou_vs_gflops.png", plt, "mIoU"))
    return written


def _pareto(rows: list[dict[str, Any]], path: Path, plt: Any, metric: str) -> Path:
    best = PRIMARY[metric]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    usable = [{**r, "best_top1": r[best]} for r in rows if r["gflops"] is not None and r[best] is not None]
    pairs: dict[str, dict[str, dict[str, Any]]] = {}
    for r in usable:  # the best run of each model stands for it
        slot = pairs.setdefault(pair_key(r["model"]), {})
        if r["variant"] not in slot or r["best_top1"] > slot[r["variant"]]["best_top1"]:
            slot[r["variant"]] = r
    for slot in pairs.values():
        if {"swat", "baseline"} <= slot.keys():
            a, b = slot["baseline"], slot["swat"]
            ax.plot([a["gflops"], b["gflops"]], [a["best_top1"], b["best_top1"]], color="0.6", zorder=1)
        for variant, marker in (("baseline", "s"), ("swat", "o")):
            if variant in slot:
                r = slot[variant]
                ax.scatter(
                    r["gflops"], r["best_top1"], marker=marker, color="C1" if variant == "swat" else "C0", zorder=2
                )
                ax.annotate(
                    r["model"], (r["gflops"], r["best_top1"]), fontsize=7, xytext=(4, 4), textcoords="offset points"
                )
    ax.set(xlabel="GFLOPs (fvcore, forward, per image)", ylabel=f"best val {metric} (%)",
           title=f"{metric} against GFLOPs: baseline (square) joined to SWAT (circle)")  # fmt: skip
    ax.grid(alpha=0.3)
    path = _save(fig, path)
    plt.close(fig)
    return path


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def compare(uri: str | None, experiment: str | None, run_ids: list[str], out: Path) -> list[Path]:
    """Write ``compare.md``, ``compare.csv`` and the PNG plots to ``out``; return the files written."""
    from . import mlflow_store

    uri = uri or tracking_uri(None, Path("runs"))
    db = local_db(uri)
    if db is not None and not db.is_file():
        raise ValueError(f"no tracking database at {db} (train with tracking on first, or pass --uri)")
    runs = mlflow_store.find_runs(uri, experiment_name(experiment), run_ids)
    if not runs:
        raise ValueError(f"no runs to compare in experiment {experiment_name(experiment)!r} of {uri}")
    keys = (*CURVES, "val_ema/top1", "val_ema/mIoU", "throughput/images_per_sec")
    curves = {
        r["run_id"]: {k: mlflow_store.history(uri, r["run_id"], k) for k in keys if k in r["metrics"]} for r in runs
    }
    rows = [row(r, curves[r["run_id"]]) for r in runs]
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.md").write_text(markdown(rows))
    with (out / "compare.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return [out / "compare.md", out / "compare.csv", *plot(rows, curves, out)]
