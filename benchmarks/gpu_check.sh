#!/usr/bin/env bash
# GPU readiness check, for a machine with one CUDA GPU and torch but no package index (<= 8 minutes).
#
#   here, once:     bash benchmarks/prepare_gpu_wheels.sh        # fills .whl/ (git-ignored, ~5 MiB)
#   on the GPU:     bash benchmarks/gpu_check.sh [OUT_DIR]       # carry .whl; OUT_DIR defaults to $OUT or gpu_check/
#
# Installs diffrl's missing dependencies from .whl/ into /tmp/diffrl-site, runs the gpu-marked tests
# (no host sync in the update or the sampler, CUDA-graph capture) and benchmarks/policy_cost.py on CUDA
# with eager, compiled and CUDA-graphed sampling. Writes gpu_tests.xml, policy_cost.json and summary.json.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out="${1:-${OUT:-gpu_check}}"
mkdir -p "$out" && out="$(cd "$out" && pwd)"
python=python3
start=$(date +%s)
if [[ ! -d .whl ]]; then
  echo "gpu_check: no .whl/ folder: run benchmarks/prepare_gpu_wheels.sh where PyPI answers, then carry .whl" >&2
  exit 2
fi
$python -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/diffrl-site .whl/*.whl || exit 2
export PYTHONPATH="$PWD:/tmp/diffrl-site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
$python -c "import torch, torchrl, tensordict; assert torch.cuda.is_available(), 'no CUDA device'; print('torch', torch.__version__, 'torchrl', torchrl.__version__, torch.cuda.get_device_name())" | tee "$out/versions.txt" || exit 2

timeout 300 $python -m pytest -p no:cacheprovider -o addopts="" -m gpu tests/training/test_gpu.py -q --junitxml "$out/gpu_tests.xml" 2>&1 | tee "$out/gpu_tests.log"
tests_status=${PIPESTATUS[0]}
(cd benchmarks && timeout 240 $python policy_cost.py --device cuda --sizes 1024 4096 16384 --repeats 5 \
  --modes eager compile cudagraphs --json "$out/policy_cost.json") 2>&1 | tee "$out/policy_cost.log"
cost_status=${PIPESTATUS[0]}
$python - "$out" "$tests_status" "$cost_status" "$start" <<'PY'
import json, sys, time
out, tests, cost, start = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
summary = {"gpu_tests_exit_status": tests, "policy_cost_exit_status": cost, "seconds": time.time() - start}
open(f"{out}/summary.json", "w").write(json.dumps(summary, indent=2) + "\n")
print(summary)
PY
[[ $tests_status -eq 0 && $cost_status -eq 0 ]]
