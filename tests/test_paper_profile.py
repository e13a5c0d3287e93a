"""The `paper` profile (ResNet-50 at 448, each paper's settings) runs a few steps of every
method on the CPU, so the configuration users run on GPUs is known to work."""
import pytest

from fgvc.study.config import load_profile, resolve
from fgvc.methods import list_methods
from fgvc.study.run import run

from tiny import TINY, TINY_SYNTH

# The settings a paper either states (its section of the paper profile) or leaves to us.
SETTINGS = ["data.resize", "data.crop", "data.rotation", "data.vflip", "train.epochs",
            "train.batch_size", "train.lr", "train.momentum", "train.weight_decay",
            "train.schedule", "train.warmup_epochs", "train.backbone_lr_mult"]


@pytest.mark.parametrize("method", list_methods())
def test_paper_profile_uses_the_paper_protocol_and_marks_every_unstated_value(method):
    cfg = resolve(method, "full", profile="paper")
    assert cfg["protocol"] == "paper" and cfg["data"]["val_fraction"] == 0.0
    prof = load_profile("paper")
    ours = prof["ours"][method]
    assert ours == "all" or set(ours) <= set(SETTINGS), ours
    stated = prof["methods"][method]
    for key in SETTINGS:
        section, name = key.split(".")
        is_stated = name in (stated.get(section) or {})
        is_ours = ours == "all" or key in ours
        # A value in the section may still be ours (e.g. lafe's rotation angle): then it is listed.
        assert is_stated or is_ours, f"{method}: {key} is neither set from the paper nor ours"
        if key == "train.schedule" and cfg["train"]["schedule"] == "step" and is_stated:
            assert {"step_size", "gamma"} <= set(stated["train"])   # the step is stated too


def test_protocols_split_and_select_as_named():
    assert resolve("baseline")["protocol"] == "val"
    assert resolve("baseline")["data"]["val_fraction"] > 0
    paper = resolve("baseline", overrides={"protocol": "paper"})
    assert paper["data"]["val_fraction"] == 0.0
    assert paper["config_hash"] != resolve("baseline")["config_hash"]
    with pytest.raises(ValueError, match="protocol 'val'.*val_fraction must be > 0"):
        resolve("baseline", profile="paper", overrides={"protocol": "val"})
    with pytest.raises(ValueError, match="valid: \\['paper', 'val'\\]"):
        resolve("baseline", overrides={"protocol": "best"})


def test_paper_protocol_trains_on_everything_and_tests_the_final_epoch(isolated_results):
    over = {**TINY, "model.weights": "none", "model.backbone": "resnet18", "data.resize": 40,
            "data.crop": 32, "protocol": "paper"}
    m = run(method="baseline", dataset="synthbirds", overrides=over, run_id="protocol-paper",
            progress=False)
    assert m["protocol"] == "paper" and m["n_val"] == 0 and m["val_top1"] is None
    assert m["best_epoch"] == m["epochs"] == 2
    hist = (isolated_results / "results/runs/protocol-paper/history.csv").read_text()
    assert "val_top1" not in hist.splitlines()[0]
    # 12 train images per class x 4 classes: nothing held out
    assert m["n_train"] == 48


@pytest.mark.slow
@pytest.mark.parametrize("method", list_methods())
def test_paper_profile_runs_a_few_steps_at_448(method, isolated_results):
    over = {"model.weights": "none", "train.epochs": 1, "train.max_steps": 2,
            "train.batch_size": 2, "train.eval_batch_size": 2, "train.num_workers": 0,
            "data.synth": TINY_SYNTH}
    m = run(method=method, dataset="synthbirds", profile="paper", overrides=over,
            run_id=f"paper-{method}", progress=False)
    assert m["epochs"] == 1 and m["n_train"] > 0
    assert m["protocol"] == "paper" and m["val_top1"] is None and m["best_epoch"] == 1
    cfg = (isolated_results / f"results/runs/paper-{method}/config.json").read_text()
    assert '"crop": 448' in cfg and '"backbone": "resnet50"' in cfg
