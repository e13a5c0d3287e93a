"""Fine-grained accuracy: the genus of each class per dataset, and the genus-level test scores."""
import math

import pytest
import torch
from torch import nn

from fgvc import io
from fgvc.data import build_data, load_aircraft, load_cars, load_cub
from fgvc.data import synthbirds
from fgvc.data.base import MalformedIndex
from fgvc.data.genera import CARS_MULTIWORD_MAKES, SYNTHBIRDS_META, cars_make, cub_genus, genus_index
from fgvc.engine import GENUS_COUNTS, evaluate, genus_counts, genus_metrics, genus_summary
from fgvc.study.run import run

from fixtures import make_aircraft, make_cars, make_cub
from tiny import TINY

# ----------------------------------------------------------------------------- the pure function

GENUS = [0, 0, 1, 1, 1]          # classes 0, 1 in genus 0; classes 2, 3, 4 in genus 1
TARGET = [0, 0, 1, 2, 3, 4]
PRED = [0, 1, 2, 2, 4, 0]
# right class: images 0, 3 (2 of 6); right genus: images 0, 1, 3, 4 (4 of 6);
# wrong: 1, 2, 4, 5, of which 1 and 4 stay in the genus (2 of 4);
# genus only: 1/2 + 1/2 + 1/2 + 1/3 + 1/3 + 1/3 = 2.5 of 6


def test_genus_metrics_by_hand():
    m = genus_metrics(PRED, TARGET, GENUS)
    assert m["genus_top1"] == pytest.approx(100 * 4 / 6)
    assert m["within_genus_top1"] == pytest.approx(50.0)
    assert m["errors_in_genus"] == pytest.approx(50.0)
    assert m["genus_only_top1"] == pytest.approx(100 * 2.5 / 6)
    assert genus_counts(torch.tensor(PRED), torch.tensor(TARGET), GENUS) == pytest.approx(
        {"n": 6, "correct": 2, "genus_correct": 4, "genus_only": 2.5})
    # the counts add up over batches (and ranks) to those of the whole
    a = genus_counts(torch.tensor(PRED[:4]), torch.tensor(TARGET[:4]), GENUS)
    b = genus_counts(torch.tensor(PRED[4:]), torch.tensor(TARGET[4:]), GENUS)
    assert genus_summary({k: a[k] + b[k] for k in GENUS_COUNTS}) == pytest.approx(m)


def test_genus_metrics_undefined_cases():
    perfect = genus_metrics([0, 2, 4], [0, 2, 4], GENUS)  # no errors: their share is undefined
    assert perfect["genus_top1"] == perfect["within_genus_top1"] == 100.0
    assert perfect["errors_in_genus"] is None
    wrong_genus = genus_metrics([2, 0], [0, 3], GENUS)  # no genus right: within-genus undefined
    assert wrong_genus["genus_top1"] == 0.0 and wrong_genus["errors_in_genus"] == 0.0
    assert wrong_genus["within_genus_top1"] is None
    empty = genus_metrics([], [], GENUS)
    assert all(v is None for v in empty.values())
    one_genus = genus_metrics([1, 0], [0, 0], [0, 0])  # every error stays in the only genus
    assert one_genus == {"genus_top1": 100.0, "within_genus_top1": 50.0, "errors_in_genus": 100.0,
                         "genus_only_top1": 50.0}


class _Fixed(nn.Module):
    """Logits from the input: image k of the batch carries its predicted class in pixel 0."""

    def forward(self, x, target=None):
        return {"logits": nn.functional.one_hot(x[:, 0, 0, 0].long(), len(GENUS)).float()}


def test_evaluate_reports_the_genus_scores_over_batches():
    images = torch.zeros(len(PRED), 3, 2, 2)
    images[:, 0, 0, 0] = torch.tensor(PRED, dtype=torch.float)
    target = torch.tensor(TARGET)
    loader = [(images[:4], target[:4]), (images[4:], target[4:])]
    got = evaluate(_Fixed(), loader, torch.device("cpu"), genus=GENUS)
    assert got["top1"] == pytest.approx(100 * 2 / 6)
    assert {k: got[k] for k in genus_metrics(PRED, TARGET, GENUS)} == pytest.approx(genus_metrics(PRED, TARGET, GENUS))
    plain = evaluate(_Fixed(), loader, torch.device("cpu"))
    assert set(plain) == {"top1", "top5", "loss", "n"}  # without a mapping: what it always gave


# ----------------------------------------------------------------------------- genera per dataset

def test_cub_genus_is_the_last_word(tmp_path):
    assert cub_genus("001.Black_footed_Albatross") == "Albatross"
    assert cub_genus("110.Geococcyx") == "Geococcyx"
    assert cub_genus("021.Eastern_Towhee") == "Towhee"
    names = ["Black_footed_Albatross", "Laysan_Albatross", "Groove_billed_Ani", "Geococcyx", "Sooty_Albatross"]
    split = load_cub(make_cub(tmp_path, names=names, per_class=2))
    assert split.classes[0] == "001.Black_footed_Albatross"
    assert split.genera == ["Albatross", "Albatross", "Ani", "Geococcyx", "Albatross"]
    assert split.genus_index == [0, 0, 1, 2, 0]
    assert load_cub(make_cub(tmp_path / "plain", n_classes=2, per_class=2)).genera == ["A", "B"]


def test_cars_genus_is_the_make(tmp_path):
    names = ["AM General Hummer SUV 2000", "Aston Martin V8 Vantage Coupe 2012", "Aston Martin Virage Coupe 2012",
             "Land Rover LR2 SUV 2012", "Mercedes-Benz C-Class Sedan 2012", "Rolls-Royce Ghost Sedan 2012",
             "Ram C/V Cargo Van Minivan 2012", "Dodge Ram Pickup 3500 Crew Cab 2010", "smart fortwo Convertible 2012",
             "HUMMER H2 SUT Crew Cab 2009", "Eagle Talon Hatchback 1998", "Land Rover Range Rover SUV 2012"]
    makes = ["AM General", "Aston Martin", "Aston Martin", "Land Rover", "Mercedes-Benz", "Rolls-Royce", "Ram",
             "Dodge", "smart", "HUMMER", "Eagle", "Land Rover"]
    assert [cars_make(n) for n in names] == makes
    assert set(CARS_MULTIWORD_MAKES) == {"AM General", "Aston Martin", "Land Rover"}
    make_cars(tmp_path, class_names=names, per_class=2)
    split = load_cars(tmp_path)
    assert split.classes == names and split.genera == makes
    assert split.genus_index == [0, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 2]


def test_aircraft_genus_is_the_family_from_its_files(tmp_path):
    base = make_aircraft(tmp_path, variants=["707-320", "Boeing 737-200", "737-300", "A320"], per_class=3)
    split = load_aircraft(tmp_path)
    assert split.genera == ["Boeing 707", "Boeing 737", "Boeing 737", "A320"]
    assert split.genus_index == [0, 1, 1, 2]
    bundle = build_data("aircraft", tmp_path, resize=32, crop=24, val_fraction=0.0, cache=False)
    assert bundle.genera == split.genera and bundle.genus_index == [0, 1, 1, 2]
    # a copy without the family files: genera unknown, the variants load as before
    make_aircraft(tmp_path / "bare", families=False)
    assert load_aircraft(tmp_path / "bare").genera is None
    # a variant with two families is a corrupt index
    fam = base / "data" / "images_family_test.txt"
    lines = fam.read_text().splitlines()
    image_id, _ = lines[0].split(" ", 1)
    fam.write_text("\n".join([f"{image_id} Boeing 747"] + lines[1:]) + "\n")
    with pytest.raises(MalformedIndex, match="two families"):
        load_aircraft(tmp_path)


def test_synthbirds_genera_are_its_own(tmp_path):
    root = synthbirds.ensure(tmp_path / "sb", n_genera=2, species_per_genus=3, train_per_class=1,
                             test_per_class=1, image_size=32)
    split = load_cub(root)
    assert split.genus_index == synthbirds.genus_of(root) == [0, 0, 0, 1, 1, 1]
    assert split.genera == ["Finch"] * 3 + ["Warbler"] * 3
    assert SYNTHBIRDS_META == synthbirds.META_FILE
    assert genus_index(["b", "a", "b"]) == [0, 1, 0] and genus_index(None) is None


# ----------------------------------------------------------------------------- end to end

def test_tiny_run_records_the_genus_scores(isolated_results):
    one_step = {**TINY, "train.epochs": 1, "train.max_steps": 1}  # TINY's data and model, one step
    m = run(method="baseline", profile="scratch", overrides=one_step, run_id="genus", progress=False)
    on_disk = io.read_json(isolated_results / "results/runs/genus/metrics.json")
    keys = ("test_genus_top1", "test_within_genus_top1", "test_errors_in_genus", "n_genera",
            "genus_only_top1", "chance_top1")
    assert all(k in on_disk for k in keys)
    assert {k: on_disk[k] for k in keys} == {k: m[k] for k in keys}
    assert m["n_genera"] == 2 and m["chance_top1"] == 25.0  # TINY: 2 genera x 2 species
    assert m["genus_only_top1"] == 50.0
    assert m["test_genus_top1"] >= m["test_top1"]
    if m["test_within_genus_top1"] is not None:  # top-1 = genus top-1 x within-genus top-1
        assert m["test_top1"] == pytest.approx(m["test_genus_top1"] * m["test_within_genus_top1"] / 100)
    assert m["test_errors_in_genus"] is None or 0 <= m["test_errors_in_genus"] <= 100
    assert not any(isinstance(v, float) and math.isnan(v) for v in on_disk.values())
