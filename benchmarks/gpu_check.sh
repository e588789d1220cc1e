#!/usr/bin/env bash
# The GPU check in one command, under 6 minutes: every device-parametrized test on CUDA
# (MINIGRAD_TEST_DEVICE=cuda: the op registry's rows and kernels, layers, models, seq2seq
# decoding, LoRA, recompute, and two training steps of every task against the CPU) with a small
# hypothesis profile, then the train-step and generation benchmark against PyTorch on the card.
# Run from the repository root on a machine with CuPy, PyTorch, transformers and pytest
# (pytest-xdist and pytest-timeout are used when present). Everything goes under
# ${OUT:-runs/gpu_check}: pytest_cuda.log, pytest_cuda.xml (JUnit), gpu_bench.log,
# gpu_bench.json and gpu_<card>.json (card, date, the suite's outcome and the benchmark's rows),
# copied to benchmarks/results/ when the run passed. The exit status is 0 only when CuPy sees a
# GPU, every test passed, none was skipped for want of a GPU, every task's steps ran and the
# benchmark finished.
#
#   bash benchmarks/gpu_check.sh          # on a GPU machine
#   bash benchmarks/gpu_check.sh --cpu    # dry run on the CPU: the same tests, no benchmark
set -uo pipefail
device=cuda
case "${1:-}" in
    "") ;;
    --cpu) device=cpu ;;
    *) echo "usage: bash benchmarks/gpu_check.sh [--cpu]" >&2; exit 2 ;;
esac
out=${OUT:-runs/gpu_check}
mkdir -p "$out" || exit 2
rm -f "$out/pytest_$device.xml" "$out/pytest_$device.log" "$out/gpu_bench.json" \
    "$out/gpu_bench.log"
py=${PYTHON:-python3}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1

if [ "$device" = cuda ]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    $py -m benchmarks.gpu_check card || exit 1
fi

opts=()
workers=${PYTEST_WORKERS:-8}
if [ "$workers" != 0 ] && $py -c "import xdist" 2>/dev/null; then opts+=(-n "$workers"); fi
if $py -c "import pytest_timeout" 2>/dev/null; then opts+=(--timeout "${CASE_TIMEOUT:-120}"); fi
echo "pytest on $device (${TEST_TIMEOUT:-230} s at most) ${opts[*]}"
# SIGINT at the time limit: pytest stops and still writes the JUnit report of what ran.
MINIGRAD_TEST_DEVICE=$device HYPOTHESIS_PROFILE=gpu timeout -s INT -k 15 "${TEST_TIMEOUT:-230}" \
    $py -m pytest tests -q -p no:cacheprovider -rfEs --durations=15 "${opts[@]}" \
    --junitxml="$out/pytest_$device.xml" > "$out/pytest_$device.log" 2>&1
status=$?
tail -n 30 "$out/pytest_$device.log"

bench=()
if [ "$device" = cuda ]; then
    timeout -k 10 "${BENCH_TIMEOUT:-100}" $py -m benchmarks.gpu --out "$out/gpu_bench.json" \
        2>&1 | tee "$out/gpu_bench.log"
    bench=(--bench "$out/gpu_bench.json" --results benchmarks/results)
fi
$py -m benchmarks.gpu_check record "$out" --device "$device" --pytest-status "$status" \
    "${bench[@]}"
