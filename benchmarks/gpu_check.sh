#!/usr/bin/env bash
# The GPU check of the kNN kernel (see benchmarks/gpu_check.py); run from the repository root on a CUDA machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
exec "$PYTHON" benchmarks/gpu_check.py "$@"
