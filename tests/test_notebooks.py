"""Papermill smoke runs of the notebooks with tiny parameters on a fresh run (nbval separately
re-executes the stored notebooks and compares the outputs of cells marked NBVAL_CHECK_OUTPUT);
every parameters cell is read by papermill without a warning; the kernel papermill runs logs
no warning or error. tests/test_clone_defaults.py runs every notebook with its stored defaults
in a clone."""
import ast
import json
import logging
import re
import subprocess
import sys

import nbformat
import papermill as pm
import pytest

from fgvc.study.notebook import execute
from fgvc.paths import NOTEBOOKS, ROOT

from tiny import TINY, TINY_SYNTH

NOTEBOOK_NAMES = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))

# The training notebook writes into the root it is given (results_root), here not FGVC_RESULTS;
# the report notebooks read that root (records) instead of the committed study.
GIVEN = "given"
PARAMS = {
    "00_data.ipynb": {"dataset": "synthbirds", "synth": TINY_SYNTH, "n_samples": 4},
    "10_train.ipynb": {"method": "baseline", "overrides": TINY, "run_id": "smoke",
                       "progress": False},
    "40_complexity.ipynb": {"latency_variants": "none"},
}
REPORT_NOTEBOOKS = ["20_gradcam.ipynb", "30_report.ipynb", "40_complexity.ipynb"]


def _execute(name: str, out, params: dict):
    execute(NOTEBOOKS / name, out, parameters=params, cwd=ROOT)
    return json.loads(out.read_text())


def _parameters_cell(name: str) -> dict:
    """{name: value} of every assignment in the notebook's parameters cell (read by Python)."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    cell, = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    tree = ast.parse(cell.source)
    return {node.targets[0].id: ast.literal_eval(node.value) for node in tree.body
            if isinstance(node, ast.Assign)}


@pytest.mark.parametrize("name", NOTEBOOK_NAMES)
def test_papermill_reads_every_parameter_without_a_warning(name, tmp_path, caplog):
    params = _parameters_cell(name)
    assert params
    with caplog.at_level(logging.WARNING, logger="papermill"):
        found = pm.inspect_notebook(str(NOTEBOOKS / name))
        pm.execute_notebook(str(NOTEBOOKS / name), str(tmp_path / name), parameters=params,
                            prepare_only=True, kernel_name="python3", progress_bar=False)
    assert list(found) == list(params)
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_papermill_command_line_prepares_the_training_notebook_without_a_warning(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "papermill", str(NOTEBOOKS / "10_train.ipynb"),
                           str(tmp_path / "out.ipynb"), "--prepare-only", "-p", "dataset", "cub",
                           "-p", "run_id", "x", "-p", "config", "{}"],
                          capture_output=True, text=True, check=True)
    assert "Unable to parse" not in proc.stderr and "unknown parameter" not in proc.stderr, proc.stderr


def test_kernel_logs_no_error_at_shutdown(tmp_path):
    """jupyter_client interrupts the kernel before asking it to shut down; papermill's last
    request (kernel_info) is answered before the kernel leaves its handler, so the interrupt
    can land in the handler: "KeyboardInterrupt caught in kernel". Here the kernel lingers in
    that handler for a second, so that plain papermill always shows it; fgvc.study.notebook's kernel
    manager does not interrupt at shutdown, and uses IPC, so ipykernel has no TCP warning."""
    nb = nbformat.v4.new_notebook()
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(
        "import inspect, time\n"
        "kernel = get_ipython().kernel\n"
        "reply = kernel.shell_handlers['kernel_info_request']\n"
        "async def lingering(*args):\n"
        "    result = reply(*args)\n"
        "    if inspect.isawaitable(result):\n"
        "        await result\n"
        "    time.sleep(1.0)\n"
        "kernel.shell_handlers['kernel_info_request'] = lingering\n")]
    nbformat.write(nb, tmp_path / "linger.ipynb")
    plain = subprocess.run([sys.executable, "-m", "papermill", str(tmp_path / "linger.ipynb"),
                            str(tmp_path / "a.ipynb"), "-k", "python3", "--no-progress-bar"],
                           capture_output=True, text=True)
    assert "KeyboardInterrupt caught in kernel" in plain.stderr, \
        "the reproduction no longer reproduces: is QuietKernelManager still needed?"
    ours = subprocess.run([sys.executable, "-m", "fgvc.study.notebook", str(tmp_path / "linger.ipynb"),
                           str(tmp_path / "b.ipynb")], capture_output=True, text=True)
    assert ours.returncode == 0, ours.stderr
    assert "ERROR" not in ours.stderr and "WARNING" not in ours.stderr, ours.stderr


@pytest.mark.parametrize("name", ["10_train.ipynb"] + REPORT_NOTEBOOKS)
def test_notebook_runs_with_papermill(name, isolated_results, tmp_path):
    given = isolated_results / GIVEN
    train = {**PARAMS["10_train.ipynb"], "results_root": str(given)}
    if name != "10_train.ipynb":  # report notebooks need a run to report on
        _execute("10_train.ipynb", tmp_path / "train.ipynb", train)
        params = {**PARAMS.get(name, {}), "records": str(given), "profile": "scratch",
                  "write": True}
    nb = _execute(name, tmp_path / name, train if name == "10_train.ipynb" else params)
    errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    text = "".join(t for c in nb["cells"] for o in c.get("outputs", []) for t in o.get("text", []))
    assert str(ROOT) + "/" not in (tmp_path / name).read_text()   # no path of this machine
    if name == "10_train.ipynb":
        assert (given / "runs/smoke/metrics.json").is_file()
        assert not (isolated_results / "results/runs").exists()   # results_root wins over FGVC_RESULTS
        images = [o for c in nb["cells"] for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
        assert images, "the training curves are kept in the executed notebook"
    else:
        if name != "40_complexity.ipynb":
            assert "1 complete runs of profile 'scratch'" in text
        # one run is not the scratch grid: asked to write, the report writes nothing
        assert re.search(r"'scratch' grid in .* is incomplete \(\d+ runs missing: .*\): "
                         "nothing is written", text), text
        assert not (given / "tables").exists() and not (given / "figures").exists()


def test_training_notebook_rejects_unknown_parameters_before_work(isolated_results, tmp_path):
    with pytest.raises(pm.PapermillExecutionError, match="unknown method 'lafee'"):
        _execute("10_train.ipynb", tmp_path / "bad.ipynb", {"method": "lafee"})
    assert not (isolated_results / "results/runs").exists()
