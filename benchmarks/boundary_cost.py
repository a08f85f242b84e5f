"""What the exact crash checkpoint costs: ``RunState.mark_boundary`` against a whole training iteration.

The trainer copies the run's state at every iteration boundary (device copies of the weights,
optimizer, normalizer and rollout state; on gymnasium MuJoCo also every env copy's simulator
state), so that a crash checkpoints the last completed iteration exactly. This measures that copy
on the worst case, a MuJoCo env (Isaac Lab exposes no simulator state to copy), with GenPO at the
HalfCheetah preset's sizes ([400, 200, 100] networks), and reports medians over iterations (the
first excluded: it compiles nothing but allocates).

    python benchmarks/boundary_cost.py --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
from common import format_machine, machine_description, set_threads

from diffrl.envs import make_gym_env, training_env
from diffrl.modules import GenPOActor, GenPOFlow, make_value_network
from diffrl.objectives import GenPOLoss
from diffrl.training import OnPolicyTrainer, PPOUpdate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--num-envs", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=6)
    args = parser.parse_args()
    set_threads(args.threads)
    print(format_machine(machine_description(torch.device("cpu"))))
    env = training_env(make_gym_env("HalfCheetah-v5", args.num_envs, seed=0))
    obs_dim, action_dim = env.observation_spec["observation"].shape[-1], env.action_spec.shape[-1]
    actor = GenPOActor(GenPOFlow(action_dim, obs_dim, hidden_sizes=[400, 200, 100]))
    update = PPOUpdate(GenPOLoss(actor, make_value_network(obs_dim, [400, 200, 100])))
    with tempfile.TemporaryDirectory() as checkpoints:
        trainer = OnPolicyTrainer(
            env=env,
            update=update,
            total_frames=args.iterations * args.num_envs * 32,
            checkpoint_dir=checkpoints,
            checkpoint_every=10**6,
            progress=False,
        )
        marks: list[float] = []
        mark_boundary = trainer.run_state.mark_boundary

        def timed_mark_boundary() -> None:
            start = time.perf_counter()
            mark_boundary()
            marks.append(time.perf_counter() - start)

        trainer.run_state.mark_boundary = timed_mark_boundary
        history = trainer.train()
    iteration = statistics.median(entry["collection_time"] + entry["update_time"] for entry in history[1:])
    mark = statistics.median(marks[1:])  # the first copy allocates
    print(
        f"HalfCheetah-v5, {args.num_envs} envs x 32 steps, GenPO [400, 200, 100]: iteration {iteration:.3f} s, "
        f"mark_boundary {mark * 1e3:.2f} ms ({mark / iteration:.2%} of an iteration)"
    )


if __name__ == "__main__":
    main()
