"""``python -m sdfsrn_fast.bench``: one comparison table of the render backends from one run (``--help``: sweeps,
training steps, the triton tools)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict

import torch

from ..models import ACTIVATIONS
from . import (MODES, PRECISIONS, SHAPES, BASELINES, _table, available_bench_backends, default_device, gemm_gflops,
               gemm_size, grad_eps_error, measure, measure_subprocess, measure_train_steps)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m sdfsrn_fast.bench", description=__doc__)
    p.add_argument("--shapes", nargs="+", default=["tiny", "study"], choices=list(SHAPES))
    p.add_argument("--backends", nargs="+", default=None, help="default: the baselines and every available fast one")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    p.add_argument("--precisions", nargs="+", default=["32", "bf16"], choices=list(PRECISIONS),
                   help="float32, bfloat16 autocast, tf32 (default: 32 bf16)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", default="bench.json", help="where to write the results")
    p.add_argument("--sweep-chunk", nargs="*", type=int, default=None, metavar="N",
                   help="instead: time the compiled backend's no-grad forward at the study shape per chunk size")
    p.add_argument("--grad-eps", nargs="*", type=float, default=None, metavar="EPS",
                   help="instead: gradient error and backward time of these grad_eps against grad_eps=0 (study shape)")
    p.add_argument("--train-step", action="store_true",
                   help="instead: a user's training step (CNN encoder + render + loss + backward), eager against "
                        "torch.compile, at the first of --shapes")
    p.add_argument("--gpu-compile", action="store_true",
                   help="instead: compile the triton kernels ahead of time for --archs (no GPU needed) and print "
                        "registers, spills, shared memory and tensor-core instructions; exit 1 on a problem")
    p.add_argument("--host-ops", action="store_true",
                   help="instead: count the aten calls and syncs the triton backend's host side issues in one forward "
                        "and one backward at each of --shapes and --precisions")
    p.add_argument("--archs", nargs="+", type=int, default=[80, 90],
                   help="--gpu-compile: sm_XX targets (those of bench.triton_tools.SHARED_LIMIT)")
    p.add_argument("--widths", nargs="+", type=int, default=[64, 128, 256], help="--gpu-compile: hidden widths")
    p.add_argument("--dots", nargs="+", default=["bf16", "fp16", "tf32"], help="--gpu-compile: dot precisions")
    p.add_argument("--activation", default="relu", choices=list(ACTIVATIONS),
                   help="the decoder's (timings and --gpu-compile)")
    p.add_argument("--tune", nargs="*", default=[], metavar="KNOB=N",
                   help="tile and chunk sizes other than the defaults: compiled_chunk, triton_ht, triton_block_m, "
                        "triton_warps, triton_stages, triton_loads, triton_chunk (sdfsrn_fast.backends._instrument)")
    p.add_argument("--worker", nargs=4, metavar=("BACKEND", "SHAPE", "MODE", "PRECISION"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    try:
        tune = {k: int(v) for k, v in (item.split("=", 1) for item in args.tune)}
    except ValueError:
        p.error(f"--tune takes KNOB=N pairs, got {args.tune}")
    if args.worker:
        backend, shape, mode, precision = args.worker
        print(json.dumps(measure(backend, shape, mode, rounds=args.rounds, precision=precision, tune=tune,
                                 activation=args.activation)))
        return
    if args.gpu_compile:
        from .triton_tools import gpu_compile

        sys.exit(gpu_compile(args.archs, args.widths, args.dots, args.json, args.activation))
    if args.host_ops:
        from .triton_tools import print_host_ops

        if not torch.cuda.is_available():
            os.environ.setdefault("TRITON_INTERPRET", "1")  # read when triton is imported, which has not happened yet
        print_host_ops(args.shapes, args.precisions)
        return
    peak = {prec: gemm_gflops(prec) for prec in args.precisions}
    sgemm = gemm_gflops("32") if "32" not in peak else peak["32"]
    for prec, rate in peak.items():
        n = gemm_size(default_device())
        print(f"matmul {prec} ({n}^3, {default_device()}, {torch.get_num_threads()} threads): {rate:.1f} GFLOP/s")
    print(f"decoder activation: {args.activation}")
    rows = []
    if args.train_step:
        rows = measure_train_steps(args.shapes[0], max(args.rounds, 5))
        for r in rows:
            print(f"training step, {r['shape']} shape, {r['mode']:<13}: {r['time']:.3f} s (median of "
                  f"{len(r['times'])}: {', '.join(f'{t:.3f}' for t in r['times'])})")
        print(f"torch.compile / eager: {rows[1]['time'] / rows[0]['time']:.2f}x the time")
    elif args.grad_eps is not None:
        rows = grad_eps_error(args.grad_eps or [1e-6, 1e-5, 1e-4, 1e-3, 1e-2])
        print(f"{'grad_eps':>9} {'worst tensor rel err':>21} {'global rel err':>15} {'backward s':>11} {'kept %':>7}")
        for r in rows:
            print(f"{r['grad_eps']:>9g} {r['worst']:>21.2e} {r['global_']:>15.2e} {r['backward_s']:>11.3f} "
                  f"{100 * r['kept']:>7.1f}")
    elif args.sweep_chunk is not None:
        for chunk in args.sweep_chunk or [256, 512, 1024, 2048, 4096, 8192, 16384, 32768]:
            r = measure_subprocess("compiled", "study", "forward", args.rounds, tune={**tune, "compiled_chunk": chunk})
            rows.append(r)
            print(f"chunk {chunk:>6}: {r['time']:.3f} s  {r['gflops']:.1f} GFLOP/s  "
                  f"({100 * r['gflops'] / sgemm:.0f}% of sgemm)", flush=True)
    else:
        backends = args.backends or available_bench_backends()
        try:
            from tqdm import tqdm
        except ImportError:  # progress is optional
            tqdm = None
        jobs = [(b, s, m, prec) for s in args.shapes for m in args.modes for prec in args.precisions
                for b in backends if not (s == "large" and b in BASELINES)]
        bar = tqdm(jobs, desc="benchmarks") if tqdm else jobs
        say = tqdm.write if tqdm else print
        for b, s, m, prec in bar:
            if tqdm:
                bar.set_postfix_str(f"{s}/{m}/{b}/{prec}")
            try:
                row = measure_subprocess(b, s, m, args.rounds, tune, precision=prec, activation=args.activation)
            except Exception as e:  # one failing case must not lose the others' numbers
                say(f"FAILED {s}/{m}/{b}/{prec}: {type(e).__name__}: {str(e)[-2000:]}")
                continue
            if row is None:
                say(f"skipped {s}/{m}/{b}/{prec}: the backend does not take that precision here")
            else:
                rows.append(row)
                say(f"{s}/{m}/{b}/{prec}: {row['time'] * 1e3:.2f} ms, peak {row['peak_bytes'] / 2**20:.1f} MB")
        print(_table(rows, peak))
    with open(args.json, "w") as f:
        json.dump(dict(sgemm_gflops=sgemm, matmul_gflops=peak, shapes={k: asdict(v) for k, v in SHAPES.items()},
                       results=rows), f,
                  indent=1)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
