"""No harm at step 0, measured: a linear probe on what enters each method's classifier at
initialisation, against the same probe on the baseline's features (DESIGN.md, "Transplanting").

    python -m fgvc.study.no_harm [--profile transfer] [--methods ma_ea,...] [--variants pool,...]
                                 [--images 800] [--seed 0] [--out DIR]
    python -m fgvc.study.no_harm parts --runs RESULTS_ROOT [--out DIR]

Step 0 (the default command): for every (method, variant) of the profile's study grid, the model
is built as a run of that profile builds it (the resolved config, the profile's backbone weights
and input size; seeded with --seed before construction, as fgvc.study.run does), put in eval mode,
and `Method.features(x)` (exactly the input of the layer that computes the test-time logits) is
extracted for a fixed, stratified, seeded set of images from the dataset's official train split
under the eval transform. A multinomial logistic regression (`fit_probe`: standardized features,
L2 strength chosen by stratified k-fold cross-validation on the fit part) is fitted on one part
and scored (top-1 %) on the other. A transplant harms (:func:`harms`) when its probe falls more
than `tol` points below the baseline's. Also measured on every row: the input of the first
BatchNorm after the stem pooling's place (`first_bn_after_pool`: Lite0's block 1, where ma_ea's
`pool` graft goes), as the shift of its per-channel mean in units of the layer's running std.
A variant whose configs/variants entry has `not_applicable: "<reason>"` is listed with its reason.

Parts (after training): for finished runs with a `best.pt` checkpoint, each method's own learned
gates / scales (parameters named like gate, scale, alpha, gamma outside the backbone and
BatchNorms; "none" where a method has none) and, where the method has a switch that removes a
branch at test time (ma_ea: its MA blocks; focus: the hybrid head, use_hybrid), the test top-1
with that branch removed beside the full model's.

Writes no_harm.md + no_harm.csv (parts.md + parts.csv) into --out; the maintainers' copy goes to
results/readings/no_harm/.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from fgvc.data import ImageDataset, build_transforms
from fgvc.engine import seed_everything
from fgvc.methods import create_method
from fgvc.methods.base import Method
from fgvc.paths import SCRATCH, portable
from fgvc.study.config import load_variants, resolve
from fgvc.study.grid import plan
from fgvc.study.run import REPLACED, build_data_for, load_trained
from fgvc.study.verdicts import NO_HARM_TOL

DEFAULT_OUT = SCRATCH / "no_harm"  # the maintainers' copy: results/readings/no_harm/
LAMBDAS = (1e-3, 1e-2, 1e-1, 1.0, 10.0)   # L2 strengths the cross-validation chooses from
TOL = NO_HARM_TOL                          # points of probe top-1 below the baseline's = harm


# ----------------------------------------------------------------------------- the probe
def harms(probe: float, baseline_probe: float, tol: float = TOL) -> bool:
    """The rule: a method's step-0 features harm what the backbone knows when their probe top-1
    (%) is more than `tol` points below the baseline's on the same images."""
    return probe < baseline_probe - tol


def stratified_folds(y: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold index (0..k-1) of each sample: each class dealt round-robin after a seeded shuffle."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(y), dtype=int)
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        fold[idx] = np.arange(len(idx)) % k
    return fold


def _fit_logreg(z: torch.Tensor, y: torch.Tensor, k: int, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression by L-BFGS: mean CE + lam * ||W||^2 (bias free)."""
    w = torch.zeros(z.shape[1], k, dtype=z.dtype, requires_grad=True)
    b = torch.zeros(k, dtype=z.dtype, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=500, tolerance_grad=1e-9,
                            tolerance_change=1e-12, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(z @ w + b, y) + lam * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def _top1(z: torch.Tensor, y: torch.Tensor, wb: tuple[torch.Tensor, torch.Tensor]) -> float:
    return 100.0 * ((z @ wb[0] + wb[1]).argmax(1) == y).double().mean().item()


def fit_probe(x_fit: np.ndarray, y_fit: np.ndarray, x_score: np.ndarray, y_score: np.ndarray,
              lambdas: tuple[float, ...] = LAMBDAS, folds: int = 4, seed: int = 0) -> dict:
    """Top-1 (%) on the score part of a linear probe fitted on the fit part.

    Features are standardized with the fit part's mean and std (a constant feature becomes 0).
    The L2 strength is the one of `lambdas` with the best mean top-1 over `folds` stratified
    folds of the fit part (ties: the stronger). An L2-penalised linear model's optimum lies in
    the span of its training rows, so the fit works in the coordinates of that span (an SVD
    of the fit part): exact, and cheap for features wider than the sample count (pcanet's
    40,960). Returns {"top1", "lam", "cv_top1"}.
    """
    mean, std = x_fit.mean(0), x_fit.std(0)
    std[std < 1e-12] = 1.0
    xf = torch.from_numpy((x_fit - mean) / std).double()
    xs = torch.from_numpy((x_score - mean) / std).double()
    _, s, vh = torch.linalg.svd(xf, full_matrices=False)
    v = vh[s > s[0] * 1e-9].T                                # (D, r), r <= n_fit
    zf, zs = xf @ v, xs @ v                                  # (n, r): same dot products as x
    classes = np.unique(y_fit)
    yf = torch.from_numpy(np.searchsorted(classes, y_fit))
    ys = torch.from_numpy(np.searchsorted(classes, y_score)) if set(y_score) <= set(classes) else None
    k = len(classes)
    fold = stratified_folds(y_fit, folds, seed)
    cv = {}
    for lam in lambdas:
        accs = []
        for f in range(folds):
            tr, te = torch.from_numpy(fold != f), torch.from_numpy(fold == f)
            accs.append(_top1(zf[te], yf[te], _fit_logreg(zf[tr], yf[tr], k, lam)))
        cv[lam] = float(np.mean(accs))
    lam = max(lambdas, key=lambda l: (cv[l], l))
    wb = _fit_logreg(zf, yf, k, lam)
    if ys is None:  # pragma: no mutate block
        raise ValueError("the score part has a class the fit part lacks")
    return {"top1": _top1(zs, ys, wb), "lam": lam, "cv_top1": cv[lam]}


def split_fit_score(labels: list[int], n: int, fit_fraction: float, seed: int
                    ) -> tuple[list[int], list[int]]:
    """(fit, score) indices into `labels`: n // classes images per class drawn with a seeded
    shuffle, the first `fit_fraction` of each class to fit, the rest to score."""
    rng = np.random.default_rng(seed)
    y = np.asarray(labels)
    classes = np.unique(y)
    per = n // len(classes)
    fit, score = [], []
    for c in classes:
        idx = rng.permutation(np.flatnonzero(y == c))
        if len(idx) < per:
            raise ValueError(f"class {c} has {len(idx)} training images, fewer than the "
                             f"{per} per class that --images {n} asks for")
        cut = round(per * fit_fraction)
        fit += idx[:cut].tolist()
        score += idx[cut:per].tolist()
    return fit, score


# ----------------------------------------------------------------------------- step-0 features
def first_bn_after_pool(method: nn.Module) -> nn.BatchNorm2d:
    """The first BatchNorm the stem pooling's output reaches: EfficientNet-Lite0's block 1
    (the block of stages[0] whose depthwise conv strides, or strode before ma_ea's graft),
    ResNet's layer1[0].bn1."""
    bb = method.backbone
    if bb.is_resnet:
        block = bb.stages[0][0]
    else:
        block = next(b for b in bb.stages[0]
                     if not isinstance(b.pre, nn.Identity)
                     or any(isinstance(m, nn.Conv2d) and m.stride == (2, 2) for m in b.block))
    return next(m for m in block.modules() if isinstance(m, nn.BatchNorm2d))


class InputStats:
    """Per-channel mean and variance of a BatchNorm's input over every call (a forward pre-hook)."""

    def __init__(self, bn: nn.BatchNorm2d):
        self.bn, self.n, self.s, self.ss = bn, 0, 0.0, 0.0
        self.hook = bn.register_forward_pre_hook(self._add)

    def _add(self, _, args) -> None:
        x = args[0].detach().double()                        # (B, C, H, W)
        self.n += x.shape[0] * x.shape[2] * x.shape[3]
        self.s = self.s + x.sum((0, 2, 3))
        self.ss = self.ss + (x * x).sum((0, 2, 3))

    def summary(self) -> dict[str, float]:
        """bn_shift: mean over channels of |input mean - running mean| / running std;
        bn_std_ratio: mean over channels of input std / running std."""
        self.hook.remove()
        mean = self.s / self.n
        var = (self.ss / self.n - mean * mean).clamp_min(0)
        rstd = (self.bn.running_var.double() + self.bn.eps).sqrt()
        return {"bn_shift": ((mean - self.bn.running_mean.double()).abs() / rstd).mean().item(),
                "bn_std_ratio": (var.sqrt() / rstd).mean().item()}


@torch.no_grad()
def extract(model: Method, images: torch.Tensor, batch: int = 64
            ) -> tuple[np.ndarray, np.ndarray, dict]:
    """(features (N, D) float32, the backbone's pooled map (N, C) float32, first-BN input
    statistics) of `model` in eval mode. The pooled map is the global average of
    `model.backbone(x)` (with whatever the method grafted into the backbone, without the
    modules it adds between or after the stages): the baseline's classifier input, so its
    probe tells harm to the pretrained network from a classifier input that adds other
    features (focus's region crops) or pools otherwise (pcanet's BAP)."""
    model.eval()
    stats = InputStats(first_bn_after_pool(model))
    feats = [model.features(images[i:i + batch]).flatten(1).float()
             for i in range(0, len(images), batch)]
    summary = stats.summary()   # the BN statistics of the method's forward only
    pooled = [model.backbone(images[i:i + batch]).float().mean((2, 3))
              for i in range(0, len(images), batch)]
    return torch.cat(feats).numpy(), torch.cat(pooled).numpy(), summary


def study_cells(profile: str, methods: list[str] | None = None,
                variants: list[str] | None = None, seed: int = 0) -> list[tuple[str, str]]:
    """The (method, variant) pairs of the profile's study grid, baseline full first."""
    cells = []
    for spec in plan(profile, methods, variants, seeds=[seed]):
        if (spec.method, spec.variant) not in cells:
            cells.append((spec.method, spec.variant))
    return sorted(cells, key=lambda c: c != ("baseline", "full"))


def not_applicable(method: str, variant: str) -> str | None:
    """The reason a variant cannot apply to the backbone (`not_applicable:` in its entry)."""
    return load_variants(method).get(variant, {}).get("not_applicable")


def _images(cfg: dict, n: int, fit_fraction: float, seed: int
            ) -> tuple[torch.Tensor, np.ndarray, np.ndarray, np.ndarray, int]:
    """(images (N, 3, crop, crop), labels, fit mask, score mask, number of classes) from the
    official train split."""
    bundle = build_data_for(cfg)
    split, d = bundle.split, cfg["data"]
    fit, score = split_fit_score([s.label for s in split.train], n, fit_fraction, seed)
    ds = ImageDataset([split.train[i] for i in fit + score],
                      build_transforms(d["resize"], d["crop"], train=False), split.crop_bottom)
    pairs = [ds[i] for i in range(len(ds))]
    x = torch.stack([p[0] for p in pairs])
    y = np.array([p[1] for p in pairs])
    is_fit = np.arange(len(ds)) < len(fit)
    return x, y, is_fit, ~is_fit, bundle.num_classes


def step0(profile: str = "transfer", methods: list[str] | None = None,
          variants: list[str] | None = None, images: int = 800, seed: int = 0,
          fit_fraction: float = 0.6, folds: int = 4, tol: float = TOL,
          overrides: dict | None = None, log=None) -> pd.DataFrame:
    """One row per (method, variant) of the study grid: probe top-1 against the baseline's.
    `overrides` (dotted keys, as fgvc.study.config.resolve takes them) are for tests only."""
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    cells = study_cells(profile, methods, variants, seed)
    if ("baseline", "full") not in cells:
        cells.insert(0, ("baseline", "full"))
    data: dict[str, tuple] = {}
    rows, base = [], None
    for method, variant in cells:
        t0 = time.time()
        cfg = resolve(method, variant, profile=profile, seed=seed, overrides=overrides)
        row = {"method": method, "variant": variant, "backbone": cfg["model"]["backbone"],
               "weights": cfg["model"]["weights"], "input_size": cfg["model"]["input_size"]}
        reason = not_applicable(method, variant)
        if reason:
            rows.append({**row, "not_applicable": reason})
            log(f"{method}/{variant}: not applicable ({reason})")
            continue
        key = json.dumps([cfg["dataset"], cfg["data"]], sort_keys=True)
        if key not in data:
            data[key] = _images(cfg, images, fit_fraction, seed)
        x, y, is_fit, is_score, num_classes = data[key]
        seed_everything(cfg["seed"])            # as fgvc.study.run does before building the model
        model = create_method(method, num_classes, **cfg["model"])
        feats, pooled, bn = extract(model, x)
        probe = fit_probe(feats[is_fit], y[is_fit], feats[is_score], y[is_score],
                          folds=folds, seed=seed)
        if (method, variant) == ("baseline", "full"):
            base = probe["top1"]
        backbone = (probe if np.array_equal(feats, pooled) else
                    fit_probe(pooled[is_fit], y[is_fit], pooled[is_score], y[is_score],
                              folds=folds, seed=seed))
        row.update(dim=feats.shape[1], probe_top1=probe["top1"], baseline_probe_top1=base,
                   backbone_probe_top1=backbone["top1"],
                   difference=probe["top1"] - base, harms=harms(probe["top1"], base, tol),
                   lam=probe["lam"], cv_top1=probe["cv_top1"], **bn,
                   n_fit=int(is_fit.sum()), n_score=int(is_score.sum()),
                   chance=100.0 / len(np.unique(y)), seconds=time.time() - t0)
        rows.append(row)
        log(f"{method}/{variant}: probe {probe['top1']:.1f} (baseline {base:.1f}), "
            f"bn shift {bn['bn_shift']:.2f}, {time.time() - t0:.0f} s")
    return pd.DataFrame(rows)


def step0_markdown(df: pd.DataFrame, command: str, tol: float = TOL) -> str:
    """The table as markdown, with what each column means."""
    first = df.dropna(subset=["probe_top1"]).iloc[0] if "probe_top1" in df else None
    head = [f"# No harm at step 0: linear probe on each method's classifier input\n",
            f"`{command}`\n"]
    if first is not None:
        head.append(f"{int(first.n_fit)} images to fit, {int(first.n_score)} to score (stratified, "
                    f"from the official train split, eval transform); chance {first.chance:.2f} %. "
                    f"Harm: probe more than {tol:g} points below the baseline's. bn shift: block 1's "
                    "first BatchNorm input, |mean - running mean| / running std averaged over "
                    "channels; bn std: input std / running std. backbone: the same probe on the "
                    "backbone's globally pooled last map (the baseline's classifier input) in "
                    "the method's network: it tells harm to the pretrained network from a "
                    "classifier input that adds other features or pools otherwise.\n")
    lines = ["| method | variant | dim | probe top-1 | baseline | diff | harms | backbone | lambda "
             "| bn shift | bn std |",
             "|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|"]
    for r in df.itertuples():
        na = getattr(r, "not_applicable", None)
        if isinstance(na, str) and na:
            lines.append(f"| {r.method} | {r.variant} | | not applicable: {na} | | | | | | | |")
            continue
        lines.append(f"| {r.method} | {r.variant} | {r.dim} | {r.probe_top1:.1f} | "
                     f"{r.baseline_probe_top1:.1f} | {r.difference:+.1f} | "
                     f"{'yes' if r.harms else 'no'} | {r.backbone_probe_top1:.1f} | {r.lam:g} | "
                     f"{r.bn_shift:.2f} | "
                     f"{r.bn_std_ratio:.2f} |")
    return "\n".join(head + lines) + "\n"


# ----------------------------------------------------------------------------- after training
GATE_WORDS = ("gate", "scale", "alpha", "gamma")
# method -> (what is removed, how): a branch a method can drop at test time without retraining
REMOVABLE = {
    "ma_ea": "MA blocks (use_ma off at eval)",
    "focus": "hybrid head (use_hybrid off at eval: the image head's logits)",
}


def own_gates(model: Method) -> dict[str, str]:
    """The method's own learned gates / scales, summarised: its new (not pretrained) parameters
    whose name has one of GATE_WORDS (ma_ea's pooling branch sits inside the backbone); lafe: how far each confusable module moved from its
    discriminative twin (equal at step 0 under twin_init, when F = f); pcanet: its centres."""
    def summary(t: torch.Tensor) -> str:
        t = t.detach().double().flatten()
        if t.numel() <= 4:
            return ", ".join(f"{v:.4g}" for v in t.tolist())
        return f"mean {t.mean():.4g} (min {t.min():.4g}, max {t.max():.4g}; {t.numel()} values)"

    out = {}
    own = {id(p) for p in model.new_parameters()}  # a branch grafted into the backbone is own too
    for name, p in model.named_parameters():
        words = name.lower().split(".")
        if id(p) in own and any(w in words[-1] or w in words for w in GATE_WORDS):
            out[name] = summary(p)
    if model.name == "lafe":
        for i, att in enumerate(model.attention):
            for kind in ("channel", "region"):
                dis, con = getattr(att, f"dis_{kind}"), getattr(att, f"con_{kind}")
                if dis is None:
                    continue
                d = torch.cat([p.detach().flatten() for p in dis.parameters()])
                c = torch.cat([p.detach().flatten() for p in con.parameters()])
                out[f"attention.{i}.con_{kind} - dis_{kind} (relative L2)"] = (
                    f"{((c - d).norm() / d.norm().clamp_min(1e-12)).item():.4g}")
    if getattr(model, "center", None) is not None:
        out["center.centers (L2 norm per class)"] = summary(model.center.centers.norm(dim=1))
    return out


def remove_branch(model: Method) -> bool:
    """Switch off the method's removable branch (REMOVABLE) in place; False if it has none."""
    if model.name == "ma_ea" and len(model.ma):
        model.ma = nn.ModuleDict()
        return True
    if model.name == "focus" and model.cfg.use_hybrid:
        model.cfg.use_hybrid = False
        return True
    return False


@torch.no_grad()
def _test_top1(model: Method, loader) -> float:
    model.eval()
    hit = n = 0
    for x, y in loader:
        hit += (model(x)["logits"].argmax(1) == y).sum().item()
        n += len(y)
    return 100.0 * hit / n


def parts(runs: Path, checkpoints: Path | None = None, log=None) -> pd.DataFrame:
    """One row per finished run under `runs` (folders with config.json + metrics.json) whose
    best.pt is found (beside the record, or in `checkpoints`/<run_id>/)."""
    from torch.utils.data import DataLoader

    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    rows = []
    for cfg_path in sorted(Path(runs).rglob("config.json")):
        run_dir = cfg_path.parent
        if not (run_dir / "metrics.json").is_file() or REPLACED in run_dir.parts:
            continue
        cfg = json.loads(cfg_path.read_text())
        row = {"run_id": cfg["run_id"], "method": cfg["method"], "variant": cfg["variant"],
               "test_top1": json.loads((run_dir / "metrics.json").read_text()).get("test_top1")}
        trained = load_trained(run_dir, checkpoints)
        if trained is None:
            rows.append({**row, "gates": "no checkpoint"})
            continue
        cfg, bundle, model = trained
        gates = own_gates(model)
        row["gates"] = ("; ".join(f"{k}: {v}" for k, v in gates.items())
                        or "none (no learned gate or scale)")
        loader = DataLoader(bundle.test, batch_size=cfg["train"]["eval_batch_size"])
        row["eval_top1"] = _test_top1(model, loader)
        if remove_branch(model):
            row["removed"] = REMOVABLE[cfg["method"]]
            row["top1_without"] = _test_top1(model, loader)
        else:
            row["removed"] = "no switch at test time"
        rows.append(row)
        log(f"{cfg['run_id']}: {row['gates']}")
    return pd.DataFrame(rows)


def parts_markdown(df: pd.DataFrame, command: str) -> str:
    lines = ["# Each method's own parts after training\n", f"`{command}`\n",
             "| run | learned gates / scales | test top-1 | removed at test | top-1 without |",
             "|---|---|---:|---|---:|"]
    for r in df.to_dict("records"):
        def num(v):
            return "" if v is None or v != v else f"{v:.2f}"
        lines.append(f"| {r['run_id']} | {r['gates']} | {num(r.get('eval_top1', r['test_top1']))} | "
                     f"{r.get('removed', '')} | {num(r.get('top1_without'))} |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- command line
def _list(arg: str | None) -> list[str] | None:
    return None if arg is None else [x for x in arg.split(",") if x]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fgvc.study.no_harm", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="transfer", help="profile whose study grid is probed")
    p.add_argument("--methods", help="comma-separated methods (default: the grid's)")
    p.add_argument("--variants", help="comma-separated variants (default: the grid's)")
    p.add_argument("--images", type=int, default=800, help="images drawn (default 800)")
    p.add_argument("--fit-fraction", type=float, default=0.6,
                   help="share of each class's images the probe is fitted on (default 0.6)")
    p.add_argument("--seed", type=int, default=0, help="seed of the models and the draw")
    p.add_argument("--tol", type=float, default=TOL, help="harm: probe below baseline - tol")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"folder (default {DEFAULT_OUT})")
    return p


def parts_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fgvc.study.no_harm parts",
                                description="each method's own parts after training")
    p.add_argument("--runs", type=Path, required=True, help="folder holding run records")
    p.add_argument("--checkpoints", type=Path, default=None,
                   help="checkpoint root (default: $FGVC_CHECKPOINTS or .checkpoints)")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"folder (default {DEFAULT_OUT})")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = "python -m fgvc.study.no_harm " + " ".join(argv)
    sub = argv[:1] == ["parts"]
    a = (parts_parser() if sub else build_parser()).parse_args(argv[1:] if sub else argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    a.out.mkdir(parents=True, exist_ok=True)
    if sub:
        if not a.runs.is_dir():
            raise ValueError(f"--runs {a.runs}: no such folder")
        df = parts(a.runs, a.checkpoints)
        name, md = "parts", parts_markdown(df, portable(command))
    else:
        df = step0(a.profile, _list(a.methods), _list(a.variants), a.images, a.seed,
                   a.fit_fraction, tol=a.tol)
        name, md = "no_harm", step0_markdown(df, portable(command), a.tol)
    df.to_csv(a.out / f"{name}.csv", index=False)
    (a.out / f"{name}.md").write_text(md)
    print(md)
    print(f"wrote {portable(str(a.out / name))}.md and .csv")
    return 0


if __name__ == "__main__":
    from fgvc.cli import run as run_cli

    sys.exit(run_cli(main))
