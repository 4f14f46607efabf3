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

    python benchmarks/triton_host.py ... --chunk N                  kept samples per backward launch (default: the
                                                                    backend's)
"""

import os
import sys
import weakref

os.environ["TRITON_INTERPRET"] = "1"  # triton imports without a GPU; nothing runs in its interpreter here

import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from sdfsrn_fast import SDFDecoder  # noqa: E402
from sdfsrn_fast.backends import _instrument  # noqa: E402
from sdfsrn_fast.backends import triton as tb  # noqa: E402
from sdfsrn_fast.backends._ops import RenderCall, decoder_weights  # noqa: E402

args = sys.argv[1:]
chunk = int(args[args.index("--chunk") + 1]) if "--chunk" in args else tb.BACKWARD_CHUNK
args = args[: args.index("--chunk")] if "--chunk" in args else args
B, R, S, H, L = 4, 4096, 64, 256, 128  # the study shape
kept = int(args[1]) if len(args) > 1 else 31000
idx = torch.sort(torch.randperm(B * R * S)[:kept]).values
_instrument.launch = lambda *a, **k: None  # no kernel runs
tb.launch = _instrument.launch
tb.kept_indices = lambda *a: (idx, torch.full((kept,), 0.01))
tb._precision = lambda call: (2, torch.float32, torch.bfloat16)  # a GPU's bfloat16
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
    call = RenderCall(z, o, d, near, far, valid, None, weights, S, 0.01, 0.005, 1e-4, "relu", 100.0, torch.bfloat16)
    with Count(), _instrument.tuning(triton_chunk=chunk):
        tb.triton_backward(call, torch.ones(B, R), sil, sdf, lse)
    print(f"{kept} kept samples, chunks of {chunk}: peak {live['peak'] / 2**20:.1f} MB of tensors made "
          f"inside the triton backward ({live['now'] / 2**20:.1f} MB alive after it: the gradients)")


def time_host() -> None:
    import time

    from sdfsrn_fast import render

    dec = SDFDecoder(L, H)
    zg = z.clone().requires_grad_(True)

    def call_of(zz, ws, tau=0.01, tau_min=0.005):
        return RenderCall(zz, o, d, near, far, valid, None, tuple(ws), S, tau, tau_min, 1e-4, "relu", 100.0,
                          torch.bfloat16)

    class Direct(torch.autograd.Function):  # the backend's two functions without the custom-op layer
        @staticmethod
        def forward(ctx, zz, *ws):
            sil, sdf, lse, _, _ = tb.triton_forward(call_of(zz, ws))
            ctx.save_for_backward(sil, sdf, lse, zz, *ws)
            return sil

        @staticmethod
        def backward(ctx, g):
            sil, sdf, lse, zz, *ws = ctx.saved_tensors
            return tuple(tb.triton_backward(call_of(zz, ws), g.contiguous(), sil, sdf, lse))

    def through_render():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            sil = render(dec, zg, o, d, near, far, valid, num_samples=S, backend="triton")
        sil.sum().backward()

    def through_op():
        tau = [torch.tensor(v, dtype=torch.float64) for v in (0.01, 0.005)]
        tb.triton_render(call_of(zg, decoder_weights(dec), *tau)).sum().backward()

    def direct():
        Direct.apply(zg, *decoder_weights(dec)).sum().backward()

    for name, step in (("render", through_render), ("custom op", through_op), ("autograd.Function", direct)):
        with _instrument.tuning(triton_chunk=chunk):
            for _ in range(10):
                step()
            runs = []
            for _ in range(5):
                t0 = time.perf_counter()
                for _ in range(100):
                    step()
                runs.append((time.perf_counter() - t0) / 100)
        print(f"{name:<18} {1e3 * min(runs):.3f} ms a forward+backward (best of 5 x 100; "
              f"{chunk}-sample chunks, {kept} kept samples)")


memory() if args[:1] == ["memory"] else time_host() if args[:1] == ["time"] else sys.exit(__doc__)
