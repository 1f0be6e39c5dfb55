"""``swat-dist export RUN OUT.onnx``: one model of each family exports with a dynamic batch axis and runs in
onnxruntime as in PyTorch; a mismatch, a wrong name or a run without its config is one line and no file."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from swat_dist.cli import main
from swat_dist.config import load_config, save_config
from swat_dist.train import export as export_mod

onnxruntime = pytest.importorskip("onnxruntime")  # the `export` extra

FAMILIES = ["swat_deit_micro_patch4_32", "swat_mixer_micro_patch4_32", "swat_resmlp_micro_patch4_32",
            "swat_swin_micro_patch4_window4_32"]  # fmt: skip


def _run(tmp_path: Path, name: str) -> tuple[Path, torch.nn.Module]:
    """A run folder as training leaves it, as far as export reads it: config.yaml and fp32 weights."""
    run = tmp_path / "run"
    run.mkdir()
    save_config(load_config([], [f"model.name={name}", "model.num_classes=10", "data.format=synthetic"]), run)
    model = timm.create_model(name, num_classes=10).eval()
    torch.nn.init.normal_(model.get_classifier().weight, std=0.02)  # Mixer / ResMLP heads start at zero
    save_file(model.state_dict(), str(run / "model.safetensors"))
    return run / "model.safetensors", model


def _one_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


@pytest.mark.slow  # 10-40 s each on 2 CPU cores: torch.export + ONNX optimisation
@pytest.mark.parametrize("name", FAMILIES)
def test_onnx_export_runs_in_onnxruntime_as_in_pytorch_at_any_batch(name, tmp_path, capsys):
    weights, model = _run(tmp_path, name)
    out = tmp_path / "serve" / "model.onnx"
    assert main(["export", str(weights), str(out)]) == 0
    assert "onnxruntime matches" in capsys.readouterr().out
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for batch in (1, 5):  # exported at 2, checked at 3: the batch axis is symbolic
        x = torch.randn(batch, 3, 32, 32)
        (got,) = session.run(None, {"image": x.numpy()})
        with torch.no_grad():
            torch.testing.assert_close(torch.from_numpy(got), model(x), rtol=1e-4, atol=1e-4)
    assert not list(out.parent.glob(".*.tmp"))


@pytest.mark.slow
def test_a_mismatch_is_one_line_and_leaves_no_file(tmp_path, capsys, monkeypatch):
    weights, _ = _run(tmp_path, "swat_mixer_micro_patch4_32")
    to_onnx = export_mod._to_onnx

    def exports_other_weights(m, size, path):  # a broken exporter: the file computes another function
        with torch.no_grad():
            m.get_classifier().weight.mul_(2.0)  # logits doubled
        to_onnx(m, size, path)
        with torch.no_grad():
            m.get_classifier().weight.div_(2.0)  # restored exactly

    monkeypatch.setattr(export_mod, "_to_onnx", exports_other_weights)
    out = tmp_path / "model.onnx"
    err = _one_line(capsys, ["export", str(weights), str(out)])
    assert err.startswith(f"swat-dist export: error: {out}: not written: onnxruntime's output differs from PyTorch's")
    assert "tolerance 0.0001" in err and not out.exists() and not list(tmp_path.glob(".*.tmp"))


def test_names_and_missing_configs_are_one_line(tmp_path, capsys):
    weights, _ = _run(tmp_path, "swat_deit_micro_patch4_32")
    err = _one_line(capsys, ["export", str(weights), str(tmp_path / "m.bin"), "--format", "onnx"])
    assert err.endswith("an ONNX export is a .onnx file (name it *.onnx)")
    alone = tmp_path / "alone.safetensors"
    alone.write_bytes(weights.read_bytes())
    err = _one_line(capsys, ["export", str(alone), str(tmp_path / "m.onnx")])
    assert "no run config.yaml above it" in err
