"""Where focus's windows land: the geometry by hand, and the CLI on a tiny trained run."""
import torch

from fgvc.dev.diagnostics import _inside_share, main
from fgvc.paths import results_dir
from fgvc.study.run import run

from tiny import TINY


def test_inside_share_by_hand():
    bird = torch.tensor([10., 10., 30., 30.])
    boxes = torch.tensor([[10., 10., 30., 30.],    # the bird box itself: 1
                          [20., 20., 40., 40.],    # a quarter inside
                          [40., 40., 50., 50.]])   # outside: 0
    torch.testing.assert_close(_inside_share(boxes, bird), torch.tensor([1.0, 0.25, 0.0]))


def test_focus_regions_on_a_tiny_run(isolated_results, capsys):
    m = run(method="focus", profile="scratch", overrides=TINY, run_id="tiny-focus", progress=False)
    assert main(["focus-regions", str(results_dir() / "runs" / m["run_id"]), "--images", "4"]) == 0
    out = capsys.readouterr().out
    assert "tiny-focus" in out and "window_inside_bird" in out
