"""The one augmentation recipe shared by every method (torchvision.transforms.v2).

Train: Resize((resize, resize)) -> RandomCrop(crop) -> flips -> optional rotation.
Eval:  Resize((resize, resize)) -> CenterCrop(crop).
Both end with float conversion and ImageNet normalisation. The paper profile uses
resize=550, crop=448; the random ops draw from torch's global RNG (seeded per worker).
"""
from __future__ import annotations

import torch
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build_transforms(resize: int, crop: int, train: bool, rotation: float = 0.0,
                     hflip: bool = True, vflip: bool = False) -> v2.Compose:
    """PIL RGB image -> normalised float tensor of shape (3, crop, crop)."""
    if crop > resize:
        raise ValueError(f"crop ({crop}) must not exceed resize ({resize})")
    ops: list = [v2.ToImage(), v2.Resize((resize, resize), antialias=True)]
    if train:
        ops.append(v2.RandomCrop(crop))
        if hflip:
            ops.append(v2.RandomHorizontalFlip())
        if vflip:
            ops.append(v2.RandomVerticalFlip())
        if rotation:
            ops.append(v2.RandomRotation(rotation))
    else:
        ops.append(v2.CenterCrop(crop))
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return v2.Compose(ops)


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """Undo the ImageNet normalisation: (..., 3, H, W) -> values in [0, 1] (for display)."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x * std + mean).clamp(0, 1)
