#!/usr/bin/env bash
# The GPU checks of the project in one script, for a lent CUDA machine (about 8 minutes on an H100/H200):
# the CUDA tests, the render benchmarks at the study and large shapes for every backend (float32 and bfloat16),
# the triton kernels' registers and spills as compiled by this machine's triton, and 20 epochs of the study preset.
# Usage: bash benchmarks/gpu_check.sh [LOG_DIR]   (default: $OUT if set, else gpu-check-logs); every step logs there.
set -uo pipefail
cd "$(dirname "$0")/.."
log=${1:-${OUT:-gpu-check-logs}}
mkdir -p "$log"
export TRITON_DEFAULT_FP_FUSION=1 PYTHONUNBUFFERED=1
step() {  # step NAME LIMIT_S COMMAND...: runs it with a time limit, logs it, goes on if it fails
    local name=$1 limit=$2
    shift 2
    echo "== $name: $*" | tee -a "$log/summary.txt"
    local t0=$SECONDS
    timeout "$limit" "$@" > "$log/$name.log" 2>&1
    echo "   exit $? after $((SECONDS - t0)) s" | tee -a "$log/summary.txt"
}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; python -c "import torch, triton; \
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"; } > "$log/machine.txt" 2>&1
pip install -q -e ".[test]" > "$log/install.log" 2>&1 || echo "install failed" | tee -a "$log/summary.txt"
step tests_cuda 150 python -m pytest -q tests/test_cuda.py tests/test_triton.py tests/test_precision.py
step kernel_resources 60 python benchmarks/triton_resources.py
step bench 200 python -m sdfsrn_fast.bench --shapes study large --rounds 5 --json "$log/bench.json"
step train_study_20 120 python -m sdfsrn_fast.study.train --preset study --epochs 20 --eval-every 0 --figures false \
    --no-progress --overwrite --out "$log/study20"
cp -r "$log/study20/metrics.jsonl" "$log/study20_metrics.jsonl" 2>/dev/null
step gpu_compile 120 python -m sdfsrn_fast.bench --gpu-compile --json "$log/gpu_compile.json"
cat "$log/summary.txt"
