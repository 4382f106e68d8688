"""One fact, one form: the formatter's rules, a template that formats a fact against its own format, and
every fact the README, the paper and the committed notebooks state, collected and compared."""
import importlib.util
import json
import math
from pathlib import Path

import pytest

import helpers as H
from helpers.facts import Fact, conflicts, fact, render, take
from conftest import REPO


def test_one_rule_for_decimals_signs_and_missing_values():
    assert render(-1.234, 2) == "\u22121.23" and render(1.234, 2, signed=True) == "+1.23"
    assert render(-0.004, 2, signed=True) == "0.00"          # no signed zero
    assert render(math.nan) == "–" and render(None) == "–"
    assert render(1971362, 0, thousands=True) == "1,971,362"
    assert str(fact("a", -2.44, "+points1")) == "\u22122.4" and str(fact("b", 90.274, "%2")) == "90.27"
    assert f"{fact('c', 7, 'count')}" == "7" and f"{fact('d', 1971362, 'count'):,}" == "1,971,362"


def test_a_fact_is_a_number_that_keeps_its_name_through_pickling():
    f = fact("final_seeds.mean", 90.274, "%2", ["final_seeds/seed0"])
    assert f + 1 == pytest.approx(91.274) and type(f + 1) is float       # arithmetic gives a plain number
    import pickle
    back = pickle.loads(pickle.dumps(f))
    assert isinstance(back, Fact) and back.name == f.name and str(back) == "90.27"
    assert f.record() == {"fact": "final_seeds.mean", "value": 90.274, "unit": "%", "digits": 2, "signed": False,
                          "text": "90.27", "sources": ["final_seeds/seed0"]}


def test_a_template_that_formats_a_fact_its_own_way_is_named():
    with pytest.raises(ValueError, match=r"06_notes.md \(gap_item\): the fact x is stated as '\.2f'"):
        H.wording.fill("06_notes:gap_item", gap=fact("x", 1.234, "points2"), model="m")
    # a plain number takes the template's format, with a true minus sign
    assert H.wording.fill("06_notes:gap_item", gap=-1.25, model="m") == "\u22121.2 points (m)"


def test_rendered_forms_are_logged_and_conflicts_found():
    take()
    a, b = fact("x", 1.234, "points1"), fact("x", 1.234, "points2")
    f"{a} {b}"
    logged = take()
    assert logged == {"x": ["1.2", "1.23"]} and take() == {}
    assert conflicts(logged) == {"x": ["1.2", "1.23"]}
    assert conflicts({"x": ["1.2"]}, {"x": ["1.2"], "y": ["3"]}) == {}


def _notebook_facts() -> dict[str, set[str]]:
    """The facts the committed notebooks stated, from the metadata ``H.say`` leaves on each output."""
    found: dict[str, set[str]] = {}
    for path in H.files.numbered_notebooks(REPO / "notebooks"):
        for cell in json.loads(path.read_text())["cells"]:
            for output in cell.get("outputs", []):
                for name, forms in output.get("metadata", {}).get("facts", {}).items():
                    found.setdefault(name, set()).update(forms)
    return found


def test_every_fact_reads_the_same_in_the_readme_the_paper_and_the_notebooks():
    spec = importlib.util.spec_from_file_location("update_readme", REPO / "scripts" / "update_readme.py")
    update_readme = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(update_readme)
    take()
    runs = H.results.load_runs(REPO / "results")
    headline = update_readme.headline(runs, Path("results"))
    readme = take()
    assert headline in (REPO / "README.md").read_text()            # the README states what this renders
    stored = json.loads((REPO / "report" / "tables" / "facts.json").read_text())
    paper = {v["fact"]: [v["text"]] for v in stored.values() if "fact" in v}
    notebooks = _notebook_facts()
    assert len(readme) >= 10 and len(paper) >= 30 and len(notebooks) >= 50
    shared = set(readme) & set(paper) & set(notebooks)
    assert {"runs.fc.best", "runs.avgpool_author_head.best", "final_seeds.mean", "calibration.removed_fc"} <= shared
    assert conflicts(readme, paper, {k: sorted(v) for k, v in notebooks.items()}) == {}


def test_the_stored_facts_are_current_and_say_where_they_come_from():
    stored = json.loads((REPO / "report" / "tables" / "facts.json").read_text())
    current = H.paper.records(H.paper.fields(REPO / "results"))
    assert {k: v["text"] for k, v in stored.items()} == {k: v["text"] for k, v in current.items()}
    for key, entry in stored.items():
        if "fact" in entry and entry["value"] is not None:
            assert entry["text"] == render(entry["value"], entry["digits"], entry["signed"], entry["unit"] == "count")
            for source in entry.get("sources", []):
                assert (REPO / "results" / source).exists(), f"{key}: no results/{source}"
