"""``sdfsrn-report RUN_DIR [--out FILE]``: the study's interactive page for a run, as one self-contained HTML file
(no server, no network: images and data embedded).

Pick a shape and an epoch; the first pane is the single training view the network saw, then the predicted and
the true silhouette from a novel angle (a slider around the training camera), with the IoU of prediction against
truth computed in the page, and the predicted and the true surface from there, shaded with the training images'
light; below, the training loss and novel-view IoU curves. Data: the run's ``snapshots.npz`` (:mod:`.snapshots`) and ``metrics.jsonl``; a run trained before
snapshots existed gets one epoch, its last, rendered from its checkpoint.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import math
import sys
from html import escape
from pathlib import Path

import numpy as np

from . import snapshots
from .config import TrainError, supervision

__all__ = ["page_data", "write_report", "main"]


def _png(image: np.ndarray) -> str:
    """A [H, W, 3] uint8 image as a base64 PNG (matplotlib's writer: no extra dependency)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    plt.imsave(buf, image, format="png")
    return base64.b64encode(buf.getvalue()).decode()


def _snapshots_from_checkpoint(run_dir: Path) -> snapshots.Snapshots:
    """One snapshot, the final epoch's, rendered from the checkpoint (runs trained before snapshots existed)."""
    import torch

    from .runs import load_data, load_run

    cfg, encoder, decoder, ckpt = load_run(run_dir, "cpu")
    ds = load_data(cfg)
    snaps = snapshots.plan(ds)
    snaps.epochs = np.array([ckpt["epoch"]])
    sil, grey = snapshots.predict(encoder, decoder, ds, snaps, cfg, torch.device("cpu"))
    snaps.pred, snaps.pred_shaded = sil[None], grey[None]
    return snaps


def page_data(run_dir) -> dict:
    """Everything the page shows, as JSON-ready values (bit arrays base64-encoded)."""
    run_dir = Path(run_dir)
    if not (run_dir / "checkpoint.pt").is_file() and not (run_dir / snapshots.FILE).is_file():
        raise TrainError(f"{run_dir} holds no run (no checkpoint.pt, no {snapshots.FILE})")
    path = run_dir / snapshots.FILE
    snaps = snapshots.load(path) if path.is_file() else _snapshots_from_checkpoint(run_dir)
    metrics = []
    if (run_dir / "metrics.jsonl").is_file():
        metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    config = json.loads((run_dir / "config.json").read_text()) if (run_dir / "config.json").is_file() else {}
    S, V = snaps.azimuth.shape
    b64 = lambda a: base64.b64encode(np.ascontiguousarray(a, dtype=np.uint8).tobytes()).decode()  # noqa: E731
    return dict(
        run=str(run_dir.resolve().name), preset=config.get("preset"), precision=config.get("precision"),
        supervision=supervision(config.get("shading_weight", 0.0), config.get("proxy_frame", False)),
        epochs_total=config.get("epochs"), resolution=snaps.resolution, views=V,
        shapes=[dict(index=int(i), family=f) for i, f in zip(snaps.shapes, snaps.families)],
        ring_degrees=[round(360.0 * v / V, 1) for v in range(V)],
        elevation_degrees=[round(math.degrees(float(e)), 1) for e in snaps.elevation[:, 0]],
        epochs=[int(e) for e in snaps.epochs], truth=b64(snaps.truth), pred=b64(snaps.pred),
        truth_shaded=b64(snaps.truth_shaded), pred_shaded=b64(snaps.pred_shaded),
        bytes_per_view=int(snaps.truth.shape[-1]), images=[_png(im) for im in snaps.images],
        curves=[dict(epoch=r["epoch"], train_mse=r["train_mse"], novel_iou=r.get("novel_iou")) for r in metrics])


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>sdfsrn_fast run __RUN__</title>
<style>
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 60em; }
.controls { display: grid; grid-template-columns: 7em 1fr 12em; gap: .6em 1em; align-items: center; margin: 1em 0; }
.panes { display: flex; gap: 1.5em; flex-wrap: wrap; }
figure { margin: 0; text-align: center; }
canvas, img { width: 192px; height: 192px; image-rendering: pixelated; border: 1px solid #999; background: #000; }
figcaption { font-size: .9em; margin-top: .3em; }
.iou { font-weight: bold; }
svg text { font-size: 11px; }
</style></head><body>
<h1>Run <code>__RUN__</code></h1>
<p>One training view per shape; the network never sees the others. Pick a shape, an epoch and an angle around the
training camera (sliders: arrow keys, Home, End). <span id="meta"></span></p>
<div class="controls">
<label for="shape">Shape</label><select id="shape"></select><span></span>
<label for="epoch">Epoch</label><input id="epoch" type="range" min="0" step="1" aria-describedby="epoch-label">
<span id="epoch-label"></span>
<label for="angle">Novel angle</label><input id="angle" type="range" min="0" step="1" aria-describedby="angle-label">
<span id="angle-label"></span>
</div>
<div class="panes">
<figure><img id="train-view" alt="the training view"><figcaption>training view (seen)</figcaption></figure>
<figure><canvas id="pred"></canvas><figcaption>predicted silhouette, IoU with the truth
<span class="iou" id="iou">-</span></figcaption></figure>
<figure><canvas id="truth"></canvas><figcaption>true silhouette</figcaption></figure>
<figure><canvas id="pred-surface"></canvas><figcaption>predicted surface, shaded</figcaption></figure>
<figure><canvas id="truth-surface"></canvas><figcaption>true surface, shaded</figcaption></figure>
</div>
<h2>Training</h2>
<svg id="curves" width="720" height="240" role="img" aria-label="training loss and novel-view IoU by epoch"></svg>
<script id="data" type="application/json">__DATA__</script>
<script>
"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
const bytes = s => Uint8Array.from(atob(s), c => c.charCodeAt(0));
const TRUTH = bytes(D.truth), PRED = bytes(D.pred), TRUTH_GREY = bytes(D.truth_shaded),
      PRED_GREY = bytes(D.pred_shaded);
const R = D.resolution, V = D.views, S = D.shapes.length, NB = D.bytes_per_view;
const shapeSel = document.getElementById("shape"), epochIn = document.getElementById("epoch"),
      angleIn = document.getElementById("angle");
D.shapes.forEach((s, k) => { const o = document.createElement("option"); o.value = k;
  o.textContent = s.family + " (shape " + s.index + ")"; shapeSel.appendChild(o); });
epochIn.max = D.epochs.length - 1; epochIn.value = D.epochs.length - 1; angleIn.max = V - 1; angleIn.value = 1;
document.getElementById("meta").textContent = "Preset " + D.preset + " (" + D.supervision + "), precision "
  + D.precision + ", "
  + D.epochs.length + " snapshot(s), " + R + "x" + R + " silhouettes.";
function bits(arr, offset) {  // R*R 0/1 values of one view, from packed bits (most significant first)
  const out = new Uint8Array(R * R);
  for (let i = 0; i < R * R; i++) out[i] = (arr[offset + (i >> 3)] >> (7 - (i & 7))) & 1;
  return out;
}
function grey(arr, offset) {  // R*R grey levels 0..255 of one view, from 4-bit pairs (first in the high nibble)
  const out = new Uint8Array(R * R);
  for (let i = 0; i < R * R; i++) out[i] = 17 * ((arr[offset + (i >> 1)] >> (i & 1 ? 0 : 4)) & 15);
  return out;
}
function draw(canvas, b, scale) {
  canvas.width = R; canvas.height = R;
  const ctx = canvas.getContext("2d"), img = ctx.createImageData(R, R);
  for (let i = 0; i < R * R; i++) { const v = b[i] * scale;
    img.data.set([v, v, v, 255], 4 * i); }
  ctx.putImageData(img, 0, 0);
}
function iou(a, b) {
  let inter = 0, union = 0;
  for (let i = 0; i < a.length; i++) { inter += a[i] & b[i]; union += a[i] | b[i]; }
  return union ? inter / union : 1;
}
function update() {
  const s = +shapeSel.value, e = +epochIn.value, v = +angleIn.value;
  const truth = bits(TRUTH, (s * V + v) * NB), pred = bits(PRED, ((e * S + s) * V + v) * NB);
  draw(document.getElementById("truth"), truth, 255);
  draw(document.getElementById("pred"), pred, 255);
  const NG = R * R / 2;
  draw(document.getElementById("truth-surface"), grey(TRUTH_GREY, (s * V + v) * NG), 1);
  draw(document.getElementById("pred-surface"), grey(PRED_GREY, ((e * S + s) * V + v) * NG), 1);
  document.getElementById("train-view").src = "data:image/png;base64," + D.images[s];
  const epochText = "epoch " + D.epochs[e] + (D.epochs_total ? " of " + D.epochs_total : "");
  document.getElementById("epoch-label").textContent = epochText;
  epochIn.setAttribute("aria-valuetext", epochText);
  const angleText = "+" + D.ring_degrees[v] + "\\u00b0 azimuth from the training view, elevation "
    + D.elevation_degrees[s] + "\\u00b0";
  document.getElementById("angle-label").textContent = angleText;
  angleIn.setAttribute("aria-valuetext", angleText);
  document.getElementById("iou").textContent = iou(pred, truth).toFixed(3);
}
function curves() {
  const svg = document.getElementById("curves"), W = 720, H = 240, P = 40, NS = "http://www.w3.org/2000/svg";
  const c = D.curves.filter(r => r.train_mse > 0);
  if (!c.length) return;
  const ep = c.map(r => r.epoch), x0 = Math.min(...ep), x1 = Math.max(...ep, x0 + 1);
  const lm = c.map(r => Math.log10(r.train_mse)), y0 = Math.min(...lm), y1 = Math.max(...lm, y0 + 1e-3);
  const X = e => P + (W - 2 * P) * (e - x0) / (x1 - x0);
  const add = (tag, attrs, text) => { const el = document.createElementNS(NS, tag);
    for (const k in attrs) el.setAttribute(k, attrs[k]); if (text) el.textContent = text; svg.appendChild(el); };
  add("polyline", {fill: "none", stroke: "#1f77b4", "stroke-width": 1.5, points: c.map((r, i) =>
    X(r.epoch) + "," + (H - P - (H - 2 * P) * (lm[i] - y0) / (y1 - y0))).join(" ")});
  const ev = D.curves.filter(r => r.novel_iou != null);
  add("polyline", {fill: "none", stroke: "#d62728", "stroke-width": 1.5, points: ev.map(r =>
    X(r.epoch) + "," + (H - P - (H - 2 * P) * r.novel_iou)).join(" ")});
  ev.forEach(r => add("circle", {cx: X(r.epoch), cy: H - P - (H - 2 * P) * r.novel_iou, r: 3, fill: "#d62728"}));
  add("line", {x1: P, y1: H - P, x2: W - P, y2: H - P, stroke: "#444"});
  add("text", {x: W / 2, y: H - 8, "text-anchor": "middle"}, "epoch " + x0 + " to " + x1);
  add("text", {x: P, y: 14, fill: "#1f77b4"}, "train silhouette MSE (log scale, " + Math.pow(10, y0).toExponential(1)
    + " to " + Math.pow(10, y1).toExponential(1) + ")");
  add("text", {x: W - P, y: 14, fill: "#d62728", "text-anchor": "end"}, "novel-view IoU (0 to 1)");
}
[shapeSel, epochIn, angleIn].forEach(el => el.addEventListener("input", update));
shapeSel.addEventListener("change", update);
update(); curves();
</script></body></html>
"""


def write_report(run_dir, out=None) -> Path:
    """Writes the page (default ``RUN_DIR/report.html``); returns its path."""
    run_dir = Path(run_dir)
    data = json.dumps(page_data(run_dir)).replace("</", "<\\/")  # no "</script>" inside the data block
    html = PAGE.replace("__RUN__", escape(run_dir.resolve().name)).replace("__DATA__", data)
    path = Path(out) if out else run_dir / "report.html"
    path.write_text(html)
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="sdfsrn-report", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", help="a run directory of sdfsrn-train")
    p.add_argument("--out", default=None, help="where to write the page (default RUN_DIR/report.html)")
    args = p.parse_args(argv)
    try:
        path = write_report(args.run_dir, args.out)
    except (TrainError, OSError) as err:
        print(f"sdfsrn-report: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
