"""Run records -> tidy tables. Tables are built only from results/runs/*/{config,metrics}.json
(and history.csv for the learning curves, results/failures.json for why a row was not run).

Tidy: one observation per row, one variable per column, numbers as numbers (NaN where there is
none), so every CSV reads back with ``pd.read_csv`` without parsing strings.

* :func:`arm_table` (``accuracy.csv``): one row per (profile, protocol, dataset, overrides,
  method, variant): test top-1 mean, std, n, the 95 % t interval over seeds, the paper's
  number, the paired difference (same seeds only) to the row's reference, and the genus
  metrics' mean / std / n where the records have them.
* :func:`claims_table` (``claims.csv``): one row per claim the study can test, with the
  paper's own gain, ours (paired over seeds), its interval and a verdict.
* :func:`load_histories`: every run's history.csv, long, for the learning curves.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from fgvc.data.registry import DATASETS, claims_dataset, display_name, paper_dataset, paper_datasets
from fgvc.methods import method_rank
from fgvc.study.config import load_variants
from fgvc.paths import CONFIGS, results_dir
from fgvc.study import predictions
from fgvc.study.stats import mdd, paired_bootstrap, paired_difference, t_interval
from fgvc.study.verdicts import adaptation_failures, claim_verdict

# Names and order of datasets and methods come from their registries (fgvc.data.registry:
# display_name, paper_dataset; fgvc.methods: list_methods, method_rank), never from a list here.
PROTOCOLS = {"val": "held-out val split, best epoch tested",
             "paper": "whole train set, final epoch tested"}
# Written into metrics.json by newer runs (percent); older records lack them (-> NaN).
GENUS_METRICS = ["test_genus_top1", "test_within_genus_top1", "test_errors_in_genus",
                 "genus_only_top1", "chance_top1"]
GROUP = ["profile", "protocol", "dataset", "overrides"]   # runs that can be compared
ARM = GROUP + ["method", "variant"]                        # one row of a table
BASELINE = ("baseline", "full")
CONFIDENCE = 0.95
CI_NOTE = ("95 % confidence intervals are t intervals over seeds (scipy.stats.t, n - 1 degrees "
           "of freedom); differences are paired by seed (only the seeds both rows ran); one "
           "seed gives no interval (blank).")


# --------------------------------------------------------------------------- records

def did_not_learn(top1, num_classes):
    """True where a top-1 (percent) is at most twice chance (100 / num_classes): the run did not
    learn. Elementwise on pandas columns; unknown values (NaN) count as learned."""
    chance = 100.0 / pd.to_numeric(num_classes, errors="coerce")
    return pd.to_numeric(top1, errors="coerce") <= 2 * chance


def overrides_label(overrides: dict | None) -> str:
    """A run's overrides other than `protocol`, as one canonical string ("none" if empty)."""
    over = {k: v for k, v in (overrides or {}).items() if k != "protocol"}
    if not over:
        return "none"
    return "; ".join(f"{k}={json.dumps(v, sort_keys=True)}" for k, v in sorted(over.items()))


def load_runs(root: str | Path | None = None) -> pd.DataFrame:
    """One row per complete run: its identity, settings that matter, and its metrics.

    A run is complete when its metrics.json and config.json hold the same config hash (a
    config.json rewritten for other settings after metrics.json was written describes another
    run: such a folder is left out). `protocol` comes from config.json ("val" where the key is missing: older records);
    `overrides` is :func:`overrides_label` of the run's overrides."""
    root = Path(root) if root else results_dir()
    rows = []
    for mpath in sorted((root / "runs").glob("*/metrics.json")):
        metrics = json.loads(mpath.read_text())
        cfg = json.loads((mpath.parent / "config.json").read_text())
        if metrics.get("config_hash") != cfg.get("config_hash"):
            continue
        rows.append({**metrics, "protocol": cfg.get("protocol") or metrics.get("protocol") or "val",
                     "overrides": overrides_label(cfg.get("overrides")),
                     "backbone": cfg["model"]["backbone"],
                     "crop": cfg["data"]["crop"], "epochs_cfg": cfg["train"]["epochs"],
                     "final_train_top1": final_train_top1(mpath.parent),
                     "run_dir": str(mpath.parent.relative_to(root))})
    runs = pd.DataFrame(rows)
    if not runs.empty:
        # A run whose last epoch's training top-1 (of the predicting head) is at most twice
        # chance has not fitted its training data: a comparison with it measures the
        # optimisation setting (e.g. a diverged lr), not the method. Its claims are "not tested".
        runs["learned"] = ~did_not_learn(runs["final_train_top1"], runs.get("num_classes", np.nan))
    return runs


def attach_correct(runs: pd.DataFrame, root: str | Path, split: str = "test") -> pd.DataFrame:
    """`runs` (:func:`load_runs` of `root`) with a column `correct`: per run, 1.0 / 0.0 per
    image of `split` from its predictions.json (None where the run recorded none)."""
    runs = runs.copy()
    runs["correct"] = [predictions.correct(Path(root) / d, split) for d in runs["run_dir"]]
    return runs


SETTING_IGNORES = ("run_id", "config_hash", "seed", "overrides", "machine", "data_root")
LABELLED = (("data", "synth"), ("train", "lr"), ("train", "head_lr"))   # what a label names


def _digest(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:6]


def setting_key(cfg: dict, length: bool = True) -> str:
    """A short hash of a run's config without its seed and bookkeeping (and without its length,
    train.epochs, where `length` is False): runs with one key differ only in seed (and length)."""
    keep = {k: v for k, v in cfg.items() if k not in SETTING_IGNORES}
    drop = ("num_workers",) if length else ("num_workers", "epochs")
    keep["train"] = {k: v for k, v in keep.get("train", {}).items() if k not in drop}
    return _digest(keep)


def data_key(cfg: dict) -> str:
    """A short hash of what two arms must share for a paired comparison: dataset, data
    settings and length."""
    return _digest([cfg.get("dataset"), cfg.get("data"), cfg.get("train", {}).get("epochs")])


def setting_label(cfg: dict, today: dict) -> str:
    """What of a run's SynthBirds spec and lrs differs from `today` (the profile's config for
    that method now): "part_scale=1.0, lr=0.16"; "profile" where nothing of them does."""
    out = []
    for section, key in LABELLED:
        mine, now = cfg.get(section, {}).get(key), today.get(section, {}).get(key)
        if isinstance(mine, dict) or isinstance(now, dict):
            mine, now = mine or {}, now or {}
            out += [f"{k}={mine.get(k, 'default')}" for k in sorted(set(mine) | set(now))
                    if mine.get(k) != now.get(k)]
        elif mine != now:
            out.append(f"{key}={mine:g}" if isinstance(mine, (int, float)) else f"{key}={mine}")
    return ", ".join(out) or "profile"


def attach_settings(runs: pd.DataFrame, root: str | Path, length: bool = True) -> pd.DataFrame:
    """`runs` (:func:`load_runs` of `root`) with `setting` (:func:`setting_key`), `data_key`
    and `setting_label` (:func:`setting_label` against each run's profile today)."""
    from fgvc.study.config import resolve

    cfgs = [json.loads((Path(root) / d / "config.json").read_text()) for d in runs["run_dir"]]
    today: dict[tuple, dict] = {}
    for c in cfgs:
        key = (c["method"], c["profile"], c["dataset"])
        if key not in today:
            try:
                today[key] = resolve(c["method"], profile=c["profile"], dataset=c["dataset"])
            except (ValueError, KeyError, FileNotFoundError, TypeError):  # a profile or method gone
                today[key] = {}
    return runs.assign(setting=[setting_key(c, length) for c in cfgs],
                       data_key=[data_key(c) for c in cfgs],
                       setting_label=[setting_label(c, today[(c["method"], c["profile"], c["dataset"])])
                                      for c in cfgs])


def load_no_harm(root: str | Path | None = None) -> pd.DataFrame | None:
    """The study's no-harm table, `<root>/tables/no_harm.csv` (python -m fgvc.study.no_harm
    --out <root>/tables), or None where the records have none."""
    path = Path(root or results_dir()) / "tables" / "no_harm.csv"
    return pd.read_csv(path) if path.is_file() else None


def final_train_top1(run_dir: Path) -> float | None:
    """The last epoch's training top-1 (%) of the predicting head (history.csv `train_top1`)."""
    path = Path(run_dir) / "history.csv"
    if not path.is_file():
        return None
    hist = pd.read_csv(path)
    return float(hist["train_top1"].iloc[-1]) if "train_top1" in hist and len(hist) else None


def load_failures(root: str | Path | None = None) -> dict[str, str]:
    """{run_id: error} from results/failures.json ({} if there is none)."""
    path = (Path(root) if root else results_dir()) / "failures.json"
    if not path.is_file():
        return {}
    raw = json.loads(path.read_text() or "{}")
    return {k: (v.get("error", "") if isinstance(v, dict) else str(v)) for k, v in raw.items()}


def _prepare(runs: pd.DataFrame) -> pd.DataFrame:
    runs = runs.copy()
    for col, default in (("protocol", "val"), ("overrides", "none")):
        runs[col] = runs[col].fillna(default) if col in runs else default
    return runs


def _method_rank(method: str) -> tuple:
    return method_rank(method)  # display order: fgvc.methods.list_methods


def _variant_rank(method: str, variant: str) -> int:
    """`full` first, then the order of the method's variants file."""
    if variant == "full":
        return -1
    order = list(load_variants(method))
    return order.index(variant) if variant in order else 99


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    if df.empty:
        return df.reset_index(drop=True)
    key = [(*(r[k] for k in GROUP), _method_rank(r["method"]), _variant_rank(r["method"], r["variant"]),
            r["variant"]) for _, r in df.iterrows()]
    order = sorted(range(len(df)), key=lambda i: key[i])
    return df.iloc[order].reset_index(drop=True)


# --------------------------------------------------------------------------- paper numbers

def paper_number(method: str, variant: str, dataset: str) -> float | None:
    """The paper's top-1 for a variant on a paper dataset (cub | cars | aircraft), or None."""
    value = (load_variants(method).get(variant, {}).get("paper") or {}).get(dataset)
    return None if value is None else float(value)


def paper_baseline(method: str, dataset: str) -> tuple[float | None, str]:
    """The plain-backbone number a method's paper compares itself with, and where it is from.

    In order: a `paper_baseline: {cub: ..}` mapping in the method's `full` variant; the
    "plain ResNet-50 row ...: CUB x, Cars y, Aircraft z" sentence of that variant's note
    (lafe's Table 4); else the `baseline` method's own paper number (baseline.yaml `full`).
    """
    full = load_variants(method).get("full", {}) if method != "baseline" else {}
    given = (full.get("paper_baseline") or {}).get(dataset)
    if given is not None:
        return float(given), f"{method}.yaml full paper_baseline"
    m = re.search(r"plain ResNet-50 row[^:]*:(.*)", str(full.get("note") or ""), re.S)
    if m:
        short = {DATASETS[d].short: d for d in paper_datasets() if DATASETS[d].short}  # "CUB" -> "cub"
        words = "|".join(re.escape(w) for w in short)
        found = {short[k]: float(v) for k, v in re.findall(rf"\b({words})\s+(\d+(?:\.\d+)?)", m.group(1))} \
            if short else {}
        if dataset in found:
            return found[dataset], f"{method}.yaml full note (plain ResNet-50 row)"
    value = paper_number(*BASELINE, dataset)
    return value, ("baseline.yaml full" if value is not None else "")


def reference(method: str, variant: str) -> tuple[str, str] | None:
    """What a row is compared with: a method's `full` with the baseline's `full`, any other
    row with its method's `full`; the baseline's `full` with nothing."""
    if (method, variant) == BASELINE:
        return None
    return BASELINE if variant == "full" else (method, "full")


def _paper_pair(method: str, variant: str, dataset: str) -> tuple[float, float, str]:
    """(the paper's number for the row, for its reference, the reference's source)."""
    ref = reference(method, variant)
    pds = paper_dataset(dataset)
    own = paper_number(method, variant, pds)
    if ref is None:
        return _nan(own), math.nan, ""
    if ref == BASELINE:
        value, source = paper_baseline(method, pds)
    else:
        value, source = paper_number(*ref, pds), f"{method}.yaml full"
    return _nan(own), _nan(value), source if value is not None else ""


def _nan(x) -> float:
    return math.nan if x is None else float(x)


# --------------------------------------------------------------------------- statistics

def _by_seed(g: pd.DataFrame, metric: str) -> dict[int, float]:
    """{seed: value} of one row's runs (the mean where a seed was run twice)."""
    g = pd.DataFrame({"seed": g["seed"], "v": pd.to_numeric(g[metric], errors="coerce")}).dropna()
    return {int(s): float(v) for s, v in g.groupby("seed")["v"].mean().items()}


def _interval_cols(values, prefix: str = "", confidence: float = CONFIDENCE) -> dict:
    nan = math.nan
    if len(values) == 0:
        return {f"{prefix}mean": nan, f"{prefix}std": nan, f"{prefix}n": 0,
                f"{prefix}ci_low": nan, f"{prefix}ci_high": nan, f"{prefix}half_width": nan}
    iv = t_interval(list(values), confidence)
    return {f"{prefix}mean": iv.mean, f"{prefix}std": iv.std, f"{prefix}n": iv.n,
            f"{prefix}ci_low": iv.lo, f"{prefix}ci_high": iv.hi, f"{prefix}half_width": iv.half_width}


def _paired_cols(a: dict, b: dict, confidence: float = CONFIDENCE) -> dict:
    """Paired difference a - b over common seeds: diff_mean, diff_std, diff_ci_low,
    diff_ci_high, diff_half_width, n_pairs (0 and NaN without common seeds)."""
    common = sorted(set(a) & set(b))
    if not common:
        cols = _interval_cols([], "diff_")
    else:
        iv = paired_difference(a, b, confidence)
        cols = {"diff_mean": iv.mean, "diff_std": iv.std, "diff_n": iv.n, "diff_ci_low": iv.lo,
                "diff_ci_high": iv.hi, "diff_half_width": iv.half_width}
    cols["n_pairs"] = cols.pop("diff_n")
    return cols


ARM_COLUMNS = (ARM + ["metric", "mean", "std", "n", "ci_low", "ci_high", "half_width",
                      "paper_dataset", "paper", "ref", "paper_ref", "paper_ref_source", "paper_diff",
                      "diff_mean", "diff_std", "diff_ci_low", "diff_ci_high", "diff_half_width",
                      "n_pairs"]
               + [f"{m}_{s}" for m in GENUS_METRICS for s in ("mean", "std", "n")])


def _typed(df: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Columns in order; every column that is not text is float or int."""
    df = df.reindex(columns=columns)
    text = {"profile", "protocol", "dataset", "overrides", "method", "variant", "metric",
            "paper_dataset", "ref", "paper_ref_source", "paper_source", "claim", "kind", "arm",
            "against", "verdict", "reason", "component", "paper_gain_detectable", "adaptation"}
    for c in df.columns:
        if c in text:
            df[c] = df[c].astype(object)
        elif c.endswith("_n") or c in ("n", "n_pairs", "n_arm", "n_against"):
            df[c] = pd.to_numeric(df[c]).fillna(0).astype("int64")
        else:
            df[c] = pd.to_numeric(df[c]).astype("float64")
    return df


def arm_table(runs: pd.DataFrame, metric: str = "test_top1",
              confidence: float = CONFIDENCE) -> pd.DataFrame:
    """The tidy accuracy table (``accuracy.csv``): one row per (profile, protocol, dataset,
    overrides, method, variant) of `runs` (:func:`load_runs`; needs a `seed` column).

    mean / std (ddof 1) / n / ci_low / ci_high / half_width: `metric` over seeds, a t interval
    (NaN with one seed). paper: the paper's number for the row on `paper_dataset` (CUB's for
    SynthBirds). ref: the row it is compared with (``baseline/full`` for a method's full, the
    method's ``full`` for an ablation row); paper_ref: the paper's number for that reference
    (for a method's full: the paper's own baseline, see :func:`paper_baseline`); paper_diff =
    paper - paper_ref; diff_*: our paired difference row - ref over the seeds both ran (n_pairs).
    <genus metric>_mean / _std / _n: the genus metrics where the records have them.
    """
    if runs.empty or metric not in runs:
        return _typed(pd.DataFrame(columns=ARM_COLUMNS), ARM_COLUMNS)
    runs = _prepare(runs)
    if "seed" not in runs:
        raise ValueError("arm_table needs each run's seed (a `seed` column)")
    arms = {key: g for key, g in runs.groupby(ARM, sort=False, dropna=False)}
    rows = []
    for key, g in arms.items():
        row = dict(zip(ARM, key))
        method, variant, dataset = row["method"], row["variant"], row["dataset"]
        seeds = _by_seed(g, metric)
        if not seeds:
            continue
        row.update(metric=metric, **_interval_cols(list(seeds.values()), "", confidence))
        paper, paper_ref, source = _paper_pair(method, variant, dataset)
        ref = reference(method, variant)
        row.update(paper_dataset=paper_dataset(dataset), paper=paper,
                   ref="/".join(ref) if ref else "", paper_ref=paper_ref, paper_ref_source=source,
                   paper_diff=paper - paper_ref)
        ref_runs = arms.get((*key[:len(GROUP)], *ref)) if ref else None
        row.update(_paired_cols(seeds, _by_seed(ref_runs, metric) if ref_runs is not None else {},
                                confidence))
        for m in GENUS_METRICS:
            vals = list(_by_seed(g, m).values()) if m in g else []
            iv = _interval_cols(vals, "", confidence)
            row.update({f"{m}_mean": iv["mean"], f"{m}_std": iv["std"], f"{m}_n": iv["n"]})
        rows.append(row)
    return _typed(_sorted(pd.DataFrame(rows, columns=ARM_COLUMNS)), ARM_COLUMNS)


# --------------------------------------------------------------------------- claims

CLAIM_COLUMNS = GROUP + ["method", "kind", "claim", "arm", "against", "paper_dataset",
                         "paper_arm", "paper_against", "paper_gain", "paper_source",
                         "diff_mean", "diff_std", "ci_low", "ci_high", "half_width", "n_pairs",
                         "n_arm", "n_against", "mdd", "paper_gain_detectable", "boot_low",
                         "boot_high", "adaptation", "verdict", "reason"]


def _variants_methods() -> list[str]:
    found = [p.stem for p in (CONFIGS / "variants").glob("*.yaml")]
    return sorted(found, key=_method_rank)


def _failure_for(failures: dict[str, str], group: dict, method: str, variant: str) -> str | None:
    """The error of a failed run of (method, variant) in `group`, if results/failures.json has one."""
    pattern = re.compile(re.escape(f"{group['profile']}-{group['dataset']}-{method}-{variant}-s")
                         + (r"\d+$" if group["overrides"] == "none" else r"\d+-[0-9a-f]{6}$"))
    errors = [e for rid, e in sorted(failures.items()) if pattern.match(rid)]
    return errors[0] if errors else None


def _not_run_reason(failures, group, missing: list[tuple[str, str]]) -> str:
    parts = []
    for method, variant in missing:
        err = _failure_for(failures, group, method, variant)
        name = f"{method}/{variant}"
        if err and "no place" in err.lower():
            first = err.strip().splitlines()[-1] if err.strip() else err
            parts.append(f"a component with no place on the backbone ({name}: {first[:160]})")
        elif err:
            parts.append(f"row not run: {name} failed ({err.strip().splitlines()[-1][:160]})")
        else:
            parts.append(f"row not run: {name}")
    return "; ".join(parts)


def _claims_of(method: str) -> list[str]:
    """The variants whose claims a method makes: `full` (beats the baseline) unless it is the
    baseline, then each ablation row (full beats the row)."""
    rows = [v for v in load_variants(method) if v != "full"]
    return rows if method == "baseline" else ["full"] + rows


def _claim(method: str, variant: str, pds: str) -> dict:
    """What (method, variant) claims on paper dataset `pds`: arm, against, kind, claim and the
    paper's numbers for both arms with their source ("" where either number is missing)."""
    paper_arm = paper_number(method, "full", pds)
    if variant == "full":
        against, kind, claim = BASELINE, "beats baseline", f"{method} full beats baseline full"
        paper_against, source = paper_baseline(method, pds)
        source = f"{method}.yaml full - {source}" if source else ""
    else:
        against = (method, variant)
        if load_variants(method)[variant].get("paper"):
            kind = "component helps"
            claim = f"{method}: what {variant} removes helps (full beats {variant})"
        else:   # a row of ours (an earlier default), not one of the paper's
            kind = "beats diagnostic row"
            claim = f"{method}: full beats the diagnostic row {variant}"
        paper_against = paper_number(method, variant, pds)
        source = f"{method}.yaml full - {variant}"
    if paper_arm is None or paper_against is None:
        source = ""
    return {"arm": (method, "full"), "against": against, "kind": kind, "claim": claim,
            "paper_arm": _nan(paper_arm), "paper_against": _nan(paper_against),
            "paper_source": source}


def detectable(paper_gain: float, min_detectable: float) -> str:
    """Whether a paper's gain (points) was detectable here: "yes" where its size is at least
    the minimum detectable difference, "no" where it is below, "" where either is unknown."""
    if math.isnan(paper_gain) or math.isnan(min_detectable):
        return ""
    return "yes" if abs(paper_gain) >= min_detectable else "no"


def _bootstrap_cols(a: pd.DataFrame | None, b: pd.DataFrame | None,
                    confidence: float) -> tuple[float, float]:
    """Paired bootstrap interval over seeds and images (fgvc.study.stats.paired_bootstrap) of
    arm `a` - arm `b` from their runs' `correct` columns; NaN unless both arms have per-image
    predictions of the same images on at least two common seeds."""
    nan = (math.nan, math.nan)
    if a is None or b is None or "correct" not in a or "correct" not in b:
        return nan
    ca = {int(s): c for s, c in zip(a["seed"], a["correct"]) if isinstance(c, np.ndarray)}
    cb = {int(s): c for s, c in zip(b["seed"], b["correct"]) if isinstance(c, np.ndarray)}
    common = sorted(set(ca) & set(cb))
    if len(common) < 2 or any(len(ca[s]) != len(cb[s]) for s in common):
        return nan
    return paired_bootstrap([np.stack([ca[s], cb[s]], 1) for s in common], confidence=confidence)


def claims_table(runs: pd.DataFrame, failures: dict[str, str] | None = None,
                 methods: list[str] | None = None, metric: str = "test_top1",
                 confidence: float = CONFIDENCE, no_harm: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every claim the study can test, per (profile, protocol, dataset, overrides) of `runs`:

    * kind ``beats baseline``: a method's `full` beats the baseline's `full`;
      diff = method full - baseline full, paper_gain = the paper's full - its own baseline.
    * kind ``component helps``: what an ablation row removes helps, i.e. `full` beats the row;
      diff = full - row, paper_gain = the paper's full - the paper's row. A row without
      paper numbers (a diagnostic row of ours) gives kind ``beats diagnostic row``.

    diff_* is paired by seed (common seeds only), with a t interval. mdd: the minimum detectable
    difference of that paired t-test (alpha 0.05, power 0.8; fgvc.study.stats.mdd) at the
    claim's seeds and measured sd; paper_gain_detectable (:func:`detectable`): whether the
    paper's own gain is at least the mdd. boot_low / boot_high: a paired bootstrap over seeds
    and images where `runs` has per-image predictions (a `correct` column,
    :func:`attach_correct`). adaptation: "ok", or "failed: <why>" where `no_harm` (the study's
    no-harm table, :func:`load_no_harm`) says an arm's transplant harmed the backbone
    (fgvc.study.verdicts.adaptation_failures); "" without a table. verdict and reason:
    :func:`fgvc.study.verdicts.claim_verdict` (``supported``, ``contradicted``, ``not
    distinguishable``, or ``not tested`` with the reason: one seed only, no common seeds, row
    not run, a component with no place on the backbone, from results/failures.json; a failed
    adaptation; a run of either arm that did not learn: final train top-1 <= 2 x chance,
    column `learned` of :func:`load_runs`).
    `methods`: default, every method with a variants file plus any other in `runs`.
    """
    runs = _prepare(runs) if not runs.empty else runs
    if runs.empty or metric not in runs:
        return _typed(pd.DataFrame(columns=CLAIM_COLUMNS), CLAIM_COLUMNS)
    failures = failures or {}
    failed = adaptation_failures(no_harm) if no_harm is not None else None
    if methods is None:
        methods = _variants_methods()
        methods += sorted(set(runs["method"]) - set(methods), key=_method_rank)
    rows = []
    for gkey, g in runs.groupby(GROUP, sort=True, dropna=False):
        group = dict(zip(GROUP, gkey))
        arm_runs = {(m, v): a for (m, v), a in g.groupby(["method", "variant"])}
        seeds = {k: _by_seed(a, metric) for k, a in arm_runs.items()}
        not_learned = ({(m, v): int((~a["learned"].astype(bool)).sum())
                        for (m, v), a in g.groupby(["method", "variant"])}
                       if "learned" in g else {})
        pds = claims_dataset(group["dataset"])
        for method in methods:
            for variant in _claims_of(method):
                c = _claim(method, variant, pds)
                arm, against = c.pop("arm"), c.pop("against")
                row = {**group, "method": method, **c, "arm": "/".join(arm),
                       "against": "/".join(against), "paper_dataset": pds,
                       "paper_gain": c["paper_arm"] - c["paper_against"]}
                a, b = seeds.get(arm, {}), seeds.get(against, {})
                pc = _paired_cols(a, b, confidence)
                row.update(n_arm=len(a), n_against=len(b), diff_mean=pc["diff_mean"],
                           diff_std=pc["diff_std"], ci_low=pc["diff_ci_low"],
                           ci_high=pc["diff_ci_high"], half_width=pc["diff_half_width"],
                           n_pairs=pc["n_pairs"])
                row["mdd"] = mdd(pc["diff_std"], pc["n_pairs"])
                row["paper_gain_detectable"] = detectable(row["paper_gain"], row["mdd"])
                row["boot_low"], row["boot_high"] = _bootstrap_cols(
                    arm_runs.get(arm), arm_runs.get(against), confidence)
                bad = [failed[x] for x in (arm, against) if failed and x in failed]
                row["adaptation"] = ("" if failed is None else
                                     "failed: " + "; ".join(bad) if bad else "ok")
                missing = [x for x in (arm, against) if not seeds.get(x)]
                unlearned = [f"{m}/{v} ({n} of {len(seeds.get((m, v), {}))} seeds)"
                             for m, v in (arm, against) if (n := not_learned.get((m, v), 0))]
                row.update(claim_verdict(
                    pc["n_pairs"], pc["diff_ci_low"], pc["diff_ci_high"],
                    not_run=_not_run_reason(failures, group, missing) if missing else "",
                    adaptation="; ".join(bad), not_learned=unlearned)._asdict())
                rows.append(row)
    return _typed(pd.DataFrame(rows, columns=CLAIM_COLUMNS), CLAIM_COLUMNS)


# --------------------------------------------------------------------------- histories

def load_histories(runs: pd.DataFrame, root: str | Path | None = None) -> pd.DataFrame:
    """Every run's history.csv, long: the run's (profile, protocol, dataset, overrides, method,
    variant, seed, run_id) and the history's columns (epoch, train_loss, train_top1, val_top1, ...;
    protocol "paper" runs have no val columns). Runs without a history are left out."""
    root = Path(root) if root else results_dir()
    if runs.empty:
        return pd.DataFrame(columns=ARM + ["seed", "run_id", "epoch"])
    runs = _prepare(runs)
    frames = []
    for _, r in runs.iterrows():
        path = root / r["run_dir"] / "history.csv"
        if not path.is_file() or path.stat().st_size == 0:
            continue
        h = pd.read_csv(path)
        for k in ARM + ["seed", "run_id"]:
            h[k] = r[k]
        frames.append(h)
    if not frames:
        return pd.DataFrame(columns=ARM + ["seed", "run_id", "epoch"])
    return pd.concat(frames, ignore_index=True)


# --------------------------------------------------------------------------- markdown

def protocol_text(protocol: str) -> str:
    return f"`{protocol}` ({PROTOCOLS.get(protocol, 'unknown protocol')})"


def _header(group: dict) -> str:
    over = "" if group.get("overrides", "none") == "none" else f", overrides `{group['overrides']}`"
    return f"profile `{group['profile']}`, protocol {protocol_text(group['protocol'])}{over}"


def _md(df: pd.DataFrame, digits: int = 2) -> str:
    """DataFrame.to_markdown with `digits` decimals and NaN as a blank cell."""
    df = df.astype(object).where(df.notna(), None)
    return df.to_markdown(index=False, floatfmt=f".{digits}f", missingval="") + "\n"


def _sections(df: pd.DataFrame, keys: list[str]):
    """(group dict, rows) per (profile, protocol, overrides) of a tidy table."""
    for gkey, g in df.groupby(keys, sort=False, dropna=False):
        yield dict(zip(keys, gkey)), g


ACC_MD = ["dataset", "method", "variant", "n", "mean", "std", "ci_low", "ci_high", "half_width",
          "paper", "ref", "n_pairs", "diff_mean", "diff_ci_low", "diff_ci_high", "diff_half_width",
          "paper_diff"]


def accuracy_markdown(arms: pd.DataFrame, title: str = "Test top-1 (%) over seeds") -> str:
    """accuracy.md from :func:`arm_table`: one table per (profile, protocol, overrides), then
    the genus metrics (where the records have them)."""
    out = [f"# {title}\n", CI_NOTE + " `paper`: the paper's number (CUB's on SynthBirds); "
           "`diff`: this row minus `ref` (ours, paired); `paper_diff`: the same difference in the "
           "paper (a method's full against the paper's own baseline).\n"]
    if arms.empty:
        return "\n".join(out + ["No complete runs.\n"])
    keys = ["profile", "protocol", "overrides"]
    for group, g in _sections(arms, keys):
        out.append(f"## {_header(group)}\n")
        out.append(_md(g[ACC_MD]))
    genus = [m for m in GENUS_METRICS if arms[f"{m}_n"].sum() > 0]
    out.append("## Genus metrics (%, mean ± std over seeds)\n")
    if not genus:
        out.append("The run records hold no genus metrics (older records).\n")
        return "\n".join(out)
    for group, g in _sections(arms, keys):
        cols = ["dataset", "method", "variant"] + [f"{m}_{s}" for m in genus for s in ("mean", "std", "n")]
        out.append(f"### {_header(group)}\n")
        out.append(_md(g[cols]))
    return "\n".join(out)


CLAIM_MD = ["dataset", "claim", "paper_gain", "diff_mean", "ci_low", "ci_high", "half_width",
            "n_pairs", "mdd", "paper_gain_detectable", "verdict", "reason"]


def claims_markdown(claims: pd.DataFrame) -> str:
    """claims.md from :func:`claims_table`: one table per (profile, protocol, overrides)."""
    out = ["# Claims of the papers, tested on our runs\n",
           "Each method's `full` against the baseline's `full`, and each ablation row's component "
           "(`full` minus the row: the component the row removes should help). `paper_gain`: the "
           "paper's own gain (CUB's numbers on SynthBirds); `diff_mean`: ours, test top-1 points. "
           + CI_NOTE + " `mdd`: the minimum detectable difference of that paired t-test (two-sided, "
           "alpha 0.05, power 0.8: (t(0.975, n-1) + t(0.8, n-1)) x sd / sqrt(n)); "
           "`paper_gain_detectable`: whether the paper's gain is at least the mdd (\"no\": a "
           "verdict of `not distinguishable` cannot refute it). Verdict: `supported` (CI above "
           "0), `contradicted` (CI below 0), `not distinguishable` (CI holds 0), `not tested` "
           "(reason given: an arm not run, an adaptation that failed the no-harm check, a run "
           "that did not learn, too few seeds). Written by the report from the run records.\n"]
    if claims.empty:
        return "\n".join(out + ["No complete runs.\n"])
    for group, g in _sections(claims, ["profile", "protocol", "overrides"]):
        counts = g["verdict"].value_counts()
        out.append(f"## {_header(group)}\n")
        out.append(", ".join(f"{k}: {v}" for k, v in counts.items()) + "\n")
        out.append(_md(g[CLAIM_MD]))
    return "\n".join(out)


def ablation_markdown(tab: pd.DataFrame, method: str) -> str:
    out = [f"# {method}: ablation rows (test top-1 %)\n", CI_NOTE + " `diff`: the row minus "
           "the method's `full` (ours, paired); `paper_diff`: the same in the paper.\n"]
    if tab.empty:
        return "\n".join(out + ["No complete runs.\n"])
    for group, g in _sections(tab, ["profile", "protocol", "overrides"]):
        out.append(f"## {_header(group)}\n")
        out.append(_md(g[[c for c in ACC_MD if c != "method"]]))
    return "\n".join(out)


# --------------------------------------------------------------------------- older views

def summarize(runs: pd.DataFrame, metric: str = "test_top1") -> pd.DataFrame:
    """Mean, std and n over seeds per (profile, [protocol, overrides,] dataset, method,
    variant), with paper numbers (std 0 for one seed: a plotting convenience; the tidy tables
    use :func:`arm_table`, whose std is NaN then)."""
    if runs.empty:
        return pd.DataFrame(columns=["profile", "protocol", "dataset", "method", "variant", "mean",
                                     "std", "n", "paper"])
    keys = [k for k in ("profile", "protocol", "overrides", "dataset", "method", "variant")
            if k in runs]
    g = runs.groupby(keys)[metric]
    out = g.agg(["mean", "std", "count"]).rename(columns={"count": "n"}).reset_index()
    out["std"] = out["std"].fillna(0.0)
    out["paper"] = [paper_number(m, v, paper_dataset(d))
                    for m, v, d in zip(out["method"], out["variant"], out["dataset"])]
    return out


def _fmt(mean: float, std: float, n: int) -> str:
    return f"{mean:.1f} ± {std:.1f} (n={n})"


def accuracy_table(runs: pd.DataFrame, variant: str = "full") -> pd.DataFrame:
    """An overview for reading, not a tidy table: methods x datasets, our test top-1 as text
    "mean ± std (n seeds)" beside each paper's CUB/Cars/Aircraft number. On SynthBirds the
    paper column shows the paper's CUB number. The tidy table is :func:`arm_table`."""
    s = summarize(runs)
    s = s[s["variant"] == variant]
    table = {}
    for (method, dataset), row in s.set_index(["method", "dataset"]).iterrows():
        name = display_name(dataset)
        table.setdefault(method, {})[f"{name} (ours)"] = _fmt(row["mean"], row["std"], row["n"])
    papers = {m: {f"paper {display_name(d)}": paper_number(m, variant, d)
                  for d in paper_datasets()} for m in table}
    df = pd.DataFrame({m: {**table[m], **papers[m]} for m in table}).T
    df.index.name = "method"
    return df.loc[sorted(df.index, key=_method_rank)]


def ablation_table(runs: pd.DataFrame, method: str) -> pd.DataFrame:
    """A method's rows of :func:`arm_table` (tidy; `full` first, then the variants file's order)."""
    arms = arm_table(runs)
    return arms[arms["method"] == method].reset_index(drop=True)


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub table, every value as str() (NaN blank); a named index becomes a column. For
    the other notebooks' tables; the tidy tables here use DataFrame.to_markdown."""
    df = df.reset_index() if df.index.name else df
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join("" if pd.isna(v) else str(v) for v in row) + " |")
    return "\n".join(lines) + "\n"
