"""Registers and spills of the triton kernels as this machine's triton and GPU build them (run on a CUDA machine by
benchmarks/gpu_check.sh): one launch per width and precision at the study's sample count, then each launched
kernel's ``n_regs`` / ``n_spills``."""

import math

import torch

from sdfsrn_fast import SDFDecoder, render
from sdfsrn_fast.backends._instrument import recording
from sdfsrn_fast.cameras import orbit_rays, sphere_near_far

o, d = orbit_rays(torch.tensor([0.3, 2.0]), 0.2, 2.5, math.radians(50), 32, 32)
rays = [t.cuda() for t in (o, d, *sphere_near_far(o, d))]
print(f"{'kernel':<9} {'H':>4} {'dot':<5} {'regs':>5} {'spills':>7}")
for hidden in (256, 128, 64):
    dec = SDFDecoder(128, hidden).cuda()
    z = torch.randn(2, 128, device="cuda", requires_grad=True)
    for precision in ("tf32", "bf16", "fp16"):  # exact float32 is the compiled backend's on CUDA
        torch.set_float32_matmul_precision("high")
        amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        with recording() as rec:
            with torch.autocast("cuda", dtype=amp or torch.float32, enabled=amp is not None):
                sil = render(dec, z, *rays, num_samples=64, tau=0.05, tau_min=0.02, backend="triton")
            sil.sum().backward()
            torch.cuda.synchronize()
        for kernel in ("forward", "backward"):  # printed as it goes: compiling all 18 takes a minute or two
            compiled = rec.get(f"{kernel}_kernel")
            if compiled is not None:
                print(f"{kernel:<9} {hidden:>4} {precision:<5} {compiled.n_regs:>5} {compiled.n_spills:>7}", flush=True)
torch.set_float32_matmul_precision("highest")
