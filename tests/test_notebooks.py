"""Papermill smoke runs of every notebook with tiny parameters (nbval separately re-executes
the stored notebooks and compares the outputs of cells marked NBVAL_CHECK_OUTPUT)."""
import json

import papermill as pm
import pytest

from fgvc.paths import NOTEBOOKS, ROOT

from tiny import TINY, TINY_SYNTH

PARAMS = {
    "00_data.ipynb": {"dataset": "synthbirds", "synth": TINY_SYNTH, "n_samples": 4},
    "10_train.ipynb": {"method": "baseline", "overrides": TINY, "run_id": "smoke",
                       "progress": False},
}


def _execute(name: str, out, params: dict):
    pm.execute_notebook(str(NOTEBOOKS / name), str(out), parameters=params, cwd=str(ROOT),
                        progress_bar=False, kernel_name="python3")
    return json.loads(out.read_text())


@pytest.mark.parametrize("name", sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")))
def test_notebook_runs_with_papermill(name, isolated_results, tmp_path):
    if name != "10_train.ipynb":  # report notebooks need a run to report on
        _execute("10_train.ipynb", tmp_path / "train.ipynb", PARAMS["10_train.ipynb"])
    nb = _execute(name, tmp_path / name, PARAMS.get(name, {}))
    errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    if name == "10_train.ipynb":
        assert (isolated_results / "results/runs/smoke/metrics.json").is_file()
        images = [o for c in nb["cells"] for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
        assert images, "the training curves are kept in the executed notebook"


def test_training_notebook_rejects_unknown_parameters_before_work(isolated_results, tmp_path):
    with pytest.raises(pm.PapermillExecutionError, match="unknown method 'lafee'"):
        _execute("10_train.ipynb", tmp_path / "bad.ipynb", {"method": "lafee"})
    assert not (isolated_results / "results/runs").exists()
