"""`swat-dist submit` with ``data.path: s3://...`` reads the dataset's index before submitting (a real
SeaweedFS on 127.0.0.1, tests/conftest.py): an unreachable endpoint, an unknown bucket or a missing index
is one line and nothing is submitted; the endpoint the profile's ``env`` sets is the one checked."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from swat_dist.cli import main
from swat_dist.data.convert.base import ConvertOptions
from swat_dist.data.convert.front import convert
from swat_dist.data.sources.location import S3Location

from ..data.helpers import write_id_folder
from ..data.s3server import BUCKET, free_port, upload_dataset
from .tiny import overrides


@pytest.fixture
def dataset_url(s3_server, tmp_path) -> str:
    """A small wds conversion uploaded whole (index last), as ``data convert SRC s3://...`` leaves it."""
    write_id_folder(tmp_path / "src", classes=3, per_class={"train": 4, "val": 1})
    assert convert(tmp_path / "src", tmp_path / "wds", ConvertOptions(fmt="wds", workers=1, max_resolution=32)) == 0
    where = S3Location(BUCKET, "submit-check/v1")
    upload_dataset(tmp_path / "wds", where)
    return where.url()


def _profile(tmp_path: Path, *env: str) -> str:
    """This machine, never Slurm: a check that let a bad path through would run the job here."""
    path = tmp_path / "here.yaml"
    path.write_text("executor: local\nnodes: 1\ntasks_per_node: 1\nenv:\n  OMP_NUM_THREADS: '1'\n" + "".join(env))
    return str(path)


def _submit(tmp_path: Path, url: str, capsys, *flags: str) -> tuple[int, str]:
    args = overrides(tmp_path / "run", "data.format=wds", f"data.path={url}", "data.batch_size=2")
    code = main(["submit", "--cluster", _profile(tmp_path, *flags[1:]), *flags[:1], *args])
    return code, capsys.readouterr().err.strip()


def test_a_dataset_the_job_could_not_read_is_one_line_and_nothing_is_submitted(
    dataset_url, tmp_path, monkeypatch, capsys
):
    bad = {
        f"s3://no-such-bucket-here/{dataset_url.split('/', 3)[3]}": "no such bucket 'no-such-bucket-here'",
        f"s3://{BUCKET}/submit-check/nothing": f"s3://{BUCKET}/submit-check/nothing/index.json: no such object",
    }
    for url, message in bad.items():
        code, err = _submit(tmp_path, url, capsys, "--wait")
        assert code == 2 and "\n" not in err and "data.path: s3://" in err and message in err, err
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    code, err = _submit(tmp_path, dataset_url, capsys, "--wait")
    assert code == 2 and "\n" not in err and "cannot reach http://127.0.0.1:" in err, err
    assert not (tmp_path / "run").exists()  # no job folder, no pickled job: nothing was submitted


def test_the_endpoint_in_the_profiles_env_is_the_one_checked(s3_server, dataset_url, tmp_path, monkeypatch, capsys):
    dead = f"http://127.0.0.1:{free_port()}"
    code, err = _submit(tmp_path, dataset_url, capsys, "--dry-run", f"  AWS_ENDPOINT_URL: {dead}\n")
    assert code == 2 and f"cannot reach {dead}" in err, err  # ours reaches the store; the job's would not
    assert os.environ["AWS_ENDPOINT_URL"] == s3_server.endpoint  # laid over ours for the check only
    monkeypatch.setenv("AWS_ENDPOINT_URL", dead)
    code, err = _submit(tmp_path, dataset_url, capsys, "--dry-run", f"  AWS_ENDPOINT_URL: {s3_server.endpoint}\n")
    assert code == 0, err
    assert os.environ["AWS_ENDPOINT_URL"] == dead
