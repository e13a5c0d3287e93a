"""Where things are written: the scratch folder by default, checkpoints per results root, the
grid's destination passed to the training notebook, a report that writes only a complete grid
and says what it replaced, and stored notebooks that JupyterLab opens without rewriting them."""
import json
import subprocess

import pytest

from fgvc import paths
from fgvc.paths import NOTEBOOKS, ROOT, SCRATCH, STUDY
from fgvc.data.registry import list_datasets
from fgvc.study import grid
from fgvc.study.config import load_profile
from fgvc.study.notebook import KERNELSPEC, normalise
from fgvc.study import report
from fgvc.study.report import Outputs, grid_gaps
from fgvc.study.results import load_runs


def test_defaults_write_into_the_ignored_scratch_folder(monkeypatch):
    for var in ("FGVC_RESULTS", "FGVC_CHECKPOINTS"):
        monkeypatch.delenv(var, raising=False)
    assert paths.results_dir() == SCRATCH / "results"
    assert paths.checkpoints_dir() == SCRATCH / "results" / ".checkpoints"
    ignored = subprocess.run(["git", "check-ignore", "-q", "scratch/results/runs/x/metrics.json"],
                             cwd=ROOT)
    assert ignored.returncode == 0


def test_checkpoints_are_per_results_root(monkeypatch, tmp_path):
    monkeypatch.delenv("FGVC_CHECKPOINTS", raising=False)
    assert paths.checkpoints_for(STUDY) == paths.checkpoints_for("results") == ROOT / ".checkpoints"
    monkeypatch.setenv("FGVC_RESULTS", str(tmp_path / "a"))
    assert paths.checkpoints_dir() == tmp_path / "a" / ".checkpoints"
    monkeypatch.setenv("FGVC_RESULTS", "results")  # relative: from the repository root
    assert paths.results_dir() == STUDY and paths.checkpoints_dir() == ROOT / ".checkpoints"
    monkeypatch.setenv("FGVC_CHECKPOINTS", str(tmp_path / "c"))
    assert paths.checkpoints_dir() == tmp_path / "c"


def test_the_grid_passes_its_destination_to_the_training_notebook(isolated_results, monkeypatch):
    seen = {}

    def fake_run(cmd, **kw):
        seen["params"] = json.loads(cmd[cmd.index("--parameters") + 1])
        return subprocess.CompletedProcess(cmd, 1)

    monkeypatch.setattr(grid.subprocess, "run", fake_run)
    cfg = grid.plan("scratch", methods=["baseline"], variants=["full"], seeds=[0])[0].config()
    with pytest.raises(RuntimeError):
        grid.execute(cfg)
    assert seen["params"]["results_root"] == str(isolated_results / "results")


def test_a_report_writes_only_a_complete_grid_and_says_what_it_replaced(tmp_path):
    study = load_runs(STUDY)   # the default study's grid: its profile's runs on its own dataset
    study = study[(study["profile"] == "transfer")
                  & (study["dataset"] == load_profile("transfer")["dataset"])]
    assert grid_gaps(study, "transfer") == []
    part = Outputs(tmp_path, study.iloc[1:], "transfer", write=True)
    assert not part.write and study["run_id"].iloc[0] in part.status()
    part.text("tables/x.md", "new")
    assert not (tmp_path / "tables").exists()
    assert "nothing is written" in part.summary()
    idle = Outputs(tmp_path, study, "transfer")  # write defaults to False
    idle.text("tables/x.md", "new")
    assert not (tmp_path / "tables").exists()
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables/same.md").write_text("same")
    (tmp_path / "tables/old.md").write_text("old")
    out = Outputs(tmp_path, study, "transfer", write=True)
    for name, text in (("same.md", "same"), ("old.md", "changed"), ("new.md", "new")):
        out.text(f"tables/{name}", text)
    assert (tmp_path / "tables/old.md").read_text() == "changed"
    assert out.done == [("tables/same.md", "unchanged"), ("tables/old.md", "replaced"),
                        ("tables/new.md", "new")]
    assert "replaced  tables/old.md" in out.summary()
    # a chart with nothing to show removes the one an earlier study left, and only that
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures/ablation_x.png").write_bytes(b"old chart")
    out.figure(None, "figures/ablation_x.png")
    out.figure(None, "figures/ablation_y.png")
    assert not (tmp_path / "figures/ablation_x.png").exists()
    assert out.done[-1] == ("figures/ablation_x.png", "removed") and len(out.done) == 4


def test_each_other_dataset_of_the_profile_gets_its_own_gallery_notebook(tmp_path, monkeypatch):
    from fixtures import write_run_record

    for ds, profile in (("synthbirds", "transfer"), ("cub30", "transfer"), ("cub", "scratch")):
        write_run_record(tmp_path, "baseline", 0, dataset=ds, profile=profile)
    assert report.other_datasets(tmp_path, "transfer") == ["cub30"]   # not the profile's own
    ran = []
    monkeypatch.setattr(report, "execute", lambda src, dst, parameters, cwd: ran.append(
        (src.name, dst.name, parameters.get("dataset", ""))))
    monkeypatch.setattr(report, "normalise", lambda path: None)
    monkeypatch.setattr(report, "results_dir", lambda: tmp_path / "scratch")
    report.build("transfer", ["30_report.ipynb", "20_gradcam.ipynb"], tmp_path)
    assert ran == [("30_report.ipynb", "30_report.ipynb", ""),
                   ("20_gradcam.ipynb", "20_gradcam.ipynb", ""),
                   ("20_gradcam.ipynb", "20_gradcam_cub30.ipynb", "cub30")]
    ran.clear()
    report.build("transfer", ["30_report.ipynb"], tmp_path)            # no gallery asked: none
    assert [r[1] for r in ran] == ["30_report.ipynb"]


@pytest.mark.parametrize("dataset", list_datasets())
def test_a_real_datasets_gallery_stays_out_of_git_and_synthbirds_is_committed(dataset):
    """A gallery shows the dataset's photos: CUB's terms (CUB-30 included) keep them out of
    the repository; SynthBirds' generated images are the study's own."""
    paths = [f"results/figures/gallery_{dataset}_gradcam.png",
             "results/reports/20_gradcam.ipynb" if dataset == "synthbirds"
             else f"results/reports/20_gradcam_{dataset}.ipynb"]
    ignored = subprocess.run(["git", "check-ignore", "--no-index", *paths], cwd=ROOT,
                             capture_output=True, text=True).stdout.split()
    assert ignored == ([] if dataset == "synthbirds" else paths)


# the notebooks and the executed reports JupyterLab shows (make lab: the whole repository)
STORED = sorted(str(p.relative_to(ROOT)) for p in [*NOTEBOOKS.glob("*.ipynb"),
                                                    *(STUDY / "reports").glob("*.ipynb")])


@pytest.mark.parametrize("name", STORED)
def test_stored_notebooks_name_the_installed_kernel_and_carry_no_volatile_metadata(name):
    nb = json.loads((ROOT / name).read_text())
    assert nb["metadata"]["kernelspec"] == KERNELSPEC
    assert "papermill" not in nb["metadata"] and "widgets" not in nb["metadata"]
    assert normalise(ROOT / name, verify=True), "run make notebooks (nbstripout)"
    cells = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert not [c for c in cells if set(c["metadata"]) - {"tags"}]
    assert [c["execution_count"] for c in cells] == list(range(1, len(cells) + 1))  # nbval
    assert any(c.get("outputs") for c in cells), "the stored outputs are kept"


def test_the_stored_reports_show_the_committed_study():
    def text(name):
        nb = json.loads((NOTEBOOKS / name).read_text())
        return "".join(t for c in nb["cells"] for o in c.get("outputs", []) for t in o.get("text", []))

    for name in ("20_gradcam.ipynb", "30_report.ipynb"):
        assert f"{len(load_runs(STUDY))} complete runs of profile 'transfer' in results" in text(name)
    assert "results/figures/gallery_synthbirds_gradcam.png" in text("20_gradcam.ipynb")
