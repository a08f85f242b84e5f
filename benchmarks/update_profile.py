"""Where a PPO-family update spends its time on a CPU, and what ``compile=true`` buys there.

``--policy genpo`` (default): the Isaac-Cartpole recipe's sizes without the simulator, a rollout of
256 envs × 16 steps, 4 observations, 1 action, a [64, 64] mish velocity net, 5 epochs × 4
minibatches of 1024 rows. Prints the median seconds of one ``PPOUpdate.update`` eager and with the
networks compiled (``compile_networks``), the share of an eager update's profile inside mish, the
share of a compiled update's in the matrix products (what no fusion removes), and
mish on a [256, 400] tensor (a GenPO layer at Ant sizes, 256 envs), forward and forward + backward:
torch's kernel against diffrl's ``Mish`` (one sigmoid), eager and compiled.

``--policy gaussian``: diffrl's PPO (TorchRL's ``ClipPPOLoss``) at rsl_rl's Isaac-Ant sizes, 256 envs ×
32 steps, 60 observations, 8 actions, [400, 200, 100] ELU actor and critic, 5 × 4 minibatches of
2048 rows (``--sizes cartpole``: rsl_rl's Isaac-Cartpole sizes, 256 × 16 steps, 4 observations, 1
action, [32, 32], minibatches of 1024 rows). Prints the median seconds of one update, eager and
compiled as ``compile=true`` compiles it (the MLPs, and the loss whole as one graph), beside
rsl_rl's own on the same sizes in the same process, in turns: its ``compute_returns`` (GAE; the
values it stored while collecting) and ``update``, what its "Learning time" counts, from a rollout
filled through its ``act`` and ``process_env_step`` (untimed). diffrl's update also evaluates the
critic on the rollout, which rsl_rl does while collecting. Then how diffrl's profile splits between
the networks' arithmetic (linear layers, ELU, the backward pass, gradient clipping and Adam) and
everything else (TorchRL's loss, tensordict indexing, Python): the part of the update a leaner
loss could remove. Then one Adam step over the same parameters: torch's per-parameter loop (its
CPU default) against the fused step diffrl uses.

    python benchmarks/update_profile.py --threads 1
    python benchmarks/update_profile.py --threads 1 --policy gaussian
    python benchmarks/update_profile.py --threads 1 --policy gaussian --sizes cartpole
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import pstats
import statistics
import time
from collections.abc import Callable

import torch
from common import format_machine, machine_description, set_threads
from tensordict import TensorDict
from tensordict.nn import TensorDictModuleBase
from torchrl.objectives import ClipPPOLoss

from diffrl.modules import GaussianActor, GenPOActor, GenPOFlow, make_value_network
from diffrl.modules.velocity_net import Mish
from diffrl.objectives import GenPOLoss
from diffrl.training import PPOUpdate
from diffrl.training.compilation import compile_networks

ENVS, STEPS, OBS, ACTION = 256, 16, 4, 1
# rsl_rl's reference sizes for --policy gaussian: envs, steps per env, observations, actions, hidden widths.
GAUSSIAN_SIZES = {"ant": (256, 32, 60, 8, [400, 200, 100]), "cartpole": (256, 16, 4, 1, [32, 32])}
# The profile entries that are the networks' own arithmetic, by cProfile name: the layers' kernels and the
# backward pass (own time), Adam's step and the gradient clipping (with everything they call).
NETWORK_KERNELS = ("torch._C._nn.linear", "torch._C._nn.elu", "run_backward")
OPTIMIZER_STEPS = ("_single_tensor_adam", "_fused_adam", "clip_grad_norm_")
COMPILED_MATRIX_PRODUCTS = ("<built-in method torch.addmm>", "<built-in method torch.mm>")


def rollout(actor: TensorDictModuleBase, envs: int = ENVS, steps: int = STEPS, obs: int = OBS) -> TensorDict:
    observation = torch.randn(envs, steps + 1, obs)
    with torch.no_grad():
        batch = actor(TensorDict({"observation": observation[:, :-1]}, batch_size=[envs, steps]))
    done = torch.zeros(envs, steps, 1, dtype=torch.bool)
    batch["next"] = TensorDict(
        {
            "observation": observation[:, 1:],
            "reward": torch.randn(envs, steps, 1),
            "done": done,
            "terminated": done,
            "truncated": done,
        },
        batch_size=[envs, steps],
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


def timed_and_profiled(
    update: PPOUpdate, batch: TensorDict, repeats: int, warmup: int = 1
) -> tuple[float, pstats.Stats]:
    """The median seconds of one ``update.update``, and the cProfile statistics of one more."""
    seconds = median_seconds(lambda: update.update(batch.clone()), repeats, warmup)
    profile = cProfile.Profile()
    profile.enable()
    update.update(batch.clone())
    profile.disable()
    return seconds, pstats.Stats(profile)


def rsl_rl_update(envs: int, steps: int, obs: int, action: int, hidden: list[int]) -> Callable[[], float]:
    """rsl_rl's PPO at these sizes (AntPPORunnerCfg's settings): a call fills its rollout, then times its learning.

    The rollout comes from rsl_rl's own ``act`` and ``process_env_step`` on random observations and
    rewards (untimed); the timed part is ``compute_returns`` + ``update``, its "Learning time".
    """
    from rsl_rl.algorithms import PPO
    from rsl_rl.models import MLPModel
    from rsl_rl.storage import RolloutStorage

    def observation() -> TensorDict:
        return TensorDict({"policy": torch.randn(envs, obs)}, batch_size=[envs])

    groups = {"actor": ["policy"], "critic": ["policy"]}
    distribution = {"class_name": "rsl_rl.modules.distribution:GaussianDistribution", "init_std": 1.0}
    actor = MLPModel(observation(), groups, "actor", action, hidden, "elu", distribution_cfg=distribution)
    critic = MLPModel(observation(), groups, "critic", 1, hidden, "elu")
    storage = RolloutStorage("rl", envs, steps, observation(), [action])
    algorithm = PPO(actor, critic, storage, entropy_coef=0.0, learning_rate=5e-4)

    def learn() -> float:
        with torch.inference_mode():
            for _ in range(steps):
                algorithm.act(observation())
                algorithm.process_env_step(observation(), torch.randn(envs), torch.zeros(envs), {})
            last = observation()
        start = time.perf_counter()
        with torch.inference_mode():
            algorithm.compute_returns(last)
        algorithm.update()
        return time.perf_counter() - start

    return learn


def profile_gaussian_ppo(repeats: int, sizes: str) -> None:
    """diffrl's PPO update at rsl_rl's sizes: its time beside rsl_rl's, and the networks' share of its profile."""
    envs, steps, obs, action, hidden = GAUSSIAN_SIZES[sizes]
    actor = GaussianActor(action, obs, hidden, activation="elu")
    critic = make_value_network(obs, hidden, activation="elu")
    # AntPPORunnerCfg: clip 0.2, value clip 0.2, value coefficient 1, entropy coefficient 0.
    loss = ClipPPOLoss(
        actor, critic, clip_epsilon=0.2, entropy_coeff=0.0, critic_coeff=1.0, clip_value=0.2, functional=False
    )
    update = PPOUpdate(loss, num_epochs=5, num_minibatches=4)
    compiled_loss = copy.deepcopy(loss)
    compile_networks(compiled_loss)  # as compile=true: the MLPs, and the loss whole
    compiled_update = PPOUpdate(compiled_loss, num_epochs=5, num_minibatches=4)
    batch = rollout(actor, envs, steps, obs)
    rsl_rl_learn = rsl_rl_update(envs, steps, obs, action, hidden)

    def elapsed(call: Callable[[], object]) -> float:
        start = time.perf_counter()
        call()
        return time.perf_counter() - start

    cases = {
        "eager": lambda: elapsed(lambda: update.update(batch.clone())),
        "compiled": lambda: elapsed(lambda: compiled_update.update(batch.clone())),
        "rsl_rl": rsl_rl_learn,
    }
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for round_ in range(repeats + 2):  # in turns; the first two rounds (compilation, warm-up) are dropped
        for name, case in cases.items():
            seconds = case()
            if round_ > 1:
                samples[name].append(seconds)
    eager, compiled, reference = (statistics.median(samples[name]) for name in cases)
    _, stats = timed_and_profiled(update, batch, repeats=1)
    kernels = sum(value[2] for key, value in stats.stats.items() if any(name in key[2] for name in NETWORK_KERNELS))
    steps_time = sum(value[3] for key, value in stats.stats.items() if key[2] in OPTIMIZER_STEPS)
    arithmetic = kernels + steps_time
    minibatches = update.num_epochs * update.num_minibatches
    rest = stats.total_tt - arithmetic
    print(f"{sizes} sizes: {minibatches} minibatches of {batch.numel() // update.num_minibatches} rows")
    print(
        f"update s: diffrl eager {eager:.4f}, diffrl compiled {compiled:.4f}, rsl_rl compute_returns + update "
        f"{reference:.4f}; diffrl / rsl_rl: eager {eager / reference:.2f}, compiled {compiled / reference:.2f} "
        f"(medians of {repeats}, in turns)"
    )
    print(
        f"diffrl's eager update profile: {stats.total_tt:.3f} s, networks' arithmetic {arithmetic:.3f} s "
        f"({arithmetic / stats.total_tt:.0%}), everything else {rest:.3f} s "
        f"({rest / minibatches * 1e3:.1f} ms per minibatch)"
    )
    parameters = list(loss.parameters())
    for parameter in parameters:
        parameter.grad = torch.randn_like(parameter)
    optimizers = {
        "per-parameter loop": torch.optim.Adam(parameters, lr=torch.tensor(1e-4, dtype=torch.float64), foreach=False),
        "fused (diffrl's)": update.optimizer,
    }
    for name, optimizer in optimizers.items():
        seconds = median_seconds(optimizer.step, repeats=50, warmup=5)
        print(f"Adam step over the {len(parameters)} parameter tensors, {name}: {seconds * 1e3:.3f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--policy", choices=("genpo", "gaussian"), default="genpo")
    parser.add_argument("--sizes", choices=sorted(GAUSSIAN_SIZES), default="ant", help="--policy gaussian's sizes")
    args = parser.parse_args()
    set_threads(args.threads)
    print(format_machine(machine_description(torch.device("cpu"))))
    torch.manual_seed(0)
    if args.policy == "gaussian":
        profile_gaussian_ppo(args.repeats, args.sizes)
        return
    actor = GenPOActor(GenPOFlow(ACTION, OBS, hidden_sizes=[64, 64]))
    update = PPOUpdate(GenPOLoss(actor, make_value_network(OBS, [64, 64])), num_epochs=5, num_minibatches=4)
    batch = rollout(actor)
    eager, stats = timed_and_profiled(update, batch, args.repeats)
    mish_code = Mish.forward.__code__
    mish_key = (mish_code.co_filename, mish_code.co_firstlineno, mish_code.co_name)
    mish = stats.stats[mish_key][3]  # cumulative: Mish.forward with the kernels it calls
    compile_networks(update.loss_module)
    compiled, compiled_stats = timed_and_profiled(update, batch, args.repeats, warmup=2)
    # Compiled, forward and backward run as Inductor graphs that call these for their matrix products.
    products = sum(value[2] for key, value in compiled_stats.stats.items() if key[2] in COMPILED_MATRIX_PRODUCTS)
    if not products:  # rather than print a silent 0 % if Inductor's calls change name
        raise RuntimeError(f"none of {COMPILED_MATRIX_PRODUCTS} in the compiled update's profile")
    print(f"update s: eager {eager:.3f}, networks compiled {compiled:.3f}")
    print(f"eager update profile: {stats.total_tt:.3f} s, mish forward {mish:.3f} s ({mish / stats.total_tt:.0%})")
    print(
        f"compiled update profile: {compiled_stats.total_tt:.3f} s, matrix products (forward and backward) "
        f"{products:.3f} s ({products / compiled_stats.total_tt:.0%})"
    )
    x = torch.randn(256, 400)
    x_with_grad = x.clone().requires_grad_()
    for name, function in {
        "torch's mish, eager": torch.nn.functional.mish,
        "torch's mish, compiled": torch.compile(torch.nn.functional.mish),
        "diffrl's Mish, eager": Mish(),
        "diffrl's Mish, compiled": torch.compile(Mish()),
    }.items():
        with torch.no_grad():
            forward = median_seconds(lambda f=function: f(x), repeats=100, warmup=5)
        both = median_seconds(lambda f=function: f(x_with_grad).sum().backward(), repeats=100, warmup=5)
        print(f"mish [256, 400], {name}: forward {forward * 1e3:.3f} ms, forward + backward {both * 1e3:.3f} ms")


if __name__ == "__main__":
    main()
