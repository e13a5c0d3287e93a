"""Blocks of ma_ea (seed 000, Lu, Yang, Yang 2024): hybrid attention (MA) and stem pooling.

- `ChannelAttention` (sec. 3.2.2, eqs. 12-17): concat(avg-pool, max-pool) over space ->
  1x1 conv 2C -> C -> MLP (C -> C/r -> C, ReLU) -> sigmoid; a (B, C, 1, 1) map.
- `SpatialAttention` (sec. 3.2.1, eqs. 6-11): concat(max, mean) over channels -> ASPP of
  four one-channel branches (1x1 conv and 3x3 atrous convs, each conv+BN+ReLU) -> concat
  (B, 4, H, W) -> 7x7 conv -> BN -> ReLU (as the text says; optional) -> sigmoid.
- `HybridAttention` (eq. 5): F_out = F + F * M_s(F) * M_c(F), both maps computed from F
  in parallel and combined by broadcast element-wise products.
- `MultiScaleMaxPool` (sec. 3.4): max-pools with kernel = stride = 2, 4, 8, the coarser
  outputs upsampled bilinearly to the 2x2 output's size, summed element-wise; replaces
  ResNet's 3x3/s2/p1 max-pool and has no parameters.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class ChannelAttention(nn.Module):
    """M_c(F) = sigmoid(MLP(Conv1x1(concat(avgpool(F), maxpool(F))))), shape (B, C, 1, 1)."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.fuse = nn.Linear(2 * channels, channels)        # the 1x1 conv 2C -> C of eq. 15
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean((2, 3)), x.amax((2, 3))], 1)  # (B, 2C), eq. 14
        return torch.sigmoid(self.mlp(self.fuse(pooled)))[:, :, None, None]  # (B, C, 1, 1)


def _conv_bn_relu(cin: int, cout: int, kernel: int, dilation: int = 1) -> nn.Sequential:
    pad = dilation * (kernel - 1) // 2
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=pad, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SpatialAttention(nn.Module):
    """M_s(F) = sigmoid(ReLU(BN(Conv7x7(concat(ASPP(concat(max_c F, mean_c F))))))), (B, 1, H, W).

    `dilations`: the 3x3 atrous branches beside the 1x1 branch (paper: four branches,
    "dilation rates of 4 and 8"; default (2, 4, 8)). `relu=False` drops the ReLU before the
    sigmoid (CBAM-style), which otherwise confines the map to [0.5, 1).
    """

    def __init__(self, dilations: Sequence[int] = (2, 4, 8), kernel: int = 7, relu: bool = True):
        super().__init__()
        self.branches = nn.ModuleList([_conv_bn_relu(2, 1, 1)] +
                                      [_conv_bn_relu(2, 1, 3, d) for d in dilations])
        self.conv = nn.Conv2d(len(self.branches), 1, kernel, padding=kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(1)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.cat([x.amax(1, keepdim=True), x.mean(1, keepdim=True)], 1)  # (B, 2, H, W), eq. 8
        a = torch.cat([branch(s) for branch in self.branches], 1)             # (B, 4, H, W), eq. 9
        z = self.bn(self.conv(a))                                             # (B, 1, H, W)
        return torch.sigmoid(F.relu(z) if self.relu else z)                   # eq. 10


class HybridAttention(nn.Module):
    """MA block, eq. 5: F + F * M_s(F) * M_c(F); keeps the shape (B, C, H, W)."""

    def __init__(self, channels: int, reduction: int = 16, dilations: Sequence[int] = (2, 4, 8),
                 spatial_relu: bool = True):
        super().__init__()
        self.channel = ChannelAttention(channels, reduction)
        self.spatial = SpatialAttention(dilations, relu=spatial_relu)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + x * self.spatial(x) * self.channel(x)  # (B, C, H, W)


class MultiScaleMaxPool(nn.Module):
    """Sum of max-pools with kernel = stride = k for k in `kernels`, upsampled to the first's size.

    ceil_mode makes the 2x2 pool's output ceil(H/2) x ceil(W/2), the size of ResNet's
    3x3/s2/p1 max-pool, for even and odd H, W. `fuse="mean"` divides the sum by the number
    of scales (keeps the activation scale pretrained layer1 expects; the paper sums).
    """

    def __init__(self, kernels: Sequence[int] = (2, 4, 8), fuse: str = "sum"):
        super().__init__()
        if fuse not in ("sum", "mean"):
            raise ValueError(f"fuse {fuse!r}; valid: ['sum', 'mean']")
        self.kernels = tuple(kernels)
        self.fuse = fuse

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [F.max_pool2d(x, k, k, ceil_mode=True) for k in self.kernels]  # (B, C, H/k, W/k)
        y = outs[0]                                                            # (B, C, H/2, W/2)
        for o in outs[1:]:
            y = y + F.interpolate(o, size=y.shape[-2:], mode="bilinear", align_corners=False)
        return y / len(outs) if self.fuse == "mean" else y

    def extra_repr(self) -> str:
        return f"kernels={self.kernels}, fuse={self.fuse!r}"
