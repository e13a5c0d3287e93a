"""Grad-CAM wrapper for every registered method, coordinate mapping, localization scores."""
import numpy as np
import pytest
import torch

from fgvc.cam import (LogitsOnly, box_to_input, cam_class, compute_cams, crop_offset,
                      energy_in_box, pointing_hit, road_scores, to_input_coords)
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
    true = compute_cams(model, x, "eigencam", targets=[0, 1, 2])
    assert true.cams.shape == (3, SIZE, SIZE) and true.targets == [0, 1, 2]
    assert all(p.grad is None for p in model.parameters()), "no gradients left behind"


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


def test_road_faithfulness_runs():
    torch.manual_seed(0)
    model = create_method("baseline", 3, backbone="resnet18", input_size=32)
    x = torch.randn(2, 3, 32, 32)
    res = compute_cams(model, x)
    scores = road_scores(model, x, res.cams, res.targets, percentiles=(50,))
    assert scores.shape == (2,) and np.isfinite(scores).all()


def test_checkpoint_of_a_compiled_model_loads_for_grad_cam(isolated_results):
    """best.pt whose keys carry torch.compile's `_orig_mod.` prefix (written before saving
    stripped it) loads into the plain method (fgvc.engine.load_model_state)."""
    from tiny import TINY

    from fgvc.cam import load_run_model
    from fgvc.run import run

    run(method="baseline", profile="scratch", overrides=TINY, run_id="cc", progress=False)
    path = isolated_results / "ckpt/cc/best.pt"
    ckpt = torch.load(path, weights_only=True)
    plain = ckpt["model"]
    torch.save({**ckpt, "model": {f"_orig_mod.{k}": v for k, v in plain.items()}}, path)
    _, model = load_run_model(isolated_results / "results/runs/cc")
    assert all(torch.equal(v, plain[k]) for k, v in model.state_dict().items())
    res = compute_cams(model, torch.randn(2, 3, 64, 64), "gradcam")
    assert res.cams.shape == (2, 64, 64)
