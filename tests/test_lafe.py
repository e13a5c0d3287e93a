"""lafe (seed 001): region SE, eqs. 1-3, the two feature losses, ablations, input checks."""
import math

import pytest
import torch

from fgvc.config import load_variants
from fgvc.layers.se import ChannelSE, RegionSE
from fgvc.methods import create_method
from fgvc.methods.lafe import DisConAttention, confusable_loss, discriminative_loss, stage_grid
from fgvc.models import build_backbone

SIZE, K = 64, 3
CH = [64, 128, 256, 512]                               # resnet18 stage channels
GRID = [SIZE // 4, SIZE // 8, SIZE // 16, SIZE // 32]  # 16, 8, 4, 2


def _model(**cfg):
    torch.manual_seed(0)
    return create_method("lafe", K, backbone="resnet18", input_size=SIZE, **cfg)


def _nparams(m) -> int:
    return sum(p.numel() for p in m.parameters())


def _batch(y=(0, 0, 1, 1)):
    torch.manual_seed(1)
    return torch.randn(len(y), 3, SIZE, SIZE), torch.tensor(y)


# ----------------------------------------------------------------------------- region SE
def test_region_se_hand_computed():
    """2 channels on a 1x2 grid: z = channel means, h = relu(W1 z + b1), s = gate(W2 h + b2)."""
    se = RegionSE(1, 2, reduction=1)  # 2 positions -> hidden 2
    with torch.no_grad():
        se.fc1.weight.copy_(torch.tensor([[0.5, -0.25], [-1.0, 0.0]]))
        se.fc1.bias.copy_(torch.tensor([1.0, 0.0]))
        se.fc2.weight.copy_(torch.tensor([[2.0, 5.0], [-1.0, 7.0]]))
        se.fc2.bias.copy_(torch.tensor([-1.0, 0.0]))
    x = torch.tensor([[[[1.0, 3.0]], [[3.0, 5.0]]]])  # (1, 2, 1, 2)
    # z = (2, 4); h = relu(1 - 1 + 1, -2) = (1, 0); a = (2 - 1, -1) = (1, -1)
    s1, s2 = 1 / (1 + math.exp(-1)), 1 / (1 + math.exp(1))
    want = torch.tensor([[[[1 * s1, 3 * s2]], [[3 * s1, 5 * s2]]]])
    torch.testing.assert_close(se(x), want)
    se.gate = "relu"  # eq. 6 literally: relu(a) = (1, 0)
    torch.testing.assert_close(se(x), torch.tensor([[[[1.0, 0.0]], [[3.0, 0.0]]]]))


def test_region_se_positions_row_major():
    """On a non-square grid every position (h, w) gets its own gate, in row-major order."""
    torch.manual_seed(0)
    se = RegionSE(2, 3, reduction=2)
    x = torch.randn(2, 4, 2, 3)
    out = se(x)
    for b in range(2):
        z = torch.tensor([[x[b, :, i, j].mean() for i in range(2) for j in range(3)]])
        s = torch.sigmoid(se.fc2(torch.relu(se.fc1(z))))[0]  # (6,)
        for i in range(2):
            for j in range(3):
                torch.testing.assert_close(out[b, :, i, j], x[b, :, i, j] * s[i * 3 + j])


def test_region_se_rejects_other_grid():
    with pytest.raises(ValueError, match=r"built for a 4x4 grid.*got a 5x5"):
        RegionSE(4, 4)(torch.randn(1, 2, 5, 5))


def test_channel_se_is_senet():
    torch.manual_seed(0)
    se, x = ChannelSE(32, 16), torch.randn(2, 32, 3, 3)
    s = torch.sigmoid(se.fc2(torch.relu(se.fc1(x.mean((2, 3))))))
    torch.testing.assert_close(se(x), x * s[:, :, None, None])
    assert se.fc1.out_features == 2


@pytest.mark.parametrize("backbone", ["resnet18", "efficientnet_lite0"])
def test_stage_grid_matches_backbone(backbone):
    net = build_backbone(backbone).eval()
    for size in (64, 70):
        with torch.no_grad():
            outs = net.forward_stages(torch.zeros(1, 3, size, size))
        assert [o.shape[-1] for o in outs] == [stage_grid(size, i) for i in range(4)]
    assert [stage_grid(448, i) for i in range(4)] == [112, 56, 28, 14]


# ----------------------------------------------------------------------------- eqs. 1-3
@pytest.mark.parametrize("use_region", [True, False])
def test_stage_attention_is_f_plus_dis_minus_con(use_region):
    torch.manual_seed(0)
    att = DisConAttention(16, 4, use_region, channel_reduction=4, region_reduction=7,
                          region_gate="sigmoid")
    f = torch.randn(2, 16, 4, 4)
    big_f, dis, con = att(f, parts=True)
    want_dis, want_con = att.dis_channel(f), att.con_channel(f)
    if use_region:
        want_dis, want_con = want_dis + att.dis_region(f), want_con + att.con_region(f)
    torch.testing.assert_close(dis, want_dis)
    torch.testing.assert_close(con, want_con)
    torch.testing.assert_close(big_f, f + want_dis - want_con)
    eval_f, none1, none2 = att(f, parts=False)  # the eval path: one product
    torch.testing.assert_close(eval_f, big_f)
    assert none1 is None and none2 is None


# ----------------------------------------------------------------------------- losses
def test_discriminative_loss_hand_computed():
    same = torch.tensor([[1.0, 2.0], [1.0, 2.0], [0.0, 5.0], [0.0, 5.0]])
    y = torch.tensor([0, 0, 1, 1])
    assert discriminative_loss(same, y) == 0
    emb = torch.tensor([[1.0, 2.0], [1.0, 2.0], [0.0, 0.0], [3.0, 1.0]])
    # pair 1: 0; pair 2: (3 + 1) / 2 = 2; mean over pairs = 1
    torch.testing.assert_close(discriminative_loss(emb, y), torch.tensor(1.0))
    # a mismatched adjacent pair is left out: only pair 1 counts
    assert discriminative_loss(emb, torch.tensor([0, 0, 1, 2])) == 0
    # "all": pairs (0, 2) and (1, 3) of labels 0 1 0 1 -> (1 + 2) / 2 and (2 + 1) / 2
    torch.testing.assert_close(discriminative_loss(emb, torch.tensor([0, 1, 0, 1]), "all"),
                               torch.tensor(1.5))


def test_confusable_loss_zero_exactly_at_all_ones():
    ones = torch.ones(4, 5)
    assert confusable_loss(ones) == 0
    off = ones.clone()
    off[2, 3] = 1.2
    torch.testing.assert_close(confusable_loss(off), torch.tensor(0.2 / 20))
    assert confusable_loss(torch.zeros(4, 5)) == 1


def test_model_feature_losses():
    """Through the model: identical pair images -> L_dis = 0, different -> > 0;
    a confusable head that outputs all ones -> L_con = 0, anything else -> > 0."""
    model = _model().train()
    x, y = _batch()
    x[1], x[3] = x[0], x[2]
    with torch.no_grad():
        model.con_fc.weight.zero_()
        model.con_fc.bias.fill_(1.0)
        _, parts = model.loss(model(x, y), y)
        assert parts["dis"] < 1e-6 and parts["con"] == 0
        x[3] = x[3] + 1
        model.con_fc.bias[1] = 0.5
        _, parts = model.loss(model(x, y), y)
    assert parts["dis"] > 1e-4
    torch.testing.assert_close(parts["con"], torch.tensor(0.5 / K))


def test_batch_without_pair_is_an_error():
    model = _model().train()
    x, _ = _batch()
    out = model(x)
    with pytest.raises(ValueError, match="needs same-label pairs.*no adjacent pair"):
        model.loss(out, torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ValueError, match="needs same-label pairs.*no two images"):
        discriminative_loss(out["dis_embed"], torch.tensor([0, 1, 2, 3]), "all")
    discriminative_loss(out["dis_embed"], torch.tensor([0, 1, 2, 0]), "all")  # (0, 3) share


# ----------------------------------------------------------------------------- ablations
def _se(n: int, hidden: int) -> int:
    return 2 * n * hidden + hidden + n


def _se_c(c: int) -> int:
    return _se(c, c // 16)


def _se_r(grid: int) -> int:
    return _se(grid * grid, max(1, grid * grid // 7))


def _chain() -> int:  # one stream's fusion 3 -> 4 -> 5: W2 (+bias), W1, BN
    return sum(a * b + b + b * b + 2 * b for a, b in ((CH[1], CH[2]), (CH[2], CH[3])))


def test_ablations_remove_exactly_their_part():
    full = _nparams(_model())
    region = 2 * sum(_se_r(GRID[i]) for i in (1, 2, 3))
    con_fc = CH[3] * K + K
    assert full - _nparams(_model(use_region=False)) == region
    # without fusion, stages 3-4 no longer reach the output: their four modules go too
    assert full - _nparams(_model(use_fusion=False)) == \
        3 * _chain() + sum(2 * _se_c(CH[i]) + 2 * _se_r(GRID[i]) for i in (1, 2))
    assert full - _nparams(_model(use_con_loss=False)) == _chain() + con_fc
    assert full - _nparams(_model(use_dis_loss=False, use_con_loss=False)) == 2 * _chain() + con_fc
    # everything off: the backbone, the classifier and stage 5's two channel SEs remain
    bare = _model(use_region=False, use_fusion=False, use_dis_loss=False, use_con_loss=False)
    assert _nparams(bare) == _nparams(bare.backbone) + CH[3] * K + K + 2 * _se_c(CH[3])
    assert full - _nparams(bare) == region + 3 * _chain() + con_fc + \
        sum(2 * _se_c(CH[i]) for i in (1, 2))


def test_variants_map_to_one_ablation_each():
    flags = {"use_region", "use_fusion", "use_dis_loss", "use_con_loss"}
    variants = load_variants("lafe")
    assert variants["full"]["cfg"] == {}
    assert {k: set(v["cfg"]) for k, v in variants.items()} == {
        "full": set(), "no_region": {"use_region"}, "no_fusion": {"use_fusion"},
        "no_feature_losses": {"use_dis_loss", "use_con_loss"}, "no_con_loss": {"use_con_loss"}}
    assert all(v is False for spec in variants.values() for v in spec["cfg"].values())
    assert set().union(*(spec["cfg"] for spec in variants.values())) == flags


@pytest.mark.parametrize("name", list(load_variants("lafe")))
def test_variant_losses_and_every_parameter_trained(name):
    """Each variant's loss has exactly its parts; every built parameter gets a gradient."""
    cfg = load_variants("lafe")[name]["cfg"]
    model = _model(**cfg).train()
    x, y = _batch()
    out = model(x, y)
    total, parts = model.loss(out, y)
    want = {"ce"} | ({"dis"} if cfg.get("use_dis_loss", True) else set()) \
        | ({"con"} if cfg.get("use_con_loss", True) else set())
    assert set(parts) == want
    torch.testing.assert_close(total.detach(), sum(parts.values()))
    total.backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None]
    assert not dead, f"parameters with no path to the loss: {dead}"
    assert any(isinstance(m, RegionSE) for m in model.modules()) == cfg.get("use_region", True)
    model.eval()
    with torch.no_grad():
        assert set(model(x)) == {"logits"}


@pytest.mark.parametrize("cfg", [dict(final="sum"), dict(feed_backbone=True, use_fusion=False),
                                 dict(dis_pairs="all", region_gate="relu")])
def test_alternative_readings_train(cfg):
    model = _model(**cfg).train()
    x, y = _batch((0, 1, 0, 1) if cfg.get("dis_pairs") == "all" else (0, 0, 1, 1))
    loss, _ = model.loss(model(x, y), y)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    if cfg.get("feed_backbone"):
        assert len(model.attention) == 3  # stages 3-4 still act, through the backbone


# ----------------------------------------------------------------------------- input size
def test_other_input_size_is_an_error_naming_both():
    model = _model().eval()
    with pytest.raises(ValueError, match=r"built for 64x64 inputs.*8x8, 4x4, 2x2.*got a 96x96"):
        model(torch.randn(1, 3, 96, 96))
    loose = _model(use_region=False).eval()  # no position-sized layers: any size works
    with torch.no_grad():
        assert loose(torch.randn(1, 3, 96, 96))["logits"].shape == (1, K)


def test_bad_settings_list_choices():
    with pytest.raises(ValueError, match="final 'x'.*fused"):
        _model(final="x")
    with pytest.raises(ValueError, match="dis_pairs"):
        _model(dis_pairs="halves")
    with pytest.raises(ValueError, match="region_gate"):
        _model(region_gate="tanh")
