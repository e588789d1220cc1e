#!/usr/bin/env bash
# The GPU session in one script: the device-parametrized test suite on CUDA, then the GPU
# benchmarks. Run from the repository root on a machine with CuPy, PyTorch and pytest;
# logs go to ${OUT:-.}.
set -uo pipefail
out=${OUT:-.}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import cupy, numpy; print('cupy', cupy.__version__, 'numpy', numpy.__version__)" \
    | tee -a "$out/gpu.txt"
MINIGRAD_TEST_DEVICE=cuda HYPOTHESIS_PROFILE=gpu timeout "${TEST_TIMEOUT:-300}" python3 -m pytest \
    tests/backend/test_cuda.py tests/engine tests/nn -q -p no:cacheprovider -rfE 2>&1 | tee "$out/pytest_cuda.log" | tail -40
timeout "${BENCH_TIMEOUT:-200}" python3 -m benchmarks.gpu --out "$out/gpu_bench.json" 2>&1 \
    | tee "$out/gpu_bench.log"
