"""Hand-computed values for the equations of fgvc.layers (hybrid attention, stem pooling,
SE, attention erasure, window proposals). Every expected number is written out, not
re-derived with the code under test; each test runs in well under a second."""
import math

import pytest
import torch
from torch import nn

from fgvc.layers.erase import erase, erase_mask, normalize_map
from fgvc.layers.hybrid import (ChannelAttention, HybridAttention, MultiScaleMaxPool,
                                SpatialAttention)
from fgvc.layers.regions import crop_and_zoom, nms_topk, upsample_to, window_boxes, window_scores
from fgvc.layers.se import ChannelSE, RegionSE


def _sig(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def _bn_identity(bn: nn.BatchNorm2d) -> None:
    bn.eval()
    bn.running_mean.zero_(), bn.running_var.fill_(1.0), bn.weight.data.fill_(1.0)
    bn.bias.data.zero_()
    bn.eps = 0.0


def _spatial_off(sa: SpatialAttention) -> None:
    """All ASPP branches and the 7x7 conv zeroed, BNs the identity (eval mode)."""
    with torch.no_grad():
        for branch in sa.branches:
            branch[0].weight.zero_()
            _bn_identity(branch[1])
        sa.conv.weight.zero_()
        if sa.conv.bias is not None:
            sa.conv.bias.zero_()


# ----------------------------------------------------------------------------- hybrid attention
def test_channel_attention_mlp_with_biases_by_hand():
    """Eqs. 14-17: pooled = [avg_0, avg_1, max_0, max_1] -> fuse (2C -> C) -> fc C -> C/r ->
    ReLU -> fc -> sigmoid; with biases, and a hidden unit the ReLU clips."""
    ca = ChannelAttention(2, reduction=1)  # hidden = 2
    x = torch.tensor([[[1., 3.], [5., 7.]], [[0., 0.], [0., -4.]]])[None]  # (1, 2, 2, 2)
    # avg = (4, -1), max = (7, 0) -> pooled (4, -1, 7, 0)
    with torch.no_grad():
        ca.fuse.weight.copy_(torch.tensor([[1., 0., 0., 0.], [0., 1., 1., 0.]]))
        ca.fuse.bias.copy_(torch.tensor([-1., 0.]))              # -> (3, 6)
        ca.mlp[0].weight.copy_(torch.tensor([[1., 0.], [1., -1.]]))
        ca.mlp[0].bias.copy_(torch.tensor([0., 1.]))             # -> (3, -2) -> ReLU (3, 0)
        ca.mlp[2].weight.copy_(torch.tensor([[1., 5.], [-1., 5.]]))
        ca.mlp[2].bias.copy_(torch.tensor([-2., 2.5]))           # -> (1, -0.5)
    want = torch.tensor([_sig(1.0), _sig(-0.5)]).view(1, 2, 1, 1)
    torch.testing.assert_close(ca(x), want)


def test_hybrid_eq5_with_hand_set_weights():
    """F_out = F + F * M_s * M_c (eq. 5) through the real sub-modules, weights set by hand:
    M_c = sigmoid((1, -1)), M_s = sigmoid(max_c F - 2) (1x1 branch on the channel max, the
    7x7 conv's centre tap 1, bias -2); F' = F * M_s * M_c; the ASPP concat is
    (ReLU(max_c F), 0, 0, 0)."""
    block = HybridAttention(2, reduction=2)
    block.eval()
    with torch.no_grad():
        ca = block.channel
        ca.fuse.weight.zero_(), ca.fuse.bias.copy_(torch.tensor([1., 1.]))
        ca.mlp[0].weight.zero_(), ca.mlp[0].bias.zero_()
        ca.mlp[2].weight.zero_(), ca.mlp[2].bias.copy_(torch.tensor([1., -1.]))
        sa = block.spatial
        _spatial_off(sa)
        sa.branches[0][0].weight[0, 0] = 1.0   # reads channel 0 of (max, mean)
        sa.conv.weight[0, 0, 3, 3] = 1.0
        sa.conv.bias.fill_(-2.0)
    x = torch.tensor([[[1., 2.], [3., 6.]], [[-1., -1.], [4., -5.]]])[None]  # (1, 2, 2, 2)
    # max over channels: [[1, 2], [4, 6]] -> z = [[-1, 0], [2, 4]]
    ms = torch.tensor([[_sig(-1.), _sig(0.)], [_sig(2.), _sig(4.)]])
    mc = torch.tensor([_sig(1.), _sig(-1.)])
    attended = x[0] * ms[None] * mc[:, None, None]
    out, parts = block(x, return_parts=True)
    torch.testing.assert_close(parts["attended"][0], attended)
    torch.testing.assert_close(out[0], x[0] + attended)
    torch.testing.assert_close(block(x), out)
    aspp = torch.zeros(4, 2, 2)
    aspp[0] = torch.tensor([[1., 2.], [4., 6.]])
    torch.testing.assert_close(parts["aspp"][0], aspp)


@pytest.mark.parametrize("dilations", [(2, 4, 8), (3, 5)])
def test_aspp_branches_use_their_dilation(dilations):
    """A 3x3 atrous conv with dilation d and padding d reads input (i - d, j - d) at its
    top-left tap: a delta at (6, 7) appears at (6 + d, 7 + d) in branch d's map and, through
    the 7x7 conv's centre tap on that branch, M_s = sigmoid(1) there and 1/2 elsewhere."""
    x = torch.zeros(1, 1, 20, 20)
    x[0, 0, 6, 7] = 1.0  # one channel: max = mean = x
    for b, d in enumerate(dilations, start=1):
        sa = SpatialAttention(dilations)
        _spatial_off(sa)
        with torch.no_grad():
            sa.branches[b][0].weight[0, 0, 0, 0] = 1.0   # top-left tap, channel max
            sa.conv.weight[0, b, 3, 3] = 1.0
        ms, aspp = sa(x, return_aspp=True)
        want = torch.zeros(20, 20)
        want[6 + d, 7 + d] = 1.0
        assert aspp.shape == (1, 1 + len(dilations), 20, 20)
        torch.testing.assert_close(aspp[0, b], want)
        torch.testing.assert_close(ms[0, 0], 0.5 + (_sig(1.0) - 0.5) * want)


def test_multiscale_pool_three_scales_by_hand():
    """x[i, j] = i on 8x8. 2x2 pool: rows (1, 3, 5, 7); 4x4 pool: rows (3, 7), bilinear to 4
    rows (cell u = (p + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25, clamped): (3, 4, 6, 7);
    8x8 pool: 7. Sum: rows (11, 14, 18, 21) (nearest upsampling would give 11, 13, 19, 21)."""
    x = torch.arange(8.0)[:, None].expand(8, 8)[None, None]
    want = torch.tensor([11., 14., 18., 21.])[:, None].expand(4, 4)[None, None]
    torch.testing.assert_close(MultiScaleMaxPool((2, 4, 8))(x), want)
    torch.testing.assert_close(MultiScaleMaxPool((2, 4, 8), fuse="mean")(x), want / 3)


# ----------------------------------------------------------------------------- SE
def test_channel_se_by_hand():
    """x * sigmoid(W2 relu(W1 GAP(x) + b1) + b2): GAP = (2, -1); W1 = (1, 2), b1 = 1 -> 1;
    W2 = (2, -1), b2 = (0, 1) -> (2, 0) -> gates (sigmoid 2, 1/2)."""
    se = ChannelSE(2, reduction=2)  # hidden 1
    with torch.no_grad():
        se.fc1.weight.copy_(torch.tensor([[1., 2.]])), se.fc1.bias.fill_(1.0)
        se.fc2.weight.copy_(torch.tensor([[2.], [-1.]])), se.fc2.bias.copy_(torch.tensor([0., 1.]))
    x = torch.tensor([[[1., 3.]], [[-2., 0.]]])[None]  # (1, 2, 1, 2)
    want = torch.tensor([[[_sig(2.), 3 * _sig(2.)]], [[-1., 0.]]])[None]
    torch.testing.assert_close(se(x), want)


# ----------------------------------------------------------------------------- erasure
def test_normalize_map_by_hand():
    att = torch.tensor([[[2., 4.], [6., 10.]], [[3., 3.], [3., 3.]]])
    want = torch.tensor([[[0., 0.25], [0.5, 1.]], [[0., 0.], [0., 0.]]])  # a flat map -> 0
    torch.testing.assert_close(normalize_map(att), want)


def test_erase_mask_bilinear_threshold_by_hand():
    """[[0, 0], [0, 4]] -> normalised [[0, 0], [0, 1]] -> bilinear to 4x4: cell weights per
    axis w = (0, 1/4, 3/4, 1), value w_i * w_j. theta 0.2 erases values > 0.2 (1/4, 9/16,
    3/4, 1); nearest upsampling would erase only the bottom-right quadrant. theta 1/4 keeps
    the 1/4 pixels (strict >). The threshold reads the min-max normalised map, so any
    a * att + b (a > 0) gives the same mask."""
    att = torch.tensor([[[0., 0.], [0., 4.]]])
    want = torch.tensor([[1., 1., 1., 1.],
                         [1., 1., 1., 0.],
                         [1., 1., 0., 0.],
                         [1., 0., 0., 0.]])[None, None]
    assert torch.equal(erase_mask(att, (4, 4), 0.2), want)
    assert torch.equal(erase_mask(3 * att - 7, (4, 4), 0.2), want)
    quadrant = torch.ones(1, 1, 4, 4)
    quadrant[..., 2:, 2:] = 0
    assert torch.equal(erase_mask(att, (4, 4), 0.25), quadrant)
    images = torch.arange(1.0, 17.0).view(1, 1, 4, 4).expand(1, 3, 4, 4)
    erased, mask = erase(images, att, 0.2)
    assert torch.equal(mask, want) and torch.equal(erased, images * want)


def test_erase_mask_renormalises_after_upsampling():
    """A 3x3 centre peak upsampled to 6x6 reaches only (3/4)^2 = 9/16 (axis weights
    (0, 1/4, 3/4, 3/4, 1/4, 0)); re-normalised, the 3/16 pixels read 1/3 > theta 0.3, so
    the erased region is the 2x2 centre plus its 8 edge neighbours (a plus of 12 pixels)."""
    att = torch.zeros(1, 3, 3)
    att[0, 1, 1] = 1.0
    want = torch.tensor([[1., 1., 1., 1., 1., 1.],
                         [1., 1., 0., 0., 1., 1.],
                         [1., 0., 0., 0., 0., 1.],
                         [1., 0., 0., 0., 0., 1.],
                         [1., 1., 0., 0., 1., 1.],
                         [1., 1., 1., 1., 1., 1.]])[None, None]
    assert torch.equal(erase_mask(att, (6, 6), 0.3), want)


def test_erase_keeps_the_images_dtype_and_a_float32_mask():
    """bf16 images come back bf16 (the mask is cast to them), the mask itself stays float32
    0/1 (erase_mask), and a 3-D map is upsampled to the images' own (H, W)."""
    att = torch.tensor([[[0., 0.], [0., 4.]]])
    images = torch.ones(1, 3, 4, 6, dtype=torch.bfloat16)
    erased, mask = erase(images, att, 0.5)
    assert erased.dtype == torch.bfloat16 and mask.shape == (1, 1, 4, 6)
    assert erase_mask(att, (4, 6), 0.5).dtype == torch.float32
    assert set(mask.unique().tolist()) == {0.0, 1.0}


# ----------------------------------------------------------------------------- regions
def test_window_boxes_by_hand():
    """2x2 grid on an 8x8 image: centres 2 and 6. frac 1/2: 4 px windows, corners at 0 and 4;
    frac 3/4: 6 px windows, x1 = 2 - 3 -> 0 and 6 - 3 -> 2 (shifted inside, not clipped)."""
    want = torch.tensor([[0., 0., 4., 4.], [4., 0., 8., 4.], [0., 4., 4., 8.], [4., 4., 8., 8.],
                         [0., 0., 6., 6.], [2., 0., 8., 6.], [0., 2., 6., 8.], [2., 2., 8., 8.]])
    torch.testing.assert_close(window_boxes((2, 2), (8, 8), [0.5, 0.75]), want)


def test_window_scores_by_hand():
    att = torch.tensor([[[1., 2.], [3., 4.]]])
    boxes = window_boxes((2, 2), (8, 8), [0.5, 1.0])  # 4 px cell windows, then the full image
    assert window_scores(att, boxes, (8, 8), "center").tolist() == [[1., 2., 3., 4.] * 2]
    mean = window_scores(att, boxes, (8, 8), "mean")
    # a 4 px window covers exactly its own cell; the full image averages all four
    torch.testing.assert_close(mean, torch.tensor([[1., 2., 3., 4., 2.5, 2.5, 2.5, 2.5]]))


def test_nms_topk_keeps_the_best_by_hand():
    """A (0.9) and B (0.8) overlap with IoU 12 / 20 = 0.6 > 0.5, so B is suppressed; C, D do
    not overlap anything. Survivors in descending score: A, C, D; the 4th slot is B, invalid.
    Image 2 has the scores reversed: D, C, B survive and A (now the worst, and overlapping B)
    is suppressed."""
    boxes = torch.tensor([[0., 0., 4., 4.], [1., 0., 5., 4.], [4., 4., 8., 8.], [0., 4., 4., 8.]])
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.1], [0.1, 0.7, 0.8, 0.9]])
    top, top_scores, valid = nms_topk(boxes, scores, 4, 0.5)
    torch.testing.assert_close(top[0], boxes[[0, 2, 3, 1]])
    torch.testing.assert_close(top[1], boxes[[3, 2, 1, 0]])
    torch.testing.assert_close(top_scores, torch.tensor([[0.9, 0.7, 0.1, 0.8], [0.9, 0.8, 0.7, 0.1]]))
    assert valid.tolist() == [[True, True, True, False], [True, True, True, False]]
    top2, _, valid2 = nms_topk(boxes, scores, 2, 0.5)
    torch.testing.assert_close(top2[0], boxes[[0, 2]])
    torch.testing.assert_close(top2[1], boxes[[3, 2]])
    assert valid2.all()


def test_crop_and_zoom_by_hand():
    """Image x[i, j] = 4 i + j. The box (1, 1, 3, 3) at 2x2 is exactly pixels 5, 6, 9, 10;
    the box (1, 0, 3, 1) at 1x4 samples x = 0.75, 1.25, 1.75, 2.25 on row 0 (bilinear)."""
    img = torch.arange(16.0).view(1, 1, 4, 4)
    out = crop_and_zoom(img, torch.tensor([[[1., 1., 3., 3.]]]), (2, 2))
    torch.testing.assert_close(out, torch.tensor([[[[5., 6.], [9., 10.]]]]))
    out = crop_and_zoom(img, torch.tensor([[[1., 0., 3., 1.]]]), (1, 4))
    torch.testing.assert_close(out, torch.tensor([[[[0.75, 1.25, 1.75, 2.25]]]]))


def test_upsample_to_by_hand():
    """(2, 2) -> min side 4: bilinear, axis weights (0, 1/4, 3/4, 1) on the second cell;
    a (2, 3) map keeps its aspect: (4, 6); a map already large enough is returned as is."""
    maps = torch.tensor([[[0., 1.], [2., 3.]]])
    w = torch.tensor([0., 0.25, 0.75, 1.])
    torch.testing.assert_close(upsample_to(maps, 4)[0], 2 * w[:, None] + w[None, :])
    assert upsample_to(torch.zeros(1, 2, 3), 4).shape == (1, 4, 6)
    assert upsample_to(maps, 2) is maps


# -- value tests written for `make mutate` survivors (docs/mutation_survivors.yaml) ------------

def test_smooth_uses_a_kernel_of_three_sigma_each_side():
    from fgvc.layers.regions import smooth
    delta = torch.zeros(1, 31, 31)
    delta[0, 15, 15] = 1.0
    out = smooth(delta, 2.0)  # kernel 2 * ceil(6) + 1 = 13: offsets -6..6
    g = torch.exp(-torch.arange(-6, 7, dtype=torch.float32) ** 2 / 8)
    g = g / g.sum()
    assert out[0, 15, 15].item() == pytest.approx((g[6] ** 2).item(), rel=1e-4)
    assert out[0, 15, 21].item() == pytest.approx((g[6] * g[12]).item(), rel=1e-3)  # offset 6
    assert out[0, 15, 22].item() == 0.0  # beyond the kernel


def test_smooth_caps_the_kernel_by_the_shorter_side():
    from fgvc.layers.regions import smooth
    maps = torch.rand(2, 3, 31)  # shorter side 3: kernel capped to 5 (reflect padding 2 < 3)
    assert smooth(maps, 2.0).shape == (2, 3, 31)


def test_mean_window_scores_scale_rows_by_the_image_height():
    att = torch.tensor([[[0.0, 0, 0, 0], [1, 1, 1, 1]]])  # (1, gh=2, gw=4)
    bottom_half = torch.tensor([[0.0, 16, 64, 32]])        # x1, y1, x2, y2 of a 32 x 64 image
    score = window_scores(att, bottom_half, (32, 64), mode="mean")
    assert score.item() == pytest.approx(1.0)


def test_nms_never_suppresses_across_images():
    boxes = torch.tensor([[0.0, 0, 1, 1], [9, 9, 10, 10]])  # shared by both images, disjoint
    scores = torch.tensor([[0.9, 0.8], [0.7, 0.6]])
    _, _, valid = nms_topk(boxes, scores, 2, iou=0.5)
    assert valid.all()


def test_crop_and_zoom_averages_the_region_when_shrinking():
    image = torch.arange(16, dtype=torch.float32).view(1, 1, 4, 4) ** 2
    whole = torch.tensor([[[0.0, 0, 4, 4]]])
    out = crop_and_zoom(image, whole, (1, 1))  # 4 x 4 samples at the pixel centres
    assert out.item() == pytest.approx(image.mean().item())


def test_crop_and_zoom_casts_float32_boxes_to_the_images_dtype():
    # roi_align needs rois of the images' dtype (float64 here; fp16/bf16 on CUDA).
    image = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    boxes = torch.tensor([[[0.0, 0, 4, 4]], [[2.0, 2, 8, 8]]])
    assert crop_and_zoom(image, boxes, (4, 4)).dtype == torch.float64


def test_upsample_to_scales_both_sides_by_the_same_factor():
    assert upsample_to(torch.rand(1, 4, 2), 8).shape == (1, 16, 8)  # x 4: the long side too
    assert upsample_to(torch.rand(1, 2, 4), 8).shape == (1, 8, 16)


def test_pair_weights_pairs_image_i_with_i_plus_half_for_any_even_batch():
    from fgvc.layers.coattention import co_attention_weights, pair_weights
    f = torch.randn(6, 3, 5)
    w = pair_weights(f, shared=False)
    assert w.shape == (6, 3, 3)
    torch.testing.assert_close(w[1], co_attention_weights(f[1:2], f[4:5])[0])
    torch.testing.assert_close(w[4], co_attention_weights(f[4:5], f[1:2])[0])


def test_co_attend_keeps_bf16_features():
    from fgvc.layers.coattention import co_attend
    fmap = torch.randn(4, 3, 2, 2).bfloat16()
    assert co_attend(fmap).dtype == torch.bfloat16


def test_nms_ranks_suppressed_windows_below_survivors_with_negative_scores():
    boxes = torch.tensor([[0.0, 0, 4, 4], [0.0, 0, 4, 4], [8.0, 8, 12, 12]])
    scores = torch.tensor([[-1.0, -2.0, -10.0]])  # window 1 is suppressed by window 0
    _, top, valid = nms_topk(boxes, scores, 3, iou=0.5)
    assert valid.tolist() == [[True, True, False]]
    assert top.tolist() == [[-1.0, -10.0, -2.0]]


def test_attention_blocks_default_to_their_papers_reductions():
    """Defaults of the blocks' MLP reductions: CBAM / SENet's r = 16 for the channel MLPs (64
    channels -> hidden 4; r = 17 would give 3), LAFE's "r is set to 7" for region SE (a 7x7
    grid: 49 positions -> hidden 7; r = 8 would give 6)."""
    assert ChannelAttention(64).mlp[0].out_features == 4
    assert HybridAttention(64).channel.mlp[0].out_features == 4
    assert ChannelSE(64).fc1.out_features == 4
    assert RegionSE(7, 7).fc1.out_features == 7


def test_hybrid_attention_builds_the_aspp_branches_it_is_given():
    """The paper's "dilation rates of 4 and 8": HybridAttention(dilations=(4, 8)) has a 1x1 and
    two atrous branches (not the default three), so its ASPP concat has 3 maps."""
    block = HybridAttention(2, reduction=1, dilations=(4, 8))
    assert [b[0].dilation for b in block.spatial.branches] == [(1, 1), (4, 4), (8, 8)]
    _, parts = block(torch.randn(1, 2, 9, 9), return_parts=True)
    assert parts["aspp"].shape == (1, 3, 9, 9)


def test_spatial_attention_default_has_no_relu_before_the_sigmoid():
    """Eqs. 10-11 (the default): M_s = sigmoid(z), so a negative z gives a weight below 1/2;
    with the prose's ReLU it could not go below 1/2. z = -2 everywhere: M_s = sigmoid(-2)."""
    sa = SpatialAttention()
    _spatial_off(sa)
    with torch.no_grad():
        sa.conv.bias.fill_(-2.0)
    torch.testing.assert_close(sa(torch.randn(1, 3, 5, 5)), torch.full((1, 1, 5, 5), _sig(-2.0)))
