"""``swat-dist compare --sweep SWEEP`` / ``--parent RUN_ID``: a sweep's children aggregated over seeds.

The runs are the parent's children in MLflow (``mlflow.parentRunId``); each is grouped by its grid values
(the ``sweep.<key>`` params) without the seed; only FINISHED runs count (the others are named on stderr).
Per group: n, and mean +- sample std (n - 1) of the best and final top-1 (EMA too; mIoU for segmentation
runs), params, GFLOPs, images/s and wall time. Each SWAT group is set beside its baseline group (same
other grid values, model ``swat_X`` -> ``X``): the difference of the means and whether it exceeds the
seed noise, taken as two standard errors of the difference,
``2 * sqrt(s_a^2 / n_a + s_b^2 / n_b)`` (about a 95% band for normal seed noise; undefined with one seed).

Writes ``sweep.md``, ``sweep_groups.csv``, ``sweep_pairs.csv`` and the paper's Figure 1 for these runs
(``figure1.png``: top-1 against GFLOPs and against params, error bars over seeds, an arrow from each
baseline to its SWAT model; ``figure1_mIoU.png`` for segmentation). Costs as :mod:`.compare`: a few
metric-history requests and one small artifact download per run.
"""

from __future__ import annotations

import csv
import json
import math
import re
import statistics
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .compare import pair_key, row
from .describe import tracking_uri

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SEED_KEYS = {"seed"}  # grid keys aggregated over, not grouped by
KEYS = ("val/top1", "val_ema/top1", "val/mIoU", "val_ema/mIoU", "train/loss", "throughput/images_per_sec")
# per-run value -> aggregated column stem
VALUES = {"best_top1": "best_top1", "final_top1": "final_top1", "ema_top1": "best_ema_top1",
          "final_ema_top1": "final_ema_top1", "best_mIoU": "best_mIoU", "final_mIoU": "final_mIoU",
          "ema_mIoU": "best_ema_mIoU", "final_ema_mIoU": "final_ema_mIoU", "params_m": "params_m",
          "gflops": "gflops", "images_per_sec": "images_per_sec", "wall_time_s": "wall_time_s"}  # fmt: skip
COMPARED = ("best_top1", "final_top1", "best_ema_top1", "final_ema_top1", "best_mIoU", "final_mIoU")


def where(sweep_dir: Path | None, parent: str | None, uri: str | None) -> tuple[str, str]:
    """(tracking URI, parent run id) from a sweep folder's manifest, or from ``--parent`` (and ``--uri``)."""
    if parent:
        return uri or tracking_uri(None, Path("runs")), parent
    assert sweep_dir is not None
    try:
        manifest = json.loads((sweep_dir / "sweep.json").read_text())
    except (OSError, ValueError):
        raise ValueError(f"{sweep_dir}: no sweep.json (give the folder `swat-dist sweep` printed)") from None
    tracking = manifest.get("tracking") or {}
    if not tracking.get("parent_run_id"):
        raise ValueError(f"{sweep_dir}: this sweep ran without MLflow tracking (tracking.backend=none): no parent run")
    return uri or tracking["uri"], tracking["parent_run_id"]


def _last(points: list[tuple[int, float, int]]) -> float | None:
    return max(points)[1] if points else None  # the highest step's value


def sweep_row(run: dict[str, Any], curves: dict[str, list[tuple[int, float, int]]], summary: Any) -> dict[str, Any]:
    """:func:`.compare.row` plus the final values and the run's grid point (its ``sweep.*`` params)."""
    r = row(run, curves, summary)
    finals = {"final_top1": "val/top1", "final_ema_top1": "val_ema/top1", "final_mIoU": "val/mIoU",
              "final_ema_mIoU": "val_ema/mIoU"}  # fmt: skip
    r.update({col: _last(curves.get(key, [])) for col, key in finals.items()})
    grid = {k.removeprefix("sweep."): v for k, v in run["params"].items() if k.startswith("sweep.")}
    r["point"] = grid
    other = [f"{k}={v}" for k, v in sorted(grid.items()) if k not in SEED_KEYS | {"model.name"}]
    r["group"] = " ".join([r["model"], *other])
    return r


def collect(uri: str, parent: str) -> list[dict[str, Any]]:
    import os

    from . import mlflow_store

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per summary.json otherwise
    runs = mlflow_store.find_children(uri, parent)
    if not runs:
        raise ValueError(f"parent run {parent} in {uri} has no child runs (yet)")
    # a running element's "final" value is only its latest, and a failed one's is no result: compare finished runs
    unfinished = [r for r in runs if r.get("status") != "FINISHED"]
    runs = [r for r in runs if r.get("status") == "FINISHED"]
    if unfinished:
        which = ", ".join(f"{r.get('name') or r['run_id']} ({r.get('status')})" for r in unfinished)
        print(f"compare --sweep: left out {len(unfinished)} child run(s) not FINISHED: {which}", file=sys.stderr)
    if not runs:
        raise ValueError(f"parent run {parent} in {uri} has no FINISHED child runs (yet)")
    out = []
    for run in runs:
        curves = {k: mlflow_store.history(uri, run["run_id"], k) for k in KEYS if k in run["metrics"]}
        out.append(sweep_row(run, curves, mlflow_store.summary(uri, run["run_id"])))
    return out


def mean_std(values: list[float | None]) -> tuple[float | None, float | None]:
    have = [v for v in values if v is not None]
    if not have:
        return None, None
    return statistics.fmean(have), (statistics.stdev(have) if len(have) > 1 else None)


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per group (first-seen order): n, model, variant, and ``<stem>_mean`` / ``<stem>_std``."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r["group"], []).append(r)
    out = []
    for name, members in groups.items():
        first = members[0]
        rec: dict[str, Any] = {"group": name, "model": first["model"], "variant": first["variant"],
                               "task": first["task"], "n": len(members)}  # fmt: skip
        for col, stem in VALUES.items():
            rec[f"{stem}_mean"], rec[f"{stem}_std"] = mean_std([m[col] for m in members])
        rec["other"] = {k: v for k, v in first["point"].items() if k not in SEED_KEYS | {"model.name"}}
        out.append(rec)
    return out


def pairs(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each SWAT group beside its baseline group: per compared value, the difference and the noise band."""
    out = []
    for s in groups:
        if s["variant"] != "swat":
            continue
        base = next((b for b in groups if b["variant"] == "baseline" and b["model"] == pair_key(s["model"])
                     and b["other"] == s["other"]), None)  # fmt: skip
        if base is None:
            continue
        for stem in COMPARED:
            a, b = s[f"{stem}_mean"], base[f"{stem}_mean"]
            if a is None or b is None:
                continue
            sa, sb = s[f"{stem}_std"], base[f"{stem}_std"]
            noise = 2 * math.sqrt(sa**2 / s["n"] + sb**2 / base["n"]) if sa is not None and sb is not None else None
            out.append({"swat": s["group"], "baseline": base["group"], "value": stem, "swat_mean": a,
                        "baseline_mean": b, "diff": a - b, "noise_2se": noise,
                        "exceeds_noise": None if noise is None else abs(a - b) > noise})  # fmt: skip
    return out


def _fmt(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "-"
    return f"{mean:.4g}" if std is None else f"{mean:.4g} ± {std:.2g}"


def markdown(groups: list[dict[str, Any]], pair_rows: list[dict[str, Any]]) -> str:
    seg = any(g["best_mIoU_mean"] is not None for g in groups)
    stems = ["best_top1", "final_top1", "best_ema_top1", "final_ema_top1"]
    stems += ["best_mIoU", "final_mIoU"] if seg else []
    stems += ["params_m", "gflops", "images_per_sec", "wall_time_s"]
    head = ["group", "n", *stems]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for g in groups:
        cells = [g["group"], str(g["n"]), *(_fmt(g[f"{s}_mean"], g[f"{s}_std"]) for s in stems)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| SWAT | baseline | value | SWAT mean | baseline mean | diff | 2 SE (seed noise) | beyond noise |",
              "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for p in pair_rows:
        noise = "-" if p["noise_2se"] is None else f"{p['noise_2se']:.3g}"
        verdict = {True: "yes", False: "no", None: "n/a (1 seed)"}[p["exceeds_noise"]]
        lines.append(f"| {p['swat']} | {p['baseline']} | {p['value']} | {p['swat_mean']:.4g} | "
                     f"{p['baseline_mean']:.4g} | {p['diff']:+.3g} | {noise} | {verdict} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def figure(groups: list[dict[str, Any]], metric: str) -> Figure:
    """Figure 1: best ``metric`` (mean, error bars = std over seeds) against GFLOPs and against params."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.8))
    stem = f"best_{metric}"
    for ax, (x, xlabel) in zip(fig.subplots(1, 2), (("gflops", "GFLOPs (fvcore, forward, per image)"),
                                                    ("params_m", "parameters (M)"))):  # fmt: skip
        usable = [g for g in groups if g[f"{x}_mean"] is not None and g[f"{stem}_mean"] is not None]
        points = [(g[f"{x}_mean"], g[f"{stem}_mean"]) for g in usable]
        for g, pos, lift in zip(usable, points, _label_rows(points)):
            swat = g["variant"] == "swat"
            ax.errorbar(*pos, yerr=g[f"{stem}_std"] or 0, fmt="o" if swat else "s", capsize=3,
                        color="tab:red" if swat else "tab:blue", zorder=3)  # fmt: skip
            ax.annotate(f"{short_name(g['group'])} (n={g['n']})", pos, fontsize=7, xytext=(6, 4 - 9 * lift),
                        textcoords="offset points", va="center")  # fmt: skip
        for s in usable:
            base = next((b for b in usable if b["variant"] == "baseline" and b["model"] == pair_key(s["model"])
                         and b["other"] == s["other"] and s["variant"] == "swat"), None)  # fmt: skip
            if base is not None:
                ax.annotate("", xy=(s[f"{x}_mean"], s[f"{stem}_mean"]), zorder=2,
                            xytext=(base[f"{x}_mean"], base[f"{stem}_mean"]),
                            arrowprops={"arrowstyle": "->", "color": "0.45", "lw": 1.2})  # fmt: skip
        ax.margins(x=0.3, y=0.15)  # room for the labels right of the points
        ax.set(xlabel=xlabel, ylabel=f"best val {metric} (%)", title=f"{metric} against {xlabel.split(' (')[0]}")
        ax.grid(alpha=0.3)
    fig.suptitle("baseline (blue square) -> SWAT (red circle); error bars: std over seeds", fontsize=9)
    return fig


def short_name(group: str) -> str:
    """A plot label: the model name without its patch/window/resolution tail (swat_deit_micro_patch4_32 ->
    swat_deit_micro); any other grid values of the group stay."""
    return re.sub(r"_patch\d+(_window\d+)?_\d+\b", "", group)


def _label_rows(points: list[tuple[float, float]]) -> list[int]:
    """Per point, how many text rows (9 pt) to move its label down so that labels of nearby points (within
    30% of the x range, as a label runs that far right, and 4% of the y range) do not print over each
    other; the highest point's label stays beside it."""
    if not points:
        return []
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    dx, dy = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0
    rows = [0] * len(points)
    placed: list[int] = []
    for i in sorted(range(len(points)), key=lambda k: -points[k][1]):
        near = [j for j in placed if abs(points[j][0] - points[i][0]) < 0.3 * dx
                and abs(points[j][1] - points[i][1]) < 0.04 * dy]  # fmt: skip
        taken = {rows[j] for j in near}
        rows[i] = min(r for r in range(len(points) + 1) if r not in taken)
        placed.append(i)
    return rows


def _csv(path: Path, records: list[dict[str, Any]]) -> None:
    fields = [k for k in records[0] if k != "other"] if records else []
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(records)


def compare_sweep(sweep_dir: Path | None, parent: str | None, uri: str | None, out: Path) -> list[Path]:
    """Write the tables and Figure 1 to ``out``; return the files written."""
    uri, parent = where(sweep_dir, parent, uri)
    groups = aggregate(collect(uri, parent))
    pair_rows = pairs(groups)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.md").write_text(markdown(groups, pair_rows))
    _csv(out / "sweep_groups.csv", groups)
    _csv(out / "sweep_pairs.csv", pair_rows)
    written = [out / "sweep.md", out / "sweep_groups.csv", out / "sweep_pairs.csv"]
    for metric, name in (("top1", "figure1"), ("mIoU", "figure1_mIoU")):
        if any(g[f"best_{metric}_mean"] is not None for g in groups):
            fig = figure(groups, metric)
            fig.tight_layout()
            fig.savefig(out / f"{name}.png", dpi=120)
            written.append(out / f"{name}.png")
    return written
