#!/usr/bin/env bash
# Creates (or refreshes) the project's virtual environment and exports its settings.
# Sourced by scripts/train.sh and scripts/test.sh; safe to run again: it reinstalls only
# when pyproject.toml or the lock file changed.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${DIFFRL_VENV:-$repo_root/.venv}"
lock="$repo_root/requirements/lock-py312.txt"

find_python312() {
  local candidate
  for candidate in "${DIFFRL_PYTHON:-}" python3.12 \
      "$(command -v pyenv >/dev/null 2>&1 && pyenv root)"/versions/3.12*/bin/python3.12 \
      "$HOME"/.pyenv/versions/3.12*/bin/python3.12 /usr/bin/python3.12 /usr/local/bin/python3.12; do
    [[ -n "$candidate" ]] || continue
    if "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' >/dev/null 2>&1; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

if [[ ! -x "$venv/bin/python" ]]; then
  if ! python312="$(find_python312)"; then
    echo "diffrl: Isaac Lab 3.0 needs Python 3.12, and none was found (tried \$DIFFRL_PYTHON, python3.12 on PATH," >&2
    echo "        pyenv's versions/3.12*, /usr/bin and /usr/local/bin). Install one (e.g. 'pyenv install 3.12')" >&2
    echo "        or point DIFFRL_PYTHON at its interpreter." >&2
    exit 1
  fi
  echo "diffrl: creating $venv with $python312" >&2
  "$python312" -m venv "$venv"
fi

stamp="$venv/.diffrl-install-stamp"
wanted="$(cat "$repo_root/pyproject.toml" "$lock" | sha256sum | cut -d' ' -f1)"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$wanted" ]]; then
  echo "diffrl: installing diffrl[isaaclab,mujoco,dev] into $venv (the first time downloads torch: a few minutes)" >&2
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet -c "$lock" -e "$repo_root[isaaclab,mujoco,dev]"
  echo "$wanted" > "$stamp"
fi

# Warp compiles its kernels once per machine; keep them out of the temporary directory.
export WARP_CACHE_PATH="${WARP_CACHE_PATH:-${XDG_CACHE_HOME:-$HOME/.cache}/diffrl/warp}"
# On a CPU shared with other busy processes, OpenMP threads that spin while waiting stall the
# training process (docs/benchmarks.md, "shared CPU"); with PASSIVE they sleep. Read when torch loads.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
# Isaac Lab accepts its EULA through this variable on kit-less (Newton) installs.
export OMNI_KIT_ACCEPT_EULA="${OMNI_KIT_ACCEPT_EULA:-YES}"
export PATH="$venv/bin:$PATH"
