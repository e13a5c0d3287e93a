"""Class activation maps, window proposals from an attention map, batched crop-and-zoom.

Used by `focus` (seed 004): fixed-size windows are centred on every cell of a (B, g, g)
attention map, scored from the map, de-duplicated per image by non-maximum suppression, and
cut out of the images with `roi_align`, all batched over images (no Python loop over images).
Boxes are (x1, y1, x2, y2) in continuous input-pixel coordinates: pixel (i, j) covers
[j, j + 1) x [i, i + 1), so a box (left, top, left + w, top + h) with integer corners is
exactly the pixel crop `img[..., top:top + h, left:left + w]`.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torchvision.ops import nms, roi_align
from torchvision.transforms.functional import gaussian_blur


def class_activation_map(z: torch.Tensor, weight: torch.Tensor,
                         classes: torch.Tensor | None = None) -> torch.Tensor:
    """CAMs M_k = sum_i W_ki Z_i (seed 004 eq. 2, bias excluded as in CAM).

    z (B, n, h, w), weight (K, n). `classes` None: the element-wise max over all K class maps;
    `classes` (B,): each image's map of its own class. Returns (B, h, w).
    """
    if classes is None:
        return torch.einsum("kn,bnhw->bkhw", weight, z).amax(1)  # (B, K, h, w) -> (B, h, w)
    return torch.einsum("bn,bnhw->bhw", weight[classes], z)  # (B, h, w)


def smooth(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian smoothing of (B, h, w) maps, sigma in cells (kernel 2*ceil(3 sigma)+1, reflect
    padding, kernel capped to the map size); sigma 0 returns the maps unchanged."""
    if sigma <= 0:
        return maps
    k = min(2 * math.ceil(3 * sigma) + 1, 2 * min(maps.shape[-2:]) - 1)
    return gaussian_blur(maps[:, None], [k, k], [sigma, sigma])[:, 0]


def window_boxes(grid: tuple[int, int], image_size: tuple[int, int], fracs: Sequence[float],
                 device: torch.device | None = None) -> torch.Tensor:
    """(S * gh * gw, 4) windows: for each frac (scale-major), one window of frac x the image
    side centred on each cell of a gh x gw grid over the image (row-major), shifted (not
    clipped) to lie inside the image so every window keeps its size and holds only image."""
    (gh, gw), (H, W) = grid, image_size
    cy = (torch.arange(gh, device=device, dtype=torch.float32) + 0.5) * (H / gh)
    cx = (torch.arange(gw, device=device, dtype=torch.float32) + 0.5) * (W / gw)
    cy, cx = torch.meshgrid(cy, cx, indexing="ij")  # (gh, gw)
    out = []
    for f in fracs:
        h, w = min(f * H, H), min(f * W, W)
        y1 = (cy - h / 2).clamp(0, H - h)
        x1 = (cx - w / 2).clamp(0, W - w)
        out.append(torch.stack([x1, y1, x1 + w, y1 + h], -1).flatten(0, 1))  # (gh*gw, 4)
    return torch.cat(out)


def window_scores(att: torch.Tensor, boxes: torch.Tensor, image_size: tuple[int, int],
                  mode: str = "center") -> torch.Tensor:
    """(B, N) score of each window of `window_boxes` on the attention maps att (B, gh, gw).

    "center": the map's value at the window's grid cell (the paper: "each pixel in M
    corresponds to a region ... the pixel value measures the discriminativeness");
    "mean": the map's mean over the window (roi_align with one output bin).
    """
    B, gh, gw = att.shape
    if mode == "center":
        return att.flatten(1).repeat(1, boxes.shape[0] // (gh * gw))  # (B, S*gh*gw)
    scale = boxes.new_tensor([gw / image_size[1], gh / image_size[0]]).repeat(2)
    grid_boxes = (boxes * scale).expand(B, -1, -1)  # (B, N, 4) in map cells
    return crop_and_zoom(att[:, None], grid_boxes, (1, 1)).view(B, -1)  # (B, N)


def nms_topk(boxes: torch.Tensor, scores: torch.Tensor, k: int,
             iou: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per image: NMS at IoU `iou`, then the k best survivors in descending score.

    boxes (N, 4) shared by all images or (B, N, 4); scores (B, N). Returns boxes (B, k, 4),
    scores (B, k) and valid (B, k): True where the window survived NMS. Where fewer than k
    windows survive, the remaining slots hold the best *suppressed* windows (valid False), in
    descending score, so shapes stay fixed; survivors always come first.

    Batched over images like torchvision's `batched_nms` (its "coordinate trick": each image's
    boxes are offset so boxes of different images never overlap, then one `nms`), called
    directly because `batched_nms` falls back to a Python loop over images on CPU above 1000
    boxes (32 images x 196 windows at the scratch profile).
    """
    B, N = scores.shape
    boxes = boxes.expand(B, N, 4)
    offset = (boxes.max() + 1) * torch.arange(B, device=boxes.device, dtype=boxes.dtype)
    kept = nms((boxes + offset[:, None, None]).flatten(0, 1), scores.flatten(), iou)
    valid = torch.zeros(B * N, dtype=torch.bool, device=scores.device)
    valid = valid.index_fill(0, kept, True).view(B, N)  # (B, N)
    # Suppressed windows rank below every survivor but keep their order among themselves.
    span = scores.amax(1, keepdim=True) - scores.amin(1, keepdim=True) + 1  # (B, 1)
    idx = torch.where(valid, scores, scores - span).topk(k, dim=1).indices  # (B, k)
    return (boxes.gather(1, idx[..., None].expand(-1, -1, 4)), scores.gather(1, idx),
            valid.gather(1, idx))


def crop_and_zoom(images: torch.Tensor, boxes: torch.Tensor,
                  size: tuple[int, int]) -> torch.Tensor:
    """(B * k, C, *size): box j of image b (boxes (B, k, 4)) cut out and resized bilinearly.

    roi_align with aligned=True samples output pixel j of a box starting at x1 at
    x1 - 0.5 + (j + 0.5) * w / size in pixel-index coordinates, the same points as
    `F.interpolate(crop, size, mode="bilinear", align_corners=False)` of the pixel crop
    (i.e. torchvision's `resized_crop(..., antialias=False)`). sampling_ratio=0 takes one
    sample per output pixel when zooming in, and averages ceil(w / size) when shrinking.
    """
    B, k, _ = boxes.shape
    batch_idx = torch.arange(B, device=boxes.device, dtype=boxes.dtype).repeat_interleave(k)
    rois = torch.cat([batch_idx[:, None], boxes.flatten(0, 1)], 1).to(images.dtype)  # (B*k, 5)
    return roi_align(images, rois, output_size=size, spatial_scale=1.0, sampling_ratio=0,
                     aligned=True)  # (B*k, C, *size)


def upsample_to(maps: torch.Tensor, min_side: int) -> torch.Tensor:
    """(B, h, w) maps resized bilinearly so both sides are at least `min_side` (no-op if so)."""
    h, w = maps.shape[-2:]
    if min_side <= 0 or min(h, w) >= min_side:
        return maps
    f = min_side / min(h, w)
    size = (max(min_side, round(h * f)), max(min_side, round(w * f)))
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
