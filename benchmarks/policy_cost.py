"""What a policy costs beyond its network evaluations: sampling, log-likelihood, loss + backward.

For the Gaussian actor, GenPO (N flow steps) and, when its module is importable, TruDi (K
denoising steps), at several batch sizes, on one device. Every operation is reported as a ratio to
ONE pass of the policy's underlying network at the same batch size (Gaussian: the mean MLP;
GenPO: one ``VelocityNet.velocity_in_context`` call with the observation and time features precomputed, as the flow
makes it; TruDi: one ``VelocityNet.velocity`` call with the observation features precomputed),
next to the number of network passes the method needs, so that any overhead beyond the network
evaluations shows as ratio / passes > 1:

- ``linear_layers``: the pass's matrix products alone, its ``nn.Linear`` layers applied in turn
  to inputs of their sizes with no activation: the floor under a pass on this device, so that
  ``ratio`` < 1 is the share of a pass that is matrix products, and 2N of them bound GenPO's
  sampling from below however well the rest is fused.
- ``sample``: the actor's forward (no gradient), as during collection. GenPO: 2N passes; TruDi: K.
- ``log_prob``: ``actor.get_dist(td).log_prob(stored sample)`` (no gradient). GenPO: 2N passes (one
  inversion undoes both couplings of every step); TruDi: K passes' worth of rows in one batched call.
- ``loss_backward``: the policy loss (critic left out, so the network count stays exact) and its
  backward pass. GenPO: 4N forward passes (one inversion, one fresh reparameterized sample for
  the compression term); Gaussian: 1. A backward pass costs about two forward passes, so
  ratio / passes ≈ 3 is the network limit here. TruDi's loss is not measured.

``--modes`` also times ``sample`` and ``log_prob`` through ``torch.compile`` (``compile``) and
``sample`` through a captured CUDA graph (tensordict's ``CudaGraphModule``, ``cudagraphs``, CUDA
only); ``network`` and ``linear_layers`` stay eager in every mode, so the ratios compare against one unit.

Medians over repeats, warm-up excluded; the cases of one (policy, batch) are timed in turns so
that their ratios hold under a varying machine load. Examples::

    python benchmarks/policy_cost.py                      # 256 ... 16384, 7 repeats
    python benchmarks/policy_cost.py --quick --json cost.json
    python benchmarks/policy_cost.py --device cuda --modes eager compile cudagraphs
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from common import format_machine, format_table, machine_description, median_seconds, set_threads, write_json
from tensordict import TensorDict, TensorDictBase
from torch import nn
from torchrl.modules import MLP
from torchrl.objectives import ClipPPOLoss, LossModule

from diffrl.modules.gaussian_actor import GaussianActor
from diffrl.modules.genpo_actor import GenPOActor
from diffrl.modules.genpo_flow import GenPOFlow
from diffrl.objectives.genpo import GenPOLoss

logger = logging.getLogger("benchmarks.policy_cost")

FULL_SIZES = (256, 1024, 4096, 16384)
QUICK_SIZES = (256, 4096)
OPERATIONS = ("network", "linear_layers", "sample", "log_prob", "loss_backward")


@dataclass
class PolicyCase:
    """One policy's callables at one batch size and the network passes each operation needs."""

    network: Callable[[], object]
    linear_layers: Callable[[], object]
    actor: nn.Module
    sample_key: str
    passes: dict[str, int]
    loss: LossModule | None


def trudi_available() -> bool:
    return importlib.util.find_spec("diffrl.modules.trudi_actor") is not None


def _observations(batch: int, obs_dim: int, device: torch.device) -> TensorDict:
    return TensorDict({"observation": torch.randn(batch, obs_dim, device=device)}, batch_size=[batch], device=device)


def _linear_layers(layers: Sequence[nn.Linear], rows: int, device: torch.device) -> Callable[[], object]:
    """A network pass's matrix products alone: each layer applied to an input of its size, no activations."""
    inputs = [torch.randn(rows, layer.in_features, device=device) for layer in layers]
    return lambda: [layer(x) for layer, x in zip(layers, inputs, strict=True)]


def _linears(module: nn.Module) -> list[nn.Linear]:
    return [layer for layer in module.modules() if isinstance(layer, nn.Linear)]


def gaussian_case(obs: torch.Tensor, action_dim: int, hidden_sizes: Sequence[int], **_: Any) -> PolicyCase:
    actor = GaussianActor(action_dim, obs.shape[-1], hidden_sizes).to(obs.device)
    mean = next(module for module in actor.modules() if isinstance(module, MLP))
    loss = ClipPPOLoss(actor, None, critic_coeff=None, entropy_coeff=0.005)
    passes = {"sample": 1, "log_prob": 1, "loss_backward": 1}
    linear_layers = _linear_layers(_linears(mean), obs.shape[0], obs.device)
    return PolicyCase(lambda: mean(obs), linear_layers, actor, "action", passes, loss)


def genpo_case(obs: torch.Tensor, action_dim: int, hidden_sizes: Sequence[int], num_steps: int) -> PolicyCase:
    flow = GenPOFlow(action_dim, obs.shape[-1], num_steps=num_steps, hidden_sizes=hidden_sizes).to(obs.device)
    net = flow.velocity_net
    # The pass the flow makes: the observation and time features are computed once per call.
    context = net.encode_observation(obs) + net.encode_time(flow.time_grid[1 % num_steps])
    half = torch.randn(*obs.shape[:-1], action_dim, device=obs.device)
    actor = GenPOActor(flow)
    # Both the forward map and its inverse evaluate the net twice per step (one coupling per half).
    passes = {"sample": 2 * num_steps, "log_prob": 2 * num_steps, "loss_backward": 4 * num_steps}
    loss = GenPOLoss(actor, None)
    linear_layers = _linear_layers([net.half_in, *_linears(net.trunk)], obs.shape[0], obs.device)

    def network() -> torch.Tensor:
        return net.velocity_in_context(half, context)

    return PolicyCase(network, linear_layers, actor, "latent_action", passes, loss)


def trudi_case(obs: torch.Tensor, action_dim: int, hidden_sizes: Sequence[int], num_steps: int) -> PolicyCase:
    from diffrl.modules.denoising_chain import DenoisingChain
    from diffrl.modules.trudi_actor import TruDiActor

    actor = TruDiActor(DenoisingChain(action_dim, obs.shape[-1], num_steps=num_steps, hidden_sizes=hidden_sizes)).to(
        obs.device
    )
    net = actor.chain.net
    features = net.encode_observation(obs)
    x = torch.randn(*obs.shape[:-1], action_dim, device=obs.device)
    t = torch.tensor(0.5, device=obs.device)
    passes = {"sample": num_steps, "log_prob": num_steps}
    # The time embedding runs on the one scalar t, not on the batch: only the batch's layers count.
    linear_layers = _linear_layers([net.half_in, *_linears(net.trunk)], obs.shape[0], obs.device)
    return PolicyCase(lambda: net.velocity(x, features, t), linear_layers, actor, "denoising_chain", passes, None)


BUILDERS: dict[str, Callable[..., PolicyCase]] = {
    "gaussian": gaussian_case,
    "genpo": genpo_case,
    "trudi_ppo": trudi_case,
}


def _loss_step(loss: LossModule, batch: TensorDictBase) -> None:
    loss.zero_grad(set_to_none=True)
    out = loss(batch)
    sum(value for key, value in out.items() if key.startswith("loss_")).backward()


def measure(
    policy: str,
    batch: int,
    *,
    obs_dim: int,
    action_dim: int,
    hidden_sizes: Sequence[int],
    num_steps: int,
    device: torch.device,
    repeats: int,
    seed: int = 0,
    mode: str = "eager",
) -> list[dict[str, Any]]:
    """The records of one policy at one batch size: the network pass and every operation."""
    torch.manual_seed(seed)
    td = _observations(batch, obs_dim, device)
    case = BUILDERS[policy](td["observation"], action_dim=action_dim, hidden_sizes=hidden_sizes, num_steps=num_steps)
    with torch.no_grad():
        stored = case.actor(td.clone())
    stored["advantage"] = torch.randn(batch, 1, device=device)

    def no_grad(call: Callable[[], object]) -> Callable[[], object]:
        def wrapped() -> object:
            with torch.no_grad():
                return call()

        return wrapped

    def log_prob(data: TensorDictBase) -> torch.Tensor:
        return case.actor.get_dist(data).log_prob(data[case.sample_key])

    sampler: Callable[[TensorDictBase], object] = case.actor
    if mode == "compile":
        sampler, log_prob = torch.compile(case.actor), torch.compile(log_prob)
    elif mode == "cudagraphs":
        if device.type != "cuda":
            raise ValueError("--modes cudagraphs needs a CUDA device")
        from tensordict.nn import CudaGraphModule

        sampler = CudaGraphModule(case.actor, warmup=3)
    calls: dict[str, Callable[[], object]] = {
        "network": no_grad(case.network),
        "linear_layers": no_grad(case.linear_layers),
        "sample": no_grad(lambda: sampler(td.clone())),
        "log_prob": no_grad(lambda: log_prob(stored)),
    }
    if case.loss is not None and mode == "eager":
        calls["loss_backward"] = lambda: _loss_step(case.loss, stored)
    seconds = median_seconds(calls, device, repeats=repeats)
    passes = {"network": 1, "linear_layers": 1, **case.passes}
    return [
        {
            "policy": policy,
            "batch": batch,
            "operation": operation,
            "median_s": seconds[operation],
            "ratio": seconds[operation] / seconds["network"],
            "passes": passes[operation],
            "device": str(device),
            "mode": mode,
        }
        for operation in OPERATIONS
        if operation in seconds
    ]


def table(records: Sequence[dict[str, Any]]) -> str:
    rows = [
        (
            record["policy"],
            record["mode"],
            record["batch"],
            record["operation"],
            f"{record['median_s'] * 1e3:.3f}",
            f"{record['ratio']:.2f}",
            record["passes"],
            f"{record['ratio'] / record['passes']:.2f}",
        )
        for record in records
    ]
    return format_table(
        rows, ("policy", "mode", "batch", "operation", "median ms", "× 1 pass", "passes", "ratio/passes")
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"batch sizes {QUICK_SIZES}, 3 repeats (about a minute)")
    parser.add_argument("--json", metavar="PATH", help="write the records as JSON")
    parser.add_argument("--sizes", type=int, nargs="+", help=f"batch sizes (default {FULL_SIZES})")
    parser.add_argument("--repeats", type=int, help="timed repeats per case (default 7, --quick 3)")
    parser.add_argument(
        "--policies",
        nargs="+",
        choices=sorted(BUILDERS),
        help="default: gaussian, genpo and trudi_ppo (the denoising chain) when diffrl.modules.trudi_actor imports",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--obs-dim", type=int, default=60, help="observation size o (Isaac-Ant: 60)")
    parser.add_argument("--action-dim", type=int, default=8, help="action dimension d (Isaac-Ant: 8)")
    parser.add_argument(
        "--hidden-sizes", type=int, nargs="+", default=[400, 200, 100], help="network widths (GenPO/rsl_rl Ant)"
    )
    parser.add_argument("--num-steps", type=int, default=5, help="GenPO's N and TruDi's K")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument(
        "--modes", nargs="+", default=["eager"], choices=["eager", "compile", "cudagraphs"], help="default: eager"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    sizes = args.sizes or (QUICK_SIZES if args.quick else FULL_SIZES)
    repeats = args.repeats or (3 if args.quick else 7)
    policies = args.policies or ["gaussian", "genpo", *(["trudi_ppo"] if trudi_available() else [])]
    set_threads(args.threads)
    device = torch.device(args.device)
    machine = machine_description(device)
    print(format_machine(machine))
    records: list[dict[str, Any]] = []
    for mode in args.modes:
        for policy, batch in ((policy, batch) for policy in policies for batch in sizes):
            records += measure(
                policy,
                batch,
                obs_dim=args.obs_dim,
                action_dim=args.action_dim,
                hidden_sizes=args.hidden_sizes,
                num_steps=args.num_steps,
                device=device,
                repeats=repeats,
                mode=mode,
            )
    print(table(records))
    if args.json:
        write_json(args.json, machine, records)
    return records


if __name__ == "__main__":
    main()
