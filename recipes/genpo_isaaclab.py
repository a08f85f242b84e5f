"""Train GenPO (arXiv 2505.18763) on an Isaac Lab task, tracked in MLflow.

    python recipes/genpo_isaaclab.py                                   # Isaac-Cartpole, 256 CPU envs
    python recipes/genpo_isaaclab.py task=ant env.device=cuda          # the paper's Ant setting
    python recipes/genpo_isaaclab.py resume=runs/genpo/Isaac-Cartpole/<date>/checkpoints/checkpoint-000000000025

Every option is in recipes/config; docs/recipes.md explains them.
"""

from pathlib import Path

from diffrl.training.recipe import recipe_main

main = recipe_main("genpo_isaaclab", Path(__file__).parent / "config")

if __name__ == "__main__":
    main()
