"""lafe: discriminative minus confusable features, fused across stages.

Paper: "Beyond the Attention: Distinguish the Discriminative and Confusable Features For
Fine-grained Image Classification", ACM MM 2020 (seed 001). ResNet-50 at 448: CUB 87.6,
Cars 94.8, Aircraft 93.3 (93.2 in the ablation table 4); ResNet-101: 88.1, 94.9, 93.6.

What it does (defaults; the sentence of the paper that chose each, or "ours"):
- At stages 3, 4, 5 (backbone `stages[1:]`, ResNet layer2..layer4) four attention modules
  read the stage output f_i: discriminative / confusable x channel (SE, fgvc.layers.se.
  ChannelSE) / region (SE over the H*W positions, sec. 3.2, `RegionSE`; `region_reduction`
  7, "r is set to 7": hidden width max(1, H*W // 7)). dis_i = r_dis_i + c_dis_i,
  con_i = r_con_i + c_con_i, F_i = f_i + dis_i - con_i (eqs. 1-3).
- Cross-stage fusion (eq. 4), applied 3 -> 4 -> 5 to the dis and con streams ("we fuse the
  same attribute features at different stages"):
  U_L = ReLU(BN(W1(S_L + maxpool(ReLU(W2 U_{L-1}))))), with U_3 = S_3.
- What the classifier C sees (`final` "sum"): GAP(f_5 + U^dis_5 - U^con_5) (eq. 10). The
  introduction: "The final features used for classification are obtained by adding the fused
  discriminative features and subtracting the fused confusable features"; the conclusion:
  "the original features of the last stage plus discriminative features minus confusable
  features" (so Fig. 4's caption, sec. 3's opening, Fig. 2, sec. 4.5). This is eq. 3 at
  stage 5 on the fused streams: eqs. 8 and 9 call dis_f and con_f "the ... features after
  fusion", and eq. 10's F_5 is "the features of the fifth stage after fusion".
- Losses (eq. 11, unweighted: `dis_weight`, `con_weight` 1.0): CE + L_dis + L_con, where
  L_dis = MAE(GAP(U^dis_5) of image m, of image n) over same-label pairs (eq. 8) and
  L_con = MAE(W_C GAP(U^con_5), all-ones vector of length num_classes) (eq. 9), W_C the
  weight of the classifier C without its bias (`con_head` "classifier"). Sec. 4.4: "we use
  a classifier to map confusable features to a vector whose dimension is the number of
  categories with a value of 1"; sec. 3.3: confusable features are "randomly assigned to
  all categories". The bias is left out (ours): with it, con -> 0 and a uniform shift of
  the bias (which softmax CE ignores) reach L_con = 0 without any confusable feature.
  Without it, W_C GAP(U^con_5) = 1 needs the con features themselves, and subtracting them
  from f_5 then shifts every logit by the same amount: no class gains from them.
- Initialisation (`twin_init` True, ours; the paper gives none): each confusable module
  (channel SE, region SE, fusion chain) starts as a copy of its discriminative twin, so at
  step 0 dis_i = con_i, F_i = f_i, U^dis_5 = U^con_5 and C sees the backbone's f_5, the
  pretrained feature. Eqs. 1-4 are unchanged (only starting values are picked), both halves
  get gradients from step 1 on (CE's have opposite signs on them), and no layer is added.
  A zero BN scale at the end of eq. 4 would not do: ReLU(BN(.)) is then 0 with zero
  gradient. Under `final` "fused" no start is consistent with eq. 4: U^F_5 ends in
  ReLU(BN(W1 .)) with batch statistics, never f_5, so there twin_init only makes F_i = f_i.
- Training batches come from the paired sampler (`pair_mode = "adjacent"`: batch[2k] and
  batch[2k+1] share a label): sec. 4.2, "the two adjacent images in each batch have the
  same label".

Why these defaults (issue 18): in the earlier reading (named variant `separate_heads`:
`final` "fused", `con_head` "fc", `twin_init` False) the dis / con chains and a confusable
FC of its own fed only their losses. Both losses then have trivial minimisers (a constant dis
embedding gives L_dis = 0; the FC's bias alone, with a zero weight, gives L_con = 0) and stop
shaping the attention once there. tests/test_lafe.py trains both readings on fixed images:
under the earlier one the dis stream dies (L_dis sends no gradient to the attention), under
the default it does not (measured: docs/lab-record.md#lafe-what-the-classifier-reads).
Effect on accuracy: not measured in this study.

Choices where the paper is unclear (Config field; default; alternatives):
- Where the attention sits: the text takes "the original features that do not pass the
  attention modules" f_i from the backbone and links the stages only through the fusion,
  so the backbone runs unchanged and the attention is a side branch (`feed_backbone`
  False); True passes F_i on to the next backbone stage instead of f_i. Not measured in
  this study.
- Region gate: eq. 6 writes ReLU for both activations; we gate with a sigmoid as SENet
  does (`region_gate` "sigmoid"; "relu" is the literal reading). Channel-SE reduction is
  not given (`channel_reduction` 16, SENet's). Neither measured in this study.
- Grids: sec. 4.2's stage shapes (56x56, 28x28, 7x7) cannot all hold for 448 inputs (layer4
  is 14x14). The region FCs are built for the real grids derived from `input_size` (each
  stride-2 step halves, rounding up, as every backbone in fgvc.models does); a different
  input size is a ValueError naming both. At 448 on ResNet-50 the layer2 region FC pair has
  3136*448*2 = 2.8 M parameters, x2 heads.
- Fusion (eq. 4): W1 and W2 are 1x1 convolutions (kernel not given; W2 has a bias, W1 none
  since BN follows), sigma = ReLU, the max-pool maps the previous grid onto the current one
  (2x2 stride 2 for ResNets), and U_{L-1} is the previous stage's *fused* map (a cascade,
  so stage 3 reaches stage 5). Not measured in this study.
- What the classifier sees, alternative: `final` "fused" takes eq. 10's F_5 as a third,
  F-stream fusion chain U^F_5 (eq. 4 applied to F_3, F_4, F_5); the dis / con chains then
  reach only their losses. Eq. 9's FC, alternative: `con_head` "fc", a linear layer of its
  own with a bias (eq. 9 writes "FC", eq. 10 "C").
- Same-label pairs for eq. 8: the adjacent pairs the sampler builds whose labels match
  (`dis_pairs` "adjacent"); "all" averages over every same-label pair of the batch. A
  batch with no such pair is a ValueError; that check costs one host sync per training
  batch (a `bool()` of a comparison on the label tensor), the only one in this file.
- MAE is the mean over channels (eq. 8) or classes (eq. 9), then over pairs / images.
- Ablations build only what still reaches the output: without fusion (and with the side
  branch) stages 3-4 have no path to the logits or losses, so only stage 5 carries
  attention (C then sees F_5 = f_5 + dis_5 - con_5); under `final` "sum" the dis / con
  chains feed C and are built with or without their losses; under "fused" a dis / con
  chain exists only while its loss uses it, the F chain always; the confusable FC only with
  L_con and `con_head` "fc". Eval mode skips the losses' outputs; under "fused" it computes
  the F stream alone, as one product F_i = f_i * (1 + gates).

Cost (ResNet-50, 448, 200 classes): 47.1 M parameters = backbone 23.5 M + attention 7.4 M
(region FCs 6.0 M, 5.6 M of them at layer2) + fusion 15.7 M (2 chains of 7.9 M: the 1x1
convs 1024->2048 and 2048->2048 dominate) + the classifier 0.4 M. `separate_heads` has
55.3 M (a third chain and the confusable FC). The fusion's W2 runs before the max-pool, at
the previous stage's resolution, as eq. 4 orders it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fgvc.layers.se import GATES, ChannelSE, RegionSE
from fgvc.methods.base import Method, MethodConfig
from fgvc.methods.registry import register

FINALS = ("sum", "fused")
CON_HEADS = ("classifier", "fc")
PAIRS = ("adjacent", "all")


@dataclass
class LafeConfig(MethodConfig):
    use_region: bool = True         # region attention (sec. 3.2) beside the channel SE
    use_fusion: bool = True         # cross-stage fusion (eq. 4)
    use_dis_loss: bool = True       # discriminative loss (eq. 8)
    use_con_loss: bool = True       # confusable loss (eq. 9)
    dis_weight: float = 1.0
    con_weight: float = 1.0
    channel_reduction: int = 16     # not given; SENet's
    region_reduction: int = 7
    region_gate: str = "sigmoid"    # "sigmoid" | "relu" (eq. 6 literally)
    dis_pairs: str = "adjacent"     # "adjacent" | "all" same-label pairs of the batch
    final: str = "sum"              # "sum": f_5 + U^dis_5 - U^con_5 | "fused": U^F_5 (own chain)
    con_head: str = "classifier"    # eq. 9's FC: "classifier" C's weight, no bias | "fc" its own
    twin_init: bool = True          # con modules start as copies of their dis twins
    feed_backbone: bool = False     # F_i (not f_i) feeds the next backbone stage


def stage_grid(input_size: int, stage: int) -> int:
    """Side of backbone stage `stage`'s map (strides 4, 8, 16, 32) for a square input."""
    side = input_size
    for _ in range(stage + 2):
        side = -(-side // 2)  # every stride-2 conv / pool in fgvc.models rounds up
    return side


def discriminative_loss(emb: torch.Tensor, target: torch.Tensor,
                        pairs: str = "adjacent") -> torch.Tensor:
    """Eq. 8: mean |emb_m - emb_n| over channels and same-label pairs (m, n). emb: (B, C).

    pairs="adjacent": the pairs (2k, 2k+1) whose labels match; "all": every same-label pair.
    ValueError if there is none.
    """
    if pairs == "adjacent":
        n = emb.shape[0] // 2
        dist = (emb[0:2 * n:2] - emb[1:2 * n:2]).abs().mean(1)     # (n,)
        same = target[0:2 * n:2] == target[1:2 * n:2]               # (n,)
    elif pairs == "all":
        dist = (emb[:, None] - emb[None]).abs().mean(2)             # (B, B)
        same = target[:, None] == target[None]                      # (B, B)
        same &= ~torch.eye(len(target), dtype=torch.bool, device=target.device)
    else:  # pragma: no mutate block
        raise ValueError(f"pairs {pairs!r}; valid: {list(PAIRS)}")
    if not bool(same.any()):  # pragma: no mutate block (the one host sync per training batch)
        which = ("no adjacent pair (batch[2k], batch[2k+1])" if pairs == "adjacent"
                 else "no two images")
        raise ValueError(f"lafe's discriminative loss needs same-label pairs, but {which} in this "
                         f"batch share a label (labels {target.tolist()[:16]}). Train with the "
                         "paired batch sampler (pair_mode 'adjacent'), or use_dis_loss=False.")
    w = same.to(dist.dtype)
    return (dist * w).sum() / w.sum()


def confusable_loss(con_out: torch.Tensor) -> torch.Tensor:
    """Eq. 9: mean |FC(GAP(con)) - 1| over classes and images. con_out: (B, num_classes)."""
    return (con_out - 1).abs().mean()


class DisConAttention(nn.Module):
    """The four attention modules of one stage (eqs. 1-3) on a stage map f (B, C, H, W)."""

    def __init__(self, channels: int, grid: int, use_region: bool, channel_reduction: int,
                 region_reduction: int, region_gate: str):
        super().__init__()
        self.dis_channel = ChannelSE(channels, channel_reduction)
        self.con_channel = ChannelSE(channels, channel_reduction)
        self.dis_region = self.con_region = None
        if use_region:
            self.dis_region = RegionSE(grid, grid, region_reduction, region_gate)
            self.con_region = RegionSE(grid, grid, region_reduction, region_gate)

    def forward(self, f: torch.Tensor, parts: bool = True):
        """(F, dis, con) with F = f + dis - con; (F, None, None) when not `parts`."""
        zc = ChannelSE.squeeze(f)                                  # (B, C)
        gd = self.dis_channel.excite(zc)[:, :, None, None]         # (B, C, 1, 1)
        gc = self.con_channel.excite(zc)[:, :, None, None]
        rd = rc = 0.0
        if self.dis_region is not None:
            zr = self.dis_region.squeeze(f)                        # (B, H*W)
            rd = self.dis_region.excite(zr)                        # (B, 1, H, W)
            rc = self.con_region.excite(zr)
        if not parts:
            return f * ((1 + gd - gc) + (rd - rc)), None, None     # (B, C, H, W)
        dis, con = f * (gd + rd), f * (gc + rc)                    # (B, C, H, W) each
        return f + dis - con, dis, con


class StageFusion(nn.Module):
    """Eq. 4: U = ReLU(BN(W1(u + maxpool(ReLU(W2 u_prev))))), W1, W2 1x1 convolutions."""

    def __init__(self, prev_channels: int, channels: int):
        super().__init__()
        self.w2 = nn.Conv2d(prev_channels, channels, 1)
        self.w1 = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, u: torch.Tensor, u_prev: torch.Tensor) -> torch.Tensor:
        p = F.relu(self.w2(u_prev))                       # (B, C, 2H, 2W)
        p = F.adaptive_max_pool2d(p, u.shape[-2:])         # (B, C, H, W)
        return F.relu(self.bn(self.w1(u + p)))             # (B, C, H, W)


@register(order=30)
class Lafe(Method):
    name = "lafe"
    Config = LafeConfig
    pair_mode = "adjacent"

    def __init__(self, num_classes: int, cfg: LafeConfig):
        for field, value, valid in (("region_gate", cfg.region_gate, GATES),
                                    ("dis_pairs", cfg.dis_pairs, PAIRS),
                                    ("final", cfg.final, FINALS),
                                    ("con_head", cfg.con_head, CON_HEADS)):
            if value not in valid:  # pragma: no mutate block
                raise ValueError(f"{field} {value!r}; valid: {list(valid)}")
        super().__init__(num_classes, cfg)
        ch = self.backbone.channels
        last = len(ch) - 1
        # Papers' stages 3-5; without fusion (side branch) only stage 5 reaches the output.
        self.att_stages = list(range(1, len(ch))) if cfg.use_fusion or cfg.feed_backbone else [last]
        self.grids = {i: stage_grid(cfg.input_size, i) for i in self.att_stages}
        self.attention = nn.ModuleList(
            DisConAttention(ch[i], self.grids[i], cfg.use_region, cfg.channel_reduction,
                            cfg.region_reduction, cfg.region_gate) for i in self.att_stages)
        chains = []
        if cfg.use_fusion:
            chains = [s for s, used in (("F", cfg.final == "fused"),
                                        ("dis", cfg.use_dis_loss or cfg.final == "sum"),
                                        ("con", cfg.use_con_loss or cfg.final == "sum")) if used]
        self.fusion = nn.ModuleDict({
            s: nn.ModuleList(StageFusion(ch[a], ch[b])
                             for a, b in zip(self.att_stages, self.att_stages[1:]))
            for s in chains})
        self.con_fc = (nn.Linear(ch[last], num_classes)
                       if cfg.use_con_loss and cfg.con_head == "fc" else None)
        self.cam_tap = nn.Identity()  # the map the classifier pools, for Grad-CAM
        self.fc = nn.Linear(ch[last], num_classes)
        if cfg.twin_init:  # after every layer is built: the RNG draws stay those of twin_init off
            self._copy_dis_to_con()

    @torch.no_grad()
    def _copy_dis_to_con(self) -> None:
        """Each confusable module starts as a copy of its discriminative twin, so at step 0
        con_i = dis_i, F_i = f_i and U^con_5 = U^dis_5: f_5 + U^dis_5 - U^con_5 = f_5."""
        for att in self.attention:
            att.con_channel.load_state_dict(att.dis_channel.state_dict())
            if att.con_region is not None:
                att.con_region.load_state_dict(att.dis_region.state_dict())
        if "dis" in self.fusion and "con" in self.fusion:
            self.fusion["con"].load_state_dict(self.fusion["dis"].state_dict())

    def con_logits(self, emb: torch.Tensor) -> torch.Tensor:
        """Eq. 9's FC on GAP(U^con_5) (B, C) -> (B, K): the classifier's weight without its
        bias (`con_head` "classifier"), or a linear layer of its own ("fc")."""
        if self.con_fc is not None:
            return self.con_fc(emb)
        return F.linear(emb, self.fc.weight)

    def cam_target_layers(self) -> list[nn.Module]:  # pragma: no mutate block
        return [self.cam_tap]

    def _check_input(self, x: torch.Tensor) -> None:  # pragma: no mutate block
        s, (h, w) = self.cfg.input_size, x.shape[-2:]
        if self.cfg.use_region and (h, w) != (s, s):
            grids = ", ".join(f"{g}x{g}" for g in self.grids.values())
            raise ValueError(f"lafe was built for {s}x{s} inputs (its region attention has FC "
                             f"sizes for the stage grids {grids}) but got a {h}x{w} input; "
                             f"build it with input_size={h} for square {h}x{h} crops, or "
                             f"feed {s}x{s} crops")

    def forward(self, x: torch.Tensor, target: torch.Tensor | None = None) -> dict:
        self._check_input(x)
        cfg = self.cfg
        # Streams this call needs: F for the classifier, dis / con for the losses in training.
        want = {"F": cfg.final == "fused",
                "dis": cfg.final == "sum" or (self.training and cfg.use_dis_loss),
                "con": cfg.final == "sum" or (self.training and cfg.use_con_loss)}
        parts = want["dis"] or want["con"]
        fused: dict[str, torch.Tensor] = {}
        x = self.backbone.stem(x)
        k = 0
        for i, stage in enumerate(self.backbone.stages):
            x = f = stage(x)                                     # f_i (B, C_i, H_i, W_i)
            if i not in self.att_stages:
                continue
            new = dict(zip(("F", "dis", "con"), self.attention[k](f, parts)))
            for s in (s for s in want if want[s]):
                chain = self.fusion[s] if s in self.fusion else None
                # U_L = fusion(S_L, U_{L-1}) (eq. 4); without fusion the last S_L is kept.
                fused[s] = chain[k - 1](new[s], fused[s]) if chain and k else new[s]
            if cfg.feed_backbone:
                x = new["F"]
            k += 1
        feat = fused["F"] if cfg.final == "fused" else f + fused["dis"] - fused["con"]
        feat = self.cam_tap(feat)                                # (B, C, h, w)
        out = {"logits": self.fc(feat.mean(dim=(2, 3)))}
        if self.training and cfg.use_dis_loss:
            out["dis_embed"] = fused["dis"].mean(dim=(2, 3))     # (B, C), eq. 8
        if self.training and cfg.use_con_loss:
            out["con_out"] = self.con_logits(fused["con"].mean(dim=(2, 3)))  # (B, K), eq. 9
        return out

    def loss(self, out: dict, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg = self.cfg
        ce = F.cross_entropy(out["logits"], target)
        total, parts = ce, {"ce": ce.detach()}
        missing = [k for k, used in (("dis_embed", cfg.use_dis_loss), ("con_out", cfg.use_con_loss))
                   if used and k not in out]
        if missing:  # pragma: no mutate block
            raise ValueError(f"lafe's loss needs the training-mode outputs {missing}: "
                             "run forward after model.train()")
        if cfg.use_dis_loss:
            dis = discriminative_loss(out["dis_embed"], target, cfg.dis_pairs)
            total = total + cfg.dis_weight * dis
            parts["dis"] = dis.detach()
        if cfg.use_con_loss:
            con = confusable_loss(out["con_out"])
            total = total + cfg.con_weight * con
            parts["con"] = con.detach()
        return total, parts
