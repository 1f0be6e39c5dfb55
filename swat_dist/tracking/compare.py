"""``swat-dist compare``: MLflow runs side by side - a table (markdown + CSV) and the plots users ask for:
train loss and val top-1 against step, and top-1 against GFLOPs with each SWAT model joined to its
baseline (the paper's Figure 1, for the user's own runs). Segmentation runs (those that log ``val/mIoU``)
get their mIoU in the table, a ``val_mIoU.png`` curve and ``miou_vs_gflops.png``.

Each run is labelled by its model and start time (runs of one config share a name) and keeps one colour in
every plot.

Costs: one metric-history request per run and plotted key (a few per run), one small artifact download per
run (its ``summary.json``), then matplotlib (~1 s import).
"""

from __future__ import annotations

import csv
import statistics
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .describe import experiment_name, local_db, tracking_uri

if TYPE_CHECKING:  # matplotlib is imported when plotting (~1 s)
    from matplotlib.figure import Figure

Curves = dict[str, list[tuple[int, float, int]]]  # metric key: (step, value, timestamp) points

COLUMNS = ["run_id", "label", "name", "model", "variant", "task", "params_m", "gflops", "best_top1", "ema_top1",
           "best_mIoU", "ema_mIoU", "images_per_sec", "data_wait", "wall_time_s", "steps", "status",
           "run_dir"]  # fmt: skip
WAIT = "time/data_wait_fraction_max"  # the slowest rank's share of step time spent waiting for data
CURVES = ("train/loss", "val/top1", "val/mIoU")  # a curve no run has is not drawn
EMA_CURVE = {"val/top1": "val_ema/top1", "val/mIoU": "val_ema/mIoU"}  # drawn dashed beside its run's curve
PRIMARY = {"top1": "best_top1", "mIoU": "best_mIoU"}  # the Figure-1 plot of each task: its metric


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _started(start_ms: int | None) -> str:
    return datetime.fromtimestamp(start_ms / 1000, timezone.utc).strftime("%m-%d %H:%M:%S") if start_ms else "?"


def row(run: dict[str, Any], curves: Curves, summary: dict[str, Any] | None = None) -> dict[str, Any]:
    """One table row from a run (see :func:`.mlflow_store.find_runs`), its metric histories and its
    ``summary.json`` (:func:`.mlflow_store.summary`; None for a run that has not finished).

    The wall time is the run's own (``summary.json``), never MLflow's end minus start: a run is created
    when the store first answers and its points may arrive long after they were logged, so those
    timestamps can say 0.2 s of a 27 s run. A run without a summary shows none.
    """
    params, tags = run["params"], run["tags"]
    model = tags.get("swat.model") or params.get("model.name", "?")
    best = {k: max((v for _, v, _ in curves.get(k, [])), default=None) for k in _BEST}
    speed = [v for _, v, _ in curves.get("throughput/images_per_sec", [])]
    wait = [v for _, v, _ in curves.get(WAIT, [])]
    return {
        "run_id": run["run_id"], "label": f"{model} {_started(run['start_ms'])}", "name": run["name"], "model": model,
        "variant": tags.get("swat.variant") or ("swat" if model.startswith("swat_") else "baseline"),
        "task": "segment" if "val/mIoU" in curves else "classify",
        "params_m": _float(params.get("model_params_m")), "gflops": _float(params.get("model_gflops")),
        **{column: best[key] for key, column in _BEST.items()},
        "images_per_sec": statistics.median(speed) if speed else None,
        "data_wait": statistics.median(wait) if wait else None,
        "wall_time_s": _float((summary or {}).get("wall_time_s")),
        "steps": max((s for s, _, _ in curves.get("train/loss", [])), default=None), "status": run["status"],
        "run_dir": params.get("output_dir"),
    }  # fmt: skip


_BEST = {"val/top1": "best_top1", "val_ema/top1": "ema_top1", "val/mIoU": "best_mIoU", "val_ema/mIoU": "ema_mIoU"}


def unique_labels(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs of one config share a name (and a model): a label names the model and the start time (UTC, to
    the second), and the run id's first 8 digits where two runs started in the same second."""
    count = Counter(r["label"] for r in rows)
    return [{**r, "label": f"{r['label']} {r['run_id'][:8]}"} if count[r["label"]] > 1 else r for r in rows]


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


def colours(rows: list[dict[str, Any]]) -> dict[str, tuple[float, ...]]:
    """One colour per run, in table order, used by every figure: the same colour is the same run
    (tab10; tab20 beyond 10 runs, repeating beyond 20)."""
    from matplotlib import colormaps

    palette = colormaps["tab10" if len(rows) <= 10 else "tab20"].colors  # type: ignore[attr-defined]
    return {r["run_id"]: tuple(palette[i % len(palette)]) for i, r in enumerate(rows)}


def figures(rows: list[dict[str, Any]], curves: dict[str, Curves]) -> dict[str, Figure]:
    """Every plot, by file name without ``.png``; built, not saved (see :func:`plot`)."""
    colour = colours(rows)
    figs = {key.replace("/", "_"): _curve(rows, curves, key, colour) for key in CURVES}
    out: dict[str, Figure] = {name: fig for name, fig in figs.items() if fig is not None}
    out["top1_vs_gflops"] = _pareto(rows, "top1", colour)
    if any(r["best_mIoU"] is not None for r in rows):
        out["miou_vs_gflops"] = _pareto(rows, "mIoU", colour)
    return out


def plot(rows: list[dict[str, Any]], curves: dict[str, Curves], out: Path) -> list[Path]:
    written = []
    for name, fig in figures(rows, curves).items():
        fig.tight_layout()
        fig.savefig(out / f"{name}.png", dpi=120)  # a Figure without pyplot: no display, nothing left open
        written.append(out / f"{name}.png")
    return written


def _curve(rows: list[dict[str, Any]], curves: dict[str, Curves], key: str, colour: dict[str, Any]) -> Figure | None:
    """``key`` against step, one colour per run; its EMA (``val_ema/*``) dashed in the run's colour.
    Evaluations get markers: a run evaluated once is one point, which a line alone does not draw."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    for r in rows:
        for k, style, suffix in ((key, "-", ""), (EMA_CURVE.get(key), "--", " EMA")):
            points = curves[r["run_id"]].get(k, []) if k else []
            if points:
                marker = "o" if key != "train/loss" or len(points) == 1 else None
                ax.plot([s for s, _, _ in points], [v for _, v, _ in points], linestyle=style, marker=marker,
                        markersize=4, color=colour[r["run_id"]], label=r["label"] + suffix)  # fmt: skip
    if not ax.lines and key == "val/mIoU":  # no segmentation run here
        return None
    ax.set(xlabel="optimizer step", ylabel=key, title=f"{key} against step")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=7)
    return fig


def _pareto(rows: list[dict[str, Any]], metric: str, colour: dict[str, Any]) -> Figure:
    from matplotlib.figure import Figure

    best = PRIMARY[metric]
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
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
                ax.scatter(r["gflops"], r["best_top1"], marker=marker, color=colour[r["run_id"]], zorder=2,
                           label=r["label"])  # fmt: skip
                ax.annotate(
                    r["model"], (r["gflops"], r["best_top1"]), fontsize=7, xytext=(4, 4), textcoords="offset points"
                )
    ax.set(xlabel="GFLOPs (fvcore, forward, per image)", ylabel=f"best val {metric} (%)",
           title=f"{metric} against GFLOPs: baseline (square) joined to SWAT (circle)")  # fmt: skip
    ax.grid(alpha=0.3)
    if ax.collections:
        ax.legend(fontsize=7)
    return fig


def collect(
    uri: str | None, experiment: str | None, run_ids: list[str]
) -> tuple[list[dict[str, Any]], dict[str, Curves]]:
    """The table's rows and each run's metric histories (by run id), read from the tracking store."""
    from . import mlflow_store

    uri = uri or tracking_uri(None, Path("runs"))
    db = local_db(uri)
    if db is not None and not db.is_file():
        raise ValueError(f"no tracking database at {db} (train with tracking on first, or pass --uri)")
    runs = mlflow_store.find_runs(uri, experiment_name(experiment), run_ids)
    if not runs:
        raise ValueError(f"no runs to compare in experiment {experiment_name(experiment)!r} of {uri}")
    keys = (*CURVES, "val_ema/top1", "val_ema/mIoU", "throughput/images_per_sec", WAIT)
    curves = {
        r["run_id"]: {k: mlflow_store.history(uri, r["run_id"], k) for k in keys if k in r["metrics"]} for r in runs
    }
    rows = [row(r, curves[r["run_id"]], mlflow_store.summary(uri, r["run_id"])) for r in runs]
    return unique_labels(rows), curves


def compare(uri: str | None, experiment: str | None, run_ids: list[str], out: Path) -> list[Path]:
    """Write ``compare.md``, ``compare.csv`` and the PNG plots to ``out``; return the files written."""
    rows, curves = collect(uri, experiment, run_ids)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.md").write_text(markdown(rows))
    with (out / "compare.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return [out / "compare.md", out / "compare.csv", *plot(rows, curves, out)]
