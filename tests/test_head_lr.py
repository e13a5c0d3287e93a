"""train.head_lr: the lr of a method's new modules; null (or absent) is today's optimizer."""

import pytest
import torch

from fgvc.engine import build_optimizer, build_scheduler, forward_loss
from fgvc.methods import create_method

T = {"lr": 0.05, "backbone_lr_mult": 0.1, "momentum": 0.9, "weight_decay": 0.0005,
     "nesterov": False, "warmup_epochs": 1, "schedule": "cosine", "epochs": 2}


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_method("baseline", 2, backbone="resnet18")
    model.backbone.pretrained = True  # two groups, as with ImageNet weights
    return model


def _one_step(t: dict):
    model = _model()
    opt = build_optimizer(model, t)
    sched = build_scheduler(opt, t, 4)
    torch.manual_seed(1)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 0, 1])
    _, loss, _ = forward_loss(model, x, y)
    loss.backward()
    opt.step()
    sched.step()
    groups = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
    return groups, model.state_dict()


def test_head_lr_null_is_exactly_todays_optimizer():
    groups, state = _one_step(T)
    assert [(g["name"], g["initial_lr"]) for g in groups] == [("new", 0.05), ("pretrained", 0.05 * 0.1)]
    null_groups, null_state = _one_step({**T, "head_lr": None})
    assert null_groups == groups
    assert all(torch.equal(state[k], null_state[k]) for k in state)


def test_head_lr_sets_the_new_modules_lr_only_and_both_follow_the_schedule():
    groups, state = _one_step({**T, "head_lr": 0.3})
    assert [(g["name"], g["initial_lr"]) for g in groups] == [("new", 0.3), ("pretrained", 0.05 * 0.1)]
    # one step of the warm-up (4 steps an epoch): both at 2/4 of their lr, the same decay
    assert [g["lr"] for g in groups] == pytest.approx([0.3 * 0.5, 0.005 * 0.5])
    assert [g["weight_decay"] for g in groups] == [0.0005, 0.0005]
    _, today = _one_step(T)
    head = [k for k in state if k.startswith("fc") or "classifier" in k or "head" in k]
    assert head and all(not torch.equal(state[k], today[k]) for k in head)
    body = [k for k in state if k.startswith("backbone") and state[k].is_floating_point()
            and "running" not in k]
    assert body and all(torch.equal(state[k], today[k]) for k in body)  # first step: same grads


@pytest.mark.parametrize("profile, folder, param", [
    ("transfer_next", "head_lr", "head_lr"),            # the fair transplant, 5 epochs
    # the regime's (20 epochs) are the default profile's: tests/test_sweep.py
])
def test_the_profiles_lrs_are_the_sweeps_choices(profile, folder, param):
    """Each swept method's lr in the profile is what the committed sweep chose on validation
    (results/readings/<folder>/chosen.csv, fgvc.study.sweep's rule)."""
    import pandas as pd

    from fgvc.paths import ROOT
    from fgvc.study.config import resolve

    chosen = pd.read_csv(ROOT / "results/readings" / folder / "chosen.csv").set_index("method")
    for method in chosen.index:
        cfg = resolve(method, profile=profile)
        assert cfg["train"][param] == pytest.approx(chosen.loc[method, "chosen_lr"]), method
