"""A real ``swat-dist submit`` where Slurm's commands exist but Slurm is not configured (no slurm.conf, no
controller): one line, and nothing left behind in the submitit folder. ``jobs``/``cancel`` of a run folder
that does not exist say so. No Slurm needed: ``srun``/``sbatch`` here are stand-ins that fail as Slurm 23's do."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from swat_dist.cli import main

from .tiny import overrides

NO_CONF = """#!/bin/sh
echo "sbatch: error: resolve_ctls_from_dns_srv: res_nsearch error: Unknown host" >&2
echo "sbatch: error: fetch_config: DNS SRV lookup failed" >&2
echo "sbatch: fatal: Could not establish a configuration source" >&2
exit 1
"""


@pytest.fixture
def unconfigured_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in {"srun": "#!/bin/sh\nexit 1\n", "sbatch": NO_CONF}.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SUBMITIT_PREEMPT_SIGNAL", "USR2")  # local-test's signal; restored afterwards
    return bin_dir


def test_submit_without_a_configured_slurm_is_one_line_and_leaves_no_pickles(unconfigured_slurm, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["submit", "--cluster", "local-test", *overrides(run)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err == (
        "swat-dist submit: error: slurm executor: sbatch did not submit the job (sbatch: fatal: Could not "
        "establish a configuration source); is Slurm configured on this machine (slurm.conf, a reachable "
        "slurmctld)? Nothing was submitted"
    )  # not sbatch's three lines and a FailedJobError traceback
    assert "submitted job" not in captured.out
    leftovers = sorted(str(p.relative_to(tmp_path)) for p in run.rglob("*")) if run.exists() else []
    assert leftovers == []  # was: slurm/<uuid>.pkl and slurm/.submission_file_<uuid>.sh


def test_submit_keeps_what_an_earlier_job_left_in_the_slurm_folder(unconfigured_slurm, tmp_path):
    run = tmp_path / "run"
    earlier = run / "slurm" / "1234" / "1234_0_log.out"
    earlier.parent.mkdir(parents=True)
    earlier.write_text("an earlier attempt's log")
    assert main(["submit", "--cluster", "local-test", *overrides(run)]) == 2
    assert sorted(p.relative_to(run).as_posix() for p in run.rglob("*")) == [
        "slurm",
        "slurm/1234",
        "slurm/1234/1234_0_log.out",
    ]


@pytest.mark.parametrize("command", ["jobs", "cancel"])
def test_jobs_and_cancel_of_a_missing_run_folder_say_it_does_not_exist(tmp_path, capsys, command):
    assert main([command, str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err == f"swat-dist {command}: error: run folder {tmp_path / 'nope'} does not exist (give the run's output_dir)"
    )
