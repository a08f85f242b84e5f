"""PPOUpdate and its tensor KL-adaptive learning rate; the recipes' trainer config read off the constructor."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from torchrl.objectives import ClipPPOLoss, KLAdaptiveLR
from torchrl.objectives.value import GAE

from diffrl.envs import make_gym_env
from diffrl.modules import GaussianActor, GenPOActor, GenPOFlow, make_value_network
from diffrl.numerics import NumericalError
from diffrl.objectives import GenPOLoss
from diffrl.training import KLAdaptiveLearningRate, OnPolicyTrainer, PPOUpdate
from diffrl.training.recipe import constructor_config


def test_tensor_rule_follows_torchrl_kl_adaptive_lr_step_for_step():
    """TorchRL's KLAdaptiveLR (Python floats) is the reference; KLs cover every branch and both bounds."""
    kls = [0.5, 0.5, 0.5, 0.001, 0.0, -0.01, 0.004, 0.02, 0.03] + [1e-6] * 20 + [1.0] * 30
    reference_parameter, parameter = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    reference = torch.optim.Adam([reference_parameter], lr=5e-4)
    optimizer = torch.optim.Adam([parameter], lr=torch.tensor(5e-4, dtype=torch.float64))
    reference_rule = KLAdaptiveLR(reference, 0.01, factor=1.5, min_lr=1e-5, max_lr=1e-2)
    rule = KLAdaptiveLearningRate(optimizer, 0.01, factor=1.5, min_lr=1e-5, max_lr=1e-2)
    seen = set()
    for kl in kls:
        reference_rule.step(kl)
        rule.step(torch.tensor(kl))
        expected = reference.param_groups[0]["lr"]
        assert float(optimizer.param_groups[0]["lr"]) == pytest.approx(expected, rel=1e-12), kl
        seen.add(expected)
    assert 1e-5 in seen and 1e-2 in seen  # both bounds reached


def test_non_tensor_learning_rate_is_refused():
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    with pytest.raises(ValueError, match="lr as a tensor"):
        KLAdaptiveLearningRate(optimizer, 0.01)


def test_update_returns_device_tensors_and_moves_the_parameters():
    torch.manual_seed(0)
    env = make_gym_env("HalfCheetah-v5", 4, seed=0, max_episode_steps=10)
    actor, critic = GaussianActor(6, 17, [16]), make_value_network(17, [16])
    update = PPOUpdate(ClipPPOLoss(actor, critic), num_epochs=2, num_minibatches=2)
    before = [parameter.detach().clone() for parameter in actor.parameters()]
    with torch.no_grad():
        batch = env.rollout(8, actor, break_when_any_done=False)
    metrics = update.update(batch)
    assert all(isinstance(value, torch.Tensor) and value.numel() == 1 for value in metrics.values())
    assert {"loss_objective", "loss_critic", "kl_approx", "grad_norm"} <= metrics.keys()
    assert any(not torch.equal(b, a) for b, a in zip(before, actor.parameters(), strict=True))


def test_trainer_config_mirrors_the_constructor():
    node = constructor_config(PPOUpdate)
    assert node["_target_"] == "diffrl.training.ppo_update.PPOUpdate"
    assert (node["num_epochs"], node["learning_rate"], node["desired_kl"], node["gamma"]) == (5, 5e-4, 0.01, 0.99)
    assert "loss_module" not in node and "distributed" not in node


def test_the_trainer_asks_for_a_training_env():
    env = make_gym_env("HalfCheetah-v5", 2, seed=0)
    actor, critic = GaussianActor(6, 17, [8]), make_value_network(17, [8])
    with pytest.raises(ValueError, match=r"diffrl.envs.training_env\(env\)"):
        OnPolicyTrainer(env=env, update=PPOUpdate(ClipPPOLoss(actor, critic)), total_frames=10)


class RowCounter(torch.nn.Module):
    """The critic's MLP, counting the rows it evaluates."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net, self.rows = net, 0

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        self.rows += observation.shape[:-1].numel()
        return self.net(observation)


def ended_episode_rollout(envs: int = 3, steps: int = 7, obs: int = 4) -> TensorDict:
    """A collector-shaped float64 rollout with terminated and truncated steps mid-rollout: there the next
    observation is the final one and the following step starts from a reset."""
    generator = torch.Generator().manual_seed(0)
    observation = torch.randn(envs, steps + 1, obs, dtype=torch.float64, generator=generator)
    next_observation = observation[:, 1:].clone()
    terminated = torch.zeros(envs, steps, 1, dtype=torch.bool)
    truncated = torch.zeros_like(terminated)
    terminated[0, 2], truncated[1, 4], truncated[2, 0], terminated[2, 5] = True, True, True, True
    done = terminated | truncated
    next_observation[done.squeeze(-1)] = torch.randn(int(done.sum()), obs, dtype=torch.float64, generator=generator)
    return TensorDict(
        {
            "observation": observation[:, :-1],
            "action": torch.randn(envs, steps, 2, dtype=torch.float64, generator=generator),
            "next": {
                "observation": next_observation,
                "reward": torch.randn(envs, steps, 1, dtype=torch.float64, generator=generator),
                "done": done,
                "terminated": terminated,
                "truncated": truncated,
            },
        },
        batch_size=[envs, steps],
    )


@pytest.mark.parametrize(("select_ended", "rows"), [(True, 21 + 3 + 4), (False, 42)])
def test_values_come_from_one_critic_pass_and_equal_torchrl_gae(select_ended, rows):
    """TorchRL's GAE (the critic on every observation and every next one) is the reference, in float64.

    On a CPU the critic sees each step once, plus the last step's and the ended steps' next observations:
    21 + 3 + 4 rows for 3 envs × 7 steps with 4 episode ends before the last step. The sync-free path of
    other devices evaluates every next observation, as TorchRL does (42 rows).
    """
    torch.manual_seed(0)
    actor, critic = GaussianActor(2, 4, [8]).double(), make_value_network(4, [8]).double()
    counter = RowCounter(critic.module)
    critic.module = counter
    update = PPOUpdate(ClipPPOLoss(actor, critic), num_epochs=1, num_minibatches=1)
    batch = ended_episode_rollout()
    reference = GAE(gamma=0.99, lmbda=0.95, value_network=critic, average_gae=False)(batch.clone())
    counter.rows = 0
    with torch.no_grad():
        update._estimate_values(batch, select_ended=select_ended)
        update.advantage_module(batch)
    assert counter.rows == rows
    for key in ("state_value", ("next", "state_value"), "advantage", "value_target"):
        torch.testing.assert_close(batch[key], reference[key], rtol=0, atol=1e-12, msg=str(key))
    # The ended steps' final observations matter: with the reset observation's value instead the targets move.
    shifted = torch.cat([reference["state_value"][:, 1:], reference["next", "state_value"][:, -1:]], 1)
    assert not torch.allclose(shifted, reference["next", "state_value"])


def test_a_rollout_out_of_time_order_is_refused():
    actor, critic = GaussianActor(2, 4, [8]).double(), make_value_network(4, [8]).double()
    update = PPOUpdate(ClipPPOLoss(actor, critic), num_epochs=1, num_minibatches=1)
    batch = ended_episode_rollout()[:, [0, 1, 3, 2, 4, 5, 6]]
    with pytest.raises(ValueError, match="next 'observation' at step 1 is not the following step's"):
        update.update(batch)


def test_outside_the_trainer_the_actor_checks_are_deferred_like_the_loss_checks():
    """Immediate actor checks in the loss's forward would read the host in every minibatch: the update
    shares its deferred monitor with the actor, and the loop raises once per iteration."""
    torch.manual_seed(0)
    envs, steps, obs_dim = 4, 2, 3
    actor = GenPOActor(GenPOFlow(2, obs_dim, hidden_sizes=[8]))
    update = PPOUpdate(GenPOLoss(actor, make_value_network(obs_dim, [8])), num_epochs=1, num_minibatches=2)
    assert actor.numerics is update.numerics and update.loss_module.numerics is update.numerics
    observation = torch.randn(envs, steps + 1, obs_dim)
    with torch.no_grad():
        batch = actor(TensorDict({"observation": observation[:, :-1]}, batch_size=[envs, steps]))
    done = torch.zeros(envs, steps, 1, dtype=torch.bool)
    batch["next"] = TensorDict(
        {"observation": observation[:, 1:], "reward": torch.randn(envs, steps, 1), "done": done, "terminated": done},
        batch_size=[envs, steps],
    )
    batch["observation"][2, 1, 0] = float("nan")
    update.update(batch)  # records, does not raise
    with pytest.raises(NumericalError, match="not finite"):
        update.numerics.raise_if_failed()

    unchecked = GenPOActor(GenPOFlow(2, obs_dim, hidden_sizes=[8]), check_finite=False)
    PPOUpdate(GenPOLoss(unchecked, make_value_network(obs_dim, [8])))
    assert unchecked.numerics.mode == "off"  # a user's choice stands
