"""The Triton backend's targets, read off a benchmark JSON (``python -m sdfsrn_fast.bench ... --json F``, or one run
inside a saved results file): study-shape forward+backward time against the compiled backend's (target >= 5x),
forward FLOP rate against the bfloat16 matmul rate measured in the same run (target >= 40%), and forward+backward
peak memory against the compiled backend's (target <= 1/5).

    python benchmarks/targets.py F [RUN]      (RUN: a key of F's "runs", for the saved results files)
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
    data = json.load(open(sys.argv[1]))
    run = data["runs"][sys.argv[2]] if len(sys.argv) > 2 else data
    print("\n".join(targets(run)))
