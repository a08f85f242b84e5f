"""One rank of the 2-process tests in ``test_distributed.py`` (run by ``torchrun``, not by pytest).

Trains GenPO (``ppo``: the PPO family) or TruDi (``pathwise``) on HalfCheetah-v5 with this rank's own
env seed, optionally from a checkpoint, then writes what the tests compare across ranks and runs to
``<out>/rank<r>.pt``.

    torchrun --standalone --nproc_per_node 2 distributed_worker.py OUT [ppo|pathwise] [CHECKPOINT]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch.nn.utils import parameters_to_vector

from diffrl.envs import make_gym_env, training_env
from diffrl.modules import DIMEActor, GenPOActor, GenPOFlow, HLGaussQValue, make_value_network
from diffrl.objectives import GenPOLoss, TruDiLoss
from diffrl.torchrl_compat import collector_carried_step
from diffrl.training import OnPolicyTrainer, PathwiseUpdate, PPOUpdate
from diffrl.training.distributed import init_distributed

NUM_ENVS, STEPS, ITERATIONS = 4, 16, 3


def main(out: Path, family: str, resume: str | None) -> None:
    context = init_distributed("cpu")
    torch.manual_seed(100 + context.rank)  # different initial weights: rank 0's must win the broadcast
    env = training_env(make_gym_env("HalfCheetah-v5", NUM_ENVS, seed=context.rank, max_episode_steps=20))
    obs_dim, action_dim = env.observation_spec["observation"].shape[-1], env.action_spec.shape[-1]
    if family == "pathwise":
        actor = DIMEActor(action_dim, obs_dim, num_steps=2, hidden_sizes=[16])
        loss = TruDiLoss(actor, HLGaussQValue(obs_dim, action_dim, [16], num_bins=11))
        update = PathwiseUpdate(loss, num_epochs=1, num_minibatches=2, distributed=context)
    else:
        actor = GenPOActor(GenPOFlow(action_dim, obs_dim, num_steps=2, hidden_sizes=[16]))
        loss = GenPOLoss(actor, make_value_network(obs_dim, [16]))
        update = PPOUpdate(loss, num_epochs=2, num_minibatches=2, distributed=context)
    trainer = OnPolicyTrainer(
        env=env,
        update=update,
        total_frames=ITERATIONS * NUM_ENVS * STEPS * context.world_size,
        steps_per_env=STEPS,
        checkpoint_dir=out / "checkpoints",
        # GenPO: the last iteration's save is in the loop, and no rank saves again after it.
        # TruDi: a checkpoint of iteration 2 to resume from, and the closing save of iteration 3.
        checkpoint_every=ITERATIONS if family == "ppo" else 2,
        progress=False,
        distributed=context,
    )
    if resume is not None:
        trainer.load_checkpoint(resume)
    initial = parameters_to_vector(loss.parameters()).detach().clone()
    first_observations = collector_carried_step(trainer.collector)["observation"].clone()
    history = trainer.train()
    count, mean, second_moment = trainer.observation_normalizer.statistics()
    reward_normalizer = getattr(update, "reward_normalizer", None)
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
            "reward_scale": float(reward_normalizer.scale) if reward_normalizer is not None else None,
            "running_returns": reward_normalizer.carried.running if reward_normalizer is not None else None,
        },
        out / f"rank{context.rank}.pt",
    )
    env.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "ppo", sys.argv[3] if len(sys.argv) > 3 else None)
