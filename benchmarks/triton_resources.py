"""Registers and spills of the triton kernels as this machine's triton and GPU build them (run on a CUDA machine by
benchmarks/gpu_check.sh): one launch per width and precision at the study's sample count, then each launched
kernel's ``n_regs`` / ``n_spills``."""

import math

import torch

from sdfsrn_fast import SDFDecoder, render
from sdfsrn_fast.backends import triton as tb
from sdfsrn_fast.cameras import orbit_rays, sphere_near_far

o, d = orbit_rays(torch.tensor([0.3, 2.0]), 0.2, 2.5, math.radians(50), 32, 32)
rays = [t.cuda() for t in (o, d, *sphere_near_far(o, d))]
DOTS = {0: "ieee", 1: "tf32", 2: "bf16", 3: "fp16", 5: "fp32 (tf32x3)"}
for hidden in (64, 128, 256):
    dec = SDFDecoder(128, hidden).cuda()
    z = torch.randn(2, 128, device="cuda", requires_grad=True)
    for precision in ("highest", "high", "bf16"):
        torch.set_float32_matmul_precision("high" if precision == "high" else "highest")
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16"):
            sil = render(dec, z, *rays, num_samples=64, tau=0.05, tau_min=0.02, backend="triton")
        sil.sum().backward()
        torch.cuda.synchronize()
torch.set_float32_matmul_precision("highest")
print(f"{'kernel':<9} {'H':>4} {'dot':<5} {'regs':>5} {'spills':>7}")
for (kernel, hidden, dot), compiled in sorted(tb.LAUNCHED.items()):
    print(f"{kernel:<9} {hidden:>4} {DOTS[dot]:<5} {compiled.n_regs:>5} {compiled.n_spills:>7}")
