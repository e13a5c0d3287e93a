"""ma_ea: hybrid attention (MA) + attention erasure (EA) + multi-scale stem pooling.

Paper: Lu, Yang, Yang, "Fine-grained image classification method based on hybrid
attention module", Frontiers in Neurorobotics 2024 (seed 000). ResNet-50 at 448:
CUB 88.2; Table 2 gives Aircraft 92.8 / Cars 94.0, the abstract and text the reverse.

What it does (blocks in fgvc.layers.hybrid):
- Stem pooling (sec. 3.4): ResNet's 3x3/s2 max-pool is replaced by max-pools of 2x2, 4x4
  and 8x8 whose outputs are upsampled bilinearly to the 2x2 output and summed. No
  parameters, so pretrained ResNet weights load unchanged. EfficientNet-Lite0 has no
  max-pool; its first stride-2 step after the stem is block 1's depthwise convolution. The
  pooling goes there (before block 1, whose convolution then has stride 1), so the output
  stride and every pretrained weight's shape are unchanged
  (fgvc.models.backbones.replace_stem_pool); it is the place that plays the max-pool's part,
  a parameter-free downsampling early in the network, but block 1's pretrained weights now
  see a pooled map, which the ResNet placement does not do.
- MA (sec. 3.2, eq. 5): F_out = F + F * M_s(F) * M_c(F) inserted after backbone stages.
- EA (sec. 3.3, eqs. 18-20): the channel average of the attended feature map is
  upsampled to the image size and min-max normalised; pixels above theta are zeroed
  (fgvc.layers.erase) and the erased image goes through the same network again, in
  training only. Loss (sec. 3.5): CE(stage 1) + CE(stage 2).
- Head: global average pooling -> linear (shared by both passes).

Choices where the paper is unclear (Config field; default; alternatives):
- MA placement is not stated (`ma_stages`, default (2,) = after layer3). Table 4's +2.2 M
  parameters fit a 1024-channel map (the 1x1 conv 2C->C dominates); (3,) is after layer4,
  several stages are allowed. The text's "the input image is weighted by MA" is not
  taken literally (an MA on 3 RGB channels could not add 2.2 M parameters).
- ASPP dilations: "a 1x1 conv and three 3x3 atrous convs with dilation rates of 4 and 8"
  (`aspp_dilations`, default (2, 4, 8); any tuple, one branch each).
- BN + ReLU before the spatial sigmoid, as the text says, bound M_s to [0.5, 1)
  (`spatial_relu`, default True; False gives the CBAM-style full (0, 1) range).
- Eq. 3's "matrix multiplication" of F_c and F_s is read as eq. 5's broadcast
  element-wise product. MLP reduction r is not given (`reduction`, default 16, as in SE/CBAM).
- Stem pooling: kernel = stride = 2, 4, 8 (the upsampling the text describes only makes
  sense with strides > 2), ceil_mode so the 2x2 output equals the old pool's size for odd
  inputs too (`pool_kernels`). The three maps are summed as the paper says (`pool_fuse`
  "sum"); "mean" keeps the activation scale that pretrained layer1 was trained on.
- EA threshold theta is not given (`theta`, default 0.5 of the min-max-normalised map).
  The map comes from the output of the last MA block (the last of `ma_stages`; with
  use_ma=False, the plain output of that stage).
- Eq. 21 is garbled; we use the text's intent: the sum of both passes' cross-entropies.
- Test-time prediction is not stated (`test_logits`): "first" (default) = the stage-1
  logits, no extra cost at test; "mean" = the average of both passes' logits (also erases
  at test time, so eval costs two passes).

`complexity()` counts parameters and MACs of the paper's Table 4 rows with our modules
(tests/test_ma_ea.py prints them beside the paper's numbers and explains the gaps).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..layers.erase import erase
from ..layers.hybrid import HybridAttention, MultiScaleMaxPool
from ..models.backbones import replace_stem_pool
from .base import Method, MethodConfig
from .registry import register


@dataclass
class MaEaConfig(MethodConfig):
    use_pool: bool = True                     # multi-scale stem pooling (ResNet, Lite0)
    pool_kernels: tuple[int, ...] = (2, 4, 8)
    pool_fuse: str = "sum"                    # "sum" (paper) | "mean"
    use_ma: bool = True                       # hybrid attention blocks
    ma_stages: tuple[int, ...] = (2,)         # backbone stage indices followed by MA (0..3)
    reduction: int = 16                       # channel-attention MLP reduction r
    aspp_dilations: tuple[int, ...] = (2, 4, 8)
    spatial_relu: bool = True                 # ReLU before the spatial sigmoid (paper text)
    use_ea: bool = True                       # attention erasure + second pass in training
    theta: float = 0.5                        # erase where the normalised map > theta
    test_logits: str = "first"                # "first" | "mean" (of both passes)


@register
class MaEa(Method):
    name = "ma_ea"
    Config = MaEaConfig

    def __init__(self, num_classes: int, cfg: MaEaConfig):
        super().__init__(num_classes, cfg)
        if cfg.test_logits not in ("first", "mean"):
            raise ValueError(f"test_logits {cfg.test_logits!r}; valid: ['first', 'mean']")
        n_stages = len(self.backbone.stages)
        if not cfg.ma_stages or any(not 0 <= i < n_stages for i in cfg.ma_stages):
            raise ValueError(f"ma_stages {cfg.ma_stages!r}: give stage indices in "
                             f"0..{n_stages - 1}")
        if cfg.use_pool:
            replace_stem_pool(self.backbone, MultiScaleMaxPool(cfg.pool_kernels, cfg.pool_fuse))
        self.ma = nn.ModuleDict()
        if cfg.use_ma:
            for i in sorted(set(cfg.ma_stages)):
                self.ma[str(i)] = HybridAttention(self.backbone.channels[i], cfg.reduction,
                                                  cfg.aspp_dilations, cfg.spatial_relu)
        self.ea_stage = max(cfg.ma_stages)  # EA reads the attended map after this stage
        self.fc = nn.Linear(self.backbone.out_channels, num_classes)

    def cam_target_layers(self) -> list[nn.Module]:
        last = str(len(self.backbone.stages) - 1)
        return [self.ma[last] if last in self.ma else self.backbone.stages[-1]]

    def _pass(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(logits (B, K), pooled features (B, C), EA source map (B, C_i, h, w)) of one pass."""
        x = self.backbone.stem(x)  # (B, 64, H/4, W/4)
        source = x
        for i, stage in enumerate(self.backbone.stages):
            x = stage(x)
            if str(i) in self.ma:
                x = self.ma[str(i)](x)  # (B, C_i, h_i, w_i)
            if i == self.ea_stage:
                source = x
        feat = x.mean((2, 3))  # (B, C)
        return self.fc(feat), feat, source

    def erase_input(self, images: torch.Tensor,
                    source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Eqs. 18-20: (erased images (B, 3, H, W), mask (B, 1, H, W)) from a (B, C, h, w) map."""
        return erase(images, source.mean(1), self.cfg.theta)  # channel average (B, h, w)

    def forward(self, x: torch.Tensor, target: torch.Tensor | None = None) -> dict:
        logits, feat, source = self._pass(x)
        out = {"logits": logits, "logits_first": logits, "features": feat}
        if not self.cfg.use_ea or not (self.training or self.cfg.test_logits == "mean"):
            return out
        erased, mask = self.erase_input(x, source)
        logits_erased, _, _ = self._pass(erased)
        out.update(logits_erased=logits_erased, erase_mask=mask)
        if not self.training:  # test_logits == "mean"
            out["logits"] = (logits + logits_erased) / 2
        return out

    def loss(self, out: dict, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        ce = F.cross_entropy(out["logits_first"], target)
        parts = {"ce": ce.detach()}
        if "logits_erased" in out:
            ce_erased = F.cross_entropy(out["logits_erased"], target)
            parts["ce_erased"] = ce_erased.detach()
            ce = ce + ce_erased
        return ce, parts


# The paper's Table 4 (448 px, RTX 3090): its "FLOPs" are MACs.
PAPER_TABLE4 = {"ResNet-50": {"params_M": 22.4, "GMACs": 16.5, "ms": 26.4},
                "+MA": {"params_M": 24.6, "GMACs": 18.5, "ms": 33.1},
                "+MA+EA": {"params_M": 25.8, "GMACs": 19.8, "ms": 35.6}}
TABLE4_VARIANTS = {"ResNet-50": dict(use_pool=False, use_ma=False, use_ea=False),
                   "+MA": dict(use_pool=True, use_ma=True, use_ea=False),
                   "+MA+EA": dict(use_pool=True, use_ma=True, use_ea=True)}


def complexity(backbone: str = "resnet50", input_size: int = 448, num_classes: int = 200,
               **cfg) -> dict[str, dict[str, float]]:
    """Parameters (M) and GMACs (FLOPs / 2, torch.utils.flop_counter) of Table 4's rows.

    Rows: ResNet-50 (variant `resnet`), +MA (`pool_ma`: the pool has no parameters and no
    counted MACs) and +MA+EA (`full`). `GMACs` is one eval-mode forward of one image (the
    test-time cost); `train_GMACs` one training-mode forward, which for +MA+EA includes the
    second pass of the erased image. Built on the meta device: shapes only, no compute.
    Counted by the study's cost model, fgvc.cost.
    """
    from ..cost import count_flops, count_params
    from .registry import create_method

    rows = {}
    for row, switches in TABLE4_VARIANTS.items():
        with torch.device("meta"):
            model = create_method("ma_ea", num_classes, backbone=backbone, weights="none",
                                  input_size=input_size, **{**cfg, **switches})
            x = torch.empty(1, 3, input_size, input_size)
        macs = {}
        for mode in ("eval", "train"):
            model.train(mode == "train")
            with torch.no_grad():
                macs[mode] = count_flops(model, x) / 2e9
        rows[row] = {"params_M": count_params(model) / 1e6,
                     "GMACs": macs["eval"], "train_GMACs": macs["train"]}
    return rows
