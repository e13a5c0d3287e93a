"""Per-image predictions in the run records (fgvc.study.predictions), what they measure
(fgvc.study.noise: evaluation against training noise, paired bootstrap) and the seeds a
difference needs (fgvc.study.stats.mdd)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from fgvc import io
from fgvc.engine import evaluate
from fgvc.study import noise, predictions, stats
from fgvc.study.config import resolve
from fgvc.study.run import run
from fixtures import write_run_record

from tiny import TINY


# ----------------------------------------------------------------------------- the format
@pytest.mark.parametrize("k", [16, 200, 300])
def test_pack_round_trips_and_is_compact(k):
    rng = np.random.default_rng(0)
    values = rng.integers(0, k, 5794)
    packed = predictions.pack(values)
    assert packed["dtype"] == ("uint8" if k <= 256 else "uint16") and packed["n"] == 5794
    assert np.array_equal(predictions.unpack(packed), values)
    assert len(packed["data"]) < (8_500 if k <= 256 else 16_000)   # CUB's test split
    sorted_labels = predictions.pack(np.repeat(np.arange(200), 29))  # a split's labels
    assert len(sorted_labels["data"]) < 600


def test_pack_refuses_what_it_cannot_hold():
    with pytest.raises(ValueError):
        predictions.pack(np.array([-1, 2]))
    with pytest.raises(ValueError):
        predictions.pack(np.array([70_000]))


class Lookup(nn.Module):
    """Logits from a table: image i (a constant image of value i) predicts row i."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = table

    def forward(self, x):
        return {"logits": self.table[x[:, 0, 0, 0].long()]}


def test_evaluate_returns_each_images_top1_in_order():
    n, k = 10, 3
    table = torch.randn(n, k)
    target = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    images = torch.arange(n, dtype=torch.float)[:, None, None, None].expand(n, 3, 2, 2)
    loader = torch.utils.data.DataLoader(list(zip(images, target)), batch_size=4)
    out = evaluate(Lookup(table), loader, torch.device("cpu"), predictions=True)
    assert np.array_equal(out["pred"], table.argmax(1).numpy())
    assert np.array_equal(out["target"], target.numpy())
    assert out["top1"] == pytest.approx(100 * (out["pred"] == out["target"]).mean())
    assert "pred" not in evaluate(Lookup(table), loader, torch.device("cpu"))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pred")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FGVC_RESULTS", str(tmp / "results"))
        mp.setenv("FGVC_CHECKPOINTS", str(tmp / "ckpt"))
        cfg = resolve("baseline", profile="scratch", overrides={**TINY, "train.max_steps": 0,
                                                                 "train.epochs": 1})
        run(cfg, progress=False)
    return tmp / "results", tmp / "ckpt", cfg


def test_a_run_records_predictions_that_give_its_top1(tiny_run):
    root, _, cfg = tiny_run
    run_dir = root / "runs" / cfg["run_id"]
    metrics = io.read_json(run_dir / "metrics.json")
    got = predictions.read(run_dir)
    for split in ("test", "val"):
        pred, target = got[split]
        assert len(pred) == metrics[f"n_{split}"]
        assert 100 * (pred == target).mean() == pytest.approx(metrics[f"{split}_top1"])
    assert json.loads((run_dir / "predictions.json").read_text())["config_hash"] == cfg["config_hash"]
    # predictions of other settings than the record's config.json are not read
    data = io.read_json(run_dir / "predictions.json")
    io.write_json(run_dir / "predictions.json", {**data, "config_hash": "other"})
    try:
        assert predictions.read(run_dir) is None and predictions.correct(run_dir) is None
    finally:
        io.write_json(run_dir / "predictions.json", data)


def test_backfill_recomputes_what_the_run_recorded(tiny_run):
    root, ckpt, cfg = tiny_run
    path = root / "runs" / cfg["run_id"] / "predictions.json"
    written = path.read_text()
    path.unlink()
    assert noise.backfill(root, ckpt, log=lambda *_: None) == [cfg["run_id"]]
    assert json.loads(path.read_text()) == json.loads(written)
    assert noise.backfill(root, ckpt, log=lambda *_: None) == []       # nothing left to do


# ----------------------------------------------------------------------------- the noise
def test_bootstrap_variance_is_the_binomial_one_and_pairs_cancel():
    c = np.tile([1.0, 0.0], 200)                                   # p = 0.5, n = 400
    assert noise.bootstrap_var(c, draws=4000) == pytest.approx(1e4 * 0.25 / 400, rel=0.1)
    assert noise.bootstrap_var(np.stack([c, c], 1)) == 0.0
    flip = np.stack([c, 1 - c], 1)                                 # d = +-1 on every image
    assert noise.bootstrap_var(flip, draws=4000) == pytest.approx(1e4 * 1.0 / 400, rel=0.1)


def _write_run(root, run_id, method, seed, correct, crop=8):
    d = write_run_record(root, method, seed, run_id=run_id, crop=crop,
                         metrics={"test_top1": 100 * correct.mean(), "num_classes": 2})
    target = np.zeros(len(correct), dtype=int)
    predictions.write(d, run_id, {"test": {"pred": 1 - correct.astype(int), "target": target}})


def test_decompose_separates_seed_spread_from_image_noise(tmp_path):
    n = 400
    rng = np.random.default_rng(1)
    base = rng.random(n) < 0.7
    method = {}
    for s, shift in enumerate((0, 40, 80)):                        # +0, +10, +20 points
        b = base.copy()
        m = base.copy()
        m[np.flatnonzero(~base)[:shift]] = True
        _write_run(tmp_path, f"b{s}", "baseline", s, b.astype(float))
        _write_run(tmp_path, f"m{s}", "lafe", s, m.astype(float))
        method[s] = 100 * m.mean() - 100 * b.mean()
    df = noise.decompose([tmp_path], draws=500).set_index("kind")
    arm = df[df["method"] == "baseline"].loc["arm"]
    assert arm["sd_seeds"] == 0.0 and arm["sd_eval"] == pytest.approx(100 * math.sqrt(0.7 * 0.3 / n), rel=0.15)
    diff = df.loc["difference"]
    assert diff["mean"] == pytest.approx(10.0) and diff["sd_seeds"] == pytest.approx(10.0)
    # the differences sit on 0, 40, 80 images that only the method gets right: binomial-like
    sd_eval = math.sqrt(np.mean([1e4 * (k / n) * (1 - k / n) / n for k in (0, 40, 80)]))
    assert diff["sd_eval"] == pytest.approx(sd_eval, rel=0.15)
    assert diff["sd_train"] == pytest.approx(math.sqrt(100 - sd_eval ** 2), rel=0.01)
    assert diff["mdd"] == pytest.approx(stats.mdd(10.0, 3))
    assert diff["boot_lo"] >= 0.0 and diff["boot_hi"] <= 20.0 + 1e-9
    assert "| synthbirds | p | profile | lafe | full - baseline | 3 | 400 | +10.0 | 10.00 |" in \
        noise.markdown(df.reset_index(), "cmd", "test")


def test_a_difference_pairs_the_baseline_trained_on_the_same_data(tmp_path):
    """Two baseline arms (another data setting each): the method's difference is taken against
    the one whose data and length are the method's, not the one with more seeds."""
    n = 200
    good = np.ones(n)
    for s in range(3):
        _write_run(tmp_path, f"b{s}", "baseline", s, np.r_[np.ones(100), np.zeros(100)])
        _write_run(tmp_path, f"other{s}", "baseline", s, good, crop=16)
    for s in range(2):
        _write_run(tmp_path, f"m{s}", "lafe", s, np.r_[np.ones(150), np.zeros(50)])
    df = noise.decompose([tmp_path], draws=200)
    diff = df[df["kind"] == "difference"].iloc[0]
    assert diff["mean"] == pytest.approx(25.0) and diff["seeds"] == 2     # 75 - 50, not 75 - 100
    assert len(df[df["kind"] == "arm"]) == 3


def test_mdd_by_hand_and_the_seeds_it_takes():
    # n = 3: t(0.975, 2) = 4.3027, t(0.8, 2) = 1.0607 -> 5.3634 / sqrt(3) = 3.0966 per unit sd
    assert stats.mdd(1.0, 3) == pytest.approx(3.0966, abs=1e-3)
    assert math.isnan(stats.mdd(1.0, 1))
    # sd 3 points: n = 8 gives (2.365 + 0.896) * 3 / sqrt 8 = 3.46 > 3; n = 10 gives 2.97
    assert stats.seeds_to_detect(3.0, 3.0) == 10
    assert stats.seeds_to_detect(50.0, 0.1) is None

