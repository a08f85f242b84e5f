"""Train REPPO (arXiv 2507.11019), the squashed-Gaussian pathwise baseline of TruDi, on an Isaac Lab task.

    python recipes/reppo_isaaclab.py                                   # Isaac-Cartpole, 256 CPU envs
    python recipes/reppo_isaaclab.py task=halfcheetah                  # gymnasium MuJoCo

Same loop, tasks, overrides and MLflow tracking as the other recipes (docs/recipes.md, docs/trudi.md).
"""

from pathlib import Path

from diffrl.training.recipe import recipe_main

main = recipe_main("reppo_isaaclab", Path(__file__).parent / "config")

if __name__ == "__main__":
    main()
