"""pcanet: Progressive Co-Attention Network (VCIP 2021; seed 002).

What it does (training; batches hold same-class pairs, image i and i + B/2):
1. F_O: backbone features of the original images, pooled and classified (CE). This branch
   alone is the test-time prediction, so eval costs the backbone and its pooling head.
2. CA module (sec. 3.1, `use_ca`): for each pair W = softmax_row(-(F1' F2'^T)) (c x c),
   F_W = W F' (+ F') (fgvc.layers.coattention); the pooled F_W is classified (CE).
3. AE module (sec. 3.2, `use_ae`): an attention map is taken from F_W, upsampled to the
   image, thresholded at theta; the erased image I * M goes through the same network again
   and its pooled features F_E are classified (CE) (fgvc.layers.erase).
4. Centre loss (sec. 3.3, `use_center`) on the pooled F_O.
   L = CE(F_O) + CE(F_W) + CE(F_E) + lambda * L_cen (eq. 6), the CE terms averaged by
   default (`ce_reduce`). One FC layer classifies all three ("These features are then fed
   to a fully-connection layer"; the authors' code shares it too).

Defaults: the authors' code's five choices (issue 18). None of them was chosen by a
measurement in this study (not measured in this study); they follow the authors' code
where the text is silent or, for three of them, where the text reads otherwise. The
literal reading of the text's equations (shared W, no residual, sum, the standard centre
loss) with a GAP head, OUR simplification (the text asks for "a bilinear pooling"), is the
variant `text_gap` in configs/variants/pcanet.yaml (named `paper_text` before issue 29).

- Pooling (`pooling`, default "bap"). The text: "We remove the last pooling layer and
  fully-connected layer, and add a bilinear pooling to generate a more powerful feature
  representation", and the centre loss acts on "the bilinear feature vector of each
  sample". It gives no details; the authors' code uses WS-DAN-style bilinear attention
  pooling, which we follow: the first `num_attention` (32, as the authors' code) channels
  A of the last feature map are attention maps, the feature is (A F^T) / hw, (M x C),
  flattened, signed square root sqrt(|x| + 1e-5) * sign(x), L2-normalised, and it enters
  the FC scaled by 100 (the authors' code's factor). Co-attention then acts on the M maps
  and F_W replaces A in the pooling. "gap" (global average pooling, the baseline's head)
  is the literal fallback: with it the CA branch is nearly degenerate (softmax(-F1 F2^T)
  puts its mass on channels that are weak in the pair, so GAP(F_W) hardly varies).
  Not reproduced: the authors cut layer4 short (maps from inside its second bottleneck,
  512 feature channels, attention = 32 channels of the next convolution), which is
  specific to ResNet bottlenecks; we pool the backbone's full last stage, so on
  EfficientNet-Lite0 the feature is 32 x 1280 = 40960-dim.
- Residual (`ca_residual`, default True): the authors' code adds the input back,
  F_W = W F' + F'. Eq. 2 writes F_W = W F' only.
- W per image (`ca_shared`, default False): the authors' code gives each image its own W
  with itself as the row image, W_1 = softmax_row(-(F1' F2'^T)) for image 1 and
  W_2 = softmax_row(-(F2' F1'^T)) for image 2, which is symmetric under swapping the pair.
  Eq. 2 applies one W, from (F1, F2), to both images (`ca_shared=True`).
- CE reduction (`ce_reduce`, default "mean"): the authors' code divides the sum of its CE
  terms by their number (six: the original and the erased image of each image of the pair,
  and two co-attended poolings) and adds the centre loss unscaled; we average the CE
  terms present (3 in `full`, 2 in the single-module rows).
  Eq. 6 writes the sum, L = sum_i L_cls + lambda L_cen ("sum").
- Centre loss (`center_form`, default "authors"). The text only says "For each category,
  a feature vector is calculated as the center of the corresponding category, and it will
  be continuously updated during training phase" (the centre loss of its ref. 25, ECCV 2016), with
  an unstated weight lambda. The authors' code, in our words: the centres are a (K, D)
  store, zeros at start; the loss reads each sample's centre L2-normalised (a zero centre
  stays zero) and is the batch mean of ||x_i - c^_{y_i}||^2 on the unit-norm BAP feature,
  with no factor 1/2 and weight 1; after the step the stored centre of each class in the
  batch moves by (1 - 0.95) (x_i - c^_{y_i}) for ONE sample i of that class (an indexed
  += with repeated labels keeps one write; we take the class's last sample in the batch,
  which makes it deterministic). Consequence (exact, tested): from zero centres, the
  stored centre is always 0.05 x of the latest such sample, so its normalised read-out IS
  that sample's feature and the rate plays no role: the loss pulls each feature towards
  the last feature of its class seen in an earlier batch. "standard" (ref. 25):
  1/2 mean_i ||x_i - c_{y_i}||^2 on the raw centres, which move by that paper's rule
  c_j -= alpha * sum_{y_i=j} (c_j - x_i) / (1 + n_j). `center_weight` lambda 1.0 and
  `center_rate` alpha 0.05 are the authors' code's (weight 1, alpha = 1 - 0.95) for both
  forms. `center_normalize` (default on) L2-normalises x_i first; with BAP the feature is
  unit-norm already, with GAP the raw features of a ResNet-50 have norms near 30 and would
  swamp the CE. The authors' code applies the centre loss to the first image of each pair
  only; we apply it to the pooled F_O of every image of the batch.

Settings added for the transfer_next profile (issue 29; OUR choices, not the paper's; each
defaults to the committed behaviour and is declared `added` so committed hashes stay):
- `attention` (default "channels"): "channels" takes the first `num_attention` channels of
  the last map as the attention maps (the authors' code). On ImageNet EfficientNet-Lite0 at
  128 px (64 SynthBirds train images, at init) 13-17 of those 32 maps are all zero per image
  (after ReLU6; eval / train-mode BN) and 71-86 % of the pooled features are exactly zero.
  "learned" (ours, as WS-DAN) computes the M maps with a new 1x1 conv + BN + ReLU from the
  last map (trained at the new modules' lr): 0.6-1.7 of 32 maps all zero, 60-67 % of the
  pooled features zero (the rest are channels of the map that are zero where a map is not).
- `bap_scale` (default 100, the authors' code's factor, WS-DAN's convention): the unit-norm
  BAP vector enters the FC multiplied by it. The signed square root and L2 normalisation are
  already there; the scale exists BECAUSE of the L2 normalisation (entries ~0.01 over 40960
  dims), so a normalisation cannot replace it. For SGD on the FC, a scale s at head lr h acts
  like scale 1 at lr h s^2 (the same logits' step, lr * s^2 * |x|^2 per unit gradient), so
  the pair (bap_scale, train.head_lr) sets one quantity; with s = 100 the FC steps ~9x (100^2 / 33^2)
  those of the baseline's GAP head (|GAP| ~33 on Lite0, measured) at one lr, which is why the
  committed sweep put all of pcanet at lr 0.0025 (backbone 0.00025). s ~ 33 at lr 0.08 is
  FC-equivalent to s = 100 at 0.0087, on the hot side of that sweep (val 45.8 / 45.0 / 31.7 %
  at 0.0025 / 0.005 / 0.01), and a 40-step check agrees (s = 33, new modules at 0.08 with
  the profile's warm-up, backbone 0.008: the mean CE climbs from 2.8 to 7.7-8.4 by step 40).
  So we keep s = 100 and give the head its own lr while the backbone trains at the
  baseline's rate: the head-lr sweep on validation (transfer_next, seed 0) chose
  train.head_lr 0.000625 (val 84.2 %; 82.5 at half, 76.7 at double, 56.7 at 0.0025, where the
  training CE climbs above ln 16 in epoch 2).
- `center_update` (default "last", the authors' code): why the centre loss reads 1.75-1.79
  in every epoch. The features reach it (no detach), the centres are updated, but the
  authors' update keeps no memory: the stored centre is exactly rate x the class's latest
  feature (see below), so the loss is the distance between two images of a class; with
  c = cos(feature, class centre) it reads 2 - 2 c^2 (c ~ 0.33 gives 1.78), a floor set by the
  images, whose same-class cos at init is 0.37 against 0.35 for other classes (64 SynthBirds
  images, BAP of Lite0), and whose gradient is that of one random partner. "mean" (ours):
  the stored centre is a moving average c_j += rate (mean_{y_i = j} x_i - c_j) of the
  class's batch-mean feature, read normalised; it converges to the class direction and the
  loss reads 2 - 2 c. Authors' form only. The weight stays `center_weight` (1.0). 40 steps
  (SynthBirds, learned maps, s = 33, lr 0.08 with warm-up, no AE): "last" reads 1.49-1.57
  from step 10 on and rises; "mean" peaks at 1.22 (step 10) and falls to 1.06-1.08.

Other choices where the paper is unclear (not measured in this study):
- Attention map (`ae_map`): the text picks the channel of F_W with the largest GAP value
  ("We perform global average pooling on the feature maps weighted by CA-Module and rank
  them in descending order. Then we select the feature maps corresponding to the maximum
  value as the attention map"; "max_channel", default); eq. 3 writes a max over channels
  ("max_over_channels"). Without CA (variants `ae`, `ae_center`) the map is taken from the
  maps of F_O in the same way. The authors' code instead erases from the ORIGINAL
  attention maps (not F_W): a channel drawn at random with probability proportional to the
  square root of its mean, thresholded at U(0.2, 0.5) x its max (WS-DAN's drop).
- Theta is not given: `ae_theta` = 0.5 on the min-max normalised map (fgvc.layers.erase).
- F_W is formed literally (W F'); the AE module needs the maps anyway.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from fgvc.layers.coattention import co_attend
from fgvc.layers.erase import erase
from fgvc.methods.base import Method, MethodConfig
from fgvc.methods.registry import register

AE_MAPS = ("max_channel", "max_over_channels")
POOLINGS = ("bap", "gap")
CE_REDUCES = ("mean", "sum")
CENTER_FORMS = ("authors", "standard")
ATTENTIONS = ("channels", "learned")
CENTER_UPDATES = ("last", "mean")
ADDED = {"added": True}   # added after the committed records: config_hash drops them at default


@dataclass
class PCANetConfig(MethodConfig):
    use_ca: bool = True             # co-attention branch F_W (sec. 3.1)
    use_ae: bool = True             # attention-erase branch F_E (sec. 3.2)
    use_center: bool = True         # centre loss (sec. 3.3)
    pooling: str = "bap"            # authors' code: WS-DAN bilinear attention pooling; or "gap"
    num_attention: int = 32         # attention maps M for pooling="bap" (authors' code: 32)
    ca_shared: bool = False         # own W per image (authors' code); True: one per pair (eq. 2)
    ca_residual: bool = True        # F_W = W F' + F' (authors' code); False: W F' (eq. 2)
    ce_reduce: str = "mean"         # mean of the CE terms (authors' code) or "sum" (eq. 6)
    ae_map: str = "max_channel"     # or "max_over_channels" (eq. 3)
    ae_theta: float = 0.5           # erase where the min-max normalised map exceeds theta
    center_form: str = "authors"    # authors' code's, or "standard" (ref. 25: 1/2 form + update)
    center_weight: float = 1.0      # lambda in eq. 6 (authors' code: 1)
    center_rate: float = 0.05       # centre update rate (authors' code: 1 - 0.95)
    center_normalize: bool = True   # L2-normalise features before the centre loss
    # Added for the transfer_next profile (ours; defaults = the committed behaviour):
    attention: str = field(default="channels", metadata=ADDED)  # or "learned": 1x1 conv+BN+ReLU
    bap_scale: float = field(default=100.0, metadata=ADDED)     # BAP vector x this into the FC
    center_update: str = field(default="last", metadata=ADDED)  # authors' form: or "mean" (EMA)


def check_pairs(target: torch.Tensor) -> None:  # pragma: no mutate block
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
    """WS-DAN BAP: fmap (B, C, h, w), att (B, M, h, w) -> unit-norm (B, M*C) features.

    Entry m*C + c is sign(v) sqrt(|v| + 1e-5) with v = mean over positions of att_m * fmap_c,
    then the whole vector is L2-normalised (an exact zero v stays zero: sign(0) = 0).
    """
    x = torch.einsum("bmhw,bchw->bmc", att, fmap) / (fmap.shape[2] * fmap.shape[3])  # (B, M, C)
    x = torch.sign(x) * torch.sqrt(x.abs() + 1e-5)
    return F.normalize(x.flatten(1), dim=1)                         # (B, M*C)


class CenterLoss(nn.Module):
    """Centre loss with its centres as a buffer (zeros at start); two forms.

    form="authors" (the authors' code): L = mean_i ||x_i - c^_{y_i}||^2 with c^ the stored
    centre L2-normalised (zero stays zero); `update` adds rate * (x_i - c^_{y_i}) to the
    stored centre of y_i for one sample per class, the class's last in the batch.
    form="standard" (the paper's ref. 25, ECCV 2016): L = 1/2 mean_i ||x_i - c_{y_i}||^2 on
    the stored centres; `update` is c_j -= rate * sum_{i: y_i = j} (c_j - x_i) / (1 + n_j).
    update="mean" (ours, authors' form only): the stored centre of each class in the batch
    is an exponential moving average of the class's batch-mean feature,
    c_j += rate * (mean_{y_i = j} x_i - c_j), read L2-normalised as before.
    `forward` computes the loss (gradient flows to the features only); `update` moves the
    centres without gradient.
    """

    def __init__(self, num_classes: int, dim: int, rate: float, form: str = "authors",
                 update: str = "last"):
        super().__init__()
        if form not in CENTER_FORMS:  # pragma: no mutate block
            raise ValueError(f"center form {form!r}; valid: {list(CENTER_FORMS)}")
        bad = update not in CENTER_UPDATES or (update == "mean" and form != "authors")
        if bad:  # pragma: no mutate block
            raise ValueError(f"center update {update!r} with form {form!r}; valid: 'last' "
                             "(either form) or 'mean' (form 'authors')")
        self.rate, self.form, self.update_rule = rate, form, update
        self.register_buffer("centers", torch.zeros(num_classes, dim))

    def targets(self, target: torch.Tensor) -> torch.Tensor:
        """The centres the loss compares with: (B, D) float32."""
        c = self.centers[target].float()
        return F.normalize(c, dim=1) if self.form == "authors" else c

    def forward(self, feat: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """float32 even under autocast: float32 operands, and no op here that autocast lowers."""
        dist = (feat.float() - self.targets(target)).pow(2).sum(1)               # (B,)
        return dist.mean() if self.form == "authors" else 0.5 * dist.mean()

    @torch.no_grad()
    def update(self, feat: torch.Tensor, target: torch.Tensor) -> None:
        feat = feat.to(self.centers.dtype)
        if self.update_rule == "mean":
            total = torch.zeros_like(self.centers).index_add_(0, target, feat)    # (K, D)
            count = torch.zeros_like(self.centers[:, 0]).index_add_(
                0, target, torch.ones_like(feat[:, 0]))                           # (K,)
            seen = count > 0
            self.centers[seen] += self.rate * (total[seen] / count[seen, None] - self.centers[seen])
            return
        if self.form == "authors":
            idx = torch.arange(target.shape[0], device=target.device)
            last = torch.full_like(self.centers[:, 0], -1, dtype=torch.long).scatter_reduce_(
                0, target, idx, reduce="amax")                                    # (K,)
            keep = (last[target] == idx).to(feat.dtype)[:, None]                  # (B, 1)
            step = self.rate * (feat - self.targets(target).to(feat.dtype)) * keep  # (B, D)
            self.centers.index_add_(0, target, step)  # one non-zero step per class
            return
        diff = self.centers[target] - feat                                        # (B, D)
        delta = torch.zeros_like(self.centers).index_add_(0, target, diff)        # (K, D)
        count = torch.zeros_like(self.centers[:, 0]).index_add_(
            0, target, torch.ones_like(diff[:, 0]))                               # (K,)
        self.centers -= self.rate * delta / (1 + count)[:, None]


def _check(name: str, value: str, valid: tuple[str, ...]) -> None:  # pragma: no mutate block
    if value not in valid:
        raise ValueError(f"pcanet.{name} = {value!r}; valid: {list(valid)}")


@register(order=40)
class PCANet(Method):
    name = "pcanet"
    Config = PCANetConfig
    pair_mode = "halves"

    def __init__(self, num_classes: int, cfg: PCANetConfig):
        super().__init__(num_classes, cfg)
        for name, valid in (("ae_map", AE_MAPS), ("pooling", POOLINGS),
                            ("ce_reduce", CE_REDUCES), ("center_form", CENTER_FORMS),
                            ("attention", ATTENTIONS), ("center_update", CENTER_UPDATES)):
            _check(name, getattr(cfg, name), valid)
        c = self.backbone.out_channels
        if cfg.pooling == "bap" and not 0 < cfg.num_attention <= c:  # pragma: no mutate block
            raise ValueError(f"pcanet.num_attention must be in 1..{c}, got {cfg.num_attention}")
        dim = c * cfg.num_attention if cfg.pooling == "bap" else c
        # "learned" (ours, as WS-DAN): M attention maps from a 1x1 conv + BN + ReLU on the map.
        self.attention = (nn.Sequential(nn.Conv2d(c, cfg.num_attention, 1, bias=False),
                                        nn.BatchNorm2d(cfg.num_attention), nn.ReLU())
                          if cfg.pooling == "bap" and cfg.attention == "learned" else None)
        self.fc = nn.Linear(dim, num_classes)
        self.center = (CenterLoss(num_classes, dim, cfg.center_rate, cfg.center_form,
                                  cfg.center_update) if cfg.use_center else None)

    def _maps(self, fmap: torch.Tensor) -> torch.Tensor:
        """The maps pooling, co-attention and the erase act on: all C channels (gap), else the
        M attention maps: the first M channels ("channels") or the learned ones."""
        if self.cfg.pooling == "gap":
            return fmap                                                       # (B, C, h, w)
        if self.attention is not None:
            return self.attention(fmap)                                       # (B, M, h, w)
        return fmap[:, :self.cfg.num_attention]                               # (B, M, h, w)

    def _pool(self, fmap: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
        """Pooled features (B, D) of fmap (B, C, h, w) with `maps` (from _maps, or F_W)."""
        if self.cfg.pooling == "gap":
            return maps.mean((2, 3))                                          # (B, C)
        return bilinear_attention_pool(fmap, maps)                            # (B, M*C)

    def _classify(self, feat: torch.Tensor) -> torch.Tensor:
        return self.fc(feat * self.cfg.bap_scale if self.cfg.pooling == "bap" else feat)

    def forward(self, x: torch.Tensor, target: torch.Tensor | None = None) -> dict:
        cfg = self.cfg
        fmap = self.backbone(x)                                   # (B, C, h, w)
        maps = self._maps(fmap)                                   # (B, c', h, w)
        feat = self._pool(fmap, maps)                             # (B, D)
        out = {"logits": self._classify(feat), "features": feat}
        if not self.training:
            return out
        if target is not None:
            check_pairs(target)
        if self.attention is None:
            # a fresh view of the channels for the branches, as the committed runs took it: the
            # same values, and autograd sums the gradients of the two views in the committed
            # order, so the arithmetic stays bitwise (the learned maps are computed once)
            maps = self._maps(fmap)                               # (B, c', h, w)
        if cfg.use_ca:
            maps = co_attend(maps, cfg.ca_shared, cfg.ca_residual)  # F_W (B, c', h, w)
            out["logits_ca"] = self._classify(self._pool(fmap, maps))
        if cfg.use_ae:
            att = attention_map(maps.detach(), cfg.ae_map)        # (B, h, w)
            erased, mask = erase(x, att, cfg.ae_theta)            # (B, 3, H, W), (B, 1, H, W)
            fmap_e = self.backbone(erased)
            out["logits_ae"] = self._classify(self._pool(fmap_e, self._maps(fmap_e)))
            out.update(erased=erased, erase_mask=mask)
        return out

    def loss(self, out: dict, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Eq. 6: CE on F_O, F_W, F_E (mean or sum) + lambda * centre loss; updates the centres
        in training."""
        parts = {"ce": F.cross_entropy(out["logits"], target)}
        for key, name in (("logits_ca", "ce_ca"), ("logits_ae", "ce_ae")):
            if key in out:
                parts[name] = F.cross_entropy(out[key], target)
        total = sum(parts.values())
        if self.cfg.ce_reduce == "mean":
            total = total / len(parts)
        if self.center is not None:
            feat = out["features"].float()
            if self.cfg.center_normalize:
                feat = F.normalize(feat, dim=1)
            parts["center"] = self.center(feat, target)
            total = total + self.cfg.center_weight * parts["center"]
            if self.training:
                self.center.update(feat.detach(), target)
        return total, {k: v.detach() for k, v in parts.items()}
