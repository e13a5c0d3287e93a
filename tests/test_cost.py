"""The one cost model (fgvc.study.cost): values it counts, and that no other module counts or times code."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fgvc
from fgvc.study import cost

LIB = Path(fgvc.__file__).parent


# ----------------------------------------------------------------------------- values
def test_params_of_a_linear_layer():
    assert cost.count_params(nn.Linear(3, 4)) == 3 * 4 + 4


def test_flops_of_a_matmul_are_two_per_mac():
    a, b = torch.randn(2, 3), torch.randn(3, 5)
    assert cost.count_flops(torch.mm, a, b) == 2 * 2 * 3 * 5


def test_flops_of_a_convolution():
    conv = nn.Conv2d(2, 4, kernel_size=3, bias=False)
    # output 1 x 4 x 3 x 3, each value 2 x 3 x 3 MACs
    assert cost.count_flops(conv, torch.randn(1, 2, 5, 5)) == 2 * (4 * 3 * 3) * (2 * 3 * 3)


class _Tiny(nn.Module):
    """The method contract in miniature: forward(x, target) -> dict, loss(out, target)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x, target=None):
        return {"logits": self.fc(x)}

    def loss(self, out, target):
        return F.cross_entropy(out["logits"], target), {}


@pytest.mark.parametrize("groups", [1, 4, 8])
def test_a_convolutions_backward_costs_its_forward_per_gradient_whatever_its_groups(groups):
    """Forward of a 3x3 conv, 8 -> 8 channels in `groups` groups, on 2 x 8 x 5 x 5 (padding 1):
    2 FLOPs x 2 images x 25 positions x 8 outputs x (8 / groups) inputs x 9 taps. Its backward
    adds the input gradient and the weight gradient, one forward's worth each; torch's own
    formula ignores groups (a depthwise conv's backward came out `groups` times too large)."""
    conv = nn.Conv2d(8, 8, 3, padding=1, groups=groups, bias=False)
    x = torch.randn(2, 8, 5, 5, requires_grad=True)
    forward = 2 * 2 * 25 * 8 * (8 // groups) * 9
    assert cost.count_flops(conv, x) == forward

    def step(inp):
        conv(inp).sum().backward()

    assert cost.count_flops(step, x) == 3 * forward
    assert cost.count_flops(step, x.detach()) == 2 * forward  # no input gradient asked for


def test_macs_per_image_of_inference_and_training_step():
    model, x = _Tiny(), torch.randn(2, 4)
    assert cost.count_macs(model, x) == 4 * 3  # per image
    # training: the forward, plus the weight gradient (same size); no gradient of the input
    assert cost.count_macs(model, x, train=True) == 2 * 4 * 3
    assert all(p.grad is None for p in model.parameters())  # no optimizer state is left behind


def test_latency_is_positive_and_uses_the_callers_threads():
    a = torch.randn(32, 32)
    m = cost.timing(lambda: torch.mm(a, a), min_run_time=0.01)
    assert m.median > 0 and m.num_threads == torch.get_num_threads()
    assert cost.latency(lambda: torch.mm(a, a), repeats=3) > 0
    calls = []
    cost.latency(lambda: calls.append(1), repeats=2, warmup=5)
    assert len(calls) == 5 + 2  # warmup counts Timer's own two warm-up calls
    assert cost.measure_latency(_Tiny(), torch.randn(2, 4), train=True, repeats=1) > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gemm_rate_is_positive(dtype):
    assert cost.gemm_rate(32, dtype, min_run_time=0.01) > 0


# ----------------------------------------------------------------------------- one place
ALLOWED = {"study/cost.py", "dev/bench.py"}  # the cost model and the benchmark built on it
# Reading a clock to record how long real work took, once per piece of work, is bookkeeping,
# not timing code: these modules may read clocks (and only these, besides ALLOWED).
BOOKKEEPING = {
    "engine.py": "train_seconds of each epoch of a real run",
    "study/run.py": "wall_time_s of a run in its record",
    "study/grid.py": "elapsed time of each job of a grid and of the whole grid",
    "study/slurm.py": "elapsed time of each Slurm job and of the whole submission",
    "study/reproduce.py": "how long the reruns of a reproduction took, in its report",
    "data/prepare.py": "images/s in the progress log of preparing the cache",
    "study/no_harm.py": "seconds of each probe row, in its progress lines and its table",
}
CLOCKS = {"perf_counter", "perf_counter_ns", "process_time", "process_time_ns", "thread_time",
          "thread_time_ns", "monotonic", "monotonic_ns", "time", "time_ns"}
TIMING_MODULES = ("timeit", "torch.utils.benchmark", "torch.utils.flop_counter")
COUNTING_NAMES = {"FlopCounterMode", "flop_counter", "blocked_autorange", "adaptive_autorange"}


def cost_code(source: str, clocks_allowed: bool = False) -> list[str]:
    """Where `source` counts FLOPs or times code, as "line: what".

    The rule, on the syntax tree (so docstrings and comments may name anything):
    - no import of timeit, torch.utils.benchmark or torch.utils.flop_counter (nor anything
      under them), and no attribute chain ``utils.benchmark`` (torch.backends.cudnn.benchmark,
      a setting, is fine);
    - no identifier FlopCounterMode, flop_counter, blocked_autorange or adaptive_autorange;
    - unless `clocks_allowed` (BOOKKEEPING): no clock of the time module, neither ``time.X``
      nor ``from time import X`` for X in CLOCKS (datetime stays free: it dates records).
    """
    found = []
    for node in ast.walk(ast.parse(source)):
        line = getattr(node, "lineno", 0)
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for mod in mods:
                if any(mod == t or mod.startswith(t + ".") for t in TIMING_MODULES):
                    found.append(f"{line}: import {mod}")
            if isinstance(node, ast.ImportFrom) and node.module == "torch.utils":
                found += [f"{line}: from torch.utils import {a.name}" for a in node.names
                          if a.name in ("benchmark", "flop_counter")]
            if isinstance(node, ast.ImportFrom) and node.module == "time" and not clocks_allowed:
                found += [f"{line}: from time import {a.name}" for a in node.names if a.name in CLOCKS]
            found += [f"{line}: {a.name}" for a in node.names if a.name.split(".")[-1] in COUNTING_NAMES]
        elif isinstance(node, ast.Name) and node.id in COUNTING_NAMES:
            found.append(f"{line}: {node.id}")
        elif isinstance(node, ast.Attribute):
            if node.attr in COUNTING_NAMES:
                found.append(f"{line}: .{node.attr}")
            elif (node.attr == "benchmark" and isinstance(node.value, ast.Attribute)
                  and node.value.attr == "utils"):
                found.append(f"{line}: utils.benchmark")
            elif (not clocks_allowed and node.attr in CLOCKS and isinstance(node.value, ast.Name)
                  and node.value.id == "time"):
                found.append(f"{line}: time.{node.attr}")
    return sorted(set(found))


def test_the_rule_catches_counting_and_timing_but_not_mentions():
    bad = {"from torch.utils.flop_counter import FlopCounterMode": 1,
           "import torch\nwith torch.utils.flop_counter.FlopCounterMode() as c: pass": 1,
           "import torch.utils.benchmark as tb": 1,
           "from torch.utils import benchmark": 1,
           "import timeit": 1,
           "import time\nt = time.perf_counter()": 1,
           "from time import perf_counter": 1,
           "import time\nt = time.time()": 1,
           "t = timer.blocked_autorange()": 1}
    for src in bad:
        assert cost_code(src), src
    ok = ['"""Counted with FlopCounterMode, timed with time.perf_counter."""',
          "# torch.utils.benchmark.Timer",
          "import torch\ntorch.backends.cudnn.benchmark = True",
          "from datetime import datetime\nnow = datetime.now()",
          "from fgvc import cost\nms = cost.latency(print)"]
    for src in ok:
        assert not cost_code(src), src
    assert not cost_code("import time\nt = time.perf_counter()", clocks_allowed=True)
    assert cost_code("from torch.utils.flop_counter import FlopCounterMode", clocks_allowed=True)


def test_only_the_cost_model_and_the_benchmark_count_or_time_code():
    """Every module of lib/fgvc except cost.py and bench.py follows :func:`cost_code`'s rule;
    the modules in BOOKKEEPING may read clocks to record how long their real work took."""
    offences = {}
    modules = sorted(LIB.rglob("*.py"))
    assert len(modules) > 20
    for path in modules:
        rel = path.relative_to(LIB).as_posix()
        if rel in ALLOWED:
            continue
        found = cost_code(path.read_text(), clocks_allowed=rel in BOOKKEEPING)
        if found:
            offences[rel] = found
    assert not offences, f"count or time code through fgvc.study.cost instead: {offences}"
