"""Grad-CAM for the library's methods, on top of pytorch-grad-cam (``pytorch_grad_cam``).

- :class:`LogitsOnly` wraps a method (whose ``forward`` returns a dict) so the library sees
  the logits tensor it expects; each method names its last-stage target layer(s) through
  ``method.cam_target_layers()``.
- :func:`cam_layer` picks the target layer of a method for an input size: the deepest
  stage whose map has at least `min_side` (default 8) cells a side, since a 4x4 last map
  (EfficientNet-Lite0 or ResNet at 128 px) can hardly tell a bird's head from its tail.
  At the last stage it is the method's own target (``cam_target_layers()``); at an earlier
  stage the method's map at that stage: ma_ea's attended map where an MA block follows the
  stage, else the backbone stage's output (lafe's f_i feeds both the next stage and its
  attention / fusion branch; focus's image pass). EfficientNet-Lite0 at 128 px: stages[2],
  8x8 (the last map is 4x4); ResNet at 64 px: layer2 (8x8), at 128 px layer3, at 448 px
  layer4 (14x14).
- :func:`compute_cams` runs any of the library's CAM variants (``CAM_VARIANTS``) over a batch
  of images, in chunks, and returns CAMs at the input resolution, values in [0, 1], with the
  layer's name and measured map size. Each target layer is recorded on its first call per
  forward only (:class:`FirstPassRecorder`): focus runs the same backbone again on its
  zoomed regions, ma_ea (test_logits="mean") on the erased images; the CAM explains the
  image's own pass.

Scoring where the CAMs point (localisation, faithfulness) and the study's CAM tables are in
:mod:`fgvc.study.cam_scores`; the gallery figure in :mod:`fgvc.study.gallery`.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Sequence

import numpy as np
import torch
from torch import nn

import pytorch_grad_cam as pgc
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
class CamLayer:
    """A Grad-CAM target layer: the module(s), a name for tables and figures, and the map."""

    modules: list[nn.Module]
    name: str                  # module path in the method, e.g. "backbone.stages.2", "ma.2"
    stage: int                 # backbone stage index (0..3) whose resolution the map has
    map_size: tuple[int, int]  # (h, w) of the map for the input size it was chosen for

    @property
    def map_label(self) -> str:
        return f"{self.map_size[0]}x{self.map_size[1]}"


def module_name(method: nn.Module, module: nn.Module) -> str:
    """`module`'s dotted path inside `method` ('' for the method itself)."""
    for name, m in method.named_modules():
        if m is module:
            return name
    raise ValueError(f"{type(module).__name__} is not a submodule of {type(method).__name__}")


def stage_map_sizes(method: nn.Module, input_size: int | tuple[int, int]) -> list[tuple[int, int]]:
    """(h, w) of every backbone stage's output for an input of `input_size` (one dry forward
    of a zero image through the backbone, no gradient; the training flag is restored)."""
    h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
    backbone = method.backbone
    p = next(backbone.parameters())
    was_training = backbone.training
    try:
        backbone.eval()
        with torch.no_grad():
            outs = backbone.forward_stages(torch.zeros(1, 3, h, w, device=p.device, dtype=p.dtype))
    finally:
        backbone.train(was_training)
    return [tuple(o.shape[-2:]) for o in outs]


def cam_layer(method: nn.Module, input_size: int | tuple[int, int],
              min_side: int | None = 8) -> CamLayer:
    """The target layer for inputs of `input_size`: the deepest backbone stage whose map has
    at least `min_side` cells on its shorter side (none that large: the largest, stage 0).

    At the last stage: the method's own target (`cam_target_layers()`: ma_ea's last MA block
    or stage, lafe's fused map the classifier pools, focus's image-level Z). At an earlier
    stage: ma_ea's MA block after that stage if it has one (its output is what the next
    stage reads), else the backbone stage itself; for lafe that is f_i, which feeds both the
    next stage and lafe's attention and fusion, so its gradient carries both paths; for focus
    the stage's first call, the image pass (see :class:`FirstPassRecorder`).
    `min_side=None`: always the last stage (`target_layers`).
    """
    sizes = stage_map_sizes(method, input_size)
    last = len(sizes) - 1
    if min_side is None:
        stage = last
    else:
        fit = [i for i, hw in enumerate(sizes) if min(hw) >= min_side]
        stage = fit[-1] if fit else 0
    if stage == last:
        modules = target_layers(method)
    else:
        ma = getattr(method, "ma", None)
        own = ma[str(stage)] if isinstance(ma, nn.ModuleDict) and str(stage) in ma else None
        modules = [own if own is not None else method.backbone.stages[stage]]
    name = " + ".join(module_name(method, m) for m in modules)
    return CamLayer(modules, name, stage, sizes[stage])


class FirstPassRecorder:
    """Drop-in for pytorch-grad-cam's ActivationsAndGradients that keeps, per target layer,
    the activation and gradient of its *first* call in each forward only.

    Methods run the same layers again in one forward (focus: the backbone on its zoomed
    regions; ma_ea with test_logits="mean": on the erased images); the first call is the
    image's own pass. The library appends every call and pairs target layer i with the i-th
    recorded activation and gradient, which holds for one layer only while the gradients
    arrive in reverse call order, and with several layers shifts the pairing when one is
    called twice before the next (tests/test_cam.py has such a case). A layer that returns a
    tuple (ma_ea's MA block when the EA map is asked for) is recorded by its first element,
    the map the next layer reads; the library fails on it.
    """

    def __init__(self, model: nn.Module, target_layers: Sequence[nn.Module],
                 reshape_transform=None, detach: bool = True):
        self.model = model
        self.reshape_transform = reshape_transform
        self.detach = detach
        self._acts: dict[int, torch.Tensor] = {}
        self._grads: dict[int, torch.Tensor] = {}
        self.map_sizes: dict[int, tuple[int, int]] = {}  # kept across forwards
        self.handles = [layer.register_forward_hook(partial(self._save, i))
                        for i, layer in enumerate(target_layers)]

    def _keep(self, t: torch.Tensor) -> torch.Tensor:
        if self.reshape_transform is not None:
            t = self.reshape_transform(t)
        return t.cpu().detach() if self.detach else t

    def _save(self, i: int, module: nn.Module, inputs, output) -> None:
        if i in self._acts:  # a later pass through the same layer
            return
        if isinstance(output, (tuple, list)):  # (map, extras), e.g. ma_ea's MA block with
            output = output[0]                 # return_parts: the map the next layer reads
        self._acts[i] = self._keep(output)
        self.map_sizes[i] = tuple(output.shape[-2:])
        if getattr(output, "requires_grad", False):
            def store(grad: torch.Tensor) -> None:
                self._grads[i] = self._keep(grad)
            output.register_hook(store)

    @property
    def activations(self) -> list[torch.Tensor]:
        return [self._acts[i] for i in sorted(self._acts)]

    @property
    def gradients(self) -> list[torch.Tensor]:
        return [self._grads[i] for i in sorted(self._grads)]

    def __call__(self, x: torch.Tensor):
        self._acts, self._grads = {}, {}
        return self.model(x)

    def clear(self) -> None:
        self._acts, self._grads = {}, {}

    def release(self) -> None:
        self.clear()
        for handle in self.handles:
            handle.remove()
        self.handles = []


@dataclass
class CamResult:
    cams: np.ndarray      # (N, H, W) float32 in [0, 1], at the input resolution
    logits: torch.Tensor  # (N, K) of the forward the CAMs were computed from
    targets: list[int]    # the class each CAM explains
    layer: str = ""       # the target layer(s), dotted module path(s) in the method
    map_size: tuple[int, int] = (0, 0)  # (h, w) of the target layer's map, as recorded

    @property
    def preds(self) -> list[int]:
        return self.logits.argmax(1).tolist()

    @property
    def map_label(self) -> str:
        return f"{self.map_size[0]}x{self.map_size[1]}"


def compute_cams(method: nn.Module, images: torch.Tensor, variant: str = "gradcam",
                 targets: Sequence[int] | None = None, batch_size: int = 16,
                 layers: list[nn.Module] | CamLayer | None = None,
                 min_side: int | None = None) -> CamResult:
    """CAMs of `images` (N, 3, H, W) for classes `targets` (default: the predicted class).

    Target layer: `layers` (modules, or a :class:`CamLayer`); else with `min_side` the
    :func:`cam_layer` for these images' size; else the method's last-stage target
    (`target_layers`). The model is put in eval mode. Several target layers are averaged
    (the library's rule); each is recorded on its first call per forward.
    """
    if layers is None and min_side is not None:
        layers = cam_layer(method, tuple(images.shape[-2:]), min_side)
    if isinstance(layers, CamLayer):
        layers = layers.modules
    layers = list(layers) if layers else target_layers(method)
    model = LogitsOnly(method).eval()
    cams, logits, used = [], [], []
    cam = cam_class(variant)(model=model, target_layers=layers)
    cam.activations_and_grads.release()
    recorder = cam.activations_and_grads = FirstPassRecorder(
        model, layers, cam.reshape_transform, getattr(cam, "detach", True))
    with cam:
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
    name = " + ".join(module_name(method, m) for m in layers)
    return CamResult(np.clip(np.concatenate(cams), 0.0, 1.0), torch.cat(logits), used, name,
                     recorder.map_sizes.get(0, (0, 0)))
