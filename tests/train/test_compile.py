"""``engine.compile: true`` compiles the model in place: the same training step, the same checkpoint names."""

import pytest
import timm
import torch
import torch.nn.functional as F

from swat_dist.config import load_config


def _two_steps(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """Loss of a training step, then of the next forward after the AdamW update (so the grads count too)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return [loss.item(), F.cross_entropy(model(x), y).item()]


@pytest.mark.slow  # inductor compiles forward and backward: ~20-60 s on 2 cores
def test_a_compiled_train_step_gives_the_eager_loss_and_keeps_parameter_names():
    torch.manual_seed(0)
    eager = timm.create_model("swat_deit_micro_patch4_32", num_classes=10, depth=1).train()
    compiled = timm.create_model("swat_deit_micro_patch4_32", num_classes=10, depth=1).train()
    compiled.load_state_dict(eager.state_dict())
    names = list(compiled.state_dict())
    compiled.compile()  # what train.run does with engine.compile: true
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    ref, got = _two_steps(eager, x, y), _two_steps(compiled, x, y)
    assert ref[1] < ref[0]  # the step changed the weights, so the second loss checks the gradients
    assert got == pytest.approx(ref, rel=1e-4, abs=1e-5)  # inductor reorders fp32 sums: rounding only
    assert list(compiled.state_dict()) == names  # no `_orig_mod.` prefix: checkpoints load unchanged


def test_engine_compile_is_an_opt_in_config_key():
    synthetic = ["data.format=synthetic"]
    assert load_config([], synthetic).engine.compile is False
    assert load_config([], [*synthetic, "engine.compile=true"]).engine.compile is True
