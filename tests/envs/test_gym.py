"""make_gym_env against independently stepped single gymnasium envs."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from tensordict import TensorDictBase
from torchrl.collectors import Collector
from torchrl.envs.utils import check_env_specs

from diffrl.envs.gym import make_gym_env
from diffrl.training.experiment import rank_seed


def _replay_in_single_envs(
    env_id: str, seed: int, max_episode_steps: int | None, actions: torch.Tensor
) -> dict[str, np.ndarray]:
    """Step copy i alone in a plain ``gym.make`` env with the batch's actions.

    Copy i is seeded ``seed + i`` by the seeding reset, and its first episode starts at
    the next reset (the one the rollout or collector does), hence two resets up front.
    A finished episode is reset right away, as TorchRL's partial reset does.

    Args:
        actions: [B, T, d], the actions the batched env executed.

    Returns:
        float64 / bool arrays: "observation" and "next_observation" [B, T, obs_dim],
        "reward", "terminated", "truncated" [B, T].
    """
    num_envs, steps = actions.shape[:2]
    out: dict[str, list[list]] = {
        k: [] for k in ("observation", "next_observation", "reward", "terminated", "truncated")
    }
    for i in range(num_envs):
        single = gym.make(env_id, max_episode_steps=max_episode_steps)
        single.reset(seed=seed + i)
        obs, _ = single.reset()
        rows: dict[str, list] = {k: [] for k in out}
        for t in range(steps):
            next_obs, reward, terminated, truncated, _ = single.step(actions[i, t].numpy())
            for key, value in zip(rows, (obs, next_obs, reward, terminated, truncated), strict=True):
                rows[key].append(value)
            obs = single.reset()[0] if terminated or truncated else next_obs
        single.close()
        for key in out:
            out[key].append(rows[key])
    return {k: np.asarray(v) for k, v in out.items()}


def _as_float32(array: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(array, dtype=torch.float32)


def _assert_matches_single_envs(data: TensorDictBase, env_id: str, seed: int, max_episode_steps: int | None) -> None:
    ref = _replay_in_single_envs(env_id, seed, max_episode_steps, data["action"])
    # Same MuJoCo model, same float32 actions, same seeds: the float64 states agree to the
    # bit, so the only difference allowed is the float32 cast -> exact comparison.
    exact = {"rtol": 0.0, "atol": 0.0}
    torch.testing.assert_close(data["observation"], _as_float32(ref["observation"]), **exact)
    torch.testing.assert_close(data["next", "observation"], _as_float32(ref["next_observation"]), **exact)
    torch.testing.assert_close(data["next", "reward"].squeeze(-1), _as_float32(ref["reward"]), **exact)
    for key in ("terminated", "truncated"):
        assert torch.equal(data["next", key].squeeze(-1), torch.as_tensor(ref[key])), key
    done = torch.as_tensor(ref["terminated"] | ref["truncated"])
    assert torch.equal(data["next", "done"].squeeze(-1), done)


@pytest.mark.parametrize("env_id", ["HalfCheetah-v5", "Ant-v5"])
def test_specs_pass_torchrl_check_and_follow_contract(env_id: str) -> None:
    num_envs = 3
    env = make_gym_env(env_id, num_envs, seed=1)
    check_env_specs(env, seed=1)
    single = gym.make(env_id)
    assert env.batch_size == torch.Size([num_envs])
    obs_spec = env.observation_spec["observation"]
    assert obs_spec.shape == (num_envs, *single.observation_space.shape)
    assert obs_spec.dtype == torch.float32
    assert env.action_spec.shape == (num_envs, *single.action_space.shape)
    assert env.reward_spec.shape == (num_envs, 1)
    for key in ("done", "terminated", "truncated"):
        assert env.full_done_spec[key].shape == (num_envs, 1)
        assert env.full_done_spec[key].dtype == torch.bool


def test_random_rollout_is_finite_with_contract_shapes() -> None:
    num_envs, steps = 4, 30
    env = make_gym_env("Ant-v5", num_envs, seed=2, max_episode_steps=10)
    data = env.rollout(steps, break_when_any_done=False)
    obs_dim = gym.make("Ant-v5").observation_space.shape[0]
    assert data.batch_size == torch.Size([num_envs, steps])
    assert data["observation"].shape == (num_envs, steps, obs_dim)
    assert data["observation"].dtype == data["next", "observation"].dtype == torch.float32
    assert data["next", "reward"].shape == (num_envs, steps, 1)
    assert torch.isfinite(data["observation"]).all()
    assert torch.isfinite(data["next", "observation"]).all()
    assert torch.isfinite(data["next", "reward"]).all()
    # Episodes last at most 10 steps (an Ant may also fall earlier): >= 3 ends per copy.
    assert (data["next", "done"].sum(dim=(1, 2)) >= 3).all()


@pytest.mark.parametrize(
    ("env_id", "max_episode_steps", "steps"),
    [
        # Time-outs: truncation at steps 5 and 10.
        ("HalfCheetah-v5", 5, 12),
        # Terminations: a randomly driven Hopper falls within a few dozen steps.
        ("Hopper-v5", None, 60),
    ],
)
def test_done_step_keeps_final_obs_and_next_root_is_reset_obs(
    env_id: str, max_episode_steps: int | None, steps: int
) -> None:
    seed = 11
    torch.manual_seed(0)
    env = make_gym_env(env_id, 3, seed=seed, max_episode_steps=max_episode_steps)
    data = env.rollout(steps, break_when_any_done=False)
    assert data["next", "done"].any(), "the test must cover at least one reset"
    if max_episode_steps is None:
        assert data["next", "terminated"].any()
    _assert_matches_single_envs(data, env_id, seed, max_episode_steps)
    # The bootstrapping property in plain words: after a done step the next root is a
    # fresh start, not a copy of the final observation.
    done = data["next", "done"][:, :-1].squeeze(-1)
    assert not torch.equal(data["next", "observation"][:, :-1][done], data["observation"][:, 1:][done])


def test_collector_batches_match_single_envs() -> None:
    num_envs, steps_per_batch, seed = 2, 4, 3
    env = make_gym_env("HalfCheetah-v5", num_envs, seed=seed, max_episode_steps=5)
    torch.manual_seed(0)
    collector = Collector(
        env,
        policy=None,
        frames_per_batch=num_envs * steps_per_batch,
        total_frames=2 * num_envs * steps_per_batch,
        auto_register_policy_transforms=False,
    )
    batches = [batch.clone() for batch in collector]
    collector.shutdown()
    assert [b.batch_size for b in batches] == [torch.Size([num_envs, steps_per_batch])] * 2
    # The collector carries state across batches: together they are one 8-step stream
    # with a time-out after step 5.
    data = torch.cat(batches, dim=1)
    assert data["next", "truncated"][:, 4].all()
    _assert_matches_single_envs(data, "HalfCheetah-v5", seed, 5)


def test_same_seed_reproduces_and_copies_differ() -> None:
    def first_obs(seed: int) -> torch.Tensor:
        return make_gym_env("HalfCheetah-v5", 3, seed=seed).reset()["observation"]

    obs = first_obs(5)
    torch.testing.assert_close(obs, first_obs(5), rtol=0.0, atol=0.0)
    assert not torch.equal(obs, first_obs(6))
    assert not torch.equal(obs[0], obs[1])


def test_ranks_seeded_by_rank_seed_share_no_env() -> None:
    """Two torchrun ranks of 3 envs: 6 distinct start states (ranks seeded seed + rank shared two copies)."""
    num_envs, seed = 3, 5

    def start_states(rank_seeds: list[int]) -> torch.Tensor:
        return torch.cat([make_gym_env("HalfCheetah-v5", num_envs, seed=s).reset()["observation"] for s in rank_seeds])

    distinct = start_states([rank_seed(seed, rank, num_envs) for rank in (0, 1)])
    assert len({tuple(row.tolist()) for row in distinct}) == 2 * num_envs
    consecutive = start_states([seed, seed + 1])
    assert len({tuple(row.tolist()) for row in consecutive}) == 2 * num_envs - 2


def test_unknown_env_id_raises_value_error_listing_mujoco_ids() -> None:
    with pytest.raises(ValueError, match=r"HalfCheeta-v5.*HalfCheetah-v5"):
        make_gym_env("HalfCheeta-v5", 2)


def test_discrete_action_env_is_rejected() -> None:
    with pytest.raises(ValueError, match="action space must be a flat Box"):
        make_gym_env("CartPole-v1", 2)


def test_restored_simulator_state_steps_bit_identically():
    # Ant-v5's reward reads the torso position before stepping, a derived quantity MuJoCo leaves
    # one substep stale: restoring the integration state alone would change the next reward.
    source = make_gym_env("Ant-v5", num_envs=2, seed=0, max_episode_steps=50)
    source.reset()
    vec_env = source.simulator_state.vec_env
    rng = np.random.default_rng(0)
    for _ in range(5):
        vec_env.step(rng.uniform(-1, 1, size=(2, 8)))
    state = source.simulator_state.state_dict()
    target = make_gym_env("Ant-v5", num_envs=2, seed=123, max_episode_steps=50)
    target.reset()
    target.simulator_state.load_state_dict(state)
    # 50 more steps: past the 50-step time limit and an auto-reset's noise from the restored generator.
    for _ in range(50):
        action = rng.uniform(-1, 1, size=(2, 8))
        expected = vec_env.step(action)
        actual = target.simulator_state.vec_env.step(action)
        for want, got in zip(expected[:4], actual[:4], strict=True):
            np.testing.assert_array_equal(got, want)
        finished = expected[2] | expected[3]
        if finished.any():
            for env in (vec_env, target.simulator_state.vec_env):
                env.reset(options={"reset_mask": finished})
    source.close()
    target.close()
