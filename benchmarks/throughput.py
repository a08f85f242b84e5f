"""Frames per second on Isaac Lab: collection with and without a policy, and end-to-end training vs rsl_rl.

Collection (per task and number of envs, in one worker process each, since Isaac Lab allows one
simulation per process):

- ``isaaclab_step``: Isaac Lab's own ``env.step`` with random actions, no TorchRL: the limit;
- ``random``: TorchRL's ``Collector`` with random actions, on the training env (the wrapper, the
  episode-statistics transforms and the collector, as ``OnPolicyTrainer`` builds them);
- ``gaussian`` and ``genpo``: the same with the recipes' actors (the networks of
  ``recipes/config/ppo_isaaclab.yaml`` and ``genpo_isaaclab.yaml`` for that task);
- ``gaussian_normalized``: the Gaussian with the running observation normalizer in the training
  env (GenPO's default; the other rows run without, as the PPO recipe): its ``rest ms`` beside
  ``gaussian``'s is the normalizer's cost per step;
- ``genpo_compiled``: GenPO's actor with its networks compiled as the recipes' ``compile=true`` does
  (compilation falls in the burn-in);
- ``rsl_rl_ppo_rollout``: rsl_rl's own rollout loop (its actor and critic on every step) inside its
  training run below, at the training env count, from the collection time it prints: where a lean
  PPO library's collection stands against the same ``env.step``.

A policy changes the simulator's own cost: its actions end episodes at other steps than random
actions do, and on a CPU a step in which Isaac Lab resets some envs costs more. So each collection
row also times, on a CPU, every call of Isaac Lab's ``env.step`` and of the policy inside it, and
splits a step into ``env.step``, policy and the rest (TorchRL's wrapper, transforms and collector);
``× its env.step`` is the first part's share, the collection against the simulator on the very
steps it ran; ``steps with a reset`` the share of steps in which some env's episode ended.

Training (one worker per trainer): diffrl's PPO and GenPO through the recipes' own
:func:`~diffrl.training.experiment.run_experiment` (``OnPolicyTrainer``; the rate is its
``frames_per_second``: frames over collection + update time), and rsl_rl PPO through
``isaaclab train --rl_library rsl_rl`` (its "Collection time" + "Learning time") and, on
Cartpole (the one task Isaac Lab configures it for), Isaac Lab's own TorchRL PPO runner
(``--rl_library torchrl``, its TensorBoard ``Perf/*_time``), on the same
task, envs, rollout length and network sizes. The first ``--burn-in`` iterations (or collector
batches) are excluded. All runs use diffrl's offline stand-in assets.

With ``--repeats`` above 1 every case runs once per round, in turns, and the last tables give per
case the median rate and, for ``× isaaclab_step`` and ``× rsl_rl``, the median of the rounds' own
ratios (each against its reference in the same round), then those ratios.

``--variant [ALGORITHM/]NAME:OVERRIDES`` adds diffrl's GenPO (or ``ppo/``: PPO) with those Hydra
overrides, e.g. ``--variant compiled:compile=true`` or ``--variant ppo/compiled:compile=true``
(compilation falls in the burn-in).

Shared CPU (``--shared-cpu``): the main job (the GenPO recipe's defaults: Isaac-Cartpole, 256 envs)
alone and beside one busy core (a process spinning in a Python loop), each with the recipes' thread
default (``torch_threads=1``, ``OMP_WAIT_POLICY=PASSIVE``) and with torch's own (one thread per core,
OpenMP's active wait), in turns, ``--repeats`` times; the table gives medians and the busy/alone ratio.

    python benchmarks/throughput.py                                # Cartpole and Ant, 64 and 256 envs
    python benchmarks/throughput.py --quick --json throughput.json # Cartpole, 256 envs, a few minutes
    python benchmarks/throughput.py --shared-cpu --repeats 3       # the main job alone and beside a busy core
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from common import format_machine, format_table, machine_description, set_threads, write_json

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "recipes" / "config"
ISAACLAB_CLI = Path(sys.executable).with_name("isaaclab")
# Hydra overrides that give each recipe the task's rsl_rl reference settings where they differ
# from the recipe's: rsl_rl's Cartpole networks are [32, 32], its Ant entropy coefficient 0.
RECIPE_OVERRIDES: dict[tuple[str, str], tuple[str, list[str]]] = {
    ("ppo", "Isaac-Cartpole"): (
        "ppo_isaaclab",
        ["task=cartpole", "algorithm.hidden_sizes=[32,32]", "algorithm.critic_hidden_sizes=[32,32]"],
    ),
    ("ppo", "Isaac-Ant"): ("ppo_isaaclab", ["task=ant", "algorithm.loss.entropy_coeff=0"]),
    ("genpo", "Isaac-Cartpole"): ("genpo_isaaclab", ["task=cartpole"]),
    # Observation normalization off, as in rsl_rl's Ant reference and the PPO baseline.
    ("genpo", "Isaac-Ant"): ("genpo_isaaclab", ["task=ant", "algorithm.normalize_observations=false"]),
}
RSL_RL_ITERATION = re.compile(r"Collection time:\s*([\d.]+)s\s*\n\s*Learning time:\s*([\d.]+)s")


def recipe_config(
    algorithm: str, task: str, num_envs: int, device: str, iterations: int = 1, extra: Sequence[str] = ()
) -> Any:
    """The recipe's Hydra config for ``algorithm`` on ``task``, sized for ``iterations`` iterations."""
    from hydra import compose, initialize_config_dir

    from diffrl.training.recipe import register_configs

    register_configs()
    config_name, overrides = RECIPE_OVERRIDES[(algorithm, task)]
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name, overrides=[*overrides, f"env.num_envs={num_envs}", f"env.device={device}", *extra])
    cfg.env.assets = "offline"
    cfg.collector.total_frames = iterations * num_envs * cfg.collector.steps_per_env
    cfg.logger.progress = False
    cfg.checkpoint.every = 10**9
    return cfg


# -- workers (one Isaac Lab env per process) ---------------------------------------------------------


def _rate(frames: int, seconds: float) -> dict[str, float]:
    return {"frames": frames, "seconds": seconds, "frames_per_s": frames / seconds}


@contextlib.contextmanager
def summed_call_time(owner: Any, attribute: str):
    """While open, every call of ``owner.attribute`` adds its wall seconds to the yielded ``[total]``.

    ``owner`` ``None`` (the random policy, which the collector draws from the spec) times nothing.
    """
    total = [0.0]
    if owner is None:
        yield total
        return
    original = getattr(owner, attribute)

    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            total[0] += time.perf_counter() - start

    setattr(owner, attribute, timed)
    try:
        yield total
    finally:
        delattr(owner, attribute)  # the class's method again


def _split(
    steps: int, seconds: float, simulator: float, policy: float, reset_share: float, device: str
) -> dict[str, float | None]:
    """Where a collection step's time went: Isaac Lab's ``env.step``, the policy, the rest (TorchRL).

    On a CPU the host's time is the work's; on a GPU the calls return before their kernels finish,
    so the split is not recorded there.
    """
    per_step = {"steps_with_reset": reset_share}
    if device != "cpu":
        return {**per_step, "simulator_ms": None, "policy_ms": None, "rest_ms": None}
    return {
        **per_step,
        "simulator_ms": simulator / steps * 1e3,
        "policy_ms": policy / steps * 1e3,
        "rest_ms": (seconds - simulator - policy) / steps * 1e3,
    }


def collect_worker(task: str, num_envs: int, device: str, batches: int, burn_in: int) -> list[dict[str, Any]]:
    """Collection rates on one env: bare Isaac Lab stepping, then the Collector with each policy."""
    from hydra.utils import instantiate
    from torchrl.collectors import Collector

    from diffrl.envs import training_env
    from diffrl.envs.isaaclab import make_isaaclab_env
    from diffrl.numerics import NumericsMonitor
    from diffrl.training.compilation import compile_networks
    from diffrl.training.experiment import actor_dimensions

    env = make_isaaclab_env(task, num_envs, device=device, seed=0, assets="offline")
    records = []
    try:
        steps_per_env = recipe_config("ppo", task, num_envs, device).collector.steps_per_env
        frames_per_batch = num_envs * steps_per_env
        gym_env = env.base_env.env
        action_shape = env.action_spec.shape
        steps = batches * steps_per_env
        gym_env.reset()
        steps_with_reset = 0
        for step in range(burn_in * steps_per_env + steps):
            if step == burn_in * steps_per_env:
                start, steps_with_reset = time.perf_counter(), 0
            _, _, terminated, truncated, _ = gym_env.step(torch.randn(action_shape, device=device))
            steps_with_reset += int((terminated | truncated).any())
        seconds = time.perf_counter() - start
        records.append(
            {
                "name": "isaaclab_step",
                **_rate(steps * num_envs, seconds),
                **_split(steps, seconds, seconds, 0.0, steps_with_reset / steps, device),
            }
        )

        obs_dim = env.observation_spec["observation"].shape[-1]
        action_dim = action_shape[-1]
        training = training_env(env, normalize_observations=False)
        policies: dict[str, Any] = {"random": None}
        for algorithm, name, compiled in (
            ("ppo", "gaussian", False),
            ("genpo", "genpo", False),
            ("genpo", "genpo_compiled", True),
        ):
            actor_cfg = recipe_config(algorithm, task, num_envs, device).algorithm.actor
            policies[name] = instantiate(actor_cfg, **actor_dimensions(actor_cfg, obs_dim, action_dim)).to(device)
            if compiled:
                compile_networks(policies[name])
            if hasattr(policies[name], "numerics"):  # as in the trainer, which checks whole rollouts instead
                policies[name].numerics = NumericsMonitor("off")
        cases = [(name, policy, training) for name, policy in policies.items()]
        # The Gaussian again, after it, with the running observation normalizer (GenPO's default): its cost per step.
        normalized = ("gaussian_normalized", policies["gaussian"], training_env(env, normalize_observations=True))
        cases.insert(list(policies).index("gaussian") + 1, normalized)
        for name, policy, collected_env in cases:
            collector = Collector(  # as OnPolicyTrainer builds it, on its training env
                collected_env,
                policy,
                frames_per_batch=frames_per_batch,
                total_frames=-1,
                auto_register_policy_transforms=False,
                track_traj_ids=False,
            )
            try:
                iterator = iter(collector)
                for _ in range(burn_in):
                    next(iterator)
                with summed_call_time(gym_env, "step") as simulator, summed_call_time(policy, "forward") as acting:
                    start, ended = time.perf_counter(), []
                    for _ in range(batches):
                        ended.append(next(iterator)["next", "done"].any(0).flatten())  # [steps]: some env ended
                    seconds = time.perf_counter() - start
                reset_share = torch.cat(ended).float().mean().item()
                records.append(
                    {
                        "name": name,
                        **_rate(batches * frames_per_batch, seconds),
                        **_split(steps, seconds, simulator[0], acting[0], reset_share, device),
                    }
                )
            finally:
                collector.shutdown(close_env=False)
    finally:
        env.close()
    return [{"measurement": "collection", "task": task, "num_envs": num_envs, **record} for record in records]


def train_worker(
    algorithm: str,
    task: str,
    num_envs: int,
    device: str,
    iterations: int,
    burn_in: int,
    extra: Sequence[str] = (),
    variant_name: str = "",
) -> dict:
    """diffrl's recipe for ``iterations`` iterations; the rate over the iterations after ``burn_in``."""
    from diffrl.training.experiment import run_experiment

    cfg = recipe_config(algorithm, task, num_envs, device, iterations=iterations, extra=extra)
    with tempfile.TemporaryDirectory() as run_dir:
        history = run_experiment(cfg, run_dir).history[burn_in:]
    frames = num_envs * cfg.collector.steps_per_env * len(history)
    collection = sum(metrics["collection_time"] for metrics in history)
    update = sum(metrics["update_time"] for metrics in history)
    return {
        "measurement": "training",
        "task": task,
        "num_envs": num_envs,
        "name": f"diffrl_{algorithm}" + (f"_{variant_name}" if variant_name else ""),
        **_rate(frames, collection + update),
        "collection_s_per_iteration": collection / len(history),
        "update_s_per_iteration": update / len(history),
    }


# -- the parent: workers and rsl_rl in subprocesses ------------------------------------------------


def parse_variant(variant: str) -> tuple[str, str, list[str]]:
    """``[ALGORITHM/]NAME:OVERRIDE[,OVERRIDE...]`` as (algorithm, name, worker arguments); GenPO by default."""
    label, colon, overrides = variant.partition(":")
    algorithm, _, name = label.rpartition("/")
    if not colon or not name or algorithm not in ("", "ppo", "genpo"):
        raise ValueError(f"--variant {variant!r}: expected [ppo/|genpo/]NAME:OVERRIDES, e.g. ppo/compiled:compile=true")
    return algorithm or "genpo", name, [f"--override={override}" for override in overrides.split(",")]


def training_cases(variants: Sequence[str]) -> list[tuple[str, str, list[str]]]:
    """(algorithm, variant name, worker arguments) of each diffrl training run: PPO, GenPO, then the variants."""
    return [("ppo", "", []), ("genpo", "", []), *(parse_variant(variant) for variant in variants)]


def attempt(measure: Callable[[], Any], label: str) -> list[dict[str, Any]]:
    """A measurement's records, or none (reported) if it failed: one failure must not lose the others."""
    try:
        result = measure()
    except (RuntimeError, subprocess.TimeoutExpired) as error:
        print(f"FAILED: {label}: {error}", file=sys.stderr, flush=True)
        return []
    print(f"measured: {label}", flush=True)
    return result if isinstance(result, list) else [result]


def run_worker(arguments: list[str], timeout: float, environment: dict[str, str] | None = None) -> Any:
    with tempfile.TemporaryDirectory() as tmp:
        output = Path(tmp) / "records.json"
        command = [sys.executable, __file__, "--worker-output", str(output), *arguments]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=REPO, env=environment)
        if result.returncode != 0:
            raise RuntimeError(f"worker {' '.join(arguments)} failed:\n{result.stderr[-3000:]}")
        return json.loads(output.read_text())


def isaaclab_cli_training(
    library: str, task: str, num_envs: int, device: str, iterations: int, burn_in: int, timeout: float
) -> dict:
    """PPO of Isaac Lab's own runner for ``library`` (``rsl_rl`` or ``torchrl``) via ``isaaclab train``.

    On diffrl's offline assets; the rate is from the runner's per-iteration collection and
    learning times (rsl_rl prints them; Isaac Lab's TorchRL runner writes them to TensorBoard).
    """
    from diffrl.envs.offline_assets import build_offline_assets

    environment = {**os.environ, "ISAACSIM_ASSET_ROOT": str(build_offline_assets())}
    environment.setdefault("WARP_CACHE_PATH", str(Path("~/.cache/diffrl/warp").expanduser()))
    command = [str(ISAACLAB_CLI), "train", "--rl_library", library, "--task", task, "--num_envs", str(num_envs)]
    command += ["--device", device, "--viz", "none", f"agent.device={device}", f"agent.max_iterations={iterations}"]
    with tempfile.TemporaryDirectory() as tmp:  # the runners write their logs under the working directory
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=tmp, env=environment)
        if library == "rsl_rl":
            timings = [(float(c), float(u)) for c, u in RSL_RL_ITERATION.findall(result.stdout)]
        else:
            timings = _tensorboard_timings(Path(tmp))
    if result.returncode != 0 or len(timings) <= burn_in:
        raise RuntimeError(f"{library} run failed ({result.returncode}):\n{(result.stdout + result.stderr)[-3000:]}")
    timings = timings[burn_in:]
    steps_per_env = recipe_config("ppo", task, num_envs, device).collector.steps_per_env
    collection = sum(c for c, _ in timings)
    update = sum(u for _, u in timings)
    return {
        "measurement": "training",
        "task": task,
        "num_envs": num_envs,
        "name": f"{library}_ppo" if library == "rsl_rl" else "isaaclab_torchrl_ppo",
        **_rate(num_envs * steps_per_env * len(timings), collection + update),
        "collection_s_per_iteration": collection / len(timings),
        "update_s_per_iteration": update / len(timings),
        "collection_seconds": collection,
    }


def _tensorboard_timings(log_root: Path) -> list[tuple[float, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = sorted(log_root.rglob("events.out.tfevents.*"))
    if not events:
        return []
    accumulator = EventAccumulator(str(events[-1]))
    accumulator.Reload()
    collection = [event.value for event in accumulator.Scalars("Perf/collection_time")]
    learning = [event.value for event in accumulator.Scalars("Perf/learning_time")]
    return list(zip(collection, learning, strict=True))


# The thread settings compared on a shared CPU: the recipes' default and torch's own.
THREAD_POLICIES: dict[str, tuple[list[str], str]] = {
    "torch_threads=1, OMP passive (default)": (["torch_threads=1"], "PASSIVE"),
    "torch's threads, OMP active (before)": (["torch_threads=null"], "ACTIVE"),
}


@contextlib.contextmanager
def busy_core(busy: bool):
    """A process that keeps one core busy (pure Python, no threads) for the duration, if ``busy``."""
    if not busy:
        yield
        return
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        spinner.kill()
        spinner.wait()


def shared_cpu(args: argparse.Namespace, common: list[str]) -> list[dict[str, Any]]:
    """The main job's frames/s alone and beside a busy core, per thread policy, in turns."""
    samples: dict[tuple[str, bool], list[float]] = {}
    for repeat in range(args.repeats):
        for policy, (overrides, wait_policy) in THREAD_POLICIES.items():
            for busy in (False, True):
                arguments = ["--worker", "train", "--algorithm", "genpo", "--tasks", "Isaac-Cartpole"]
                arguments += ["--num-envs", str(args.train_envs), "--iterations", str(args.iterations or 8)]
                arguments += [f"--override={override}" for override in overrides]
                environment = {**os.environ, "OMP_WAIT_POLICY": wait_policy}
                environment.pop("OMP_NUM_THREADS", None)
                with busy_core(busy):
                    records = attempt(
                        lambda a=arguments, e=environment: run_worker([*a, *common], args.timeout, e),
                        f"shared CPU, {policy}, {'busy core' if busy else 'alone'}, repeat {repeat + 1}",
                    )
                samples.setdefault((policy, busy), []).extend(r["frames_per_s"] for r in records)
    records = []
    for policy in THREAD_POLICIES:
        alone, busy = samples[(policy, False)], samples[(policy, True)]
        if not alone or not busy:
            continue
        records.append(
            {
                "measurement": "shared_cpu",
                "name": policy,
                "alone_frames_per_s": statistics.median(alone),
                "busy_frames_per_s": statistics.median(busy),
                "ratio": statistics.median(busy) / statistics.median(alone),
                "alone_samples": alone,
                "busy_samples": busy,
            }
        )
    return records


def shared_cpu_table(records: Sequence[dict[str, Any]]) -> str:
    rows = [
        (r["name"], f"{r['alone_frames_per_s']:.0f}", f"{r['busy_frames_per_s']:.0f}", f"{r['ratio']:.2f}")
        for r in records
    ]
    return format_table(rows, ("threads", "alone frames/s", "beside a busy core", "busy / alone"))


def collection_table(records: Sequence[dict[str, Any]]) -> str:
    """Rates against ``isaaclab_step``, and each step split into Isaac Lab's ``env.step``, the policy and the rest.

    ``× its env.step`` is the share of the collection's time inside Isaac Lab's ``env.step`` on the
    same steps: the same actions and the same resets, which a policy changes (random actions end
    episodes at other steps than an actor's, and Isaac Lab's reset costs a CPU step more).
    """

    def milliseconds(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2f}"

    rows = []
    for r in records:
        simulator, policy, rest = (r.get(key) for key in ("simulator_ms", "policy_ms", "rest_ms"))
        own = None if simulator is None else simulator / (simulator + policy + rest)
        rows.append(
            (
                r["task"],
                r["num_envs"],
                r["name"],
                f"{r['frames_per_s']:.0f}",
                ratio_cell(r),
                milliseconds(own),
                milliseconds(simulator),
                milliseconds(policy),
                milliseconds(rest),
                milliseconds(r.get("steps_with_reset")),
            )
        )
    header = ("task", "envs", "policy", "frames/s", "× isaaclab_step", "× its env.step", "env.step ms")
    return format_table(rows, (*header, "policy ms", "rest ms", "steps with a reset"))


def training_table(records: Sequence[dict[str, Any]]) -> str:
    rows = []
    for r in records:
        rows.append(
            (
                r["task"],
                r["num_envs"],
                r["name"],
                f"{r['frames_per_s']:.0f}",
                ratio_cell(r),
                f"{r['collection_s_per_iteration']:.3f}",
                f"{r['update_s_per_iteration']:.3f}",
            )
        )
    return format_table(rows, ("task", "envs", "trainer", "frames/s", "× rsl_rl", "collect s/iter", "update s/iter"))


def measure_round(
    args: argparse.Namespace,
    tasks: Sequence[str],
    num_envs: Sequence[int],
    batches: int,
    iterations: int,
    common: list[str],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One measurement of every collection and training case."""
    collection: list[dict[str, Any]] = []
    training: list[dict[str, Any]] = []
    for task in tasks:
        for envs in num_envs:
            arguments = ["--worker", "collect", "--tasks", task, "--num-envs", str(envs), "--batches", str(batches)]
            collection += attempt(
                lambda arguments=arguments: run_worker([*arguments, *common], args.timeout),
                f"collection, {task}, {envs} envs",
            )
        if args.skip_training:
            continue
        for algorithm, variant, extra in training_cases(args.variant):
            arguments = ["--worker", "train", "--algorithm", algorithm, "--tasks", task, *extra]
            arguments += ["--num-envs", str(args.train_envs), "--iterations", str(iterations)]
            arguments += [f"--variant-name={variant}"] if variant else []
            training += attempt(
                lambda arguments=arguments: run_worker([*arguments, *common], args.timeout),
                f"training, diffrl {algorithm} {variant}, {task}",
            )
        # Isaac Lab ships a TorchRL runner configuration for Cartpole only.
        libraries = ("rsl_rl", "torchrl") if task == "Isaac-Cartpole" else ("rsl_rl",)
        for library in libraries:
            training += attempt(
                lambda task=task, library=library: isaaclab_cli_training(
                    library, task, args.train_envs, args.device, iterations, args.burn_in, args.timeout
                ),
                f"training, Isaac Lab {library} ppo, {task}",
            )
        if args.train_envs in num_envs:  # beside the collection cases: same task, env count and round
            for r in training:
                if r["name"] == "rsl_rl_ppo" and r["task"] == task:
                    collection.append(
                        {
                            "measurement": "collection",
                            "task": task,
                            "num_envs": r["num_envs"],
                            "name": "rsl_rl_ppo_rollout",
                            **_rate(r["frames"], r["collection_seconds"]),
                        }
                    )
    return collection, training


def add_round_ratios(records: Sequence[dict[str, Any]], reference: str) -> None:
    """Set each record's ``ratio``: its rate over the ``reference`` case's in the same round, task and env count.

    The issue's targets are these side-by-side ratios; a case without its reference in that round gets none.
    """
    rates = {(r["task"], r["num_envs"], r.get("repeat")): r["frames_per_s"] for r in records if r["name"] == reference}
    for record in records:
        reference_rate = rates.get((record["task"], record["num_envs"], record.get("repeat")))
        if reference_rate:
            record["ratio"] = record["frames_per_s"] / reference_rate


def median_records(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per case (measurement, task, envs, name): the median rate and the median of the rounds'
    ratios (not the ratio of the medians) over repeats, samples kept."""
    cases: dict[tuple, list[dict[str, Any]]] = {}
    for record in records:
        cases.setdefault((record["measurement"], record["task"], record["num_envs"], record["name"]), []).append(record)
    merged = []
    for group in cases.values():
        rates = [record["frames_per_s"] for record in group]
        middle = sorted(group, key=lambda record: record["frames_per_s"])[len(group) // 2]
        median = {**middle, "frames_per_s": statistics.median(rates), "frames_per_s_samples": rates}
        ratios = [record["ratio"] for record in group if "ratio" in record]
        if ratios:
            median.update(ratio=statistics.median(ratios), ratio_samples=ratios)
        merged.append(median)
    return merged


def ratio_cell(record: dict[str, Any]) -> str:
    """The record's ratio (:func:`add_round_ratios`), with each round's after the median when there were several."""
    if "ratio" not in record:
        return "n/a"
    samples = record.get("ratio_samples", [])
    rounds = f" ({', '.join(f'{sample:.2f}' for sample in samples)})" if len(samples) > 1 else ""
    return f"{record['ratio']:.2f}{rounds}"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="Isaac-Cartpole at 256 envs, fewer iterations")
    parser.add_argument("--json", metavar="PATH", help="write the records as JSON")
    parser.add_argument("--tasks", nargs="+", choices=["Isaac-Cartpole", "Isaac-Ant"], help="default: both")
    parser.add_argument("--num-envs", type=int, nargs="+", help="collection env counts (default 64 256)")
    parser.add_argument("--train-envs", type=int, default=256, help="env count of the training comparison")
    parser.add_argument("--batches", type=int, help="timed collector batches per policy (default 8, --quick 3)")
    parser.add_argument("--iterations", type=int, help="training iterations incl. burn-in (default 10, --quick 6)")
    parser.add_argument("--burn-in", type=int, default=2, help="excluded first batches / iterations")
    parser.add_argument("--skip-training", action="store_true", help="collection rates only")
    parser.add_argument("--device", default="cpu", help="simulation and policy device")
    parser.add_argument("--threads", type=int, help="torch/OpenMP threads for every run (default: torch's choice)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds allowed per worker process")
    parser.add_argument("--shared-cpu", action="store_true", help="the main job alone and beside a busy core")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="[ALGORITHM/]NAME:OVERRIDES",
        help="also diffrl GenPO (ppo/...: PPO) with these comma-separated Hydra overrides, as diffrl_<algorithm>_NAME",
    )
    parser.add_argument("--variant-name", default="", help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=1, help="rounds of all cases, in turns (medians reported)")
    parser.add_argument("--override", action="append", default=[], help=argparse.SUPPRESS)
    parser.add_argument("--worker", choices=["collect", "train"], help=argparse.SUPPRESS)
    parser.add_argument("--algorithm", choices=["ppo", "genpo"], help=argparse.SUPPRESS)
    parser.add_argument("--worker-output", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for variant in args.variant:
        try:
            parse_variant(variant)
        except ValueError as error:
            parser.error(str(error))
    return args


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    set_threads(args.threads)
    tasks = args.tasks or (["Isaac-Cartpole"] if args.quick else ["Isaac-Cartpole", "Isaac-Ant"])
    num_envs = args.num_envs or ([256] if args.quick else [64, 256])
    batches = args.batches or (3 if args.quick else 8)
    iterations = args.iterations or (6 if args.quick else 10)
    if args.worker is not None:
        task, envs = tasks[0], num_envs[0]
        if args.worker == "collect":
            result: Any = collect_worker(task, envs, args.device, batches, args.burn_in)
        else:
            result = train_worker(
                args.algorithm, task, envs, args.device, iterations, args.burn_in, args.override, args.variant_name
            )
        Path(args.worker_output).write_text(json.dumps(result))
        return result if isinstance(result, list) else [result]

    machine = machine_description(torch.device(args.device))
    print(format_machine(machine), flush=True)
    common = ["--device", args.device, "--burn-in", str(args.burn_in)]
    common += ["--threads", str(args.threads)] if args.threads is not None else []
    if args.shared_cpu:
        records = shared_cpu(args, common)
        for record in records:
            record["device"] = args.device
        print(shared_cpu_table(records))
        if args.json:
            write_json(args.json, machine, records)
        return records
    collection: list[dict[str, Any]] = []
    training: list[dict[str, Any]] = []
    for repeat in range(args.repeats):  # every case once per repeat, in turns: load changes hit all alike
        round_collection, round_training = measure_round(args, tasks, num_envs, batches, iterations, common)
        for record in round_collection + round_training:
            record["repeat"] = repeat
        add_round_ratios(round_collection, "isaaclab_step")
        add_round_ratios(round_training, "rsl_rl_ppo")
        collection += round_collection
        training += round_training
        if args.repeats > 1:  # each round's own figures, which the medians below do not keep
            for name, records, table in (
                ("collection", round_collection, collection_table),
                ("training", round_training, training_table),
            ):
                if records:
                    print(f"{name}, round {repeat + 1} of {args.repeats}:", flush=True)
                    print(table(records), flush=True)
    collection, training = median_records(collection), median_records(training)
    if collection:
        print(collection_table(collection))
    if training:
        print(training_table(training))
    records = collection + training
    for record in records:
        record["device"] = args.device
    if args.json:
        write_json(args.json, machine, records)
    return records


if __name__ == "__main__":
    main()
