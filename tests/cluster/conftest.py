"""A real private Slurm for the launcher tests (launch/slurm/up.sh), up once per session (~3-6 s)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DAEMONS = ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd", "sbatch", "sacct")


@pytest.fixture(scope="session")
def slurm() -> Iterator[Path]:
    """The private cluster's folder; ``SLURM_CONF`` points at it while the session lasts."""
    missing = [t for t in DAEMONS if shutil.which(t) is None]
    if missing:
        pytest.skip(f"no Slurm here ({', '.join(missing)} missing): apt-get install slurm-wlm munge slurmdbd "
                    "mariadb-server (launch/test.sh installs them)")  # fmt: skip
    if os.geteuid() != 0:
        pytest.skip("the private Slurm runs munged/slurmd as root: run the tests as root")
    folder = Path(tempfile.mkdtemp(prefix="swat-slurm-"))
    up = subprocess.run(["bash", ROOT / "launch/slurm/up.sh", folder], capture_output=True, text=True, timeout=180)
    if up.returncode != 0:
        pytest.fail(f"launch/slurm/up.sh failed:\n{up.stderr[-3000:]}")
    before = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(folder / "slurm.conf")
    try:
        yield folder
    finally:
        subprocess.run(["bash", ROOT / "launch/slurm/down.sh", folder], capture_output=True, timeout=120)
        if before is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = before
