"""What every method shares: a config dataclass, a backbone, a dict-returning forward, a loss.

A method is an `nn.Module` whose `forward(x, target=None)` returns a dict with `logits`
(the prediction used at test time) plus auxiliary outputs in training, and whose
`loss(out, target)` returns `(total, {name: value})`. Ablations are fields of the
method's `Config` dataclass; the named variants in configs/variants/ set them.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from fgvc.models import Backbone, build_backbone


@dataclass
class MethodConfig:
    backbone: str = "resnet50"
    weights: str = "none"          # "imagenet", "none" or a path to a state_dict
    input_size: int = 448          # training crop; methods whose layers depend on it build for it


class Method(nn.Module):
    """Base class. Subclasses set `name`, `Config`, and override `forward` and `loss`."""

    name: ClassVar[str] = ""
    Config: ClassVar[type] = MethodConfig
    # None, or the paired-sampler mode the method needs: "adjacent" (batch[2k], batch[2k+1]
    # share a label) or "halves" (batch[i] and batch[i + B/2] share a label).
    pair_mode: ClassVar[str | None] = None

    def __init__(self, num_classes: int, cfg: MethodConfig):
        super().__init__()
        self.cfg = cfg
        self.num_classes = num_classes
        self.backbone: Backbone = build_backbone(cfg.backbone, cfg.weights)

    # -- parameters --------------------------------------------------------------------
    def pretrained_parameters(self) -> list[nn.Parameter]:  # pragma: no mutate block
        """Parameters that came with pretrained weights (trained at a lower lr if set)."""
        return list(self.backbone.parameters()) if self.backbone.pretrained else []

    def new_parameters(self) -> list[nn.Parameter]:  # pragma: no mutate block
        old = {id(p) for p in self.pretrained_parameters()}
        return [p for p in self.parameters() if id(p) not in old]

    # -- Grad-CAM ----------------------------------------------------------------------
    def cam_target_layers(self) -> list[nn.Module]:  # pragma: no mutate block
        """Layers whose activations Grad-CAM uses; default: the last backbone stage."""
        return [self.backbone.stages[-1]]

    # -- training progress ----------------------------------------------------------------
    progress: float = 0.0  # epochs of training done (epoch + step / steps), set by the engine

    def set_progress(self, epochs: float) -> None:
        """Called by the engine before each training step; a method with a loss schedule
        reads `self.progress` (recomputed every step, so a resumed run gets the same value)."""
        self.progress = epochs

    # -- before the first step -----------------------------------------------------------
    def calibrate(self, batches: Iterable[torch.Tensor]) -> None:
        """Called once before step 0 of a new run (not on resume) with training images
        (B, 3, H, W), each on the model's device, drawn only as the method asks for them.
        Default: nothing (no batch is drawn). ma_ea re-estimates BatchNorm statistics there."""

    # -- the classifier and its input (fgvc.study.no_harm probes it) -----------------------
    def classifier(self) -> nn.Module:
        """The layer that turns `features(x)` into `forward(x)["logits"]` in eval mode
        (default `self.fc`); a method whose test-time logits come from another head overrides it."""
        return self.fc

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D): exactly what enters `classifier()` when `forward(x)` computes its logits,
        recorded by a hook on that layer (its first call, if forward calls it more than once),
        so it follows the method's forward whatever it does. In eval mode
        `classifier()(features(x))` equals `forward(x)["logits"]` (tests/test_no_harm.py)."""
        seen: list[torch.Tensor] = []
        hook = self.classifier().register_forward_pre_hook(lambda _, args: seen.append(args[0]))
        try:
            self(x)
        finally:
            hook.remove()
        if not seen:  # pragma: no mutate block
            raise RuntimeError(f"{self.name}: forward did not call its classifier()")
        return seen[0]

    # -- to override -------------------------------------------------------------------
    def forward(self, x: torch.Tensor, target: torch.Tensor | None = None) -> dict:
        raise NotImplementedError

    def loss(self, out: dict, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        ce = F.cross_entropy(out["logits"], target)
        return ce, {"ce": ce.detach()}


def config_fields(cls: type) -> dict[str, object]:  # pragma: no mutate block
    """Field name -> default of a method's Config dataclass."""
    return {f.name: f.default for f in fields(cls)}
