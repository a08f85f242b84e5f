"""PathwiseUpdate: one iteration on a real rollout (critic then actor step per minibatch, old actor synced, rewards
scaled), a learning signal on a one-step task, checkpoint round trip, errors; DiscountedReturnNormalizer's scale."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from tensordict import TensorDict
from torchrl.objectives import ClipPPOLoss

from diffrl.envs import make_gym_env, training_env
from diffrl.modules import DIMEActor, GaussianActor, HLGaussQValue, SquashedGaussianActor, make_value_network
from diffrl.objectives import REPPOLoss, TruDiLoss
from diffrl.training import OnPolicyTrainer, PathwiseUpdate, PPOUpdate
from diffrl.training.return_normalizer import DiscountedReturnNormalizer


def reppo_update(obs_dim: int = 3, action_dim: int = 2, **kwargs) -> PathwiseUpdate:
    torch.manual_seed(0)
    actor = SquashedGaussianActor(action_dim, obs_dim, hidden_sizes=[16])
    critic = HLGaussQValue(obs_dim, action_dim, hidden_sizes=[16], num_bins=21)
    return PathwiseUpdate(REPPOLoss(actor, critic, aux_loss_coeff=1.0), **kwargs)


def rollout(num_envs: int = 4, steps: int = 8, obs_dim: int = 3, action_dim: int = 2) -> TensorDict:
    generator = torch.Generator().manual_seed(1)
    done = torch.zeros(num_envs, steps, 1, dtype=torch.bool)
    done[0, 3] = True
    return TensorDict(
        {
            "observation": torch.randn(num_envs, steps, obs_dim, generator=generator),
            "action": torch.rand(num_envs, steps, action_dim, generator=generator) * 2 - 1,
            "next": {
                "observation": torch.randn(num_envs, steps, obs_dim, generator=generator),
                "reward": torch.randn(num_envs, steps, 1, generator=generator),
                "done": done,
                "terminated": done.clone(),
                "truncated": torch.zeros_like(done),
            },
        },
        batch_size=[num_envs, steps],
    )


def test_one_iteration_trains_both_networks_and_syncs_the_old_actor():
    update = reppo_update(num_epochs=2, num_minibatches=4)
    before_actor = copy.deepcopy(update.actor.state_dict())
    before_critic = copy.deepcopy(update.critic.state_dict())
    metrics = update.update(rollout())
    update.numerics.raise_if_failed()
    for before, module in ((before_actor, update.actor), (before_critic, update.critic)):
        assert any(not torch.equal(before[key], value) for key, value in module.state_dict().items())
    old = update.loss_module.old_actor.state_dict()
    assert all(torch.equal(old[key], value) for key, value in update.actor.state_dict().items())
    for key in ("loss_actor", "loss_critic", "loss_critic_aux", "path_kl", "alpha", "reward_scale", "actor_grad_norm"):
        assert metrics[key].shape == () and math.isfinite(float(metrics[key])), key
    assert float(metrics["reward_scale"]) != 1.0  # the rewards were scaled by their return's spread
    assert float(update.actor_optimizer.state[update.loss_module.log_alpha]["step"]) == 8  # 2 epochs x 4 minibatches


def test_reppo_learns_a_one_step_task_through_q():
    """A contextual bandit (every step terminates), reward −(a − s/2)²: only ∂Q/∂a can move the policy's mean."""
    torch.manual_seed(0)
    actor = SquashedGaussianActor(1, 1, hidden_sizes=[32])
    critic = HLGaussQValue(1, 1, hidden_sizes=[32], num_bins=51, v_min=-3.0, v_max=1.0)  # the rewards' range
    update = PathwiseUpdate(
        REPPOLoss(actor, critic), num_epochs=4, num_minibatches=4, learning_rate=3e-3, normalize_rewards=False
    )
    observation = torch.rand(256, 1, 1) * 2 - 1
    done = torch.ones(256, 1, 1, dtype=torch.bool)
    errors = []
    for _ in range(30):
        with torch.no_grad():
            action = actor.rsample(observation).action
        step = {"observation": observation, "reward": -((action - 0.5 * observation) ** 2), "done": done,
                "terminated": done, "truncated": torch.zeros_like(done)}  # fmt: skip
        update.update(TensorDict({"observation": observation, "action": action, "next": step}, batch_size=[256, 1]))
        with torch.no_grad():
            errors.append(float((actor.deterministic_action(observation) - 0.5 * observation).abs().mean()))
    assert sum(errors[-5:]) / 5 < 0.4 * errors[0], errors


def test_checkpoint_components_restore_the_whole_update(tmp_path):
    update = reppo_update(num_epochs=1, num_minibatches=2)
    update.update(rollout())
    states = {name: copy.deepcopy(component.state_dict()) for name, component in update.checkpoint_components().items()}
    fresh = reppo_update(num_epochs=1, num_minibatches=2)
    for name, component in fresh.checkpoint_components().items():
        component.load_state_dict(states[name])
    torch.testing.assert_close(fresh.loss_module.log_alpha, update.loss_module.log_alpha)
    torch.testing.assert_close(fresh.reward_normalizer.scale, update.reward_normalizer.scale)
    # The running returns follow this process's episodes: saved per rank with the rollout, not with the update.
    carried = update.episode_components()["discounted_returns"]
    assert carried is update.reward_normalizer.carried and carried.running is not None
    fresh.episode_components()["discounted_returns"].load_state_dict(carried.state_dict())
    torch.testing.assert_close(fresh.reward_normalizer.carried.running, carried.running)


def test_the_loop_trains_trudi_on_a_mujoco_env():
    env = training_env(make_gym_env("HalfCheetah-v5", 4, max_episode_steps=8, seed=0), normalize_observations=True)
    torch.manual_seed(0)
    actor = DIMEActor(6, 17, num_steps=3, hidden_sizes=[16])
    update = PathwiseUpdate(
        TruDiLoss(actor, HLGaussQValue(17, 6, hidden_sizes=[16], num_bins=21)), num_epochs=1, num_minibatches=2
    )
    history = OnPolicyTrainer(env=env, update=update, total_frames=64, steps_per_env=8, progress=False).train()
    env.close()
    assert [entry["frames"] for entry in history] == [32.0, 64.0]
    assert all(math.isfinite(entry["path_kl"]) and math.isfinite(entry["loss_critic"]) for entry in history)


def test_families_reject_each_others_losses():
    torch.manual_seed(0)
    with pytest.raises(TypeError, match="trainer=ppo"):
        PathwiseUpdate(ClipPPOLoss(GaussianActor(2, 3, [8]), make_value_network(3, [8])))
    with pytest.raises(TypeError, match="trainer=pathwise"):
        PPOUpdate(reppo_update().loss_module)
    with pytest.raises(ValueError, match="exceeds the rollout"):
        reppo_update(num_minibatches=1000).update(rollout())


def test_return_normalizer_scale_is_one_over_the_discounted_returns_spread():
    gamma = 0.9
    reward = torch.tensor([[1.0, 2.0, 0.5, -1.0], [0.0, 3.0, 1.0, 2.0]])
    done = torch.tensor([[False, True, False, False], [False, False, False, False]])
    normalizer = DiscountedReturnNormalizer(gamma=gamma, return_bound=100.0)
    assert float(normalizer.scale) == 1.0
    normalizer.update(reward[:, :2], done[:, :2])
    normalizer.update(reward[:, 2:], done[:, 2:])  # carried across rollouts
    returns = []
    for env in range(2):
        running, previous_done = 0.0, False
        for step in range(4):
            running = gamma * running * (not previous_done) + float(reward[env, step])
            returns.append(running)
            previous_done = bool(done[env, step])
    expected = torch.tensor(returns, dtype=torch.float64)
    assert float(normalizer.scale) == pytest.approx(1 / float(expected.std()), rel=1e-6)
    bounded = DiscountedReturnNormalizer(gamma=gamma, return_bound=0.5)
    bounded.update(reward, done)
    assert float(bounded.scale) == pytest.approx(0.5 / float(expected.abs().max()), rel=1e-6)


def test_return_normalizer_merges_every_ranks_rollout_in_rank_order():
    # gamma = 0: each G is its reward. Rank 0's envs saw reward_0, rank 1's reward_1; both ranks must get
    # the scale of all six returns together, as one process with every env would.
    reward_0, reward_1 = torch.tensor([[1.0, 2.0], [0.5, -1.0]]), torch.tensor([[4.0], [-3.0]])
    done_0, done_1 = torch.zeros(2, 2, dtype=torch.bool), torch.zeros(2, 1, dtype=torch.bool)
    rank_0_moments = []
    rank_0 = DiscountedReturnNormalizer(gamma=0.0, return_bound=100.0)
    rank_0.update(reward_0, done_0, gather=lambda moments: rank_0_moments.append(moments) or moments[None])
    rank_1 = DiscountedReturnNormalizer(gamma=0.0, return_bound=100.0)
    rank_1.update(reward_1, done_1, gather=lambda moments: torch.stack([rank_0_moments[0], moments]))
    every_return = torch.cat([reward_0.flatten(), reward_1.flatten()]).double()
    assert float(rank_1.scale) == pytest.approx(1 / float(every_return.std()), rel=1e-6)
    assert float(rank_1.max_abs) == 4.0 and float(rank_1.count) == 6
    torch.testing.assert_close(rank_1.carried.running, reward_1[:, -1].double())  # its own envs' G only
