"""pcanet: Progressive Co-Attention Network (Zhang, Chang, Ma, Guo, VCIP 2021; seed 002).

What it does (training; batches hold same-class pairs, image i and i + B/2):
1. F_O: backbone features of the original images, pooled and classified (CE). This branch
   alone is the test-time prediction, so eval costs exactly the backbone and its head.
2. CA module (sec. 3.1, `use_ca`): for each pair W = softmax_row(-(F1' F2'^T)) (c x c),
   F_W = W F' (fgvc.layers.coattention); the pooled F_W is classified (CE).
3. AE module (sec. 3.2, `use_ae`): an attention map is taken from F_W, upsampled to the
   image, thresholded at theta; the erased image I * M goes through the same network again
   and its pooled features F_E are classified (CE) (fgvc.layers.erase).
4. Centre loss (sec. 3.3, `use_center`, Wen et al. ECCV 2016) on the pooled F_O.
   L = CE(F_O) + CE(F_W) + CE(F_E) + lambda * L_cen (eq. 6). One FC layer classifies all
   three ("a fully-connection layer"; the authors' code shares it too).

Choices where the paper is unclear (alternatives are Config fields):
- Pair order (`ca_shared`): eq. 2 applies one W, computed from (F1, F2), to both images, so
  the first image of the pair defines W's rows and swapping the pair changes W to
  softmax_row(-(F2' F1'^T)) (default, paper). `ca_shared=False`: each image gets its own W
  with itself as the row image (authors' code), symmetric under swapping. The authors' code
  also adds the input back, F_W = W F' + F' (`ca_residual`, off by default: not in the text).
- Attention map (`ae_map`): the text picks the channel of F_W with the largest GAP value
  ("max_channel", default); eq. 3 writes a max over channels ("max_over_channels").
  Without CA (variants `ae`, `ae_center`) the map is taken from F_O in the same way.
- Theta is not given: `ae_theta` = 0.5 on the min-max normalised map (fgvc.layers.erase).
  The authors' code samples a WS-DAN-style random channel and threshold in [0.2, 0.5] x max.
- Pooling (`pooling`): the text says "bilinear pooling" without details. Default "gap":
  global average pooling, the baseline's head, so the study compares the paper's three
  contributions on the same head and eval costs exactly the baseline. "bap": the authors'
  code's WS-DAN bilinear attention pooling, the first `num_attention` (32) channels of the
  last feature map used as attention maps, features (M x C) / hw, signed sqrt, L2 norm,
  x100 into the FC; co-attention then acts on those M maps. Not reproduced: the authors
  cut layer4 short (512-channel maps from inside the second bottleneck of layer4), which is
  specific to ResNet bottlenecks; we pool the backbone's full last stage.
- Centre loss: lambda (`center_weight`) and the centre update rate alpha (`center_rate`)
  are not given; defaults 1.0 and 0.05 (the authors' code: weight 1, alpha 1 - 0.95).
  L_cen = 1/2 mean_i ||x_i - c_{y_i}||^2 (Wen's sum, averaged over the batch so lambda does
  not depend on the batch size). Centres are a buffer (zeros at start) updated in `loss()`
  in training mode by Wen's rule, without gradient: c_j -= alpha * sum_{y_i=j} (c_j - x_i)
  / (1 + n_j). `center_normalize` (default on, as the authors' code): x_i is L2-normalised
  first; raw GAP features of ResNet-50 have norms near 30, which with lambda = 1 would
  swamp the cross-entropy. The centre loss uses the original images' features only.
- Loss: the sum of eq. 6 (default); the authors' code averages the CE terms.
- F_W is formed literally (W F') although GAP(W F') = W GAP(F') would save one c x c x hw
  product (~2.5% of a ResNet-50 training step at 448); the AE module needs the maps anyway.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..layers.coattention import co_attend
from ..layers.erase import erase
from .base import Method, MethodConfig
from .registry import register

AE_MAPS = ("max_channel", "max_over_channels")
POOLINGS = ("gap", "bap")


@dataclass
class PCANetConfig(MethodConfig):
    use_ca: bool = True             # co-attention branch F_W (sec. 3.1)
    use_ae: bool = True             # attention-erase branch F_E (sec. 3.2)
    use_center: bool = True         # centre loss (sec. 3.3)
    ca_shared: bool = True          # one W per pair for both images (eq. 2); False: own W each
    ca_residual: bool = False       # F_W = W F' + F' (authors' code)
    ae_map: str = "max_channel"     # or "max_over_channels" (eq. 3)
    ae_theta: float = 0.5           # erase where the min-max normalised map exceeds theta
    center_weight: float = 1.0      # lambda in eq. 6
    center_rate: float = 0.05       # alpha, centre update rate (Wen et al.)
    center_normalize: bool = True   # L2-normalise features before the centre loss
    pooling: str = "gap"            # or "bap" (authors' code, WS-DAN bilinear attention pooling)
    num_attention: int = 32         # attention maps for pooling="bap"


def check_pairs(target: torch.Tensor) -> None:
    """Co-attention pairs image i with image i + B/2: they must share a label (one host sync)."""
    half = target.shape[0] // 2
    if target.shape[0] % 2 or not torch.equal(target[:half], target[half:]):
        raise ValueError(
            "pcanet: image i and image i + B/2 of a training batch must share a label (the "
            "paired sampler fgvc.data.samplers.PairedBatchSampler with mode='halves' builds such "
            f"batches); got labels {target.tolist()}")


def attention_map(fmap: torch.Tensor, mode: str = "max_channel") -> torch.Tensor:
    """(B, c, h, w) -> (B, h, w): the channel with the largest GAP value, or the max over channels."""
    if mode == "max_over_channels":
        return fmap.amax(1)                                         # (B, h, w)
    top = fmap.mean((2, 3)).argmax(1)                               # (B,)
    return fmap[torch.arange(fmap.shape[0], device=fmap.device), top]  # (B, h, w)


def bilinear_attention_pool(fmap: torch.Tensor, att: torch.Tensor) -> torch.Tensor:
    """WS-DAN BAP: fmap (B, C, h, w), att (B, M, h, w) -> unit-norm (B, M*C) features."""
    x = torch.einsum("bmhw,bchw->bmc", att, fmap) / (fmap.shape[2] * fmap.shape[3])  # (B, M, C)
    x = torch.sign(x) * torch.sqrt(x.abs() + 1e-5)
    return F.normalize(x.flatten(1), dim=1)                         # (B, M*C)


class CenterLoss(nn.Module):
    """Centre loss (Wen et al., ECCV 2016): 1/2 mean_i ||x_i - c_{y_i}||^2, centres as a buffer.

    `forward` computes the loss (gradient flows to the features only); `update` moves the
    centres by Wen's rule, c_j -= alpha * sum_{i: y_i = j} (c_j - x_i) / (1 + n_j).
    """

    def __init__(self, num_classes: int, dim: int, rate: float):
        super().__init__()
        self.rate = rate
        self.register_buffer("centers", torch.zeros(num_classes, dim))

    def forward(self, feat: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """float32 even under autocast: float32 operands, and no op here that autocast lowers."""
        return 0.5 * (feat.float() - self.centers[target].float()).pow(2).sum(1).mean()

    @torch.no_grad()
    def update(self, feat: torch.Tensor, target: torch.Tensor) -> None:
        diff = self.centers[target] - feat.to(self.centers.dtype)                 # (B, D)
        delta = torch.zeros_like(self.centers).index_add_(0, target, diff)        # (K, D)
        count = torch.zeros_like(self.centers[:, 0]).index_add_(
            0, target, torch.ones_like(diff[:, 0]))                               # (K,)
        self.centers -= self.rate * delta / (1 + count)[:, None]


@register
class PCANet(Method):
    name = "pcanet"
    Config = PCANetConfig
    pair_mode = "halves"
    bap_scale = 100.0   # WS-DAN / authors: the unit-norm BAP vector enters the FC scaled by 100

    def __init__(self, num_classes: int, cfg: PCANetConfig):
        super().__init__(num_classes, cfg)
        if cfg.ae_map not in AE_MAPS:
            raise ValueError(f"pcanet.ae_map = {cfg.ae_map!r}; valid: {list(AE_MAPS)}")
        if cfg.pooling not in POOLINGS:
            raise ValueError(f"pcanet.pooling = {cfg.pooling!r}; valid: {list(POOLINGS)}")
        c = self.backbone.out_channels
        if cfg.pooling == "bap" and not 0 < cfg.num_attention <= c:
            raise ValueError(f"pcanet.num_attention must be in 1..{c}, got {cfg.num_attention}")
        dim = c * cfg.num_attention if cfg.pooling == "bap" else c
        self.fc = nn.Linear(dim, num_classes)
        self.center = CenterLoss(num_classes, dim, cfg.center_rate) if cfg.use_center else None

    def _pool(self, fmap: torch.Tensor, att: torch.Tensor | None = None) -> torch.Tensor:
        """Pooled features (B, D) of fmap (B, C, h, w); `att` replaces the pooled maps (F_W)."""
        if self.cfg.pooling == "gap":
            return (fmap if att is None else att).mean((2, 3))                # (B, C)
        att = fmap[:, :self.cfg.num_attention] if att is None else att        # (B, M, h, w)
        return bilinear_attention_pool(fmap, att)                             # (B, M*C)

    def _classify(self, feat: torch.Tensor) -> torch.Tensor:
        return self.fc(feat * self.bap_scale if self.cfg.pooling == "bap" else feat)

    def forward(self, x: torch.Tensor, target: torch.Tensor | None = None) -> dict:
        cfg = self.cfg
        fmap = self.backbone(x)                                   # (B, C, h, w)
        feat = self._pool(fmap)                                   # (B, D)
        out = {"logits": self._classify(feat), "features": feat}
        if not self.training:
            return out
        if target is not None:
            check_pairs(target)
        # The maps co-attention acts on: all channels (gap) or the M attention maps (bap).
        maps = fmap if cfg.pooling == "gap" else fmap[:, :cfg.num_attention]  # (B, c', h, w)
        if cfg.use_ca:
            maps = co_attend(maps, cfg.ca_shared, cfg.ca_residual)  # F_W (B, c', h, w)
            out["logits_ca"] = self._classify(self._pool(fmap, maps))
        if cfg.use_ae:
            att = attention_map(maps.detach(), cfg.ae_map)        # (B, h, w)
            erased, mask = erase(x, att, cfg.ae_theta)            # (B, 3, H, W), (B, 1, H, W)
            out["logits_ae"] = self._classify(self._pool(self.backbone(erased)))
            out.update(erased=erased, erase_mask=mask)
        return out

    def loss(self, out: dict, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Eq. 6: CE on F_O, F_W, F_E + lambda * centre loss; updates the centres in training."""
        parts = {"ce": F.cross_entropy(out["logits"], target)}
        for key, name in (("logits_ca", "ce_ca"), ("logits_ae", "ce_ae")):
            if key in out:
                parts[name] = F.cross_entropy(out[key], target)
        total = sum(parts.values())
        if self.center is not None:
            feat = out["features"].float()
            if self.cfg.center_normalize:
                feat = F.normalize(feat, dim=1)
            parts["center"] = self.center(feat, target)
            total = total + self.cfg.center_weight * parts["center"]
            if self.training:
                self.center.update(feat.detach(), target)
        return total, {k: v.detach() for k, v in parts.items()}
