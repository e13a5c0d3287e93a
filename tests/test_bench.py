"""The benchmark's measurement functions at tiny sizes (no timing assertions: the machine is shared)."""
from __future__ import annotations

import pytest
import torch

from fgvc import bench


def test_gemm_peak_is_positive():
    assert bench.gemm_peak(64, reps=1) > 0


def test_flop_counts_scale_with_batch_and_match_macs():
    model = bench.build_model("baseline", "quick", 4, input_size=32)
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])
    f2 = bench.count_train_flops(model, x, y)
    f4 = bench.count_train_flops(model, torch.cat([x, x]), torch.cat([y, y]))
    assert f4 == pytest.approx(2 * f2, rel=0.01)
    macs = bench.count_inference_macs(model, x[:1])
    # forward FLOPs = 2 x MACs; backward about twice the forward: a step is ~3x the forward
    assert 2.5 * 2 * macs * 2 < f2 < 3.5 * 2 * macs * 2


@pytest.mark.parametrize("mode", [None, "adjacent", "halves"])
def test_labels_follow_pair_mode(mode):
    y = bench._labels(8, 10, mode)
    if mode == "adjacent":
        assert torch.equal(y[0::2], y[1::2])
    elif mode == "halves":
        assert torch.equal(y[:4], y[4:])
    assert y.shape == (8,)


def test_measure_methods_and_latency_tiny():
    rows = bench.measure_methods(["baseline", "no_such_method"], "quick", 2, 32, steps=1,
                                 num_classes=4)
    base, bad = rows
    assert base["method"] == "baseline" and base["step_s"] > 0 and base["train_flops"] > 0
    assert "error" in bad and "no_such_method" in bad["error"]
    lat = bench.latencies(["baseline"], "quick", 2, 32, reps=1, num_classes=4)
    assert lat["baseline"]["seconds"] > 0
    lines = bench.method_table(rows, peak=1e9)
    assert any("baseline" in l and "PASS" in l for l in lines)


def test_engine_vs_bare_tiny():
    r = bench.engine_vs_bare("quick", batch=2, crop=32, steps=1, trials=1, num_classes=4)
    assert r["engine_ips"] > 0 and r["bare_ips"] > 0 and r["overhead"] < 1


def test_data_pipeline_tiny(tmp_path):
    r = bench.data_pipeline(n_images=4, resize=80, crop=64, reps=1, workdir=tmp_path)
    for k in ("raw_decode", "raw_decode_resize", "originals", "cache"):
        assert r[k] > 0
    assert r["n_images"] == 4 and r["speedup"] > 0
    assert (tmp_path / "CUB_200_2011" / "images.txt").is_file()


def test_render_and_main_write_report(tmp_path):
    out = tmp_path / "bench.md"
    argv = ["--out", str(out), "--methods", "baseline", "--sections", "engine,quick,latency,data",
            "--quick-steps", "1", "--engine-steps", "1", "--engine-trials", "1", "--latency-batch", "2",
            "--latency-reps", "1", "--data-images", "4", "--data-reps", "1", "--gemm-n", "64",
            "--paper-crop", "32", "--quick-batch", "2", "--quick-crop", "32"]
    assert bench.main(argv) == 0
    text = out.read_text()
    for heading in ("## Goals", "## Machine", "## Engine overhead", "Quick profile",
                    "## Inference latency", "## Data pipeline", "torch " + torch.__version__):
        assert heading in text
    assert "python -m fgvc.bench --out" in text
    assert out.with_suffix(".json").is_file()
