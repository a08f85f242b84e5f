"""What each method can represent: one-step tasks with several optimal actions, and whether a trained policy keeps them.

Every diffrl method is built from its recipe's config (actor, critic, loss and update rule, as
``recipes/<method>_isaaclab.py`` builds them, with small networks) and trained by its own update rule
on a one-step task: a constant observation, B actions per iteration, reward r(a), every episode done
after one step. The tasks (``TASKS``) put equal reward peaks on several actions under a quadratic
action cost, r(a) = max_c exp(−‖a − c‖²/(2w²)) − ½‖a‖² (bimodal in 1-D and 2-D), or on a ring,
r(a) = exp(−(‖a‖ − ρ)²/(2w²)) − ½‖a‖²; the cost makes exp(r/α) normalizable.

Reported per (task, method, seed), from N fresh samples of the final policy:

- ``coverage``: the share of samples within ``radius`` of each optimum (ring: of each of 8 sectors of
  the ring's band), and ``modes_kept``, the number of optima holding at least 10 % of the samples. A
  broad unimodal policy also puts 10 % near each of two close optima: the table's "near an optimum"
  (the coverages' sum) tells breadth (low) from several sharp modes (high);
- ``mean_reward``: E_π[r];
- ``kl_to_boltzmann``: KL(π ‖ p*) to the Boltzmann policy p* ∝ exp(r/α) at the method's entropy
  weight α (when it is > 0), from samples: −Ĥ(π) − E_π[r]/α + log Z, with Ĥ the Kozachenko–Leonenko
  nearest-neighbour entropy (:func:`diffrl.objectives.estimators.knn_entropy`) and log Z by quadrature.
  p* maximizes E[r] + α·H, which is the objective of a method whose entropy term is the action's
  entropy and whose advantages are not rescaled (the benchmark turns the update's advantage
  normalization off so that α keeps its meaning);
- a figure of the sampled actions per task and method.

    python benchmarks/multimodal.py                                          # every method, 3 seeds
    python benchmarks/multimodal.py --methods ppo genpo --seeds 0
    python benchmarks/multimodal.py --variant ppo_ent01 ppo algorithm.loss.entropy_coeff=0.1
    python benchmarks/multimodal.py --quick --json out.json                   # the tests' smoke run
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import format_machine, format_table, machine_description, set_threads, write_json
from learning import RECIPES, Variant
from tensordict import TensorDict
from torchrl.envs.utils import ExplorationType, set_exploration_type

from diffrl.objectives.estimators import knn_entropy
from diffrl.training.experiment import actor_dimensions

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "recipes" / "config"
# Small networks for a one-step task. The PPO family's advantage normalization is turned off (in `build`) so
# that the entropy weight is the Boltzmann temperature.
COMMON_OVERRIDES = ("algorithm.hidden_sizes=[64,64]", "algorithm.critic_hidden_sizes=[64,64]")
METHODS = tuple(method for method in RECIPES)
DEFAULT_OUT = REPO / "benchmarks" / "out" / "multimodal"


@dataclasses.dataclass(frozen=True)
class Task:
    """A one-step task: its reward and where its optima lie."""

    name: str
    dim: int
    peaks: tuple[tuple[float, ...], ...]  # bump centres; empty for the ring
    ring_radius: float | None = None
    width: float = 0.15
    radius: float = 0.25  # a sample within this distance of an optimum counts for it

    def reward(self, action: torch.Tensor) -> torch.Tensor:
        """r(a) [*B] for actions [*B, d]."""
        cost = 0.5 * action.square().sum(-1)
        if self.ring_radius is not None:
            bump = torch.exp(-(action.norm(dim=-1) - self.ring_radius).square() / (2 * self.width**2))
            return bump - cost
        centres = torch.tensor(self.peaks, dtype=action.dtype, device=action.device)
        distances = (action.unsqueeze(-2) - centres).square().sum(-1)
        return torch.exp(-distances / (2 * self.width**2)).amax(-1) - cost

    def grid(self, points: int, half_width: float = 6.0) -> tuple[torch.Tensor, float]:
        """A quadrature grid over [−half_width, half_width]^d, [M, d], and its cell volume."""
        axis = torch.linspace(-half_width, half_width, points, dtype=torch.float64)
        mesh = torch.stack(torch.meshgrid(*[axis] * self.dim, indexing="ij"), -1).reshape(-1, self.dim)
        return mesh, float((axis[1] - axis[0]) ** self.dim)

    def optima(self) -> torch.Tensor:
        """The optimal actions [K, d]: the reward's maximum near each bump (the cost shifts it inward) to
        ~1e-6, or, for the ring, 8 points on its maximizing circle (one per sector)."""
        if self.ring_radius is not None:
            radius = self._maximize(torch.tensor([[self.ring_radius, 0.0]], dtype=torch.float64), 0.2)[0, 0]
            angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
            return radius * torch.stack([angles.cos(), angles.sin()], -1)
        return self._maximize(torch.tensor(self.peaks, dtype=torch.float64), 0.2)

    def _maximize(self, starts: torch.Tensor, span: float) -> torch.Tensor:
        """Each start refined to the reward's maximum within ±span by shrinking local grids (the reward is
        smooth and unimodal there), [K, d] → [K, d]."""
        offsets, _ = self.grid(41 if self.dim == 1 else 21, half_width=1.0)
        points = starts.clone()
        for _ in range(12):
            for k in range(len(points)):
                candidates = points[k] + span * offsets
                points[k] = candidates[self.reward(candidates).argmax()]
            span /= 4
        return points

    def log_partition(self, alpha: float) -> float:
        """log ∫ exp(r(a)/α) da by the rectangle rule on [−6, 6]^d (spectrally accurate for this smooth,
        fast-decaying integrand); an α whose integrand is not negligible at the edge is an error."""
        mesh, volume = self.grid(12001 if self.dim == 1 else 1201)
        log_integrand = self.reward(mesh) / alpha
        edge = (mesh.abs() == mesh.abs().max()).any(-1)
        if float(log_integrand[edge].max() - log_integrand.max()) > -30:  # e^-30 ≈ 1e-13
            raise ValueError(f"alpha={alpha}: exp(r/alpha) is not negligible at the quadrature grid's edge")
        return float(torch.logsumexp(log_integrand, 0)) + math.log(volume)

    def coverage(self, actions: torch.Tensor) -> list[float]:
        """The share of samples near each optimum (ring: in each sector of the band ρ ± radius)."""
        actions = actions.double()
        if self.ring_radius is not None:
            best = float(self.optima()[0].norm())
            in_band = (actions.norm(dim=-1) - best).abs() < self.radius
            sector = ((torch.atan2(actions[:, 1], actions[:, 0]) + math.pi / 8) % (2 * math.pi)) // (math.pi / 4)
            return [float((in_band & (sector == k)).double().mean()) for k in range(8)]
        distances = (actions.unsqueeze(-2) - self.optima()).norm(dim=-1)
        return [float((distances[:, k] < self.radius).double().mean()) for k in range(len(self.peaks))]


TASKS = {
    task.name: task
    for task in (
        Task("bimodal_1d", 1, ((-0.6,), (0.6,))),
        Task("bimodal_2d", 2, ((-0.6, -0.6), (0.6, 0.6))),
        Task("ring_2d", 2, (), ring_radius=0.8),
    )
}


def build(method: str, variant: Variant | None, dim: int) -> tuple[torch.nn.Module, Any, float]:
    """The method's actor and update rule as its recipe config builds them, and its entropy weight α
    (the PPO family's ``entropy_coeff``; the pathwise family tunes its own, read after training)."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from diffrl.training.recipe import register_configs

    algorithm = variant.algorithm if variant is not None else method
    recipe, selection = RECIPES[algorithm]
    register_configs()
    overrides = [*selection, *COMMON_OVERRIDES, *(variant.overrides if variant is not None else ())]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(recipe, overrides=overrides)
    if cfg.trainer._target_.endswith("PPOUpdate"):  # the pathwise family scales rewards instead
        cfg.trainer.normalize_advantage = False
    else:  # 512 one-step samples: the authors' 64 minibatches would be 8 samples each
        cfg.trainer.num_minibatches = 4
    actor = instantiate(
        cfg.algorithm.actor, observation_key="observation", **actor_dimensions(cfg.algorithm.actor, 1, dim)
    )
    critic_sizes = {"obs_dim": 1, **({"action_dim": dim} if "action_dim" in cfg.algorithm.critic else {})}
    critic = instantiate(cfg.algorithm.critic, observation_key="observation", **critic_sizes)
    loss = instantiate(cfg.algorithm.loss, actor_network=actor, critic_network=critic)
    update = instantiate(cfg.trainer, _partial_=True)(loss_module=loss)
    alpha = float(cfg.algorithm.loss.get("entropy_coeff", 0.0) or 0.0)
    return actor, update, alpha


def one_step_rollout(actor: torch.nn.Module, task: Task, batch: int) -> TensorDict:
    """B one-step episodes from the constant observation 0, as the collector lays them out: [B, 1]."""
    observation = torch.zeros(batch, 1, 1)
    rollout = TensorDict({"observation": observation}, batch_size=[batch, 1])
    with torch.no_grad():
        actor(rollout)
    reward = task.reward(rollout["action"]).unsqueeze(-1)
    done = torch.ones(batch, 1, 1, dtype=torch.bool)
    rollout["next"] = TensorDict(
        {"observation": observation, "reward": reward, "done": done, "terminated": done, "truncated": ~done},
        batch_size=[batch, 1],
    )
    return rollout


def final_samples(actor: torch.nn.Module, count: int) -> torch.Tensor:
    """``count`` actions of the trained policy, sampled in float64 (float32 ties would break the entropy estimate)."""
    actor = copy.deepcopy(actor).double()
    observation = torch.zeros(count, 1, dtype=torch.float64)
    with set_exploration_type(ExplorationType.RANDOM), torch.no_grad():
        return actor(TensorDict({"observation": observation}, batch_size=[count]))["action"]


def run_case(task: Task, method: str, variant: Variant | None, seed: int, iterations: int, batch: int) -> dict:
    torch.manual_seed(seed)
    actor, update, alpha = build(method, variant, task.dim)
    started = time.perf_counter()
    curve = []
    for _ in range(iterations):
        rollout = one_step_rollout(actor, task, batch)
        curve.append(float(rollout["next", "reward"].mean()))
        metrics = update.update(rollout)
        update.numerics.raise_if_failed()
    if "alpha" in metrics:  # the pathwise family's tuned α weighs rewards scaled by s: p* ∝ exp(s·r/α)
        alpha = float(metrics["alpha"]) / float(metrics["reward_scale"])
    actions = final_samples(actor, 4096)
    reward = task.reward(actions)
    coverage = task.coverage(actions)
    record = {
        "task": task.name,
        "method": method,
        "seed": seed,
        "iterations": iterations,
        "batch": batch,
        "alpha": alpha,
        "mean_reward": float(reward.mean()),
        "coverage": coverage,
        "modes_kept": sum(share >= 0.1 for share in coverage),
        "entropy_knn": float(knn_entropy(actions)),
        "kl_to_boltzmann": None,
        "reward_curve": curve,
        "seconds": time.perf_counter() - started,
        "samples": actions[:1024].tolist(),
    }
    if alpha > 0:
        record["kl_to_boltzmann"] = -record["entropy_knn"] - record["mean_reward"] / alpha + task.log_partition(alpha)
    return record


def plot(records: Sequence[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(record["task"] for record in records))
    methods = list(dict.fromkeys(record["method"] for record in records))
    figure, axes = plt.subplots(len(tasks), len(methods), figsize=(2.4 * len(methods), 2.4 * len(tasks)), squeeze=False)
    for row, task_name in enumerate(tasks):
        task = TASKS[task_name]
        optima = task.optima().numpy()
        for column, method in enumerate(methods):
            axis = axes[row][column]
            case = next((r for r in records if r["task"] == task_name and r["method"] == method), None)
            if case is None:
                axis.axis("off")
                continue
            samples = np.asarray(case["samples"])
            if task.dim == 1:
                axis.hist(samples[:, 0], bins=60, range=(-1.5, 1.5), color="tab:blue")
                for optimum in optima[:, 0]:
                    axis.axvline(optimum, color="tab:red", lw=0.8)
            else:
                axis.scatter(samples[:, 0], samples[:, 1], s=1, alpha=0.4)
                axis.scatter(optima[:, 0], optima[:, 1], marker="x", color="tab:red", s=20)
                axis.set_xlim(-1.5, 1.5), axis.set_ylim(-1.5, 1.5), axis.set_aspect("equal")
            axis.set_title(
                f"{method} (seed {case['seed']})\nmodes {case['modes_kept']}, r {case['mean_reward']:.2f}", fontsize=7
            )
            axis.tick_params(labelsize=6)
        axes[row][0].set_ylabel(task_name, fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def summary_rows(records: Sequence[dict]) -> list[list[object]]:
    rows = []
    groups: dict[tuple[str, str], list[dict]] = {}
    for record in records:
        groups.setdefault((record["task"], record["method"]), []).append(record)
    for (task, method), cases in groups.items():
        rewards = [case["mean_reward"] for case in cases]
        kept = [case["modes_kept"] for case in cases]
        near = [sum(case["coverage"]) for case in cases]
        coverage = np.mean([case["coverage"] for case in cases], axis=0)
        kls = [case["kl_to_boltzmann"] for case in cases if case["kl_to_boltzmann"] is not None]
        rows.append(
            [
                task,
                method,
                len(cases),
                f"{np.mean(rewards):.3f} ± {np.std(rewards):.3f}",
                " ".join(str(k) for k in kept),
                f"{np.mean(near):.2f}",
                " ".join(f"{share:.2f}" for share in coverage),
                f"{np.mean(kls):.2f} ± {np.std(kls):.2f} (α={cases[0]['alpha']:g})" if kls else "—",
            ]
        )
    return rows


HEADER = [
    "task",
    "method",
    "seeds",
    "E[r]",
    "modes kept per seed",
    "near an optimum",
    "coverage per optimum",
    "KL(π‖p*)",
]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="every method on bimodal_1d, 2 iterations, seed 0")
    parser.add_argument("--json", metavar="PATH", help="write one record per (task, method, seed) as JSON")
    parser.add_argument("--tasks", nargs="+", choices=sorted(TASKS), help="default: all")
    parser.add_argument("--methods", nargs="+", choices=METHODS, help="default: all")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--batch", type=int, default=512, help="one-step episodes per iteration")
    Variant.add_argument(parser)
    parser.add_argument("--plot", type=Path, help="the sampled-actions figure (default: <out>/multimodal.png)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--table-from", type=Path, metavar="JSON", help="run nothing: the table of a --json file")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.table_from is not None:
        print(format_table(summary_rows(json.loads(args.table_from.read_text())["records"]), HEADER))
        return 0
    set_threads(args.threads)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    variants = {variant.label: variant for variant in map(Variant.parse, args.variant)}
    methods = [*(args.methods or ([] if variants else METHODS)), *variants]
    tasks = [TASKS[name] for name in (args.tasks or TASKS)]
    seeds, iterations, batch = args.seeds, args.iterations, args.batch
    if args.quick:
        tasks, seeds, iterations, batch = [TASKS["bimodal_1d"]], [0], 2, 64
    records = []
    for task in tasks:
        for method in methods:
            for seed in seeds:
                record = run_case(task, method, variants.get(method), seed, iterations, batch)
                records.append(record)
                print(
                    f"{task.name} {method} seed {seed}: E[r] {record['mean_reward']:.3f}, "
                    f"modes {record['modes_kept']}, {record['seconds']:.0f} s",
                    flush=True,
                )
    machine = machine_description(torch.device("cpu"))
    print(format_machine(machine))
    print(format_table(summary_rows(records), HEADER))
    figure = plot(records, args.plot or args.out / "multimodal.png")
    print(f"figure: {figure}")
    if args.json:
        write_json(args.json, machine, [{k: v for k, v in r.items() if k != "samples"} for r in records])
    return 0


if __name__ == "__main__":
    sys.exit(main())
