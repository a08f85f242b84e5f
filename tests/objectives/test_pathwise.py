"""The pathwise trust-region loss (REPPOLoss, TruDiLoss): the gate per state, the duals' directions, the frozen
critic in the actor step, the critic's cross-entropy, the outputs, errors."""

from __future__ import annotations

import copy

import pytest
import torch
from tensordict import TensorDict

from diffrl.modules import DIMEActor, HLGaussQValue, SquashedGaussianActor
from diffrl.objectives import REPPOLoss, TruDiLoss

OBS_DIM, ACTION_DIM, BATCH = 3, 2, 16


def batch(seed: int = 0) -> TensorDict:
    generator = torch.Generator().manual_seed(seed)
    return TensorDict(
        {
            "observation": torch.randn(BATCH, OBS_DIM, generator=generator),
            "action": torch.rand(BATCH, ACTION_DIM, generator=generator) * 2 - 1,
            "value_target": torch.randn(BATCH, generator=generator),
            "next_q_features": torch.randn(BATCH, 8, generator=generator),
            "next": {"terminated": torch.zeros(BATCH, 1, dtype=torch.bool)},
        },
        batch_size=[BATCH],
    )


def make_reppo(**kwargs) -> REPPOLoss:
    torch.manual_seed(0)
    actor = SquashedGaussianActor(ACTION_DIM, OBS_DIM, hidden_sizes=[8])
    critic = HLGaussQValue(OBS_DIM, ACTION_DIM, hidden_sizes=[8], num_bins=11, v_min=-2, v_max=2)
    return REPPOLoss(actor, critic, **kwargs)


def move_actor(loss: REPPOLoss, scale: float) -> None:
    """Put the actor away from the old copy (which stays as it was)."""
    with torch.no_grad():
        for parameter in loss.actor_network.parameters():
            parameter.add_(scale * torch.randn_like(parameter))


def test_the_gate_picks_the_objective_inside_the_trust_region_and_lambda_kl_outside():
    loss = make_reppo()
    move_actor(loss, 0.3)
    td = batch()
    with torch.no_grad():  # ε at the median KL: half the states on each side
        loss.trust_region_kl = float(loss.actor_network.trust_region_kl(td["observation"], loss.old_actor).median())
    torch.manual_seed(5)
    out = loss.actor_loss(td)
    torch.manual_seed(5)  # the same reparameterized sample, by hand
    sample = loss.actor_network.rsample(td["observation"])
    q_value = loss.critic_network.q_value(td["observation"], sample.action)
    kl = loss.actor_network.trust_region_kl(td["observation"], loss.old_actor)
    inside = kl < loss.trust_region_kl
    assert 0 < int(inside.sum()) < BATCH  # both cases occur
    per_state = torch.where(inside, loss.alpha * sample.log_prob - q_value, loss.lagrange_multiplier * kl)
    torch.testing.assert_close(out["loss_actor"], per_state.mean())
    torch.testing.assert_close(out["trust_region_fraction"], (~inside).float().mean())
    torch.testing.assert_close(out["path_kl_max"], kl.max().detach())


def test_states_over_the_bound_pull_the_actor_back_only():
    """Over ε a state's gradient is λ∇KL: with every state over it, Q does not reach the actor."""
    loss = make_reppo(trust_region_kl=1e-9)
    move_actor(loss, 0.3)
    td = batch()
    torch.manual_seed(5)
    loss.actor_loss(td)["loss_actor"].backward()
    gate_grads = [p.grad.clone() for p in loss.actor_network.parameters()]
    loss.zero_grad()
    kl = loss.actor_network.trust_region_kl(td["observation"], loss.old_actor)
    (loss.lagrange_multiplier.detach() * kl).mean().backward()
    for gated, pure in zip(gate_grads, (p.grad for p in loss.actor_network.parameters()), strict=True):
        torch.testing.assert_close(gated, pure)


def test_alpha_falls_when_the_entropy_is_above_target_and_rises_below():
    for target, direction in ((-100.0, -1), (100.0, 1)):
        loss = make_reppo(target_entropy_per_dim=target)
        out = loss.actor_loss(batch())
        out["loss_alpha"].backward()
        # Gradient descent on log α moves it opposite to the gradient.
        assert float(-loss.log_alpha.grad) * direction > 0, (target, float(loss.log_alpha.grad))


def test_lambda_rises_when_the_kl_is_above_the_bound_and_falls_below():
    loss = make_reppo(trust_region_kl=1e-6)
    move_actor(loss, 0.3)
    loss.actor_loss(batch())["loss_lambda"].backward()
    assert float(-loss.log_lagrange_multiplier.grad) > 0
    loss = make_reppo(trust_region_kl=10.0)
    move_actor(loss, 0.01)
    loss.actor_loss(batch())["loss_lambda"].backward()
    assert float(-loss.log_lagrange_multiplier.grad) < 0


def test_the_actor_step_leaves_the_critic_frozen_and_the_critic_step_the_actor():
    loss = make_reppo(aux_loss_coeff=1.0)
    loss.actor_loss(batch())["loss_actor"].backward()
    assert all(p.grad is None for p in loss.critic_network.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in loss.actor_network.parameters())
    loss.zero_grad(set_to_none=True)
    out = loss.critic_loss(batch())
    (out["loss_critic"] + out["loss_critic_aux"]).backward()
    assert all(p.grad is None for p in loss.actor_network.parameters())
    assert loss.critic_network.predictor.weight.grad.abs().sum() > 0


def test_critic_loss_is_the_cross_entropy_to_the_hl_gauss_target():
    loss = make_reppo()
    td = batch()
    critic = loss.critic_network
    logits = critic.logits(critic.features(td["observation"], td["action"]))
    expected = -(critic.target_distribution(td["value_target"]) * logits.log_softmax(-1)).sum(-1).mean()
    torch.testing.assert_close(loss.critic_loss(td)["loss_critic"], expected)


def test_sync_makes_the_old_actor_a_copy_and_the_kl_zero():
    loss = make_reppo()
    move_actor(loss, 0.3)
    assert float(loss.actor_loss(batch())["path_kl"]) > 0
    loss.sync_old_actor()
    assert float(loss.actor_loss(batch())["path_kl"]) == 0.0
    assert all(not p.requires_grad for p in loss.old_actor.parameters())


def test_trudi_loss_outputs_and_defaults():
    torch.manual_seed(0)
    actor = DIMEActor(ACTION_DIM, OBS_DIM, num_steps=3, hidden_sizes=[8])
    critic = HLGaussQValue(OBS_DIM, ACTION_DIM, hidden_sizes=[8], num_bins=11)
    loss = TruDiLoss(actor, critic, aux_loss_coeff=0.5)
    assert loss.target_entropy == -4.0 * ACTION_DIM
    out = loss(batch())
    expected = {
        "loss_actor", "loss_critic", "loss_critic_aux", "loss_alpha", "loss_lambda", "path_kl", "path_kl_max",
        "trust_region_fraction", "alpha", "lagrange_multiplier", "entropy_estimate", "log_prob", "q_value",
        "value_target", "target_clip_fraction",
    }  # fmt: skip
    assert set(out.keys()) == expected
    assert all(bool(torch.isfinite(value)) for value in out.values())
    assert make_reppo().target_entropy == -0.5 * ACTION_DIM


def test_set_keys_reads_another_observation_key():
    loss = make_reppo()
    loss.set_keys(observation="policy")
    td = batch().rename_key_("observation", "policy")
    assert torch.isfinite(loss(td)["loss_actor"])


def test_the_loss_reads_the_keys_the_actor_was_built_with():
    torch.manual_seed(0)
    actor = DIMEActor(ACTION_DIM, OBS_DIM, num_steps=2, hidden_sizes=[8], observation_key="obs", action_key="act")
    loss = TruDiLoss(actor, HLGaussQValue(OBS_DIM, ACTION_DIM, hidden_sizes=[8], num_bins=11, v_min=-2, v_max=2))
    assert (loss.tensor_keys.observation, loss.tensor_keys.action) == ("obs", "act")
    data = batch().rename_key_("observation", "obs").rename_key_("action", "act")
    assert torch.isfinite(loss.critic_loss(data)["loss_critic"])
    assert torch.isfinite(loss(data)["loss_actor"])


def test_bad_arguments_are_clear_errors():
    actor = SquashedGaussianActor(ACTION_DIM, OBS_DIM, hidden_sizes=[8])
    critic = HLGaussQValue(OBS_DIM, ACTION_DIM, hidden_sizes=[8], num_bins=11, aux_head=False)
    with pytest.raises(TypeError, match="DIMEActor"):
        TruDiLoss(actor, critic)
    with pytest.raises(ValueError, match="auxiliary head"):
        REPPOLoss(actor, critic, aux_loss_coeff=1.0)
    with pytest.raises(ValueError, match="trust_region_kl"):
        REPPOLoss(actor, critic, trust_region_kl=0.0)
    with pytest.raises(ValueError, match="gate"):
        REPPOLoss(actor, critic, gate="soft")
    with pytest.raises(TypeError, match="HLGaussQValue"):
        REPPOLoss(actor, copy.deepcopy(actor))


def test_a_value_target_of_another_shape_is_a_clear_error():
    # [B, 1] against the critic's [B] histogram would broadcast the cross-entropy to [B, B].
    data = batch()
    data["value_target"] = data["value_target"].unsqueeze(-1)
    with pytest.raises(ValueError, match=rf"'value_target' has shape \({BATCH}, 1\), the batch is \({BATCH},\)"):
        make_reppo().critic_loss(data)
