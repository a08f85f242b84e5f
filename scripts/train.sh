#!/usr/bin/env bash
# The main job: GenPO on an Isaac Lab task (CPU when there is no GPU), tracked in MLflow
# inside the run directory. Any argument is a Hydra override, e.g. env.num_envs=512.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
cd "$repo_root"
exec python recipes/genpo_isaaclab.py "$@"
