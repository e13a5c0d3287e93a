"""Attention erasure, shared by ma_ea (seed 000, eqs. 18-20) and pcanet (seed 002, AE module).

An attention map (B, h, w) is min-max normalised per image, upsampled bilinearly to the
image size, and every pixel whose value exceeds `theta` is set to zero in the image, so the
network sees the image without its most discriminative region in a second pass.
The map's normalisation and upsampling run in float32 even under autocast (bf16's 8-bit
mantissa would move the threshold's edge); the mask is float32 (0 / 1).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def normalize_map(att: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Min-max normalise each map of (B, h, w) to [0, 1], in float32."""
    flat = att.flatten(1).float()
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    return ((flat - lo) / (hi - lo).clamp_min(eps)).view_as(att)


def erase_mask(att: torch.Tensor, size: tuple[int, int], theta: float) -> torch.Tensor:
    """(B, 1, H, W) float32 mask: 0 where the normalised, upsampled map exceeds `theta`, else 1."""
    # float32 operands; autocast lowers none of these ops (no autocast context: meta tensors)
    up = F.interpolate(normalize_map(att.detach())[:, None], size=size,
                       mode="bilinear", align_corners=False)  # (B, 1, H, W)
    return (normalize_map(up[:, 0]) <= theta).float()[:, None]


def erase(images: torch.Tensor, att: torch.Tensor, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(erased images, mask): images (B, 3, H, W) zeroed where the attention is above theta."""
    mask = erase_mask(att, images.shape[-2:], theta).to(images.dtype)
    return images * mask, mask
