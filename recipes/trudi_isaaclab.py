"""Train TruDi (arXiv 2606.15260) on an Isaac Lab task, tracked in MLflow.

    python recipes/trudi_isaaclab.py                                   # Isaac-Cartpole, 256 CPU envs
    python recipes/trudi_isaaclab.py task=ant env.device=cuda

Same loop, tasks, overrides and MLflow tracking as recipes/genpo_isaaclab.py (docs/recipes.md).
"""

from pathlib import Path

from diffrl.training.recipe import recipe_main

main = recipe_main("trudi_isaaclab", Path(__file__).parent / "config")

if __name__ == "__main__":
    main()
