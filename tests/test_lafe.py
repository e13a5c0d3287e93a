"""lafe (seed 001): region SE, eqs. 1-4 and 8-10 by value, the two feature losses, the
readings (default vs `separate_heads`, incl. the collapse of the latter), ablations, inputs."""
import math

import pytest
import torch
from torch import nn

import fgvc.methods.base as method_base
from fgvc.study.config import load_variants
from fgvc.layers.se import ChannelSE, RegionSE
from fgvc.methods import create_method
from fgvc.methods.lafe import (DisConAttention, StageFusion, confusable_loss,
                               discriminative_loss, stage_grid)
from fgvc.models import build_backbone
from fgvc.models.backbones import Backbone

SIZE, K = 64, 3
CH = [64, 128, 256, 512]                               # resnet18 stage channels
GRID = [SIZE // 4, SIZE // 8, SIZE // 16, SIZE // 32]  # 16, 8, 4, 2


OLD = load_variants("lafe")["separate_heads"]["cfg"]  # the earlier reading


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


# ----------------------------------------------------------------------------- eq. 4
def _set_fusion(fu: StageFusion, w2, b2, w1, mean, var, gamma, beta):
    with torch.no_grad():
        fu.w2.weight.copy_(torch.tensor(w2, dtype=torch.float)[:, :, None, None])
        fu.w2.bias.copy_(torch.tensor(b2, dtype=torch.float))
        fu.w1.weight.copy_(torch.tensor(w1, dtype=torch.float)[:, :, None, None])
        fu.bn.running_mean.copy_(torch.tensor(mean, dtype=torch.float))
        fu.bn.running_var.copy_(torch.tensor(var, dtype=torch.float))
        fu.bn.weight.copy_(torch.tensor(gamma, dtype=torch.float))
        fu.bn.bias.copy_(torch.tensor(beta, dtype=torch.float))
    fu.bn.eps = 0.0  # exact arithmetic below


def test_fusion_eq4_hand_computed():
    """U = ReLU(BN(W1(u + maxpool(ReLU(W2 u_prev))))), 1 -> 2 channels, 2x2 -> 1x1 grid."""
    fu = StageFusion(1, 2)
    _set_fusion(fu, w2=[[1.0], [-1.0]], b2=[0.0, 0.5], w1=[[1.0, 2.0], [0.0, -1.0]],
                mean=[1.0, 0.5], var=[4.0, 1.0], gamma=[0.5, 2.0], beta=[0.0, 1.0])
    u_prev = torch.tensor([[[[1.0, -2.0], [3.0, 0.5]]]])       # (1, 1, 2, 2)
    u = torch.tensor([[[[1.0]], [[-1.0]]]])                     # (1, 2, 1, 1)
    # W2 u_prev + b: ch0 [1, -2, 3, .5], ch1 [-.5, 2.5, -2.5, 0]; ReLU, max -> (3, 2.5)
    # u + p = (4, 1.5); W1 -> (4 + 3, -1.5) = (7, -1.5)
    # BN (eval): ((7 - 1) / 2 * .5 + 0, (-1.5 - .5) / 1 * 2 + 1) = (1.5, -3); ReLU -> (1.5, 0)
    torch.testing.assert_close(fu.eval()(u, u_prev), torch.tensor([[[[1.5]], [[0.0]]]]))
    # train mode: BN with the batch's statistics. A second image u = (-3, .5): u + p = (0, 3),
    # W1 -> (6, -3). ch0 (7, 6): mean 6.5, var .25 -> (+1, -1) * .5 -> (.5, -.5);
    # ch1 (-1.5, -3): mean -2.25, var .5625 -> (+1, -1) * 2 + 1 -> (3, -1); ReLU
    # (torch needs eps > 0 in training: 1e-5 moves these values by under 1e-4)
    fu.bn.eps = 1e-5
    u2 = torch.cat([u, torch.tensor([[[[-3.0]], [[0.5]]]])])
    out = fu.train()(u2, u_prev.expand(2, -1, -1, -1))
    torch.testing.assert_close(out, torch.tensor([[[[0.5]], [[3.0]]], [[[0.0]], [[0.0]]]]),
                               rtol=0, atol=1e-4)


def test_fusion_eq4_maxpool_maps_previous_grid_onto_current():
    """1 channel, W2 = W1 = 1, BN the identity: ReLU(u + maxpool_2x2(ReLU(u_prev)))."""
    fu = StageFusion(1, 1)
    _set_fusion(fu, w2=[[1.0]], b2=[0.0], w1=[[1.0]], mean=[0.0], var=[1.0], gamma=[1.0],
                beta=[0.0])
    u_prev = (torch.arange(16.0) - 8).view(1, 1, 4, 4)  # ReLU keeps rows 2-3: 0..3, 4..7
    u = torch.tensor([[[[1.0, -1.0], [-10.0, 0.0]]]])
    # windows: top 0, 0; bottom max(0, 1, 4, 5) = 5, max(2, 3, 6, 7) = 7
    want = torch.tensor([[[[1.0, 0.0], [0.0, 7.0]]]])
    torch.testing.assert_close(fu.eval()(u, u_prev), want)


def _reference(model, x):
    """The default reading written out from the model's modules: eqs. 1-3 per stage, eq. 4
    cascaded 3 -> 4 -> 5 on dis and con, eq. 10 on f_5 + U^dis_5 - U^con_5, eq. 9's head."""
    h = model.backbone.stem(x)
    fs = []
    for stage in model.backbone.stages:
        h = stage(h)
        fs.append(h)
    dis, con = [], []
    for att, f in zip(model.attention, fs[1:]):
        d = att.dis_channel(f) + att.dis_region(f)                  # eq. 1
        c = att.con_channel(f) + att.con_region(f)                  # eq. 2
        dis.append(d)
        con.append(c)
    fd, fc = model.fusion["dis"], model.fusion["con"]
    ud = fd[1](dis[2], fd[0](dis[1], dis[0]))                      # eq. 4, 3 -> 4 -> 5
    uc = fc[1](con[2], fc[0](con[1], con[0]))
    feat = fs[3] + ud - uc                                          # the final combination
    logits = feat.mean((2, 3)) @ model.fc.weight.T + model.fc.bias  # eq. 10
    con_out = uc.mean((2, 3)) @ model.fc.weight.T                   # eq. 9: C's weight only
    return logits, ud.mean((2, 3)), con_out, fs[3]


def test_default_forward_matches_the_equations_written_out():
    model = _model().train()
    with torch.no_grad():  # break the twin start so that dis and con differ
        for p in model.fusion["con"].parameters():
            p.add_(0.05 * torch.randn_like(p))
        for p in model.attention.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x, y = _batch()
    with torch.no_grad():
        torch.manual_seed(0)
        out = model(x, y)
        logits, dis_embed, con_out, _ = _reference(model, x)
    torch.testing.assert_close(out["logits"], logits)
    torch.testing.assert_close(out["dis_embed"], dis_embed)
    torch.testing.assert_close(out["con_out"], con_out)
    assert (out["logits"] - model.fc(model.backbone(x).mean((2, 3)))).abs().max() > 1e-3


@pytest.mark.parametrize("train", [True, False])
def test_twin_start_classifier_sees_the_backbone_feature(train):
    """At step 0 (twin_init) dis_i = con_i and U^dis_5 = U^con_5 (bit for bit), so C reads
    GAP(f_5) (up to the rounding of f_5 + U - U), as a plain network would."""
    model = _model().train(train)
    x, y = _batch()
    with torch.no_grad():
        out = model(x, y)
        plain = model.fc(model.backbone(x).mean((2, 3)))
        big_f, dis, con = model.attention[0](torch.randn(2, CH[1], GRID[1], GRID[1]))
        u = torch.randn(2, CH[2], GRID[2], GRID[2]), torch.randn(2, CH[1], GRID[1], GRID[1])
        assert torch.equal(model.fusion["dis"][0](*u), model.fusion["con"][0](*u))
    torch.testing.assert_close(out["logits"], plain)
    assert torch.equal(dis, con)
    untwinned = _model(twin_init=False).train(train)
    with torch.no_grad():
        assert (untwinned(x, y)["logits"]
                - untwinned.fc(untwinned.backbone(x).mean((2, 3)))).abs().max() > 1e-2


def test_twin_init_leaves_the_random_draws_alone():
    """separate_heads is the earlier reading to the bit: the same parameters for a seed."""
    a, b = _model(**OLD), _model(**{**OLD, "twin_init": True})
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    differ = {k for k in sa if not torch.equal(sa[k], sb[k])}
    assert differ and all(".con_" in k or k.startswith("fusion.con.") for k in differ)


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


def test_confusable_head_is_the_classifier_without_bias():
    """Eq. 9 by value with con_head "classifier": FC = C's weight, C's bias left out."""
    model = _model()
    emb = torch.zeros(1, CH[3])
    emb[0, 0], emb[0, 1] = 0.5, 2.0
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.weight[0, 0], model.fc.weight[1, 1] = 2.0, 0.5
        model.fc.weight[2, :2] = 1.0
        model.fc.bias.fill_(7.0)                                   # must not count
        out = model.con_logits(emb)
    torch.testing.assert_close(out, torch.tensor([[1.0, 1.0, 2.5]]))
    torch.testing.assert_close(confusable_loss(out), torch.tensor(0.5))  # (0 + 0 + 1.5) / 3
    assert model.con_fc is None
    # no bias can zero L_con: a vanished confusable feature costs 1 whatever C's bias is
    with torch.no_grad():
        model.fc.bias.fill_(1.0)
        assert confusable_loss(model.con_logits(torch.zeros(2, CH[3]))) == 1
    # the earlier head has that trivial minimiser: weight 0, bias 1 -> L_con = 0 for anything
    old = _model(**OLD)
    with torch.no_grad():
        old.con_fc.weight.zero_()
        old.con_fc.bias.fill_(1.0)
        assert confusable_loss(old.con_logits(torch.randn(2, CH[3]))) == 0


def test_model_feature_losses():
    """Through the model: identical pair images -> L_dis = 0, different -> > 0;
    a confusable head that outputs all ones -> L_con = 0, anything else -> > 0."""
    model = _model(con_head="fc").train()
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
    assert full - _nparams(_model(use_region=False)) == region
    # without fusion, stages 3-4 no longer reach the output: their four modules go too
    assert full - _nparams(_model(use_fusion=False)) == \
        2 * _chain() + sum(2 * _se_c(CH[i]) + 2 * _se_r(GRID[i]) for i in (1, 2))
    # the dis / con chains feed the classifier, and eq. 9's FC is C's weight: the loss
    # ablations remove no layer
    assert _nparams(_model(use_con_loss=False)) == full
    assert _nparams(_model(use_dis_loss=False, use_con_loss=False)) == full
    # everything off: the backbone, the classifier and stage 5's two channel SEs remain
    bare = _model(use_region=False, use_fusion=False, use_dis_loss=False, use_con_loss=False)
    assert _nparams(bare) == _nparams(bare.backbone) + CH[3] * K + K + 2 * _se_c(CH[3])
    assert full - _nparams(bare) == region + 2 * _chain() + \
        sum(2 * _se_c(CH[i]) for i in (1, 2))


def test_separate_heads_parts():
    """The earlier reading: an F chain besides dis / con, a confusable FC with a bias; its
    loss ablations drop the chains and the FC that then feed nothing."""
    full, old = _nparams(_model()), _nparams(_model(**OLD))
    con_fc = CH[3] * K + K
    assert old - full == _chain() + con_fc
    assert old - _nparams(_model(**OLD, use_con_loss=False)) == _chain() + con_fc
    assert old - _nparams(_model(**OLD, use_dis_loss=False, use_con_loss=False)) == \
        2 * _chain() + con_fc


def test_variants_map_to_one_ablation_each():
    flags = {"use_region", "use_fusion", "use_dis_loss", "use_con_loss"}
    variants = load_variants("lafe")
    old = variants.pop("separate_heads")  # the diagnostic row: the earlier reading
    assert old["cfg"] == {"final": "fused", "con_head": "fc", "twin_init": False}
    assert old["paper"] == {}
    assert variants["full"]["cfg"] == {}
    assert {k: set(v["cfg"]) for k, v in variants.items()} == {
        "full": set(), "no_region": {"use_region"}, "no_fusion": {"use_fusion"},
        "no_feature_losses": {"use_dis_loss", "use_con_loss"}, "no_con_loss": {"use_con_loss"}}
    assert all(v is False for spec in variants.values() for v in spec["cfg"].values())
    assert set().union(*(spec["cfg"] for spec in variants.values())) == flags
    assert all(spec["paper"] for spec in variants.values())  # Table 4 rows


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


@pytest.mark.parametrize("cfg", [dict(final="fused"), dict(con_head="fc"), dict(twin_init=False),
                                 dict(feed_backbone=True, use_fusion=False),
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
    with pytest.raises(ValueError, match="final 'x'.*sum.*fused"):
        _model(final="x")
    with pytest.raises(ValueError, match="con_head 'x'.*classifier.*fc"):
        _model(con_head="x")
    with pytest.raises(ValueError, match="dis_pairs"):
        _model(dis_pairs="halves")
    with pytest.raises(ValueError, match="region_gate"):
        _model(region_gate="tanh")


# ----------------------------------------------------------------------------- collapse
def _tiny_backbone(name: str, weights: str = "none") -> Backbone:
    """4 conv-BN-ReLU stages at strides 4, 8, 16, 32 (8, 16, 32, 64 channels)."""
    def cbr(i, o, s):
        return nn.Sequential(nn.Conv2d(i, o, 3, s, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU())
    stem = nn.Sequential(cbr(3, 8, 2), nn.MaxPool2d(3, 2, 1))
    ch = [8, 16, 32, 64]
    stages = [cbr(8, ch[0], 1), cbr(ch[0], ch[1], 2), cbr(ch[1], ch[2], 2), cbr(ch[2], ch[3], 2)]
    return Backbone("tiny", stem, stages, ch, pretrained=False)


@pytest.mark.parametrize("reading", ["default", "separate_heads"])
def test_feature_losses_keep_shaping_the_attention(reading, monkeypatch):
    """200 SGD steps (lr 0.1, momentum 0.9, wd 5e-4) on 64 fixed images (4 classes, a class
    template + noise, 32 px), a frozen tiny backbone standing in for pretrained features.
    Each step draws 4 same-label pairs from them (one fixed batch is not enough: the pairs
    are then memorised and neither reading collapses). The default keeps a spread of the
    dis embedding GAP(U^dis_5) across the probe batch and L_dis still reaches the attention;
    the earlier reading (dis chain feeding only L_dis) dies: spread 0, no gradient."""
    monkeypatch.setattr(method_base, "build_backbone", _tiny_backbone)
    cfg = {} if reading == "default" else load_variants("lafe")[reading]["cfg"]
    k, per, size = 4, 16, 32
    torch.manual_seed(0)
    model = create_method("lafe", k, input_size=size, channel_reduction=4, **cfg).train()
    model.backbone.requires_grad_(False)
    gen = torch.Generator().manual_seed(1)
    images = (torch.randn(k, 3, size, size, generator=gen).repeat_interleave(per, 0)
              + 2 * torch.randn(k * per, 3, size, size, generator=gen))
    labels = torch.arange(k).repeat_interleave(per)

    def batch():
        idx = torch.stack([torch.randperm(per, generator=gen)[:2] + c * per
                           for c in torch.randperm(k, generator=gen)]).flatten()
        return images[idx], labels[idx]

    probe_x, probe_y = batch()
    attention = list(model.attention.parameters())

    def measure():
        out = model(probe_x, probe_y)
        grads = []
        for loss in (discriminative_loss(out["dis_embed"], probe_y),
                     confusable_loss(out["con_out"])):
            g = torch.autograd.grad(loss, attention, retain_graph=True, allow_unused=True)
            grads.append(sum(float(t.norm() ** 2) for t in g if t is not None) ** 0.5)
        return float(out["dis_embed"].detach().std(0).mean()), grads

    spread0, _ = measure()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4)
    for _ in range(200):
        x, y = batch()
        loss, _ = model.loss(model(x, y), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    spread, (g_dis, g_con) = measure()
    if reading == "default":
        assert spread > 0.1 * spread0, (spread, spread0)
        assert g_dis > 1e-3 and g_con > 1e-4, (g_dis, g_con)
    else:  # the collapse this reading is kept to show
        assert spread < 0.01 * spread0, (spread, spread0)
        assert g_dis < 1e-3, g_dis


# ----------------------------------------------------------------------------- survivors
def test_discriminative_loss_leaves_an_odd_batchs_last_image_out():
    """Adjacent pairs are (2k, 2k+1): in a batch of 5 the fifth image has no partner.
    Pairs (0, 1): (2 + 4) / 2 = 3, (2, 3): (0 + 2) / 2 = 1 -> 2; image 4 counts nowhere."""
    emb = torch.tensor([[0., 0.], [2., 4.], [1., 1.], [1., 3.], [9., 9.]])
    torch.testing.assert_close(discriminative_loss(emb, torch.tensor([0, 0, 1, 1, 2])),
                               torch.tensor(2.0))
    # a batch of 3: only (0, 1) is a pair; image 2 sharing image 1's label makes no pair
    three = torch.tensor([[0., 0.], [2., 2.], [5., 5.]])
    torch.testing.assert_close(discriminative_loss(three, torch.tensor([0, 0, 0])),
                               torch.tensor(2.0))
    with pytest.raises(ValueError, match="no adjacent pair"):
        discriminative_loss(three, torch.tensor([0, 1, 1]))


def test_all_pairs_mask_is_built_on_the_labels_device():
    """"all" pairs: the diagonal mask goes to the labels' device, not the default device (here
    meta, as in a meta-device build; on a GPU run, CPU vs CUDA). Pairs (0, 2) and (2, 0):
    (2 + 2) / 2 = 2 each."""
    emb, y = torch.tensor([[0., 0.], [1., 3.], [2., 2.]]), torch.tensor([0, 1, 0])
    with torch.device("meta"):
        loss = discriminative_loss(emb, y, "all")
    assert loss.device.type == "cpu"
    torch.testing.assert_close(loss, torch.tensor(2.0))


def test_region_gate_relu_reaches_both_region_heads():
    """The literal eq. 6 (`region_gate` "relu") on both region SEs: channel gates sigmoid(0) =
    1/2, region gates relu(3) = 3 (dis) and relu(2) = 2 (con), so dis = 3.5 f, con = 2.5 f and
    F = f + dis - con = 2 f (sigmoid gates would give 0.95 and 0.88)."""
    att = DisConAttention(2, 2, True, channel_reduction=1, region_reduction=1, region_gate="relu")
    with torch.no_grad():
        for p in att.parameters():
            p.zero_()
        att.dis_region.fc2.bias.fill_(3.0)
        att.con_region.fc2.bias.fill_(2.0)
    f = torch.randn(1, 2, 2, 2)
    big_f, dis, con = att(f)
    torch.testing.assert_close(dis, 3.5 * f)
    torch.testing.assert_close(con, 2.5 * f)
    torch.testing.assert_close(big_f, 2 * f)


def test_bad_settings_name_the_config_field():
    """The message starts with the LafeConfig field to fix, as spelt in a config file."""
    with pytest.raises(ValueError, match=r"^region_gate 'tanh'; valid: \['sigmoid', 'relu'\]"):
        _model(region_gate="tanh")
    with pytest.raises(ValueError, match=r"^dis_pairs 'halves'; valid: \['adjacent', 'all'\]"):
        _model(dis_pairs="halves")


def test_fused_eval_computes_the_F_stream_alone():
    """Under `final` "fused" the dis / con streams feed only the losses: eval builds neither
    (each stage's attention returns F alone, the dis / con fusion chains do not run), training
    runs both."""
    model = _model(**OLD)
    att_out, chain_calls = [], []
    for att in model.attention:
        att.register_forward_hook(lambda m, a, o: att_out.append(o))
    for s in ("dis", "con"):
        for fu in model.fusion[s]:
            fu.register_forward_hook(lambda m, a, o, s=s: chain_calls.append(s))
    x, y = _batch()
    with torch.no_grad():
        model.eval()(x)
    assert len(att_out) == 3 and all(o[1] is None and o[2] is None for o in att_out)
    assert chain_calls == []
    model.train()(x, y)
    assert sorted(chain_calls) == ["con", "con", "dis", "dis"]


@pytest.mark.parametrize("off", ["use_dis_loss", "use_con_loss"])
def test_fused_reading_trains_with_one_feature_loss(off):
    """`final` "fused" with one feature loss: training builds that loss's stream alone."""
    model = _model(final="fused", **{off: False}).train()
    x, y = _batch()
    out = model(x, y)
    kept = "con_out" if off == "use_dis_loss" else "dis_embed"
    assert set(out) == {"logits", kept}
    _, parts = model.loss(out, y)
    assert set(parts) == {"ce", "con" if off == "use_dis_loss" else "dis"}


def test_loss_on_eval_outputs_names_what_is_missing():
    """Eval skips the feature losses' outputs; the loss says which and why, not a KeyError."""
    model = _model().eval()
    x, y = _batch()
    with torch.no_grad():
        out = model(x)
    with pytest.raises(ValueError, match=r"outputs \['dis_embed', 'con_out'\].*model\.train\(\)"):
        model.loss(out, y)
