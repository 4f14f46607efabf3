"""Where the time of one render forward+backward goes on a GPU (run by benchmarks/gpu_check.sh): torch.profiler
over 5 steps of a backend at a shape and precision, after 3 warm-up steps; the ops by GPU time and by CPU time.
Usage: python benchmarks/gpu_profile.py [BACKEND] [SHAPE] [PRECISION]   (default: triton study bf16)"""

import sys

import torch
from torch.profiler import ProfilerActivity, profile

from sdfsrn_fast.bench import make_case, make_step

backend, shape, precision = (sys.argv[1:] + ["triton", "study", "bf16"][len(sys.argv) - 1 :])[:3]
case = make_case(shape)
for mode in ("forward", "forward_backward"):
    step = make_step(backend, case, mode, precision)
    for _ in range(3):
        step()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(10):
        step()
    end.record()
    torch.cuda.synchronize()
    print(f"{backend} {shape} {precision} {mode}: {start.elapsed_time(end) / 10:.3f} ms a step (mean of 10)")
step = make_step(backend, case, "forward_backward", precision)
with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
    for _ in range(5):
        step()
table = prof.key_averages()
print(table.table(sort_by="self_cuda_time_total", row_limit=25, max_name_column_width=60))
print(table.table(sort_by="self_cpu_time_total", row_limit=20, max_name_column_width=60))
