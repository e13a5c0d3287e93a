"""focus (seed 004): attention map, proposals, crops, hybrid feature, ablation switches."""
import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import box_iou, nms
from torchvision.transforms.functional import resized_crop

from fgvc.layers.regions import (class_activation_map, crop_and_zoom, nms_topk, smooth,
                                 window_boxes, window_scores)
from fgvc.methods import create_method

K = 5  # classes


def _model(**cfg):
    torch.manual_seed(0)
    return create_method("focus", K, backbone="resnet18", input_size=64, **cfg)


def _backbone_inputs(model):
    """Record the input shape of every backbone call."""
    shapes = []
    model.backbone.register_forward_pre_hook(lambda m, a: shapes.append(tuple(a[0].shape)))
    return shapes


# ------------------------------------------------------------------ attention map (eq. 2)
def test_cam_max_by_hand():
    z = torch.tensor([[[[1., 0.], [2., -1.]],      # channel 0
                       [[0., 1.], [1., 3.]]]])     # channel 1   -> (1, 2, 2, 2)
    w = torch.tensor([[1., 0.], [0., 1.], [1., -1.]])  # 3 classes x 2 channels
    # M_0 = Z_0, M_1 = Z_1, M_2 = Z_0 - Z_1 = [[1, -1], [1, -4]]
    assert torch.equal(class_activation_map(z, w), torch.tensor([[[1., 1.], [2., 3.]]]))
    assert torch.equal(class_activation_map(z, w, torch.tensor([2])),
                       torch.tensor([[[1., -1.], [1., -4.]]]))


def test_method_attention_is_max_of_per_class_cams_without_bias():
    model = _model(sigma=0.0, min_grid=0)
    torch.nn.init.normal_(model.fc.bias, std=5.0)  # a bias would change the max: CAMs exclude it
    z = torch.randn(2, model.backbone.out_channels, 3, 4)
    cams = torch.stack([(model.fc.weight[k][:, None, None] * z).sum(1) for k in range(K)], 1)
    logits = torch.randn(2, K)
    torch.testing.assert_close(model.attention(z, logits), cams.amax(1))


def test_single_class_cam_uses_target_in_training_and_prediction_otherwise():
    model = _model(sigma=0.0, min_grid=0, cam="class")
    z = torch.randn(2, model.backbone.out_channels, 2, 2)
    cams = torch.einsum("kn,bnhw->bkhw", model.fc.weight, z)  # (B, K, h, w)
    logits = torch.tensor([[0., 9, 0, 0, 0], [0, 0, 0, 9, 0]])  # predicted 1, 3
    target = torch.tensor([4, 0])
    torch.testing.assert_close(model.attention(z, logits, target), cams[[0, 1], [4, 0]])
    torch.testing.assert_close(model.attention(z, logits), cams[[0, 1], [1, 3]])


def test_forward_passes_target_only_in_training(monkeypatch):
    model = _model(cam="class")
    seen = []
    real = model.attention
    monkeypatch.setattr(model, "attention", lambda z, l, t=None: seen.append(t) or real(z, l, t))
    x, y = torch.randn(2, 3, 64, 64), torch.tensor([1, 2])
    model.train()(x, y)
    model.eval()(x, y)
    assert torch.equal(seen[0], y) and seen[1] is None


def test_gaussian_smoothing_of_a_delta_is_the_kernel():
    delta = torch.zeros(1, 14, 14)
    delta[0, 7, 7] = 1.0
    s = sum(math.exp(-x * x / 2) for x in range(-3, 4))  # sigma 1 -> kernel 7
    out = smooth(delta, 1.0)
    assert out[0, 7, 7].item() == pytest.approx(1 / s**2, rel=1e-5)
    assert out[0, 7, 8].item() == pytest.approx(math.exp(-0.5) / s**2, rel=1e-5)
    assert out.sum().item() == pytest.approx(1.0, rel=1e-5)
    assert torch.equal(smooth(delta, 0.0), delta)


def test_small_map_is_upsampled_to_min_grid():
    model = _model()
    att = model.attention(torch.randn(2, model.backbone.out_channels, 2, 2), torch.randn(2, K))
    assert att.shape == (2, 14, 14)
    assert _model(min_grid=0).attention(torch.randn(2, 512, 2, 2), torch.randn(2, K)).shape == (2, 2, 2)


# ------------------------------------------------------------------ windows and NMS
def test_windows_keep_their_size_inside_the_image():
    boxes = window_boxes((14, 14), (64, 64), [160 / 448, 0.5])
    assert boxes.shape == (2 * 196, 4)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    torch.testing.assert_close(w[:196], torch.full((196,), 64 * 160 / 448))
    torch.testing.assert_close(h[196:], torch.full((196,), 32.0))
    assert boxes.min() >= 0 and boxes.max() <= 64
    # an interior cell's window is centred on that cell: row 7, column 6 of 14 at 448 px
    x1, y1, x2, y2 = window_boxes((14, 14), (448, 448), [160 / 448])[7 * 14 + 6].tolist()
    assert ((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1) == pytest.approx((6.5 * 32, 7.5 * 32, 160))


def test_window_scores():
    att = torch.arange(16.0).view(1, 4, 4)
    boxes = window_boxes((4, 4), (8, 8), [0.5, 1.0])  # 2 scales x 16 cells
    center = window_scores(att, boxes, (8, 8), "center")
    assert torch.equal(center, torch.cat([att.flatten(1)] * 2, 1))
    mean = window_scores(att, boxes, (8, 8), "mean")
    # the 4 x 4 px window at cell (0, 0) covers cells (0..1, 0..1): mean of 0, 1, 4, 5
    assert mean[0, 0].item() == pytest.approx(2.5)
    assert mean[0, 16].item() == pytest.approx(att.mean().item())  # the full-image window


def test_proposals_survive_nms_and_match_per_image_nms():
    torch.manual_seed(1)
    att = smooth(torch.rand(4, 14, 14), 1.0)
    boxes = window_boxes((14, 14), (64, 64), [160 / 448])  # (196, 4)
    scores = window_scores(att, boxes, (64, 64))
    top, top_scores, valid = nms_topk(boxes, scores, 6, 0.25)
    assert top.shape == (4, 6, 4) and valid.all()
    for b in range(4):
        iou = box_iou(top[b], top[b])
        assert (iou - torch.eye(6)).max() <= 0.25  # never overlap above the threshold
        ref = nms(boxes, scores[b], 0.25)[:6]  # torchvision, one image at a time
        torch.testing.assert_close(top[b], boxes[ref])
        assert torch.all(top_scores[b][:-1] >= top_scores[b][1:])


def test_fewer_survivors_are_padded_with_the_best_suppressed_windows():
    att = torch.rand(2, 14, 14)
    boxes = window_boxes((14, 14), (64, 64), [0.9])  # any two windows overlap > 0.25
    scores = window_scores(att, boxes, (64, 64))
    top, top_scores, valid = nms_topk(boxes, scores, 6, 0.25)
    assert top.shape == (2, 6, 4)
    assert valid.tolist() == [[True] + [False] * 5] * 2
    torch.testing.assert_close(top_scores, scores.topk(6, dim=1).values)  # survivor = best


def test_proposals_follow_the_attention_peak():
    model = _model(sigma=0.0)
    att = torch.zeros(2, 14, 14)
    att[0, 3, 10] = 1.0  # peak at row 3, column 10
    att[1, 12, 1] = 1.0
    boxes, valid = model.propose(att, (448, 448), 6)
    cx, cy = (boxes[:, 0, 0] + boxes[:, 0, 2]) / 2, (boxes[:, 0, 1] + boxes[:, 0, 3]) / 2
    # image 1's window (centre 48, 400) is shifted inside the image: x1 = 0, y2 = 448
    assert cx.tolist() == [10.5 * 32, 80] and cy.tolist() == [3.5 * 32, 448 - 80]
    assert valid.all()


# Six peaks of a 14 x 14 map, windows 64 * 160/448 px at a 64 px input; no two of their
# windows overlap by IoU > 0.25, so all six survive NMS. Ranked by value: 6, 5, 4, 3, 2, 1.
_PEAKS = {(2, 7): 6., (11, 2): 5., (11, 12): 4., (2, 2): 3., (11, 7): 2., (2, 12): 1.}


def _peak_map(reverse: bool = False) -> torch.Tensor:
    att = torch.zeros(1, 14, 14)
    for (r, c), v in _PEAKS.items():
        att[0, r, c] = 7 - v if reverse else v
    return att


def _window(r: int, c: int, side: int = 64) -> list[float]:
    """Hand formula: a window of side * 160/448 centred on cell (r, c), shifted inside."""
    w, cell = side * 160 / 448, side / 14
    x1 = min(max((c + 0.5) * cell - w / 2, 0), side - w)
    y1 = min(max((r + 0.5) * cell - w / 2, 0), side - w)
    return [x1, y1, x1 + w, y1 + w]


def _ranked(reverse: bool = False) -> torch.Tensor:
    cells = sorted(_PEAKS, key=lambda rc: _PEAKS[rc], reverse=not reverse)  # best first
    return torch.tensor([_window(*rc) for rc in cells])


def test_proposals_are_the_best_scored_windows_in_order():
    """propose() returns the k highest-scoring windows, best first, per image (image 2 has
    the values reversed, so its order is reversed)."""
    model = _model(sigma=0.0)
    att = torch.cat([_peak_map(), _peak_map(reverse=True)])
    boxes, valid = model.propose(att, (64, 64), 6)
    torch.testing.assert_close(boxes[0], _ranked())
    torch.testing.assert_close(boxes[1], _ranked(reverse=True))
    assert valid.all()
    boxes4, _ = model.propose(att, (64, 64), 4)
    torch.testing.assert_close(boxes4[0], _ranked()[:4])
    torch.testing.assert_close(boxes4[1], _ranked(reverse=True)[:4])


def test_hybrid_feature_takes_the_best_l_of_the_m_regions(monkeypatch):
    """Training crops all m = 6 regions best first; the hybrid feature holds F^I and the
    features of the l = 4 best (region_fc of its chunk j is region j's logits), not the
    worst. At test only the l best are cropped."""
    model = _model(sigma=0.0)
    att = torch.cat([_peak_map(), _peak_map(reverse=True)])
    monkeypatch.setattr(model, "attention", lambda z, logits, target=None: att)
    x, y = torch.randn(2, 3, 64, 64), torch.tensor([0, 1])
    out = model.train()(x, y)
    torch.testing.assert_close(out["boxes"][0], _ranked())
    torch.testing.assert_close(out["boxes"][1], _ranked(reverse=True))
    n = model.backbone.out_channels
    chunks = out["features"][:, n:].view(2, 4, n)  # (B, l, n)
    with torch.no_grad():
        torch.testing.assert_close(model.region_fc(chunks), out["region_logits"][:, :4])
        assert not torch.allclose(model.region_fc(chunks), out["region_logits"][:, 2:])
    shapes = _backbone_inputs(model)
    with torch.no_grad():
        out = model.eval()(x)
    assert shapes[1][0] == 2 * 4
    torch.testing.assert_close(out["boxes"][0], _ranked()[:4])


# ------------------------------------------------------------------ crops
def _inside(n: int, size: int) -> torch.Tensor:
    """(n,) True where all roi_align samples of output pixel j of a size -> n resize (s =
    ceil(size / n) per pixel, spaced evenly in its bin) lie inside the crop's [0, size - 1]."""
    j, step = torch.arange(n), size / n
    s = math.ceil(step)
    first, last = j * step + step / (2 * s) - 0.5, (j + 1) * step - step / (2 * s) - 0.5
    return (first >= 0) & (last <= size - 1)


@pytest.mark.parametrize("kind", ["zoom_in", "shrink"])
def test_crops_match_resized_crop(kind):
    """Both sample output pixel j at (j + 0.5) * w / 32 - 0.5 in crop pixels. Only samples
    within half a pixel of the crop's edge differ: resized_crop clamps to the edge pixel,
    roi_align interpolates with the image pixel beyond it. Shrinking, roi_align averages
    ceil(w / 32) samples around that point: exact on a linear ramp, like the reference."""
    torch.manual_seed(0)
    # (left, top, w, h) per image, incl. boxes touching the borders
    if kind == "zoom_in":
        images = torch.randn(2, 3, 64, 64)
        spec = [[(0, 0, 23, 23), (41, 10, 23, 23)], [(20, 41, 23, 23), (13, 17, 8, 12)]]
    else:
        ramp = torch.arange(64.0)
        images = (ramp[None, :, None] * 2 + ramp[None, None, :]).expand(2, 3, 64, 64) * torch.tensor(
            [[[[1.0]], [[-1.0]], [[0.5]]], [[[2.0]], [[1.0]], [[-3.0]]]])
        spec = [[(5, 30, 40, 20), (0, 0, 64, 64)], [(0, 5, 50, 50), (14, 0, 50, 33)]]
    boxes = torch.tensor([[[l, t, l + w, t + h] for l, t, w, h in row] for row in spec],
                         dtype=torch.float32)  # (2, 2, 4)
    crops = crop_and_zoom(images, boxes, (32, 32)).view(2, 2, 3, 32, 32)
    for b in range(2):
        for j, (l, t, w, h) in enumerate(spec[b]):
            ref = resized_crop(images[b], t, l, h, w, [32, 32], antialias=False)
            mask = _inside(32, h)[:, None] & _inside(32, w)[None, :]  # (32, 32)
            assert mask.float().mean() > 0.75
            torch.testing.assert_close(crops[b, j][:, mask], ref[:, mask], atol=1e-4, rtol=1e-5)
            assert (crops[b, j] - ref).abs().mean() < 0.1 * ref.abs().mean()


# ------------------------------------------------------------------ the method
@pytest.mark.parametrize("zoom_px, side, expected", [(224, 448, 224), (224, 128, 128),
                                                     (96, 128, 96), (1, 128, 1), (0, 128, 64),
                                                     (0, 448, 224)])
def test_zoom_keeps_paper_pixels_capped_at_input(zoom_px, side, expected):
    """The paper's 224 px at 448; never larger than the input; zoom_px = 0 is the ratio reading."""
    assert _model(zoom_px=zoom_px).zoom_size(side, side) == (expected, expected)


def test_training_forward_shapes_hybrid_width_and_loss():
    model = _model().train()
    shapes = _backbone_inputs(model)
    x, y = torch.randn(3, 3, 64, 64), torch.tensor([0, 1, 4])
    out = model(x, y)
    n = model.backbone.out_channels
    assert shapes == [(3, 3, 64, 64), (3 * 6, 3, 64, 64)]  # m = 6 regions zoomed to min(224, 64) px
    assert out["features"].shape == (3, n * (1 + 4))  # hybrid feature C * (1 + l)
    assert model.hybrid_fc.in_features == n * 5
    assert out["region_logits"].shape == (3, 6, K) and out["boxes"].shape == (3, 6, 4)
    assert not out["boxes"].requires_grad
    # the hybrid feature starts with the image feature F^I
    torch.testing.assert_close(model.fc(out["features"][:, :n]), out["image_logits"])
    loss, parts = model.loss(out, y)
    ce = F.cross_entropy
    expected = (ce(out["image_logits"], y) + ce(out["logits"], y)
                + sum(ce(out["region_logits"][:, r], y) for r in range(6)) / 6)
    torch.testing.assert_close(loss, expected)
    assert set(parts) == {"image", "region", "hybrid"}
    loss.backward()
    for head in (model.fc, model.region_fc, model.hybrid_fc):
        assert head.weight.grad.abs().sum() > 0
    assert _model(num_hybrid=2)(x, y)["features"].shape == (3, n * 3)


def test_eval_encodes_only_the_hybrid_regions():
    model = _model(num_hybrid=2).eval()
    shapes = _backbone_inputs(model)
    with torch.no_grad():
        out = model(torch.randn(3, 3, 64, 64))
    assert shapes == [(3, 3, 64, 64), (3 * 2, 3, 64, 64)]
    assert out["logits"].shape == (3, K) and "region_logits" not in out


def test_image_only_removes_the_hybrid_head():
    model = _model(use_hybrid=False)
    assert model.hybrid_fc is None
    shapes = _backbone_inputs(model)
    x, y = torch.randn(3, 3, 64, 64), torch.tensor([0, 1, 4])
    out = model.train()(x, y)
    assert torch.equal(out["logits"], out["image_logits"]) and "features" not in out
    assert shapes == [(3, 3, 64, 64), (18, 3, 64, 64)]  # regions still trained
    loss, parts = model.loss(out, y)
    assert set(parts) == {"image", "region"}
    torch.testing.assert_close(loss, parts["image"] + parts["region"])
    shapes.clear()
    with torch.no_grad():
        logits = model.eval()(x)["logits"]
    assert shapes == [(3, 3, 64, 64)]  # no region pass at test time
    torch.testing.assert_close(logits, model.fc(model.backbone(x).mean((2, 3))))


def test_gradcam_target_sees_only_the_image_map():
    model = _model().train()
    seen = []
    model.cam_target_layers()[0].register_forward_hook(lambda m, a, o: seen.append(o.shape))
    model(torch.randn(2, 3, 64, 64), torch.tensor([0, 1]))
    assert seen == [(2, model.backbone.out_channels, 2, 2)]


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="cam"):
        _model(cam="mean")
    with pytest.raises(ValueError, match="num_hybrid"):
        _model(num_hybrid=7)


def test_multiscale_mean_scored_windows_run():
    model = _model(window_scales=(1.0, 0.6), score="mean").train()
    out = model(torch.randn(2, 3, 64, 64), torch.tensor([0, 1]))
    sides = (out["boxes"][..., 2] - out["boxes"][..., 0]).flatten()
    assert torch.isin(sides.round(decimals=3), torch.tensor([64 * 160 / 448, 64 * 0.6 * 160 / 448])
                      .round(decimals=3)).all()


def test_forward_returns_the_proposals_and_which_survived_nms():
    model = _model().train()
    x, y = torch.randn(2, 3, 64, 64), torch.tensor([0, 1])
    out = model(x, y)
    with torch.no_grad():
        att = model.attention(model.image_map(model.backbone(x)), out["image_logits"], y)
        boxes, valid = model.propose(att, (64, 64), model.cfg.num_regions)
    torch.testing.assert_close(out["boxes"], boxes)
    assert out["valid"].dtype == torch.bool and torch.equal(out["valid"], valid)


# ------------------------------------------------------------------ schedule and region BN
@pytest.mark.parametrize("progress, weight", [(0.0, 0.0), (0.5, 0.25), (1.5, 0.75), (2.0, 1.0),
                                              (4.2, 1.0)])
def test_branch_warmup_ramps_region_and_hybrid_ce(progress, weight):
    model = _model(branch_warmup=2.0).train()
    x, y = torch.randn(3, 3, 64, 64), torch.tensor([0, 1, 4])
    model.set_progress(progress)
    out = model(x, y)
    loss, parts = model.loss(out, y)
    assert model.branch_weight() == pytest.approx(weight)
    torch.testing.assert_close(loss, parts["image"] + weight * (parts["region"] + parts["hybrid"]))
    # parts are reported unweighted, so the history shows what each head learns
    torch.testing.assert_close(parts["hybrid"], F.cross_entropy(out["logits"], y))


def test_without_warmup_the_weight_is_one_from_the_first_step():
    model = _model().train()
    model.set_progress(0.0)
    assert model.branch_weight() == 1.0



def test_branch_warmup_shorter_than_an_epoch_still_ramps():
    """A warm-up of half an epoch ramps over that half (written for a surviving mutant)."""
    model = _model(branch_warmup=0.5).train()
    model.set_progress(0.25)
    assert model.branch_weight() == pytest.approx(0.5)
