"""A cluster profile's ``container:`` setting: every task of the job runs inside the image (docker/).

    container:
      kind: apptainer                 # each task: apptainer exec [--nv] --bind ... IMAGE python ...
      image: /shared/images/swat_dist.sif
      mounts: [/scratch/datasets]     # host folders the job reads or writes besides the run and config folders

    container:
      kind: pyxis                     # Pyxis/enroot: srun --container-image=IMAGE --container-mounts=...
      image: /shared/images/swat_dist.sqsh   # or a registry reference, e.g. registry#swat_dist:1

submitit pickles the job on the login node and each task unpickles it with the image's Python, so the
image must hold the same swat_dist version as the login node. The run folder (submitit's pickles, logs,
checkpoints), the folders of the config files and the submit folder (the tasks' working directory, as
without a container) are mounted at the same paths automatically; data sets and anything else outside
them go in ``mounts`` (``/host`` or ``/host:/in/image``). No torch import.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

# Where docker/Dockerfile and docker/swat_dist.def install the venv.
IMAGE_PYTHON = "/opt/swat_dist/.venv/bin/python"
KINDS = ("apptainer", "pyxis")


@dataclass(frozen=True)
class Container:
    kind: Literal["apptainer", "pyxis"]
    image: str
    mounts: tuple[str, ...] = ()
    python: str = IMAGE_PYTHON  # the image's Python, which runs each task


def parse(raw: Any, where: str) -> Container | None:
    """The profile's ``container:`` value -> :class:`Container` (None: no container); one-line errors."""
    if raw is None:
        return None
    what = f"{where}: container"
    if not isinstance(raw, dict):
        raise ValueError(f"{what}: must be a mapping with kind and image, got {raw!r}")
    unknown = sorted(set(raw) - {"kind", "image", "mounts", "python"})
    if unknown:
        raise ValueError(f"{what}: unknown setting {unknown[0]!r} (allowed: kind, image, mounts, python)")
    kind, image = raw.get("kind"), raw.get("image")
    if kind not in KINDS:
        raise ValueError(f"{what}.kind must be apptainer or pyxis, got {kind!r}")
    if not isinstance(image, str) or not image.strip():
        raise ValueError(f"{what}.image must be the image (a .sif/.sqsh path or a registry reference), got {image!r}")
    mounts = raw.get("mounts") or []
    if not isinstance(mounts, list) or not all(isinstance(m, str) for m in mounts):
        raise ValueError(f"{what}.mounts must be a list of folders, got {mounts!r}")
    for m in mounts:
        if not m.startswith("/") or "," in m or any(c.isspace() for c in m):
            raise ValueError(f"{what}.mounts: {m!r} must be an absolute path (/host or /host:/in/image), no commas")
    python = raw.get("python", IMAGE_PYTHON)
    if not isinstance(python, str) or not python.startswith("/"):
        raise ValueError(f"{what}.python must be the absolute path of the image's Python, got {python!r}")
    return Container(kind=kind, image=image, mounts=tuple(mounts), python=python)


def _mounts(c: Container, run_dir: Path, config_files: list[str]) -> list[str]:
    """The user's mounts, then the run folder, each config file's folder and the submit folder (the task's
    working directory, where relative paths such as ``data.path=data/x`` point), at the same paths inside."""
    out: list[str] = list(dict.fromkeys(c.mounts))
    for folder in [str(run_dir), *(str(Path(f).parent) for f in config_files), str(Path.cwd())]:
        inside = [m.split(":")[-1] for m in out]
        if not any(folder == m or folder.startswith(m.rstrip("/") + "/") for m in inside):
            out.append(folder)
    return out


def python_command(c: Container, run_dir: Path, config_files: list[str], gpus: bool) -> str:
    """What runs ``python -u -m submitit.core._submit FOLDER`` in each task (submitit's ``python``)."""
    if c.kind == "pyxis":  # srun itself enters the image (see srun_args)
        return shlex.quote(c.python)
    # --nv: the host's NVIDIA driver and devices inside; on a CPU job it would only warn.
    parts = ["apptainer", "exec", *(["--nv"] if gpus else []), "--bind", ",".join(_mounts(c, run_dir, config_files))]
    return shlex.join([*parts, c.image, c.python])


def srun_args(c: Container, run_dir: Path, config_files: list[str]) -> list[str]:
    """Extra ``srun`` options (Pyxis enters the image per task; Apptainer needs none)."""
    if c.kind != "pyxis":
        return []
    # Pyxis wants SRC:DST pairs; a bare folder is mounted at the same path.
    mounts = ",".join(m if ":" in m else f"{m}:{m}" for m in _mounts(c, run_dir, config_files))
    return [f"--container-image={c.image}", f"--container-mounts={mounts}", f"--container-workdir={Path.cwd()}"]
