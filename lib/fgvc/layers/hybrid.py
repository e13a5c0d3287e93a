"""Blocks of ma_ea (seed 000): hybrid attention (MA) and the multi-scale stem pooling.

- `ChannelAttention` (sec. 3.2.2, eqs. 12-17): concat(avg-pool, max-pool) over space ->
  1x1 conv 2C -> C -> MLP (C -> C/r -> C, ReLU) -> sigmoid; a (B, C, 1, 1) map.
- `SpatialAttention` (sec. 3.2.1, eqs. 6-11): concat(max, mean) over channels -> ASPP of
  four one-channel branches (1x1 conv and 3x3 atrous convs, each conv+BN+ReLU) -> concat
  (B, 4, H, W) -> 7x7 conv -> sigmoid, as eqs. 10-11 write it. The prose's BN and ReLU
  between the 7x7 conv and the sigmoid are options (`bn`, `relu`; off by default).
- `HybridAttention` (eq. 5): F_out = F + F * M_s(F) * M_c(F), both maps computed from F
  in parallel and combined by broadcast element-wise products. `return_parts=True` also
  returns F' = F * M_s * M_c (eqs. 3-4) and the ASPP concat (eq. 9), the maps attention
  erasure can read.
- `MultiScaleMaxPool` (sec. 3.4): max-pools with kernel = stride = 2, 4, 8, the coarser
  outputs upsampled bilinearly to the 2x2 output's size, summed element-wise; replaces
  ResNet's 3x3/s2/p1 max-pool and has no parameters.
- `PoolBranch` (ours, not the paper's): that pooling beside a pretrained stride-2 step instead
  of in its place, projected by a 1x1 conv + BN and added through a zero-initialised gate.
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
    """M_s(F) = sigmoid(Conv7x7(concat(ASPP(concat(max_c F, mean_c F))))), (B, 1, H, W) (eq. 11).

    `dilations`: the 3x3 atrous branches beside the 1x1 branch (paper: four branches,
    "dilation rates of 4 and 8"; default (2, 4, 8)). `bn=True` puts a BatchNorm between the
    7x7 conv and the sigmoid (the conv then has no bias; without BN it has one), `relu=True`
    a ReLU, as the prose of sec. 3.2.1 has it; with the ReLU the map is confined to [0.5, 1).
    """

    def __init__(self, dilations: Sequence[int] = (2, 4, 8), kernel: int = 7,
                 relu: bool = False, bn: bool = False):
        super().__init__()
        self.branches = nn.ModuleList([_conv_bn_relu(2, 1, 1)] +
                                      [_conv_bn_relu(2, 1, 3, d) for d in dilations])
        self.conv = nn.Conv2d(len(self.branches), 1, kernel, padding=kernel // 2, bias=not bn)
        self.bn = nn.BatchNorm2d(1) if bn else nn.Identity()
        self.relu = relu

    def forward(self, x: torch.Tensor, return_aspp: bool = False):
        """M_s (B, 1, H, W); with `return_aspp`, (M_s, the ASPP concat (B, 4, H, W) of eq. 9)."""
        s = torch.cat([x.amax(1, keepdim=True), x.mean(1, keepdim=True)], 1)  # (B, 2, H, W), eq. 8
        a = torch.cat([branch(s) for branch in self.branches], 1)             # (B, 4, H, W), eq. 9
        z = self.bn(self.conv(a))                                             # (B, 1, H, W)
        m = torch.sigmoid(F.relu(z) if self.relu else z)                      # eq. 10
        return (m, a) if return_aspp else m


class HybridAttention(nn.Module):
    """MA block, eq. 5: F + F * M_s(F) * M_c(F); keeps the shape (B, C, H, W).

    `return_parts=True` returns (F_out, {"attended": F' = F * M_s * M_c (B, C, H, W),
    "aspp": the spatial branch's ASPP concat (B, 4, H, W)}).
    """

    def __init__(self, channels: int, reduction: int = 16, dilations: Sequence[int] = (2, 4, 8),
                 spatial_relu: bool = False, spatial_bn: bool = False):
        super().__init__()
        self.channel = ChannelAttention(channels, reduction)
        self.spatial = SpatialAttention(dilations, relu=spatial_relu, bn=spatial_bn)

    def forward(self, x: torch.Tensor, return_parts: bool = False):
        if return_parts:
            ms, aspp = self.spatial(x, return_aspp=True)  # (B, 1, H, W), (B, 4, H, W)
        else:
            ms = self.spatial(x)
        attended = x * ms * self.channel(x)               # (B, C, H, W), F' of eqs. 3-4
        out = x + attended                                # eq. 4 / 5
        return (out, {"attended": attended, "aspp": aspp}) if return_parts else out


class MultiScaleMaxPool(nn.Module):
    """Sum of max-pools with kernel = stride = k for k in `kernels`, upsampled to the first's size.

    ceil_mode makes the 2x2 pool's output ceil(H/2) x ceil(W/2), the size of ResNet's
    3x3/s2/p1 max-pool, for even and odd H, W. `fuse="mean"` divides the sum by the number
    of scales (keeps the activation scale pretrained layer1 expects; the paper sums).
    """

    def __init__(self, kernels: Sequence[int] = (2, 4, 8), fuse: str = "sum"):
        super().__init__()
        if fuse not in ("sum", "mean"):  # pragma: no mutate block
            raise ValueError(f"fuse {fuse!r}; valid: ['sum', 'mean']")
        self.kernels = tuple(kernels)
        self.fuse = fuse

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [F.max_pool2d(x, k, k, ceil_mode=True) for k in self.kernels]  # (B, C, H/k, W/k)
        y = outs[0]                                                            # (B, C, H/2, W/2)
        for o in outs[1:]:
            y = y + F.interpolate(o, size=y.shape[-2:], mode="bilinear", align_corners=False)
        return y / len(outs) if self.fuse == "mean" else y

    def extra_repr(self) -> str:  # pragma: no mutate block
        return f"kernels={self.kernels}, fuse={self.fuse!r}"


class PoolBranch(nn.Module):
    """gate * BN(Conv1x1(MultiScaleMaxPool(x))): the multi-scale pooling as a side branch.

    Ours, not the paper's (sec. 3.4 substitutes the pooling for ResNet's max-pool): on a
    backbone whose stride-2 step is a pretrained convolution (EfficientNet-Lite0's block 1),
    the pooling goes beside that step instead of before it, and its output is added to the
    step's. (B, c_in, H, W) -> (B, c_out, ceil(H/2), ceil(W/2)). The 1x1 convolution maps the
    channels to the step's, BN puts the pooled map on a unit scale, and the gate, one learnable
    value per output channel, starts at 0: at initialisation the branch adds exactly 0, so the
    network is the pretrained one, and training decides how much pooling to let in.
    """

    def __init__(self, c_in: int, c_out: int, kernels: Sequence[int] = (2, 4, 8),
                 fuse: str = "sum"):
        super().__init__()
        self.pool = MultiScaleMaxPool(kernels, fuse)
        self.proj = nn.Conv2d(c_in, c_out, 1, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.gate = nn.Parameter(torch.zeros(1, c_out, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate * self.bn(self.proj(self.pool(x)))  # (B, c_out, H/2, W/2)
