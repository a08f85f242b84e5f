#!/usr/bin/env bash
# The test suite (lint, then pytest). Extra arguments go to pytest, e.g. -m "not slow".
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
cd "$repo_root"
ruff check .
ruff format --check .
exec python -m pytest "$@"
