"""The ``swat-dist`` command: the models table and one-line errors."""

import subprocess
import sys

import timm
import torch

from swat_dist.cli import main
from swat_dist.models.complexity import count_params


def test_models_table_shows_each_pair_and_its_measured_delta(capsys):
    assert main(["models", "swat_deit_micro*"]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split() for line in out[2:]}
    assert set(rows) == {"swat_deit_micro_patch4_32", "deit_micro_patch4_32"}
    with torch.device("meta"):
        swat = count_params(timm.create_model("swat_deit_micro_patch4_32"))
        base = count_params(timm.create_model("deit_micro_patch4_32"))
    assert rows["swat_deit_micro_patch4_32"][1] == "SWAT"
    assert float(rows["swat_deit_micro_patch4_32"][2]) == round(swat / 1e6, 3)
    assert float(rows["swat_deit_micro_patch4_32"][4]) == round((swat - base) / 1e6, 3)


def test_models_table_with_flops(capsys):
    assert main(["models", "deit_micro_patch4_32", "--flops"]) == 0
    lines = capsys.readouterr().out.splitlines()[2:]
    gflops = [float(line.split()[3]) for line in lines]
    assert len(gflops) == 2 and all(g > 0 for g in gflops)


def test_unknown_pattern_is_one_line_with_suggestions(capsys):
    assert main(["models", "swat_deit_tiny_patch16"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "swat_deit_tiny_patch16_224" in err


def test_console_script_and_module_entry_points():
    bindir = sys.executable.rsplit("/", 1)[0]
    for cmd in ([f"{bindir}/swat-dist", "--help"], [sys.executable, "-m", "swat_dist", "--help"]):
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and "models" in done.stdout
