"""``swat-dist sweep``: a grid of runs (the cartesian product of ``--grid KEY=V1,V2,...``) as one job array.

Every element is a full training job of its own (its own run folder ``SWEEP/<point>``, its own checkpoints,
its own MLflow child run) resolved and checked exactly as ``submit`` checks one run, all of them before
anything is queued: a typo in the third value of a grid costs nothing. The sweep folder is the base
config's ``output_dir``; ``SWEEP/sweep.json`` (the manifest) records the grid, the elements, the array ids
and the MLflow parent run, so that ``jobs``, ``cancel`` and ``compare --sweep`` find everything from the
folder alone and re-running the same command resumes: finished elements (a ``summary.json`` of this
config and world size) are skipped, the others continue from their checkpoints (``checkpoint.resume=auto``).

No torch, no submitit, no mlflow here: this module only plans and records (login-node code).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import Config, config_hash, derived, load_config
from ..files import atomic_write
from .profile import ClusterProfile, Plan, resolve

MANIFEST = "sweep.json"
# The sweep decides these per element (each element's folder and MLflow name): a grid over them makes no sense.
NOT_GRIDDED = {"output_dir", "name", "tracking.run_name", "checkpoint.resume"}
MAX_FOLDER_CHARS = 120  # longer point names become an index and a hash (filesystems cap names at 255 bytes)

Grid = list[tuple[str, list[str]]]


def split_values(text: str) -> list[str]:
    """``'a,b,[1, 2],{x: 1}'`` -> ``['a', 'b', '[1, 2]', '{x: 1}']``: commas inside brackets or quotes stay."""
    values, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            values.append(text[start:i].strip())
            start = i + 1
    values.append(text[start:].strip())
    return values


def parse_grid(texts: list[str], overrides: list[str]) -> Grid:
    """The ``--grid`` options as (key, values) in command-line order; one-line errors naming the option."""
    if not texts:
        raise ValueError("--grid: give at least one KEY=V1,V2,... (a single run is `swat-dist submit`)")
    fixed = {o.partition("=")[0].strip() for o in overrides}
    grid: Grid = []
    for text in texts:
        key, sep, rest = text.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", key):
            raise ValueError(f"--grid {text!r}: expected KEY=V1,V2,... with a dotted config key, e.g. seed=0,1,2")
        if key in NOT_GRIDDED:
            raise ValueError(f"--grid {key}: the sweep sets {key} for each element itself; it cannot be a grid key")
        if any(k == key for k, _ in grid):
            raise ValueError(f"--grid {key}: given twice; put every value in one --grid {key}=V1,V2,...")
        if key in fixed:
            raise ValueError(f"--grid {key}: also given as the override {key}=...; drop one of them")
        values = split_values(rest)
        if any(not v for v in values):
            raise ValueError(f"--grid {text!r}: an empty value (two commas, or a trailing comma)")
        if len(set(values)) != len(values):
            raise ValueError(f"--grid {text!r}: a value is listed twice")
        grid.append((key, values))
    return grid


def points(grid: Grid) -> list[dict[str, str]]:
    """The cartesian product, the last key varying fastest (``--grid model --grid seed``: seeds together)."""
    keys = [k for k, _ in grid]
    return [dict(zip(keys, combo)) for combo in itertools.product(*(vals for _, vals in grid))]


def point_name(values: dict[str, str], index: int) -> str:
    """The element's folder: ``model.name-deit_micro_patch4_32__seed-0`` (characters a shell leaves alone)."""
    name = "__".join(f"{k}-{re.sub(r'[^A-Za-z0-9._+-]+', '-', v).strip('-') or 'x'}" for k, v in values.items())
    if len(name) <= MAX_FOLDER_CHARS:
        return name
    digest = hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:10]
    return f"point{index:04d}-{digest}"


def point_tag(values: dict[str, str]) -> str:
    """The ``swat.sweep_point`` tag: ``model.name=deit_micro_patch4_32,seed=0``."""
    return ",".join(f"{k}={v}" for k, v in values.items())


@dataclass(frozen=True)
class Element:
    name: str  # folder under the sweep folder
    values: dict[str, str]  # this point of the grid
    plan: Plan
    finished: bool  # a summary.json of this config and world size: skipped


@dataclass(frozen=True)
class SweepPlan:
    name: str
    sweep_dir: Path
    grid: Grid
    elements: list[Element]
    max_parallel: int | None
    base: Config = field(repr=False)

    @property
    def todo(self) -> list[Element]:
        return [e for e in self.elements if not e.finished]


def ended_summary(run_dir: Path) -> dict[str, Any] | None:
    """The run's summary.json when it says the run ran to its end (not stopped, not unreadable), else None."""
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) and "stopped" not in summary else None


def finished(cfg: Config, run_dir: Path, world_size: int) -> bool:
    """The element already ran to its end with this config and world size (as train.run judges a re-run)."""
    summary = ended_summary(run_dir)
    if summary is None:
        return False
    return (summary.get("config_hash"), summary.get("world_size")) == (config_hash(cfg), world_size)


def resolve_sweep(
    files: list[str], overrides: list[str], grid_texts: list[str], profile: ClusterProfile, *,
    nodes: int | None, gpus_per_node: int | None, max_parallel: int | None, slurm_available: bool,
) -> SweepPlan:  # fmt: skip
    """Every element resolved and checked (config, layout, resumability); ValueError names the element."""
    if max_parallel is not None and max_parallel < 1:
        raise ValueError(f"--max-parallel must be >= 1, got {max_parallel}")
    grid = parse_grid(grid_texts, overrides)
    base = load_config(files, overrides)
    sweep_dir = Path(derived(base, 1)["output_dir"]).absolute()
    check_manifest(sweep_dir, grid)
    elements, names = [], set()
    for i, values in enumerate(points(grid)):
        name = point_name(values, i)
        if name in names:
            raise ValueError(f"--grid: two points share the folder name {name!r}; make the values differ in "
                             "letters or digits")  # fmt: skip
        names.add(name)
        run_dir = sweep_dir / name
        ov = [*overrides, *(f"{k}={v}" for k, v in values.items()), f"output_dir={run_dir}"]
        if base.tracking.run_name is None:  # the MLflow child's name: the point, not the config's shared name
            ov.append(f"tracking.run_name={sweep_dir.name}/{name}")
        try:
            cfg = load_config(files, ov)
            plan = resolve(cfg, files, ov, profile, nodes=nodes, gpus_per_node=gpus_per_node,
                           slurm_available=slurm_available)  # fmt: skip
        except ValueError as err:
            raise ValueError(f"element {point_tag(values)}: {err}") from None
        elements.append(Element(name, values, plan, finished(cfg, run_dir, plan.world_size)))
    return SweepPlan(sweep_dir.name, sweep_dir, grid, elements, max_parallel, base)


# -- the manifest: SWEEP/sweep.json ---------------------------------------------------------------------


def read_manifest(sweep_dir: Path) -> dict[str, Any] | None:
    """The manifest of a sweep folder, or None when ``sweep_dir`` is not one."""
    try:
        record = json.loads((sweep_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and "elements" in record else None


def check_manifest(sweep_dir: Path, grid: Grid) -> None:
    """The same folder with another grid would mix two sweeps in one comparison: refuse before queueing."""
    old = read_manifest(sweep_dir)
    if old is not None and [tuple(g) for g in old["grid"]] != [(k, v) for k, v in grid]:
        was = " ".join(f"--grid {k}={','.join(v)}" for k, v in old["grid"])
        raise ValueError(f"{sweep_dir} holds another sweep ({was}); give this one another output_dir")


_KEEP: Any = object()


def write_manifest(sweep: SweepPlan, tracking: dict[str, Any] | None, arrays: list[dict[str, Any]],
                   driver_pid: Any = _KEEP) -> Path:  # fmt: skip
    """Write ``SWEEP/sweep.json``; ``arrays`` are added to those of earlier submissions of this sweep.
    ``driver_pid``: the local driver's pid while it runs elements (None once done; omitted: unchanged)."""
    old = read_manifest(sweep.sweep_dir) or {}
    record = {
        "driver_pid": old.get("driver_pid") if driver_pid is _KEEP else driver_pid,
        "name": sweep.name,
        "grid": [[k, v] for k, v in sweep.grid],
        "elements": {e.name: e.values for e in sweep.elements},
        "tracking": tracking or old.get("tracking"),  # uri, experiment, parent_run_id (children read it)
        "arrays": [*old.get("arrays", []), *arrays],
    }
    path = sweep.sweep_dir / MANIFEST
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(record, indent=2) + "\n")
    return path


def describe(sweep: SweepPlan) -> str:
    """The grid and each element's overrides (the first part of ``--dry-run``)."""
    lines = [f"# sweep {sweep.name}: {len(sweep.elements)} element(s) in {sweep.sweep_dir}"]
    lines += [f"#   --grid {k}={','.join(v)}" for k, v in sweep.grid]
    for i, e in enumerate(sweep.elements):
        state = "finished: skipped" if e.finished else "to run"
        named = [*(f"{k}={v}" for k, v in e.values.items()), f"output_dir={e.plan.run_dir}"]
        named += [o for o in e.plan.overrides if o.startswith("tracking.run_name=")]
        lines.append(f"# [{i}] {e.name} ({state}): {' '.join(named)}")
    return "\n".join(lines)
