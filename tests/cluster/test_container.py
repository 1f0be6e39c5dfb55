"""A cluster profile's ``container:`` setting: the sbatch script runs each task in the image (Apptainer or
Pyxis), shown by ``--dry-run``; bad settings fail in one line. No Apptainer or Pyxis here: the tests read
the srun line of the script submitit renders, token by token."""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path

import pytest

from swat_dist.cli import main
from swat_dist.cluster import submit
from swat_dist.cluster.container import IMAGE_PYTHON
from swat_dist.cluster.profile import load_profile
from swat_dist.cluster.submit import sbatch_script, task_python

from .tiny import overrides, plan

GPU_PROFILE = "partition: gpu\ngpus_per_node: 2\nsignal: USR2\n"


@pytest.fixture(autouse=True)
def _submit_folder(tmp_path, monkeypatch):
    """Submitting from tmp_path/work: the tasks' working directory, mounted like the run folder."""
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")


def _profile(tmp_path: Path, container: str, base: str = GPU_PROFILE) -> str:
    path = tmp_path / "cluster.yaml"
    path.write_text(base + "container:\n" + "".join(f"  {line}\n" for line in container.strip().splitlines()))
    return str(path)


def _srun_line(script: str) -> list[str]:
    lines = [ln for ln in script.splitlines() if ln.startswith("srun ")]
    assert len(lines) == 1, script
    return shlex.split(lines[0])


def _after(tokens: list[str], first: str) -> list[str]:
    return tokens[tokens.index(first) :]


def test_apptainer_runs_each_task_through_apptainer_exec_nv(tmp_path):
    cluster = _profile(tmp_path, "kind: apptainer\nimage: /images/swat dist.sif\nmounts: [/datasets]")
    p = plan(tmp_path / "run", cluster=cluster, slurm=True, gpus_per_node=2, nodes=1)
    tokens = _after(_srun_line(sbatch_script(p)), "apptainer")
    binds = tokens[tokens.index("--bind") + 1].split(",")
    assert tokens[:3] == ["apptainer", "exec", "--nv"]
    # the user's mounts, then the run folder and the submit folder (same paths inside)
    assert binds == ["/datasets", str(p.run_dir), str(tmp_path / "work")]
    image_at = tokens.index("/images/swat dist.sif")  # quoted: one token despite the space
    assert tokens[image_at + 1 : image_at + 5] == [IMAGE_PYTHON, "-u", "-m", "submitit.core._submit"]
    assert tokens[-1] == str(p.folder / "%j")
    assert "--container-image" not in " ".join(_srun_line(sbatch_script(p)))


def test_apptainer_on_a_cpu_cluster_has_no_nv_and_config_folders_are_bound(tmp_path):
    cfg = tmp_path / "cfgs" / "tiny.yaml"
    cfg.parent.mkdir()
    cfg.write_text("name: tiny\n")
    cluster = _profile(tmp_path, "kind: apptainer\nimage: /i.sif", base="partition: cpu\n")
    p = plan(tmp_path / "run", cluster=cluster, slurm=True, nodes=1)
    p = dataclasses.replace(p, config_files=[str(cfg)])  # as `submit -c cfgs/tiny.yaml` resolves it
    tokens = _after(_srun_line(sbatch_script(p)), "apptainer")
    assert "--nv" not in tokens
    assert tokens[tokens.index("--bind") + 1].split(",") == [str(p.run_dir), str(cfg.parent), str(tmp_path / "work")]


def test_pyxis_enters_the_image_through_srun(tmp_path):
    cluster = _profile(tmp_path, "kind: pyxis\nimage: registry#swat_dist:1\nmounts: [/datasets, /a:/b]")
    p = plan(tmp_path / "run", cluster=cluster, slurm=True, gpus_per_node=2, nodes=1)
    tokens = _srun_line(sbatch_script(p))
    assert "--container-image=registry#swat_dist:1" in tokens
    mounts = next(t for t in tokens if t.startswith("--container-mounts=")).split("=", 1)[1].split(",")
    work = tmp_path / "work"
    assert mounts == ["/datasets:/datasets", "/a:/b", f"{p.run_dir}:{p.run_dir}", f"{work}:{work}"]
    assert f"--container-workdir={work}" in tokens  # relative paths mean what they mean without a container
    python_at = tokens.index(IMAGE_PYTHON)  # the image's Python, right after srun's own options
    assert tokens[python_at - 1] == f"--container-workdir={work}" and "apptainer" not in tokens
    assert tokens[python_at + 1 : python_at + 4] == ["-u", "-m", "submitit.core._submit"]


def test_the_submitted_job_uses_the_same_command_as_the_dry_run(tmp_path, monkeypatch):
    # submitit's Slurm executor refuses to exist without `srun` (the image has none); nothing is submitted here
    monkeypatch.setattr(submit.submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 1))
    cluster = _profile(tmp_path, "kind: apptainer\nimage: /i.sif")
    p = plan(tmp_path / "run", cluster=cluster, slurm=True, gpus_per_node=2, nodes=1)
    try:
        executor = submit.make_executor(p)
    except ValueError as err:  # submitit was imported earlier in this process with another signal
        pytest.skip(str(err))
    assert executor._executor.python == task_python(p)  # type: ignore[attr-defined]
    assert task_python(p) in sbatch_script(p)


def test_dry_run_shows_the_container_in_the_sbatch_script(tmp_path, capsys):
    cluster = _profile(tmp_path, "kind: apptainer\nimage: /images/swat_dist.sif")
    args = ["submit", "--cluster", cluster, "--gpus-per-node", "2", "--dry-run", *overrides(tmp_path / "run")]
    assert main(args) == 0
    out = capsys.readouterr().out
    binds = f"{tmp_path / 'run'},{tmp_path / 'work'}"
    assert f"apptainer exec --nv --bind {binds} /images/swat_dist.sif {IMAGE_PYTHON} -u -m" in out
    assert not (tmp_path / "run").exists()  # a dry run writes nothing


@pytest.mark.parametrize(
    ("container", "message"),
    [
        ("kind: docker\nimage: /i.sif", r"container\.kind must be apptainer or pyxis, got 'docker'"),
        ("kind: apptainer", r"container\.image must be the image .* got None"),
        ("kind: apptainer\nimage: /i.sif\nmount: [/x]", r"container: unknown setting 'mount'"),
        ("kind: pyxis\nimage: x\nmounts: [data]", r"container\.mounts: 'data' must be an absolute path"),
        ("kind: pyxis\nimage: x\nmounts: /data", r"container\.mounts must be a list of folders"),
        ("kind: apptainer\nimage: /i.sif\npython: python3", r"container\.python must be the absolute path"),
    ],
)
def test_bad_container_settings_fail_in_one_line(tmp_path, capsys, container, message):
    cluster = _profile(tmp_path, container)
    with pytest.raises(ValueError, match=message):
        load_profile(cluster)
    assert main(["submit", "--cluster", cluster, "--dry-run", *overrides(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("swat-dist submit: error: ") and "\n" not in err and "container" in err


def test_a_container_without_slurm_is_refused(tmp_path):
    cluster = _profile(tmp_path, "kind: apptainer\nimage: /i.sif", base="executor: local\n")
    with pytest.raises(ValueError, match=r"container needs Slurm"):
        plan(tmp_path / "run", cluster=cluster, slurm=False, nodes=1)


def test_the_generic_profile_documents_the_container_setting():
    text = (Path(__file__).resolve().parents[2] / "launch" / "clusters" / "generic-8gpu.yaml").read_text()
    assert "container:" in text and "apptainer" in text and "pyxis" in text
    assert load_profile("generic-8gpu").container is None  # commented out: the venv is the default
    shipped = load_profile("apptainer-8gpu").container
    assert shipped is not None and shipped.kind == "apptainer" and shipped.image.endswith(".sif")
