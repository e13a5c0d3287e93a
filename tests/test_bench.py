"""The benchmark's sections at tiny sizes (no timing assertions: the machine is shared)."""
from __future__ import annotations

import pytest
import torch

from fgvc import bench

FAST = 0.01  # seconds per Timer measurement: one block after Timer's warm-up call


@pytest.mark.parametrize("mode", [None, "adjacent", "halves"])
def test_labels_follow_pair_mode(mode):
    y = bench.labels(8, 10, mode)
    if mode == "adjacent":
        assert torch.equal(y[0::2], y[1::2])
    elif mode == "halves":
        assert torch.equal(y[:4], y[4:])
    assert y.shape == (8,)


def test_throughput_rows_relative_to_the_baseline():
    s = bench.throughput(["baseline", "no_such_method"], "scratch", 2, 32, peak=1e9,
                         min_run_time=FAST, num_classes=4, log=lambda _: None)
    base, bad = s["rows"]
    assert base["method"] == "baseline" and base["img/s"] > 0 and base["GFLOP/step"] > 0
    assert base["img/s"] == pytest.approx(2 / base["step s"])
    assert base["MFU %"] == pytest.approx(100 * base["GFLOP/s"])  # peak 1 GFLOP/s
    assert base["FLOP/s / baseline"] == 1.0
    assert "error" in bad and "no_such_method" in bad["error"]
    assert [g["status"] for g in s["goals"]] == ["PASS"]
    assert "baseline" in bench.table(s["rows"])


def test_engine_overhead_tiny():
    s = bench.engine_overhead("scratch", batch=2, crop=32, steps=1, min_run_time=FAST, num_classes=4)
    engine, bare = (r["images/s"] for r in s["rows"])
    assert engine > 0 and bare > 0 and len(s["goals"]) == 1


def test_data_path_tiny(tmp_path):
    s = bench.data_path(n_images=4, resize=80, crop=64, min_run_time=FAST, workdir=tmp_path)
    assert len(s["rows"]) == 4 and all(r["images/s per worker"] > 0 for r in s["rows"])
    assert "4 SynthBirds JPEGs" in s["note"]
    assert (tmp_path / "synthbirds" / "images.txt").is_file()


def test_main_writes_report(tmp_path):
    out = tmp_path / "bench.md"
    argv = ["--out", str(out), "--methods", "baseline", "--sections", "engine,scratch,data",
            "--engine-steps", "1", "--data-images", "4", "--gemm-n", "64", "--min-run-time", str(FAST),
            "--scratch-batch", "2", "--scratch-crop", "32"]
    assert bench.main(argv) == 0
    text = out.read_text()
    for heading in ("## Goals", "## Machine", "## Engine overhead", "scratch profile",
                    "## Data pipeline", "torch " + torch.__version__, "| fgvc.engine.train_one_epoch |"):
        assert heading in text
    assert "python -m fgvc.bench --out" in text
    assert out.with_suffix(".json").is_file()
