"""Train the Gaussian PPO baseline (rsl_rl's policy and settings) on an Isaac Lab task, tracked in MLflow.

    python recipes/ppo_isaaclab.py                                     # Isaac-Cartpole, 256 CPU envs
    python recipes/ppo_isaaclab.py task=ant env.device=cuda            # rsl_rl's Ant reference, 4096 envs
    python recipes/ppo_isaaclab.py resume=runs/ppo/Isaac-Cartpole/<date>/checkpoints/checkpoint-000000000025

Every option is in recipes/config (ppo_isaaclab.yaml, algorithm/ppo.yaml); docs/recipes.md explains them.
"""

from pathlib import Path

from diffrl.training.recipe import recipe_main

main = recipe_main("ppo_isaaclab", Path(__file__).parent / "config")

if __name__ == "__main__":
    main()
