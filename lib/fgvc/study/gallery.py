"""The Grad-CAM gallery figure of :func:`fgvc.study.cam_scores.cam_study`."""
from __future__ import annotations

import numpy as np

def cam_gallery(gallery: dict, title: str = "", dpi: int = 120):
    """The gallery of :func:`cam_study`: columns = images, rows = the input (yellow: the
    bird's box; cyan: the parts the pointing game counts), then one row per method, its
    CAM overlaid, labelled with the method, seed, target layer and map size; each tile says
    the true (input row) or predicted class (green: right, red: wrong).

    Tiles are at least as many figure pixels (at `dpi`, as :func:`fgvc.study.figures.save`
    writes) as the input has, so the input shows at its own resolution, never shrunk.
    """
    from pytorch_grad_cam.utils.image import show_cam_on_image

    from fgvc.data import denormalize
    from fgvc.study.figures import short_name  # (importing fgvc.study.figures sets the headless backend)

    import matplotlib.pyplot as plt

    images, labels, classes = gallery["images"], gallery["labels"], gallery["classes"]
    boxes, parts, columns = gallery.get("boxes"), gallery.get("parts"), gallery["columns"]
    n, h, w = len(images), images.shape[-2], images.shape[-1]
    rgb = denormalize(images.detach().cpu()).permute(0, 2, 3, 1).numpy()  # (N, H, W, 3)
    tile = max(1.6, 1.05 * max(h, w) / dpi)
    rows = 1 + len(columns)
    fig, axes = plt.subplots(rows, n, figsize=(tile * n + 1.4, (tile + 0.3) * rows), squeeze=False)
    for i in range(n):
        ax = axes[0, i]
        ax.imshow(rgb[i])
        if boxes is not None and boxes[i] is not None:
            x, y, bw, bh = boxes[i]
            ax.add_patch(plt.Rectangle((x - 0.5, y - 0.5), bw, bh, fill=False, lw=1, ec="yellow"))
        if parts is not None and len(parts[i]):
            pts = np.asarray(parts[i])
            ax.scatter(pts[:, 0] - 0.5, pts[:, 1] - 0.5, s=14, c="cyan", marker="+", linewidths=1)
        ax.set_xlim(-0.5, w - 0.5), ax.set_ylim(h - 0.5, -0.5)
        ax.set_title(f"true: {short_name(classes[labels[i]])}", fontsize=7)
        for r, col in enumerate(columns, start=1):
            ax = axes[r, i]
            ax.imshow(show_cam_on_image(rgb[i].astype(np.float32), col["cams"][i], use_rgb=True))
            pred = int(col["preds"][i])
            ax.set_title(f"pred: {short_name(classes[pred])}", fontsize=7,
                         color="green" if pred == labels[i] else "red")
    row_labels = [f"input\n{h}x{w} px"] + [
        f"{c.get('title', c['method'])}\n{c.get('layer', '')}\n{c.get('map', '')} map"
        for c in columns]
    for r, text in enumerate(row_labels):
        axes[r, 0].set_ylabel(text, fontsize=8, rotation=0, ha="right", va="center", labelpad=6)
    for ax in axes.ravel():
        ax.set_xticks([]), ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
