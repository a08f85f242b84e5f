"""Where GenPO's update spends its time on a CPU, and what ``compile=true`` buys there.

The Isaac-Cartpole recipe's sizes without the simulator: a rollout of 256 envs × 16 steps, 4
observations, 1 action, a [64, 64] mish velocity net, 5 epochs × 4 minibatches of 1024 rows.
Prints the median seconds of one ``PPOUpdate.update`` eager and with the networks compiled
(``compile_networks``), the share of an eager update's profile inside mish, and forward + backward
of mish on a [2048, 64] tensor: torch's kernel eager and compiled, and the rewrite compiled.

    python benchmarks/update_profile.py --threads 1
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import time
from collections.abc import Callable

import torch
from common import format_machine, machine_description, set_threads
from tensordict import TensorDict

from diffrl.modules import GenPOActor, GenPOFlow, make_value_network
from diffrl.modules.velocity_net import Mish
from diffrl.objectives import GenPOLoss
from diffrl.training import PPOUpdate
from diffrl.training.compilation import compile_networks

ENVS, STEPS, OBS, ACTION = 256, 16, 4, 1


def rollout(actor: GenPOActor) -> TensorDict:
    observation = torch.randn(ENVS, STEPS + 1, OBS)
    with torch.no_grad():
        batch = actor(TensorDict({"observation": observation[:, :-1]}, batch_size=[ENVS, STEPS]))
    done = torch.zeros(ENVS, STEPS, 1, dtype=torch.bool)
    batch["next"] = TensorDict(
        {
            "observation": observation[:, 1:],
            "reward": torch.randn(ENVS, STEPS, 1),
            "done": done,
            "terminated": done,
            "truncated": done,
        },
        batch_size=[ENVS, STEPS],
    )
    return batch


def median_seconds(call: Callable[[], object], repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    set_threads(args.threads)
    print(format_machine(machine_description(torch.device("cpu"))))
    torch.manual_seed(0)
    actor = GenPOActor(GenPOFlow(ACTION, OBS, hidden_sizes=[64, 64]))
    update = PPOUpdate(GenPOLoss(actor, make_value_network(OBS, [64, 64])), num_epochs=5, num_minibatches=4)
    batch = rollout(actor)
    eager = median_seconds(lambda: update.update(batch.clone()), args.repeats, warmup=1)
    profile = cProfile.Profile()
    profile.enable()
    update.update(batch.clone())
    profile.disable()
    stats = pstats.Stats(profile)
    mish = sum(value[2] for key, value in stats.stats.items() if key[2] in ("<built-in method torch._C._nn.mish>",))
    compile_networks(update.loss_module)
    compiled = median_seconds(lambda: update.update(batch.clone()), args.repeats, warmup=2)
    print(f"update s: eager {eager:.3f}, networks compiled {compiled:.3f}")
    print(f"eager update profile: {stats.total_tt:.3f} s, mish forward {mish:.3f} s ({mish / stats.total_tt:.0%})")
    x = torch.randn(2048, 64, requires_grad=True)
    cases = {
        "torch's mish, eager": torch.nn.functional.mish,
        "torch's mish, compiled": torch.compile(torch.nn.functional.mish),
        "rewrite, compiled": torch.compile(Mish()),
    }
    for name, function in cases.items():
        seconds = median_seconds(lambda f=function: f(x).sum().backward(), repeats=50, warmup=5)
        print(f"mish [2048, 64] forward + backward, {name}: {seconds * 1e3:.3f} ms")


if __name__ == "__main__":
    main()
