#!/usr/bin/env bash
# Fills .whl/ (git-ignored, ~15 MiB) with the wheels benchmarks/gpu_check.sh installs on a GPU machine that
# has torch but no package index: diffrl's dependencies that such a machine lacks, at the lock file's
# versions, for CPython 3.12 on x86_64 Linux. Run it here, where PyPI answers; carry .whl to the GPU machine.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
lock=requirements/lock-py312.txt
mkdir -p .whl
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
for name in torchrl tensordict omegaconf antlr4-python3-runtime hydra-core pyvers orjson importlib_metadata; do
  pin="$(grep -i "^${name}==" "$lock")"
  python3 -m pip download --quiet --no-deps --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d .whl "$pin" \
    || python3 -m pip download --quiet --no-deps -d .whl "$pin"
done
# antlr4-python3-runtime ships only an sdist: build its (pure-Python) wheel here.
for sdist in .whl/*.tar.gz; do
  [[ -e "$sdist" ]] || continue
  python3 -m pip wheel --quiet --no-deps -w .whl "$sdist" && rm "$sdist"
done
du -sh .whl
