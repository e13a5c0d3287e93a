"""baseline: a ResNet (or EfficientNet-Lite0) fine-tuned with a new linear head.

backbone -> global average pooling -> dropout (0 by default) -> linear -> cross-entropy.
The papers quote ResNet-50 at 448: CUB 84.1-85.6, Cars 91.7-92.9, Aircraft 88.5-90.3.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fgvc.methods.base import Method, MethodConfig
from fgvc.methods.registry import register


@dataclass
class BaselineConfig(MethodConfig):
    dropout: float = 0.0


@register(order=10)
class Baseline(Method):
    name = "baseline"
    Config = BaselineConfig

    def __init__(self, num_classes: int, cfg: BaselineConfig):
        super().__init__(num_classes, cfg)
        self.dropout = nn.Dropout(cfg.dropout)
        self.fc = nn.Linear(self.backbone.out_channels, num_classes)

    def forward(self, x: torch.Tensor, target: torch.Tensor | None = None) -> dict:
        feat = self.backbone(x).mean(dim=(2, 3))  # (B, C)
        return {"logits": self.fc(self.dropout(feat)), "features": feat}
