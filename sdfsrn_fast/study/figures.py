"""Figures of a training run, as PNG (matplotlib, Agg backend): what people would rather look at than read.

- ``views_<family>.png``: for one shape of each family, the training view and the 6 novel angles: predicted
  silhouettes over the true ones, then the predicted surface shaded with the training images' light (its normals,
  from ``render(..., surface=True)``) over the true surface shaded alike;
- ``convergence.png``: training views, ground truth / prediction / difference;
- ``curves.png``: training MSE, novel-view MSE and IoU over epochs.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .config import supervision
from .data import FAMILIES
from .views import predict_silhouettes, predict_surfaces, shaded

__all__ = ["make_figures", "plot_curves"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(history: list, path: Path) -> None:
    plt = _plt()
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 3.6))
    ep = [r["epoch"] for r in history]
    ax0.semilogy(ep, [r["train_mse"] for r in history], label="train silhouette MSE")
    ev = [r for r in history if "novel_mse" in r]
    if ev:
        ax0.semilogy([r["epoch"] for r in ev], [r["novel_mse"] for r in ev], "o-", label="novel-view MSE")
        ax1.plot([r["epoch"] for r in ev], [r["novel_iou"] for r in ev], "o-", color="k", label="all")
        for fam in FAMILIES:
            key = f"novel_iou_{fam}"
            if key in ev[0]:
                ax1.plot([r["epoch"] for r in ev], [r[key] for r in ev], ".--", label=fam)
    ax0.set_xlabel("epoch")
    ax0.set_ylabel("MSE")
    ax0.legend()
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("novel-view IoU (64x64)")
    ax1.set_ylim(0, 1)
    ax1.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def make_figures(out, encoder, decoder, ds, cfg, device, history) -> list:
    """Writes the run's figures into ``out``; returns their paths."""
    plt = _plt()
    out = Path(out)
    paths = []
    for fam in FAMILIES:
        if fam not in ds.families:
            continue
        i = ds.families.index(fam)
        az = torch.cat([ds.azimuth[i : i + 1], ds.novel_azimuth[i]])[None]
        el = torch.cat([ds.elevation[i : i + 1], ds.novel_elevation[i]])[None]
        pred, _, normal, hit = predict_surfaces(encoder, decoder, ds, [i], az, el, cfg, device)
        gt = torch.cat([ds.silhouettes[i : i + 1], ds.novel_silhouettes[i]])
        _, true_normal, true_hit = ds.surface_maps(i, az[0], el[0], pred.shape[-1])
        rows = (pred[0], gt, shaded(ds, normal, hit, az, el)[0],
                shaded(ds, true_normal[None], true_hit[None], az, el)[0])
        V = pred.shape[1]
        fig, axes = plt.subplots(4, V, figsize=(1.6 * V, 7.0), squeeze=False)
        for v in range(V):
            for row, images in enumerate(rows):
                ax = axes[row, v]
                ax.imshow(images[v].numpy(), cmap="gray", vmin=0, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
            axes[0, v].set_title("train view" if v == 0 else f"novel {v}", fontsize=8)
        for row, name in enumerate(("predicted", "ground truth", "predicted surface", "true surface")):
            axes[row, 0].set_ylabel(name, fontsize=8)
        fig.suptitle(f"{fam} (shape {i}), {supervision(cfg.shading_weight, cfg.proxy_frame)}: training view and 6 "
                     "novel angles; silhouettes, then surfaces shaded with the training light", fontsize=9)
        fig.tight_layout()
        path = out / f"views_{fam}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)

    show = list(range(min(6, len(ds))))
    az, el = ds.azimuth[show][:, None], ds.elevation[show][:, None]
    pred = predict_silhouettes(encoder, decoder, ds, show, az, el, cfg, device)[:, 0]
    gt = ds.silhouettes[show]
    fig, axes = plt.subplots(3, len(show), figsize=(1.7 * len(show), 5.2), squeeze=False)
    for c, i in enumerate(show):
        for row, (img, cmap, lo) in enumerate(((gt[c], "gray", 0), (pred[c], "gray", 0), (pred[c] - gt[c], "bwr", -1))):
            ax = axes[row, c]
            ax.imshow(img.numpy(), cmap=cmap, vmin=lo, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0, c].set_title(f"{ds.families[i]} {i}", fontsize=8)
    for row, name in enumerate(("ground truth", "prediction", "difference")):
        axes[row, 0].set_ylabel(name)
    fig.suptitle("training views", fontsize=10)
    fig.tight_layout()
    path = out / "convergence.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)

    if history:
        path = out / "curves.png"
        plot_curves(history, path)
        paths.append(path)
    return paths
