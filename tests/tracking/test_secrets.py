"""A password in the tracking URI (issue 27 item 4) appears in no log line, no file under the run folder and
no MLflow param or tag: the URI MLflow gets has no credentials (they travel in MLFLOW_TRACKING_USERNAME /
PASSWORD, which MLflow sends as basic auth), and ``RUN/config.yaml`` is written redacted; the password a
redacted URI lacks is taken from the environment again."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from swat_dist.config import load_config
from swat_dist.tracking import mlflow_store
from swat_dist.tracking.describe import tracking_uri

from .conftest import Server
from .helpers import ROOT, train_args

PASSWORD = "pw-9f2e-s3cr3t"
CREDENTIALS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


@pytest.fixture(autouse=True)
def _no_ambient_credentials(monkeypatch):
    for key in CREDENTIALS:  # set, then removed: so the values a test's code exports are removed after it
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)


@pytest.mark.slow
def test_a_password_in_the_uri_reaches_no_log_line_no_run_file_and_no_param_or_tag(server: Server, tmp_path):
    uri = server.uri.replace("http://", f"http://alice:{PASSWORD}@")  # the server ignores them: enough to see leaks
    out = tmp_path / "runs" / "secret"
    args = train_args(out, f"tracking.uri={uri}", "tracking.experiment=secrets", "max_steps=4",
                      "data.path=https://bob:hunter2@host/x")  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for key in CREDENTIALS:
        env.pop(key, None)
    done = subprocess.run([sys.executable, "-m", "swat_dist", "train", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    assert "View run" in log  # MLflow's own end-of-run lines, which printed the URI it was given
    assert PASSWORD not in log and "hunter2" not in log

    files = [p for p in out.rglob("*") if p.is_file()]
    assert out / "config.yaml" in files and out / "tracking" / "run.json" in files and len(files) > 10
    assert [p for p in files if PASSWORD.encode() in p.read_bytes() or b"hunter2" in p.read_bytes()] == []
    assert f"uri: http://alice:***@127.0.0.1:{server.port}" in (out / "config.yaml").read_text()

    (only,) = mlflow_store.find_runs(server.uri, "secrets", [])
    info = mlflow_store.run_info(server.uri, only["run_id"])
    assert (
        info["status"] == "FINISHED" and info["params"]["tracking.uri"] == f"http://alice:***@127.0.0.1:{server.port}"
    )
    held = json.dumps([info["params"], info["tags"]])
    assert PASSWORD not in held and "hunter2" not in held
    uploaded = [p for p in (tmp_path / "artifacts").rglob("*") if p.is_file()]
    assert uploaded and not [p for p in uploaded if PASSWORD.encode() in p.read_bytes()]


class _Recorder(BaseHTTPRequestHandler):
    """Answers MLflow's get-experiment-by-name and records the Authorization header it was sent."""

    seen: list[str | None] = []

    def do_GET(self) -> None:
        self.seen.append(self.headers.get("Authorization"))
        body = json.dumps({"experiment": {"experiment_id": "1", "name": "x", "lifecycle_stage": "active"}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_credentials_leave_the_uri_and_still_reach_the_server_as_basic_auth(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        clean = f"http://127.0.0.1:{httpd.server_address[1]}"
        uri = tracking_uri(clean.replace("http://", f"http://alice:{PASSWORD}@"), tmp_path)
        assert uri == clean
        assert (os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]) == ("alice", PASSWORD)
        assert MlflowClient(tracking_uri=uri).get_experiment_by_name("x") is not None
        assert _Recorder.seen[-1] == "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    finally:
        httpd.shutdown()
    # a database store's credentials belong to its URI (SQLAlchemy reads them there; MLflow prints no link)
    for other in ("sqlite:///tmp/x.db", "postgresql://u:p@db:5432/mlflow", "http://127.0.0.1:5000"):
        assert tracking_uri(other, tmp_path) == other


def test_a_redacted_password_is_read_from_the_environment_again(tmp_path, monkeypatch):
    # RUN/config.yaml holds the URI redacted; a run started from it needs the password from the environment
    cfg = load_config([], ["data.format=synthetic", "tracking.uri=https://alice:***@mlflow.example.com:5000/"])
    with pytest.raises(ValueError, match="MLFLOW_TRACKING_PASSWORD") as info:
        tracking_uri(cfg.tracking.uri, tmp_path)
    assert "alice" in str(info.value) and "mlflow.example.com" in str(info.value)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    assert tracking_uri(cfg.tracking.uri, tmp_path) == "https://mlflow.example.com:5000/"
    assert (os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]) == ("alice", PASSWORD)
