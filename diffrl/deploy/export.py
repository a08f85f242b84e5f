"""Export a trained policy to ONNX and TorchScript: observation normalizer baked in, sampler unrolled.

The exported model is a pure function ``action = policy(observation, noise)``:

- ``observation`` float32 [B, o]: the raw observation the env gives (before normalization);
- ``noise`` float32 [B, n]: the sampler's standard normal noise, an explicit input so that the
  model holds no random generator. **Zeros give the deterministic action** of every actor
  (the action TorchRL's ``DETERMINISTIC`` exploration type gives); ``N(0, I)`` draws give the
  stochastic policy the run trained. TruDi's DIME actor is exported in its deterministic (ODE) mode,
  as its authors deploy it: its noise is the prior draw x_0/σ_p only, so ``N(0, I)`` gives the ODE
  mode the evaluation runs (the chain from a random start, its step noise off) and zeros the chain
  from x_0 = 0;
- ``action`` float32 [B, d]: what the env was given in training (no clipping, no scaling except
  the tanh squash of TruDi, REPPO and optionally TruDi-PPO).

Noise layout, with N GenPO's flow steps and K TruDi's denoising steps:

- GenPO: n = 2d, the base noise (x_0, y_0) of the doubled action; action = (x_N + y_N)/2;
- TruDi-PPO: n = (K+1)·d, row-major [K+1, d] in chain order: x_K (the prior draw), then the step
  noises ε of the K steps x_{k−1} = μ_θ(x_k, k, s) + σ_k ε;
- TruDi (DIME): n = d, x_0 = σ_p·noise, then the K SDE steps with their noise off; a = tanh(x_K);
- REPPO: n = d; action = tanh(μ_θ(s) + σ_θ(s) ⊙ noise);
- Gaussian PPO: n = d; action = μ_θ(s) + σ ⊙ noise.

The I/O contract is written as JSON next to the files (:func:`export_policy`); ``docs/deploy.md``
shows a robot-side loop with onnxruntime only.

Command line::

    python -m diffrl.deploy.export RUN_DIR_OR_CHECKPOINT --format onnx torchscript [--output DIR] [--no-mlflow]
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from diffrl.deploy.policy_loading import LoadedPolicy, load_policy
from diffrl.deploy.tracking import child_run
from diffrl.modules.generative_policy import ExportableActor
from diffrl.training.run_directory import RunDirectory
from diffrl.training.tracking import recorded_run

logger = logging.getLogger("diffrl.deploy")

ExportFormat = Literal["onnx", "torchscript"]
FORMATS: tuple[str, ...] = ("onnx", "torchscript")
FILE_NAMES = {"onnx": "policy.onnx", "torchscript": "policy.torchscript.pt"}
CONTRACT_FILE = "policy.json"
INPUT_NAMES = ("observation", "noise")
OUTPUT_NAME = "action"
CONTRACT_VERSION = 1


class DeployablePolicy(nn.Module):
    """``action = sampler((observation − loc) / scale, noise)``: the graph that is exported.

    Args:
        sampler: an actor's :meth:`export_sampler` (the actor contract of
            :mod:`diffrl.modules.generative_policy`).
        obs_dim, action_dim, noise_dim: o, d, n.
        obs_loc, obs_scale: the baked observation normalization [o] (``None``: identity).

    Example:
        >>> import torch
        >>> from diffrl.modules import GenPOActor, GenPOFlow
        >>> actor = GenPOActor(GenPOFlow(action_dim=2, obs_dim=3, hidden_sizes=[16]))
        >>> policy = deployable_policy(actor)
        >>> policy(torch.randn(5, 3), torch.zeros(5, policy.noise_dim)).shape
        torch.Size([5, 2])
    """

    def __init__(
        self,
        sampler: nn.Module,
        *,
        obs_dim: int,
        action_dim: int,
        noise_dim: int,
        obs_loc: torch.Tensor | None = None,
        obs_scale: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.sampler = sampler
        self.obs_dim, self.action_dim, self.noise_dim = obs_dim, action_dim, noise_dim
        self.register_buffer("obs_loc", torch.zeros(obs_dim) if obs_loc is None else obs_loc.detach().clone())
        self.register_buffer("obs_scale", torch.ones(obs_dim) if obs_scale is None else obs_scale.detach().clone())

    def forward(self, observation: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.sampler((observation - self.obs_loc) / self.obs_scale, noise)


def deployable_policy(
    actor: nn.Module, obs_loc: torch.Tensor | None = None, obs_scale: torch.Tensor | None = None
) -> DeployablePolicy:
    """The :class:`DeployablePolicy` of any actor that keeps the actor contract (a copy: the actor is not shared)."""
    if not isinstance(actor, ExportableActor):
        raise TypeError(
            f"cannot export a {type(actor).__name__}: an exportable actor has obs_dim, action_dim, noise_dim, "
            "export_sampler() and sampler_description() (GenPOActor, TruDiActor, DIMEActor, SquashedGaussianActor, "
            "GaussianActor)"
        )
    policy = DeployablePolicy(
        copy.deepcopy(actor.export_sampler()),
        obs_dim=actor.obs_dim,
        action_dim=actor.action_dim,
        noise_dim=actor.noise_dim,
        obs_loc=obs_loc,
        obs_scale=obs_scale,
    )
    return policy.eval().requires_grad_(False)


def normalization_affine(loaded: LoadedPolicy) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The run's observation normalization as ``(loc, scale)`` [o], with ``normalize(x) = (x − loc)/scale``.

    Read off the normalizer itself (so its safeguards are included) by probing it at two points,
    then again at loc and loc + scale, where the result is ≈ 0 and ≈ 1 and float32 round-off is smallest.
    """
    if loaded.observation_normalizer is None:
        return None
    loc, scale = torch.zeros(loaded.obs_dim), torch.ones(loaded.obs_dim)
    for _ in range(2):
        low, high = loc, loc + scale
        y_low, y_high = loaded.normalize(torch.stack([low, high])).unbind(0)
        scale = (high - low) / (y_high - y_low)
        loc = low - y_low * scale
    return loc, scale


@dataclass
class ExportResult:
    """What :func:`export_policy` wrote: the model files by format, the contract and its path."""

    files: dict[str, Path]
    contract: dict[str, Any]
    contract_path: Path
    mlflow_run_id: str | None = None


def _contract(loaded: LoadedPolicy, policy: DeployablePolicy, files: dict[str, Path]) -> dict[str, Any]:
    actor_cfg = loaded.config["algorithm"]["actor"]
    algorithm = loaded.algorithm
    description = dict(loaded.actor.sampler_description())
    layout, squash = description.pop("noise_layout"), description.pop("squash")
    normalizer = None
    if loaded.observation_normalizer is not None:
        normalizer = {
            "baked_in": True,
            "formula": "(observation - loc) / scale",
            "loc": policy.obs_loc.tolist(),
            "scale": policy.obs_scale.tolist(),
        }
    return {
        "contract_version": CONTRACT_VERSION,
        "algorithm": algorithm,
        "task": loaded.config["env"]["task"],
        "backend": loaded.config["env"]["backend"],
        "source": os.fspath(loaded.source),
        "files": {fmt: path.name for fmt, path in files.items()},
        "inputs": [
            {
                "name": "observation",
                "shape": ["batch", policy.obs_dim],
                "dtype": "float32",
                "meaning": f"the raw observation (the env's {loaded.observation_key!r} key); normalization is inside",
            },
            {
                "name": "noise",
                "shape": ["batch", policy.noise_dim],
                "dtype": "float32",
                "distribution": "standard normal N(0, I); zeros give the deterministic action",
                "layout": layout,
            },
        ],
        "outputs": [
            {
                "name": "action",
                "shape": ["batch", policy.action_dim],
                "dtype": "float32",
                "meaning": "the action the env received in training",
            }
        ],
        "action": {
            "squash": squash,
            "range": [-1.0, 1.0] if squash == "tanh" else None,
            "clipping": "none in the policy: the env's action term scales/clips it (e.g. Isaac Lab's joint "
            "effort scale); apply the same on the robot",
        },
        "sampler": {**description, "unrolled": True},
        "observation_normalizer": normalizer,
        "actor_config": actor_cfg,
        "torch_version": torch.__version__,
    }


def _example_inputs(policy: DeployablePolicy) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    # A batch of 3, not 1: the exporters must not specialize the batch axis to 1.
    return torch.randn(3, policy.obs_dim, generator=generator), torch.randn(3, policy.noise_dim, generator=generator)


def export_onnx(policy: DeployablePolicy, path: str | os.PathLike) -> None:
    """Write ``policy`` as ONNX (torch.onnx's dynamo exporter), inputs ``observation``/``noise``, output ``action``,
    batch axis dynamic."""
    batch = torch.export.Dim("batch")
    with warnings.catch_warnings():  # "The axis name: batch will not be used": both inputs share it, as meant
        warnings.filterwarnings("ignore", message="The axis name")
        torch.onnx.export(
            policy,
            _example_inputs(policy),
            os.fspath(path),
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            dynamic_shapes={"observation": {0: batch}, "noise": {0: batch}},
            dynamo=True,
            external_data=False,
            verbose=False,
        )


def export_torchscript(policy: DeployablePolicy, path: str | os.PathLike) -> None:
    """Write ``policy`` as TorchScript, traced (the sampler's loop unrolled): ``torch.jit.load(path)(obs, noise)``."""
    with warnings.catch_warnings():  # the tracer's notes on Python-level shape checks: all static here
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(policy, _example_inputs(policy), check_trace=False)
    torch.jit.save(traced, os.fspath(path))


_EXPORTERS = {"onnx": export_onnx, "torchscript": export_torchscript}


def export_policy(
    source: LoadedPolicy | str | os.PathLike,
    output_dir: str | os.PathLike | None = None,
    *,
    formats: Sequence[ExportFormat] = FORMATS,
    log_to_mlflow: bool = True,
) -> ExportResult:
    """Export a trained policy to ONNX and/or TorchScript with its I/O contract as JSON.

    Args:
        source: a :class:`~diffrl.deploy.policy_loading.LoadedPolicy`, or a run directory,
            ``policy.pt`` or checkpoint directory (see :func:`~diffrl.deploy.policy_loading.load_policy`).
        output_dir: where the files go (default ``<run_dir>/export``, or next to the source).
        formats: ``"onnx"`` and/or ``"torchscript"``.
        log_to_mlflow: when the run directory has a ``run.json``, log the models (MLflow models
            ``policy_onnx`` and ``policy_torchscript`` with a signature) and the contract to a child
            MLflow run of the training run.

    Returns:
        The files written, the contract and, when logged, the MLflow run id.

    Raises:
        ValueError: an unknown format, or a missing/unreadable checkpoint (naming the file).
    """
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise ValueError(f"unknown export format(s) {unknown or list(formats)}; choose from {list(FORMATS)}")
    loaded = source if isinstance(source, LoadedPolicy) else load_policy(source)
    affine = normalization_affine(loaded)
    policy = deployable_policy(loaded.actor, *(affine or (None, None)))
    if output_dir is None:
        output_dir = RunDirectory(loaded.run_dir if loaded.run_dir is not None else loaded.source.parent).export
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    files: dict[str, Path] = {}
    for fmt in dict.fromkeys(formats):
        path = output_dir / FILE_NAMES[fmt]
        _EXPORTERS[fmt](policy, path)
        files[fmt] = path
        logger.info("exported %s policy to %s", loaded.algorithm, path)
    contract = _contract(loaded, policy, files)
    contract_path = output_dir / CONTRACT_FILE
    contract_path.write_text(json.dumps(contract, indent=2))

    run_id = None
    parent = recorded_run(RunDirectory(loaded.run_dir)) if log_to_mlflow and loaded.run_dir is not None else None
    if parent is not None:
        run_id = _log_to_mlflow(parent, files, contract_path, policy)
    return ExportResult(files, contract, contract_path, run_id)


def _log_to_mlflow(
    parent: tuple[str, str], files: dict[str, Path], contract_path: Path, policy: DeployablePolicy
) -> str:
    """Log the models with a signature (``policy_onnx``, ``policy_torchscript``) and the contract to a child
    run of the training run."""
    import mlflow
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    signature = ModelSignature(
        inputs=Schema(
            [
                TensorSpec(np.dtype(np.float32), (-1, policy.obs_dim), "observation"),
                TensorSpec(np.dtype(np.float32), (-1, policy.noise_dim), "noise"),
            ]
        ),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, policy.action_dim), OUTPUT_NAME)]),
    )
    with child_run(*parent, "export") as run:
        if "onnx" in files:
            import onnx

            mlflow.onnx.log_model(
                onnx.load(os.fspath(files["onnx"])),
                name="policy_onnx",
                signature=signature,
                pip_requirements=["onnxruntime", "numpy"],
            )
        if "torchscript" in files:
            mlflow.pytorch.log_model(
                torch.jit.load(os.fspath(files["torchscript"])),
                name="policy_torchscript",
                signature=signature,
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
                serialization_format="pickle",  # MLflow's only format for a ScriptModule
            )
        mlflow.log_artifact(os.fspath(contract_path))
        mlflow.set_tags({"diffrl.formats": ",".join(files)})
        return run.info.run_id


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m diffrl.deploy.export RUN_DIR_OR_CHECKPOINT --format onnx torchscript``."""
    parser = argparse.ArgumentParser(prog="python -m diffrl.deploy.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="run directory, policy.pt or checkpoint directory")
    parser.add_argument("--format", nargs="+", default=list(FORMATS), dest="formats", help="onnx and/or torchscript")
    parser.add_argument("--output", default=None, help="output directory (default <run_dir>/export)")
    parser.add_argument("--no-mlflow", action="store_true", help="do not log to the run's MLflow store")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("diffrl").setLevel(logging.INFO)
    try:
        result = export_policy(args.source, args.output, formats=args.formats, log_to_mlflow=not args.no_mlflow)
    except ValueError as error:
        logger.error("%s", error)
        return 2
    for path in [*result.files.values(), result.contract_path]:
        sys.stdout.write(f"{path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
