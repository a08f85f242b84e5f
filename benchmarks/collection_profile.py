"""Where a collector step's time goes beyond Isaac Lab's own step: a cProfile of the trainer's collection.

Random actions (no policy cost), the training env and ``Collector`` exactly as ``OnPolicyTrainer``
builds them, Isaac-Cartpole on the CPU with offline stand-in assets. Prints the share of the
profiled time spent inside Isaac Lab's ``step`` and the TorchRL / tensordict functions with the
largest own time, which is the Python work a collector step adds.

    python benchmarks/collection_profile.py --num-envs 256 --batches 4
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats

import torch
from torchrl.collectors import Collector

from diffrl.envs import make_isaaclab_env, training_env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="Isaac-Cartpole")
    parser.add_argument("--num-envs", type=int, default=256)
    parser.add_argument("--steps-per-env", type=int, default=16)
    parser.add_argument("--batches", type=int, default=4, help="profiled collector batches (after 2 of warm-up)")
    parser.add_argument("--rows", type=int, default=15, help="functions listed")
    args = parser.parse_args()
    torch.set_num_threads(1)
    env = make_isaaclab_env(args.task, args.num_envs, device="cpu", seed=0, assets="offline")
    train_env = training_env(env, normalize_observations=False)
    collector = Collector(
        train_env,
        None,
        frames_per_batch=args.num_envs * args.steps_per_env,
        total_frames=-1,
        auto_register_policy_transforms=False,
        track_traj_ids=False,
    )
    try:
        batches = iter(collector)
        for _ in range(2):
            next(batches)
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(args.batches):
            next(batches)
        profile.disable()
    finally:
        collector.shutdown(close_env=False)
        env.close()
    stats = pstats.Stats(profile)
    steps = args.batches * args.steps_per_env
    isaac = next(
        (
            value[3]
            for key, value in stats.stats.items()
            if key[2] == "step" and key[0].endswith(("manager_based_rl_env.py", "direct_rl_env.py"))
        ),
        float("nan"),
    )
    total = stats.total_tt
    print(
        f"{steps} steps of {args.num_envs} envs: {total / steps * 1e3:.2f} ms per step profiled, "
        f"{isaac / steps * 1e3:.2f} ms of it in Isaac Lab's step ({isaac / total:.0%})"
    )
    stream = io.StringIO()
    pstats.Stats(profile, stream=stream).sort_stats("tottime").print_stats(r"torchrl|tensordict|isaaclab_rl", args.rows)
    print(stream.getvalue())


if __name__ == "__main__":
    main()
