"""`swat-dist sweep` before anything runs: grid parsing and expansion, per-element validation (nothing
queued on any error), --dry-run's array script, skipping finished elements, and the login-node imports."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from swat_dist.cli import main
from swat_dist.cluster.profile import load_profile
from swat_dist.cluster.sweep import parse_grid, point_name, points, resolve_sweep, split_values
from swat_dist.config import config_hash, load_config

from .tiny import overrides

ROOT = Path(__file__).resolve().parents[2]


def test_split_values_keeps_commas_inside_brackets_and_quotes():
    assert split_values("a, b,[1, 2],{x: 1, y: 2},'p,q'") == ["a", "b", "[1, 2]", "{x: 1, y: 2}", "'p,q'"]


def test_the_grid_is_the_cartesian_product_in_command_line_order():
    grid = parse_grid(["model.name=a,b", "seed=0,1,2"], [])
    got = points(grid)
    assert len(got) == 6 and len({tuple(p.items()) for p in got}) == 6
    assert [p["seed"] for p in got[:3]] == ["0", "1", "2"] and {p["model.name"] for p in got[:3]} == {"a"}
    names = [point_name(p, i) for i, p in enumerate(got)]
    assert len(set(names)) == 6 and all(re.fullmatch(r"[A-Za-z0-9._+-]+", n) for n in names)


def test_a_very_long_point_gets_a_short_unique_folder_name():
    a, b = {"k": "x" * 300}, {"k": "x" * 299 + "y"}
    na, nb = point_name(a, 3), point_name(b, 4)
    assert na != nb and len(na) <= 120 and na.startswith("point0003-")


@pytest.mark.parametrize(
    "grid, fixed, message",
    [
        ([], [], "at least one"),
        (["seed"], [], "expected KEY=V1,V2"),
        (["9x=1,2"], [], "expected KEY=V1,V2"),
        (["seed=1,,2"], [], "an empty value"),
        (["seed=1,2,1"], [], "listed twice"),
        (["seed=1", "seed=2"], [], "given twice"),
        (["seed=1,2"], ["seed=3"], "also given as the override"),
        (["output_dir=a,b"], [], "the sweep sets output_dir"),
    ],
)
def test_grid_mistakes_are_one_line_errors(grid, fixed, message):
    with pytest.raises(ValueError, match=message):
        parse_grid(grid, fixed)


def _cli(tmp_path, capsys, *args):
    gridded = {a.split("=")[0] for a in args if "=" in a}  # the tiny job's own value of a gridded key goes
    fixed = [o for o in overrides(tmp_path / "sw") if o.split("=")[0] not in gridded]
    rc = main(["sweep", "--cluster", "local-test", *args, *fixed])
    return rc, capsys.readouterr()


def test_a_bad_value_in_any_element_stops_the_sweep_before_anything_is_written(tmp_path, capsys):
    rc, out = _cli(tmp_path, capsys, "--grid", "seed=0,1", "--grid", "optim.weight_decay=0.05,heavy")
    assert rc == 2 and "Traceback" not in out.err
    err = out.err.strip()
    assert "\n" not in err and err.startswith("swat-dist sweep: error: element seed=0,optim.weight_decay=heavy: ")
    assert not (tmp_path / "sw").exists()


def test_a_layout_that_fails_for_one_element_names_it(tmp_path, capsys):
    # 32 samples cannot fill one step of 16 x 2 ranks x grad_accum 2; grad_accum 1 can
    rc, out = _cli(tmp_path, capsys, "--grid", "engine.grad_accum=1,2")
    assert rc == 2 and "element engine.grad_accum=2:" in out.err and "cannot fill one optimizer step" in out.err
    assert not (tmp_path / "sw").exists()


def test_dry_run_prints_grid_overrides_and_the_throttled_array_script(tmp_path, capsys):
    rc, out = _cli(tmp_path, capsys, "--grid", "model.name=swat_deit_micro_patch4_32,deit_micro_patch4_32",
                   "--grid", "seed=0,1,2", "--max-parallel", "2", "--dry-run")  # fmt: skip
    assert rc == 0, out.err
    text = out.out
    assert "--grid seed=0,1,2" in text and text.count(" (to run): ") == 6
    assert "#SBATCH --array=0-5%2" in text and "#SBATCH --job-name=swat-sweep-sw" in text
    assert "#SBATCH --nodes=2" in text and "#SBATCH --signal=USR2@30" in text
    folder = tmp_path / "sw" / "model.name-deit_micro_patch4_32__seed-2"
    assert f"output_dir={folder}" in text and "tracking.run_name=sw/model.name-deit_micro_patch4_32__seed-2" in text
    assert not (tmp_path / "sw").exists()  # a dry run writes nothing


def test_finished_elements_are_skipped_and_the_rest_resumed(tmp_path):
    args = overrides(tmp_path / "sw")
    sweep = resolve_sweep([], args, ["seed=0,1"], load_profile("local-test"), nodes=None, gpus_per_node=None,
                          max_parallel=None, slurm_available=True)  # fmt: skip
    done = sweep.elements[0]
    cfg = load_config([], done.plan.overrides)
    done.plan.run_dir.mkdir(parents=True)
    summary = {"steps": 40, "config_hash": config_hash(cfg), "world_size": 2}
    (done.plan.run_dir / "summary.json").write_text(json.dumps(summary))
    other = sweep.elements[1].plan.run_dir
    other.mkdir(parents=True)  # same summary, but another config (seed 1's hash differs): not finished
    (other / "summary.json").write_text(json.dumps(summary))
    again = resolve_sweep([], args, ["seed=0,1"], load_profile("local-test"), nodes=None, gpus_per_node=None,
                          max_parallel=None, slurm_available=True)  # fmt: skip
    assert [e.finished for e in again.elements] == [True, False] and again.todo == [again.elements[1]]
    # resuming: every element's job resumes its own checkpoint (resume=auto), in its own folder
    assert all("checkpoint.resume" not in " ".join(e.plan.overrides) for e in again.elements)
    assert load_config([], again.todo[0].plan.overrides).checkpoint.resume == "auto"


def test_another_grid_in_the_same_folder_is_refused(tmp_path, capsys):
    (tmp_path / "sw").mkdir()
    manifest = {"grid": [["seed", ["0", "1"]]], "elements": {}}
    (tmp_path / "sw" / "sweep.json").write_text(json.dumps(manifest))
    rc, out = _cli(tmp_path, capsys, "--grid", "seed=0,1,2", "--dry-run")
    assert rc == 2 and "holds another sweep (--grid seed=0,1)" in out.err


def test_max_parallel_must_be_positive(tmp_path, capsys):
    rc, out = _cli(tmp_path, capsys, "--grid", "seed=0,1", "--max-parallel", "0", "--dry-run")
    assert rc == 2 and "--max-parallel must be >= 1" in out.err


def test_sweep_dry_run_keeps_torch_out_of_the_login_node_process(tmp_path):
    code = (
        "import sys, contextlib, io\nfrom swat_dist.cli import main\n"
        "args = ['sweep', '--cluster', 'local-test', '--grid', 'seed=0,1', '--dry-run', 'data.format=synthetic',\n"
        f"        'output_dir={tmp_path}/s']\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n    assert main(args) == 0\n"
        "heavy = {'torch', 'timm', 'numpy', 'mlflow'}\n"
        "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in heavy)) or '-')"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["-"]
