"""Diagnostics of a trained run beyond its accuracy: where focus's regions land.

    python -m fgvc.dev.diagnostics focus-regions results/runs/<run_id> [more run folders] [--images 200]

For each run of `focus`, on its first test images (spread over the classes, as the CAM
scores use): the m windows that training would crop (proposed from the max-over-classes CAM
by the trained model), and for each the share of the window inside the bird's box, whether
its centre lies on the bird, and the accuracy of the region head alone on the l windows the
hybrid head uses. A region branch that learns crops the bird; one whose CAM is drawn by the
background crops clutter, and its region head stays near chance.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import torch

from fgvc.layers.regions import crop_and_zoom


def _inside_share(boxes: torch.Tensor, bird: torch.Tensor) -> torch.Tensor:
    """(k,) share of each (x0, y0, x1, y1) window's area inside the bird box (x0, y0, x1, y1)."""
    ix = (torch.minimum(boxes[:, 2], bird[2]) - torch.maximum(boxes[:, 0], bird[0])).clamp(min=0)
    iy = (torch.minimum(boxes[:, 3], bird[3]) - torch.maximum(boxes[:, 1], bird[1])).clamp(min=0)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return ix * iy / area.clamp(min=1e-9)


@torch.no_grad()
def focus_regions(run_dir: str | Path, n_images: int = 200) -> dict:
    """Where a focus run's windows land on its test images (see the module docstring)."""
    from fgvc.study.cam_scores import load_run_cams

    rc = load_run_cams(run_dir, n_images)
    if rc.method != "focus":
        raise ValueError(f"{rc.run_id} is a {rc.method!r} run; focus-regions needs focus")
    model, cfg = rc.model, rc.model.cfg
    x = rc.images
    z = model.backbone(x)
    logits = model.fc(z.mean((2, 3)))
    boxes, _ = model.propose(model.attention(z, logits), tuple(x.shape[-2:]), cfg.num_regions)
    crops = crop_and_zoom(x, boxes[:, :cfg.num_hybrid], model.zoom_size(*x.shape[-2:]))
    region_logits = model.region_fc(model.backbone(crops).mean((2, 3)))  # (B * l, K)
    labels = torch.tensor(rc.labels)
    shares, centres = [], []
    for b, bird in enumerate(rc.boxes):
        if bird is None:
            continue
        bx, by, bw, bh = bird
        bird_t = torch.tensor([bx, by, bx + bw, by + bh])
        shares.append(_inside_share(boxes[b], bird_t))
        cx, cy = (boxes[b, :, 0] + boxes[b, :, 2]) / 2, (boxes[b, :, 1] + boxes[b, :, 3]) / 2
        centres.append(((cx >= bird_t[0]) & (cx <= bird_t[2]) & (cy >= bird_t[1])
                        & (cy <= bird_t[3])).float())
    shares, centres = torch.stack(shares), torch.stack(centres)  # (N, m)
    region_pred = region_logits.argmax(1).view(len(labels), cfg.num_hybrid)
    return {"run_id": rc.run_id, "variant": rc.variant, "seed": rc.seed, "images": len(labels),
            "regions": cfg.num_regions, "zoom_px": model.zoom_size(*x.shape[-2:])[0],
            "window_inside_bird": float(shares.mean()),
            "centre_on_bird": float(centres.mean()),
            "top_window_inside_bird": float(shares[:, 0].mean()),
            "region_head_top1": float((region_pred == labels[:, None]).float().mean() * 100),
            "image_head_top1": float((logits.argmax(1) == labels).float().mean() * 100)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fgvc.dev.diagnostics", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("focus-regions", help="where focus's windows land on the test images")
    f.add_argument("runs", nargs="+", type=Path)
    f.add_argument("--images", type=int, default=200)
    a = p.parse_args(argv)
    rows = [focus_regions(r, a.images) for r in a.runs]
    print(pd.DataFrame(rows).round(3).to_markdown(index=False))
    return 0


if __name__ == "__main__":
    from fgvc.cli import run as run_cli

    sys.exit(run_cli(main))
