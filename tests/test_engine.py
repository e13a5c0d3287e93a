"""Training engine: determinism, resume after kills, refusal of foreign checkpoints, NaN stops."""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fgvc import io
from fgvc.engine import CheckpointMismatch, NonFiniteLoss, build_optimizer, build_scheduler, train_one_epoch
from fgvc.methods import create_method
from fgvc.study.config import config_hash, resolve
from fgvc.study.run import resolve_machine, run
from fgvc.study.train import main as train_main

from tiny import TINY

SAME = ("val_top1", "val_top5", "test_top1", "test_top5", "test_loss", "best_epoch", "params")
LONGER = dict(TINY, **{"train.epochs": 4, "train.max_steps": 0})  # 4 epochs, 5 steps each


def test_same_seed_same_metrics(isolated_results):
    a = run(method="baseline", profile="scratch", overrides=TINY, run_id="a", progress=False)
    b = run(method="baseline", profile="scratch", overrides=TINY, run_id="b", progress=False)
    assert {k: a[k] for k in SAME} == {k: b[k] for k in SAME}
    ha = io.read_json(isolated_results / "results/runs/a/metrics.json")
    assert ha["test_top1"] == a["test_top1"]
    # machine-dependent choices are made by the run and recorded on their own, outside the hash
    config = io.read_json(isolated_results / "results/runs/a/config.json")
    assert config["machine"] == ha["machine"] == resolve_machine(config)
    assert config["machine"]["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert config_hash(config) == config["config_hash"] == ha["config_hash"]
    c = run(method="baseline", profile="scratch", seed=1, overrides=TINY, run_id="c", progress=False)
    assert (isolated_results / "results/runs/c/history.csv").read_text() != \
        (isolated_results / "results/runs/a/history.csv").read_text()


def _start(run_id: str, env: dict) -> subprocess.Popen:
    code = ("import torch; torch.set_num_threads(1); from fgvc.study.run import run; "
            f"run(method='baseline', profile='scratch', overrides={LONGER!r}, run_id={run_id!r}, progress=False)")
    return subprocess.Popen([sys.executable, "-c", code], env=env)


def _rows(path: Path) -> int:
    return max(len(path.read_text().splitlines()) - 1, 0) if path.is_file() else 0


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_result(isolated_results):
    """SIGKILL a run three times at random points mid-epoch; it resumes each time and ends with
    the metrics and history of an uninterrupted run; no checkpoint is ever torn."""
    env = dict(os.environ)
    whole = run(method="baseline", profile="scratch", overrides=LONGER, run_id="whole", progress=False)
    hist = isolated_results / "results/runs/killed/history.csv"
    last = isolated_results / "ckpt/killed/last.pt"
    rng = random.Random(0)
    kills = 0
    for epochs_done in (0, 1, 2):
        proc = _start("killed", env)
        deadline = time.time() + 120
        while _rows(hist) <= epochs_done and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 0.4))  # somewhere in the next epoch
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        if last.is_file():
            torch.load(last, weights_only=True)  # never torn
    assert kills == 3
    assert not (isolated_results / "results/runs/killed/metrics.json").exists()
    resumed = run(method="baseline", profile="scratch", overrides=LONGER, run_id="killed", progress=False)
    assert {k: resumed[k] for k in SAME} == {k: whole[k] for k in SAME}
    h_whole = (isolated_results / "results/runs/whole/history.csv").read_text().splitlines()
    h_kill = hist.read_text().splitlines()
    timing = {i for i, name in enumerate(h_whole[0].split(","))
              if name in ("train_seconds", "val_seconds")}

    def strip(lines):  # everything but the wall-clock columns
        return [[c for i, c in enumerate(line.split(",")) if i not in timing] for line in lines]

    assert strip(h_kill) == strip(h_whole)


def test_checkpoint_of_another_config_is_refused(isolated_results, tmp_path):
    from fgvc.engine import load_checkpoint
    from fgvc.study.run import RunIdTaken

    run(method="baseline", profile="scratch", overrides=TINY, run_id="x", progress=False)
    (isolated_results / "results/runs/x/metrics.json").unlink()
    with pytest.raises(RunIdTaken, match="checkpoint of other settings"):  # before any write
        run(method="baseline", profile="scratch", overrides={**TINY, "train.lr": 0.5}, run_id="x", progress=False)
    path = tmp_path / "last.pt"
    torch.save({"model": {}, "config_hash": "h"}, path)
    with pytest.raises(CheckpointMismatch, match="not loaded"):  # the engine's own guard
        load_checkpoint(path, "other")


def _recording_tqdm(seen: list):
    def bar(iterable, **kwargs):
        seen.append(kwargs)
        return iterable
    return bar


def test_progress_bars_count_the_steps_that_run_and_stay(monkeypatch):
    import fgvc.engine
    from fgvc.engine import evaluate

    seen: list[dict] = []
    monkeypatch.setattr(fgvc.engine, "tqdm", _recording_tqdm(seen))
    model = create_method("baseline", 2, backbone="resnet18")
    t = {"lr": 0.01, "backbone_lr_mult": 1.0, "momentum": 0.9, "weight_decay": 0.0,
         "nesterov": False, "warmup_epochs": 0, "schedule": "cosine", "epochs": 1}
    opt = build_optimizer(model, t)
    loader = [(torch.randn(2, 3, 32, 32), torch.tensor([0, 1]))] * 4
    train_one_epoch(model, loader, opt, build_scheduler(opt, t, 4), torch.device("cpu"),
                    max_steps=2, progress=True)
    evaluate(model, loader, torch.device("cpu"), max_steps=3, progress=True, desc="test", leave=True)
    assert [(k["total"], k["leave"], k["disable"]) for k in seen] == [(2, True, False), (3, True, False)]
    assert seen[1]["desc"] == "test"


def test_tqdm_disable_turns_every_bar_off(monkeypatch):
    from fgvc.engine import tqdm

    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert tqdm(range(3), disable=False).disable  # tqdm alone honours the variable only by default
    monkeypatch.setenv("TQDM_DISABLE", "0")
    bar = tqdm(range(3), disable=False)
    assert not bar.disable
    bar.close()


def test_non_finite_loss_names_the_step():
    model = create_method("baseline", 2, backbone="resnet18")
    t = {"lr": 0.1, "backbone_lr_mult": 1.0, "momentum": 0.9, "weight_decay": 0.0,
         "nesterov": False, "warmup_epochs": 0, "schedule": "cosine", "epochs": 1}
    opt = build_optimizer(model, t)
    sched = build_scheduler(opt, t, 2)
    x = torch.randn(2, 3, 32, 32)
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    loader = [(x, torch.tensor([0, 1])), (bad, torch.tensor([0, 1]))]
    with pytest.raises(NonFiniteLoss, match="at epoch 3, step 1"):
        train_one_epoch(model, loader, opt, sched, torch.device("cpu"), epoch=2, progress=False)


@pytest.mark.parametrize("max_steps, expected", [(0, [2.0, 2.25, 2.5, 2.75]), (2, [2.0, 2.5])])
def test_each_step_tells_the_method_its_progress_in_epochs(max_steps, expected):
    model = create_method("baseline", 2, backbone="resnet18")
    seen = []
    model.set_progress = seen.append
    t = {"lr": 0.01, "backbone_lr_mult": 1.0, "momentum": 0.9, "weight_decay": 0.0,
         "nesterov": False, "warmup_epochs": 0, "schedule": "cosine", "epochs": 3}
    opt = build_optimizer(model, t)
    loader = [(torch.randn(2, 3, 32, 32), torch.tensor([0, 1]))] * 4
    train_one_epoch(model, loader, opt, build_scheduler(opt, t, 4), torch.device("cpu"), epoch=2,
                    max_steps=max_steps, progress=False)
    assert seen == expected


def test_complete_run_is_not_run_again(isolated_results):
    first = run(method="baseline", profile="scratch", overrides=TINY, run_id="done", progress=False)
    again = run(method="baseline", profile="scratch", overrides=TINY, run_id="done", progress=False)
    assert again["finished_at"] == first["finished_at"]


def test_train_cli_runs_a_resolved_config_as_given(isolated_results):
    cfg = resolve("baseline", profile="scratch", overrides=TINY, run_id="given")
    cfg["train"]["lr"] = 0.0123  # what no resolve of these settings gives
    cfg["config_hash"] = config_hash(cfg)
    assert train_main(["--config", json.dumps(cfg), "--no-progress"]) == 0
    record = io.read_json(isolated_results / "results/runs/given/config.json")
    record.pop("machine")
    assert record == cfg
    assert train_main(["--config", '{"method": "baseline"}']) == 1  # not a resolved config


# ------------------------------------------------------------------ resolved precision and layout
def test_machine_choices_are_resolved_and_recorded(isolated_results):
    run(method="baseline", profile="scratch", overrides=TINY, run_id="m", progress=False)
    machine = io.read_json(isolated_results / "results/runs/m/metrics.json")["machine"]
    assert machine["amp"] in ("fp32", "fp16", "bf16") and isinstance(machine["channels_last"], bool)
    assert machine["torch_threads"] == torch.get_num_threads() and machine["cpu_capability"]
    assert machine["cpu_kind"].startswith(machine["cpu_capability"])
    ckpt = torch.load(isolated_results / "ckpt/m/last.pt", weights_only=True)
    assert ckpt["choices"] == {"amp": machine["amp"], "channels_last": machine["channels_last"],
                               "threads": machine["torch_threads"]}


def test_bf16_channels_last_run_keeps_float32_weights_and_state(isolated_results):
    over = {**TINY, "train.amp": "bf16", "train.channels_last": True}
    m = run(method="pcanet", profile="scratch", overrides=over, run_id="bf", progress=False)
    assert (m["machine"]["amp"], m["machine"]["channels_last"]) == ("bf16", True)
    ckpt = torch.load(isolated_results / "ckpt/bf/last.pt", weights_only=True)
    floats = [v for v in ckpt["model"].values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float32 for v in floats)
    momenta = [s["momentum_buffer"] for s in ckpt["optimizer"]["state"].values()]
    assert momenta and all(b.dtype == torch.float32 for b in momenta)
    assert ckpt["scaler"] is None  # a GradScaler only with fp16
    assert 0 <= m["test_top1"] <= 100


def _fake_resolve(amp: str, channels_last: bool):
    def resolve(*a, **k):
        return {"amp": amp, "channels_last": channels_last, "native_bf16": True,
                "cpu_kind": "TEST", "fastpath": "test"}
    return resolve


def test_resume_under_other_dtype_or_layout_is_refused(isolated_results, monkeypatch):
    import fgvc.study.run

    monkeypatch.setattr(fgvc.study.run.fastpath, "resolve", _fake_resolve("fp32", False))
    run(method="baseline", profile="scratch", overrides=TINY, run_id="r", progress=False)
    (isolated_results / "results/runs/r/metrics.json").unlink()
    for amp, layout, named in (("bf16", False, "amp 'fp32' there, 'bf16' here"),
                               ("fp32", True, "channels_last False there, True here")):
        monkeypatch.setattr(fgvc.study.run.fastpath, "resolve", _fake_resolve(amp, layout))
        with pytest.raises(CheckpointMismatch, match=named):
            run(method="baseline", profile="scratch", overrides=TINY, run_id="r", progress=False)
    # another thread count resumes (recorded, not compared: see engine.RESUME_CHOICES)
    monkeypatch.setattr(fgvc.study.run.fastpath, "resolve", _fake_resolve("fp32", False))
    torch.set_num_threads(2)
    try:
        m = run(method="baseline", profile="scratch", overrides=TINY, run_id="r", progress=False)
    finally:
        torch.set_num_threads(1)
    assert m["machine"]["torch_threads"] == 2


def test_checkpoint_without_choices_is_taken_as_the_former_rule(tmp_path):
    from fgvc.engine import legacy_choices, load_checkpoint

    path = tmp_path / "last.pt"
    torch.save({"model": {}, "config_hash": "h"}, path)
    t = {"amp": "auto", "channels_last": "auto"}
    cpu = legacy_choices(t, torch.device("cpu"))
    assert cpu == {"amp": "fp32", "channels_last": False}
    assert legacy_choices(t, torch.device("cuda")) == {"amp": "fp16", "channels_last": True}
    load_checkpoint(path, "h", {"amp": "fp32", "channels_last": False, "threads": 3}, cpu)
    with pytest.raises(CheckpointMismatch, match="other machine choices"):
        load_checkpoint(path, "h", {"amp": "bf16", "channels_last": False}, cpu)


# ------------------------------------------------------------------ torch.compile checkpoints
def test_state_dicts_of_wrapped_models_load_into_the_plain_module():
    from fgvc.engine import load_model_state, model_state, unwrap

    torch.manual_seed(0)
    a = create_method("baseline", 3, backbone="resnet18")
    b = create_method("baseline", 3, backbone="resnet18")
    compiled = torch.compile(a)  # wrapping only: nothing is compiled before a call
    assert unwrap(compiled) is a
    assert not any(k.startswith("_orig_mod.") for k in model_state(compiled))
    prefixed = compiled.state_dict()
    assert all(k.startswith("_orig_mod.") for k in prefixed)
    for state in (prefixed, {f"module.{k}": v for k, v in a.state_dict().items()}, a.state_dict()):
        load_model_state(b, state)
        assert all(torch.equal(v, a.state_dict()[k]) for k, v in b.state_dict().items())


def test_checkpoints_with_compile_prefixes_resume_and_evaluate(isolated_results):
    """last.pt and best.pt whose keys carry `_orig_mod.` (a torch.compile'd model saved as is)
    load for resume (fit) and for the final evaluation (run), giving the same metrics."""
    first = run(method="baseline", profile="scratch", overrides=TINY, run_id="p", progress=False)
    (isolated_results / "results/runs/p/metrics.json").unlink()
    for name in ("last.pt", "best.pt"):
        path = isolated_results / "ckpt/p" / name
        ckpt = torch.load(path, weights_only=True)
        ckpt["model"] = {f"_orig_mod.{k}": v for k, v in ckpt["model"].items()}
        torch.save(ckpt, path)
    again = run(method="baseline", profile="scratch", overrides=TINY, run_id="p", progress=False)
    assert {k: again[k] for k in SAME} == {k: first[k] for k in SAME}
