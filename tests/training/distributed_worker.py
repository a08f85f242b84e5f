"""One rank of the 2-process test in ``test_distributed.py`` (run by ``torchrun``, not by pytest).

Trains GenPO on HalfCheetah-v5 with this rank's own env seed, then writes what the test
compares across ranks to ``<out>/rank<r>.pt``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch.nn.utils import parameters_to_vector

from diffrl.envs import make_gym_env, training_env
from diffrl.modules import GenPOActor, GenPOFlow, make_value_network
from diffrl.objectives import GenPOLoss
from diffrl.torchrl_compat import collector_carried_step
from diffrl.training import OnPolicyTrainer, PPOUpdate
from diffrl.training.distributed import init_distributed

NUM_ENVS, STEPS, ITERATIONS = 4, 16, 3


def main(out: Path) -> None:
    context = init_distributed("cpu")
    torch.manual_seed(100 + context.rank)  # different initial weights: rank 0's must win the broadcast
    env = training_env(make_gym_env("HalfCheetah-v5", NUM_ENVS, seed=context.rank, max_episode_steps=20))
    obs_dim, action_dim = env.observation_spec["observation"].shape[-1], env.action_spec.shape[-1]
    actor = GenPOActor(GenPOFlow(action_dim, obs_dim, num_steps=2, hidden_sizes=[16]))
    critic = make_value_network(obs_dim, [16])
    loss = GenPOLoss(actor, critic)
    trainer = OnPolicyTrainer(
        env=env,
        update=PPOUpdate(loss, num_epochs=2, num_minibatches=2, distributed=context),
        total_frames=ITERATIONS * NUM_ENVS * STEPS * context.world_size,
        steps_per_env=STEPS,
        checkpoint_dir=out / "checkpoints",
        checkpoint_every=ITERATIONS,  # the last iteration's save is in the loop, and no rank saves again after it
        progress=False,
        distributed=context,
    )
    initial = parameters_to_vector(loss.parameters()).detach().clone()
    first_observations = collector_carried_step(trainer.collector)["observation"].clone()
    history = trainer.train()
    count, mean, second_moment = trainer.observation_normalizer.statistics()
    torch.save(
        {
            "world_size": context.world_size,
            "initial": initial,
            "parameters": parameters_to_vector(loss.parameters()).detach(),
            "learning_rate": float(trainer.update.learning_rate),
            "statistics": (count.to_dict(), mean.to_dict(), second_moment.to_dict()),
            "first_observations": first_observations,
            "history": history,
            "checkpoints": sorted(path.name for path in (out / "checkpoints").iterdir()) if context.is_main else None,
        },
        out / f"rank{context.rank}.pt",
    )
    env.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
