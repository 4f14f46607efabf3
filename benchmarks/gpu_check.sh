#!/usr/bin/env bash
# The GPU checks of the project in one script, for a lent CUDA machine. Each step has a time limit and a failed step
# does not stop the others. Three parts, in the order they run:
#   core (7.5 minutes of limits): what the Triton issue asks of a GPU run: the CUDA tests (tests/test_cuda.py,
#     tests/test_triton.py without the interpreter), the render benchmark at the study shape (reference /
#     torch.compile(reference) / compiled / triton, bfloat16 autocast and tf32) with the issue's three targets read
#     off it, the large shape (the fast backends: the reference would need about 75 GB), and 20 epochs of the study
#     preset in bfloat16 (triton);
#   tune (4.8 minutes): what chooses the triton kernels' defaults: the default kernels (sm_90 joins the weight
#     tiles) timed beside the weights loaded tile by tile and grouped (--tune triton_loads=0, 1), then host calls
#     and syncs (bench --host-ops), a profile, and the forward kernel's L2 and tensor-core throughput (ncu, where
#     installed and allowed);
#   rest (3.8 minutes): the kernels' registers and spills as this machine's triton builds them, 64-point forward
#     tiles, 20 float32 epochs.
# Usage: bash benchmarks/gpu_check.sh [OUT_DIR] [PART]   (OUT_DIR default: $OUT if set, else gpu-check-logs;
#        PART: all (default), core, tune, rest, or step names separated by commas; BENCH_BACKENDS: the study
#        benchmark's backends; NCU: the Nsight Compute binary, found on PATH or in /usr/local/cuda/bin by default)
# It needs the machine's own torch and triton and nothing installed: the checkout goes on PYTHONPATH. OUT_DIR gets
# summary.txt and gpu_check.tgz (every log and JSON file; one archive, so that few files come back), both
# rewritten after every step.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-gpu-check-logs}}
mkdir -p "$out"
log=$(mktemp -d)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
part=${2:-all}
core=(tests bench_study targets bench_reference_compiled bench_large train_bf16)
tune=(bench_default_loads bench_tile_loads bench_grouped_loads load_modes host_ops profile ncu_forward)
step() {  # step NAME LIMIT_S COMMAND...: runs it with a time limit, logs it, goes on if it fails
    local name=$1 limit=$2
    shift 2
    case $part in
        all) ;;
        core) [[ " ${core[*]} " == *" $name "* ]] || return 0 ;;
        tune) [[ " ${tune[*]} " == *" $name "* ]] || return 0 ;;
        rest) [[ " ${core[*]} ${tune[*]} " == *" $name "* ]] && return 0 ;;
        *) [[ ",$part," == *",$name,"* ]] || return 0 ;;
    esac
    echo "== $name: $*" | tee -a "$log/summary.txt"
    cp "$log/summary.txt" "$out/summary.txt"  # where a run stopped from outside was
    local t0=$SECONDS
    timeout "$limit" "$@" > "$log/$name.log" 2>&1
    echo "   exit $? after $((SECONDS - t0)) s" | tee -a "$log/summary.txt"
    # OUT_DIR after every step: a run stopped from outside still leaves the steps it finished there
    tar czf "$out/gpu_check.tgz" -C "$log" . && cp "$log/summary.txt" "$out/summary.txt"
}
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv
  $py -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', \
triton.__version__, torch.cuda.get_device_name())"; nproc; } > "$log/machine.txt" 2>&1
cat "$log/machine.txt" | tee -a "$log/summary.txt"
bench="$py -m sdfsrn_fast.bench --rounds 20"
step tests 150 $py -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_triton.py
step bench_study 140 $bench --shapes study --modes forward_backward forward --precisions bf16 tf32 \
    --backends ${BENCH_BACKENDS:-triton compiled reference} --json "$log/bench_study.json"
step targets 10 $py benchmarks/targets.py "$log/bench_study.json"
step bench_reference_compiled 40 $bench --shapes study --modes forward_backward --precisions bf16 \
    --backends reference_compiled --json "$log/bench_reference_compiled.json"
step bench_large 60 $bench --shapes large --modes forward_backward forward --precisions bf16 \
    --backends triton compiled --json "$log/bench_large.json"
step train_bf16 50 $py -m sdfsrn_fast.study.train --preset study --epochs 20 --eval-every 0 --figures false \
    --snapshot-every 0 --precision bf16 --no-progress --overwrite --out "$log/study_bf16"
step bench_default_loads 40 $bench --shapes study --modes forward_backward forward --precisions bf16 \
    --backends triton --json "$log/bench_default_loads.json"
step bench_tile_loads 40 $bench --shapes study --modes forward_backward forward --precisions bf16 \
    --backends triton --tune triton_loads=0 --json "$log/bench_tile_loads.json"
step bench_grouped_loads 40 $bench --shapes study --modes forward_backward forward --precisions bf16 \
    --backends triton --tune triton_loads=1 --json "$log/bench_grouped_loads.json"
step load_modes 10 $py benchmarks/targets.py "$log/bench_default_loads.json" --modes "$log/bench_tile_loads.json" \
    "$log/bench_grouped_loads.json"
step host_ops 60 $py -m sdfsrn_fast.bench --host-ops --shapes study --precisions bf16
step profile 40 $py benchmarks/gpu_profile.py triton study bf16
ncu=${NCU:-$(command -v ncu || ls /usr/local/cuda/bin/ncu 2>/dev/null || echo ncu-not-found)}
step ncu_forward 60 "$ncu" -k regex:_render_fwd_kernel -s 2 -c 1 --section SpeedOfLight \
    --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis $py -c "from sdfsrn_fast.bench import \
make_case, make_step; s = make_step('triton', make_case('study'), 'forward', 'bf16'); [s() for _ in range(3)]"
step kernel_resources 150 $py benchmarks/triton_resources.py
step bench_forward_block64 40 $bench --shapes study --modes forward --precisions bf16 --backends triton \
    --tune triton_block_m=64 --json "$log/bench_forward_block64.json"
step train_fp32 40 $py -m sdfsrn_fast.study.train --preset study --epochs 20 --eval-every 0 --figures false \
    --snapshot-every 0 --precision 32 --no-progress --overwrite --out "$log/study_fp32"
for run in study_bf16 study_fp32; do
    cp "$log/$run/metrics.jsonl" "$log/${run}_metrics.jsonl" 2>/dev/null
    cp "$log/$run/config.json" "$log/${run}_config.json" 2>/dev/null
    rm -rf "${log:?}/$run"
done
for f in tests host_ops bench_study targets load_modes kernel_resources profile ncu_forward bench_large \
    bench_forward_block64 bench_default_loads bench_tile_loads bench_grouped_loads bench_reference_compiled; do
    [[ -f "$log/$f.log" ]] && tail -n 30 "$log/$f.log" | tr '\r' '\n' | grep -v '^benchmarks:' >> "$log/summary.txt"
done
tar czf "$out/gpu_check.tgz" -C "$log" .
cp "$log/summary.txt" "$out/summary.txt"
cat "$log/summary.txt"
rm -rf "${log:?}"
