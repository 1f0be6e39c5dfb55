"""``swat-dist tracking-server --artifacts-destination s3://...`` against the test S3 server (SeaweedFS on
127.0.0.1, tests/conftest.py): a run's artifact, uploaded through the tracking server, lands as an object
in the bucket; a bucket it could not write to is one line before the server starts."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow

from swat_dist.data.sources.location import S3Location
from swat_dist.data.sources.object_store import ObjectStore

from ..data.s3server import BUCKET
from .conftest import free_port


def _command(tmp_path: Path, port: int, destination: str) -> list[str]:
    store = f"sqlite:///{tmp_path / 'server.db'}"
    return [sys.executable, "-m", "swat_dist", "tracking-server", "--port", str(port), "--backend-store-uri", store,
            "--artifacts-destination", destination]  # fmt: skip


def _stop(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)  # the wrapper stops mlflow's own group (test_server_stop.py)
    proc.wait(timeout=30)


def _wait_ready(proc: subprocess.Popen, uri: str, log: Path, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while True:  # /health answers before the API does: ask the API itself
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"{uri}/api/2.0/mlflow/experiments/get-by-name?experiment_name=Default"):
                return
        except OSError:
            assert time.monotonic() < deadline, f"mlflow server did not answer in {timeout_s} s"
            time.sleep(0.5)


def test_a_runs_artifact_lands_in_the_bucket(s3_server, tmp_path):
    port, log = free_port(), tmp_path / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen(_command(tmp_path, port, f"s3://{BUCKET}/mlartifacts"), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        uri = f"http://127.0.0.1:{port}"
        _wait_ready(proc, uri, log)
        (tmp_path / "model.safetensors").write_bytes(b"weights \x00\x01")
        client = mlflow.MlflowClient(tracking_uri=uri)  # no process-wide mlflow state
        run = client.create_run("0")
        client.log_artifact(run.info.run_id, str(tmp_path / "model.safetensors"), "export")
        client.set_terminated(run.info.run_id)
        name = f"0/{run.info.run_id}/artifacts/export/model.safetensors"  # mlflow-artifacts:/0/<run>/artifacts
        assert ObjectStore(S3Location(BUCKET, "mlartifacts")).read(name) == b"weights \x00\x01"
    finally:
        _stop(proc)


def test_a_bucket_it_cannot_use_is_one_line_before_the_server_starts(s3_server, tmp_path):
    for destination, message, env in [
        ("s3://no-such-bucket-here/mlartifacts", "no such bucket 'no-such-bucket-here'", {}),
        (f"s3://{BUCKET}/mlartifacts", "access denied", {"AWS_SECRET_ACCESS_KEY": "wrong"}),
    ]:
        cmd, pipe = _command(tmp_path, free_port(), destination), subprocess.PIPE
        environ = {**os.environ, **env}
        proc = subprocess.Popen(cmd, stdout=pipe, stderr=pipe, text=True, start_new_session=True, env=environ)
        try:
            out, err = proc.communicate(timeout=60)  # a server that started would run until stopped
        finally:
            if proc.poll() is None:
                _stop(proc)
        assert proc.returncode == 2 and "\n" not in err.strip(), err
        assert f"--artifacts-destination {destination}: {message}" in err, err
        assert "[tracking]" not in out  # the server was never started
