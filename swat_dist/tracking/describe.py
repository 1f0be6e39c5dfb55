"""What a run tells MLflow about itself: where to log, params (the flattened config) and tags.

No mlflow import here (STYLE.md 7): these are plain dicts, unit-tested without a tracking store.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from ..config import Config, config_hash, to_dict
from ..dist import DistEnv
from ..redact import REDACTED, redact, redact_text
from .system import node_id

DEFAULT_EXPERIMENT = "swat_dist"
# Schemes MLflow's client can log to. Anything else is a typo we report once instead of retrying forever.
KNOWN_SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql", "mssql", "file", "databricks")
MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value (longer values are refused, so we truncate)


def tracking_uri(configured: str | None, output_root: Path) -> str:
    """``tracking.uri``, else ``MLFLOW_TRACKING_URI``, else a sqlite file in the output root (``runs/mlflow.db``);
    an http(s) URI without its credentials (see :func:`without_credentials`)."""
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI")
    return without_credentials(uri) if uri else "sqlite:///" + str((output_root / "mlflow.db").resolve())


def without_credentials(uri: str) -> str:
    """An http(s) ``uri`` without ``user:password@``: those go to this process's ``MLFLOW_TRACKING_USERNAME`` /
    ``MLFLOW_TRACKING_PASSWORD``, which MLflow's client sends as basic auth (and children inherit).

    Why: MLflow prints the URI it was given at the end of a run ("View run ... at: http://user:pw@..."), into a
    job log that most clusters make world-readable. A password redacted in a saved config (``***`` in
    ``RUN/config.yaml``) is taken from ``MLFLOW_TRACKING_PASSWORD``; without it, a ValueError. Database URIs
    keep theirs: SQLAlchemy reads them there, and MLflow prints no link for a database store.
    """
    parts = urlsplit(uri)
    if parts.scheme.lower() not in ("http", "https") or "@" not in parts.netloc:
        return uri
    user = unquote(parts.username or "")
    password = None if parts.password is None else unquote(parts.password)
    if password == REDACTED:
        password = os.environ.get("MLFLOW_TRACKING_PASSWORD")
        if not password:
            raise ValueError(f"tracking URI {redact_text(uri)}: its password was redacted (a saved config.yaml); "
                             f"set MLFLOW_TRACKING_PASSWORD to the password of {user!r}")  # fmt: skip
    os.environ["MLFLOW_TRACKING_USERNAME"] = user
    if password is not None:
        os.environ["MLFLOW_TRACKING_PASSWORD"] = password
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def experiment_name(configured: str | None) -> str:
    return configured or os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT


def check_uri(uri: str) -> None:
    """Raise ValueError unless ``uri`` names a store MLflow can log to."""
    scheme = uri.split("://", 1)[0].split("+", 1)[0].lower() if "://" in uri else ""
    if scheme not in KNOWN_SCHEMES:
        known = ", ".join(s + "://" for s in KNOWN_SCHEMES)
        raise ValueError(f"tracking URI {redact_text(uri)!r}: expected one of {known}")
    if scheme == "file" and os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() != "true":
        why = "MLflow 3.17 refuses file stores (unless MLFLOW_ALLOW_FILE_STORE=true); use sqlite:///FILE"
        raise ValueError(f"tracking URI {redact_text(uri)!r}: {why}")


def local_db(uri: str) -> Path | None:
    """The sqlite file of a ``sqlite:///`` URI (None for servers)."""
    return Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None


def ui_command(uri: str) -> str:
    """How to look at the run: an ``mlflow ui`` line for a local store, the address for a server."""
    if uri.startswith(("http://", "https://")):
        return f"open {uri}"
    return f"mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000"


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{'model': {'name': 'x'}}`` -> ``{'model.name': 'x'}``; lists and empty dicts become one JSON value."""
    if isinstance(tree, dict) and tree:
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: tree}


def param_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text[:MAX_PARAM_CHARS]


def run_params(cfg: Config, extra: dict[str, Any]) -> dict[str, str]:
    """The flattened resolved config plus derived values (``extra``: world size, global batch, ...), redacted."""
    flat = {**flatten(to_dict(cfg)), **extra}
    return {k: param_value(v) for k, v in redact(flat).items()}


def git_commit(where: Path) -> str | None:
    """HEAD of the checkout ``where`` lives in (None outside git). ~10 ms; 5 s at most on a hung filesystem."""
    try:
        out = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def run_tags(cfg: Config, env: DistEnv) -> dict[str, str]:
    """Searchable facts about the job (``swat.*``) and MLflow's own system tags, redacted."""
    tags: dict[str, Any] = {
        "mlflow.runName": cfg.tracking.run_name or cfg.run_name,
        "swat.model": cfg.model.name,
        "swat.variant": "swat" if cfg.model.name.startswith("swat_") else "baseline",
        "swat.data_format": cfg.data.format,
        "swat.config_hash": config_hash(cfg),
        "swat.world_size": str(env.world_size),
        "swat.nodes": str(env.num_nodes),
        "swat.host": socket.gethostname(),  # rank 0's; every node adds swat.host.node<N>
        f"swat.host.{node_id(env.node_rank)}": socket.gethostname(),
        "swat.launcher": env.launcher,
    }
    commit = git_commit(Path(__file__).resolve().parent)
    if commit:
        tags["mlflow.source.git.commit"] = commit
    if env.job_id:
        tags["slurm.job_id"] = env.job_id
        tags["slurm.restart_count"] = str(env.restart_count)
    image = next((os.environ[k] for k in ("SWAT_DIST_IMAGE", "APPTAINER_CONTAINER", "SINGULARITY_CONTAINER")
                  if os.environ.get(k)), None)  # fmt: skip
    if image:
        tags["swat.image"] = image
    return {k: str(v) for k, v in redact(tags).items()}
