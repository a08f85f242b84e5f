"""The soft λ-return: a hand-computed rollout, the n-step-return definition, cuts at truncation and termination,
and the estimator's second draw."""

from __future__ import annotations

import torch
from tensordict import TensorDict

from diffrl.modules import HLGaussQValue, SquashedGaussianActor
from diffrl.objectives.soft_lambda_return import SoftLambdaReturn, soft_lambda_return

GAMMA, LMBDA, ALPHA = 0.9, 0.8, 0.5


def test_hand_computed_three_step_rollout_with_a_termination_and_a_truncation():
    # env 0: steps 0, 1 continue, step 2 ends the rollout; env 1: step 0 truncated, step 1 terminated.
    reward = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]], dtype=torch.float64)
    value = torch.tensor([[10.0, 20.0, 30.0], [10.0, 20.0, 30.0]], dtype=torch.float64)
    log_prob = torch.tensor([[-1.0, -2.0, -3.0], [-1.0, -2.0, -3.0]], dtype=torch.float64)
    terminated = torch.tensor([[False, False, False], [False, True, False]])
    truncated = torch.tensor([[False, False, False], [True, False, False]])
    # soft rewards r − γα(1−d) log π': env 0: 1.45, 2.9, 4.35; env 1: 1.45, 2 (terminated: no bonus), 4.35
    g02 = 4.35 + GAMMA * 30.0  # the rollout's last step bootstraps on V'
    g01 = 2.9 + GAMMA * (LMBDA * g02 + (1 - LMBDA) * 20.0)
    g00 = 1.45 + GAMMA * (LMBDA * g01 + (1 - LMBDA) * 10.0)
    g12 = 4.35 + GAMMA * 30.0
    g11 = 2.0  # terminated: nothing bootstrapped
    g10 = 1.45 + GAMMA * 10.0  # truncated: the trace is cut, V' only
    expected = torch.tensor([[g00, g01, g02], [g10, g11, g12]], dtype=torch.float64)
    actual = soft_lambda_return(reward, value, log_prob, terminated, truncated, gamma=GAMMA, lmbda=LMBDA, alpha=ALPHA)
    torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-12)


def test_without_episode_ends_it_is_the_lambda_weighted_sum_of_n_step_soft_returns():
    """G_t^λ = (1−λ) Σ_{n=1}^{T−t−1} λ^{n−1} G_t^(n) + λ^{T−t−1} G_t^(T−t), G^(n) the n-step soft return on V'."""
    torch.manual_seed(0)
    steps = 6
    reward, value, log_prob = (torch.randn(3, steps, dtype=torch.float64) for _ in range(3))
    no = torch.zeros(3, steps, dtype=torch.bool)
    soft = reward - GAMMA * ALPHA * log_prob
    expected = torch.zeros(3, steps, dtype=torch.float64)
    for t in range(steps):

        def n_step(n: int, t: int = t) -> torch.Tensor:
            discounts = GAMMA ** torch.arange(n, dtype=torch.float64)
            return (soft[:, t : t + n] * discounts).sum(-1) + GAMMA**n * value[:, t + n - 1]

        horizon = steps - t
        expected[:, t] = sum((1 - LMBDA) * LMBDA ** (n - 1) * n_step(n) for n in range(1, horizon))
        expected[:, t] += LMBDA ** (horizon - 1) * n_step(horizon)
    actual = soft_lambda_return(reward, value, log_prob, no, no, gamma=GAMMA, lmbda=LMBDA, alpha=ALPHA)
    torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-12)


def test_estimator_draws_at_the_next_observation_and_writes_targets_and_features():
    torch.manual_seed(0)
    actor = SquashedGaussianActor(2, 3, hidden_sizes=[8])
    critic = HLGaussQValue(3, 2, hidden_sizes=[8], num_bins=11)
    rollout = TensorDict(
        {
            "observation": torch.randn(4, 5, 3),
            "next": {
                "observation": torch.randn(4, 5, 3),
                "reward": torch.randn(4, 5, 1),
                "terminated": torch.zeros(4, 5, 1, dtype=torch.bool),
                "truncated": torch.zeros(4, 5, 1, dtype=torch.bool),
            },
        },
        batch_size=[4, 5],
    )
    estimator = SoftLambdaReturn(actor, critic, gamma=GAMMA, lmbda=LMBDA)
    torch.manual_seed(1)
    estimator(rollout, alpha=torch.tensor(ALPHA), reward_scale=2.0)
    torch.manual_seed(1)  # the same second draw, by hand
    draw = actor.rsample(rollout["next", "observation"])
    next_value = critic.q_value(rollout["next", "observation"], draw.action)
    no = torch.zeros(4, 5, dtype=torch.bool)
    expected = soft_lambda_return(
        2.0 * rollout["next", "reward"].squeeze(-1), next_value, draw.log_prob, no, no,
        gamma=GAMMA, lmbda=LMBDA, alpha=ALPHA,
    )  # fmt: skip
    torch.testing.assert_close(rollout["value_target"], expected.detach())
    assert rollout["next_q_features"].shape == (4, 5, critic.feature_dim)
    assert not rollout["value_target"].requires_grad
