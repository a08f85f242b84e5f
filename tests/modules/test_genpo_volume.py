"""GenPOFlow's learnable, state-dependent volume: exact likelihood, inversion, GenPO at init, entropy gradient, export.

Float64 tolerances: the flow is a few dozen float64 operations on O(1) values, so its round-off is ~1e-14;
1e-9 (log-densities, through an autograd Jacobian's slogdet) and 1e-10 (round trips) leave orders of
magnitude of room while any wrong log-det term (≥ 1e-3 here, the log-scales are O(0.1–1)) fails them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from tensordict import TensorDict
from torchrl.envs.utils import ExplorationType, set_exploration_type

from diffrl.deploy.export import deployable_policy, export_onnx, export_torchscript
from diffrl.modules.genpo_actor import GenPOActor
from diffrl.modules.genpo_flow import GenPOFlow
from diffrl.objectives.genpo import GenPOLoss

CONFIG_DIR = Path(__file__).resolve().parents[2] / "recipes" / "config"


def make_volume_flow(d: int, obs_dim: int, num_steps: int, mix: float, seed: int, max_log_scale: float = 2.0):
    """A float64 flow with the learnable volume whose velocity net and log-scale head are far from zero."""
    torch.manual_seed(seed)
    flow = GenPOFlow(d, obs_dim, num_steps, mix, [16, 16], learnable_volume=True, max_log_scale=max_log_scale)
    flow = flow.double()
    with torch.no_grad():
        flow.velocity_net.trunk[-1].weight.mul_(3.0)
        flow.volume_head.weight.normal_(0.0, 0.7)
        flow.volume_head.bias.normal_(0.0, 0.5)
    return flow


def independent_log_scale(flow: GenPOFlow, obs: torch.Tensor) -> torch.Tensor:
    """ℓ(s) = L tanh((W s + b)/L), written out from the head's weights."""
    head = flow.volume_head
    return flow.max_log_scale * torch.tanh((obs @ head.weight.T + head.bias) / flow.max_log_scale)


CASES = [(1, 2, 1, 0.95, 0), (2, 3, 5, 0.95, 1), (3, 4, 3, 0.7, 2), (4, 1, 8, 1.0, 3)]


@pytest.mark.parametrize(("d", "obs_dim", "num_steps", "mix", "seed"), CASES)
def test_log_prob_matches_bruteforce_jacobian_of_the_whole_map(d, obs_dim, num_steps, mix, seed):
    """log π(F(z; s)) = log N(z; 0, I) − log|det ∂F/∂z|, the Jacobian of noise → latent by autograd."""
    flow = make_volume_flow(d, obs_dim, num_steps, mix, seed)
    obs = torch.randn(6, obs_dim, dtype=torch.float64)
    noise = torch.randn(6, 2 * d, dtype=torch.float64)
    latent = flow(noise, obs)
    expected, log_dets = [], []
    for z, s in zip(noise, obs, strict=True):
        jacobian = torch.autograd.functional.jacobian(lambda z_, s=s: flow(z_, s), z)  # [2d, 2d]
        log_det = torch.linalg.slogdet(jacobian).logabsdet
        gaussian = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum()
        expected.append(gaussian - log_det)
        log_dets.append(log_det)
    expected, log_dets = torch.stack(expected), torch.stack(log_dets)
    torch.testing.assert_close(flow.log_prob(latent, obs), expected, rtol=0, atol=1e-9)
    torch.testing.assert_close(flow.log_prob_of_noise(noise, obs), expected, rtol=0, atol=1e-9)
    # The volume is really state-dependent: the log-determinant differs between observations.
    assert float(log_dets.max() - log_dets.min()) > 1e-2


def test_actor_and_distribution_likelihoods_match_the_bruteforce_density():
    flow = make_volume_flow(2, 3, 4, 0.9, 4)
    actor = GenPOActor(flow)
    obs = torch.randn(5, 3, dtype=torch.float64)
    td = actor(TensorDict({"observation": obs}, batch_size=[5]))
    noise = flow.inverse(td["latent_action"], obs)
    expected = []
    for z, s in zip(noise, obs, strict=True):
        jacobian = torch.autograd.functional.jacobian(lambda z_, s=s: flow(z_, s), z)
        expected.append(torch.distributions.Normal(0.0, 1.0).log_prob(z).sum() - torch.linalg.slogdet(jacobian)[1])
    expected = torch.stack(expected)
    torch.testing.assert_close(td["action_log_prob"], expected, rtol=0, atol=1e-9)
    dist = actor.get_dist(td)
    torch.testing.assert_close(dist.log_prob(td["latent_action"]), expected, rtol=0, atol=1e-9)
    stacked, fresh, fresh_log_prob = dist.log_prob_and_rsample(td["latent_action"], sample_rows=3)
    torch.testing.assert_close(stacked, expected, rtol=0, atol=1e-9)
    torch.testing.assert_close(fresh_log_prob, flow.log_prob(fresh.detach(), obs[:3]), rtol=0, atol=1e-10)
    latent, log_prob = dist.rsample_and_log_prob(torch.Size([2]))
    torch.testing.assert_close(log_prob, dist.log_prob(latent.detach()), rtol=0, atol=1e-10)


@pytest.mark.parametrize(("d", "obs_dim", "num_steps", "mix", "seed"), CASES)
def test_inverse_round_trips_in_float64(d, obs_dim, num_steps, mix, seed):
    flow = make_volume_flow(d, obs_dim, num_steps, mix, seed)
    obs = torch.randn(3, 4, obs_dim, dtype=torch.float64)  # a leading batch shape of rank 2
    noise = torch.randn(3, 4, 2 * d, dtype=torch.float64)
    latent = 2.0 * torch.randn(3, 4, 2 * d, dtype=torch.float64)
    assert torch.max(torch.abs(flow.inverse(flow(noise, obs), obs) - noise)) < 1e-10
    assert torch.max(torch.abs(flow(flow.inverse(latent, obs), obs) - latent)) < 1e-10


def test_stacked_inverse_and_forward_equal_the_separate_passes():
    flow = make_volume_flow(2, 3, 4, 0.9, 5)
    latent, latent_obs = torch.randn(7, 4, dtype=torch.float64), torch.randn(7, 3, dtype=torch.float64)
    noise, noise_obs = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 3, dtype=torch.float64)
    base, fresh = flow.inverse_and_forward(latent, latent_obs, noise, noise_obs)
    torch.testing.assert_close(base, flow.inverse(latent, latent_obs), rtol=0, atol=1e-12)
    torch.testing.assert_close(fresh, flow(noise, noise_obs), rtol=0, atol=1e-12)


def test_the_scale_multiplies_the_noise_before_genpos_steps():
    """F_volume(z; s) = F_GenPO(e^{ℓ(s)} ⊙ (x_0, y_0); s) with the same velocity net."""
    flow = make_volume_flow(3, 4, 5, 0.95, 6)
    plain = GenPOFlow(3, 4, hidden_sizes=[16, 16]).double()
    plain.load_state_dict(flow.state_dict(), strict=False)
    obs, noise = torch.randn(8, 4, dtype=torch.float64), torch.randn(8, 6, dtype=torch.float64)
    scale = independent_log_scale(flow, obs).exp().repeat(1, 2)
    torch.testing.assert_close(flow(noise, obs), plain(scale * noise, obs), rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_at_initialization_the_option_is_genpo_bit_for_bit(dtype):
    """Same seed, same weights: outputs, log-probs, the stored sample and the loss are identical."""
    torch.manual_seed(0)
    genpo = GenPOActor(GenPOFlow(3, 4, num_steps=3, hidden_sizes=[16, 16])).to(dtype)
    torch.manual_seed(0)
    volume = GenPOActor(GenPOFlow(3, 4, num_steps=3, hidden_sizes=[16, 16], learnable_volume=True)).to(dtype)
    for name, value in genpo.state_dict().items():
        assert torch.equal(volume.state_dict()[name], value), name
    obs, noise = torch.randn(9, 4, dtype=dtype), torch.randn(9, 6, dtype=dtype)
    latent = torch.randn(9, 6, dtype=dtype)
    assert torch.equal(volume.flow(noise, obs), genpo.flow(noise, obs))
    assert torch.equal(volume.flow.inverse(latent, obs), genpo.flow.inverse(latent, obs))
    assert torch.equal(volume.flow.log_prob(latent, obs), genpo.flow.log_prob(latent, obs))
    assert torch.equal(volume.flow.log_prob_of_noise(noise, obs), genpo.flow.log_prob_of_noise(noise, obs))
    stacked = [actor.flow.inverse_and_forward(latent, obs, noise, obs) for actor in (volume, genpo)]
    assert all(torch.equal(a, b) for a, b in zip(*stacked, strict=True))

    def sample_and_loss(actor):
        torch.manual_seed(1)  # the actor's noise and the loss's fresh samples
        batch = actor(TensorDict({"observation": obs}, batch_size=[9]))
        batch["advantage"], batch["value_target"] = torch.randn(9, 1, dtype=dtype), torch.randn(9, 1, dtype=dtype)
        return batch, GenPOLoss(actor, None, entropy_coeff=0.01)(batch.clone())

    (batch_genpo, out_genpo), (batch_volume, out_volume) = sample_and_loss(genpo), sample_and_loss(volume)
    for key in ("action", "latent_action", "action_log_prob"):
        assert torch.equal(batch_volume[key], batch_genpo[key]), key
    for key, value in out_genpo.items():
        assert torch.equal(out_volume[key], value), key


def test_entropy_estimate_has_a_gradient_on_the_head_and_none_without_the_option():
    obs = torch.randn(16, 3)
    torch.manual_seed(2)
    volume = GenPOActor(GenPOFlow(2, 3, hidden_sizes=[16], learnable_volume=True))
    entropy = -volume.get_dist(TensorDict({"observation": obs}, [16])).rsample_and_log_prob()[1].mean()
    head = volume.flow.volume_head
    head_weight, head_bias = torch.autograd.grad(entropy, [head.weight, head.bias])
    # At ℓ = 0, ∂Ĥ/∂b_j = 2·tanh'(0) = 2 for each action coordinate, and ∂Ĥ/∂W_j = 2·mean(s).
    torch.testing.assert_close(head_bias, torch.full((2,), 2.0), rtol=0, atol=1e-6)
    torch.testing.assert_close(head_weight, 2.0 * obs.mean(0).expand(2, 3), rtol=0, atol=1e-6)

    # The loss's entropy term, from the stacked pass, reaches the head and only the head.
    batch = volume(TensorDict({"observation": obs}, batch_size=[16]))
    batch["advantage"], batch["value_target"] = torch.randn(16, 1), torch.randn(16, 1)
    loss_entropy = GenPOLoss(volume, None, entropy_coeff=0.01)(batch)["loss_entropy"]
    assert torch.autograd.grad(loss_entropy, head.bias)[0].abs().min() > 0
    velocity = list(volume.flow.velocity_net.parameters())
    assert all(g is None for g in torch.autograd.grad(loss_entropy, velocity, allow_unused=True))

    # GenPO as published: the estimate depends on no parameter.
    genpo = GenPOActor(GenPOFlow(2, 3, hidden_sizes=[16]))
    batch = genpo(TensorDict({"observation": obs}, batch_size=[16]))
    batch["advantage"], batch["value_target"] = torch.randn(16, 1), torch.randn(16, 1)
    assert not GenPOLoss(genpo, None, entropy_coeff=0.01)(batch)["loss_entropy"].requires_grad
    assert not genpo.get_dist(batch).rsample_and_log_prob()[1].requires_grad


def test_exported_sampler_applies_the_scale_and_zero_noise_is_the_deterministic_action(tmp_path):
    flow = make_volume_flow(3, 5, 3, 0.95, 7).float()
    actor = GenPOActor(flow)
    policy = deployable_policy(actor)
    export_torchscript(policy, tmp_path / "policy.pt")
    traced = torch.jit.load(tmp_path / "policy.pt")
    export_onnx(policy, tmp_path / "policy.onnx")
    session = onnxruntime.InferenceSession(str(tmp_path / "policy.onnx"), providers=["CPUExecutionProvider"])

    def onnx_policy(observation: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        feed = {"observation": observation.numpy(), "noise": noise.numpy()}
        return torch.from_numpy(np.asarray(session.run(None, feed)[0]))

    obs = torch.randn(10, 5)
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        deterministic = actor(TensorDict({"observation": obs}, batch_size=[10]))["action"]
    zeros = torch.zeros(10, 6)
    torch.testing.assert_close(policy(obs, zeros), deterministic, rtol=0, atol=0)
    for exported in (traced, onnx_policy):
        torch.testing.assert_close(exported(obs, zeros), deterministic, rtol=0, atol=1e-5)

    # With noise the export scales it: the action of GenPO's steps from e^{ℓ(s)} ⊙ noise.
    plain = GenPOFlow(3, 5, num_steps=3, hidden_sizes=[16, 16])
    plain.load_state_dict(flow.state_dict(), strict=False)
    noise = torch.randn(10, 6)
    with torch.no_grad():
        scaled = independent_log_scale(flow, obs).exp().repeat(1, 2) * noise
        expected = plain.action_from_latent(plain(scaled, obs))
    assert not torch.allclose(expected, plain.action_from_latent(plain(noise, obs)), atol=1e-2)
    torch.testing.assert_close(policy(obs, noise), expected, rtol=0, atol=1e-5)
    for exported in (traced, onnx_policy):
        torch.testing.assert_close(exported(obs, noise), expected, rtol=0, atol=1e-5)


def test_recipe_switches_the_option_on_from_the_command_line():
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from diffrl.training.experiment import actor_dimensions
    from diffrl.training.recipe import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        default = compose("genpo_isaaclab", overrides=["algorithm.hidden_sizes=[8]"])
        switched = compose(
            "genpo_isaaclab", overrides=["algorithm.hidden_sizes=[8]", "algorithm.actor.flow.learnable_volume=true"]
        )
    actors = [
        instantiate(cfg.algorithm.actor, **actor_dimensions(cfg.algorithm.actor, obs_dim=4, action_dim=2))
        for cfg in (default, switched)
    ]
    assert actors[0].flow.volume_head is None
    assert actors[1].flow.volume_head is not None and actors[1].flow.max_log_scale == 5.0


@pytest.mark.parametrize("bound", [0.0, -1.0, float("inf"), float("nan")])
def test_max_log_scale_must_be_positive_and_finite(bound):
    with pytest.raises(ValueError, match="max_log_scale"):
        GenPOFlow(2, 3, learnable_volume=True, max_log_scale=bound)
