"""Squeeze-and-excitation over channels (SENet, CVPR 2018) and over positions (LAFE).

`ChannelSE`: squeeze = global average pooling over H, W -> (B, C); excitation = FC C -> C/r,
ReLU, FC -> C, sigmoid; output = x scaled per channel.

`RegionSE` (LAFE, seed 001, sec. 3.2, eqs. 5-7): the same with the roles of channels and
positions exchanged. Squeeze = mean over the channels -> (B, H*W); excitation = FC
H*W -> H*W/r, ReLU, FC -> H*W, gate; output = x scaled per position. Its FC sizes depend on
the grid, so it is built for one (H, W) and raises a ValueError naming both grids when fed
another. The paper's eq. 6 writes ReLU for both activations; `gate="sigmoid"` (default)
follows SENet, `gate="relu"` is the literal reading.

Both split `forward` into `squeeze` and `excite`, so a caller with several attention heads
on one input (LAFE's discriminative and confusable heads) squeezes once and combines the
gates before touching the full-size map.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

GATES = ("sigmoid", "relu")


def _gate(z: torch.Tensor, kind: str) -> torch.Tensor:
    return torch.sigmoid(z) if kind == "sigmoid" else F.relu(z)


class ChannelSE(nn.Module):
    """x * sigmoid(W2 relu(W1 GAP(x))), per channel. Hidden width max(1, channels // reduction)."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    @staticmethod
    def squeeze(x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))  # (B, C, H, W) -> (B, C)

    def excite(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc2(F.relu(self.fc1(z))))  # (B, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.excite(self.squeeze(x))[:, :, None, None]  # (B, C, H, W)


class RegionSE(nn.Module):
    """x * gate(W2 relu(W1 mean_c(x))), per position of a fixed (height, width) grid.

    Hidden width max(1, height * width // reduction) (the paper: reduction 7).
    """

    def __init__(self, height: int, width: int, reduction: int = 7, gate: str = "sigmoid"):
        super().__init__()
        if gate not in GATES:  # pragma: no mutate block
            raise ValueError(f"gate must be one of {GATES}, got {gate!r}")
        self.height, self.width, self.gate = height, width, gate
        positions = height * width
        hidden = max(1, positions // reduction)
        self.fc1 = nn.Linear(positions, hidden)
        self.fc2 = nn.Linear(hidden, positions)

    def extra_repr(self) -> str:  # pragma: no mutate block
        return f"grid={self.height}x{self.width}, gate={self.gate}"

    def check_grid(self, x: torch.Tensor) -> None:  # pragma: no mutate block
        """ValueError unless x's spatial size is the grid this module was built for."""
        h, w = x.shape[-2:]
        if (h, w) != (self.height, self.width):
            raise ValueError(f"region attention was built for a {self.height}x{self.width} grid "
                             f"({self.height * self.width} positions), got a {h}x{w} feature map")

    def squeeze(self, x: torch.Tensor) -> torch.Tensor:
        self.check_grid(x)
        return x.mean(dim=1).flatten(1)  # (B, C, H, W) -> (B, H*W), eq. 5

    def excite(self, z: torch.Tensor) -> torch.Tensor:
        s = _gate(self.fc2(F.relu(self.fc1(z))), self.gate)  # (B, H*W), eq. 6
        return s.view(-1, 1, self.height, self.width)       # (B, 1, H, W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.excite(self.squeeze(x))  # (B, C, H, W), eq. 7
