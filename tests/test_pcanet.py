"""pcanet (seed 002): co-attention, attention erase, centre loss, ablation switches, eval cost."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from fgvc.layers.coattention import co_attend, co_attention_weights, pair_weights
from fgvc.layers.erase import erase_mask
from fgvc.methods import create_method
from fgvc.methods.pcanet import CenterLoss, attention_map

# A hand-worked pair: c = 2 channels, l = 3 positions.
F1 = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 1.0]])
F2 = torch.tensor([[1.0, 1.0, 0.0], [2.0, 0.0, 1.0]])
# F1 F2^T = [[1, 4], [1, 1]]  ->  W = softmax_row(-.) = [[a, b], [1/2, 1/2]]
A = 1 / (1 + math.exp(-3))   # e^-1 / (e^-1 + e^-4)
B = 1 - A


def _pair(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    return torch.stack([first, second]).view(2, 2, 3, 1)  # halves layout, (B, c, h, w)


def _model(**cfg):
    torch.manual_seed(0)
    return create_method("pcanet", 3, backbone="resnet18", input_size=64, **cfg)


def _batch(n: int = 4):
    torch.manual_seed(1)
    return torch.randn(n, 3, 64, 64), torch.tensor([0, 1, 0, 1])[:n]


# ------------------------------------------------------------------------- co-attention
def test_weights_equal_hand_computation_and_are_row_stochastic():
    w = co_attention_weights(F1[None], F2[None])[0]
    assert torch.allclose(w, torch.tensor([[A, B], [0.5, 0.5]]), atol=1e-6)
    big = co_attention_weights(torch.rand(3, 16, 9), torch.rand(3, 16, 9))
    assert (big >= 0).all() and torch.allclose(big.sum(-1), torch.ones(3, 16))


def test_co_attended_features_equal_hand_computation():
    fw = co_attend(_pair(F1, F2)).view(2, 2, 3)
    # F_W1 = W F1', F_W2 = W F2' with the same W (eq. 2).
    assert torch.allclose(fw[0], torch.tensor([[A, B, 2 * A + B], [0.5, 0.5, 1.5]]), atol=1e-6)
    assert torch.allclose(fw[1], torch.tensor([[A + 2 * B, A, B], [1.5, 0.5, 0.5]]), atol=1e-6)
    res = co_attend(_pair(F1, F2), residual=True).view(2, 2, 3)
    assert torch.allclose(res, fw + torch.stack([F1, F2]))


def test_swapping_the_pair_uses_the_first_image_as_rows_as_eq2_states():
    # Swapped: W' = softmax_row(-(F2' F1'^T)) = [[1/2, 1/2], [b, a]] applied to both images.
    sw = co_attend(_pair(F2, F1)).view(2, 2, 3)
    assert torch.allclose(sw[0], torch.tensor([[1.5, 0.5, 0.5], [B + 2 * A, B, A]]), atol=1e-6)
    assert torch.allclose(sw[1], torch.tensor([[0.5, 0.5, 1.5], [B, A, 2 * B + A]]), atol=1e-6)
    # ... so the module is not swap-equivariant: F2's co-attended map depends on the order.
    fw = co_attend(_pair(F1, F2)).view(2, 2, 3)
    assert not torch.allclose(sw[0], fw[1])
    # Both images of a pair share one W (a batch of 2 pairs: rows 0/2 and 1/3 pair up).
    w = pair_weights(torch.rand(4, 5, 6))
    assert torch.equal(w[0], w[2]) and torch.equal(w[1], w[3]) and not torch.equal(w[0], w[1])


def test_unshared_weights_are_swap_equivariant():
    own = co_attend(_pair(F1, F2), shared=False).view(2, 2, 3)
    swapped = co_attend(_pair(F2, F1), shared=False).view(2, 2, 3)
    assert torch.allclose(own, swapped.flip(0))
    # image 2 uses its own W = softmax_row(-(F2' F1'^T)) = [[1/2, 1/2], [b, a]]
    assert torch.allclose(own[1], torch.tensor([[1.5, 0.5, 0.5], [B + 2 * A, B, A]]), atol=1e-6)


def test_odd_batch_is_refused_in_training_only():
    with pytest.raises(ValueError, match="pairs"):
        pair_weights(torch.rand(3, 4, 5))
    model, (x, y) = _model(), _batch()
    with pytest.raises(ValueError, match="pairs"):
        model.train()(x[:3])
    assert model.eval()(x[:3])["logits"].shape == (3, 3)


# ----------------------------------------------------------------------- attention erase
def test_attention_map_hand_computation():
    fmap = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]],       # GAP 0.25
                          [[0.5, 0.5], [0.5, 0.0]]]])     # GAP 0.375 -> selected
    assert torch.equal(attention_map(fmap), fmap[0, 1][None])
    assert torch.equal(attention_map(fmap, "max_over_channels"),
                       torch.tensor([[[1.0, 0.5], [0.5, 0.0]]]))


@pytest.mark.parametrize("cfg", [{}, {"use_ca": False}, {"ae_map": "max_over_channels"}])
def test_erased_image_is_zero_exactly_where_the_mask_says(cfg):
    model, (x, y) = _model(**cfg).train(), _batch()
    out = model(x, y)
    mask, erased = out["erase_mask"], out["erased"]
    assert mask.shape == (4, 1, 64, 64) and 0 < mask.mean() < 1
    assert torch.equal(erased, x * mask)
    assert (erased.masked_select(mask == 0) == 0).all()
    assert torch.equal(erased.masked_select(mask == 1), x.masked_select(mask == 1))
    # The mask comes from F_W (or F_O without CA) by the configured map, and the third
    # branch classifies the erased image.
    with torch.no_grad():
        fmap = model.backbone(x)
        maps = co_attend(fmap) if model.cfg.use_ca else fmap
        expect = erase_mask(attention_map(maps, model.cfg.ae_map), (64, 64), model.cfg.ae_theta)
        assert torch.equal(mask, expect)
        logits_ae = model.fc(model.backbone(erased).mean((2, 3)))
        assert torch.allclose(out["logits_ae"], logits_ae, atol=1e-5)
        if model.cfg.use_ca:
            assert torch.allclose(out["logits_ca"], model.fc(maps.mean((2, 3))), atol=1e-5)


# --------------------------------------------------------------------------- centre loss
def test_center_loss_value_gradient_and_decrease_towards_centres():
    cl = CenterLoss(3, 2, rate=0.5)
    cl.centers.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]]))
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [3.0, 3.0]], requires_grad=True)
    y = torch.tensor([0, 0, 1])
    loss = cl(x, y)
    assert torch.isclose(loss, torch.tensor(0.5 * (1 + 1 + 8) / 3))
    loss.backward()
    assert torch.allclose(x.grad, (x - cl.centers[y]).detach() / 3)
    assert not cl.centers.requires_grad and cl.centers.grad is None
    losses = [cl(x + t * (cl.centers[y] - x), y).item() for t in (0.0, 0.5, 0.9, 1.0)]
    assert losses[0] > losses[1] > losses[2] > losses[3] == 0


def test_center_update_follows_wen_et_al():
    cl = CenterLoss(3, 2, rate=0.5)
    cl.centers.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]]))
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [3.0, 3.0]])
    cl.update(x, torch.tensor([0, 0, 1]))
    # c_j -= alpha * sum_{y_i=j} (c_j - x_i) / (1 + n_j); class 2 has no sample
    expect = torch.tensor([[1 / 6, 1 / 6], [1.5, 1.5], [5.0, 5.0]])
    assert torch.allclose(cl.centers, expect)


def test_model_loss_is_eq6_and_centres_update_in_training_only():
    model, (x, y) = _model(center_weight=0.5), _batch()
    out = model.train()(x, y)
    c0 = model.center.centers.clone()
    total, parts = model.loss(out, y)
    assert set(parts) == {"ce", "ce_ca", "ce_ae", "center"}
    assert torch.isclose(total, parts["ce"] + parts["ce_ca"] + parts["ce_ae"] + 0.5 * parts["center"])
    feat = F.normalize(out["features"].detach(), dim=1)
    assert torch.isclose(parts["center"], 0.5 * (feat - c0[y]).pow(2).sum(1).mean())
    assert not torch.equal(model.center.centers, c0)
    # Same features again: the centres moved towards them, so the centre loss went down.
    _, parts2 = model.loss(out, y)
    assert parts2["center"] < parts["center"]
    c1 = model.center.centers.clone()
    model.eval().loss(out, y)
    assert torch.equal(model.center.centers, c1)


# ------------------------------------------------------------------------ ablation switches
@pytest.mark.parametrize("cfg, branches, parts", [
    ({}, {"logits_ca", "logits_ae"}, {"ce", "ce_ca", "ce_ae", "center"}),
    ({"use_ae": False, "use_center": False}, {"logits_ca"}, {"ce", "ce_ca"}),
    ({"use_ca": False, "use_center": False}, {"logits_ae"}, {"ce", "ce_ae"}),
    ({"use_ae": False}, {"logits_ca"}, {"ce", "ce_ca", "center"}),
    ({"use_ca": False}, {"logits_ae"}, {"ce", "ce_ae", "center"}),
])
def test_each_switch_removes_exactly_its_part(cfg, branches, parts):
    model, (x, y) = _model(**cfg).train(), _batch()
    calls = []
    model.backbone.register_forward_hook(lambda m, i, o: calls.append(i[0].shape))
    out = model(x, y)
    assert {k for k in out if k.startswith("logits_")} == branches
    assert len(calls) == (2 if "logits_ae" in branches else 1)
    total, got = model.loss(out, y)
    assert set(got) == parts
    assert (model.center is None) == ("center" not in parts)
    assert torch.isclose(total, sum(v * (model.cfg.center_weight if k == "center" else 1)
                                    for k, v in got.items()))


def test_invalid_settings_list_the_choices():
    with pytest.raises(ValueError, match="max_channel"):
        _model(ae_map="mean")
    with pytest.raises(ValueError, match="gap"):
        _model(pooling="avg")


# ------------------------------------------------------------------------- bap, backbones
def test_bap_pooling_and_other_backbone():
    model, (x, y) = _model(pooling="bap", num_attention=4).train(), _batch()
    out = model(x, y)
    assert out["features"].shape == (4, 4 * 512)
    assert torch.allclose(out["features"].norm(dim=1), torch.ones(4))
    total, parts = model.loss(out, y)
    total.backward()
    assert model.fc.weight.grad.abs().sum() > 0
    torch.manual_seed(0)
    eff = create_method("pcanet", 3, backbone="efficientnet_lite0", input_size=64).train()
    total, _ = eff.loss(eff(x, y), y)
    total.backward()
    assert eff.fc.in_features == 1280 and next(eff.backbone.parameters()).grad is not None


# ------------------------------------------------------------------------- inference cost
def _eval_flops(model, x) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.eval()(x)
    return counter.get_total_flops()


def test_eval_flops_equal_the_baseline():
    x = torch.randn(2, 3, 64, 64)
    torch.manual_seed(0)
    base = _eval_flops(create_method("baseline", 3, backbone="resnet18", input_size=64), x)
    assert _eval_flops(_model(), x) == base
    # BAP head: backbone + the (M x C) pooling product + a wider FC, nothing else.
    m, c, hw, k = 4, 512, 2 * 2, 3
    base_fc = 2 * 2 * c * k
    bap = _eval_flops(_model(pooling="bap", num_attention=m), x)
    assert bap == base - base_fc + 2 * 2 * m * c * hw + 2 * 2 * m * c * k


def test_training_batch_whose_pairs_differ_in_label_names_the_sampler():
    from fgvc.methods.pcanet import check_pairs

    check_pairs(torch.tensor([3, 1, 3, 1]))  # halves share labels: fine
    with pytest.raises(ValueError, match="PairedBatchSampler with mode='halves'"):
        check_pairs(torch.tensor([3, 1, 1, 3]))
    with pytest.raises(ValueError, match="share a label"):
        check_pairs(torch.tensor([3, 1, 3]))
    model = create_method("pcanet", 4, backbone="resnet18", input_size=64).train()
    with pytest.raises(ValueError, match="PairedBatchSampler"):
        model(torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 3]))
