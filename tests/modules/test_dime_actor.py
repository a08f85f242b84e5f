"""DIMEActor: the path KL against per-step Gaussian KLs, the prior SDE's law at initialization, the bound on
log π, pathwise gradients against finite differences, the deterministic mode, errors."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from tensordict import TensorDict
from torch.distributions import Normal, kl_divergence
from torchrl.envs.utils import ExplorationType, set_exploration_type

from diffrl.modules.dime_actor import DIMEActor, cosine_step_schedule

OBS_DIM, ACTION_DIM, STEPS = 3, 2, 4


def make_actor(**kwargs) -> DIMEActor:
    torch.manual_seed(0)
    return DIMEActor(ACTION_DIM, OBS_DIM, num_steps=STEPS, hidden_sizes=[16, 16], **kwargs).double()


def perturb(actor: DIMEActor, scale: float, seed: int) -> None:
    """Give the (near-zero at init) control network an output of order ``scale``."""
    generator = torch.Generator().manual_seed(seed)
    output = actor.control.mlp[-1]
    with torch.no_grad():
        output.weight.copy_(scale * torch.randn(output.weight.shape, generator=generator, dtype=torch.float64))
        output.bias.copy_(scale * torch.randn(output.bias.shape, generator=generator, dtype=torch.float64))


def step_gaussians(actor: DIMEActor, x: torch.Tensor, observation: torch.Tensor, step: int) -> Normal:
    """The step kernel N(μ_k, 2η_k), written from the SDE's definition (not through the actor's helpers)."""
    dt = torch.nn.functional.softplus(actor.dt_parameter) * actor.dt_schedule[step].double()
    eta = dt / torch.nn.functional.softplus(actor.friction_parameter)
    embedding = actor.control.step_embedding(torch.tensor([step]))[0].expand(x.shape[0], -1)
    control = actor.control.mlp(torch.cat([x, observation, embedding], dim=-1))
    mean = x + eta * (-x / actor.prior_std**2 + control)
    return Normal(mean, (2 * eta).sqrt().expand_as(mean))


def reference_path_kl(new: DIMEActor, old: DIMEActor, observation: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Σ_k KL(f_k^old(·|x_k) ‖ f_k^new(·|x_k)) along the chain the old kernel draws from ``noise`` [B, K+1, d]."""
    x = old.prior_std * noise[:, 0]
    total = torch.zeros(x.shape[0], dtype=torch.float64)
    for step in range(STEPS):
        old_step, new_step = step_gaussians(old, x, observation, step), step_gaussians(new, x, observation, step)
        total += kl_divergence(old_step, new_step).sum(-1)
        x = old_step.mean + old_step.stddev * noise[:, step + 1]
    return total


def test_cosine_schedule_runs_from_one_to_its_floor():
    schedule = cosine_step_schedule(8)
    assert schedule.shape == (8,)
    assert abs(float(schedule[0]) - 1.0) < 1e-3 and float(schedule[-1]) < 0.05
    assert bool((schedule[1:] < schedule[:-1]).all())  # large steps first


def test_step_embedding_frequencies_are_the_authors_evenly_spaced_ones():
    # The TruDi reference's control net: 32 frequencies from 0.1 to 100 in equal steps of 99.9/31.
    frequencies = make_actor().control.step_embedding.frequencies
    assert frequencies.shape == (32,)
    assert frequencies[:3].tolist() == pytest.approx([0.1, 3.3225806, 6.5451613], rel=1e-6)
    assert frequencies[-1].item() == pytest.approx(100.0, rel=1e-6)


@pytest.mark.parametrize("form", ["simplified", "full"])
def test_path_kl_equals_the_summed_per_step_gaussian_kl_at_equal_friction(form):
    old = make_actor()
    perturb(old, 0.3, seed=1)
    new = copy.deepcopy(old)
    perturb(new, 0.3, seed=2)
    observation = torch.randn(64, OBS_DIM, dtype=torch.float64)
    noise = torch.randn(64, 1, STEPS + 1, ACTION_DIM, dtype=torch.float64)
    actual = new.trust_region_kl(observation, old, noise=noise, form=form)
    expected = reference_path_kl(new, old, observation, noise[:, 0])
    assert float(expected.min()) > 1e-3  # the two policies differ
    torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-12)


def test_full_path_kl_keeps_the_variance_terms_the_simplified_one_drops():
    old = make_actor()
    perturb(old, 0.3, seed=1)
    new = copy.deepcopy(old)
    with torch.no_grad():
        new.friction_parameter.add_(0.4)  # a different friction: different step variances
    observation = torch.randn(32, OBS_DIM, dtype=torch.float64)
    noise = torch.randn(32, 1, STEPS + 1, ACTION_DIM, dtype=torch.float64)
    full = new.trust_region_kl(observation, old, noise=noise, form="full")
    torch.testing.assert_close(full, reference_path_kl(new, old, observation, noise[:, 0]), rtol=1e-12, atol=1e-12)
    simplified = new.trust_region_kl(observation, old, noise=noise, form="simplified")
    assert float((full - simplified).abs().min()) > 1e-3


def test_path_kl_averages_its_chains_and_reaches_only_the_new_actor():
    old = make_actor(num_kl_samples=3)
    perturb(old, 0.3, seed=1)
    new = copy.deepcopy(old)
    perturb(new, 0.3, seed=2)
    observation = torch.randn(5, OBS_DIM, dtype=torch.float64)
    noise = torch.randn(5, 3, STEPS + 1, ACTION_DIM, dtype=torch.float64)
    kl = new.trust_region_kl(observation, old, noise=noise)
    per_chain = torch.stack(
        [reference_path_kl(new, old, observation, noise[:, chain]) for chain in range(3)], dim=-1
    ).mean(-1)
    torch.testing.assert_close(kl, per_chain, rtol=1e-12, atol=1e-12)
    kl.sum().backward()
    assert new.control.mlp[-1].weight.grad.abs().sum() > 0
    assert all(parameter.grad is None for parameter in old.parameters())


def test_kl_form_auto_is_full_while_friction_or_dt_are_learned():
    assert make_actor().kl_form == "full"
    assert make_actor(learn_friction=False).kl_form == "simplified"
    assert make_actor(learn_friction=False, learn_dt=True).kl_form == "full"
    frozen = make_actor(learn_friction=False)
    assert "friction_parameter" not in dict(frozen.named_parameters()) and "friction_parameter" in frozen.state_dict()


def test_at_initialization_the_kl_is_zero_and_the_actor_is_the_prior_sde():
    """u_θ ≈ 0: the chain is the linear SDE x' = (1 − η/σ_p²)x + √(2η)ε from N(0, σ_p²), so x_K ~ N(0, v_K)
    with v_{k+1} = (1 − η_k/σ_p²)² v_k + 2η_k; the actions are tanh of it, E[tanh²] by quadrature."""
    actor = make_actor()
    observation = torch.randn(20000, OBS_DIM, dtype=torch.float64)
    assert float(actor.trust_region_kl(observation[:256], copy.deepcopy(actor)).abs().max()) < 1e-12
    eta = actor.step_sizes()[:, 0].detach()
    variance = torch.tensor(actor.prior_std**2, dtype=torch.float64)
    for step_size in eta:
        variance = (1 - step_size / actor.prior_std**2) ** 2 * variance + 2 * step_size
    grid = torch.linspace(-12, 12, 200001, dtype=torch.float64) * variance.sqrt()
    density = torch.exp(-0.5 * grid**2 / variance) / (2 * math.pi * variance).sqrt()
    expected_square = torch.trapezoid(grid.tanh() ** 2 * density, grid)
    with torch.no_grad():
        action = actor.rsample(observation).action
    for values, expected in ((action, 0.0), (action.pow(2), float(expected_square))):
        mean, error = values.mean(0), values.std(0) / math.sqrt(values.shape[0])
        assert bool(((mean - expected).abs() < 4 * error).all()), (mean, expected, error)


def test_pseudo_log_prob_bounds_the_exact_log_prob_from_above_in_expectation():
    """At initialization x_K is exactly Gaussian, so log π(a) is known: E[log π̂ − log π] ≥ 0 (DIME's bound)."""
    actor = make_actor()
    observation = torch.randn(20000, OBS_DIM, dtype=torch.float64)
    eta = actor.step_sizes()[:, 0].detach()
    variance = torch.tensor(actor.prior_std**2, dtype=torch.float64)
    for step_size in eta:
        variance = (1 - step_size / actor.prior_std**2) ** 2 * variance + 2 * step_size
    with torch.no_grad():
        sample = actor.rsample(observation)
    pre_squash = sample.action.atanh()
    exact = Normal(0.0, variance.sqrt()).log_prob(pre_squash).sum(-1) - torch.log1p(-sample.action.pow(2)).sum(-1)
    finite = torch.isfinite(exact) & (sample.action.abs() < 1 - 1e-9).all(-1)  # atanh is lossy at saturation
    gap = (sample.log_prob - exact)[finite]
    assert gap.mean() > -3 * gap.std() / math.sqrt(gap.numel())


def test_pseudo_log_prob_of_a_given_path_matches_its_definition():
    actor = make_actor()
    perturb(actor, 0.3, seed=3)
    observation = torch.randn(16, OBS_DIM, dtype=torch.float64)
    initial = actor.prior_std * torch.randn(16, ACTION_DIM, dtype=torch.float64)
    noise = torch.randn(16, STEPS, ACTION_DIM, dtype=torch.float64)
    sample = actor.rsample(observation, initial=initial, noise=noise)
    prior = Normal(torch.zeros((), dtype=torch.float64), torch.tensor(actor.prior_std, dtype=torch.float64))
    x, total, run = initial, prior.log_prob(initial).sum(-1), 0.0
    for step in range(STEPS):
        forward = step_gaussians(actor, x, observation, step)
        following = forward.mean + forward.stddev * noise[:, step]
        backward = Normal(following - forward.variance / 2 * following / actor.prior_std**2, forward.stddev)
        run = run + forward.log_prob(following).sum(-1) - backward.log_prob(x).sum(-1)
        x = following
    log_det = (-2 * (x.abs() + torch.log1p(torch.exp(-2 * x.abs())) - math.log(2))).sum(-1)  # log sech² x
    torch.testing.assert_close(sample.action, x.tanh(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(sample.log_prob, total + run - log_det, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(sample.entropy_estimate, log_det - run, rtol=1e-10, atol=1e-10)


def test_pathwise_gradient_through_the_chain_matches_finite_differences():
    actor = make_actor(learn_dt=True)
    perturb(actor, 0.3, seed=4)
    observation = torch.randn(8, OBS_DIM, dtype=torch.float64)
    initial = actor.prior_std * torch.randn(8, ACTION_DIM, dtype=torch.float64)
    noise = torch.randn(8, STEPS, ACTION_DIM, dtype=torch.float64)

    def objective() -> torch.Tensor:  # a smooth stand-in for Q(s, a) plus the log-prob term
        sample = actor.rsample(observation, initial=initial, noise=noise)
        return (sample.action.sin() * torch.arange(1, ACTION_DIM + 1)).sum() + 0.1 * sample.log_prob.sum()

    parameters = {
        "control output": actor.control.mlp[-1].weight,
        "control hidden": actor.control.mlp[0].weight,
        "friction": actor.friction_parameter,
        "dt": actor.dt_parameter,
    }
    actor.zero_grad()
    objective().backward()
    for name, parameter in parameters.items():
        flat = parameter.detach().reshape(-1)
        for index in range(min(3, flat.numel())):
            with torch.no_grad():
                original = float(flat[index])
                parameter.view(-1)[index] = original + 1e-6
                up = float(objective())
                parameter.view(-1)[index] = original - 1e-6
                down = float(objective())
                parameter.view(-1)[index] = original
            numeric = (up - down) / 2e-6
            analytic = float(parameter.grad.reshape(-1)[index])
            assert abs(analytic - numeric) <= 1e-6 * max(1.0, abs(numeric)), (name, index, analytic, numeric)


def test_deterministic_mode_is_the_noise_free_chain_and_repeatable_given_its_start():
    actor = make_actor()
    perturb(actor, 0.3, seed=5)
    observation = torch.randn(6, OBS_DIM, dtype=torch.float64)
    initial = actor.prior_std * torch.randn(6, ACTION_DIM, dtype=torch.float64)
    first = actor.deterministic_action(observation, initial=initial)
    torch.testing.assert_close(actor.deterministic_action(observation, initial=initial), first, rtol=0, atol=0)
    no_noise = actor.rsample(observation, initial=initial, noise=torch.zeros(6, STEPS, ACTION_DIM, dtype=torch.float64))
    torch.testing.assert_close(no_noise.action, first, rtol=1e-14, atol=1e-14)
    td = TensorDict({"observation": observation}, [6])
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        out = actor(td)
    assert "action_log_prob" not in out.keys()  # the mode has no density to report
    assert out["action"].shape == (6, ACTION_DIM)


def test_forward_writes_the_action_and_its_pseudo_log_prob_over_any_batch_shape():
    actor = make_actor()
    td = actor(TensorDict({"observation": torch.randn(4, 5, OBS_DIM, dtype=torch.float64)}, [4, 5]))
    assert td["action"].shape == (4, 5, ACTION_DIM) and td["action_log_prob"].shape == (4, 5)
    assert not td["action"].requires_grad


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="num_steps"):
        DIMEActor(2, 3, num_steps=0)
    with pytest.raises(ValueError, match="kl_form"):
        DIMEActor(2, 3, kl_form="exact")
    with pytest.raises(ValueError, match="num_kl_samples"):
        DIMEActor(2, 3, num_kl_samples=0)
    with pytest.raises(TypeError, match="two DIMEActors"):
        make_actor().trust_region_kl(torch.randn(2, OBS_DIM), object())
    with pytest.raises(KeyError, match="observation"):
        make_actor()(TensorDict({"obs": torch.randn(2, OBS_DIM)}, [2]))
