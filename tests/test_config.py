"""Every parameter is checked before any work; errors list the valid choices."""
import pytest

import json

from fgvc.study.config import (config_hash, dotted_to_nested, from_json, list_profiles, load_profile,
                         portable_path, resolve)
from fgvc.paths import ROOT
from fgvc.engine import lr_factor


def test_resolve_defaults_to_the_transfer_profile():
    cfg = resolve("baseline")
    assert cfg["dataset"] == "synthbirds" and cfg["profile"] == "transfer"
    assert cfg["model"]["backbone"] == "efficientnet_lite0" and cfg["model"]["weights"] == "imagenet"
    assert cfg["model"]["input_size"] == cfg["data"]["crop"] >= 112
    assert cfg["data"]["synth"]["image_size"] == cfg["data"]["resize"]  # rendered, not upsampled
    assert cfg["run_id"] == "transfer-synthbirds-baseline-full-s0"
    assert resolve("baseline")["config_hash"] == cfg["config_hash"]
    assert resolve("baseline", seed=1)["config_hash"] != cfg["config_hash"]
    scratch = resolve("baseline", profile="scratch")
    assert scratch["model"]["backbone"] == "resnet18" and scratch["model"]["weights"] == "none"


def test_paper_profile_takes_each_papers_settings():
    lafe = resolve("lafe", dataset="cub", profile="paper") if _has("lafe") else None
    base = resolve("baseline", dataset="cub", profile="paper")
    assert base["model"]["backbone"] == "resnet50" and base["model"]["weights"] == "imagenet"
    assert (base["data"]["resize"], base["data"]["crop"]) == (550, 448)
    if lafe:
        assert lafe["data"]["resize"] == 512 and lafe["train"]["lr"] == 0.0015


def _has(method):
    from fgvc.methods import list_methods

    return method in list_methods()


@pytest.mark.parametrize("kwargs, message", [
    ({"method": "resnet"}, "unknown method 'resnet'; valid: ["),
    ({"method": "baseline", "variant": "nope"}, "unknown variant 'nope' of 'baseline'; valid: ['full'"),
    ({"method": "baseline", "dataset": "birds"}, "unknown dataset 'birds'; valid: ['aircraft', 'cars', 'cub', 'cub30', 'synthbirds']"),
    ({"method": "baseline", "profile": "fast"}, "unknown profile 'fast'; valid: ['"),
    ({"method": "baseline", "overrides": {"train.epoch": 3}}, "unknown setting 'train.epoch'; valid: ["),
    ({"method": "baseline", "overrides": {"optim.lr": 3}}, "unknown override section(s) ['optim']"),
    ({"method": "baseline", "overrides": {"model.backbone": "vgg16"}}, "unknown backbone 'vgg16'"),
    ({"method": "baseline", "overrides": {"data.crop": 300}}, "data.crop 300 is larger than data.resize"),
])
def test_bad_parameters_fail_at_once_listing_valid_choices(kwargs, message):
    with pytest.raises((ValueError, TypeError)) as err:
        cfg = resolve(**kwargs)
        from fgvc.methods import create_method  # backbone names are checked when building

        create_method(cfg["method"], 2, **cfg["model"])
    assert message in str(err.value)


def test_wrong_type_is_an_error():
    with pytest.raises(TypeError, match="train.epochs = 'ten'"):
        resolve("baseline", overrides={"train.epochs": "ten"})
    with pytest.raises(TypeError, match="seed must be an integer"):
        resolve("baseline", seed="0")


def test_paired_method_needs_even_batch():
    from fgvc.methods import list_methods, method_class

    paired = [m for m in list_methods() if method_class(m).pair_mode]
    if not paired:
        pytest.skip("no paired method registered")
    with pytest.raises(ValueError, match="must be even"):
        resolve(paired[0], overrides={"train.batch_size": 7})


def test_dotted_overrides():
    assert dotted_to_nested({"train.epochs": 2, "data.synth": {"n_genera": 2}}) == \
        {"train": {"epochs": 2}, "data": {"synth": {"n_genera": 2}}}


def test_profiles_are_data():
    assert {"scratch", "paper"} <= set(list_profiles())
    for name in list_profiles():
        prof = load_profile(name)
        assert {"data", "model", "train", "dataset", "seeds"} <= set(prof)


def test_lr_schedules_by_hand():
    t = {"warmup_epochs": 1, "epochs": 5, "schedule": "cosine", "gamma": 0.1, "step_size": 2}
    assert lr_factor(t, 0, 10) == pytest.approx(0.1)      # warm-up: (0 + 1) / 10
    assert lr_factor(t, 9, 10) == pytest.approx(1.0)
    assert lr_factor(t, 10, 10) == pytest.approx(1.0)     # cosine starts after warm-up
    assert lr_factor(t, 30, 10) == pytest.approx(0.5)     # half-way: (1 + cos(pi/2)) / 2
    step = dict(t, schedule="step", warmup_epochs=0)
    assert [lr_factor(step, s, 10) for s in (0, 19, 20, 40)] == pytest.approx([1, 1, 0.1, 0.01])


def test_a_resolved_config_is_taken_as_given():
    cfg = resolve("baseline")
    cfg["train"]["lr"] = 0.0123
    assert from_json(json.dumps(cfg)) == cfg and from_json(cfg) == cfg
    with pytest.raises(ValueError, match="not a resolved configuration.*config_hash"):
        from_json({k: v for k, v in cfg.items() if k != "config_hash"})


def test_machine_section_and_paths_do_not_change_the_hash():
    cfg = resolve("baseline")
    assert config_hash({**cfg, "machine": {"device": "cuda"}}) == cfg["config_hash"]
    inside = resolve("baseline", data_root=str(ROOT / "data" / "mine"))
    assert inside["data_root"] == "data/mine" and inside["config_hash"] == cfg["config_hash"]
    assert portable_path("data/x") == "data/x" and portable_path(None) is None
    assert portable_path("/elsewhere/cub") == "/elsewhere/cub"  # outside the repository: as given


# ---------------------------------------------------------------- settings added later
RECORDS = sorted(p for folder in ("runs", "sweep", "readings")
                 for p in (ROOT / "results" / folder).rglob("config.json"))


def test_every_committed_record_keeps_its_hash():
    """The hash of each committed record, as stored, as with every added setting at its default,
    and (for results/runs, the study `make study` reproduces) as resolved again today."""
    from fgvc.study.config import ADDED_SETTINGS, added_model_fields

    assert len(RECORDS) > 29
    for path in RECORDS:
        cfg = json.loads(path.read_text())
        assert config_hash(cfg) == cfg["config_hash"], path
        full = {**cfg, **{s: {**ADDED_SETTINGS[s], **cfg[s]} for s in ("data", "train")}}
        full["model"] = {**added_model_fields(cfg["method"]), **cfg["model"]}
        assert config_hash(full) == cfg["config_hash"], path
        if path.parts[-3:-2] == ("runs",) and path.parent.parent.parent == ROOT / "results":
            again = resolve(cfg["method"], cfg["variant"], cfg["dataset"], cfg["profile"], cfg["seed"],
                            cfg["data_root"], cfg["overrides"])
            assert again["config_hash"] == cfg["config_hash"], path


def test_an_added_train_setting_counts_only_off_its_default():
    cfg = resolve("baseline", profile="transfer_v1")   # a profile that does not set head_lr
    assert cfg["train"]["head_lr"] is None  # every profile gets the default
    assert resolve("baseline", profile="transfer_v1",
                   overrides={"train.head_lr": None})["config_hash"] == cfg["config_hash"]
    set_ = resolve("baseline", profile="transfer_v1", overrides={"train.head_lr": 0.08})
    assert set_["train"]["head_lr"] == 0.08 and set_["config_hash"] != cfg["config_hash"]
    paper = resolve("baseline", profile="paper", dataset="cub")
    assert paper["train"]["head_lr"] is None


def test_an_added_model_field_counts_only_off_its_default(monkeypatch):
    """A Config field declared `metadata={"added": True}` leaves the hash as it was at its
    default; a field declared without it would change every hash."""
    from dataclasses import dataclass, field

    from fgvc.methods import method_class
    from fgvc.methods import registry

    before = resolve("baseline")
    base = method_class("baseline")

    @dataclass
    class Later(base.Config):
        later_switch: float = field(default=1.0, metadata={"added": True})

    @dataclass
    class Plain(base.Config):
        plain_switch: float = 1.0

    for config, name in ((Later, "later_switch"), (Plain, "plain_switch")):
        monkeypatch.setitem(registry._METHODS, "baseline", type("B", (base,), {"Config": config}))
        cfg = resolve("baseline")
        assert cfg["model"][name] == 1.0
        assert (cfg["config_hash"] == before["config_hash"]) == (config is Later)
        off = resolve("baseline", overrides={f"model.{name}": 2.0})
        assert off["config_hash"] not in (cfg["config_hash"], before["config_hash"])


def _profiles(tmp_path, monkeypatch, **texts):
    from fgvc.study import config

    (tmp_path / "profiles").mkdir()
    for name, text in texts.items():
        (tmp_path / "profiles" / f"{name}.yaml").write_text(text)
    monkeypatch.setattr(config, "CONFIGS", tmp_path)
    return config.load_profile


PARENT = """
dataset: synthbirds
seeds: [0, 1, 2]
grid: {study: [{variants: [full]}], sweep: [{seeds: [0]}]}
data: {crop: 128, synth: {n_genera: 4, preset: photo}}
train: {lr: 0.02, epochs: 5}
methods: {focus: {model: {num_regions: 2}, train: {lr: 0.08}}}
"""


def test_a_profile_extends_its_parent(tmp_path, monkeypatch):
    load = _profiles(tmp_path, monkeypatch, parent=PARENT, child="""
extends: parent
seeds: [3]
grid: {sweep: [{seeds: [1]}], extra: [{variants: all}]}
data: {synth: {n_genera: 2}}
train: {head_lr: 0.3}
methods: {focus: {train: {lr: 0.01}}}
""")
    child = load("child")
    assert "extends" not in child and child["seeds"] == [3]               # a list replaces
    assert child["grid"] == {"study": [{"variants": ["full"]}], "sweep": [{"seeds": [1]}],
                             "extra": [{"variants": "all"}]}              # grids by name
    assert child["data"] == {"crop": 128, "synth": {"n_genera": 2, "preset": "photo"}}
    assert child["train"] == {"lr": 0.02, "epochs": 5, "head_lr": 0.3}    # an added setting
    assert child["methods"] == {"focus": {"model": {"num_regions": 2}, "train": {"lr": 0.01}}}
    assert load("parent")["seeds"] == [0, 1, 2]


def test_a_bad_extension_is_an_error(tmp_path, monkeypatch):
    load = _profiles(tmp_path, monkeypatch, parent=PARENT, typo="extends: parent\ntrain: {lrr: 1}\n",
                     a="extends: b\n", b="extends: a\n", orphan="extends: nowhere\n")
    with pytest.raises(ValueError, match=r"train setting\(s\) \['lrr'\] unknown to parent"):
        load("typo")
    with pytest.raises(ValueError, match="a -> b -> a"):
        load("a")
    with pytest.raises(ValueError, match="unknown profile 'nowhere'"):
        load("orphan")


def test_transfer_next_is_transfer_v1_with_one_backbone_recipe():
    from fgvc.methods import list_methods

    nxt, v1 = load_profile("transfer_next"), load_profile("transfer_v1")
    assert nxt["grid"]["study"] == v1["grid"]["study"] and nxt["data"] == v1["data"]
    for method in list_methods():
        cfg, old = resolve(method, profile="transfer_next"), resolve(method, profile="transfer_v1")
        t = cfg["train"]
        assert t["lr"] * t["backbone_lr_mult"] == pytest.approx(0.008) and t["head_lr"] is not None
        chosen = nxt["methods"].get(method, {}).get("model", {})  # the fair transplant's choices
        assert cfg["model"] == {**old["model"], **chosen} and cfg["data"] == old["data"]
        assert cfg["run_id"] != old["run_id"] and cfg["config_hash"] != old["config_hash"]


def test_transfer_is_transfer_regime_merged():
    """The evidence issue merged transfer_next and transfer_regime into transfer.yaml: every
    run of every method and variant resolves to the settings the regime's readings measured
    (only the profile's name, and with it the run id and hash, differ), and the study's grid is
    the regime's."""
    from fgvc.methods import list_methods
    from fgvc.study.config import load_variants

    for method in list_methods():
        for variant in load_variants(method):
            for seed in (0, 2):
                cfg = resolve(method, variant, profile="transfer", seed=seed)
                regime = resolve(method, variant, profile="transfer_regime", seed=seed)
                same = ("data", "model", "train", "protocol", "dataset", "seed")
                assert {k: cfg[k] for k in same} == {k: regime[k] for k in same}, (method, variant)
                assert cfg["config_hash"] != regime["config_hash"]
    from fgvc.study.grid import plan

    new, regime = load_profile("transfer"), load_profile("transfer_regime")
    for grid in ("study", "ablations", "sweep", "real_photos"):   # the same runs (in another order)
        def runs(profile):
            return sorted((s.method, s.variant, s.dataset, s.seed) for s in plan(profile, grid=grid))
        assert runs("transfer") == runs("transfer_regime"), grid
    assert [s.method for s in plan("transfer")][::3] == ["focus", "pcanet", "ma_ea", "lafe", "baseline"]
    assert new["seeds"] == regime["seeds"] and new["grid_workers"] == regime["grid_workers"]


def test_a_key_under_data_synth_changes_that_key_and_keeps_the_profiles_spec():
    whole = resolve("baseline", profile="transfer_regime")["data"]["synth"]
    one = resolve("baseline", profile="transfer_regime", overrides={"data.synth.part_scale": 0.85})
    assert one["data"]["synth"] == {**whole, "part_scale": 0.85}
    # the same run as the whole spec written out: one config hash
    written = resolve("baseline", profile="transfer_regime",
                      overrides={"data.synth": {**whole, "part_scale": 0.85}})
    assert one["config_hash"] == written["config_hash"] != resolve(
        "baseline", profile="transfer_regime")["config_hash"]
    # given whole, the spec still replaces the profile's; keys then change the given spec
    both = resolve("baseline", profile="transfer_regime",
                   overrides={"data.synth": {"n_genera": 2}, "data.synth.noise": 0.1})
    assert both["data"]["synth"] == {"n_genera": 2, "noise": 0.1}
