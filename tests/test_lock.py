"""The lock (launch/constraints.txt) agrees with pyproject.toml's ranges, and the check can fail."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = (ROOT / "pyproject.toml").read_text()
LOCK_TEXT = (ROOT / "launch" / "constraints.txt").read_text()


def _lock_module():
    spec = importlib.util.spec_from_file_location("swat_lock", ROOT / "launch" / "lock.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


lock = _lock_module()


def test_every_pyproject_requirement_is_pinned_inside_its_range():
    assert lock.disagreements(PYPROJECT, LOCK_TEXT) == []


def test_the_lock_pins_exact_versions_of_the_stack_setup_and_the_image_install():
    pins = lock.parse_lock(LOCK_TEXT)
    for name in ("torch", "torchvision", "timm", "deepspeed", "ffcv", "mlflow", "submitit", "webdataset", "pip"):
        assert re.fullmatch(r"\d+(\.\d+)*(\.post\d+|rc\d+)?", pins[name]), (name, pins.get(name))
    assert all("+" not in v for v in pins.values())  # no local labels: `==2.14.1` matches +cu130 and PyPI's
    assert "swat-dist" not in pins


def test_the_check_fails_on_a_broken_copy():
    pins = lock.parse_lock(LOCK_TEXT)
    # 1. a pin moved outside its range: mlflow is capped <3.18 in pyproject
    broken = re.sub(r"^mlflow==.*$", "mlflow==3.18.0", LOCK_TEXT, flags=re.M)
    assert lock.disagreements(PYPROJECT, broken) == ["mlflow>=3.17,<3.18: the lock pins 3.18.0, outside the range"]
    # 2. a requirement missing from the lock (here one of an extra's)
    broken = re.sub(r"^pytest==.*\n", "", LOCK_TEXT, flags=re.M)
    assert [p for p in lock.disagreements(PYPROJECT, broken) if "pytest" in p] == ["[dev] pytest>=8: not in the lock"]
    # 3. pyproject raised a floor above the pinned version
    raised = PYPROJECT.replace('"timm>=1.0.20,<2"', f'"timm>{pins["timm"]},<2"')
    assert raised != PYPROJECT
    expected = f"timm>{pins['timm']},<2: the lock pins {pins['timm']}, outside the range"
    assert lock.disagreements(raised, LOCK_TEXT) == [expected]


def test_setup_and_the_image_install_with_the_lock():
    setup = (ROOT / "launch" / "setup.sh").read_text()
    assert "launch/constraints.txt" in setup and '-c "$LOCK"' in setup
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert "launch/setup.sh" in dockerfile and "SWAT_LOCK" not in dockerfile  # the image uses the default lock
