"""compile_networks on the PPO recipe's loss: TorchRL's ClipPPOLoss compiled whole computes the eager update."""

from __future__ import annotations

import copy

import torch
from torchrl.objectives import ClipPPOLoss

from diffrl.envs import make_gym_env
from diffrl.modules import GaussianActor, make_value_network
from diffrl.training import PPOUpdate
from diffrl.training.compilation import compile_networks


def test_a_clip_ppo_loss_compiled_whole_gives_the_eager_update_in_float64():
    torch.manual_seed(0)
    env = make_gym_env("HalfCheetah-v5", 4, seed=0, max_episode_steps=6)
    actor, critic = GaussianActor(6, 17, [16], activation="elu"), make_value_network(17, [16], activation="elu")
    with torch.no_grad():
        rollout = env.rollout(8, actor, break_when_any_done=False)
    batch = rollout.apply(lambda tensor: tensor.double() if tensor.is_floating_point() else tensor)
    actor, critic = actor.double(), critic.double()
    # The recipe's settings: the value clip and the entropy bonus are both active.
    losses = [
        ClipPPOLoss(actor, critic, clip_value=0.2, entropy_coeff=0.005, functional=False),
        ClipPPOLoss(copy.deepcopy(actor), copy.deepcopy(critic), clip_value=0.2, entropy_coeff=0.005, functional=False),
    ]
    assert compile_networks(losses[1]) == 3  # the actor's and the critic's MLPs, and the loss as one graph
    assert type(losses[1].clip_value) is float
    with torch.no_grad():
        # A graph break would have raised (fullgraph); the loss terms come out of one compiled graph.
        probe = batch.reshape(-1)[:16].clone()
        for key in ("advantage", "value_target", "state_value"):
            probe[key] = torch.randn(16, 1, dtype=torch.float64)
    assert type(losses[1](probe)["loss_critic"].grad_fn).__name__ == "CompiledFunctionBackward"
    initial = [parameter.detach().clone() for parameter in losses[0].parameters()]
    metrics = []
    for loss in losses:
        # One epoch: its minibatch order is drawn before anything compiles (compiling draws random numbers).
        torch.manual_seed(1)
        metrics.append(PPOUpdate(loss, num_epochs=1, num_minibatches=4).update(batch.clone()))
    eager, compiled = metrics
    assert {"loss_objective", "loss_critic", "loss_entropy", "value_clip_fraction"} <= eager.keys()
    assert compiled.keys() == eager.keys()
    for key in eager:
        torch.testing.assert_close(compiled[key], eager[key], rtol=1e-9, atol=1e-10, msg=lambda m, k=key: f"{k}: {m}")
    for (name, after), eager_after in zip(losses[1].named_parameters(), losses[0].parameters(), strict=True):
        torch.testing.assert_close(after, eager_after, rtol=1e-9, atol=1e-10, msg=name)
    assert any(not torch.equal(a, b) for a, b in zip(losses[0].parameters(), initial, strict=True))
