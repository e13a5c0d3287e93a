"""Dataset audit for notebooks/00_data.ipynb: class counts, image sizes, a sample grid with
boxes and part keypoints drawn."""
from __future__ import annotations

import random

import matplotlib.patches as patches
import matplotlib.pyplot as plt
import pandas as pd
from PIL import Image

from fgvc.data.base import Split, load_rgb


def class_counts(split: Split) -> pd.DataFrame:
    """Images per class in train and test."""
    rows = {c: {"train": 0, "test": 0} for c in split.classes}
    for part in ("train", "test"):
        for s in getattr(split, part):
            rows[split.classes[s.label]][part] += 1
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index.name = "class"
    return df


def image_sizes(split: Split, max_images: int = 500, seed: int = 0) -> pd.DataFrame:
    """Width, height and mode of up to `max_images` images (header read only, no decode)."""
    samples = split.samples
    pick = random.Random(seed).sample(samples, min(max_images, len(samples)))
    rows = []
    for s in pick:
        with Image.open(s.path) as im:
            rows.append({"width": im.width, "height": im.height, "mode": im.mode})
    return pd.DataFrame(rows)


def sample_grid(split: Split, n: int = 12, cols: int = 6, seed: int = 0, parts: bool = True):
    """A figure of `n` random training images with their box (and visible part keypoints)."""
    pick = random.Random(seed).sample(split.train, min(n, len(split.train)))
    rows = (len(pick) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, s in zip(axes.flat, pick):
        ax.imshow(load_rgb(s.path, split.crop_bottom))
        if s.box is not None:
            x, y, w, h = s.box
            ax.add_patch(patches.Rectangle((x, y), w, h, fill=False, color="lime", lw=1.2))
        if parts and s.parts:
            pts = [(px, py) for px, py, vis in s.parts if vis]
            if pts:
                ax.scatter(*zip(*pts), s=9, c="red", marker="o", linewidths=0)
        ax.set_title(split.classes[s.label][:24], fontsize=7)
    fig.tight_layout()
    return fig
