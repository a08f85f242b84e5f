"""Train TruDi (arXiv 2606.15260) as its authors built it, REPPO with a DIME diffusion actor, on an Isaac Lab task.

    python recipes/trudi_isaaclab.py                                   # Isaac-Cartpole, 256 CPU envs
    python recipes/trudi_isaaclab.py task=halfcheetah                  # gymnasium MuJoCo
    python recipes/trudi_isaaclab.py algorithm=trudi_ppo               # diffrl's likelihood-ratio variant

Same loop, tasks, overrides and MLflow tracking as recipes/genpo_isaaclab.py (docs/recipes.md, docs/trudi.md).
"""

from pathlib import Path

from diffrl.training.recipe import recipe_main

main = recipe_main("trudi_isaaclab", Path(__file__).parent / "config")

if __name__ == "__main__":
    main()
