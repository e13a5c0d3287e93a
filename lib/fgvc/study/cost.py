"""The study's one cost model: parameters, FLOPs / MACs and latency.

Everything that counts cost goes through here: the complexity table and the cost-accuracy
points (fgvc.study.complexity), the Table 4 check of ma_ea (fgvc.methods.ma_ea.complexity) and the
benchmark (fgvc.dev.bench). tests/test_cost.py checks that no other module counts or times code.

- Parameters: every parameter of a module (backbone, heads, attention modules).
- FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` over whatever a callable runs. It counts
  the matrix ops (convolutions, linear layers, matmuls, attention) and their backward, not
  element-wise ops, pooling or normalisation; a matmul (m x k) @ (k x n) is 2 m k n FLOPs.
  MACs = FLOPs / 2, the unit of the papers' "FLOPs". One formula is ours: torch's count of a
  convolution's backward ignores `groups` (a depthwise 3x3 over 64 channels counted 66 x its
  forward instead of 3 x; EfficientNet-Lite0's training FLOPs came out about 10 x too high), so
  each gradient of a convolution is counted as its forward (:func:`conv_backward_flop`).
- Method step (:func:`method_step`): one eval-mode forward without grad (inference), or one
  training step, forward + loss + backward with the method's second passes (erased images,
  region crops) and no optimizer update.
- Latency: ``torch.utils.benchmark.Timer``, with the caller's torch threads (Timer's own default
  would be one) and the accelerator synchronised by Timer. Either the median seconds per call
  of ``blocked_autorange`` blocks run for at least `min_run_time` seconds (after its own
  warm-up call), or, with `repeats`, ``Timer.timeit(repeats)``: the mean of one block of
  `repeats` calls after two warm-up calls (bounded cost for slow calls, e.g. 448 px on CPU).
- GEMM rate: FLOPs of ``torch.mm`` on n x n matrices of a dtype over its latency (the peak
  against which the benchmark's MFU is taken).
- One-off costs (:func:`wall_time`): seconds of a single call, e.g. the first call of a
  torch.compile'd step, which compiles; ``time.perf_counter`` around it, the accelerator
  synchronised before and after.
"""
from __future__ import annotations

import contextlib
import time
import warnings
from typing import Callable

import torch
from torch import nn
from torch.utils.benchmark import Measurement, Timer
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def conv_backward_flop(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation,
                       transposed, _output_padding, _groups, output_mask, out_shape=None,
                       **kwargs) -> int:
    """aten.convolution_backward: the input gradient (a transposed convolution of the output
    gradient with the same weight) and the weight gradient (a convolution of the input with the
    output gradient) each cost the forward's FLOPs, whose formula counts groups through the
    weight's shape (C_out, C_in / groups, kh, kw)."""
    forward = conv_flop_count(list(x_shape), list(w_shape), list(grad_out_shape), transposed)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def count_flops(fn: Callable, *args, **kwargs) -> int:
    """FLOPs that FlopCounterMode counts while ``fn(*args, **kwargs)`` runs (with our
    grouped-convolution backward)."""
    mapping = {torch.ops.aten.convolution_backward: conv_backward_flop}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        fn(*args, **kwargs)
    return int(counter.get_total_flops())


def method_step(model: nn.Module, x: torch.Tensor, train: bool = False,
                y: torch.Tensor | None = None) -> None:
    """One inference forward (no grad) or one training step without the optimizer update.

    Training labels default to one class for the whole batch, so that both pairings of the
    paired sampler (adjacent, halves) hold.
    """
    if train:
        model.train()
        y = torch.zeros(x.shape[0], dtype=torch.long, device=x.device) if y is None else y
        loss, _ = model.loss(model(x, y), y)
        loss.backward()
        model.zero_grad(set_to_none=True)
    else:
        model.eval()
        with torch.no_grad():
            model(x)


def count_macs(model: nn.Module, x: torch.Tensor, train: bool = False,
               y: torch.Tensor | None = None) -> float:
    """MACs per image of one inference forward (train=False) or training step (train=True)."""
    return count_flops(method_step, model, x, train, y) / 2 / x.shape[0]


def timing(fn: Callable[[], object], *, min_run_time: float = 0.2, repeats: int | None = None,
           warmup: int = 0, num_threads: int | None = None) -> Measurement:
    """Timer measurement of ``fn()`` (see the module docstring). `warmup`: untimed calls before
    timing, counting Timer's own (two for timeit, at least one for blocked_autorange);
    `num_threads`: torch threads while timing (default: the current number)."""
    for _ in range(warmup - (2 if repeats else 1)):
        fn()
    timer = Timer("fn()", globals={"fn": fn},
                  num_threads=num_threads or torch.get_num_threads())
    if repeats:
        return timer.timeit(repeats)
    return timer.blocked_autorange(min_run_time=min_run_time)


def latency(fn: Callable[[], object], **kwargs) -> float:
    """Seconds per call of ``fn()``: the median of :func:`timing` (same keyword arguments)."""
    return timing(fn, **kwargs).median


def measure_latency(model: nn.Module, x: torch.Tensor, train: bool = False, warmup: int = 1,
                    repeats: int | None = None, min_run_time: float = 0.2) -> float:
    """Milliseconds of one :func:`method_step` (inference forward / training step) on x."""
    return 1e3 * latency(lambda: method_step(model, x, train), warmup=warmup, repeats=repeats,
                         min_run_time=min_run_time)


def _sync(device: str | torch.device | None) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def wall_time(fn: Callable[[], object], device: str | torch.device | None = None) -> float:
    """Seconds of one call of ``fn()`` (a one-off cost such as compilation; not a latency)."""
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def gemm_rate(n: int = 2048, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
              min_run_time: float = 0.2) -> float:
    """FLOP/s of torch.mm on two n x n matrices of `dtype` (2 n^3 FLOPs over the median time)."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    return count_flops(torch.mm, a, b) / latency(lambda: torch.mm(a, b), min_run_time=min_run_time)


# ----------------------------------------------------------------------------- methods
def create(method: str, model_cfg: dict, num_classes: int,
           device: torch.device | str = "cpu") -> nn.Module:
    """The method, untrained (weights='none': no download, and costs do not depend on weights)."""
    from fgvc.methods import create_method

    with torch.device(device):
        return create_method(method, num_classes, **{**model_cfg, "weights": "none"})


@contextlib.contextmanager
def _fake_mode():
    """torch's FakeTensorMode with a shape environment: like meta, but also runs operators
    with data-dependent shapes (torchvision's NMS, `.item()` sizes)."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # notes about unbacked sizes of data-dependent ops
        with FakeTensorMode(shape_env=ShapeEnv(), allow_non_fake_inputs=True):
            yield


def macs_of_config(method: str, model_cfg: dict, num_classes: int) -> dict:
    """Parameters and per-image MACs (inference: batch 1; training step: batch 2 of one class)
    of a method built from `model_cfg` (fields of its Config, as in a run's config.json
    `model`) at its input_size.

    Each count is tried on the meta device (shapes only, no compute), then on fake tensors
    (data-dependent shapes, e.g. region proposals with NMS), then on real CPU tensors (slow at
    448: only for methods whose code needs real values). `counted_on` records where.
    """
    size = int(model_cfg.get("input_size", 448))
    out: dict = {}
    where = []
    for train, batch in ((False, 1), (True, 2)):
        # Real labels even on fake tensors: checks on them (same-class pairs) stay decidable.
        y = torch.zeros(batch, dtype=torch.long)
        for device in ("meta", "fake", "cpu"):
            try:
                with _fake_mode() if device == "fake" else contextlib.nullcontext():
                    torch.manual_seed(0)
                    dev = "cpu" if device == "fake" else device
                    model = create(method, model_cfg, num_classes, dev)
                    x = torch.randn(batch, 3, size, size, device=dev)
                    macs = count_macs(model, x, train, y.to(x.device) if device != "fake" else y)
                break
            except Exception:  # operators that need values: try the next, more costly, way
                if device == "cpu":
                    raise
        out["params"] = count_params(model)
        out["train_MACs" if train else "infer_MACs"] = macs
        where.append(device)
    out["counted_on"] = "/".join(where)
    return out
