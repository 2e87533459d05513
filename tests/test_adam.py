"""anoncli.adam: the fits' Adam is torch's, without torch.optim's start-up."""
import math

import pytest

torch = pytest.importorskip("torch")

from anoncli.adam import EPS, adam_start, adam_step  # noqa: E402


def test_the_first_step_moves_every_coordinate_by_the_rate_against_its_gradient_sign():
    # closed form at t = 1: m̂ = g and v̂ = g², so the update is lr·g / (|g| + ε)
    parameters = torch.tensor([0.5, -1.0, 2.0, 0.0])
    gradient = torch.tensor([3.0, -0.02, 1e-3, -7.0])
    updated, moments = adam_step(parameters, gradient, adam_start(parameters), lr=0.1)
    expected = parameters - 0.1 * gradient / (gradient.abs() + EPS)
    assert torch.allclose(updated, expected, atol=1e-6)
    assert moments.steps == 1


def test_matches_torch_optim_adam_over_many_steps_with_a_changing_rate():
    generator = torch.Generator().manual_seed(3)
    start = torch.randn(4, 10, 16, generator=generator)
    target = torch.randn(4, 10, 16, generator=generator)

    def loss_of(w):
        return ((torch.nn.functional.normalize(w, dim=-1) - target) ** 2).sum() + (w ** 4).sum() * 1e-2

    theirs = start.clone().requires_grad_(True)
    optimiser = torch.optim.Adam([theirs], lr=0.05)
    ours, moments = start.clone(), adam_start(start)
    for step in range(40):
        rate = 0.5 * 0.05 * (1 + math.cos(math.pi * step / 40))
        for group in optimiser.param_groups:
            group["lr"] = rate
        optimiser.zero_grad()
        loss_of(theirs).backward()
        optimiser.step()
        w = ours.clone().requires_grad_(True)
        gradient, = torch.autograd.grad(loss_of(w), w)
        ours, moments = adam_step(ours, gradient, moments, rate)
    assert torch.allclose(ours, theirs.detach(), atol=1e-5)
    assert moments.steps == 40


def test_a_step_changes_nothing_in_place():
    parameters, gradient = torch.ones(3), torch.full((3,), 2.0)
    moments = adam_start(parameters)
    adam_step(parameters, gradient, moments, lr=1.0)
    assert torch.equal(parameters, torch.ones(3)) and torch.equal(moments.first, torch.zeros(3))
    assert moments.steps == 0
