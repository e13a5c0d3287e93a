"""Grad-CAM for the study's methods, and numbers that score where the CAMs point.

Built on pytorch-grad-cam (``pytorch_grad_cam``):

- :class:`LogitsOnly` wraps a method (whose ``forward`` returns a dict) so the library sees
  the logits tensor it expects; each method names its target layer(s) through
  ``method.cam_target_layers()``.
- :func:`compute_cams` runs any of the library's CAM variants (``CAM_VARIANTS``) over a batch
  of images, in chunks, and returns CAMs at the input resolution, values in [0, 1].
- Localization, on datasets with boxes and part keypoints (CUB, SynthBirds):
  :func:`energy_in_box` (share of CAM mass inside the bird's box), :func:`pointing_hit`
  (the pointing game: is the CAM's maximum within `tolerance` pixels of an annotated part;
  on SynthBirds the parts that tell the image's class from its sibling species), and
  :func:`road_scores` (faithfulness: pytorch-grad-cam's ROAD, removing the most / least
  relevant pixels with noisy linear imputation; combined = (LeRF - MoRF) / 2, higher is
  more faithful).
- :func:`to_input_coords` maps boxes and keypoints from original-image pixels into the
  network input's pixels (eval transform: resize to (resize, resize), centre crop `crop`).
- :func:`score_run` / :func:`gallery_data` load a finished run (config + best checkpoint)
  and evaluate its CAMs on the first test images.

Coordinates are continuous pixel coordinates: pixel (row i, column j) covers [j, j+1) x [i, i+1)
and its centre is (j + 0.5, i + 0.5); a box is (x, y, w, h).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

import pytorch_grad_cam as pgc
from pytorch_grad_cam.metrics.road import ROADCombined
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

CAM_VARIANTS: dict[str, type] = {
    "gradcam": pgc.GradCAM,
    "gradcam++": pgc.GradCAMPlusPlus,
    "xgradcam": pgc.XGradCAM,
    "hirescam": pgc.HiResCAM,
    "layercam": pgc.LayerCAM,
    "eigencam": pgc.EigenCAM,
    "eigengradcam": pgc.EigenGradCAM,
    "scorecam": pgc.ScoreCAM,
}
Box = tuple[float, float, float, float]


class LogitsOnly(nn.Module):
    """A method whose forward returns a dict, seen by pytorch-grad-cam as a logits model."""

    def __init__(self, method: nn.Module):
        super().__init__()
        self.method = method

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.method(x)
        return out["logits"] if isinstance(out, dict) else out  # (B, K)


def cam_class(variant: str) -> type:
    """The pytorch-grad-cam class of a CAM variant name ('gradcam', 'GradCAMPlusPlus', ...)."""
    key = variant.lower().replace("_", "").replace("plusplus", "++")
    if key not in CAM_VARIANTS:
        raise ValueError(f"unknown CAM variant {variant!r}; valid: {sorted(CAM_VARIANTS)}")
    return CAM_VARIANTS[key]


def target_layers(method: nn.Module) -> list[nn.Module]:
    """The method's Grad-CAM target layer(s) (`cam_target_layers()`), else its last stage."""
    if hasattr(method, "cam_target_layers"):
        layers = list(method.cam_target_layers())
    else:
        layers = [method.backbone.stages[-1]]
    if not layers:
        raise ValueError(f"{type(method).__name__}.cam_target_layers() returned no layer")
    return layers


@dataclass
class CamResult:
    cams: np.ndarray      # (N, H, W) float32 in [0, 1], at the input resolution
    logits: torch.Tensor  # (N, K) of the forward the CAMs were computed from
    targets: list[int]    # the class each CAM explains

    @property
    def preds(self) -> list[int]:
        return self.logits.argmax(1).tolist()


def compute_cams(method: nn.Module, images: torch.Tensor, variant: str = "gradcam",
                 targets: Sequence[int] | None = None, batch_size: int = 16,
                 layers: list[nn.Module] | None = None) -> CamResult:
    """CAMs of `images` (N, 3, H, W) for classes `targets` (default: the predicted class).

    The model is put in eval mode. Several target layers are averaged (the library's rule).
    """
    model = LogitsOnly(method).eval()
    cams, logits, used = [], [], []
    with cam_class(variant)(model=model, target_layers=layers or target_layers(method)) as cam:
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size]
            tg = None if targets is None else [ClassifierOutputTarget(int(t))
                                               for t in targets[start:start + batch_size]]
            out = cam(input_tensor=x, targets=tg)  # (b, H, W)
            cams.append(np.asarray(out, dtype=np.float32))
            lg = cam.outputs.detach().cpu()
            logits.append(lg)
            used += [int(t) for t in targets[start:start + batch_size]] if targets is not None \
                else lg.argmax(1).tolist()
    method.zero_grad(set_to_none=True)
    return CamResult(np.clip(np.concatenate(cams), 0.0, 1.0), torch.cat(logits), used)


# ----------------------------------------------------------------------------- coordinates

def crop_offset(resize: int, crop: int) -> int:
    """Pixels cut on the left/top by torchvision's CenterCrop(crop) of a (resize, resize) image."""
    return int(round((resize - crop) / 2.0))


def to_input_coords(points: np.ndarray | Sequence, image_size: tuple[int, int], resize: int,
                    crop: int) -> np.ndarray:
    """Points (N, 2) as (x, y) in original-image pixels -> network-input pixels.

    `image_size` is the original (width, height) (after any banner removal). The eval
    transform resizes to (resize, resize) and centre-crops `crop`; points may fall outside
    [0, crop) when the crop cuts them off.
    """
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    w, h = image_size
    off = crop_offset(resize, crop)
    return np.stack([p[:, 0] * resize / w - off, p[:, 1] * resize / h - off], 1)


def box_to_input(box: Box, image_size: tuple[int, int], resize: int, crop: int) -> Box:
    """A box (x, y, w, h) in original pixels -> input pixels, clipped to the crop."""
    x, y, bw, bh = box
    (x0, y0), (x1, y1) = to_input_coords([(x, y), (x + bw, y + bh)], image_size, resize, crop)
    x0, y0, x1, y1 = (float(np.clip(v, 0, crop)) for v in (x0, y0, x1, y1))
    return (x0, y0, x1 - x0, y1 - y0)


# ----------------------------------------------------------------------------- localization

def box_mask(box: Box, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) bool: pixels whose centre lies inside `box` (x, y, w, h, input pixels)."""
    h, w = shape
    x, y, bw, bh = box
    cx, cy = np.arange(w) + 0.5, np.arange(h) + 0.5
    return ((cy >= y) & (cy < y + bh))[:, None] & ((cx >= x) & (cx < x + bw))[None, :]


def energy_in_box(cam: np.ndarray, box: Box) -> float:
    """Share of the CAM's total mass inside `box` (1: all inside, 0: all outside)."""
    total = float(cam.sum())
    if total <= 0:
        return float("nan")
    return float(cam[box_mask(box, cam.shape)].sum()) / total


def cam_peak(cam: np.ndarray) -> tuple[float, float]:
    """(x, y) centre of the CAM's maximum pixel (the first one on ties)."""
    i, j = np.unravel_index(int(np.argmax(cam)), cam.shape)
    return (j + 0.5, i + 0.5)


def pointing_hit(cam: np.ndarray, parts: np.ndarray, tolerance: float = 4.0) -> float:
    """Pointing game: 1.0 if the CAM's peak is within `tolerance` px of any of `parts`
    ((N, 2) input-pixel (x, y) of visible parts), 0.0 if not, NaN if there is no part."""
    parts = np.asarray(parts, dtype=np.float64).reshape(-1, 2)
    if len(parts) == 0:
        return float("nan")
    d = np.hypot(*(parts - np.asarray(cam_peak(cam))).T)
    return float(d.min() <= tolerance)


def road_scores(method: nn.Module, images: torch.Tensor, cams: np.ndarray, targets: Sequence[int],
                percentiles: Sequence[int] = (20, 40, 60, 80), seed: int = 0) -> np.ndarray:
    """ROAD faithfulness per image (pytorch-grad-cam ROADCombined: (LeRF - MoRF) / 2 of the
    target logit when removing a percentile of pixels by noisy linear imputation)."""
    torch.manual_seed(seed)  # the imputer adds noise
    model = LogitsOnly(method).eval()
    tg = [ClassifierOutputTarget(int(t)) for t in targets]
    return np.asarray(ROADCombined(percentiles=list(percentiles))(images, cams, tg, model),
                      dtype=np.float64).reshape(-1)


# ----------------------------------------------------------------------------- runs

def discriminative_parts(dataset: str, root: str | Path | None, part_names: Sequence[str] | None,
                         num_classes: int) -> list[list[int]] | None:
    """Per class, the indices of the parts the pointing game counts (None: every visible part).

    SynthBirds: the keypoints of the markings in which a class differs from its sibling
    species (synthbirds.json `discriminative_keypoints`). Other datasets: all parts.
    """
    if dataset != "synthbirds" or not part_names:
        return None
    from .data import default_root
    from .data.synthbirds import read_meta
    from .paths import resolve

    meta = read_meta(resolve(root) if root else default_root(dataset))
    if meta is None:
        return None
    index = {n: i for i, n in enumerate(part_names)}
    return [[index[k] for k in c["discriminative_keypoints"] if k in index]
            for c in meta["classes"][:num_classes]]


@dataclass
class RunCams:
    """A trained run and its first test images, ready for CAMs."""

    run_id: str
    method: str
    variant: str
    dataset: str
    seed: int
    model: nn.Module
    images: torch.Tensor          # (N, 3, crop, crop), normalised
    labels: list[int]
    boxes: list[Box | None]       # input pixels
    parts: list[np.ndarray]       # per image (P, 2) input-pixel (x, y) of the counted parts
    classes: list[str]


def load_run_model(run_dir: str | Path, device: str = "cpu") -> tuple[dict, nn.Module]:
    """(config, method with its best checkpoint loaded) of a finished run.

    Raises FileNotFoundError when the checkpoint is missing (checkpoints are not committed).
    """
    from . import io
    from .engine import load_model_state
    from .methods import create_method
    from .paths import checkpoints_dir

    run_dir = Path(run_dir)
    cfg = io.read_json(run_dir / "config.json")
    metrics = io.read_json(run_dir / "metrics.json")
    ckpt = checkpoints_dir() / cfg["run_id"] / "best.pt"
    if not ckpt.is_file():
        raise FileNotFoundError(f"no checkpoint {ckpt} for run {cfg['run_id']} (set "
                                "FGVC_CHECKPOINTS, or re-run it with python -m fgvc.grid)")
    # weights="none": the checkpoint holds every weight; never download ImageNet ones here.
    model = create_method(cfg["method"], metrics["num_classes"], **{**cfg["model"], "weights": "none"})
    # Checkpoints of compiled or DDP runs may carry wrapper prefixes: load_model_state strips them.
    load_model_state(model, torch.load(ckpt, map_location="cpu", weights_only=True)["model"])
    return cfg, model.to(device).eval()


def spread_over_classes(labels: Sequence[int], n: int) -> list[int]:
    """`n` indices taking the 1st image of each class in turn, then the 2nd, ... (classes in
    order): the same images for every run of a dataset, and as many classes as possible."""
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(y, []).append(i)
    order = [idx[k] for k in range(max(map(len, by_class.values()), default=0))
             for _, idx in sorted(by_class.items()) if k < len(idx)]
    return order[:n]


def load_run_cams(run_dir: str | Path, n_images: int = 16, device: str = "cpu") -> RunCams:
    """A run's model and `n_images` test images (spread over the classes, the same for every
    run of a dataset), with boxes and counted parts mapped to input pixels."""
    from PIL import Image

    from .data import ImageDataset, build_transforms, load_split

    cfg, model = load_run_model(run_dir, device)
    d = cfg["data"]
    split = load_split(cfg["dataset"], cfg["data_root"], remove_banner=d["remove_banner"],
                       synth=d["synth"])
    pick = spread_over_classes([s.label for s in split.test], n_images)
    ds = ImageDataset([split.test[i] for i in pick], build_transforms(d["resize"], d["crop"], train=False),
                      split.crop_bottom)
    counted = discriminative_parts(cfg["dataset"], cfg["data_root"], split.part_names,
                                   split.num_classes)
    images, boxes, parts = [], [], []
    for i, s in enumerate(ds.samples):
        images.append(ds[i][0])
        with Image.open(s.path) as im:
            size = (im.width, im.height - split.crop_bottom)
        boxes.append(box_to_input(s.box, size, d["resize"], d["crop"]) if s.box else None)
        pts = np.zeros((0, 2))
        if s.parts:
            keep = [k for k, (_, _, v) in enumerate(s.parts) if v > 0
                    and (counted is None or k in counted[s.label])]
            if keep:
                pts = to_input_coords([s.parts[k][:2] for k in keep], size, d["resize"], d["crop"])
        parts.append(pts)
    return RunCams(cfg["run_id"], cfg["method"], cfg["variant"], cfg["dataset"], cfg["seed"],
                   model, torch.stack(images).to(device), [s.label for s in ds.samples], boxes,
                   parts, split.classes)


def score_cams(rc: RunCams, result: CamResult, tolerance: float | None = None,
               road: bool = True, road_images: int = 8,
               road_percentiles: Sequence[int] = (20, 40, 60, 80)) -> dict:
    """Localization and faithfulness of one run's CAMs, averaged over its images.

    `tolerance` of the pointing game in input pixels; default the classic 15 px at 224,
    scaled to the input size.
    """
    tolerance = 15 / 224 * result.cams.shape[-1] if tolerance is None else tolerance
    energy = [energy_in_box(c, b) for c, b in zip(result.cams, rc.boxes) if b is not None]
    hits = [pointing_hit(c, p, tolerance) for c, p in zip(result.cams, rc.parts)]
    row = {"run_id": rc.run_id, "method": rc.method, "variant": rc.variant, "dataset": rc.dataset,
           "seed": rc.seed, "n_images": len(result.cams),
           "accuracy": 100.0 * float(np.mean(np.array(result.preds) == np.array(rc.labels))),
           "energy_in_box": float(np.nanmean(energy)) if energy else float("nan"),
           "pointing_game": float(np.nanmean(hits)) if not np.all(np.isnan(hits)) else float("nan")}
    if road:
        n = min(road_images, len(result.cams))
        row["road"] = float(road_scores(rc.model, rc.images[:n], result.cams[:n],
                                        result.targets[:n], road_percentiles).mean())
        row["road_images"] = n
    return row


def summarize_scores(scores: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, method, variant): mean ± std over seeds of every score column, and n."""
    cols = [c for c in ("accuracy", "energy_in_box", "pointing_game", "road") if c in scores]
    g = scores.groupby(["dataset", "method", "variant"], sort=False)[cols]  # keep run order
    mean, std = g.mean(), g.std().fillna(0.0)
    out = pd.concat({"mean": mean, "std": std}, axis=1)
    out.columns = [f"{c}_{stat}" for stat, c in out.columns]
    out["seeds"] = g.size()
    return out.reset_index()


def scores_markdown_table(summary: pd.DataFrame) -> pd.DataFrame:
    """`summarize_scores` output as display strings ("0.62 ± 0.03")."""
    cols = [c[:-5] for c in summary.columns if c.endswith("_mean")]
    out = summary[["method", "variant", "seeds"]].copy()
    for c in cols:
        digits = 1 if c == "accuracy" else 3
        out[c] = [f"{m:.{digits}f} ± {s:.{digits}f}" if np.isfinite(m) else ""
                  for m, s in zip(summary[f"{c}_mean"], summary[f"{c}_std"])]
    return out


def cam_study(run_dirs: Sequence[str | Path], cam: str = "gradcam", target: str = "pred",
              n_images: int = 32, road_images: int = 8, gallery_images: int = 6,
              score: bool = True, road_percentiles: Sequence[int] = (20, 40, 60, 80)) -> tuple[pd.DataFrame, dict | None, list[str]]:
    """CAMs of several runs on the same first test images of their dataset.

    Returns (scores: one row per run, see :func:`score_cams`; gallery: the inputs and one
    column per method from the first run of each method, or None; skipped: messages for
    runs that could not be loaded, e.g. a missing checkpoint). `target`: explain the
    predicted ('pred') or the true ('true') class. Localization needs boxes and parts.
    """
    if target not in ("pred", "true"):
        raise ValueError(f"target {target!r}; valid: ['pred', 'true']")
    rows, columns, skipped, gallery = [], [], [], None
    for run_dir in run_dirs:
        try:
            rc = load_run_cams(run_dir, max(n_images, gallery_images))
        except FileNotFoundError as e:
            skipped.append(str(e))
            continue
        result = compute_cams(rc.model, rc.images, cam, rc.labels if target == "true" else None)
        has_annotations = any(b is not None for b in rc.boxes)
        if score and has_annotations:
            rows.append(score_cams(rc, result, road=road_images > 0, road_images=road_images,
                                   road_percentiles=road_percentiles))
        if rc.method not in {c["method"] for c in columns}:
            k = gallery_images
            columns.append({"method": rc.method, "title": f"{rc.method} (s{rc.seed})",
                            "cams": result.cams[:k], "preds": result.preds[:k]})
            if gallery is None:
                gallery = {"images": rc.images[:k], "labels": rc.labels[:k],
                           "classes": rc.classes, "boxes": rc.boxes[:k], "parts": rc.parts[:k]}
    if gallery is not None:
        gallery["columns"] = columns
    return pd.DataFrame(rows), gallery, skipped
