"""ObservationNormalizer: running mean/std normalization, finite on constant features."""

from __future__ import annotations

import torch
from tensordict import TensorDict
from torchrl.envs import VecNormV2

from diffrl.envs.observation_normalizer import ObservationNormalizer


def feed(normalizer: VecNormV2, batches: list[torch.Tensor]) -> torch.Tensor:
    """Update with every batch, then normalize the last one."""
    for batch in batches:
        td = TensorDict({"observation": batch}, batch_size=batch.shape[:1])
        normalizer._maybe_stateful_init(td)
        normalizer._stateful_update(td.select("observation"))
    return normalizer._stateful_norm(td.select("observation"))["observation"]


def test_constant_features_stay_finite_where_vecnormv2_gives_nan():
    # Isaac-Ant's reset observations: many features identical across envs (gravity 9.81, ...).
    batches = [torch.tensor([[1.7, -0.05, 9.81]]).expand(256, 3).clone() for _ in range(50)]
    reference = feed(VecNormV2(in_keys=["observation"], decay=1.0, reduce_batch_dims=True), batches)
    assert torch.isnan(reference).any(), "TorchRL's VecNormV2 no longer fails here: ObservationNormalizer may go"
    normalized = feed(ObservationNormalizer(in_keys=["observation"], decay=1.0, reduce_batch_dims=True), batches)
    assert torch.isfinite(normalized).all() and normalized.abs().max() < 1e-2


def test_normalization_matches_the_mean_and_std_of_all_data_seen():
    generator = torch.Generator().manual_seed(0)
    batches = [3.0 + 2.0 * torch.randn(64, 4, generator=generator, dtype=torch.float64) for _ in range(20)]
    normalized = feed(ObservationNormalizer(in_keys=["observation"], decay=1.0, reduce_batch_dims=True), batches)
    everything = torch.cat(batches)
    expected = (batches[-1] - everything.mean(0)) / everything.std(0, correction=0)
    torch.testing.assert_close(normalized, expected, rtol=0, atol=1e-8)
