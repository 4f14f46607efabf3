"""The triton backend's tools, none of which needs a GPU: its kernels compiled ahead of time for an architecture with
registers, spills and tensor-core instructions read off the cubin (``python -m sdfsrn_fast.bench --gpu-compile``),
and the aten calls and syncs its host side issues (``--host-ops``)."""

from __future__ import annotations

import json
import os
import sys

import torch

from ..models import ACTIVATIONS
from . import PRECISIONS, make_case, recording

__all__ = ["OpCounter", "SYNCING_OPS", "host_ops", "print_host_ops", "compile_report", "gpu_compile"]


# aten calls after which the host waits for the device: a result whose size (nonzero, ...) or value (.item()) it reads
SYNCING_OPS = frozenset({"aten.nonzero.default", "aten._local_scalar_dense.default", "aten.repeat_interleave.Tensor",
                         "aten.bincount.default", "aten.masked_select.default", "aten.unique_consecutive.default",
                         "aten._unique2.default", "aten.is_nonzero.default"})


class OpCounter:
    """Counts the aten calls made under it (``with OpCounter() as c: ...; c.total, c.syncs, c.counts``). A custom op
    counts as one call: call a backend's functions directly to count what it does inside."""

    def __enter__(self):
        import collections

        from torch.utils._python_dispatch import TorchDispatchMode

        counts = self.counts = collections.Counter()

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                counts[str(func)] += 1
                return func(*args, **(kwargs or {}))

        self._mode = Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        self._mode.__exit__(*exc)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def syncs(self) -> int:
        return sum(n for op, n in self.counts.items() if op in SYNCING_OPS)


def host_ops(shape: str = "tiny", precision: str = "32") -> dict:
    """What the triton backend's host side issues around its kernels in one forward and one backward at ``shape``:
    ``{"forward": OpCounter, "backward": OpCounter, "launches": {"forward": n, "backward": n}}``. The kernels run
    for real (in the interpreter without a GPU), outside the counting, so that the interpreter's own work is not
    counted. The same Python runs on a GPU, where each counted call that is not a view is a kernel launch or an
    allocation, and each syncing one a wait."""
    from torch.utils._python_dispatch import _disable_current_modes

    from ..backends import triton as tb
    from ..backends._ops import RenderCall, decoder_weights

    case = make_case(shape)
    s = case["shape"]
    weights = tuple(w.detach() for w in decoder_weights(case["decoder"]))
    amp = PRECISIONS[precision]
    compute = amp if amp in (torch.bfloat16, torch.float16) else None
    call = RenderCall(case["z"].detach(), *case["rays"], None, weights, s.samples, 0.01, 0.005, 1e-4, "relu", 100.0,
                      compute)
    sil, sdf, lse, _, _ = tb.triton_forward(call)
    passes = {"forward": lambda: tb.triton_forward(call),
              "backward": lambda: tb.triton_backward(call, torch.ones_like(sil), sil, sdf, lse)}
    out, launches = {}, {}
    for name, run in passes.items():
        # the launches themselves are not the host side's aten calls
        with recording(launch_guard=_disable_current_modes) as rec, OpCounter() as out[name]:
            run()
        launches[name] = sum(v for k, v in rec.items() if k.endswith("_launches"))
    out["launches"] = launches
    return out


# Shared memory per block on each architecture and the tensor-core instructions its dots should compile to:
# sm_90's wgmma (HGMMA) needs 64 rows a warpgroup, the backward's 32-point tiles take mma.sync (HMMA) as on sm_80;
# sm_100's tcgen05 dots are UTCHMMA; sm_120 has mma.sync only.
SHARED_LIMIT = {80: 163 * 1024, 86: 99 * 1024, 89: 99 * 1024, 90: 227 * 1024, 100: 227 * 1024, 120: 99 * 1024}
TENSOR_CORE_OPS = {80: ("HMMA",), 86: ("HMMA",), 89: ("HMMA",), 90: ("HGMMA", "HMMA"), 100: ("UTCHMMA", "HMMA"),
                   120: ("HMMA",)}
AOT_PRECISIONS = {"tf32": 1, "bf16": 2, "fp16": 3}  # name -> DOT mode


def _aot_source(kernel: str, hidden: int, dot: int, arch: int = 90, activation: str = "relu"):
    import triton.language as tl
    from triton.compiler import ASTSource

    from ..backends import _triton_kernels as kernels
    from ..backends.triton import kernel_config

    cfg = kernel_config(hidden, dot, 64, kernel, arch)
    op = {2: "*bf16", 3: "*fp16"}.get(dot, "*fp32")
    f32 = "*fp32"  # (the backward as for the study's batch of 4 shapes: BLOCK_B = 4)
    common = dict(C0=f32, C2=f32, W0P=f32, W2P=f32, W1=op, B1=f32, W2H=op, W3=op, B3=f32, W4=f32)
    const = dict(ACT=ACTIVATIONS.index(activation), ACC=tl.float32, DOT=dot, HT=cfg["HT"], NT=cfg["NT"], H=hidden,
                 LOADS=cfg["LOADS"])
    if kernel == "forward":
        sig = dict(O=f32, D=f32, NEAR=f32, FAR=f32, JIT=f32, VALID="*i1",
                   **common, B4=f32, SDF=f32, LSE=f32, SIL=f32, R="i32", S="i32", inv_tau_min="fp32",
                   tau_min_over_tau="fp32", BETA="fp32")
        const.update(HAS_JIT=True, BLOCK_R=cfg["BLOCK_R"], BLOCK_S=cfg["BLOCK_S"])
        fn = kernels._render_fwd_kernel
    else:
        sig = dict(O=f32, D=f32, NEAR=f32, FAR=f32, JIT=f32, IDX="*i64", G=f32, SHAPE_START="*i64", NB="i32",
                   **common, H0=op, H1=op, H2=op, D1=op, D3=op, D2=op, D0=op, H3=op, AT=op, KA="i32", S="i32",
                   BETA="fp32")
        const.update(HAS_JIT=True, BLOCK_M=cfg["BLOCK_M"], BLOCK_B=4, LD=8 * hidden)
        fn = kernels._render_bwd_kernel
    sig.update({k: "constexpr" for k in const})
    # what a launch specializes on (triton's JIT: "tt.divisibility" 16 for 16-byte aligned pointers and for integers
    # that are multiples of 16), as at the study shape: every tensor aligned, R = 4096 rays and S = 64 samples.
    # Without it the weight tiles compiled to 2-byte loads (LDG.E.U16) where a launch gets 16-byte ones (LDG.E.128)
    attrs = {(fn.arg_names.index(k),): [["tt.divisibility", 16]] for k, t in sig.items()
             if t.startswith("*") or k in ("R", "S")}
    return ASTSource(fn=fn, signature=sig, constexprs=const, attrs=attrs), cfg


def compile_report(arch: int, kernel: str, hidden: int, precision: str, activation: str = "relu") -> dict:
    """Compiles one kernel for sm_``arch`` without a GPU (``triton.compile`` with a ``GPUTarget``) and reads its
    registers, spill (local memory) bytes, shared memory and tensor-core instructions off the cubin with the
    ``cuobjdump`` shipped in the triton wheel."""
    import re
    import subprocess
    import tempfile
    import time

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.backends.nvidia import __file__ as nvidia_init

    dot = AOT_PRECISIONS[precision]
    src, cfg = _aot_source(kernel, hidden, dot, arch, activation)
    t0 = time.perf_counter()
    ck = triton.compile(src, target=GPUTarget("cuda", arch, 32),
                        options={"num_warps": cfg["num_warps"], "num_stages": cfg["num_stages"]})
    seconds = time.perf_counter() - t0
    cuobjdump = os.path.join(os.path.dirname(nvidia_init), "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(ck.asm["cubin"])
        f.flush()
        usage = subprocess.run([cuobjdump, "-res-usage", f.name], capture_output=True, text=True, check=True).stdout
        sass = subprocess.run([cuobjdump, "-sass", f.name], capture_output=True, text=True, check=True).stdout
    field = lambda name: int(re.search(rf"{name}:(\d+)", usage).group(1))  # noqa: E731
    ops = {op: len(re.findall(rf"\b{op}\b", sass)) for op in ("HGMMA", "UTCHMMA", "HMMA", "FFMA")}
    shared = max(int(ck.metadata.shared), field("SHARED"))
    tensor_core = sum(ops[op] for op in TENSOR_CORE_OPS[arch])
    row = dict(arch=f"sm_{arch}", kernel=kernel, hidden=hidden, precision=precision, activation=activation,
               block_m=cfg["BLOCK_M"], warps=cfg["num_warps"], loads=cfg["LOADS"],
               registers=field("REG"), spill_bytes=field("LOCAL") + field("STACK"), shared_bytes=shared,
               hgmma=ops["HGMMA"], utchmma=ops["UTCHMMA"], hmma=ops["HMMA"], ffma=ops["FFMA"], compile_s=seconds)
    problems = []
    if row["spill_bytes"] and hidden <= 128:
        problems.append("spills at H <= 128")
    if shared > SHARED_LIMIT[arch]:
        problems.append(f"shared memory {shared} B over the sm_{arch} limit {SHARED_LIMIT[arch]} B")
    if re.search(r"\bBPT\.TRAP\b", sass) and ops["FFMA"] == 0:  # the whole body compiled away to a trap
        problems.append("compiles to a trap")
    elif tensor_core == 0:
        problems.append("no tensor-core instruction")
    if row["registers"] <= 32 and row["spill_bytes"]:
        problems.append("32 registers: everything spilled")
    row["problems"] = problems
    return row


def gpu_compile(archs, widths, dots, json_path=None, activation: str = "relu") -> int:
    """``--gpu-compile``: every triton kernel compiled for each arch, width and dot precision, with ``activation``;
    one table; 1 where a kernel spills at H <= 128, exceeds the architecture's shared memory, uses no tensor-core
    instruction or compiles to a trap."""
    unknown = [a for a in archs if a not in SHARED_LIMIT]
    if unknown:
        raise SystemExit(f"--archs: sm_{unknown[0]} is not one of the known targets {sorted(SHARED_LIMIT)}")
    rows = []
    head = (f"{'arch':<6} {'kernel':<9} {'H':>4} {'dot':<5} {'BLOCK_M':>7} {'warps':>5} {'regs':>5} {'spill B':>8} "
            f"{'smem KB':>8} {'HGMMA':>6} {'UTCHMMA':>7} {'HMMA':>6} {'FFMA':>7} {'s':>5}  problems")
    print(f"activation: {activation}")
    print(head)
    print("-" * len(head))
    for arch in archs:
        for dot in dots:
            for hidden in widths:
                for kernel in ("forward", "backward"):
                    r = compile_report(arch, kernel, hidden, dot, activation)
                    rows.append(r)
                    print(f"{r['arch']:<6} {kernel:<9} {hidden:>4} {dot:<5} {r['block_m']:>7} {r['warps']:>5} "
                          f"{r['registers']:>5} {r['spill_bytes']:>8} {r['shared_bytes'] / 1024:>8.1f} "
                          f"{r['hgmma']:>6} {r['utchmma']:>7} {r['hmma']:>6} {r['ffma']:>7} {r['compile_s']:>5.1f}  "
                          f"{'; '.join(r['problems']) or '-'}", flush=True)
    if json_path:
        with open(json_path, "w") as f:
            json.dump(dict(triton_aot=rows), f, indent=1)
    bad = [r for r in rows if r["problems"]]
    if bad:
        print(f"{len(bad)} kernel(s) with problems", file=sys.stderr)
    return 1 if bad else 0


def print_host_ops(shapes, precisions) -> None:
    """``--host-ops``: one line per shape, precision and pass (the triton backend runs in its interpreter without a
    GPU, as ``main`` arranges)."""
    print(f"{'shape':<6} {'precision':<9} {'pass':<9} {'aten calls':>10} {'not views':>9} {'syncing':>7} "
          f"{'triton launches':>15}  syncing calls")
    views = ("aten.view.", "aten.t.", "aten.slice.", "aten.select.", "aten.unsqueeze.", "aten.squeeze.",
             "aten.transpose.", "aten.permute.", "aten.unbind.", "aten.expand.", "aten.detach.", "aten.alias.",
             "aten._reshape_alias.")
    for shape in shapes:
        for precision in precisions:
            out = host_ops(shape, precision)
            for name in ("forward", "backward"):
                c = out[name]
                work = sum(n for op, n in c.counts.items() if not op.startswith(views))
                syncing = ", ".join(f"{op} x{n}" for op, n in c.counts.items() if op in SYNCING_OPS)
                print(f"{shape:<6} {precision:<9} {name:<9} {c.total:>10} {work:>9} {c.syncs:>7}  "
                      f"{out['launches'].get(name, 0):>15}  {syncing}")
