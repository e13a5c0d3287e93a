"""fgvc.dev.mutation (the make mutate report): mutmut's listing parsed, names split into module and
function, every survivor explained or flagged, a killed_by entry checked against this run."""
from fgvc.dev import mutation

LISTING = """\
    fgvc.layers.erase.x_erase__mutmut_1: killed
    fgvc.layers.erase.x_erase__mutmut_2: survived
    fgvc.layers.erase.x_erase__mutmut_9: survived
    fgvc.methods.ma_ea.xǁMaEaǁloss__mutmut_3: no tests
    fgvc.methods.ma_ea.xǁMaEaǁloss__mutmut_4: killed
"""


def test_parse_and_names():
    s = mutation.parse_results("noise line\n" + LISTING)
    assert len(s) == 5 and s["fgvc.methods.ma_ea.xǁMaEaǁloss__mutmut_3"] == "no tests"
    assert mutation.module_of("fgvc.methods.ma_ea.xǁMaEaǁloss__mutmut_3") == "fgvc.methods.ma_ea"
    assert mutation.function_of("fgvc.methods.ma_ea.xǁMaEaǁloss__mutmut_3") == "MaEa.loss"
    assert mutation.function_of("fgvc.layers.erase.x_erase__mutmut_2") == "erase"
    rows = {r["module"]: r for r in mutation.summary(s)}
    assert rows["fgvc.layers.erase"]["mutants"] == 3 and rows["fgvc.layers.erase"]["survived"] == 2
    assert rows["fgvc.methods.ma_ea"]["killed %"] == 50.0


def test_every_survivor_needs_an_entry_and_killed_by_is_checked():
    s = mutation.parse_results(LISTING)
    explained = {"fgvc.layers.erase.x_erase__mutmut_9": {"equivalent": "shape[+2:] is shape[2:]"},
                 "fgvc.layers.erase.x_erase__mutmut_1": {"killed_by": "tests/x.py::t"},
                 "fgvc.methods.ma_ea.xǁMaEaǁloss__mutmut_3": {"killed_by": "tests/y.py::t"}}
    rows = {r["mutant"]: r for r in mutation.check(s, explained)}
    assert not rows["fgvc.layers.erase.x_erase__mutmut_2"]["ok"]          # survived, no entry
    assert rows["fgvc.methods.ma_ea.xǁMaEaǁloss__mutmut_3"]["status"] == "no tests"
    assert rows["fgvc.layers.erase.x_erase__mutmut_9"]["ok"]              # equivalent
    assert rows["fgvc.layers.erase.x_erase__mutmut_1"]["ok"]              # killed_by, killed
    assert not rows["fgvc.methods.ma_ea.xǁMaEaǁloss__mutmut_3"]["ok"]     # killed_by, not killed


def test_main_writes_the_report_and_fails_on_unexplained(tmp_path):
    listing = tmp_path / "results.txt"
    listing.write_text(LISTING)
    out, explained = tmp_path / "mutation.md", tmp_path / "explained.yaml"
    explained.write_text("fgvc.layers.erase.x_erase__mutmut_2: {equivalent: a}\n"
                         "fgvc.layers.erase.x_erase__mutmut_9: {equivalent: b}\n")
    args = [str(listing), "--out", str(out), "--explained", str(explained)]
    assert mutation.main(args) == 1            # ma_ea loss 3: no test reaches it, no entry
    text = out.read_text()
    assert "5 mutants" in text and "| fgvc.layers.erase" in text and "UNEXPLAINED" in text
    explained.write_text(explained.read_text() + "fgvc.methods.ma_ea.xǁMaEaǁloss__mutmut_3: {equivalent: c}\n")
    assert mutation.main(args) == 0 and "UNEXPLAINED" not in out.read_text()
