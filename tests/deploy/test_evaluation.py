"""evaluate_episodes counts each env copy's first episode, with the return and length a plain gymnasium loop gives."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import pytest
import torch
from torchrl.envs.utils import ExplorationType, set_exploration_type

from diffrl.deploy.evaluation import evaluate_episodes, policy_action
from diffrl.deploy.policy_loading import LoadedPolicy
from diffrl.envs.gym import make_gym_env
from diffrl.modules.genpo_actor import GenPOActor
from diffrl.modules.genpo_flow import GenPOFlow

TASK, OBS_DIM, ACTION_DIM = "Hopper-v5", 11, 3  # terminates when it falls: episodes of different lengths


def hopper_policy() -> LoadedPolicy:
    torch.manual_seed(0)
    actor = GenPOActor(GenPOFlow(ACTION_DIM, OBS_DIM, num_steps=2, hidden_sizes=[16])).eval()
    config = {"algorithm": {"name": "genpo"}, "env": {"task": TASK, "observation_key": "observation"}}
    return LoadedPolicy(actor, None, config, Path("test"), None, OBS_DIM, ACTION_DIM)


def test_deterministic_episodes_match_a_plain_gymnasium_loop():
    policy, copies, seed = hopper_policy(), 3, 7
    env = make_gym_env(TASK, num_envs=copies, seed=seed, max_episode_steps=200)
    statistics = evaluate_episodes(env, policy, mode="deterministic")
    env.close()

    expected = []
    for copy in range(copies):
        single = gym.make(TASK, max_episode_steps=200)
        single.reset(seed=seed + copy)  # make_gym_env seeds copy i with seed + i (one reset) ...
        observation, _ = single.reset()  # ... and evaluate_episodes starts with a reset
        episode_return, length, done = 0.0, 0, False
        with set_exploration_type(ExplorationType.DETERMINISTIC), torch.no_grad():
            while not done:
                obs = torch.as_tensor(observation, dtype=torch.float32).unsqueeze(0)
                observation, reward, terminated, truncated, _ = single.step(policy_action(policy, obs)[0].numpy())
                episode_return, length, done = episode_return + reward, length + 1, terminated or truncated
        single.close()
        expected.append((length, episode_return))
    assert len({length for length, _ in expected}) > 1  # the copies' episodes really differ in length
    measured = sorted(zip(statistics.lengths, statistics.returns, strict=True))
    assert [length for length, _ in measured] == [length for length, _ in sorted(expected)]
    # rel 1e-5: the TorchRL env hands out float32 rewards, the plain loop float64 ones.
    assert [value for _, value in measured] == pytest.approx([value for _, value in sorted(expected)], rel=1e-5)
    metrics = statistics.metrics()
    assert metrics["deterministic/episodes"] == copies
    lengths = torch.tensor([length for length, _ in expected], dtype=torch.float64)
    assert metrics["deterministic/length_mean"] == pytest.approx(float(lengths.mean()))


def test_unknown_mode_is_a_clear_error():
    with pytest.raises(
        ValueError, match=r"unknown evaluation mode 'greedy'; choose from \['deterministic', 'stochastic'\]"
    ):
        evaluate_episodes(None, hopper_policy(), mode="greedy")
