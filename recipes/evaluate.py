"""Evaluate a trained policy: return and episode length, deterministic and stochastic, plus a video.

    python recipes/evaluate.py source=runs/genpo/Isaac-Cartpole/<date>                 # run dir: its policy.pt
    python recipes/evaluate.py source=runs/genpo/.../checkpoints/checkpoint-000000000025 episodes=32
    python recipes/evaluate.py mlflow_run=<run id> tracking_uri=sqlite:///runs/genpo/.../mlflow.db

Results go to runs/evaluation/<date>/evaluation.json and to an MLflow child run of the training
run. Every option is in recipes/config/evaluate.yaml; docs/deploy.md explains them.
"""

import logging
import sys
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from diffrl.deploy.evaluation import run_evaluation

logger = logging.getLogger("diffrl")


@hydra.main(config_path=str(Path(__file__).parent / "config"), config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    logger.setLevel(logging.INFO)
    options = OmegaConf.to_container(cfg)
    threads = options.pop("torch_threads")
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        report = run_evaluation(output_dir=HydraConfig.get().runtime.output_dir, **options)
    except ValueError as error:
        logger.error("%s", error)
        sys.exit(2)
    for key, value in report.metrics().items():
        logger.info("%s = %.4g", key, value)
    logger.info("video: %s; results in %s", report.video_status, report.output_dir)


if __name__ == "__main__":
    main()
