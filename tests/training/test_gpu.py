"""On a CUDA device (skipped without): the update, the collecting policy and the normalizer never sync the host.

``torch.cuda.set_sync_debug_mode("error")`` makes every synchronizing operation (``.item()``, a
data-dependent shape, a blocking copy to the host) raise, so these tests fail at the first sync.
"""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModuleBase
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.objectives import ClipPPOLoss

from diffrl.modules import DenoisingChain, GaussianActor, GenPOActor, GenPOFlow, TruDiActor, make_value_network
from diffrl.objectives import DPPOLoss, GenPOLoss
from diffrl.training import PPOUpdate

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
ENVS, STEPS, OBS, ACT = 64, 8, 11, 3


def rollout(actor: TensorDictModuleBase) -> TensorDict:
    """A [envs, steps] batch with the keys GAE and the loss read, sampled by ``actor`` on the GPU."""
    device = torch.device("cuda")
    observation = torch.randn(ENVS, STEPS + 1, OBS, device=device)
    with torch.no_grad():
        batch = actor(TensorDict({"observation": observation[:, :-1]}, batch_size=[ENVS, STEPS], device=device))
    done = torch.zeros(ENVS, STEPS, 1, dtype=torch.bool, device=device)
    done[::7, -3] = True
    batch["next"] = TensorDict(
        {
            "observation": observation[:, 1:],
            "reward": torch.randn(ENVS, STEPS, 1, device=device),
            "done": done,
            "terminated": done,
            "truncated": torch.zeros_like(done),
        },
        batch_size=[ENVS, STEPS],
        device=device,
    )
    return batch


def genpo_loss() -> GenPOLoss:
    actor = GenPOActor(GenPOFlow(ACT, OBS, hidden_sizes=[32, 32])).cuda()
    return GenPOLoss(actor, make_value_network(OBS, [32]).cuda())


def clip_ppo_loss() -> ClipPPOLoss:
    """The PPO recipe's loss; TorchRL's branch on its value-clip buffer would sync unless PPOUpdate floats it."""
    actor = GaussianActor(ACT, OBS, [32, 32]).cuda()
    return ClipPPOLoss(actor, make_value_network(OBS, [32]).cuda(), clip_value=0.2, functional=False)


def dppo_loss() -> DPPOLoss:
    """Its ESS is taken over the whole minibatch (no outlier mask), GenPO's over the kept samples."""
    actor = TruDiActor(DenoisingChain(ACT, OBS, num_steps=3, hidden_sizes=[32, 32])).cuda()
    return DPPOLoss(actor, make_value_network(OBS, [32]).cuda())


@pytest.mark.parametrize("make_loss", [genpo_loss, clip_ppo_loss, dppo_loss])
def test_ppo_update_runs_without_a_host_sync(make_loss):
    torch.manual_seed(0)
    loss = make_loss()
    actor = loss.actor_network
    update = PPOUpdate(loss, num_epochs=2, num_minibatches=4)
    assert update.optimizer.defaults["capturable"]
    batch = rollout(actor)
    update.update(batch.clone())  # warm-up: cuBLAS handles, allocator
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        metrics = update.update(batch)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    update.numerics.raise_if_failed()
    assert all(value.device.type == "cuda" for value in metrics.values())
    assert torch.isfinite(torch.stack([value.float().reshape(()) for value in metrics.values()])).all()


def test_sampling_runs_without_a_host_sync_and_captures_in_a_cuda_graph():
    from tensordict.nn import CudaGraphModule

    torch.manual_seed(0)
    actor = GenPOActor(GenPOFlow(ACT, OBS, hidden_sizes=[32, 32]), check_finite=False).cuda()
    observation = TensorDict({"observation": torch.randn(ENVS, OBS, device="cuda")}, batch_size=[ENVS], device="cuda")
    actor(observation.clone())
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        actor(observation.clone())
    finally:
        torch.cuda.set_sync_debug_mode("default")
    graphed = CudaGraphModule(actor, warmup=2)
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        expected = actor(observation.clone())["action"]
        for _ in range(4):  # warm-up, capture, replays
            replayed = graphed(observation.clone())["action"]
    torch.testing.assert_close(replayed, expected)


def test_the_observation_normalizer_updates_and_normalizes_without_a_host_sync():
    from diffrl.envs import ObservationNormalizer

    normalizer = ObservationNormalizer.for_key("observation").cuda()
    observation = TensorDict({"observation": torch.randn(ENVS, OBS, device="cuda")}, batch_size=[ENVS], device="cuda")
    normalizer.update(observation)  # the first call creates the statistics
    reset = torch.zeros(ENVS, 1, dtype=torch.bool, device="cuda")
    reset[::5] = True
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        normalizer.update(observation)  # a step's rows, all of them
        normalizer.update(observation, reset)  # a partial reset's rows
        normalized = normalizer.normalize(observation)["observation"]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    count = normalizer.statistics()[0]["observation"]
    assert int(count) == 2 * ENVS + ENVS // 5 + 1 and normalized.device.type == "cuda"
