"""The written report: fields the prose uses, tables for reuse, and a build from the committed results."""
import json

import pandas as pd
import pytest

import helpers as H
from conftest import REPO


def test_booktabs_escapes_what_latex_would_misread():
    table = pd.DataFrame({"change": ["↳ half the channels", "+ 50% & more_x"], "val acc": ["78.6", "80.0"]})
    tex = H.paper.booktabs(table)
    assert tex.startswith("\\begin{tabular}{lr}\n\\toprule\nchange & val acc \\\\\n\\midrule")
    assert r"$\hookrightarrow$ half the channels" in tex and r"+ 50\% \& more\_x" in tex
    assert tex.rstrip().endswith("\\bottomrule\n\\end{tabular}")


def test_the_fields_a_paper_uses_are_found_outside_comments():
    assert H.paper.used_fields("// d.comment\nAccuracy #d.acc% and #d.n_seeds seeds; d.x2.") == {"acc", "n_seeds", "x2"}
    assert H.paper.used_fields(H.paper.PAPER.read_text()) >= {"fc_best", "final_mean", "hypothesis_verdict"}


def test_a_field_the_results_lack_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(H.paper, "fields", lambda *a, **k: {"fc_best": "74.9"})
    monkeypatch.setattr(H.paper, "tables", lambda *a, **k: {})
    with pytest.raises(KeyError, match="report/paper.typ uses .*final_mean.*which .* does not supply"):
        H.paper.build(REPO / "results", output=tmp_path / "p.pdf", tables_dir=tmp_path)
    assert not (tmp_path / "p.pdf").exists()


@pytest.mark.slow
def test_the_paper_builds_from_the_committed_results(tmp_path):
    pdf = H.paper.build(REPO / "results", output=tmp_path / "report.pdf", tables_dir=tmp_path / "tables")
    assert pdf.read_bytes()[:5] == b"%PDF-" and 4 <= len(H.paper.page_images(tmp_path / "tables", ppi=5)) <= 8
    data = json.loads((tmp_path / "tables" / "facts.json").read_text())
    assert all(isinstance(v["text"], str) and v["text"] for v in data.values())
    assert data == json.loads((REPO / "report" / "tables" / "facts.json").read_text())   # the committed facts are current
    for name in ("accuracy", "ladder", "final_seeds", "calibration"):
        assert (tmp_path / "tables" / f"{name}.csv").exists() and (tmp_path / "tables" / f"{name}.tex").exists()
    committed = REPO / "report" / "tables" / "accuracy.csv"
    assert (tmp_path / "tables" / "accuracy.csv").read_text() == committed.read_text()   # the committed tables are current


def test_every_exported_csv_holds_numbers_a_spreadsheet_reads():
    import re
    formatted = re.compile(r"^[+−-]?[\d,]+(\.\d+)?\s*~?$|^[\d.]+\s*–\s*[\d.]+$|^[–—]$")
    csvs = sorted((H.files.REPO_ROOT / "report" / "tables").glob("*.csv"))
    assert csvs
    for path in csvs:
        table = pd.read_csv(path)
        for column in table.columns:
            if not pd.api.types.is_numeric_dtype(table[column]) and not pd.api.types.is_bool_dtype(table[column]):
                odd = [v for v in table[column].dropna().astype(str) if formatted.match(v.strip())]
                assert not odd, f"{path.name}: column {column!r} holds numbers as text: {odd[:3]}"
    # the converter itself: separators, signs, ranges, flags and missing values
    shown = pd.DataFrame({"n": ["2,190,122", "–"], "gain": ["+0.8 ~", "−1.2"], "range": ["73.9–75.3", "1.0–2.0"]})
    table = H.paper.numeric_table(shown)
    assert table["n"].tolist()[0] == 2190122 and pd.isna(table["n"].tolist()[1])
    assert table["gain"].tolist() == [0.8, -1.2] and table["gain within noise"].tolist() == [True, False]
    assert table["range low"].tolist() == [73.9, 1.0] and table["range high"].tolist() == [75.3, 2.0]
