#!/usr/bin/env bash
# Runs every test this machine can run: the C++ unit tests (ctest; CPU), the
# Python CPU tests (pytest), and — only where a CUDA GPU is visible — the GPU
# tests under tests/gpu. Tests that need CUTLASS or nvcc skip with the reason
# when those are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

cmake --preset release >/dev/null
cmake --build --preset release -j"$(nproc)"
ctest --preset release --output-on-failure -j"$(nproc)"

export PYTHONPATH="$PWD/python${PYTHONPATH:+:$PYTHONPATH}"
pytest_args=(-q -p no:cacheprovider tests/python)
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && [ -d tests/gpu ] \
   && ls tests/gpu/test_*.py >/dev/null 2>&1; then
  pytest_args+=(tests/gpu)
fi
python3 -m pytest "${pytest_args[@]}"
