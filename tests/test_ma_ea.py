"""ma_ea (seed 000): hybrid attention blocks, stem pooling, attention erasure, variants, cost."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fgvc.study.config import load_variants
from fgvc.layers.hybrid import (ChannelAttention, HybridAttention, MultiScaleMaxPool,
                                PoolBranch, SpatialAttention)
from fgvc.methods import create_method
from fgvc.methods.ma_ea import MaEa
from fgvc.study.complexity import PAPER_TABLE4
from fgvc.study.config import resolve
from fgvc.study.cost import count_flops, count_params
from tiny import TINY


def _model(**cfg):
    torch.manual_seed(0)
    return create_method("ma_ea", 3, backbone="resnet18", input_size=64, **cfg)


class _Const(nn.Module):
    def __init__(self, value: torch.Tensor):
        super().__init__()
        self.value = value

    def forward(self, x):
        return self.value


# ----------------------------------------------------------------------------- stem pooling
@pytest.mark.parametrize("size", [448, 447, 65, 64])
def test_stem_pool_output_size_equals_maxpool(size):
    """Through the whole stem (conv1 /2, then the pool /2), for even and odd images."""
    x = torch.empty(1, 3, size, size, device="meta")
    old = _model(use_pool=False, use_ma=False, use_ea=False).to("meta").backbone.stem
    new = _model(use_ma=False, use_ea=False).to("meta").backbone.stem
    assert isinstance(old[-1], nn.MaxPool2d) and isinstance(new[-1], MultiScaleMaxPool)
    assert new(x).shape == old(x).shape == (1, 64, math.ceil(size / 4), math.ceil(size / 4))


@pytest.mark.parametrize("size", [224, 223, 33, 17, 16])
def test_multiscale_pool_size_on_feature_maps(size):
    x = torch.randn(1, 2, size, size + 1)
    assert MultiScaleMaxPool()(x).shape == nn.MaxPool2d(3, 2, 1)(x).shape


def test_multiscale_pool_values_by_hand():
    x = torch.tensor([[0., 1., 2., 3.],
                      [4., 5., 6., 7.],
                      [8., 9., -1., -2.],
                      [-3., -4., -5., -6.]])[None, None]
    # 2x2 max-pool: [[5, 7], [9, -1]]; 4x4 max-pool: [[9]], upsampled bilinearly = 9 everywhere.
    expected = torch.tensor([[14., 16.], [18., 8.]])[None, None]
    torch.testing.assert_close(MultiScaleMaxPool((2, 4))(x), expected)
    torch.testing.assert_close(MultiScaleMaxPool((2, 4), fuse="mean")(x), expected / 2)


def test_multiscale_pool_upsamples_bilinearly():
    x = torch.zeros(1, 1, 16, 16)
    x[..., :8, :] = 1.0  # top half: the 8x8 pool gives [[1, 1], [0, 0]]
    y = MultiScaleMaxPool((2, 8))(x) - F.max_pool2d(x, 2)  # (1, 1, 8, 8): the upsampled 8x8 map
    expected = F.interpolate(torch.tensor([[1., 1.], [0., 0.]])[None, None], size=(8, 8),
                             mode="bilinear", align_corners=False)
    torch.testing.assert_close(y, expected)
    assert 0 < y[0, 0, 4, 0] < 1  # interpolated, not nearest


def test_pool_keeps_pretrained_backbone_weights():
    """The pool has no parameters: a plain ResNet's backbone state loads strictly."""
    plain, pooled = _model(use_pool=False, use_ma=False), _model(use_ma=False)
    assert plain.backbone.state_dict().keys() == pooled.backbone.state_dict().keys()
    pooled.backbone.load_state_dict(plain.backbone.state_dict(), strict=True)
    assert sum(p.numel() for p in MultiScaleMaxPool().parameters()) == 0


def test_pool_on_lite0_keeps_strides_and_weights():
    """On EfficientNet-Lite0 the pool takes block 1's stride: same stage shapes and state keys,
    and block 1 now sees the multi-scale max-pooled map (its stride-1 conv on the pooled map)."""
    torch.manual_seed(0)
    plain = create_method("ma_ea", 3, backbone="efficientnet_lite0", input_size=64, use_pool=False)
    pooled = create_method("ma_ea", 3, backbone="efficientnet_lite0", input_size=64)
    pooled.backbone.load_state_dict(plain.backbone.state_dict(), strict=True)
    plain.eval(), pooled.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        shapes = [tuple(f.shape) for f in plain.backbone.forward_stages(x)]
        assert [tuple(f.shape) for f in pooled.backbone.forward_stages(x)] == shapes
        assert shapes[0][-1] == 16 and shapes[-1][-1] == 2  # strides 4 and 32
        block1 = pooled.backbone.stages[0][1]
        assert isinstance(block1.pre, MultiScaleMaxPool)
        h = pooled.backbone.stages[0][0](pooled.backbone.stem(x))  # (2, 16, 32, 32), stride 2
        torch.testing.assert_close(block1(h), block1.block(MultiScaleMaxPool()(h)))
    y = torch.tensor([0, 1])
    pooled.train()
    loss, parts = pooled.loss(pooled(x, y), y)
    assert torch.isfinite(loss) and set(parts) == {"ce", "ce_erased"}


# ----------------------------------------------------------------------------- attention blocks
def test_channel_attention_by_hand():
    ca = ChannelAttention(2, reduction=2)  # hidden = 1
    x = torch.tensor([[[1., 2.], [3., 6.]], [[-1., -1.], [-1., -5.]]])[None]  # (1, 2, 2, 2)
    # pooled = [avg0, avg1, max0, max1] = [3, -2, 6, -1]
    with torch.no_grad():
        ca.fuse.weight.copy_(torch.tensor([[1., 0., 0., 0.], [0., 0., 0., 1.]]))  # -> [3, -1]
        ca.fuse.bias.zero_()
        ca.mlp[0].weight.copy_(torch.tensor([[1., 1.]]))                          # -> relu(2) = 2
        ca.mlp[0].bias.zero_()
        ca.mlp[2].weight.copy_(torch.tensor([[1.], [-0.5]]))                      # -> [2, -1]
        ca.mlp[2].bias.zero_()
    expected = torch.sigmoid(torch.tensor([2., -1.])).view(1, 2, 1, 1)
    torch.testing.assert_close(ca(x), expected)


def _bn_identity(bn: nn.BatchNorm2d) -> None:
    bn.eval()
    bn.running_mean.zero_(), bn.running_var.fill_(1.0), bn.weight.data.fill_(1.0)
    bn.bias.data.zero_()
    bn.eps = 0.0


@pytest.mark.parametrize("bn, relu", [(False, False), (True, True), (True, False)])
def test_spatial_attention_by_hand(bn, relu):
    """Only the 1x1 branch reading the channel max, and the 7x7 conv's centre tap, are on.
    Default (eqs. 10-11): sigmoid(Conv7x7(.)) with the conv's bias; bn/relu: the prose's gate."""
    sa = SpatialAttention((2, 4, 8), relu=relu, bn=bn)
    assert len(sa.branches) == 4
    assert isinstance(sa.bn, nn.BatchNorm2d) == bn and (sa.conv.bias is None) == bn
    with torch.no_grad():
        for branch in sa.branches:
            branch[0].weight.zero_()
            _bn_identity(branch[1])
        sa.branches[0][0].weight[0, 0] = 1.0       # channel 0 of the input = max over channels
        sa.conv.weight.zero_()
        sa.conv.weight[0, 0, 3, 3] = -2.0          # centre tap of branch 0
        if bn:
            _bn_identity(sa.bn)
        else:
            sa.conv.bias.fill_(0.5)
    x = torch.randn(2, 5, 6, 6)
    z = -2.0 * F.relu(x.amax(1, keepdim=True)) + (0.0 if bn else 0.5)  # (2, 1, 6, 6)
    expected = torch.sigmoid(F.relu(z) if relu else z)
    torch.testing.assert_close(sa(x), expected)
    if relu:  # ReLU before the sigmoid: the map is exactly 0.5 where z <= 0
        assert torch.all(sa(x) == 0.5)


def test_spatial_default_follows_the_equations():
    """Eqs. 10-11: no BN and no ReLU between the 7x7 conv and the sigmoid, in the block and
    in the method; the prose's gate is the `earlier` variant."""
    sa = HybridAttention(8).spatial
    assert not sa.relu and isinstance(sa.bn, nn.Identity) and sa.conv.bias is not None
    model = _model()
    assert not model.cfg.spatial_relu and not model.cfg.spatial_bn
    assert not model.ma["2"].spatial.relu
    earlier = _model(**load_variants("ma_ea")["earlier"]["cfg"])
    assert earlier.ma["2"].spatial.relu and isinstance(earlier.ma["2"].spatial.bn, nn.BatchNorm2d)
    assert earlier.cfg.ea_map == "output"


def test_maps_shapes_and_range():
    torch.manual_seed(0)
    x = torch.randn(2, 32, 7, 9) * 5
    block = HybridAttention(32)
    mc, ms = block.channel(x), block.spatial(x)
    assert mc.shape == (2, 32, 1, 1) and ms.shape == (2, 1, 7, 9)
    assert torch.all((mc > 0) & (mc < 1)) and torch.all((ms > 0) & (ms < 1))
    assert ms.min() < 0.5  # the equations' gate spans (0, 1)
    ms_prose = SpatialAttention(relu=True, bn=True)(x)
    assert torch.all((ms_prose >= 0.5) & (ms_prose < 1))


def test_hybrid_combination_by_hand():
    """F_out = F + F * M_s * M_c (eq. 5), with fixed maps."""
    block = HybridAttention(2)
    block.channel = _Const(torch.tensor([0.5, 0.25]).view(1, 2, 1, 1))
    block.spatial = _Const(torch.tensor([[1.0, 0.0], [0.5, 0.25]]).view(1, 1, 2, 2))
    x = torch.tensor([[[1., 2.], [3., 4.]], [[-1., 0.], [2., -2.]]])[None]
    expected = torch.tensor([[[1.5, 2.0], [3.75, 4.5]], [[-1.25, 0.0], [2.25, -2.125]]])[None]
    torch.testing.assert_close(block(x), expected)


def test_hybrid_gradients_reach_every_parameter():
    torch.manual_seed(0)
    block = HybridAttention(16, reduction=4)
    x = torch.randn(2, 16, 8, 8, requires_grad=True)
    y = block(x)
    assert y.shape == x.shape
    (y ** 2).sum().backward()
    assert x.grad.abs().sum() > 0
    for name, p in block.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


# ----------------------------------------------------------------------------- erasure
def test_erase_zeroes_exactly_pixels_above_theta():
    model = _model(theta=0.5)
    # channel average = [0, 2, 4, 6, 8] -> normalised [0, .25, .5, .75, 1]; 0.5 is kept.
    source = torch.stack([torch.tensor([0., 1., 2., 3., 4.]), torch.tensor([0., 3., 6., 9., 12.])])
    images = torch.rand(1, 3, 1, 5) + 0.1
    erased, mask = model.erase_input(images, source[None, :, None, :])  # source (1, 2, 1, 5)
    assert mask.flatten().tolist() == [1, 1, 1, 0, 0]
    torch.testing.assert_close(erased[..., :3], images[..., :3])
    assert torch.all(erased[..., 3:] == 0)


def _record(model):
    """Inputs of each stem call, outputs of each MA block call (a tuple where parts were asked)."""
    stem_in, ma_out = [], []
    model.backbone.stem.register_forward_pre_hook(lambda m, a: stem_in.append(a[0]))
    for block in model.ma.values():
        block.register_forward_hook(lambda m, a, o: ma_out.append(o))
    return stem_in, ma_out


def _bands(cells: list[float], axis: int, channels: int = 256) -> torch.Tensor:
    """(1, channels, 4, 4) map, constant along one axis: cells[i] on row (axis 0) or column
    (axis 1) i, the same in every channel."""
    v = torch.tensor(cells, dtype=torch.float32)
    grid = v[:, None].expand(4, 4) if axis == 0 else v[None, :].expand(4, 4)
    return grid.expand(1, channels, 4, 4).clone()


class _FixedMA(nn.Module):
    """Stand-in for the MA block after layer3 (resnet18 at 64 px: 256 x 4 x 4) whose output,
    F' and ASPP concat are hand-set maps, so each `ea_map` reading gives a known mask."""

    def __init__(self):
        super().__init__()
        self.maps = {"output": _bands([1, 1, 0, 0], 0),                # top rows
                     "attended": _bands([1, 1, 0, 0], 1),              # left columns
                     "aspp": _bands([0, 0, 1, 1], 1, channels=4)}      # right columns

    def forward(self, x, return_parts=False):
        out = self.maps["output"].expand(x.shape[0], -1, -1, -1)
        parts = {k: self.maps[k].expand(x.shape[0], -1, -1, -1) for k in ("attended", "aspp")}
        return (out, parts) if return_parts else out


@pytest.mark.parametrize("ea_map", ["attended", "output", "aspp"])
def test_training_erases_the_chosen_map_by_hand(ea_map):
    """Eq. 18-19 on a 4x4 map [1, 1, 0, 0] along one axis, upsampled x16 bilinearly
    (align_corners=False): pixel p reads cell u = (p + 0.5) / 16 - 0.5, the value is 1 for
    u <= 1 and 2 - u up to u = 2; min-max stays 0..1; theta 0.75 erases u < 1.25, i.e. pixels
    0..27 (nearest upsampling would erase 0..31). The mask is 0 there, 1 elsewhere, and the
    second pass sees x * mask."""
    model = _model(theta=0.75, ea_map=ea_map)
    model.ma["2"] = _FixedMA()
    stem_in, _ = _record(model)
    x, y = torch.rand(2, 3, 64, 64) + 0.5, torch.tensor([0, 1])
    out = model.train()(x, y)
    expected = torch.ones(2, 1, 64, 64)
    if ea_map == "attended":
        expected[..., :, :28] = 0   # left columns
    elif ea_map == "output":
        expected[..., :28, :] = 0   # top rows
    else:
        expected[..., :, 36:] = 0   # right columns: 63 - 27 = 36
    assert torch.equal(out["erase_mask"], expected)
    assert len(stem_in) == 2 and torch.equal(stem_in[1], x * expected)


def test_default_erases_from_F_prime_and_sums_losses():
    """Default `ea_map` "attended": the source is F' = F * M_s * M_c of the MA block after
    layer3 (not F + F'); the loss is CE(stage 1) + CE(stage 2); gradients reach MA."""
    model = _model(theta=0.4)
    assert model.cfg.ea_map == "attended"
    seen = []
    real = model.erase_input
    model.erase_input = lambda images, source: seen.append(source) or real(images, source)
    stem_in, ma_out = _record(model)
    ma_in = []
    model.ma["2"].register_forward_pre_hook(lambda m, a: ma_in.append(a[0]))
    x, y = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 0])
    model.train()
    out = model(x, y)
    assert len(stem_in) == 2 and len(ma_out) == 2
    (f_out, parts), second = ma_out  # first pass asks for the parts, the second does not
    assert torch.is_tensor(second) and f_out.shape[1] == 256  # after layer3
    assert seen[0] is parts["attended"]
    f, block = ma_in[0], model.ma["2"]
    with torch.no_grad():  # same batch, so train-mode BN gives the same maps
        torch.testing.assert_close(parts["attended"], f * block.spatial(f) * block.channel(f))
    torch.testing.assert_close(f_out, f + parts["attended"])
    assert 0 < out["erase_mask"].mean() < 1
    assert out["logits"] is out["logits_first"]
    loss, parts_ = model.loss(out, y)
    torch.testing.assert_close(loss, F.cross_entropy(out["logits_first"], y)
                               + F.cross_entropy(out["logits_erased"], y))
    assert set(parts_) == {"ce", "ce_erased"}
    loss.backward()
    assert all(p.grad is not None for p in model.ma.parameters())
    with pytest.raises(ValueError, match="ea_map"):
        _model(ea_map="input")


def test_eval_is_one_pass_by_default_and_mean_option_averages():
    """Default "first": Table 4's +EA costs ~8 % of a ResNet-50 pass, so no second pass at test."""
    x = torch.randn(2, 3, 64, 64)
    model = _model().eval()
    stem_in, _ = _record(model)
    with torch.no_grad():
        out = model(x)
    assert len(stem_in) == 1 and "logits_erased" not in out

    model = _model(test_logits="mean").eval()
    stem_in, _ = _record(model)
    with torch.no_grad():
        out = model(x)
    assert len(stem_in) == 2
    torch.testing.assert_close(out["logits"], (out["logits_first"] + out["logits_erased"]) / 2)
    with pytest.raises(ValueError, match="test_logits"):
        _model(test_logits="max")


# ----------------------------------------------------------------------------- ablations
def test_resnet_variant_is_the_baseline():
    cfg = load_variants("ma_ea")["resnet"]["cfg"]
    model = _model(**cfg).eval()
    torch.manual_seed(1)
    base = create_method("baseline", 3, backbone="resnet18", input_size=64).eval()
    model.load_state_dict(base.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x)["logits"], base(x)["logits"])
    model.train()
    assert set(model(x, torch.tensor([0, 1]))) == {"logits", "logits_first", "features"}


def test_each_switch_removes_exactly_its_part():
    v = {name: _model(**spec["cfg"]) for name, spec in load_variants("ma_ea").items()}
    n = {name: sum(p.numel() for p in m.parameters()) for name, m in v.items()}
    assert isinstance(v["resnet"].backbone.stem[-1], nn.MaxPool2d)
    assert isinstance(v["pool"].backbone.stem[-1], MultiScaleMaxPool)
    assert n["pool"] == n["resnet"] and len(v["pool"].ma) == 0
    assert list(v["pool_ma"].ma) == ["2"]
    assert n["pool_ma"] - n["pool"] == sum(p.numel() for p in v["pool_ma"].ma.parameters()) > 0
    assert n["full"] == n["pool_ma"]  # EA has no parameters
    x, y = torch.randn(2, 3, 64, 64), torch.tensor([0, 1])
    assert "logits_erased" not in v["pool_ma"].train()(x, y)
    assert "logits_erased" in v["full"].train()(x, y)


def test_ma_placement_setting():
    model = _model(ma_stages=[1, 3])
    assert list(model.ma) == ["1", "3"] and model.ea_stage == 3
    assert model.ma["3"].channel.fuse.in_features == 2 * model.backbone.channels[3]
    assert model.cam_target_layers() == [model.ma["3"]]
    default = _model()
    assert default.cam_target_layers() == [default.backbone.stages[-1]]
    stem_in, ma_out = _record(model)
    model.train()(torch.randn(2, 3, 64, 64), torch.tensor([0, 1]))
    assert len(ma_out) == 4 and len(stem_in) == 2
    # EA reads the parts of the last block in the first pass only: (map, parts) there
    assert [type(o) for o in ma_out] == [torch.Tensor, tuple, torch.Tensor, torch.Tensor]
    with pytest.raises(ValueError, match="ma_stages"):
        _model(ma_stages=[4])


# ----------------------------------------------------------------------------- Table 4
def test_complexity_next_to_paper_table4():
    """Our parameters and MACs of ResNet-50, +MA, +MA+EA at 448 (200 classes) vs Table 4.

    Expected deviations (docs/METHODS.md): torchvision ResNet-50 with a 200-class head has 23.9 M
    parameters, not 22.4; MA adds ~2.2 M parameters (as in the paper) but almost no MACs
    (its convolutions act on pooled vectors or 2-channel maps), not +2 G; EA has no
    parameters (paper: +1.2 M) and costs a second pass in training only (x2 MACs, not
    +1.3 G); at test time +MA+EA costs the same as +MA.
    """
    ours = {}
    for variant in ("resnet", "pool_ma", "full"):  # Table 4's rows ResNet-50, +MA, +MA+EA
        with torch.device("meta"):  # shapes only, no compute
            model = create_method("ma_ea", 200, backbone="resnet50", weights="none", input_size=448,
                                  **load_variants("ma_ea")[variant]["cfg"])
            x = torch.empty(1, 3, 448, 448)
        macs = {}
        for mode in ("eval", "train"):  # one forward of one image in each mode
            model.train(mode == "train")
            with torch.no_grad():
                macs[mode] = count_flops(model, x) / 2e9
        ours[PAPER_TABLE4[("ma_ea", variant)]["row"]] = {
            "params_M": count_params(model) / 1e6, "GMACs": macs["eval"], "train_GMACs": macs["train"]}
    print("\nrow        params M (paper)   GMACs eval (paper)   GMACs train forward")
    for row, r in ours.items():
        p = next(v for v in PAPER_TABLE4.values() if v["row"] == row)
        print(f"{row:10s} {r['params_M']:7.2f} ({p['params_M']:4.1f})"
              f"     {r['GMACs']:7.2f} ({p['GMACs']:4.1f})     {r['train_GMACs']:7.2f}"
              + ("  (both passes)" if row == "+MA+EA" else ""))
    base, ma, ma_ea = ours["ResNet-50"], ours["+MA"], ours["+MA+EA"]
    # torchvision ResNet-50: 25,557,032 parameters with the 1000-class head.
    assert base["params_M"] * 1e6 == pytest.approx(25_557_032 - 2049 * 1000 + 2049 * 200)
    # MA on layer3 (C = 1024, r = 16): 1x1 conv 2C->C, MLP C->C/r->C, spatial ASPP + 7x7.
    c, h = 1024, 64
    # (7x7 conv 4 -> 1 with its bias: eqs. 10-11 have no BN before the sigmoid)
    ma_params = (2 * c * c + c) + (c * h + h) + (h * c + c) + (2 + 2 + 3 * (18 + 2) + 4 * 49 + 1)
    assert (ma["params_M"] - base["params_M"]) * 1e6 == pytest.approx(ma_params)
    assert ma_ea["params_M"] == ma["params_M"]
    assert 16.0 < base["GMACs"] < 16.6 and 0 < ma["GMACs"] - base["GMACs"] < 0.01
    assert ma_ea["GMACs"] == ma["GMACs"] == ma["train_GMACs"]
    assert ma_ea["train_GMACs"] == pytest.approx(2 * ma["GMACs"])


# ----------------------------------------------------------------------------- survivors
def test_pool_fuse_reaches_the_stem():
    """`pool_fuse` "mean" keeps the activation scale: a constant map leaves the stem's pool
    unchanged; the paper's "sum" triples it (three scales)."""
    x = torch.ones(1, 2, 16, 16)
    for fuse, scale in (("mean", 1.0), ("sum", 3.0)):
        pool = _model(pool_fuse=fuse, use_ma=False, use_ea=False).backbone.stem[-1]
        assert isinstance(pool, MultiScaleMaxPool)
        torch.testing.assert_close(pool(x), torch.full((1, 2, 8, 8), scale))


class _Bands(nn.Module):
    """Stand-in for layer3 (resnet18 at 64 px: 256 x 4 x 4): rows [1, 1, 0, 0], any batch."""

    def forward(self, x):
        return _bands([1, 1, 0, 0], 0).expand(x.shape[0], -1, -1, -1)


def test_without_ma_ea_erases_from_the_stage_output():
    """use_ma=False, use_ea=True: EA reads the plain output of stage `max(ma_stages)` (layer3);
    rows [1, 1, 0, 0] at theta 0.75 erase pixel rows 0..27 (as in the "output" case above)."""
    model = _model(use_ma=False, theta=0.75)
    model.backbone.stages[2] = _Bands()
    x, y = torch.rand(2, 3, 64, 64) + 0.5, torch.tensor([0, 1])
    out = model.train()(x, y)
    expected = torch.ones(2, 1, 64, 64)
    expected[..., :28, :] = 0
    assert torch.equal(out["erase_mask"], expected)


def test_eval_first_asks_no_block_for_erasure_parts():
    """Default `test_logits` "first": the one eval pass calls the MA block plainly (its hooks,
    Grad-CAM's among them, see the map), as the second pass of training does; only a pass
    that feeds EA asks for (map, parts)."""
    x = torch.randn(2, 3, 64, 64)
    model = _model().eval()
    _, ma_out = _record(model)
    with torch.no_grad():
        model(x)
    assert len(ma_out) == 1 and torch.is_tensor(ma_out[0])


# ----------------------------------------------------------------------------- pooling without a
# pretrained stride change (ours, transfer_next): the branch and the BN recalibration
def _lite0(**cfg):
    torch.manual_seed(0)
    return create_method("ma_ea", 3, backbone="efficientnet_lite0", input_size=64, **cfg)


@pytest.mark.parametrize("backbone", ["efficientnet_lite0", "resnet18"])
def test_branch_is_the_plain_network_at_init(backbone):
    """With the gate at 0 the branched network computes what the plain one computes (same
    backbone weights), in eval and in train mode; the pretrained state keys are all kept."""
    torch.manual_seed(0)
    plain = create_method("ma_ea", 3, backbone=backbone, input_size=64, use_pool=False,
                          use_ma=False, use_ea=False)
    branched = create_method("ma_ea", 3, backbone=backbone, input_size=64, pool_mode="branch",
                             use_ma=False, use_ea=False)
    missing, unexpected = branched.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(".side." in k for k in missing)
    x = torch.randn(2, 3, 64, 64) * 3 + 1
    for mode in (False, True):
        plain.train(mode), branched.train(mode)
        with torch.no_grad():
            torch.testing.assert_close(branched(x)["logits"], plain(x)["logits"],
                                       atol=1e-6, rtol=0)
    assert not any(isinstance(m, MultiScaleMaxPool) for m in branched.backbone.stem)  # no graft


def test_branch_on_lite0_shapes_gradients_and_lr_group():
    """The branch reads block 1's input (16 ch, stride 2), adds 24 ch at stride 4; at step 0
    only its gate gets a gradient (the rest sits behind the zero gate), after one step every
    branch parameter does; its parameters are new (train.lr), not pretrained."""
    model = _lite0(pool_mode="branch")
    block1 = model.backbone.stages[0][1]
    branch = block1.side
    assert isinstance(branch, PoolBranch) and block1.residual is False
    assert all(m.stride in ((1, 1), (2, 2)) for m in block1.block if isinstance(m, nn.Conv2d))
    assert any(m.stride == (2, 2) for m in block1.block if isinstance(m, nn.Conv2d))  # kept
    h = torch.randn(2, 16, 31, 32)
    assert branch(h).shape == block1.block(h).shape == (2, 24, 16, 16)
    assert torch.count_nonzero(branch(h)) == 0
    x, y = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 0])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(2):
        opt.zero_grad()
        loss, _ = model.loss(model.train()(x, y), y)
        loss.backward()
        grads = {n: p.grad for n, p in branch.named_parameters()}
        if step == 0:
            assert grads["gate"].abs().sum() > 0
            assert all(g is None or g.abs().sum() == 0 for n, g in grads.items() if n != "gate")
        opt.step()
    assert all(g is not None and g.abs().sum() > 0 for g in grads.values())
    model.backbone.pretrained = True  # as with weights "imagenet"
    old = {id(p) for p in model.pretrained_parameters()}
    new = {id(p) for p in model.new_parameters()}
    assert all(id(p) in new and id(p) not in old for p in branch.parameters())
    assert {id(p) for p in block1.block.parameters()} <= old


def _stats(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    return bn.running_mean.clone(), bn.running_var.clone()


def _bn_input(model, x, bn) -> torch.Tensor:
    seen = []
    h = bn.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach()))
    with torch.no_grad():
        model.eval()._pass(x, need_source=False)
    h.remove()
    return seen[0]


def test_bn_recalibration_moves_stats_to_the_batch_statistics():
    """Graft: block 1's first BN (input = the pooled map through the 1x1 expansion) gets the
    mean and variance of its input over the calibration batches; BNs before the pool (stem,
    block 0) keep theirs; no weight changes; the model's mode is restored."""
    model = _lite0(use_ma=False, use_ea=False, pool_fuse="mean", bn_recalibrate=True)
    stem_bn, block0_bn = model.backbone.stem[1], model.backbone.stages[0][0].block[1]
    bn1 = model.backbone.stages[0][1].block[1]
    before = {n: v.clone() for n, v in model.state_dict().items()}
    batches = [torch.rand(4, 3, 64, 64) * 2 for _ in range(3)]
    inputs = torch.cat([_bn_input(model, x, bn1) for x in batches])  # (12, 96, 32, 32)
    norms = model.recalibrated_norms(batches[0])
    assert bn1 in norms and stem_bn not in norms and block0_bn not in norms
    assert all(n in norms for n in model.backbone.stages[3].modules() if isinstance(n, nn.BatchNorm2d))
    model.train()
    model.calibrate(iter(batches))
    assert model.training
    mean, var = _stats(bn1)
    torch.testing.assert_close(mean, inputs.mean((0, 2, 3)), atol=1e-5, rtol=1e-4)
    # per-batch unbiased variances averaged: close to the pooled variance (same distribution)
    torch.testing.assert_close(var, inputs.var((0, 2, 3)), atol=1e-4, rtol=0.05)
    after = model.state_dict()
    for name in ("backbone.stem.1.running_mean", "backbone.stages.0.0.block.1.running_var"):
        assert torch.equal(after[name], before[name])
    assert not torch.equal(after["backbone.stages.0.1.block.1.running_mean"],
                           before["backbone.stages.0.1.block.1.running_mean"])
    assert all(torch.equal(after[n], v) for n, v in before.items() if "running" not in n
               and "num_batches" not in n)
    assert bn1.momentum == 0.01  # restored


def test_bn_recalibration_only_when_enabled():
    """bn_recalibrate False (the default): calibrate draws no batch and changes nothing."""
    drawn = []

    def batches():
        for _ in range(3):
            drawn.append(1)
            yield torch.rand(2, 3, 64, 64)

    model = _lite0(use_ma=False, use_ea=False)
    before = {n: v.clone() for n, v in model.state_dict().items()}
    model.calibrate(batches())
    assert not drawn and all(torch.equal(model.state_dict()[n], v) for n, v in before.items())
    model = _lite0(use_ma=False, use_ea=False, bn_recalibrate=True)
    model.calibrate(batches())
    assert len(drawn) == 3


def test_bn_recalibration_with_the_branch_touches_only_the_branch():
    """Branch: the gate is 0, so no pretrained BN's input changes; only the branch's BN is
    re-estimated (and the output stays the plain network's)."""
    model = _lite0(use_ma=False, use_ea=False, pool_mode="branch", bn_recalibrate=True)
    branch_bn = model.backbone.stages[0][1].side.bn
    x = torch.rand(4, 3, 64, 64)
    assert model.recalibrated_norms(x) == [branch_bn]
    before = {n: v.clone() for n, v in model.state_dict().items()}
    model.calibrate([x])
    changed = {n for n, v in model.state_dict().items() if not torch.equal(v, before[n])}
    assert changed and all(n.startswith("backbone.stages.0.1.side.bn.") for n in changed)


def test_run_calibrates_a_new_run_only(monkeypatch):
    """fgvc.study.run calls Method.calibrate once for a new run, with training images on the
    model's device, and not when it resumes from last.pt."""
    from fgvc.paths import results_dir
    from fgvc.study.run import run

    calls = []
    monkeypatch.setattr(MaEa, "calibrate",
                        lambda self, batches: calls.append(next(iter(batches)).shape))
    cfg = resolve("ma_ea", "pool", profile="scratch", overrides=TINY, run_id="calibrated")
    run(cfg, progress=False)
    assert len(calls) == 1 and calls[0][:2] == (TINY["train.batch_size"], 3)
    (results_dir() / "runs" / "calibrated" / "metrics.json").unlink()
    run(cfg, progress=False)  # resumes from last.pt: no second calibration
    assert len(calls) == 1


def test_added_settings_leave_existing_hashes():
    """pool_mode and bn_recalibrate at their defaults add nothing to the config hash: every
    committed ma_ea run of the transfer profile resolves to the hash its record holds."""
    import json
    from fgvc.paths import ROOT

    records = sorted((ROOT / "results" / "runs").glob("transfer-*-ma_ea-*-s*/config.json"))
    assert records
    for path in records:
        held = json.loads(path.read_text())
        cfg = resolve("ma_ea", held["variant"], held["dataset"], held["profile"], held["seed"],
                      overrides=held["overrides"])
        assert cfg["config_hash"] == held["config_hash"], path.parent.name
    assert resolve("ma_ea", "branch_pool")["config_hash"] != resolve("ma_ea", "pool")["config_hash"]


def test_new_variants_keep_existing_ones():
    variants = load_variants("ma_ea")
    assert variants["pool"]["cfg"] == {"use_pool": True, "use_ma": False, "use_ea": False}
    assert variants["full"]["cfg"] == {"use_pool": True, "use_ma": True, "use_ea": True}
    for name in ("pool_mean_bn", "branch_pool", "branch_pool_ma", "branch_full"):
        assert variants[name]["paper"] == {}
        create_method("ma_ea", 3, backbone="resnet18", input_size=64, **variants[name]["cfg"])


def test_pool_branch_by_hand():
    """gate * BN(Conv1x1(sum of the max-pools)) with a per-channel gate, a bias-free 1x1 conv
    (BN follows it) and the fuse passed through (written for surviving mutants)."""
    torch.manual_seed(0)
    branch = PoolBranch(3, 5)
    assert branch.pool.fuse == "sum" and PoolBranch(3, 5, fuse="mean").pool.fuse == "mean"
    assert branch.proj.bias is None and branch.gate.shape == (1, 5, 1, 1)
    with torch.no_grad():
        branch.gate.copy_(torch.arange(1.0, 6.0).view(1, 5, 1, 1))
    branch.eval()
    x = torch.randn(2, 3, 8, 8)
    expect = branch.gate * branch.bn(branch.proj(branch.pool(x)))
    torch.testing.assert_close(branch(x), expect)
    assert not torch.equal(branch(x), expect / branch.gate ** 2)   # a product, not a quotient


def test_bn_recalibration_reads_at_most_its_batches_and_tolerates_none():
    """calibrate draws BN_CALIBRATION_BATCHES batches and no more; an empty source is a no-op."""
    from fgvc.methods.ma_ea import BN_CALIBRATION_BATCHES

    model = _lite0(use_ma=False, use_ea=False, pool_mode="branch", bn_recalibrate=True)
    drawn = []

    def batches():
        for _ in range(BN_CALIBRATION_BATCHES + 3):
            drawn.append(1)
            yield torch.rand(2, 3, 32, 32)

    model.calibrate(batches())
    assert len(drawn) == BN_CALIBRATION_BATCHES
    model.calibrate(iter([]))      # nothing to read: returns without error
    # a network without the pooling has no BN after it
    assert _lite0(use_ma=False, use_ea=False, use_pool=False).recalibrated_norms(
        torch.rand(2, 3, 32, 32)) == []
