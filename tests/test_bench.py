"""The benchmark's sections at tiny sizes (no timing assertions: the machine is shared)."""
from __future__ import annotations

import pytest
import torch

from fgvc.dev import bench

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
                         min_run_time=FAST, log=lambda _: None)
    base, bad = s["rows"]
    assert base["method"] == "baseline" and base["img/s"] > 0 and base["GFLOP/step"] > 0
    assert base["img/s"] == pytest.approx(2 / base["step s"])
    assert base["MFU %"] == pytest.approx(100 * base["GFLOP/s"])  # peak 1 GFLOP/s
    assert base["FLOP/s / baseline"] == 1.0
    assert "error" in bad and "no_such_method" in bad["error"]
    assert [g["status"] for g in s["goals"]] == ["PASS"]
    assert "baseline" in bench.table(s["rows"])


def test_engine_overhead_tiny():
    s = bench.engine_overhead("scratch", batch=2, crop=32, steps=1, min_run_time=FAST)
    engine, bare = (r["images/s"] for r in s["rows"])
    assert engine > 0 and bare > 0 and len(s["goals"]) == 1


def test_data_path_tiny(tmp_path):
    s = bench.data_path(n_images=4, resize=80, crop=64, min_run_time=FAST, workdir=tmp_path, render_images=4)
    assert len(s["rows"]) == 5 and all(r["images/s per worker"] > 0 for r in s["rows"])
    assert [g["goal"] for g in s["goals"]][1].startswith("SynthBirds photo rendering")
    assert "4 SynthBirds JPEGs" in s["note"]
    assert (tmp_path / "synthbirds" / "images.txt").is_file()


def test_main_writes_report(tmp_path):
    out = tmp_path / "bench.md"
    argv = ["--out", str(out), "--methods", "baseline", "--sections", "engine,scratch,data",
            "--quick"]
    assert bench.main(argv) == 0
    text = out.read_text()
    for heading in ("## Goals", "## Machine", "## Engine overhead", "scratch profile",
                    "## Data pipeline", "torch " + torch.__version__, "| fgvc.engine.train_one_epoch |",
                    "GFLOP/s**; bf16 (64 x 64)", "native bf16: ", "fast-path table key: "):
        assert heading in text
    assert "python -m fgvc.dev.bench --out" in text
    assert out.with_suffix(".json").is_file()


TINY_BACKBONES = (("resnet18", 32, 2),)


def test_fastpath_table_tiny():
    from fgvc.study import fastpath

    s = bench.fastpath_table(TINY_BACKBONES, peaks={"fp32": 1e9, "bf16": 1e9}, min_run_time=FAST,
                             log=lambda _: None)
    dtypes = ["fp32"] + ["bf16"] * fastpath.native_bf16()
    assert [(r["dtype"], r["layout"]) for r in s["rows"]] == \
        [(d, l) for d in dtypes for l in ("contiguous", "channels_last")]
    assert all(r["train img/s"] > 0 and r["eval img/s"] > 0 and r["train MFU %"] > 0
               for r in s["rows"])
    assert sum(r["auto"] == "yes" for r in s["rows"]) == 1  # what auto picks is one of them
    assert "fastpath" in bench.SECTIONS and "| resnet18 " in bench.table(s["rows"])


def test_fastpath_entry_follows_the_rule():
    from fgvc.study import fastpath

    entry = bench.fastpath_entry(TINY_BACKBONES, rounds=1, min_run_time=FAST, log=lambda _: None)
    (kind, e), = entry.items()
    assert kind == fastpath.cpu_kind() and e["measured"]["threads"] == 1
    b = e["backbones"]["resnet18"]
    assert {"bf16": b["bf16"], "channels_last": b["channels_last"]} == \
        fastpath.choose(b["train_img_per_s"], fastpath.native_bf16())


def test_compile_section_tiny():
    s = bench.compile_speed("resnet18", 32, 2, backend="eager", min_run_time=FAST)
    eager, compiled = s["rows"]
    assert eager["img/s"] > 0 and "error" not in compiled, compiled
    assert compiled["first call s"] > 0 and compiled["img/s"] > 0 and "compile" in bench.SECTIONS


def test_memory_section_tiny():
    s = bench.memory_table({"scratch": (32, 2)}, steps=1, log=lambda _: None)
    base, row = s["rows"]
    assert base["fp32 MiB"] > 0 and row["fp32 MiB"] > 0 and row["backbone"] == "resnet18"
    assert "memory" in bench.SECTIONS


def test_new_sections_through_main(tmp_path):
    out = tmp_path / "bench.md"
    argv = ["--out", str(out), "--sections", "fastpath,compile,memory", "--quick",
            "--fastpath-rounds", "1", "--compile-backend", "eager"]
    assert bench.main(argv) == 0
    text = out.read_text()
    for heading in ("## Fast paths: dtype x memory layout per backbone (cpu)", "## torch.compile (cpu)",
                    "## Peak resident memory", "| efficientnet_lite0 ", "| resnet50 "):
        assert heading in text


def test_one_throughput_section_per_profile_at_its_sizes():
    from fgvc.study.config import load_profile

    assert list(bench.SECTIONS) == ["engine", *bench.THROUGHPUT_PROFILES, "data", "fastpath",
                                    "compile", "memory"]
    scratch = load_profile("scratch")
    assert bench.sizes("scratch") == (scratch["data"]["crop"], scratch["train"]["batch_size"])
    assert bench.sizes("paper") == (448, bench.PAPER_BATCH)  # the paper's crop, a CPU's batch
    assert bench.sizes("paper", quick=True) == bench.QUICK
    # the default study is benchmarked, on its backbone at its input size
    transfer = load_profile("transfer")
    assert "transfer" in bench.THROUGHPUT_PROFILES
    assert bench.sizes("transfer") == (transfer["data"]["crop"], transfer["train"]["batch_size"])
    assert bench.profile_model("baseline", "transfer", 128)["backbone"] == "efficientnet_lite0"


def test_paper_section_through_main(tmp_path):
    out = tmp_path / "bench.md"
    assert bench.main(["--out", str(out), "--sections", "paper", "--quick", "--methods", "baseline"]) == 0
    text = out.read_text()
    assert "## Training throughput per method: paper profile" in text
    assert "resnet50, batch 2, 32 px" in text and "lowest FLOP/s / baseline, paper" in text


def test_bench_step_trains_or_evaluates():
    cfg = {"backbone": "resnet18", "input_size": 32}
    train = bench.bench_step("baseline", cfg, 2)
    model = train.model
    before = [p.detach().clone() for p in model.parameters()]
    train()
    assert model.training and any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    infer = bench.bench_step("baseline", cfg, 2, train=False)
    out = infer()
    assert out["logits"].shape == (2, bench.NUM_CLASSES) and not out["logits"].requires_grad
