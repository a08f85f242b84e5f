"""The deployed actor's weight average (FPO++'s EMA): its schedule by hand, its checkpoint round trip, and
PPOUpdate deploying it once warm."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict

from diffrl.modules import CFMFlow, FPOActor, make_value_network
from diffrl.objectives import FPOPlusPlusLoss
from diffrl.training import PPOUpdate
from diffrl.training.actor_average import ActorAverage


def set_weight(module: torch.nn.Linear, value: float) -> None:
    with torch.no_grad():
        module.weight.fill_(value)


def test_schedule_is_unused_then_a_copy_then_an_exponential_average():
    actor = torch.nn.Linear(1, 1, bias=False)
    average = ActorAverage(actor, decay=0.75, warmup_updates=2)
    set_weight(actor, 1.0)
    average.step(actor)  # iteration 1 < warmup: nothing
    assert not average.active and float(average.average.weight) != 1.0
    set_weight(actor, 2.0)
    average.step(actor)  # iteration 2 = warmup: a copy, not yet deployed
    assert not average.active and float(average.average.weight) == 2.0
    set_weight(actor, 6.0)
    average.step(actor)  # 0.75·2 + 0.25·6
    assert average.active and float(average.average.weight) == pytest.approx(3.0, abs=1e-7)
    assert not average.average.weight.requires_grad


def test_state_dict_round_trip_continues_the_average():
    actor = torch.nn.Linear(1, 1, bias=False)
    average = ActorAverage(actor, decay=0.5, warmup_updates=1)
    set_weight(actor, 2.0)
    average.step(actor)
    state = average.state_dict()
    assert int(state["updates"]) == 1 and set(state) == {"updates", "average.weight"}
    restored = ActorAverage(torch.nn.Linear(1, 1, bias=False), decay=0.5, warmup_updates=1)
    restored.load_state_dict(state)
    set_weight(actor, 4.0)
    restored.step(actor)
    assert restored.active and float(restored.average.weight) == pytest.approx(3.0)


@pytest.mark.parametrize("kwargs", [{"decay": 1.0, "warmup_updates": 1}, {"decay": 0.9, "warmup_updates": 0}])
def test_bad_settings_are_named(kwargs):
    with pytest.raises(ValueError, match="ema_"):
        ActorAverage(torch.nn.Linear(1, 1), **kwargs)


def test_ppo_update_deploys_the_average_once_warm_and_checkpoints_it():
    torch.manual_seed(0)
    actor = FPOActor(CFMFlow(action_dim=1, obs_dim=2, hidden_sizes=[8], num_steps=2), num_cfm_pairs=2)
    loss = FPOPlusPlusLoss(actor, make_value_network(2, [8]))
    update = PPOUpdate(
        loss, num_epochs=1, num_minibatches=1, adaptive_lr=False, weight_decay=1e-4, ema_decay=0.5, ema_warmup_updates=1
    )
    assert isinstance(update.optimizer, torch.optim.AdamW)
    assert "actor_average" in update.checkpoint_components()

    def rollout() -> TensorDict:
        observation = torch.randn(4, 4, 2)  # a rollout in time order: the next observation is the following one
        batch = actor(TensorDict({"observation": observation[:, :-1]}, batch_size=[4, 3]))
        batch["next"] = TensorDict(
            {
                "observation": observation[:, 1:],
                "reward": torch.randn(4, 3, 1),
                "done": torch.zeros(4, 3, 1, dtype=torch.bool),
                "terminated": torch.zeros(4, 3, 1, dtype=torch.bool),
            },
            batch_size=[4, 3],
        )
        return batch

    assert update.deployed_actor is actor
    update.update(rollout())  # iteration 1 = warmup: the average is a copy
    assert update.deployed_actor is actor
    before = [p.detach().clone() for p in actor.parameters()]
    update.update(rollout())
    deployed = update.deployed_actor
    assert deployed is update.actor_average.average
    for averaged, old, new in zip(deployed.parameters(), before, actor.parameters(), strict=True):
        torch.testing.assert_close(averaged, 0.5 * old + 0.5 * new.detach())
