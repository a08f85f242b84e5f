"""Train DPPO (arXiv 2409.00588) on an Isaac Lab task, tracked in MLflow.

    python recipes/dppo_isaaclab.py                                    # Isaac-Cartpole, 256 CPU envs
    python recipes/dppo_isaaclab.py task=halfcheetah                   # gymnasium MuJoCo

Same loop, tasks, overrides and MLflow tracking as recipes/genpo_isaaclab.py (docs/recipes.md, docs/dppo.md).
"""

from pathlib import Path

from diffrl.training.recipe import recipe_main

main = recipe_main("dppo_isaaclab", Path(__file__).parent / "config")

if __name__ == "__main__":
    main()
