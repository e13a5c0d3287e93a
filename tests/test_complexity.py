"""The complexity table: parameters, MACs (fgvc.study.cost, checked against FlopCounterMode on
torchvision) and latency of the methods."""
import pytest
import torch
from torchvision.models import resnet18

from fgvc.study.complexity import complexity_markdown_table, complexity_table, macs_of
from fgvc.study.cost import count_macs, count_params, measure_latency
from fgvc.methods import list_methods

SIZE = 64


def test_baseline_macs_match_torchvision_resnet18():
    net = resnet18(num_classes=10)
    x = torch.randn(1, 3, SIZE, SIZE)
    m = macs_of("baseline", "full", num_classes=10, backbone="resnet18", input_size=SIZE)
    with torch.utils.flop_counter.FlopCounterMode(display=False) as c:
        net.eval()(x)
    assert m["params"] == count_params(net)
    assert m["infer_MACs"] == pytest.approx(c.get_total_flops() / 2)
    assert m["counted_on"] == "meta/meta"
    # a training step is forward + backward: about 3x the forward (no input gradient)
    assert 2.5 < m["train_MACs"] / m["infer_MACs"] < 3.1


@pytest.mark.parametrize("method", list_methods())
def test_every_method_is_counted(method):
    m = macs_of(method, "full", num_classes=5, backbone="resnet18", input_size=SIZE)
    assert m["params"] > 0 and m["infer_MACs"] > 0
    assert m["train_MACs"] > 2 * m["infer_MACs"]


def test_latency_and_table():
    torch.manual_seed(0)
    net = resnet18(num_classes=3)
    assert measure_latency(net.eval(), torch.randn(1, 3, 32, 32), warmup=0, repeats=1) > 0
    t = complexity_table(["baseline"], "all", "all", num_classes=3, backbone="resnet18",
                         input_size=32, train_latency=True, repeats=1, warmup=0)
    assert list(t["variant"]) == ["full"]
    assert {"params_M", "infer_GMACs", "train_GMACs", "infer_ms", "train_ms"} <= set(t.columns)
    assert "paper_GMACs" not in t  # the paper's Table 4 is at ResNet-50 / 448 only
    md = complexity_markdown_table(t)
    assert "params (M)" in md.columns


def test_count_macs_of_a_linear_layer():
    lin = torch.nn.Linear(4, 3)
    assert count_macs(lin, torch.randn(2, 4)) == 12  # per image
