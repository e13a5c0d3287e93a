"""Figures of the study (matplotlib): Grad-CAM gallery, ablation charts, cost-accuracy scatter.

Every function returns a matplotlib Figure; :func:`save` writes it atomically as PNG.
"""
from __future__ import annotations

import os
import re
from typing import Sequence

import matplotlib

matplotlib.use(os.environ.get("MPLBACKEND", "Agg"))  # headless under papermill and pytest

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from .results import DATASET_NAMES  # noqa: E402

METHOD_ORDER = ["baseline", "ma_ea", "lafe", "pcanet", "focus"]


def save(fig, path) -> None:
    """Write `fig` as PNG to `path` atomically (the folder is created)."""
    from .io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")


def short_name(name: str, width: int = 16) -> str:
    """'001.Black_footed_Albatross' -> 'Black footed Alb…' (tile titles stay readable)."""
    name = re.sub(r"^\d+\.", "", name).replace("_", " ")
    return name if len(name) <= width else name[:width - 1] + "…"


def gallery(images: torch.Tensor, labels: Sequence[int], columns: Sequence[dict],
            classes: Sequence[str], title: str = "", boxes: Sequence | None = None,
            parts: Sequence | None = None):
    """Rows = images, columns = the input then one CAM overlay per entry of `columns`.

    `images`: (N, 3, H, W) normalised as the networks saw them; each column is a dict with
    `title`, `cams` (N, H, W) in [0, 1] and `preds` (N,); each tile says predicted vs true
    class, green when right, red when wrong. Optional `boxes` ((x, y, w, h) or None) and
    `parts` ((P, 2) x, y) in input pixels are drawn on the input tile (the box and the parts
    the pointing game counts).
    """
    from pytorch_grad_cam.utils.image import show_cam_on_image

    from .data import denormalize

    n, k = len(images), len(columns)
    rgb = denormalize(images.detach().cpu()).permute(0, 2, 3, 1).numpy()  # (N, H, W, 3)
    fig, axes = plt.subplots(n, k + 1, figsize=(1.9 * (k + 1), 2.0 * n + 0.4), squeeze=False)
    for i in range(n):
        axes[i, 0].imshow(rgb[i])
        if boxes is not None and boxes[i] is not None:
            x, y, w, h = boxes[i]
            axes[i, 0].add_patch(plt.Rectangle((x - 0.5, y - 0.5), w, h, fill=False, lw=1,
                                               ec="yellow"))
        if parts is not None and len(parts[i]):
            axes[i, 0].scatter(np.asarray(parts[i])[:, 0] - 0.5, np.asarray(parts[i])[:, 1] - 0.5,
                               s=14, c="cyan", marker="+", linewidths=1)
        axes[i, 0].set_title(f"true: {short_name(classes[labels[i]])}", fontsize=7)
        for j, col in enumerate(columns):
            ax = axes[i, j + 1]
            ax.imshow(show_cam_on_image(rgb[i].astype(np.float32), col["cams"][i], use_rgb=True))
            pred = int(col["preds"][i])
            ok = pred == labels[i]
            ax.set_title(f"pred: {short_name(classes[pred])}", fontsize=7,
                         color="green" if ok else "red")
        for ax in axes[i]:
            ax.set_xticks([]), ax.set_yticks([])
    for j, col in enumerate(columns):
        axes[0, j + 1].annotate(col["title"], (0.5, 1.28), xycoords="axes fraction",
                                ha="center", fontsize=9, weight="bold")
    axes[0, 0].annotate("input", (0.5, 1.28), xycoords="axes fraction", ha="center",
                        fontsize=9, weight="bold")
    if title:
        fig.suptitle(title, fontsize=10, y=1.0)
    fig.tight_layout()
    return fig


def ablation_chart(table: pd.DataFrame, method: str, dataset: str):
    """A method's ablation rows on one dataset: our mean ± std over seeds beside the paper's.

    `table` is `fgvc.results.ablation_table(runs, method)` (variants in the variants-file
    order; `paper` holds the paper's number for the dataset, CUB's on SynthBirds).
    """
    t = table[table["dataset"] == dataset].reset_index(drop=True)
    x = np.arange(len(t))
    fig, ax = plt.subplots(figsize=(1.3 * len(t) + 2.5, 3.6))
    w = 0.38
    ours = ax.bar(x - w / 2, t["mean"], w, yerr=t["std"], capsize=3, color="tab:blue",
                  label=f"ours ({DATASET_NAMES.get(dataset, dataset)}, mean ± std)")
    paper = pd.to_numeric(t["paper"], errors="coerce")
    paper_ds = "CUB" if dataset == "synthbirds" else DATASET_NAMES.get(dataset, dataset)
    theirs = ax.bar(x + w / 2, paper.fillna(0), w, color="tab:gray", alpha=0.7,
                    label=f"paper ({paper_ds})")
    for bars, values, extra in ((ours, t["mean"], [f"\nn={n}" for n in t["n"]]),
                                (theirs, paper, [""] * len(t))):
        for b, v, e in zip(bars, values, extra):
            if pd.notna(v):
                ax.annotate(f"{v:.1f}{e}", (b.get_x() + b.get_width() / 2, b.get_height()),
                            ha="center", va="bottom", fontsize=7, xytext=(0, 2),
                            textcoords="offset points")
    values = pd.concat([t["mean"] - t["std"], paper.dropna()])
    if len(values):
        lo = max(0.0, float(values.min()) - 10)
        ax.set_ylim(lo, min(100.0, float(pd.concat([t["mean"] + t["std"], paper.dropna()]).max()) + 8))
    ax.set_xticks(x, t["variant"], rotation=20, ha="right")
    ax.set_ylabel("test top-1 (%)")
    ax.set_title(f"{method}: ablation rows of the paper")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig


def cost_accuracy(points: pd.DataFrame, title: str = ""):
    """Scatter of inference GMACs (x) vs test top-1 mean ± std (y), one point per (method,
    variant). `points` has columns method, variant, infer_GMACs, mean, std."""
    fig, ax = plt.subplots(figsize=(6.2, 4.2))
    colours = dict(zip(METHOD_ORDER, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for method, g in points.groupby("method", sort=False):
        full = g["variant"] == "full"
        c = colours.get(method)
        ax.errorbar(g["infer_GMACs"], g["mean"], yerr=g["std"], fmt="none", ecolor=c, alpha=0.6)
        ax.scatter(g.loc[full, "infer_GMACs"], g.loc[full, "mean"], color=c, marker="o", s=50,
                   label=method)
        ax.scatter(g.loc[~full, "infer_GMACs"], g.loc[~full, "mean"], color=c, marker="x", s=35)
        for _, r in g.iterrows():
            ax.annotate(r["variant"], (r["infer_GMACs"], r["mean"]), fontsize=6,
                        xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("inference GMACs per image")
    ax.set_ylabel("test top-1 (%)")
    ax.set_title(title or "cost vs accuracy (o: full variant, x: ablation variants)", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def no_data(message: str):
    """A small figure that says why there is nothing to show."""
    fig, ax = plt.subplots(figsize=(5, 1.2))
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=9, wrap=True)
    ax.axis("off")
    return fig
