"""focus: learning to focus and discriminate (ICIP 2019; seed 004).

One backbone, three softmax heads:
- image level: backbone -> Z (B, n, h, w) -> GAP -> F^I -> FC (weights W) -> CE;
- attention map M = element-wise max over classes of the class activation maps
  M_k = sum_i W_ki Z_i (eq. 2), Gaussian-smoothed; every cell of M scores a fixed window
  (160 px at the paper's 448 input) centred on it; windows are sorted, de-duplicated by NMS
  (IoU 0.25) and the top m = 6 are cut from the input, zoomed (224 px at 448) and run
  through the *same* backbone -> region features F^R_r -> one shared region FC -> CE;
- hybrid: concat(F^I, F^R_1..F^R_l) (width n * (1 + l), l = 4) -> hybrid FC -> CE; the
  hybrid head is the test-time prediction. Loss = CE_image + mean_r CE_region + CE_hybrid.
Proposals are computed without gradient; crops are batched (roi_align), as is NMS.
Paper (ResNet-50, 448): CUB 87.6, Aircraft 92.1, Cars 94.1; Table 2 (CUB): image level only
86.7, single-class CAM 87.3, full 87.6.

Choices where the paper is unclear (Config fields in brackets):
- Window and zoom sizes are given only at 448 px (160 px windows zoomed to 224 px). The
  window keeps its ratio to the input side [window_frac = 160/448]: it is a share of the
  object's extent. The zoom keeps the paper's pixels, capped at the input side
  [zoom_px = 224; the zoomed side is min(zoom_px, input side)]: at 448 this is the paper's
  224 px, the pretraining resolution of its ImageNet backbone; at a 128 px input each region
  is zoomed to 128 px, so the shared backbone sees regions at no smaller a scale than the
  whole image. The earlier reading kept the ratio [zoom_px = 0: zoom_frac = 224/448 of the
  input side], so at 128 px every 46 px window met the backbone at 64 px, half the input's
  side (the two readings measured against each other: docs/lab-record.md#focus-the-zoom-size).
  What it costs: at 128 px a region costs as much as the image pass (4x the ratio
  reading), so a CPU budget pays for fewer regions (the transfer profile's m).
- Window scales are not given: one scale by default [window_scales, multipliers of
  window_frac; several give multi-scale windows, best used with score="mean", since with
  "center" all scales at a cell tie].
- Window score: the value of M at the window's centre cell, as the text says ("each pixel in
  M corresponds to a region ... the pixel value measures the discriminativeness") [score =
  "center"; "mean" = the mean of M over the window].
- Windows centred near the border are shifted inside the image (not clipped, not
  zero-padded as NTS-Net does), so each keeps its size and holds only image content.
- Candidate grid: at 448 the stride-32 map has 14 x 14 cells = window centres. At 64 px it
  would have 2 x 2, too few for m = 6 distinct windows, so a smaller map is upsampled
  bilinearly to at least 14 cells a side before smoothing [min_grid = 14; a no-op at 448;
  0 = always the native map].
- Gaussian sigma is not given: 1 cell of that grid (32 px at 448) [sigma; 0 = no smoothing].
- CAMs exclude the FC bias (eq. 2 has none; the FC itself has a bias, as torchvision's).
- Single-class CAM ablation [cam = "class"]: the ground-truth class's CAM in training, the
  image head's predicted class at test; default [cam = "max"] max over all classes.
- Fewer than m windows may survive NMS (possible only with large windows or small grids):
  the free slots take the best suppressed windows in score order, so shapes stay fixed
  (`valid` in the output marks the survivors). The "top-l" regions of the hybrid feature are
  the l best-scored of the m (the paper does not say how they are ranked).
- "Image level only" (Table 2) = the hybrid module removed in training, the image head
  predicts at test [use_hybrid = False]; region CE still trains the shared backbone. At
  test that variant runs no region pass at all.
- All three CE terms weigh 1 (the paper gives no weights) [branch_warmup = 0]. The paper
  trains 100 epochs from the first step on all three; in a 5-epoch budget the first epochs
  are a large share, and while the image head is untrained its max-over-classes CAM is noise,
  so the region CE trains the shared backbone on crops of background and decoys labelled with
  the species, and the hybrid head learns on those regions. [branch_warmup = E] ramps the
  region and hybrid CE weights linearly from 0 to 1 over the first E epochs (the image CE
  weighs 1 throughout; the reported loss parts stay unweighted); after E epochs the loss is
  the paper's. The transfer profile uses E = 2 of its 5 epochs; what the ramp changes (the lr
  the sweep chooses for focus, its gap to the baseline, where its windows land), measured:
  docs/lab-record.md#focus-on-photo-like-images-the-failure-and-the-fix.
- Eval mode crops and encodes only the l regions the hybrid head needs, not all m.
- NMS on CUDA returns a variable number of boxes, which costs one host sync per step.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fgvc.layers.regions import (class_activation_map, crop_and_zoom, nms_topk, smooth,
                              upsample_to, window_boxes, window_scores)
from fgvc.methods.base import Method, MethodConfig
from fgvc.methods.registry import register


@dataclass
class FocusConfig(MethodConfig):
    num_regions: int = 6                 # m: regions cropped, each with region CE
    num_hybrid: int = 4                  # l: top regions in the hybrid feature
    window_frac: float = 160 / 448       # window side / input side
    zoom_px: int = 224                   # zoomed region side in px, at most the input side
    zoom_frac: float = 224 / 448         # zoomed side / input side, used when zoom_px = 0
    window_scales: tuple = (1.0,)        # multipliers of window_frac (several = multi-scale)
    nms_iou: float = 0.25
    sigma: float = 1.0                   # Gaussian smoothing of M, in grid cells; 0 = off
    min_grid: int = 14                   # upsample M to at least this many cells a side
    cam: str = "max"                     # "max" over all classes | "class" (gt / predicted)
    score: str = "center"                # window score: "center" cell of M | "mean" over window
    use_hybrid: bool = True              # False: Table 2 "image level only"
    branch_warmup: float = 0.0           # epochs over which region + hybrid CE ramp 0 -> 1


@register(order=50)
class Focus(Method):
    name = "focus"
    Config = FocusConfig

    def __init__(self, num_classes: int, cfg: FocusConfig):
        super().__init__(num_classes, cfg)
        if cfg.cam not in ("max", "class"):  # pragma: no mutate block
            raise ValueError(f"focus.cam = {cfg.cam!r}; valid: ['class', 'max']")
        if cfg.score not in ("center", "mean"):  # pragma: no mutate block
            raise ValueError(f"focus.score = {cfg.score!r}; valid: ['center', 'mean']")
        if not 1 <= cfg.num_hybrid <= cfg.num_regions:  # pragma: no mutate block
            raise ValueError(f"focus needs 1 <= num_hybrid ({cfg.num_hybrid}) <= num_regions "
                             f"({cfg.num_regions})")
        if cfg.zoom_px < 0 or (cfg.zoom_px == 0 and cfg.zoom_frac <= 0):  # pragma: no mutate block
            raise ValueError(f"focus.zoom_px = {cfg.zoom_px}: give a size in px, or 0 with "
                             f"zoom_frac > 0")
        if not cfg.window_scales or min(cfg.window_scales) <= 0:  # pragma: no mutate block
            raise ValueError(f"focus.window_scales = {cfg.window_scales!r}: need positive values")
        if cfg.branch_warmup < 0:  # pragma: no mutate block
            raise ValueError(f"focus.branch_warmup = {cfg.branch_warmup}: epochs, >= 0")
        n = self.backbone.out_channels
        self.image_map = nn.Identity()   # Z of the image pass only: the Grad-CAM target
        self.fc = nn.Linear(n, num_classes)
        self.region_fc = nn.Linear(n, num_classes)
        self.hybrid_fc = nn.Linear(n * (1 + cfg.num_hybrid), num_classes) if cfg.use_hybrid else None

    def cam_target_layers(self) -> list[nn.Module]:  # pragma: no mutate block
        # The backbone also encodes the regions; this hook sees only the image-level Z.
        return [self.image_map]

    @torch.no_grad()
    def attention(self, z: torch.Tensor, logits: torch.Tensor,
                  target: torch.Tensor | None = None) -> torch.Tensor:
        """(B, gh, gw) attention map M from Z (B, n, h, w): eq. 2, upsampled to at least
        min_grid cells a side, Gaussian-smoothed. cam="class" uses `target`'s CAM if given,
        else the predicted class's."""
        classes = None
        if self.cfg.cam == "class":
            classes = target if target is not None else logits.argmax(1)
        att = class_activation_map(z.float(), self.fc.weight.float(), classes)  # (B, h, w)
        return smooth(upsample_to(att, self.cfg.min_grid), self.cfg.sigma)

    @torch.no_grad()
    def propose(self, att: torch.Tensor, image_size: tuple[int, int],
                k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The k best windows per image after NMS: boxes (B, k, 4) in input pixels and
        valid (B, k) (False: a padding slot, see `nms_topk`)."""
        fracs = [self.cfg.window_frac * s for s in self.cfg.window_scales]
        boxes = window_boxes(att.shape[-2:], image_size, fracs, att.device)  # (N, 4)
        if boxes.shape[0] < k:  # pragma: no mutate block
            raise ValueError(f"focus: {boxes.shape[0]} candidate windows < {k} regions; "
                             f"raise min_grid (now {self.cfg.min_grid})")
        scores = window_scores(att, boxes, image_size, self.cfg.score)  # (B, N)
        boxes, _, valid = nms_topk(boxes, scores, k, self.cfg.nms_iou)
        return boxes, valid

    def zoom_size(self, H: int, W: int) -> tuple[int, int]:
        """Side of the zoomed regions: zoom_px capped at the input side (else zoom_frac)."""
        if self.cfg.zoom_px > 0:
            return min(self.cfg.zoom_px, H), min(self.cfg.zoom_px, W)
        return round(self.cfg.zoom_frac * H), round(self.cfg.zoom_frac * W)

    def forward(self, x: torch.Tensor, target: torch.Tensor | None = None) -> dict:
        cfg = self.cfg
        z = self.image_map(self.backbone(x))  # (B, n, h, w)
        feat = z.mean(dim=(2, 3))  # (B, n) = F^I
        image_logits = self.fc(feat)  # (B, K)
        if not self.training and not cfg.use_hybrid:
            return {"logits": image_logits}
        # Training needs all m regions (region CE); test time only the l of the hybrid feature.
        k = cfg.num_regions if self.training else cfg.num_hybrid
        H, W = x.shape[-2:]
        with torch.no_grad():
            att = self.attention(z, image_logits, target if self.training else None)
            boxes, valid = self.propose(att, (H, W), k)  # (B, k, 4), (B, k)
            crops = crop_and_zoom(x, boxes, self.zoom_size(H, W))
        B, n = feat.shape
        region_feat = self.backbone(crops).mean(dim=(2, 3)).view(B, k, n)  # (B, k, n) = F^R
        out = {"boxes": boxes, "valid": valid}
        if self.training:
            out["image_logits"] = image_logits
            out["region_logits"] = self.region_fc(region_feat)  # (B, m, K)
        if cfg.use_hybrid:
            hybrid = torch.cat([feat, region_feat[:, :cfg.num_hybrid].flatten(1)], 1)  # (B, n(1+l))
            out["features"] = hybrid
            out["logits"] = self.hybrid_fc(hybrid)  # (B, K)
        else:
            out["logits"] = image_logits
        return out

    def branch_weight(self) -> float:
        """Weight of the region and hybrid CE: ramps linearly from 0 to 1 over the first
        `branch_warmup` epochs of training (1 throughout when 0)."""
        if self.cfg.branch_warmup <= 0:
            return 1.0
        return min(1.0, self.progress / self.cfg.branch_warmup)

    def loss(self, out: dict, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        region_logits = out["region_logits"]  # (B, m, K)
        parts = {
            "image": F.cross_entropy(out["image_logits"], target),
            "region": F.cross_entropy(region_logits.flatten(0, 1),
                                      target.repeat_interleave(region_logits.shape[1])),
        }
        if self.cfg.use_hybrid:
            parts["hybrid"] = F.cross_entropy(out["logits"], target)
        w = self.branch_weight()
        total = sum(v if k == "image" else w * v for k, v in parts.items())
        return total, {k: v.detach() for k, v in parts.items()}

    def classifier(self) -> nn.Module:
        """Test-time logits: the hybrid head's, or the image head's without the hybrid feature."""
        return self.hybrid_fc if self.cfg.use_hybrid else self.fc
