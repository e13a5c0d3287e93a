"""Fast paths chosen by the machine's own capability and a measured table, not by guesswork.

A run's `train.amp` (auto | off | fp16 | bf16) and `train.channels_last` (auto | true | false)
are resolved where the run executes (fgvc.study.run.resolve_machine calls :func:`resolve`) into a
dtype ("fp32", "fp16", "bf16") and a memory layout (a bool), never "auto":

- CUDA: amp auto = fp16 (with a GradScaler), channels_last auto = true (as before).
- CPU: amp auto = bf16 only where the CPU computes bf16 natively (its /proc/cpuinfo flags
  hold avx512_bf16 or amx_bf16, :func:`native_bf16`) AND the measured table says the
  backbone trains faster with it; channels_last auto = the table's layout for the backbone
  and the dtype in use. A CPU kind (:func:`cpu_kind`: torch's capability string, e.g.
  "AVX512", plus its native-bf16 flags) or backbone without an entry gets the conservative
  choice: fp32, contiguous. bf16 forced on a CPU without native bf16 works but warns (it is
  emulated, many times slower).
- Other devices: auto = fp32, contiguous.

The table is configs/fastpath.yaml, measured once per CPU kind (python -m fgvc.dev.bench
--fastpath-entry prints the entry of this machine; fgvc.dev.bench times, this module only reads).
Its entries hold the train-step images/s that justify them, and :func:`choose` is the rule
that turned those numbers into the stored booleans.
"""
from __future__ import annotations

import functools
import warnings
from pathlib import Path

from fgvc.paths import CONFIGS

TABLE = CONFIGS / "fastpath.yaml"
AMP_CHOICES = ("auto", "off", "fp16", "bf16")
LAYOUT_CHOICES = ("auto", True, False)
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
NATIVE_FP16_FLAGS = ("avx512_fp16", "amx_fp16")
MARGIN = 0.05  # a fast path must beat the plain one by 5% (the machine may be shared)
CONSERVATIVE = {"bf16": False, "channels_last": {"fp32": False, "bf16": False}}


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    path = Path("/proc/cpuinfo")
    if not path.is_file():
        return frozenset()
    for line in path.read_text().splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_model() -> str:
    import platform

    path = Path("/proc/cpuinfo")
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_capability() -> str:
    """torch's CPU capability string: "DEFAULT", "AVX2", "AVX512" (x86), "SVE256", ..."""
    import torch

    return torch.backends.cpu.get_cpu_capability()


def native_bf16(flags: frozenset[str] | set[str] | None = None) -> bool:
    """True when the CPU computes bf16 in hardware (avx512_bf16 or AMX)."""
    flags = cpu_flags() if flags is None else flags
    return any(f in flags for f in NATIVE_BF16_FLAGS)


def cpu_kind(capability: str | None = None, flags: frozenset[str] | set[str] | None = None) -> str:
    """The table's key for a CPU: torch's capability string, then its native-bf16 flags,
    e.g. "AVX512+avx512_bf16", "AVX512+amx_bf16+avx512_bf16", "AVX2" (torch reports "AVX512"
    alike for CPUs with and without bf16 instructions)."""
    capability = cpu_capability() if capability is None else capability
    flags = cpu_flags() if flags is None else flags
    return "+".join([capability, *sorted(f for f in NATIVE_BF16_FLAGS if f in flags)])


def load_table(path: str | Path | None = None) -> dict:
    import yaml

    p = Path(path) if path else TABLE
    return (yaml.safe_load(p.read_text()) or {}) if p.is_file() else {}


def table_entry(kind: str, backbone: str, table: dict | None = None,
                model: str | None = None) -> tuple[dict | None, str]:
    """The table's measured choices for a backbone on a CPU kind, or None, and where they
    came from. Two CPUs of one kind can differ in what pays (an Intel Xeon and an AMD EPYC,
    both AVX512 + avx512_bf16: bf16 slower on the first, twice as fast for ResNets on the
    second), so a kind may hold `models:` entries keyed by the start of the CPU's model name,
    each with its own `backbones`; a model without one gets the kind's own."""
    table = load_table() if table is None else table
    k = (table.get("kinds") or {}).get(kind) or {}
    model = cpu_model() if model is None else model
    for prefix, sub in (k.get("models") or {}).items():
        if model.startswith(prefix) and backbone in (sub.get("backbones") or {}):
            return sub["backbones"][backbone], f"configs/fastpath.yaml {kind} [{prefix}] / {backbone}"
    entry = (k.get("backbones") or {}).get(backbone)
    return entry, f"configs/fastpath.yaml {kind} / {backbone}"


def choose(img_per_s: dict[str, float], native: bool, margin: float = MARGIN) -> dict:
    """The rule from measured train images/s ({"fp32_contiguous": .., "fp32_channels_last": ..,
    "bf16_contiguous": .., "bf16_channels_last": ..}; bf16 ones may be missing) to choices:
    per dtype, channels_last where it beats contiguous by `margin`; bf16 (only if native)
    where its better layout beats fp32's better layout by `margin`."""
    def best(dtype: str) -> tuple[float, bool]:
        plain = img_per_s.get(f"{dtype}_contiguous") or 0.0
        cl = img_per_s.get(f"{dtype}_channels_last") or 0.0
        return (cl, True) if cl > (1 + margin) * plain else (plain, False)

    (fp32, fp32_cl), (bf16, bf16_cl) = best("fp32"), best("bf16")
    return {"bf16": bool(native and bf16 > (1 + margin) * fp32),
            "channels_last": {"fp32": fp32_cl, "bf16": bf16_cl}}


def check_choice(name: str, value, choices: tuple) -> None:
    """Raise a ValueError naming the valid choices of a setting."""
    same_type = [c for c in choices if type(c) is type(value)]  # 1 is not true, "true" neither
    if value not in same_type:
        shown = ", ".join(str(c).lower() if isinstance(c, bool) else c for c in choices)
        raise ValueError(f"setting {name} = {value!r}; valid: {shown}")


def resolve(amp, channels_last, device: str, backbone: str, *, kind: str | None = None,
            flags: frozenset[str] | set[str] | None = None, table: dict | None = None,
            model: str | None = None, warn: bool = True) -> dict:
    """The resolved precision and layout of a run on `device` ("cpu", "cuda", "cuda:1", ...).

    Returns {"amp": "fp32" | "fp16" | "bf16", "channels_last": bool, "native_bf16": bool,
    "cpu_kind": str, "fastpath": where the choice came from}. `amp` also takes the legacy
    booleans (true = auto, false = off).
    """
    amp = {True: "auto", False: "off"}.get(amp, amp) if isinstance(amp, bool) else amp
    check_choice("train.amp", amp, AMP_CHOICES)
    check_choice("train.channels_last", channels_last, LAYOUT_CHOICES)
    device_type = str(device).split(":")[0]
    flags = cpu_flags() if flags is None else flags
    kind = cpu_kind(flags=flags) if kind is None else kind
    native = native_bf16(flags)
    out = {"native_bf16": native, "cpu_kind": kind}
    if device_type == "cuda":
        dtype = {"auto": "fp16", "off": "fp32"}.get(amp, amp)
        if dtype == "bf16" and warn:
            import torch

            if not torch.cuda.is_bf16_supported():
                warnings.warn("train.amp = bf16 on a GPU without bf16 support", stacklevel=2)
        layout = True if channels_last == "auto" else channels_last
        return {**out, "amp": dtype, "channels_last": layout, "fastpath": "cuda rule"}
    if device_type != "cpu":
        dtype = "fp32" if amp in ("auto", "off") else amp
        layout = False if channels_last == "auto" else channels_last
        return {**out, "amp": dtype, "channels_last": layout, "fastpath": f"{device_type}: conservative"}

    entry, source = table_entry(kind, backbone, table, model)
    if not entry:
        source = f"no entry for {kind} / {backbone}: conservative"
    entry = entry or CONSERVATIVE
    if amp == "auto":
        dtype = "bf16" if native and entry.get("bf16") else "fp32"
    else:
        dtype = {"off": "fp32"}.get(amp, amp)
    if warn and dtype == "bf16" and not native:
        warnings.warn(f"train.amp = bf16 on a CPU without native bf16 ({kind}: no "
                      f"{' / '.join(NATIVE_BF16_FLAGS)}): it is emulated and many times slower "
                      "than fp32", stacklevel=2)
    if warn and dtype == "fp16" and not any(f in flags for f in NATIVE_FP16_FLAGS):
        warnings.warn(f"train.amp = fp16 on a CPU without native fp16 ({kind}): expect it "
                      "to be slower than fp32", stacklevel=2)
    if channels_last == "auto":
        layout = bool((entry.get("channels_last") or {}).get(dtype, False))
    else:
        layout = channels_last
    return {**out, "amp": dtype, "channels_last": layout, "fastpath": source}
