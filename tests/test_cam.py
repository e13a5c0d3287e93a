"""Grad-CAM wrapper for every registered method, its target layer, coordinate mapping,
localization scores and what a map with no localisation scores (the reference row)."""
import io

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from fgvc.study.cam_scores import REFERENCE, box_fraction, box_to_input, crop_offset, disc_union_area, energy_in_box, pointing_chance, pointing_hit, road_scores, to_input_coords, uniform_reference

from fgvc.cam import LogitsOnly, cam_class, cam_layer, compute_cams
from fgvc.methods import create_method, list_methods

SIZE = 64


@pytest.mark.parametrize("method", list_methods())
def test_cam_of_every_method(method):
    torch.manual_seed(0)
    model = create_method(method, 3, backbone="resnet18", input_size=SIZE)
    x = torch.randn(3, 3, SIZE, SIZE)
    assert LogitsOnly(model).eval()(x).shape == (3, 3)
    res = compute_cams(model, x, "gradcam", batch_size=2)  # two chunks
    assert res.cams.shape == (3, SIZE, SIZE)
    assert res.cams.dtype == np.float32
    assert res.cams.min() >= 0.0 and res.cams.max() <= 1.0
    assert res.logits.shape == (3, 3) and len(res.preds) == 3
    assert res.targets == res.preds  # default: explain the predicted class
    assert res.map_size == (2, 2)    # default: the method's last-stage target, 2x2 at 64 px
    true = compute_cams(model, x, "eigencam", targets=[0, 1, 2])
    assert true.cams.shape == (3, SIZE, SIZE) and true.targets == [0, 1, 2]
    # at least 8x8: ResNet at 64 px -> layer2 (stage 1)
    fine = compute_cams(model, x, "gradcam", min_side=8)
    assert fine.map_size == (8, 8) and fine.layer == "backbone.stages.1"
    assert fine.cams.shape == (3, SIZE, SIZE) and fine.cams.max() <= 1.0
    assert not np.allclose(fine.cams, res.cams)
    assert all(p.grad is None for p in model.parameters()), "no gradients left behind"


@pytest.mark.parametrize("method", list_methods())
def test_cam_layer_is_8x8_on_lite0_at_128_and_resnet_at_small_inputs(method):
    """EfficientNet-Lite0 at 128 px: the last map is 4x4, stages[2] is 8x8 (ma_ea: the MA
    block after it). ResNet-18: layer2 at 64 px, layer3 at 128, layer4 once it is >= 8x8."""
    torch.manual_seed(0)
    lite = create_method(method, 3, backbone="efficientnet_lite0", input_size=128)
    layer = cam_layer(lite, 128)
    assert layer.stage == 2 and layer.map_size == (8, 8) and layer.map_label == "8x8"
    assert layer.name == ("ma.2" if method == "ma_ea" else "backbone.stages.2")
    assert cam_layer(lite, 128, min_side=None).map_size == (4, 4)  # the last stage
    res = compute_cams(lite, torch.randn(1, 3, 128, 128), layers=layer)
    assert res.map_size == (8, 8) and res.layer == layer.name and res.cams.shape == (1, 128, 128)
    for size, stage in ((32, 0), (64, 1), (128, 2), (256, 3)):
        net = create_method(method, 3, backbone="resnet18", input_size=size)
        layer = cam_layer(net, size)
        assert layer.stage == stage and layer.map_size == (8, 8), (size, layer)
        if stage == 3:  # the last stage: the method's own target
            assert layer.modules == list(net.cam_target_layers())


class TwoPasses(nn.Module):
    """A toy method that runs its first conv again on a half-size copy (as focus does on its
    regions, ma_ea with test_logits="mean" on the erased images) before its second conv."""

    def __init__(self, second: bool):
        super().__init__()
        self.conv, self.conv2 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.fc, self.fc2, self.second = nn.Linear(4, 2), nn.Linear(4, 2), second

    def forward(self, x):
        a = self.conv(x)
        side = self.fc2(self.conv(x[:, :, ::2, ::2]).mean((2, 3))) if self.second else 0
        return {"logits": self.fc(self.conv2(a).mean((2, 3))) + side}


def test_cam_records_the_first_pass_of_a_layer_called_twice():
    """Each target layer's first call is the one explained, and layers stay paired with
    their own maps (the library's list of calls would give conv2 the second conv call)."""
    torch.manual_seed(0)
    one, two = TwoPasses(False), TwoPasses(True)
    two.load_state_dict(one.state_dict())
    x = torch.randn(2, 3, 16, 16)
    for layers in (lambda m: [m.conv], lambda m: [m.conv, m.conv2]):
        a = compute_cams(one, x, "gradcam", targets=[0, 1], layers=layers(one))
        b = compute_cams(two, x, "gradcam", targets=[0, 1], layers=layers(two))
        assert b.map_size == (16, 16) and b.layer == a.layer
        np.testing.assert_allclose(a.cams, b.cams, atol=1e-5)  # the second pass adds a
        # term with its own activations: the first pass's gradient is unchanged


def test_cam_of_ma_ea_with_two_test_passes_at_its_attention_block():
    """test_logits="mean" erases at test time: the MA block returns (map, parts) on the
    first pass and runs again on the erased images; the CAM explains the first pass."""
    torch.manual_seed(0)
    model = create_method("ma_ea", 3, backbone="resnet18", input_size=128, test_logits="mean")
    layer = cam_layer(model, 128)
    assert layer.name == "ma.2" and layer.map_size == (8, 8)
    res = compute_cams(model, torch.randn(2, 3, 128, 128), layers=layer)
    assert res.map_size == (8, 8) and res.cams.shape == (2, 128, 128) and res.cams.max() > 0


def test_cam_variant_names():
    assert cam_class("GradCAMPlusPlus") is cam_class("gradcam++")
    with pytest.raises(ValueError, match="valid"):
        cam_class("nope")


def test_coordinates_follow_resize_and_centre_crop():
    # 200 x 100 image -> resize (80, 80) -> centre crop 64: offset 8, scale 0.4 (x), 0.8 (y)
    assert crop_offset(80, 64) == 8
    pts = to_input_coords([(0, 0), (100, 50), (200, 100)], (200, 100), 80, 64)
    np.testing.assert_allclose(pts, [(-8, -8), (32, 32), (72, 72)])
    # a box is clipped to the crop
    assert box_to_input((0, 0, 200, 100), (200, 100), 80, 64) == (0.0, 0.0, 64.0, 64.0)
    assert box_to_input((50, 25, 50, 25), (200, 100), 80, 64) == pytest.approx((12, 12, 20, 20))
    # the mapping agrees with the eval transform on a marked pixel
    from PIL import Image

    from fgvc.data import build_transforms, denormalize

    img = np.zeros((100, 200, 3), np.uint8)
    img[40:60, 90:110] = 255  # a white square around (100, 50)
    x = denormalize(build_transforms(80, 64, train=False)(Image.fromarray(img)))
    ys, xs = np.nonzero(x[0].numpy() > 0.5)
    centre = (xs.mean() + 0.5, ys.mean() + 0.5)
    np.testing.assert_allclose(centre, to_input_coords([(100, 50)], (200, 100), 80, 64)[0], atol=1)


def test_localization_scores_of_a_delta():
    part, box = np.array([[20.5, 30.5]]), (10.0, 20.0, 20.0, 20.0)
    on_part = np.zeros((SIZE, SIZE), np.float32)
    on_part[30, 20] = 1.0  # pixel centre (20.5, 30.5): on the part, inside the box
    assert pointing_hit(on_part, part, tolerance=1) == 1.0
    assert energy_in_box(on_part, box) == 1.0
    outside = np.zeros((SIZE, SIZE), np.float32)
    outside[60, 60] = 1.0
    assert pointing_hit(outside, part, tolerance=4) == 0.0
    assert energy_in_box(outside, box) == pytest.approx(0.0, abs=1e-6)
    # a uniform CAM puts the box's area share inside it
    assert energy_in_box(np.ones((SIZE, SIZE)), box) == pytest.approx(400 / SIZE**2)
    assert np.isnan(pointing_hit(on_part, np.zeros((0, 2))))


def test_uniform_reference_box_fraction_by_hand():
    # a 20 x 20 box in a 64 x 64 image: 400 / 4096, what a uniform map's energy-in-box is
    assert box_fraction((10.0, 20.0, 20.0, 20.0), (SIZE, SIZE)) == 400 / 4096
    # fractional edges count pixel centres, as energy_in_box does: x in [0.4, 2.6) holds the
    # centres 0.5, 1.5, 2.5 (3 of 4 columns), y in [0, 1) the centre 0.5 (1 of 2 rows)
    box = (0.4, 0.0, 2.2, 1.0)
    assert box_fraction(box, (2, 4)) == 3 / 8 == energy_in_box(np.ones((2, 4)), box)
    assert box_fraction((0.0, 0.0, 64.0, 64.0), (SIZE, SIZE)) == 1.0


def test_uniform_reference_disc_union_by_hand_and_by_pixel_count():
    r, d = 5.0, 6.0
    # two discs 6 px apart overlap in a lens of area 2 r^2 acos(d / 2r) - d/2 sqrt(4r^2 - d^2)
    lens = 2 * r * r * np.arccos(d / (2 * r)) - d / 2 * np.sqrt(4 * r * r - d * d)
    union = 2 * np.pi * r * r - lens
    assert lens == pytest.approx(22.37, abs=0.01)  # 50 acos(0.6) - 3 * 8 = 46.365 - 24
    assert disc_union_area([(20, 20), (26, 20)], r, 64, 64) == pytest.approx(union, rel=1e-9)
    # a tilted pair (distance 5) and the pixel count on a 1/16-px grid
    centres = np.array([(20.0, 20.0), (23.0, 24.0)])
    tilted_lens = 2 * r * r * np.arccos(5 / (2 * r)) - 2.5 * np.sqrt(4 * r * r - 25)
    tilted = 2 * np.pi * r * r - tilted_lens
    assert disc_union_area(centres, r, 64, 64) == pytest.approx(tilted, rel=1e-9)
    g = (np.arange(64 * 16) + 0.5) / 16
    X, Y = np.meshgrid(g, g)
    inside = np.zeros(X.shape, bool)
    for cx, cy in centres:
        inside |= (X - cx) ** 2 + (Y - cy) ** 2 <= r * r
    assert inside.sum() / 16**2 == pytest.approx(tilted, rel=2e-3)
    # the hit rate of a random point, and of a random pixel centre (the CAM's peak) on the
    # 64 x 64 grid, which differs by the discretisation only
    chance = pointing_chance(centres, (SIZE, SIZE), r)
    assert chance == pytest.approx(tilted / SIZE**2, rel=1e-9)
    px = (np.arange(SIZE) + 0.5)
    PX, PY = np.meshgrid(px, px)
    hit = np.zeros(PX.shape, bool)
    for cx, cy in centres:
        hit |= np.hypot(PX - cx, PY - cy) <= r
    assert hit.mean() == pytest.approx(chance, rel=0.05)
    # clipped to the image: a disc on an edge counts half, in a corner a quarter; the same
    # disc twice counts once; a disc outside the image nothing; no part: NaN
    assert disc_union_area([(0, 30)], r, 64, 64) == pytest.approx(np.pi * r * r / 2, rel=1e-9)
    assert disc_union_area([(64, 64)], r, 64, 64) == pytest.approx(np.pi * r * r / 4, rel=1e-9)
    assert disc_union_area([(30, 30), (30, 30)], r, 64, 64) == pytest.approx(np.pi * r * r)
    assert disc_union_area([(-10, 30)], r, 64, 64) == 0.0
    assert np.isnan(pointing_chance(np.zeros((0, 2)), (SIZE, SIZE), r))


def test_uniform_reference_averages_over_the_scored_images():
    boxes = [(0.0, 0.0, 32.0, 64.0), None, (0.0, 0.0, 16.0, 16.0)]
    parts = [np.array([[32.0, 32.0]]), np.zeros((0, 2)), np.array([[0.0, 0.0]])]
    ref = uniform_reference(boxes, parts, (SIZE, SIZE), 4.0)
    assert ref["energy_in_box"] == pytest.approx((0.5 + 1 / 16) / 2)  # the boxed images
    assert ref["pointing_game"] == pytest.approx((np.pi * 16 + np.pi * 4) / 2 / SIZE**2)


def test_road_faithfulness_runs():
    torch.manual_seed(0)
    model = create_method("baseline", 3, backbone="resnet18", input_size=32)
    x = torch.randn(2, 3, 32, 32)
    res = compute_cams(model, x)
    scores = road_scores(model, x, res.cams, res.targets, percentiles=(50,))
    assert scores.shape == (2,) and np.isfinite(scores).all()


def test_checkpoint_of_a_compiled_model_loads_for_grad_cam(isolated_results):
    """best.pt whose keys carry torch.compile's `_orig_mod.` prefix (written before saving
    stripped it) loads into the plain method (fgvc.engine.load_model_state). The same tiny
    run then goes through the notebook's CAM study: its table holds the reference row and
    says the layer and its map; the gallery labels its rows with them."""
    from tiny import TINY

    from fgvc.study.gallery import cam_gallery

    from fgvc.study.cam_scores import cam_study, load_run_cams, load_run_model, scores_markdown_table, summarize_scores
    from fgvc.study.run import run

    run(method="baseline", profile="scratch", overrides=TINY, run_id="cc", progress=False)
    path = isolated_results / "ckpt/cc/best.pt"
    ckpt = torch.load(path, weights_only=True)
    plain = ckpt["model"]
    torch.save({**ckpt, "model": {f"_orig_mod.{k}": v for k, v in plain.items()}}, path)
    run_dir = isolated_results / "results/runs/cc"
    _, model = load_run_model(run_dir)
    assert all(torch.equal(v, plain[k]) for k, v in model.state_dict().items())
    res = compute_cams(model, torch.randn(2, 3, 64, 64), "gradcam")
    assert res.cams.shape == (2, 64, 64)

    scores, gal, skipped = cam_study([run_dir], n_images=8, road_images=0, gallery_images=2)
    assert not skipped and list(scores["method"]) == ["baseline", REFERENCE]
    run_row, ref = scores.iloc[0], scores.iloc[1]
    assert run_row["layer"] == "backbone.stages.1"
    assert (run_row["map_h"], run_row["map_w"]) == (8, 8)
    rc = load_run_cams(run_dir, 8)  # the same images, boxes and counted parts
    assert ref["energy_in_box"] == pytest.approx(np.mean([box_fraction(b, (64, 64))
                                                          for b in rc.boxes if b is not None]))
    chance = [pointing_chance(p, (64, 64), 15 / 224 * 64) for p in rc.parts]
    assert ref["pointing_game"] == pytest.approx(np.nanmean(chance))
    assert 0 < ref["pointing_game"] < ref["energy_in_box"] < 1
    summary = summarize_scores(scores)
    assert list(summary["method"]) == ["baseline", REFERENCE]
    tidy = pd.read_csv(io.StringIO(summary.to_csv(index=False)))
    for c in ("energy_in_box_mean", "pointing_game_mean", "energy_in_box_std", "seeds",
              "map_h", "n_images", "tolerance_px"):
        assert pd.api.types.is_numeric_dtype(tidy[c]), c
    assert np.isnan(tidy["seeds"].iloc[1]) and np.isnan(tidy["energy_in_box_std"].iloc[1])
    table = scores_markdown_table(summary)
    assert table.iloc[0]["map"] == "8x8" and table.iloc[0]["layer"] == "backbone.stages.1"
    assert table.iloc[1]["method"] == REFERENCE and table.iloc[1]["accuracy"] == ""
    assert table.iloc[1]["energy_in_box"] == f"{ref['energy_in_box']:.3f}"
    col, = gal["columns"]
    assert (col["layer"], col["map"]) == ("backbone.stages.1", "8x8")
    fig = cam_gallery(gal, title="t")
    labels = [ax.get_ylabel() for ax in np.array(fig.axes).reshape(2, -1)[:, 0]]  # row labels
    assert labels[0] == "input\n64x64 px" and "backbone.stages.1\n8x8 map" in labels[1]
