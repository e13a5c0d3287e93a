"""Every registered method honours the contract the engine, the grid and Grad-CAM rely on."""
import pytest
import torch

from fgvc.study.config import list_variants, load_variants
from fgvc.methods import create_method, list_methods, method_class


def _batch(method: str, n: int = 4, size: int = 64):
    mode = method_class(method).pair_mode
    y = torch.tensor([0, 0, 1, 1] if mode == "adjacent" else [0, 1, 0, 1])[:n]
    return torch.randn(n, 3, size, size), y


@pytest.mark.parametrize("method", list_methods())
def test_forward_loss_backward(method):
    torch.manual_seed(0)
    model = create_method(method, 3, backbone="resnet18", input_size=64)
    x, y = _batch(method)
    model.train()
    out = model(x, y)
    assert out["logits"].shape == (4, 3)
    loss, parts = model.loss(out, y)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert all(torch.isfinite(torch.as_tensor(v)) for v in parts.values())
    loss.backward()
    first_conv = next(model.backbone.parameters())
    assert first_conv.grad is not None and first_conv.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        assert model(x)["logits"].shape == (4, 3)
    assert model.cam_target_layers(), "a method names its Grad-CAM target layer(s)"


@pytest.mark.parametrize("method", list_methods())
def test_every_variant_builds(method):
    for variant, spec in load_variants(method).items():
        model = create_method(method, 3, backbone="resnet18", input_size=64, **spec.get("cfg", {}))
        x, y = _batch(method)
        model.train()
        loss, _ = model.loss(model(x, y), y)
        assert torch.isfinite(loss), variant
    assert "full" in list_variants(method)


@pytest.mark.parametrize("method", list_methods())
def test_records_its_number_of_classes(method):
    assert create_method(method, 3, backbone="resnet18", input_size=64).num_classes == 3


def test_base_loss_is_the_cross_entropy_and_logs_it_as_ce():
    model = create_method("baseline", 3, backbone="resnet18", input_size=64)
    logits, y = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), torch.tensor([0, 2])
    loss, parts = model.loss({"logits": logits}, y)
    by_hand = -(torch.log_softmax(logits, 1)[[0, 1], [0, 2]]).mean()
    torch.testing.assert_close(loss, by_hand)
    torch.testing.assert_close(parts["ce"], by_hand)


def test_baseline_features_are_what_its_classifier_reads():
    torch.manual_seed(0)
    model = create_method("baseline", 3, backbone="resnet18", input_size=64).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64))
    assert out["features"].shape == (2, model.fc.in_features)
    torch.testing.assert_close(model.fc(out["features"]), out["logits"])


def test_backbone_weights_from_a_file_reach_the_method(tmp_path):
    """`weights` = a state_dict file: the method's backbone starts from it and counts as
    pretrained (its parameters form the pretrained group, trained at their own lr)."""
    import torchvision

    torch.manual_seed(5)
    state = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(state, tmp_path / "resnet18.pt")
    model = create_method("baseline", 3, backbone="resnet18", input_size=64,
                          weights=str(tmp_path / "resnet18.pt"))
    assert model.backbone.pretrained and model.pretrained_parameters()
    torch.testing.assert_close(model.backbone.stem[0].weight, state["conv1.weight"])
    torch.testing.assert_close(model.backbone.stages[3][1].conv2.weight, state["layer4.1.conv2.weight"])


# Method.features: what enters the classifier (fgvc.study.no_harm probes it)
CELLS = [(m, v) for m in list_methods() for v in load_variants(m)]


@pytest.mark.parametrize("method,variant", CELLS)
def test_classifier_of_features_is_the_logits(method, variant):
    """In eval mode classifier()(features(x)) == forward(x)["logits"], every method and variant."""
    torch.manual_seed(0)
    cfg = load_variants(method)[variant].get("cfg", {})
    model = create_method(method, 5, backbone="resnet18", weights="none", input_size=64,
                          **cfg).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats, logits = model.features(x), model(x)["logits"]
        assert feats.shape[0] == 2 and feats.dim() == 2
        torch.testing.assert_close(model.classifier()(feats), logits)
