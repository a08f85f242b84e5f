"""FPO++'s flow policy: the Euler sampler, the per-pair CFM loss and the pairs' time law, checked against
hand-written float64 computations; the actor's stored pairs, deterministic mode and exported sampler."""

from __future__ import annotations

import math

import pytest
import torch
from tensordict import TensorDict
from torchrl.envs.utils import ExplorationType, set_exploration_type

from diffrl.modules import CFMFlow, FPOActor


def make_flow(**kwargs) -> CFMFlow:
    torch.manual_seed(0)
    return CFMFlow(action_dim=3, obs_dim=4, hidden_sizes=[32, 32], num_steps=5, **kwargs).double()


def test_sampler_is_n_euler_steps_of_the_velocity_from_one_to_zero():
    flow = make_flow()
    observation, start = torch.randn(6, 4, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64)
    x = start.clone()
    for i in range(5):  # t_i = 1 - i/5, dx = v dt with dt = -1/5, through the network's plain call
        t = torch.full((6,), 1 - i / 5, dtype=torch.float64)
        x = x - flow.velocity_net(x, observation, t) / 5
    torch.testing.assert_close(flow.sample(observation, start), x, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("reduction, scale", [("sqrt", 1 / math.sqrt(3)), ("mean", 1 / 3), ("sum", 1.0)])
def test_cfm_loss_is_the_squared_velocity_error_at_the_linear_interpolant(reduction, scale):
    flow = make_flow(loss_reduction=reduction)
    observation, action = torch.randn(6, 4, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64)
    noise, time = flow.draw_pairs((6,), 7, observation)
    loss = flow.cfm_loss(observation, action, noise, time)
    assert loss.shape == (6, 7)
    for b in range(6):
        for i in range(7):
            t, eps = time[b, i], noise[b, i]
            x_t = t * eps + (1 - t) * action[b]  # t = 1 is noise, t = 0 the action
            v = flow.velocity_net(x_t[None], observation[b][None], t[None])[0]
            expected = ((v - (eps - action[b])) ** 2).sum() * scale
            torch.testing.assert_close(loss[b, i], expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("beta, mean", [(1.0, 0.5), (2.0, 1 / 3), (0.5, 2 / 3)])
def test_pair_times_follow_beta_one_beta_on_the_inner_interval(beta, mean):
    flow = make_flow(time_beta=beta)
    torch.manual_seed(1)
    _, time = flow.draw_pairs((4000,), 16, torch.zeros(1, dtype=torch.float64))
    assert time.min() >= 0.005 and time.max() <= 0.995
    # E[1 - (1-u)^(1/beta)] = 1 - beta/(beta+1) = 1/(beta+1); t = 0.005 + 0.99 * that.
    expected = 0.005 + 0.99 * mean
    standard_error = time.std() / math.sqrt(time.numel())
    assert abs(time.mean() - expected) < 5 * standard_error


def test_actor_stores_the_pairs_and_their_cfm_losses_under_the_rollout_policy():
    actor = FPOActor(make_flow(), num_cfm_pairs=8, action_noise_std=0.1)
    td = actor(TensorDict({"observation": torch.randn(5, 4, dtype=torch.float64)}, batch_size=[5]))
    assert td["action"].shape == (5, 3) and td["cfm_noise"].shape == (5, 8, 3) and td["cfm_time"].shape == (5, 8)
    assert not td["cfm_loss"].requires_grad
    recomputed = actor.flow.cfm_loss(td["observation"], td["action"], td["cfm_noise"], td["cfm_time"])
    assert torch.equal(td["cfm_loss"], recomputed)
    assert torch.equal(actor.cfm_loss(td, td["action"], td["cfm_noise"], td["cfm_time"]), recomputed)


def test_stochastic_action_is_the_flow_from_gaussian_noise_plus_the_action_noise():
    actor = FPOActor(make_flow(), num_cfm_pairs=2, action_noise_std=0.1)
    observation = torch.randn(5, 4, dtype=torch.float64)
    torch.manual_seed(3)
    td = actor(TensorDict({"observation": observation}, batch_size=[5]))
    torch.manual_seed(3)  # the actor draws x_1, then the action noise
    start, action_noise = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    expected = actor.export_sampler()(observation, torch.cat([start, action_noise], -1))
    torch.testing.assert_close(td["action"], expected, rtol=0, atol=0)


def test_deterministic_mode_starts_at_zero_without_noise_and_equals_the_export_with_zero_noise():
    actor = FPOActor(make_flow(), num_cfm_pairs=2, action_noise_std=0.1)
    observation = torch.randn(5, 4, dtype=torch.float64)
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        first = actor(TensorDict({"observation": observation}, batch_size=[5]))["action"]
        second = actor(TensorDict({"observation": observation}, batch_size=[5]))["action"]
    assert torch.equal(first, second)
    assert actor.noise_dim == 6
    zero_noise = actor.export_sampler()(observation, torch.zeros(5, 6, dtype=torch.float64))
    torch.testing.assert_close(first, zero_noise, rtol=0, atol=0)
    torch.testing.assert_close(first, actor.flow.sample(observation, torch.zeros(5, 3, dtype=torch.float64)))


@pytest.mark.parametrize(
    "kwargs, message",
    [({"num_steps": 0}, "num_steps"), ({"loss_reduction": "max"}, "loss_reduction"), ({"time_beta": 0}, "time_beta")],
)
def test_bad_flow_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CFMFlow(action_dim=2, obs_dim=3, hidden_sizes=[8], **kwargs)


def test_bad_actor_arguments_and_nan_observations_are_named():
    flow = CFMFlow(action_dim=2, obs_dim=3, hidden_sizes=[8], num_steps=2)
    with pytest.raises(ValueError, match="num_cfm_pairs"):
        FPOActor(flow, num_cfm_pairs=0)
    with pytest.raises(ValueError, match="action_noise_std"):
        FPOActor(flow, action_noise_std=-1.0)
    observation = torch.randn(4, 3)
    observation[2, 1] = math.nan
    with pytest.raises(Exception, match="observation"):
        FPOActor(flow)(TensorDict({"observation": observation}, batch_size=[4]))
