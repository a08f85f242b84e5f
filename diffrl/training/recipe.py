"""What every Hydra recipe does around :func:`~diffrl.training.experiment.run_experiment`."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from diffrl.training.experiment import run_dir_of_checkpoint, run_experiment

logger = logging.getLogger("diffrl")


def register_resolvers() -> None:
    """``${diffrl_run_dir:${resume},<default>}``: a resumed run keeps its run directory."""
    if not OmegaConf.has_resolver("diffrl_run_dir"):
        OmegaConf.register_new_resolver(
            "diffrl_run_dir", lambda resume, default: str(run_dir_of_checkpoint(resume)) if resume else default
        )


def run_from_hydra(cfg: DictConfig) -> None:
    """Run the experiment in Hydra's run directory; a configuration error exits with status 2 and a clear message."""
    logging.getLogger("diffrl").setLevel(logging.INFO)
    run_dir = HydraConfig.get().runtime.output_dir
    try:
        result = run_experiment(cfg, run_dir)
    except ValueError as error:
        logger.error("%s", error)
        sys.exit(2)
    last = result.history[-1] if result.history else {}
    logger.info(
        "done: %d frames, mean episode return %.3f; run directory %s; MLflow: mlflow ui --backend-store-uri %s",
        int(last.get("frames", 0)),
        last.get("episode_return", float("nan")),
        result.run_dir,
        result.tracking_uri,
    )


def recipe_main(config_name: str, config_dir: str | Path) -> Callable[[], None]:
    """The Hydra entry point of a recipe: ``main = recipe_main("genpo_isaaclab", Path(__file__).parent / "config")``."""
    register_resolvers()

    @hydra.main(config_path=str(Path(config_dir).resolve()), config_name=config_name, version_base="1.3")
    def main(cfg: DictConfig) -> None:
        run_from_hydra(cfg)

    return main
