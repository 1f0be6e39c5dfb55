"""A start that fails leaves nothing behind and says so once (issue 28 item 10).

Before: a bad data path under torchrun with 2 ranks printed the same line from each rank, left RUN/ with only
config.yaml and failures/, and torchrun's summary said "To enable traceback see: ..." for each rank; a
config error printed once per rank; a resume under another config printed its note once per rank. One
2-rank torchrun case (~20 s); the rest runs in this process or in 3 bare gloo processes.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from swat_dist.cli import main
from swat_dist.config import CheckpointConfig
from swat_dist.dist import DistEnv
from swat_dist.train.checkpoint import CheckpointManager

from .test_rank_failure import _our_lines, _torchrun
from .test_train_runs import overrides


def _bad_data(out: Path) -> list[str]:
    return overrides(out, "data.format=wds", f"data.path={out.parent / 'no-such-data'}")


def test_a_failed_start_under_torchrun_says_it_once_and_leaves_no_folder(tmp_path):
    out, tmp = tmp_path / "made" / "run", tmp_path / "tmp"  # two folders the start creates; its TMPDIR
    tmp.mkdir()
    code, seconds, output = _torchrun(["-m", "swat_dist", "train"], _bad_data(out), tmp_path / "log", TMPDIR=str(tmp))
    assert code != 0 and seconds < 60, (code, seconds, output[-3000:])
    ours = _our_lines(output)
    assert len(ours) == 1, output[-3000:]  # both ranks failed alike: rank 0 alone says it
    m = re.fullmatch(
        r"swat-dist train: rank 0 failed: ValueError: .*no-such-data: no index\.json .* \(index\.py:\d+\); "
        r"traceback: (\S+)",
        ours[0],
    )
    assert m, ours[0]
    saved = Path(m.group(1))
    assert saved.parent == tmp and saved.name.startswith("swat-dist-run-rank00000-")
    assert "Traceback" in saved.read_text()
    assert len(list(tmp.glob("swat-dist-run-rank00001-*.txt"))) == 1  # rank 1 kept its own, unprinted
    assert not (tmp_path / "made").exists()  # nothing that looks like a run, nor the parent it made
    # torchrun's summary names the cause (torchelastic's error file), not "To enable traceback see: ..."
    assert "traceback : swat-dist train: rank 0 failed: ValueError" in output
    assert "To enable traceback" not in output


def test_a_failed_start_in_a_folder_that_was_there_keeps_it(tmp_path, capfd):
    out = tmp_path / "run"
    (out / "mine.txt").parent.mkdir()
    (out / "mine.txt").write_text("the user's")
    assert main(["train", *_bad_data(out)]) == 1
    line = _our_lines(capfd.readouterr().err)
    assert len(line) == 1 and "traceback:" not in line[0]  # its traceback is in the folder, as before
    assert (out / "mine.txt").read_text() == "the user's"
    assert "Traceback" in (out / "failures" / "rank00000.txt").read_text()


def test_a_failed_start_removes_only_what_it_made(tmp_path, capfd, monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where its traceback goes
    assert main(["train", *_bad_data(out)]) == 1
    assert _our_lines(capfd.readouterr().err)[0].endswith(".txt") and len(list(tmp_path.glob("swat-dist-run-*"))) == 1
    assert not out.exists()


def test_a_config_error_is_printed_by_rank_0_only(tmp_path, monkeypatch, capfd):
    errors = tmp_path / "error.json"
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(errors))
        assert main(["train", *overrides(tmp_path / "run", "optim.lr=abc")]) == 2
        err = capfd.readouterr().err
        said = "swat-dist train: error: optim.lr: expected a number, got 'abc'"
        assert [x for x in err.splitlines() if x.startswith("swat-dist")] == ([said] if rank == 0 else [])
        assert json.loads(errors.read_text())["message"]["message"] == said  # each rank's, for torchrun
    if torch.cuda.is_available():  # the case below needs a machine where CUDA sees no GPU
        return
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # GPUs given, none seen: this rank's own error, printed
    assert main(["train", *overrides(tmp_path / "run")]) == 2
    assert "CUDA_VISIBLE_DEVICES=0 gives this task GPUs, but CUDA sees none" in capfd.readouterr().err


def test_the_resume_note_is_printed_by_rank_0_only(tmp_path, capsys):
    (tmp_path / "meta.json").write_text(json.dumps({"step": 4, "world_size": 2, "config_hash": "old"}))

    class Engine:
        def load(self, *_: object) -> None:
            raise LookupError("stop here")  # the note comes first; nothing else of load is under test

    for rank in (0, 1):
        env = DistEnv(rank=rank, world_size=2)
        manager = CheckpointManager(tmp_path, CheckpointConfig(), env, Engine(), None)  # type: ignore[arg-type]
        with pytest.raises(LookupError):
            manager.load(tmp_path, "new")
        notes = [x for x in capsys.readouterr().out.splitlines() if "written with config old, now new" in x]
        assert len(notes) == (1 if rank == 0 else 0)


# ---- failure.report across 3 real gloo ranks: what each prints ----

# per case, the error each rank raises: alike; a cause on rank 1 that ranks 0 and 2 see as a lost peer; two
# different errors, rank 2's like rank 0's
REPORT = """
import sys
from datetime import timedelta
from pathlib import Path
import torch.distributed as tdist
from swat_dist.dist import DistEnv
from swat_dist.train import failure

rank, port, run_dir = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
CASES = [
    [ValueError("bad path"), ValueError("bad path"), ValueError("bad path")],
    [RuntimeError("Connection closed by peer"), KeyError("only rank 1"), RuntimeError("Connection reset by peer")],
    [ValueError("on rank 0"), ValueError("on rank 1"), ValueError("on rank 0")],
]
tdist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=3,
                         timeout=timedelta(seconds=60))
for attempt, errors in enumerate(CASES):  # an attempt each: one case's posts do not leak into the next
    try:
        raise errors[rank]
    except Exception as err:
        failure.report(err, DistEnv(rank=rank, world_size=3, elastic_attempt=attempt), run_dir)
    tdist.barrier()  # every rank has said this case's lines
    if rank == 0:
        sys.stderr.write(f"--- end of {attempt}\\n")
        sys.stderr.flush()
    tdist.barrier()
tdist.destroy_process_group()
"""


def test_each_failing_rank_prints_unless_rank_0_said_it(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "log"
    with log.open("a") as out:  # one file, appended to by the three: lines in the order written
        procs = [subprocess.Popen([sys.executable, "-c", REPORT, str(r), str(port), str(tmp_path)], stdout=out,
                                  stderr=subprocess.STDOUT) for r in range(3)]  # fmt: skip
        assert [p.wait(timeout=120) for p in procs] == [0, 0, 0], log.read_text()[-3000:]
    said = [[x.split(":")[1].strip() for x in part.splitlines() if x.startswith("swat-dist")]
            for part in log.read_text().split("--- end of ")]  # fmt: skip
    assert said[0] == ["rank 0 failed"]  # alike: once
    # a lost peer on ranks 0 and 2: rank 0 says it stopped, rank 1 the cause, rank 2 nothing more
    assert sorted(said[1]) == ["rank 0 stopped", "rank 1 failed"]
    assert sorted(said[2]) == ["rank 0 failed", "rank 1 failed"]  # rank 2 said what rank 0 said
    assert len(list((tmp_path / "failures").glob("rank*.txt"))) == 3  # every rank kept its traceback


# ---- the OpenMP wait policy (issue 28 item 8) ----

WAIT = """
import os, sys
from swat_dist import cli
assert "torch" not in sys.modules  # else libgomp would have read the environment already
try:
    cli.main(["--help"])
except SystemExit:
    pass
print(os.environ.get("OMP_WAIT_POLICY"))
"""


@pytest.mark.parametrize(("given", "used"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_the_command_sets_a_passive_openmp_wait_before_torch_loads(given, used):
    """Spinning OpenMP threads made a single-process run 2-7x slower beside other jobs (cli.py says what was
    measured); the user's own setting wins."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | (
        {"OMP_WAIT_POLICY": given} if given else {}
    )
    out = subprocess.run([sys.executable, "-c", WAIT], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.splitlines()[-1] == used, out.stderr[-2000:]
