"""Mish's rewrite (what torch.compile traces) equals torch's mish, values and gradients, overflow range included."""

from __future__ import annotations

import torch

from diffrl.modules.velocity_net import Mish


def test_mish_and_its_gradient_equal_torchs_in_float64():
    x = torch.cat([torch.linspace(-60, 60, 2001, dtype=torch.float64), torch.tensor([-800.0, 800.0]).double()])
    mine, reference = x.clone().requires_grad_(), x.clone().requires_grad_()
    value, expected = Mish.rewritten(mine), torch.nn.functional.mish(reference)
    torch.testing.assert_close(value, expected, rtol=1e-14, atol=1e-14)
    value.sum().backward()
    expected.sum().backward()
    torch.testing.assert_close(mine.grad, reference.grad, rtol=1e-12, atol=1e-12)


def test_mish_in_float32_is_within_round_off():
    x = torch.linspace(-100, 100, 4001)
    torch.testing.assert_close(Mish.rewritten(x), torch.nn.functional.mish(x), rtol=2e-6, atol=2e-6)
    assert torch.isnan(Mish.rewritten(torch.tensor([float("nan")]))).all()


def test_compiled_mish_takes_the_rewrite_and_matches_eager():
    x = torch.linspace(-40, 40, 801, dtype=torch.float64)
    compiled = torch.compile(Mish(), dynamic=False)
    torch.testing.assert_close(compiled(x), Mish()(x), rtol=1e-13, atol=1e-13)
