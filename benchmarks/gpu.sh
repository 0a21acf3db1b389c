#!/usr/bin/env bash
# The GPU check: speed and memory at 512 px on SD 1.5- and SDXL-sized random models, the fp16 GradScaler path,
# bitwise resume with CUDA generators and validation in the worker thread (benchmarks/gpu_check.py says what
# each check does). On a CUDA machine set up as the README says:
#
#     bash benchmarks/gpu.sh           # under 8 minutes; writes its section of docs/benchmarks.md
#     bash benchmarks/gpu.sh --tiny    # tiny models on the CPU, seconds; what tests/test_gpu_check.py runs
#
# Nothing is downloaded (HF_HUB_OFFLINE=1): every model is built with random weights. Exit status 1 if a check
# failed; a skipped check says why.
set -euo pipefail

cd "$(dirname "$0")/.."
python=${PYTHON:-}
if [[ -z "$python" ]]; then
    if [[ -x .venv/bin/python ]]; then python=.venv/bin/python; else python=python3; fi
fi
export HF_HUB_OFFLINE=1
if command -v nvidia-smi >/dev/null 2>&1; then
    echo "+ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader" >&2
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
command=("$python" benchmarks/gpu_check.py "$@")
echo "+ timeout 480 ${command[*]}" >&2
exec timeout 480 "${command[@]}"
