"""A rank that fails says why and the job ends in seconds (issue 27 item 2): 2 ranks under torchrun.

Before the fix each of these hung until the 30-minute collective timeout with no cause printed: the failing
rank waited in the teardown barrier, the others in the step's all-reduce. Each case checks: non-zero exit
well within 60 s, the failing rank's one line (exception, message, where) before any other of ours, its
traceback in RUN/failures/, the last complete checkpoint intact and the run lock released.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from swat_dist.data.convert.base import ConvertOptions
from swat_dist.data.convert.front import convert
from swat_dist.data.sets.digits import write_digits
from swat_dist.data.sources.wds import scan_shard
from swat_dist.train.checkpoint_paths import latest_tag, problem

from .test_train_runs import ROOT, _port, kill_tree, overrides

# rank 1 raises after its optimizer step k; everything else is the real CLI under the real launcher
INJECT = """
import os, sys
from swat_dist.cli import main
from swat_dist.train import trainer

original, at = trainer.Trainer._after_step, int(os.environ["SWAT_TEST_FAIL_STEP"])

def _after_step(self):
    original(self)
    if self.env.rank == 1 and self.state.step == at:
        raise RuntimeError(f"injected failure at step {at}")

trainer.Trainer._after_step = _after_step
sys.exit(main(["train", *sys.argv[1:]]))
"""

LONG = ["max_steps=400", "sched.epochs=400", "ema.enabled=false"]


def _torchrun(script: list[str], args: list[str], log: Path, **env: str) -> tuple[int, float, str]:
    """Run to the end (killed at 120 s); (exit code, seconds, output)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_port()),
           *script, *args]  # fmt: skip
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1", **env), stdout=log.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        kill_tree(proc)
        raise AssertionError(f"still running after 120 s:\n{log.read_text()[-3000:]}") from None
    return proc.returncode, time.monotonic() - start, log.read_text()


def _our_lines(output: str) -> list[str]:
    lines = [x for x in output.splitlines() if x.startswith("swat-dist train:")]
    assert lines, output[-3000:]
    return lines


def _check_ended_cleanly(out: Path, code: int, seconds: float, output: str, last_step: int) -> None:
    assert code != 0 and seconds < 60, (code, seconds, output[-3000:])
    ckpts = out / "checkpoints"
    assert latest_tag(ckpts) == f"step_{last_step:08d}", output[-3000:]
    assert problem(ckpts / f"step_{last_step:08d}", hashes=True) is None  # the last complete one verifies
    assert not (out / "run.lock").exists()  # the next run (or a requeue) can take the folder


def test_an_exception_on_one_rank_is_printed_and_ends_the_job(tmp_path):
    out, script = tmp_path / "run", tmp_path / "inject.py"
    script.write_text(INJECT)
    code, seconds, output = _torchrun([str(script)], overrides(out, *LONG), tmp_path / "log", SWAT_TEST_FAIL_STEP="6")
    first = _our_lines(output)[0]
    assert re.fullmatch(r"swat-dist train: rank 1 failed: RuntimeError: injected failure at step 6 \(inject\.py:\d+\)",
                        first), output[-3000:]  # fmt: skip
    saved = (out / "failures" / "rank00001.txt").read_text()
    assert saved.startswith(first) and "Traceback" in saved and "_after_step" in saved
    # rank 0 learns of it in its next collective and says so, without posing as the cause
    assert any(x.startswith("swat-dist train: rank 0 stopped: another rank left") for x in _our_lines(output))
    _check_ended_cleanly(out, code, seconds, output, last_step=4)


def _immutable(folder: Path, on: bool) -> None:
    """A folder nothing may be created in - root included, which ignores permission bits."""
    if os.geteuid() != 0:
        folder.chmod(0o555 if on else 0o755)
    else:
        subprocess.run(["chattr", "+i" if on else "-i", str(folder)], check=True)


def test_a_folder_that_cannot_be_written_mid_run_ends_the_job_with_the_cause(tmp_path):
    out = tmp_path / "run"
    first = _torchrun(["-m", "swat_dist", "train"], overrides(out, "max_steps=4"), tmp_path / "first")
    assert first[0] == 0, first[2][-3000:]
    ckpts = out / "checkpoints"
    _immutable(ckpts, True)
    try:  # resumes at step 4; the save at step 8 cannot create its folder
        code, seconds, output = _torchrun(["-m", "swat_dist", "train"], overrides(out, *LONG), tmp_path / "second")
    finally:
        _immutable(ckpts, False)
    ours = _our_lines(output)
    assert re.match(
        r"swat-dist train: rank \d failed: \w+Error: .*(Operation not permitted|Permission denied)", ours[0]
    )
    _check_ended_cleanly(out, code, seconds, output, last_step=4)


@pytest.fixture(scope="module")
def digits_wds(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("digits")
    write_digits(root / "png", size=32)
    assert convert(root / "png", root / "wds", ConvertOptions(fmt="wds", workers=1, shard_bytes=64 * 1024)) == 0
    return root / "wds"


def test_a_sample_that_does_not_decode_names_its_shard_and_ends_the_job(digits_wds, tmp_path):
    data = tmp_path / "wds"
    shutil.copytree(digits_wds, data)
    shards = sorted(data.glob("train-*.tar"))
    shard = shards[len(shards) // 2]
    offsets, _, _ = scan_shard(shard)
    at = int(offsets[len(offsets) // 2])
    with shard.open("r+b") as f:  # the sample's JPEG header zeroed: no decoder takes it for an image
        f.seek(at)
        f.write(bytes(64))
    args = overrides(tmp_path / "run", *LONG, "data.format=wds", f"data.path={data}", "data.workers=2",
                     "data.batch_size=8", "checkpoint.every_steps=null")  # fmt: skip
    code, seconds, output = _torchrun(["-m", "swat_dist", "train"], args, tmp_path / "log")
    assert code != 0 and seconds < 60, (code, seconds, output[-3000:])
    first = _our_lines(output)[0]
    # the worker's own message, not DataLoader's "Caught ValueError in DataLoader worker process 0"
    assert re.match(r"swat-dist train: rank \d failed: ValueError: .*\.tar: sample \d+ \(\.jpg at byte "
                    rf"{at:,}\) does not decode \(not an image\)", first), output[-3000:]  # fmt: skip
    assert str(shard) in first
