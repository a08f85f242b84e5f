"""TrainingProgress: the window of recent episodes the logged episode_return and episode_length average."""

from __future__ import annotations

import math

import torch

from diffrl.training.run_state import RECENT_EPISODES, TrainingProgress


def test_the_window_keeps_the_latest_episodes_in_the_order_they_ended():
    """200 envs × 2 steps: envs 100–199 finish at step 0, envs 0–99 at step 1; each return is its env's number.

    The batch is laid out [env, step]: read in that order, the window would keep envs 100–199 (mean 149.5).
    """
    num_envs = 2 * RECENT_EPISODES
    done = torch.zeros(num_envs, 2, dtype=torch.bool)
    done[RECENT_EPISODES:, 0] = True
    done[:RECENT_EPISODES, 1] = True
    env_number = torch.arange(num_envs, dtype=torch.float32)[:, None].expand(num_envs, 2)
    progress = TrainingProgress()
    metrics = progress.record_episodes(done, env_number, env_number + 1000)
    latest = torch.arange(RECENT_EPISODES, dtype=torch.float32)  # those that ended at step 1
    assert metrics == {
        "episode_return": latest.mean().item(),  # 49.5
        "episode_length": (latest + 1000).mean().item(),
        "episodes_finished": float(num_envs),
    }


def test_before_any_episode_ends_the_means_are_nan_and_later_rollouts_push_out_the_oldest():
    progress = TrainingProgress()
    none = progress.record_episodes(torch.zeros(3, 4, dtype=torch.bool), torch.ones(3, 4), torch.ones(3, 4))
    assert math.isnan(none["episode_return"]) and math.isnan(none["episode_length"])
    assert none["episodes_finished"] == 0.0
    done = torch.ones(RECENT_EPISODES, 1, dtype=torch.bool)
    progress.record_episodes(done, torch.zeros(RECENT_EPISODES, 1), torch.zeros(RECENT_EPISODES, 1))
    half = RECENT_EPISODES // 2
    metrics = progress.record_episodes(done[:half], torch.full((half, 1), 2.0), torch.full((half, 1), 4.0))
    assert metrics["episode_return"] == 1.0 and metrics["episode_length"] == 2.0  # half zeros, half new
