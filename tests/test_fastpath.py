"""CPU fast paths: the resolution of train.amp / train.channels_last, the measured table, the
settings' parsing, and the float32 safety of losses and normalisations under bf16 autocast."""
from __future__ import annotations

import warnings

import pytest
import torch

from fgvc.study import fastpath
from fgvc.study.config import resolve
from fgvc.engine import forward_loss
from fgvc.layers.coattention import co_attend, co_attention_weights
from fgvc.layers.erase import erase, erase_mask, normalize_map
from fgvc.methods import create_method
from fgvc.methods.pcanet import CenterLoss
from fgvc.study.train import parse_overrides

SPR = {"avx2", "avx512f", "avx512_bf16", "avx512_fp16"}   # native bf16 (no AMX exposed)
SKX = {"avx2", "avx512f"}                                  # AVX512 without bf16
HSW = {"avx2", "fma"}                                      # AVX2 only
ENTRY = {"bf16": True, "channels_last": {"fp32": True, "bf16": False}}
TABLE = {"kinds": {"AVX512+avx512_bf16": {"backbones": {"resnet18": ENTRY}}}}


def test_cpu_kind_tells_bf16_cpus_apart():
    assert fastpath.cpu_kind("AVX512", SPR) == "AVX512+avx512_bf16"
    assert fastpath.cpu_kind("AVX512", SKX) == "AVX512"
    assert fastpath.cpu_kind("AVX512", SPR | {"amx_bf16"}) == "AVX512+amx_bf16+avx512_bf16"
    assert fastpath.native_bf16(SPR) and not fastpath.native_bf16(SKX)
    assert isinstance(fastpath.cpu_kind(), str) and fastpath.cpu_capability() in fastpath.cpu_kind()


def test_choose_needs_a_margin_and_native_bf16():
    rates = {"fp32_contiguous": 100, "fp32_channels_last": 104, "bf16_contiguous": 90,
             "bf16_channels_last": 120}
    assert fastpath.choose(rates, native=True) == {"bf16": True,
                                                    "channels_last": {"fp32": False, "bf16": True}}
    assert fastpath.choose(rates, native=False)["bf16"] is False
    assert fastpath.choose({"fp32_contiguous": 20, "fp32_channels_last": 32}, native=False) == \
        {"bf16": False, "channels_last": {"fp32": True, "bf16": False}}


def _cpu(amp="auto", layout="auto", backbone="resnet18", flags=SPR, kind=None):
    kind = kind or fastpath.cpu_kind("AVX512", flags)
    return fastpath.resolve(amp, layout, "cpu", backbone, kind=kind, flags=flags, table=TABLE)


def test_cpu_auto_follows_the_table_where_bf16_is_native():
    r = _cpu()
    assert (r["amp"], r["channels_last"], r["native_bf16"]) == ("bf16", False, True)
    assert "configs/fastpath.yaml AVX512+avx512_bf16 / resnet18" == r["fastpath"]
    assert _cpu("off")["channels_last"] is True          # fp32's layout from the table
    assert _cpu("off", False)["channels_last"] is False  # a set layout is kept
    assert _cpu(True)["amp"] == "bf16" and _cpu(False)["amp"] == "fp32"  # legacy booleans


def test_a_cpu_models_own_entry_overrides_its_kinds():
    """Two CPUs of one kind that measured otherwise: the model's entry (by model-name prefix)
    decides for that model and backbone; other models and backbones keep the kind's."""
    amd = {"bf16": False, "channels_last": {"fp32": False, "bf16": False}}
    table = {"kinds": {"AVX512+avx512_bf16": {
        "backbones": {"resnet18": ENTRY, "resnet50": ENTRY},
        "models": {"AMD EPYC": {"backbones": {"resnet18": amd}}}}}}

    def run(backbone, model):
        return fastpath.resolve("auto", "auto", "cpu", backbone, kind="AVX512+avx512_bf16",
                                flags=SPR, table=table, model=model, warn=False)

    r = run("resnet18", "AMD EPYC 9R14 96-Core Processor")
    assert (r["amp"], r["channels_last"]) == ("fp32", False)
    assert r["fastpath"] == "configs/fastpath.yaml AVX512+avx512_bf16 [AMD EPYC] / resnet18"
    assert run("resnet50", "AMD EPYC")["amp"] == "bf16"            # no model entry: the kind's
    r = run("resnet18", "Intel(R) Xeon(R) Processor")
    assert (r["amp"], r["channels_last"]) == ("bf16", False)
    assert r["fastpath"] == "configs/fastpath.yaml AVX512+avx512_bf16 / resnet18"


def test_unknown_kind_or_backbone_is_conservative():
    for r in (_cpu(backbone="resnet50"), _cpu(flags=SKX), _cpu(flags=HSW, kind="AVX2")):
        assert (r["amp"], r["channels_last"]) == ("fp32", False)
        assert r["fastpath"].startswith("no entry")


def test_bf16_never_auto_without_native_support_even_if_a_table_says_so():
    table = {"kinds": {"AVX2": {"backbones": {"resnet18": ENTRY}}}}
    r = fastpath.resolve("auto", "auto", "cpu", "resnet18", kind="AVX2", flags=HSW, table=table)
    assert r["amp"] == "fp32"


def test_forced_bf16_without_native_support_warns_and_runs():
    with pytest.warns(UserWarning, match="emulated"):
        r = _cpu("bf16", flags=SKX)
    assert r["amp"] == "bf16"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _cpu("bf16")["amp"] == "bf16"  # native: no warning


def test_cuda_rule_is_unchanged():
    r = fastpath.resolve("auto", "auto", "cuda:0", "resnet50", kind="AVX2", flags=HSW, table={})
    assert (r["amp"], r["channels_last"], r["fastpath"]) == ("fp16", True, "cuda rule")
    r = fastpath.resolve("off", False, "cuda", "resnet50", kind="AVX2", flags=HSW, table={})
    assert (r["amp"], r["channels_last"]) == ("fp32", False)


def test_bad_values_list_the_choices():
    with pytest.raises(ValueError, match="train.amp = 'fp8'; valid: auto, off, fp16, bf16"):
        _cpu("fp8")
    with pytest.raises(ValueError, match="train.channels_last = 1; valid: auto, true, false"):
        _cpu(layout=1)


def test_settings_accept_their_documented_choices_from_the_command_line():
    cfg = resolve("baseline", overrides=parse_overrides(["train.channels_last=true", "train.amp=bf16"]))
    assert cfg["train"]["channels_last"] is True and cfg["train"]["amp"] == "bf16"
    cfg = resolve("baseline", overrides=parse_overrides(["train.amp=false"]))
    assert cfg["train"]["amp"] == "off"  # legacy boolean, stored as its alias
    assert resolve("baseline", overrides={"train.amp": True})["config_hash"] == \
        resolve("baseline")["config_hash"]  # true is auto: the same run
    with pytest.raises(ValueError, match="train.channels_last = 'yes'; valid: auto, true, false"):
        resolve("baseline", overrides=parse_overrides(["train.channels_last=yes"]))
    with pytest.raises(ValueError, match="valid: auto, off, fp16, bf16"):
        resolve("baseline", overrides={"train.amp": "half"})


def test_the_measured_table_is_consistent():
    """Each entry holds the numbers that justify it, and its booleans are choose()'s of them."""
    table = fastpath.load_table()
    assert table["kinds"], "configs/fastpath.yaml has no CPU kind"
    for kind, k in table["kinds"].items():
        native = any(f in kind.split("+") for f in fastpath.NATIVE_BF16_FLAGS)
        for entry in [k, *(k.get("models") or {}).values()]:  # the kind's and its models'
            for backbone, e in (entry.get("backbones") or {}).items():
                assert {"date", "cpu", "torch", "threads"} <= set(entry["measured"]), kind
                assert e["bf16"] is False or native, (kind, backbone)
                assert {"bf16": e["bf16"], "channels_last": e["channels_last"]} == \
                    fastpath.choose(e["train_img_per_s"], native), (kind, backbone)


# ------------------------------------------------------------------ float32 under bf16 autocast
def _bf16():
    return torch.autocast("cpu", dtype=torch.bfloat16)


def test_centre_loss_is_float32_under_bf16():
    torch.manual_seed(0)
    loss = CenterLoss(5, 16, 0.1)
    loss.centers.normal_()
    feat, y = torch.randn(8, 16), torch.arange(8) % 5
    ref = loss(feat, y)
    with _bf16():
        out = loss(feat.bfloat16(), y)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=2e-2, atol=0)  # only the input's bf16 rounding


def test_co_attention_softmax_is_float32_under_bf16():
    torch.manual_seed(0)
    f1, f2 = torch.randn(2, 8, 36), torch.randn(2, 8, 36)
    ref = co_attention_weights(f1, f2)
    with _bf16():
        w = co_attention_weights(f1.bfloat16(), f2.bfloat16())
        fw = co_attend(torch.randn(4, 8, 6, 6).bfloat16())
    assert w.dtype == torch.float32 and torch.allclose(w.sum(-1), torch.ones(2, 8))
    # bf16 inputs carry ~3 significant digits into sums of 36 products
    torch.testing.assert_close(w, ref, atol=0.05, rtol=0)
    assert fw.dtype == torch.bfloat16  # eq. 2's product runs in autocast's dtype


def test_erase_maps_are_float32_under_bf16():
    torch.manual_seed(0)
    att = torch.rand(3, 4, 4)
    images = torch.randn(3, 3, 16, 16)
    ref_map, ref_mask = normalize_map(att), erase_mask(att, (16, 16), 0.5)
    with _bf16():
        m = normalize_map(att.bfloat16())
        mask = erase_mask(att.bfloat16(), (16, 16), 0.5)
        erased, _ = erase(images, att.bfloat16(), 0.5)
    assert m.dtype == mask.dtype == erased.dtype == torch.float32
    torch.testing.assert_close(m, ref_map, atol=1e-2, rtol=0)
    assert (mask != ref_mask).float().mean() < 0.05  # bf16 rounding moves at most an edge pixel


@pytest.mark.parametrize("method", ["baseline", "pcanet", "ma_ea"])
def test_method_losses_are_float32_under_bf16(method):
    """A method's loss on bf16 outputs, under bf16 autocast, is float32 and matches the loss of
    the float32 outputs; a whole bf16 training forward gives float32 loss and gradients."""
    torch.manual_seed(0)
    model = create_method(method, 4, backbone="resnet18", input_size=32).train()
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 0, 1])
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        out = model(x, y)
    ref, ref_parts = model.loss(out, y)
    low = {k: v.bfloat16() if torch.is_tensor(v) and v.is_floating_point() else v
           for k, v in out.items()}
    model.load_state_dict(state)  # centre updates undone
    with _bf16():
        loss, parts = model.loss(low, y)
    assert loss.dtype == torch.float32 and all(v.dtype == torch.float32 for v in parts.values())
    torch.testing.assert_close(loss, ref, rtol=2e-2, atol=1e-2)  # only the outputs' rounding
    model.load_state_dict(state)
    out, loss, parts = forward_loss(model, x, y, "bf16")  # as fgvc.engine trains
    assert out["logits"].dtype == loss.dtype == torch.float32
    assert all(v.dtype == torch.float32 for v in parts.values())
    # the first pass's CE stays close (a second pass may erase other pixels under bf16)
    torch.testing.assert_close(parts["ce"], ref_parts["ce"], rtol=0.05, atol=0.05)
    loss.backward()
    assert all(p.dtype == torch.float32 and (p.grad is None or p.grad.dtype == torch.float32)
               for p in model.parameters())
