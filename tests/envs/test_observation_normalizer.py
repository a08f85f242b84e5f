"""ObservationNormalizer: the running mean/std of every observation an env emits, each counted once."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from torchrl.envs import TransformedEnv, VecNormV2

from diffrl.envs.gym import make_gym_env
from diffrl.envs.observation_normalizer import ObservationNormalizer


def feed(normalizer: ObservationNormalizer, batches: list[torch.Tensor]) -> torch.Tensor:
    """Update with every batch, then normalize the last one."""
    for batch in batches:
        td = TensorDict({"observation": batch}, batch_size=batch.shape[:1])
        normalizer.update(td)
    return normalizer.normalize(td)["observation"]


def test_constant_features_stay_finite_where_vecnormv2_gives_nan():
    # Isaac-Ant's reset observations: many features identical across envs (gravity 9.81, ...).
    batches = [torch.tensor([[1.7, -0.05, 9.81]]).expand(256, 3).clone() for _ in range(50)]
    reference = VecNormV2(in_keys=["observation"], decay=1.0, reduce_batch_dims=True)
    for batch in batches:
        td = TensorDict({"observation": batch}, batch_size=[256])
        reference._maybe_stateful_init(td)
        reference._stateful_update(td)
    assert torch.isnan(reference._stateful_norm(td)["observation"]).any(), (
        "TorchRL's VecNormV2 no longer fails here: the non-negative variance may go"
    )
    normalized = feed(ObservationNormalizer.for_key("observation"), batches)
    assert torch.isfinite(normalized).all() and normalized.abs().max() < 1e-2


def test_normalization_matches_the_mean_and_std_of_all_data_seen():
    generator = torch.Generator().manual_seed(0)
    batches = [3.0 + 2.0 * torch.randn(64, 4, generator=generator, dtype=torch.float64) for _ in range(20)]
    normalized = feed(ObservationNormalizer.for_key("observation"), batches)
    everything = torch.cat(batches)
    expected = (batches[-1] - everything.mean(0)) / everything.std(0, correction=0)
    torch.testing.assert_close(normalized, expected, rtol=0, atol=1e-8)


def test_selected_rows_enter_the_statistics_and_an_empty_selection_changes_nothing():
    generator = torch.Generator().manual_seed(1)
    batches = [torch.randn(8, 3, generator=generator, dtype=torch.float64) * (i + 1) for i in range(4)]
    rows = [torch.rand(8, 1, generator=generator) < 0.4 for _ in batches]
    rows[2][:] = False
    normalizer = ObservationNormalizer.for_key("observation")
    normalizer.update(TensorDict({"observation": torch.zeros(2, 3, dtype=torch.float64)}, [2]))
    before = normalizer.statistics()
    normalizer.update(TensorDict({"observation": batches[2]}, [8]), rows[2])
    for old, new in zip(before, normalizer.statistics(), strict=True):
        assert (old == new).all()
    for batch, selected in zip(batches, rows, strict=True):
        normalizer.update(TensorDict({"observation": batch}, [8]), selected)
    seen = torch.cat(
        [torch.zeros(2, 3, dtype=torch.float64)] + [b[s.squeeze(-1)] for b, s in zip(batches, rows, strict=True)]
    )
    count, mean, second_moment = normalizer.statistics()
    assert int(count["observation"]) == seen.shape[0]
    torch.testing.assert_close(mean["observation"], seen.mean(0), rtol=0, atol=1e-12)
    torch.testing.assert_close(second_moment["observation"], seen.pow(2).mean(0), rtol=0, atol=1e-12)


@pytest.mark.parametrize("reset_env", [1, None], ids=["partial_reset", "full_reset"])
def test_a_reset_counts_the_observations_of_the_envs_it_resets_once(reset_env):
    """Every observation the env emits is counted once: the first reset, each step, then the reset's new episodes.

    The raw observations come from a twin env without the normalizer, driven by the same seeds and
    actions (MuJoCo is deterministic); on a partial reset the envs that go on keep their observation,
    which the step already counted (``VecNormV2`` counts it again).
    """
    envs, steps = 3, 4
    normalizer = ObservationNormalizer.for_key("observation")
    normalized_env = TransformedEnv(make_gym_env("HalfCheetah-v5", envs, seed=5), normalizer)
    raw_env = make_gym_env("HalfCheetah-v5", envs, seed=5)
    actions = torch.rand(steps, envs, 6, generator=torch.Generator().manual_seed(0)) * 2 - 1
    seen = []
    for env in (normalized_env, raw_env):
        td = env.reset()
        emitted = [td["observation"]]
        for action in actions:
            td["action"] = action
            td = env.step(td)
            emitted.append(td["next", "observation"])
            td = td["next"].exclude("reward", "done", "terminated", "truncated")
        reset = torch.zeros(envs, 1, dtype=torch.bool)
        reset[reset_env if reset_env is not None else slice(None)] = True
        td = env.reset(td.set("_reset", reset))
        emitted.append(td["observation"][reset.squeeze(-1)])
        seen.append(torch.cat(emitted))
    raw = seen[1].double()
    count, mean, second_moment = normalizer.statistics()
    assert int(count["observation"]) == raw.shape[0] == envs * (steps + 1) + (1 if reset_env is not None else envs)
    torch.testing.assert_close(mean["observation"].double(), raw.mean(0), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(second_moment["observation"].double(), raw.pow(2).mean(0), rtol=1e-5, atol=1e-5)
    # What the normalized env returned is the raw observation normalized by the statistics at that time:
    # at the end, the reset env's new observation under the final statistics.
    scale = (raw.pow(2).mean(0) - raw.mean(0).pow(2)).sqrt().clamp_min(1e-2)
    torch.testing.assert_close(seen[0][-1].double(), (raw[-1] - raw.mean(0)) / scale, rtol=1e-4, atol=1e-4)
    normalized_env.close()
    raw_env.close()
