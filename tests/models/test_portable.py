"""The model tests hold on any CPU (issue 29): they pass again with other kernels than this machine's own.

Our machines are AMD EPYC or Intel Xeon with AVX-512/AMX; ATen, oneDNN and MKL pick kernels (and so fp32
summation orders) per instruction set and thread count. A test that compares against numbers recorded on
one machine, bit for bit, fails on the other (18 golden tests did). This reruns the numeric model tests
in a subprocess with ATen's portable (non-vectorised) kernels, oneDNN and MKL held to AVX2 and two
threads - the run furthest from the suite's own - so such an assertion fails here, where it is written.
``launch/kernel_matrix.sh`` runs the whole of tests/models under each kernel choice separately.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
# The files that compare numbers: stored goldens, and each fast form against its reference form.
NUMERIC = ["test_golden.py", "test_fold.py", "test_sdpa.py", "test_layers.py", "test_depthwise.py", "test_layout.py"]
OTHER_KERNELS = {
    "ATEN_CPU_CAPABILITY": "default",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "SWAT_TEST_THREADS": "2",
}


def _run(code_or_args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *code_or_args], cwd=HERE.parent.parent, env=env, capture_output=True, text=True, timeout=900
    )


@pytest.mark.slow
def test_numeric_model_tests_pass_with_other_cpu_kernels():
    env = {**os.environ, **OTHER_KERNELS}
    probe = _run(["-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"], env)
    assert probe.stdout.strip() == "DEFAULT", probe.stderr  # the variant really changes ATen's kernels
    files = [str(HERE / f) for f in NUMERIC]
    done = _run(["-m", "pytest", "-q", "-p", "no:cacheprovider", *files], env)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout.splitlines()[-1] and "failed" not in done.stdout.splitlines()[-1]
