"""diffrl's Mish (one sigmoid) equals torch's mish, values and gradients, saturated range included, eager and
compiled."""

from __future__ import annotations

import torch

from diffrl.modules.velocity_net import Mish


def test_mish_and_its_gradient_equal_torchs_in_float64():
    x = torch.cat([torch.linspace(-60, 60, 2001, dtype=torch.float64), torch.tensor([-800.0, 800.0]).double()])
    mine, reference = x.clone().requires_grad_(), x.clone().requires_grad_()
    value, expected = Mish()(mine), torch.nn.functional.mish(reference)
    torch.testing.assert_close(value, expected, rtol=1e-14, atol=1e-14)
    value.sum().backward()
    expected.sum().backward()
    torch.testing.assert_close(mine.grad, reference.grad, rtol=1e-12, atol=1e-12)


def test_mish_at_hand_computed_points():
    # mish(x) = x·tanh(log(1 + eˣ)) and tanh(log c) = (c² − 1)/(c² + 1): at x = ±log 3, c = 4 and 4/3.
    log3 = torch.tensor(3.0, dtype=torch.float64).log()
    x = torch.stack([torch.zeros_like(log3), log3, -log3])
    expected = torch.stack([torch.zeros_like(log3), log3 * 15 / 17, -log3 * 7 / 25])
    torch.testing.assert_close(Mish()(x), expected, rtol=1e-15, atol=0)


def test_mish_in_float32_is_within_round_off():
    x = torch.linspace(-100, 100, 4001)
    torch.testing.assert_close(Mish()(x), torch.nn.functional.mish(x), rtol=2e-6, atol=2e-6)
    assert torch.isnan(Mish()(torch.tensor([float("nan")]))).all()


def test_compiled_mish_matches_eager_values_and_gradients():
    x = torch.linspace(-40, 40, 801, dtype=torch.float64)
    eager_input, compiled_input = x.clone().requires_grad_(), x.clone().requires_grad_()
    compiled = torch.compile(Mish(), dynamic=False)
    value, expected = compiled(compiled_input), Mish()(eager_input)
    torch.testing.assert_close(value, expected, rtol=1e-13, atol=1e-13)
    value.sum().backward()
    expected.sum().backward()
    torch.testing.assert_close(compiled_input.grad, eager_input.grad, rtol=1e-12, atol=1e-12)
