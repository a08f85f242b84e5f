"""What every Hydra recipe does around :func:`~diffrl.training.experiment.run_experiment`."""

from __future__ import annotations

import inspect
import logging
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf

from diffrl.training.distributed import DistributedContext
from diffrl.training.experiment import StopRequested, run_experiment
from diffrl.training.pathwise_update import PathwiseUpdate
from diffrl.training.ppo_update import PPOUpdate
from diffrl.training.run_directory import RunDirectory, checkpoint_to_resume

logger = logging.getLogger("diffrl")


# The ``trainer`` config group: one entry per update rule, its defaults read off the constructor.
UPDATE_RULES = {"ppo": PPOUpdate, "pathwise": PathwiseUpdate}
# Arguments the experiment passes itself, not configuration.
_WIRED_ARGUMENTS = {"loss_module", "distributed"}


def constructor_config(target: type) -> dict[str, Any]:
    """``{"_target_": ..., argument: default, ...}``: a Hydra node mirroring ``target``'s keyword
    arguments, so that each default lives in the constructor only.

    Example:
        >>> constructor_config(PPOUpdate)["num_epochs"], constructor_config(PPOUpdate)["_target_"]
        (5, 'diffrl.training.ppo_update.PPOUpdate')
    """
    node: dict[str, Any] = {"_target_": f"{target.__module__}.{target.__qualname__}"}
    for name, parameter in inspect.signature(target.__init__).parameters.items():
        if name == "self" or name in _WIRED_ARGUMENTS or parameter.kind is not parameter.KEYWORD_ONLY:
            continue
        node[name] = parameter.default
    return node


def register_configs() -> None:
    """The ``trainer`` config group and ``${diffrl_run_dir:${resume},<default>}`` (a resumed run keeps its
    run directory); call before composing a recipe config (the recipes do)."""
    store = ConfigStore.instance()
    for name, rule in UPDATE_RULES.items():
        store.store(group="trainer", name=name, node=constructor_config(rule))
    if not OmegaConf.has_resolver("diffrl_run_dir"):
        OmegaConf.register_new_resolver(
            "diffrl_run_dir",
            lambda resume, default: (
                str(RunDirectory.of_checkpoint(checkpoint_to_resume(resume)).root) if resume else default
            ),
        )


def run_from_hydra(cfg: DictConfig) -> None:
    """Run the experiment in Hydra's run directory; a configuration error exits with status 2 and a clear message."""
    logging.getLogger("diffrl").setLevel(logging.INFO)
    run_dir = HydraConfig.get().runtime.output_dir
    try:
        result = run_experiment(cfg, run_dir)
    except (ValueError, InstantiationException) as error:
        # A module's constructor refusing its arguments reaches here wrapped by Hydra's instantiate.
        cause = error.__cause__ if isinstance(error, InstantiationException) else error
        if not isinstance(cause, ValueError):
            raise
        logger.error("%s", cause)
        _discard_unstarted_run_directory(Path(run_dir), f"{HydraConfig.get().job.name}.log")
        sys.exit(2)
    except KeyboardInterrupt as interrupt:
        # A requested stop, not a failure (no traceback): the last completed iteration is checkpointed.
        signum = interrupt.signum if isinstance(interrupt, StopRequested) else signal.SIGINT
        if DistributedContext.from_environment().is_main:  # the rank that owns the run directory
            checkpoint = RunDirectory(run_dir).latest_checkpoint()
            logger.warning(
                "stopped by %s; %s",
                signal.Signals(signum).name,
                f"to continue: resume={checkpoint}" if checkpoint else "no iteration had completed, nothing to resume",
            )
        sys.exit(128 + signum)
    last = result.history[-1] if result.history else {}
    logger.info(
        "done: %d frames, mean episode return %.3f; run directory %s; MLflow: mlflow ui --backend-store-uri %s",
        int(last.get("frames", 0)),
        last.get("episode_return", float("nan")),
        result.run_dir,
        result.tracking_uri,
    )


def _discard_unstarted_run_directory(run_dir: Path, hydra_log: str) -> None:
    """Remove the directory Hydra made for a run refused before it started: it holds Hydra's log and at
    most the (released) run lock; a run that started tracking, or another run's directory, holds more."""
    if run_dir.is_dir() and {path.name for path in run_dir.iterdir()} <= {hydra_log, RunDirectory(run_dir).lock.name}:
        shutil.rmtree(run_dir, ignore_errors=True)


def unusable_path_override(overrides: list[str]) -> str | None:
    """What is wrong with a ``resume=`` or ``hydra.run.dir=`` override (``None``: nothing).

    Hydra creates the run directory before the run starts, so a missing checkpoint or an
    uncreatable directory is caught here first: one line, and no directory left behind.
    """
    for override in overrides:
        key, _, value = override.partition("=")
        if key == "resume" and value not in ("", "null"):
            try:
                checkpoint_to_resume(value)
            except ValueError as error:
                return str(error)
        if key == "hydra.run.dir" and value:
            ancestor = Path(value).absolute()
            while not ancestor.exists():
                ancestor = ancestor.parent
            try:  # permissions alone do not tell (root, read-only mounts, /proc)
                Path(tempfile.mkdtemp(prefix=".diffrl-probe-", dir=ancestor)).rmdir()
            except OSError as error:
                return f"hydra.run.dir={value}: cannot be created ({ancestor}: {error.strerror or error})"
    return None


def recipe_main(config_name: str, config_dir: str | Path) -> Callable[[], None]:
    """The Hydra entry point of a recipe: ``main = recipe_main("genpo_isaaclab", Path(__file__).parent / "config")``."""
    register_configs()

    @hydra.main(config_path=str(Path(config_dir).resolve()), config_name=config_name, version_base="1.3")
    def main(cfg: DictConfig) -> None:
        run_from_hydra(cfg)

    def checked_main() -> None:
        problem = unusable_path_override(sys.argv[1:])
        if problem is not None:
            print(f"error: {problem}", file=sys.stderr)
            sys.exit(2)
        main()

    return checked_main
