"""The triton backend's host side at the study shape, without a GPU: its kernels and matmuls replaced by no-ops
(shapes only), its buffers in bfloat16 as on a GPU.

    python benchmarks/triton_host.py memory [KEPT]   peak of the tensors the backward allocates, each counted from
                                                     its allocation to the death of its storage; the KEPT samples
                                                     (default 31000, about what the study shape keeps) are made
                                                     outside the count (the real selection adds a 1 MB mask and a
                                                     4 MB dL/ds, freed before the chunks)
    python benchmarks/triton_host.py time            host time of a forward+backward: through ``render``, through
                                                     the custom op alone, and the same two functions called from a
                                                     plain ``torch.autograd.Function`` (what the custom-op layer costs)

SDFSRN_TRITON_CHUNK is read as the backend reads it.
"""

import os
import sys
import weakref

os.environ["TRITON_INTERPRET"] = "1"  # triton imports without a GPU; nothing runs in its interpreter here

import torch  # noqa: E402
import triton.language as tl  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from sdfsrn_fast import SDFDecoder  # noqa: E402
from sdfsrn_fast.backends import triton as tb  # noqa: E402
from sdfsrn_fast.backends.fused import decoder_weights  # noqa: E402


class _NoLaunch:
    def __getitem__(self, grid):
        return lambda *args, **kwargs: None


B, R, S, H, L = 4, 4096, 64, 256, 128  # the study shape
kept = int(sys.argv[2]) if len(sys.argv) > 2 else 31000
idx = torch.sort(torch.randperm(B * R * S)[:kept]).values
tb._render_fwd_kernel = tb._render_bwd_kernel = tb._keep_kernel = _NoLaunch()
tb._kept_indices = lambda *args: (idx, torch.full((kept,), 0.01))
tb._precision = lambda dtype, compute_dtype, device: (2, tl.float32, torch.bfloat16)  # a GPU's bfloat16
tb._mm = lambda a, b, f, acc=None: a.new_empty(*a.shape[:-1], b.shape[-1], dtype=f)

live = {"now": 0, "peak": 0}
counted: set = set()


def count(t) -> None:
    storage = t.untyped_storage()
    key, size = storage.data_ptr(), storage.nbytes()
    if size == 0 or key in counted:
        return
    counted.add(key)
    live["now"] += size
    live["peak"] = max(live["peak"], live["now"])

    def freed():
        live["now"] -= size
        counted.discard(key)

    weakref.finalize(storage, freed)


class Count(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                count(t)
        return out


weights = decoder_weights(SDFDecoder(L, H))
z, o, d = torch.randn(B, L), torch.randn(B, R, 3), torch.randn(B, R, 3)
near, valid = torch.ones(B, R), torch.ones(B, R, dtype=torch.bool)
far = near + 2


def memory() -> None:
    sil, lse, sdf = torch.rand(B, R), torch.rand(B, R), torch.rand(B, R, S)
    with Count():
        tb.triton_backward(torch.ones(B, R), sil, sdf, lse, z, o, d, near, far, valid, None, weights, S, 0.01, 0.005,
                           1e-4, "relu", 100.0, torch.bfloat16)
    print(f"{kept} kept samples, chunks of {tb._backward_chunk()}: peak {live['peak'] / 2**20:.1f} MB of tensors made "
          f"inside the triton backward ({live['now'] / 2**20:.1f} MB alive after it: the gradients)")


def time_host() -> None:
    import time

    from sdfsrn_fast import render

    dec = SDFDecoder(L, H)
    zg = z.clone().requires_grad_(True)
    tau = [torch.tensor(v, dtype=torch.float64) for v in (0.01, 0.005)]
    args = (o, d, near, far, valid, None)

    class Direct(torch.autograd.Function):  # the backend's two functions without the custom-op layer
        @staticmethod
        def forward(ctx, zz, *ws):
            sil, sdf, lse = tb.triton_forward(zz, *args, list(ws), S, 0.01, 0.005, "relu", 100.0, torch.bfloat16)
            ctx.save_for_backward(sil, sdf, lse, zz, *ws)
            return sil

        @staticmethod
        def backward(ctx, g):
            sil, sdf, lse, zz, *ws = ctx.saved_tensors
            return tuple(tb.triton_backward(g.contiguous(), sil, sdf, lse, zz, *args, ws, S, 0.01, 0.005, 1e-4,
                                            "relu", 100.0, torch.bfloat16))

    def through_render():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            sil = render(dec, zg, o, d, near, far, valid, num_samples=S, backend="triton")
        sil.sum().backward()

    def through_op():
        sil, _, _ = tb.triton_render(zg, *args, decoder_weights(dec), S, *tau, 1e-4, "relu", 100.0, torch.bfloat16)
        sil.sum().backward()

    def direct():
        Direct.apply(zg, *decoder_weights(dec)).sum().backward()

    for name, step in (("render", through_render), ("custom op", through_op), ("autograd.Function", direct)):
        for _ in range(10):
            step()
        runs = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(100):
                step()
            runs.append((time.perf_counter() - t0) / 100)
        print(f"{name:<18} {1e3 * min(runs):.3f} ms a forward+backward (best of 5 x 100; "
              f"{tb._backward_chunk()}-sample chunks, {kept} kept samples)")


memory() if sys.argv[1:2] == ["memory"] else time_host() if sys.argv[1:2] == ["time"] else sys.exit(__doc__)
