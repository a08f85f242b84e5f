"""Train GenPO (arXiv 2505.18763) on an Isaac Lab task, tracked in MLflow.

    python recipes/genpo_isaaclab.py                                   # Isaac-Cartpole, 256 CPU envs
    python recipes/genpo_isaaclab.py env.task=Isaac-Ant env.num_envs=4096 env.device=cuda
    python recipes/genpo_isaaclab.py resume=runs/genpo/Isaac-Cartpole/<date>/checkpoints/checkpoint-000000000025

Every option is in recipes/config; docs/recipes.md explains them.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from diffrl.training.recipe import register_resolvers, run_from_hydra

register_resolvers()


@hydra.main(config_path="config", config_name="genpo_isaaclab", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run_from_hydra(cfg)


if __name__ == "__main__":
    main()
