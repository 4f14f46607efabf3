"""The Triton backend's targets, read off a benchmark JSON (``python -m sdfsrn_fast.bench ... --json F``, or one run
inside a saved results file): study-shape forward+backward time against the compiled backend's (target >= 5x),
forward FLOP rate against the bfloat16 matmul rate measured in the same run (target >= 40%), and forward+backward
peak memory against the compiled backend's (target <= 1/5).

    python benchmarks/targets.py F [RUN]      (RUN: a key of F's "runs", for the saved results files)
    python benchmarks/targets.py F --modes G...   and the triton rows of other runs (the weight-load modes of
                                                  gpu_check.sh) beside F's, to choose kernel_config's default
"""

import json
import sys


def targets(run: dict, precision: str = "bf16") -> list[str]:
    rows = {(r["backend"], r["mode"]): r for r in run["results"]
            if r["shape"] == "study" and r["precision"] == precision}
    out = []
    fb_t, fb_c = rows.get(("triton", "forward_backward")), rows.get(("compiled", "forward_backward"))
    if fb_t and fb_c:
        speedup = fb_c["time"] / fb_t["time"]
        peak = fb_t["peak_bytes"] / fb_c["peak_bytes"]
        out.append(f"forward+backward: triton {fb_t['time'] * 1e3:.2f} ms, compiled {fb_c['time'] * 1e3:.2f} ms: "
                   f"{speedup:.2f}x (target >= 5x: {'met' if speedup >= 5 else 'not met'})")
        mb = {k: r["peak_bytes"] / 2**20 for k, r in (("triton", fb_t), ("compiled", fb_c))}
        out.append(f"peak memory: triton {mb['triton']:.0f} MB, compiled {mb['compiled']:.0f} MB: {peak:.3f} "
                   f"(target <= 0.2: {'met' if peak <= 0.2 else 'not met'})")
    fw = rows.get(("triton", "forward"))
    if fw and precision in run.get("matmul_gflops", {}):
        share = fw["gflops"] / run["matmul_gflops"][precision]
        out.append(f"forward: triton {fw['time'] * 1e3:.2f} ms, {fw['gflops'] / 1e3:.0f} TFLOP/s = {100 * share:.1f}% "
                   f"of the {precision} matmul rate measured in the run "
                   f"(target >= 40%: {'met' if share >= 0.4 else 'not met'})")
    return out or [f"no study-shape {precision} rows of both triton and compiled in this run"]


if __name__ == "__main__":
    args = sys.argv[1:]
    others = args[args.index("--modes") + 1 :] if "--modes" in args else []
    args = args[: args.index("--modes")] if "--modes" in args else args
    data = json.load(open(args[0]))
    run = data["runs"][args[1]] if len(args) > 1 else data
    print("\n".join(targets(run)))
    for name in ([args[0]] + others) if others else []:
        try:
            rows = run["results"] if name == args[0] else json.load(open(name))["results"]
        except (OSError, ValueError, KeyError) as e:
            print(f"{name}: not read ({type(e).__name__})")
            continue
        ms = {r["mode"]: f"{r['time'] * 1e3:.2f} ms" for r in rows
              if r["backend"] == "triton" and r["shape"] == "study" and r["precision"] == "bf16"}
        print(f"triton, study, bf16, {name}: " + ", ".join(f"{m} {t}" for m, t in sorted(ms.items())))
