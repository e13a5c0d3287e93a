"""Run configuration: a profile (configs/profiles/*.yaml) + a method's named variant
(configs/variants/<method>.yaml) + overrides -> one validated, plain dict.

Every name and value is checked before any work: an unknown name is an error that lists
the valid ones.
"""
from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

from fgvc.paths import CONFIGS, ROOT

SECTIONS = ("data", "model", "train")

# Settings added after the committed records, with their defaults: a profile that does not
# name one gets the default, and config_hash leaves one out while it is at its default, so
# that every committed run keeps its hash (a method's new model setting is declared instead
# as a Config field with `dataclasses.field(default=..., metadata={"added": True})`).
ADDED_SETTINGS: dict[str, dict[str, Any]] = {
    "data": {},
    "train": {"head_lr": None},  # lr of the method's new modules; None = train.lr
}


def _yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def list_profiles() -> list[str]:
    return sorted(p.stem for p in (CONFIGS / "profiles").glob("*.yaml"))


def load_profile(name: str, _seen: tuple[str, ...] = ()) -> dict:
    """A profile's settings. A profile with `extends: <parent>` is its parent's profile with
    its own settings deep-merged over it (a list, e.g. `seeds`, replaces the parent's; its
    `grid:` entries replace the parent's of the same name and add the others), so that a
    profile that changes a few settings names only those."""
    path = CONFIGS / "profiles" / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown profile {name!r}; valid: {list_profiles()}")
    prof = _yaml(path)
    parent = prof.pop("extends", None)
    if parent is None:
        return prof
    if parent in (*_seen, name):
        raise ValueError(f"profile {name!r} extends {parent!r}, which extends it: "
                         f"{' -> '.join((*_seen, name, parent))}")
    base = load_profile(parent, (*_seen, name))
    for section in SECTIONS:
        known = {*base.get(section, {}), *ADDED_SETTINGS.get(section, {})}
        unknown = sorted(set(prof.get(section) or {}) - known) if section != "model" else []
        if unknown:
            raise ValueError(f"profile {name}: {section} setting(s) {unknown} unknown to "
                             f"{parent}; valid: {sorted(known)}")
    return _deep_merge(base, prof)


def _deep_merge(base: dict, over: dict) -> dict:
    """`over` merged into a copy of `base`: dicts key by key, any other value replaced."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_variants(method: str) -> dict[str, dict]:
    path = CONFIGS / "variants" / f"{method}.yaml"
    return _yaml(path) if path.is_file() else {"full": {"cfg": {}}}


def list_variants(method: str) -> list[str]:
    return list(load_variants(method))


def _merge(base: dict, over: dict, where: str) -> dict:
    """Recursive merge; a key not in `base` is an error listing the valid keys."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if key not in out:
            raise ValueError(f"unknown setting '{where}{key}'; valid: {sorted(out)}")
        if isinstance(out[key], dict) and isinstance(value, dict) and key != "synth":
            out[key] = _merge(out[key], value, f"{where}{key}.")
        else:
            if f"{where}{key}".endswith(CHOICE_SETTINGS) and not isinstance(value, dict):
                pass  # a setting of named choices: checked by _check_choices, not by kind
            elif not _same_kind(out[key], value):
                raise TypeError(f"setting {where}{key} = {value!r}: expected a value like "
                                f"{out[key]!r} ({type(out[key]).__name__})")
            out[key] = copy.deepcopy(value)
    return out


# Settings whose value is one of named choices (strings and booleans mixed), not of the
# default's kind: train.amp (true / false are the legacy aliases of auto / off) and
# train.channels_last. Valid values: fgvc.study.fastpath.AMP_CHOICES / LAYOUT_CHOICES.
CHOICE_SETTINGS = ("train.amp", "train.channels_last")


def _check_choices(cfg: dict) -> None:
    """Validate the settings of named choices; amp's legacy booleans become auto / off."""
    from fgvc.study.fastpath import AMP_CHOICES, LAYOUT_CHOICES, check_choice

    t = cfg["train"]
    if isinstance(t["amp"], bool):
        t["amp"] = "auto" if t["amp"] else "off"
    check_choice("train.amp", t["amp"], AMP_CHOICES)
    check_choice("train.channels_last", t["channels_last"], LAYOUT_CHOICES)
    if not isinstance(t["compile"], bool):
        raise ValueError(f"setting train.compile = {t['compile']!r}; valid: true, false")


def _same_kind(default: Any, value: Any) -> bool:
    if default is None or value is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, (int, float)):
        return isinstance(value, (int, float))
    if isinstance(default, (list, tuple)):
        return isinstance(value, (list, tuple))
    return isinstance(value, type(default))


def dotted_to_nested(overrides: dict) -> dict:
    """{"train.epochs": 2} -> {"train": {"epochs": 2}}; nested dicts pass through."""
    out: dict = {}
    for key, value in overrides.items():
        node = out
        *heads, last = key.split(".")
        for h in heads:
            node = node.setdefault(h, {})
        if isinstance(value, dict) and isinstance(node.get(last), dict):
            node[last].update(value)
        else:
            node[last] = value
    return out


def resolve(method: str, variant: str = "full", dataset: str | None = None,
            profile: str = "transfer", seed: int = 0, data_root: str | None = None,
            overrides: dict | None = None, run_id: str | None = None) -> dict:
    """The full configuration of one run, validated."""
    from fgvc.data import DATASETS
    from fgvc.methods import method_class
    from fgvc.methods.base import config_fields

    prof = load_profile(profile)
    cls = method_class(method)  # raises with the list of methods
    variants = load_variants(method)
    if variant not in variants:
        raise ValueError(f"unknown variant {variant!r} of {method!r}; valid: {list(variants)}")
    dataset = dataset or prof["dataset"]
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; valid: {sorted(DATASETS)}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an integer, got {seed!r}")

    # `model` holds every field of the method's Config (backbone, weights, input_size and the
    # method's own switches): profile, then the profile's per-method section, then the
    # variant, then the overrides; input_size follows data.crop unless set.
    base = {s: {**ADDED_SETTINGS.get(s, {}), **copy.deepcopy(prof[s])} for s in SECTIONS}
    valid = config_fields(cls.Config)
    unknown = sorted(set(base["model"]) - set(valid))
    if unknown:
        raise ValueError(f"profile {profile}: model setting(s) {unknown} unknown; valid: {sorted(valid)}")
    base["model"] = {**valid, **base["model"]}
    cfg = _merge(base, prof.get("methods", {}).get(method) or {}, f"profile {profile} methods.{method}.")
    cfg = _merge(cfg, {"model": variants[variant].get("cfg", {})}, f"variant {variant}: ")
    # `data.synth` is one value (a generator spec): given whole it replaces the profile's; a
    # key under it (data.synth.part_scale) changes that key of the spec and keeps the others
    flat = dict(overrides or {})
    keywise = {k.split(".", 2)[2]: flat.pop(k) for k in list(flat) if k.startswith("data.synth.")}
    over = dotted_to_nested(flat)
    if keywise:
        synth = over.get("data", {}).get("synth", cfg["data"].get("synth")) or {}
        over.setdefault("data", {})["synth"] = {**synth, **keywise}
    protocol = over.pop("protocol", prof.get("protocol", "val"))
    unknown = sorted(set(over) - set(SECTIONS))
    if unknown:
        raise ValueError(f"unknown override section(s) {unknown}; valid: {list(SECTIONS)} "
                         "or 'protocol' (e.g. 'train.epochs', 'model.backbone')")
    cfg = _merge(cfg, over, "")
    if protocol == "paper" and "val_fraction" not in over.get("data", {}):
        cfg["data"]["val_fraction"] = 0.0   # the papers train on the whole training set
    if "input_size" not in over.get("model", {}):
        cfg["model"]["input_size"] = cfg["data"]["crop"]
    _check_protocol(protocol, cfg)
    _check_combinations(cls, cfg)

    run = {"method": method, "variant": variant, "dataset": dataset, "profile": profile,
           "protocol": protocol, "seed": seed, "data_root": portable_path(data_root), "overrides": overrides or {}}
    cfg = {**run, **cfg}
    cfg["config_hash"] = config_hash(cfg)
    cfg["run_id"] = run_id or default_run_id(cfg)
    return cfg


PROTOCOLS = {
    "val": "held-out validation split of the training set, the best epoch on it is tested",
    "paper": "the whole training set, the final epoch is tested (our reading of the papers)",
}


def _check_protocol(protocol: str, cfg: dict) -> None:
    """`protocol` decides the split and the tested epoch (see PROTOCOLS)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol {protocol!r}; valid: {sorted(PROTOCOLS)}")
    frac = cfg["data"]["val_fraction"]
    if protocol == "val" and not frac > 0:
        raise ValueError("protocol 'val' selects the best epoch on a held-out split: "
                         f"data.val_fraction must be > 0, got {frac}")
    if protocol == "paper" and frac:
        raise ValueError("protocol 'paper' trains on the whole training set: data.val_fraction "
                         f"must be 0, got {frac}")


def _check_combinations(cls: type, cfg: dict) -> None:
    _check_choices(cfg)
    t = cfg["train"]
    if t["schedule"] not in ("cosine", "step"):
        raise ValueError(f"train.schedule {t['schedule']!r}; valid: ['cosine', 'step']")
    if cls.pair_mode and t["batch_size"] % 2:
        raise ValueError(f"method {cls.name!r} needs same-class pairs in each batch: "
                         f"train.batch_size must be even, got {t['batch_size']}")
    if cfg["data"]["crop"] > cfg["data"]["resize"]:
        raise ValueError(f"data.crop {cfg['data']['crop']} is larger than data.resize "
                         f"{cfg['data']['resize']}")
    for key in ("epochs", "batch_size"):
        if t[key] < 1:
            raise ValueError(f"train.{key} must be >= 1, got {t[key]}")


RESOLVED_KEYS = ("method", "variant", "dataset", "profile", "protocol", "seed", "data_root", "overrides",
                 *SECTIONS, "config_hash", "run_id")


def from_json(config: str | dict) -> dict:
    """A configuration resolved elsewhere (the grid's, as JSON or a dict), used as given.

    Nothing is resolved again: this only checks that it is a whole resolved configuration.
    """
    cfg = json.loads(config) if isinstance(config, str) else copy.deepcopy(dict(config))
    missing = [k for k in RESOLVED_KEYS if k not in cfg]
    if missing:
        raise ValueError(f"not a resolved configuration (fgvc.study.config.resolve): {missing} missing")
    return cfg


def portable_path(path: str | None) -> str | None:
    """A path inside the repository as a path relative to it (relative paths resolve from the
    repository root), so that no record holds this machine's absolute paths; others unchanged."""
    if not path:
        return path
    p = Path(path).expanduser()
    if p.is_absolute():
        try:
            return str(p.resolve().relative_to(ROOT)) or "."
        except ValueError:
            return str(path)
    return str(path)


def config_hash(cfg: dict) -> str:
    """Hash of everything that changes the result (not the run id, paths, worker count or the
    `machine` section that fgvc.study.run records)."""
    keep = {k: v for k, v in cfg.items() if k not in ("run_id", "config_hash", "data_root",
                                                       "overrides", "machine")}
    keep["train"] = {k: v for k, v in keep["train"].items() if k not in ("num_workers",)}
    for section in ("data", "train"):
        keep[section] = _without_defaults(keep[section], ADDED_SETTINGS[section])
    keep["model"] = _without_defaults(keep["model"], added_model_fields(keep.get("method")))
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:12]


def _without_defaults(section: dict, added: dict[str, Any]) -> dict:
    """`section` less each added setting that is at its default (see ADDED_SETTINGS)."""
    return {k: v for k, v in section.items() if not (k in added and v == added[k])}


def added_model_fields(method: str | None) -> dict[str, Any]:
    """Name -> default of the method's Config fields marked `metadata={"added": True}`
    (settings added after the committed records); {} for a method not registered here."""
    from dataclasses import fields

    from fgvc.methods import list_methods, method_class

    if method not in list_methods():
        return {}
    return {f.name: f.default for f in fields(method_class(method).Config) if f.metadata.get("added")}


def default_run_id(cfg: dict) -> str:
    rid = f"{cfg['profile']}-{cfg['dataset']}-{cfg['method']}-{cfg['variant']}-s{cfg['seed']}"
    return rid + (f"-{cfg['config_hash'][:6]}" if cfg["overrides"] else "")
