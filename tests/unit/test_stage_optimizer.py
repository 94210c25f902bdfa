"""The stages' AdamW: the fused kernel where the parameters allow it, taking the loop's steps."""

import copy
from types import SimpleNamespace

import torch

from cofee.config import StageOptimConfig
from cofee.stages.base import fused_kernel
from cofee.stages.esi import ESIModule


def _optimizer(module: ESIModule) -> torch.optim.AdamW:
    module._trainer = SimpleNamespace(estimated_stepping_batches=10)
    return module.configure_optimizers()["optimizer"]


def test_fused_adamw_takes_the_per_parameter_loops_steps(tiny_encoder):
    fused_module = ESIModule(tiny_encoder, StageOptimConfig(lr=1e-3, warmup_ratio=0.0))
    loop_module = copy.deepcopy(fused_module)
    fused = _optimizer(fused_module)
    assert fused.defaults["fused"]
    groups = [
        {k: v for k, v in g.items() if k not in ("fused", "initial_lr")}
        for g in _optimizer(loop_module).param_groups
    ]
    loop = torch.optim.AdamW(groups, fused=False)
    assert [g["weight_decay"] for g in fused.param_groups] == [g["weight_decay"] for g in loop.param_groups]

    before = copy.deepcopy(loop_module.state_dict())
    fused_module.eval(), loop_module.eval()  # no dropout: both see the same gradients
    torch.manual_seed(0)
    ids = torch.randint(5, 100, (4, 12))
    for _ in range(5):
        for module, optimizer in ((fused_module, fused), (loop_module, loop)):
            optimizer.zero_grad()
            module.encoder(input_ids=ids).last_hidden_state.pow(2).mean().backward()
            optimizer.step()
    moved = 0
    for (name, a), b in zip(fused_module.named_parameters(), loop_module.parameters(), strict=True):
        # rounding apart: well under 1% of one step (lr 1e-3) on every weight
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
        moved += not torch.equal(a, before[name])
    assert moved  # the steps changed the weights: the comparison is not of two untouched copies


def test_the_fused_kernel_only_for_floating_cpu_or_cuda_parameters():
    assert fused_kernel([torch.zeros(2)])
    assert not fused_kernel([torch.zeros(2, device="meta")])
    assert not fused_kernel([torch.zeros(2, dtype=torch.int64)])
    assert not fused_kernel([])
