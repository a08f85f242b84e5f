"""Train FPO++ (arXiv 2602.02481) on an Isaac Lab task, tracked in MLflow.

    python recipes/fpo_isaaclab.py                                     # Isaac-Cartpole, 256 CPU envs
    python recipes/fpo_isaaclab.py task=go2_fpo                        # the authors' Go2 settings
    python recipes/fpo_isaaclab.py task=halfcheetah                    # gymnasium MuJoCo

Same loop, tasks, overrides and MLflow tracking as recipes/genpo_isaaclab.py (docs/recipes.md, docs/fpo.md).
"""

from pathlib import Path

from diffrl.training.recipe import recipe_main

main = recipe_main("fpo_isaaclab", Path(__file__).parent / "config")

if __name__ == "__main__":
    main()
