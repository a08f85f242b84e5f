"""The Gaussian PPO baseline actor: shapes, exact log-likelihood, deterministic mode, std init."""

from __future__ import annotations

import math

import pytest
import torch
from tensordict import TensorDict
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.objectives import ClipPPOLoss

from diffrl.modules.gaussian_actor import GaussianActor
from diffrl.modules.value_net import make_value_network

OBS_DIM, ACTION_DIM = 5, 3


def observations(*batch: int, seed: int = 0) -> TensorDict:
    generator = torch.Generator().manual_seed(seed)
    return TensorDict({"observation": torch.randn(*batch, OBS_DIM, generator=generator)}, batch_size=list(batch))


@pytest.mark.parametrize("batch", [(7,), (4, 6)])
def test_output_shapes(batch):
    torch.manual_seed(0)
    actor = GaussianActor(ACTION_DIM, OBS_DIM, hidden_sizes=[32, 32])
    td = actor(observations(*batch))
    assert td["action"].shape == (*batch, ACTION_DIM)
    assert td["loc"].shape == td["scale"].shape == (*batch, ACTION_DIM)
    # [*B], never [*B, 1]: TorchRL's PPO loss would silently broadcast the latter to [B, B].
    assert td["action_log_prob"].shape == batch
    assert actor.get_dist(td).log_prob(td["action"]).shape == batch


def test_log_prob_matches_independent_normal():
    torch.manual_seed(0)
    actor = GaussianActor(ACTION_DIM, OBS_DIM, hidden_sizes=[32, 32], init_std=0.7)
    with torch.no_grad():
        actor.module[0].module[1].state_independent_scale.copy_(torch.tensor([-0.5, 0.0, 0.3]))
    td = actor(observations(64))
    mean = actor.module[0].module[0](td["observation"])
    std = torch.tensor([-0.5, 0.0, 0.3]).exp()
    # Written out from the density, not through torch.distributions: sum_i log N(a_i; mu_i, sigma_i^2).
    expected = (-0.5 * ((td["action"] - mean) / std).pow(2) - std.log() - 0.5 * math.log(2 * math.pi)).sum(-1)
    # float32 round-off over 3 summed terms of O(10): 1e-5 relative.
    torch.testing.assert_close(td["action_log_prob"], expected, rtol=1e-5, atol=1e-5)
    reference = torch.distributions.Normal(mean, std).log_prob(td["action"]).sum(-1)
    torch.testing.assert_close(actor.get_dist(td).log_prob(td["action"]), reference, rtol=1e-5, atol=1e-5)


def test_deterministic_mode_returns_the_mean():
    torch.manual_seed(0)
    actor = GaussianActor(ACTION_DIM, OBS_DIM, hidden_sizes=[32])
    td = observations(16)
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        action = actor(td.clone())["action"]
    torch.testing.assert_close(action, actor.module[0].module[0](td["observation"]), rtol=0, atol=0)
    random_action = actor(td.clone())["action"]
    assert not torch.allclose(random_action, action)


@pytest.mark.parametrize("init_std", [1.0, 0.25])
def test_std_starts_at_init_std_and_is_learned(init_std):
    torch.manual_seed(0)
    actor = GaussianActor(ACTION_DIM, OBS_DIM, hidden_sizes=[32], init_std=init_std)
    td = actor(observations(2000))
    torch.testing.assert_close(td["scale"], torch.full((2000, ACTION_DIM), init_std))
    # The empirical spread of the actions around the mean confirms the sampling scale (2000 samples:
    # a relative standard error of about 1.6 %, so 10 % is a loose bound).
    spread = (td["action"] - td["loc"]).std(0)
    torch.testing.assert_close(spread, torch.full((ACTION_DIM,), init_std), rtol=0.1, atol=0)
    assert any("state_independent_scale" in name for name, p in actor.named_parameters() if p.requires_grad)


def test_invalid_std_is_a_clear_error():
    with pytest.raises(ValueError, match="min_std"):
        GaussianActor(ACTION_DIM, OBS_DIM, init_std=0.0)


def test_clip_ppo_loss_runs_and_trains_every_parameter():
    torch.manual_seed(0)
    actor = GaussianActor(ACTION_DIM, OBS_DIM, hidden_sizes=[16])
    critic = make_value_network(OBS_DIM, hidden_sizes=[16])
    loss = ClipPPOLoss(actor, critic, clip_epsilon=0.2, entropy_coeff=0.005, loss_critic_type="l2", clip_value=0.2)
    with torch.no_grad():  # as in a collector: the stored log-prob is a constant
        batch = actor(observations(32))
    batch["advantage"], batch["value_target"] = torch.randn(32, 1), torch.randn(32, 1)
    batch["state_value"] = torch.zeros(32, 1)
    out = loss(batch)
    # Same parameters as at sampling time: the ratio is exactly 1.
    assert abs(float(out["kl_approx"])) < 1e-6 and float(out["clip_fraction"]) == 0.0
    assert all(out[key].shape == () for key in out.keys() if key.startswith("loss_"))
    sum(value for key, value in out.items() if key.startswith("loss_")).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in loss.parameters() if p.requires_grad)


def test_closed_form_sampling_matches_torchrls_distribution_path():
    """The lean forward writes what ProbabilisticActor's generic path writes, log-prob included."""
    torch.manual_seed(0)
    actor = GaussianActor(action_dim=3, obs_dim=5, hidden_sizes=[16], init_std=0.7).double()
    td = actor(TensorDict({"observation": torch.randn(64, 5, dtype=torch.float64)}, batch_size=[64]))
    dist = actor.get_dist(td)
    torch.testing.assert_close(td["action_log_prob"], dist.log_prob(td["action"]), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(td["loc"], dist.mean, rtol=0, atol=0)
    standardized = (td["action"] - td["loc"]) / td["scale"]
    # Draws are standard normal: mean and variance within 4 standard errors of 192 samples.
    assert abs(float(standardized.mean())) < 4 / math.sqrt(192)
    assert abs(float(standardized.var()) - 1) < 4 * math.sqrt(2 / 191)
    with set_exploration_type(ExplorationType.MODE):
        assert torch.equal(actor(td.clone())["action"], td["loc"])
