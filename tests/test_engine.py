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
from fgvc.config import config_hash, resolve
from fgvc.run import resolve_machine, run
from fgvc.train import main as train_main

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
    code = ("import torch; torch.set_num_threads(1); from fgvc.run import run; "
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
    timing = {i for i, name in enumerate(h_whole[0].split(",")) if name == "train_seconds"}

    def strip(lines):  # everything but the wall-clock column
        return [[c for i, c in enumerate(line.split(",")) if i not in timing] for line in lines]

    assert strip(h_kill) == strip(h_whole)


def test_checkpoint_of_another_config_is_refused(isolated_results):
    run(method="baseline", profile="scratch", overrides=TINY, run_id="x", progress=False)
    (isolated_results / "results/runs/x/metrics.json").unlink()
    with pytest.raises(CheckpointMismatch, match="not loaded"):
        run(method="baseline", profile="scratch", overrides={**TINY, "train.lr": 0.5}, run_id="x", progress=False)


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
