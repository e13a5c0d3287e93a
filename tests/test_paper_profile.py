"""The `paper` profile (ResNet-50 at 448, each paper's settings) runs a few steps of every
method on the CPU, so the configuration users run on GPUs is known to work."""
import pytest

from fgvc.methods import list_methods
from fgvc.run import run

from tiny import TINY_SYNTH


@pytest.mark.slow
@pytest.mark.parametrize("method", list_methods())
def test_paper_profile_runs_a_few_steps_at_448(method, isolated_results):
    over = {"model.weights": "none", "train.epochs": 1, "train.max_steps": 2,
            "train.batch_size": 2, "train.eval_batch_size": 2, "train.num_workers": 0,
            "data.synth": TINY_SYNTH}
    m = run(method=method, dataset="synthbirds", profile="paper", overrides=over,
            run_id=f"paper-{method}", progress=False)
    assert m["epochs"] == 1 and m["n_train"] > 0
    cfg = (isolated_results / f"results/runs/paper-{method}/config.json").read_text()
    assert '"crop": 448' in cfg and '"backbone": "resnet50"' in cfg
