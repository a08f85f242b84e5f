"""diffrl/training/update_rule.py: the shared Adam factory and minibatch split of both update families."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict

from diffrl.training.update_rule import adam, shuffled_minibatches


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_the_fused_cpu_step_follows_in_place_rate_changes_like_the_per_parameter_loop(weight_decay):
    # The KL-adaptive rule writes the rate into the optimizer's lr tensor between steps; a step that
    # had copied the rate at construction would train at the initial rate without any error.
    def train(make_optimizer, rate_growth: float = 1.05) -> list[torch.Tensor]:
        torch.manual_seed(0)
        parameters = [torch.nn.Parameter(torch.randn(16, 5)), torch.nn.Parameter(torch.randn(3))]
        optimizer = make_optimizer(parameters)
        gradients = torch.Generator().manual_seed(1)
        for _ in range(40):
            for parameter in parameters:
                parameter.grad = torch.randn(parameter.shape, generator=gradients)
            optimizer.step()
            optimizer.param_groups[0]["lr"].mul_(rate_growth)
        return parameters

    optimizer_class = torch.optim.AdamW if weight_decay > 0 else torch.optim.Adam
    reference = train(
        lambda parameters: optimizer_class(
            parameters, lr=torch.tensor(1e-2, dtype=torch.float64), weight_decay=weight_decay, foreach=False
        )
    )
    trained = train(lambda parameters: adam(parameters, 1e-2, weight_decay=weight_decay))
    constant_rate = train(lambda parameters: adam(parameters, 1e-2, weight_decay=weight_decay), rate_growth=1.0)
    for ours, loop, unchanged in zip(trained, reference, constant_rate, strict=True):
        torch.testing.assert_close(ours, loop, rtol=0, atol=1e-5)
        # 1.05^40 ≈ 7 times the initial rate by the end: far outside the tolerance above.
        assert (ours - unchanged).abs().max() > 1e-2
    assert isinstance(adam(trained, 1e-2, weight_decay=weight_decay), optimizer_class)


def test_an_epoch_is_disjoint_equal_minibatches_and_too_many_is_a_clear_error():
    flat = TensorDict({"index": torch.arange(10)}, batch_size=[10])
    minibatches = [minibatch["index"] for minibatch in shuffled_minibatches(flat, 3)]
    assert [len(minibatch) for minibatch in minibatches] == [3, 3, 3]  # 10 // 3; one sample sits out
    assert len(set(torch.cat(minibatches).tolist())) == 9
    with pytest.raises(ValueError, match=r"num_minibatches=11 exceeds the rollout's 10 samples"):
        next(shuffled_minibatches(flat, 11))
