"""The written report, ``report/report.pdf``: its numbers gathered from ``results/`` (``summary.report_facts``,
stored with their values, units, uncertainties, sources and texts in ``report/tables/facts.json``), its tables exported for reuse (``report/tables/<name>.csv`` and a LaTeX
``booktabs`` version ``<name>.tex``), and ``report/paper.typ`` compiled with Typst (the ``typst``
package bundles the compiler and its fonts, so nothing else is installed). The prose lives in
``paper.typ``; a field it uses that the results do not supply is an error naming the field.
"""
from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import pandas as pd

from . import results, studies, summary
from .facts import Fact, render
from .files import REPO_ROOT, atomic_write, project_path, read_json, read_study_table, shown_path
from .models import VARIANTS

PAPER = REPO_ROOT / "report" / "paper.typ"
TABLES = REPO_ROOT / "report" / "tables"
_FIELD = re.compile(r"\bd\.([A-Za-z_][A-Za-z0-9_]*)")


def _pct(x: float, digits: int = 1) -> str:
    return render(x, digits)      # the one number format (``helpers/facts.py``)


def tables(results_dir="results") -> dict[str, pd.DataFrame]:
    """The paper's tables as text, each the same whether it is read in the PDF, the CSV or the LaTeX file."""
    folder = project_path(results_dir)
    runs = results.load_runs(folder)
    out: dict[str, pd.DataFrame] = {}
    if len(runs) == len(VARIANTS):
        acc = results.accuracy_table(runs, results.author_head_runs(folder))
        out["accuracy"] = pd.DataFrame({
            "model": acc["model"], "output": acc["output"], "best": acc["best"].map(_pct),
            "final": acc["final"].map(_pct), "author best": acc["author best"].map(_pct),
            "author final": acc["author final"].map(_pct)})
        out["models"] = pd.DataFrame([{"model": VARIANTS[n], "output": "10 logits",
                                       "parameters": f"{r.metrics['parameters']:,}",
                                       "author's reported count": f"{int(results.AUTHOR.loc[n, 'parameters']):,}"}
                                      for n, r in runs.items()])
        out["findings"] = pd.DataFrame([{"finding of the report": f["claim"], "holds": "yes" if f["holds"] else "no"}
                                        for f in results.findings(runs)])
    if (folder / "studies" / "seeds.csv").exists():
        seeds = read_study_table(folder, "seeds")
        out["seeds"] = pd.DataFrame({"model": seeds["model"], "seeds": seeds["seeds"].astype(str),
                                     "best mean": seeds["best mean"].map(_pct), "best sd": seeds["best sd"].map(
                                         lambda x: _pct(x, 2)), "best range": [f"{a:.1f}–{b:.1f}" for a, b in zip(
                                             seeds["best min"], seeds["best max"])],
                                     "final mean": seeds["final mean"].map(_pct)})
    if (folder / "studies" / "ladder.csv").exists():
        ladder = read_study_table(folder, "ladder")
        out["ladder"] = pd.DataFrame({
            "change": [("↳ " if b else "") + c for b, c in zip(ladder["branch"], ladder["change"])],
            "val acc": ladder["val acc"].map(_pct),
            "gain": [("" if g != g else render(g, 1, signed=True)) + (" ~" if n else "")
                     for g, n in zip(ladder["gain"], ladder["within noise"])],
            "as trained": [_pct(a) if r else "" for a, r in zip(ladder["val acc as trained"], ladder["bn refreshed"])],
            "parameters (M)": (ladder["parameters"] / 1e6).map(lambda x: f"{x:.2f}"),
            "minutes": ladder["minutes"].map(lambda x: f"{x:.0f}")})
    final = studies.finished_final_seeds(folder)
    if final:
        table = studies.final_seed_table(final)
        out["final_seeds"] = pd.DataFrame({"seed": table.index.astype(str), "six views": table["test acc (%)"].map(
            lambda x: _pct(x, 2)), "one view": table["one view (%)"].map(lambda x: _pct(x, 2)),
            "minutes": table["minutes"].map(lambda x: f"{x:.0f}"), "precision": table["precision"]})
    rows = []
    for name in [*VARIANTS, "final"]:
        path = folder / name / "calibration.json"
        if path.exists():
            m = read_json(path, "cached measurement")["value"]
            rows.append({"model": VARIANTS.get(name, "Final model"), "T": f"{sum(m['temperatures']) / 2:.2f}",
                         "ECE before": _pct(m["before"]["ece"]), "ECE after": _pct(m["after"]["ece"]),
                         "loss before": f"{m['before']['loss']:.3f}", "loss after": f"{m['after']['loss']:.3f}"})
    if rows:
        out["calibration"] = pd.DataFrame(rows)
    return out


def booktabs(table: pd.DataFrame) -> str:
    """``table`` as a LaTeX tabular with booktabs rules (needs ``\\usepackage{booktabs}``)."""
    def tex(value) -> str:
        text = str(value).replace("\\", "\x00")
        for a, b in (("&", r"\&"), ("%", r"\%"), ("$", r"\$"), ("#", r"\#"), ("_", r"\_"), ("{", r"\{"),
                     ("}", r"\}"), ("~", r"\textasciitilde{}"), ("^", r"\^{}"), ("↳", r"$\hookrightarrow$"),
                     ("–", "--"), ("\u2212", "$-$")):
            text = text.replace(a, b)
        return text.replace("\x00", r"\textbackslash{}")
    align = "".join("l" if i == 0 or table[c].str.contains("[a-z]", regex=True).any() else "r"
                    for i, c in enumerate(table.columns))
    lines = [f"\\begin{{tabular}}{{{align}}}", "\\toprule", " & ".join(tex(c) for c in table.columns) + r" \\",
             "\\midrule", *(" & ".join(tex(v) for v in row) + r" \\" for row in table.itertuples(index=False)),
             "\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


_RANGE = re.compile(r"(-?[\d.]+)\s*[–-]\s*(-?[\d.]+)")
_MISSING = {"", "–", "-", "—"}


def _number(text: str) -> float | None:
    """A displayed number as a float ("2,190,122", "+0.8", "−1.2"), None if it is not one."""
    try:
        return float(text.replace(",", "").replace("−", "-").removeprefix("+"))
    except ValueError:
        return None


def numeric_table(table: pd.DataFrame) -> pd.DataFrame:
    """The table as numbers for a spreadsheet: thousands separators and signs dropped, a missing value
    empty, a range ("73.9–75.3") split into low and high columns, and the "~" of a difference within the
    noise moved into a column of its own (``<column> within noise``). Text columns stay text."""
    out = {}
    for column in table.columns:
        values = table[column]
        if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            out[column] = values
            continue
        cells = ["" if pd.isna(v) else str(v).strip() for v in values]
        present = [c for c in cells if c not in _MISSING]
        flagged = [c.endswith("~") for c in cells]
        bare = [c.rstrip("~").strip() for c in cells]
        if present and all(_RANGE.fullmatch(c) for c in present):
            pairs = [_RANGE.fullmatch(c).groups() if c not in _MISSING else (None, None) for c in cells]
            out[f"{column} low"] = pd.to_numeric([p[0] for p in pairs])
            out[f"{column} high"] = pd.to_numeric([p[1] for p in pairs])
        elif present and all(_number(b) is not None for b, c in zip(bare, cells) if c not in _MISSING):
            numbers = pd.Series([None if c in _MISSING else _number(b) for b, c in zip(bare, cells)], dtype=float)
            out[column] = numbers.astype("Int64") if (numbers.dropna() % 1 == 0).all() and "." not in "".join(bare) \
                else numbers
            if any(flagged):
                out[f"{column} within noise"] = [f if c not in _MISSING else None for f, c in zip(flagged, cells)]
        else:
            out[column] = values
    return pd.DataFrame(out)


def export_tables(found: dict[str, pd.DataFrame], folder=TABLES) -> None:
    """Each table as ``<name>.csv`` (numbers for a spreadsheet: ``numeric_table``), ``<name>.tex`` (formatted,
    booktabs) and ``formatted/<name>.csv`` (the cells as the paper prints them) in ``folder``, each file
    written atomically."""
    folder = project_path(folder)
    (folder / "formatted").mkdir(parents=True, exist_ok=True)
    for name, table in found.items():
        shown = table.map(lambda v: re.sub(r"^-(?=\d)", "\u2212", v) if isinstance(v, str) else v)  # true minus
        for path, text in ((folder / f"{name}.csv", numeric_table(table).to_csv(index=False)),
                           (folder / f"{name}.tex", booktabs(shown)),
                           (folder / "formatted" / f"{name}.csv", shown.to_csv(index=False))):
            atomic_write(path, lambda f, t=text: f.write(t.encode()))


def fields(results_dir="results", notebooks_dir=REPO_ROOT / "notebooks") -> dict:
    """Every number and phrase the paper's prose states (``summary.report_facts``): facts and words."""
    return summary.report_facts(results_dir, notebooks_dir)


def records(found: dict) -> dict:
    """``fields`` as ``facts.json`` stores them: a fact with its value, unit, uncertainty, sources and text;
    a phrase as its text."""
    return {k: v.record() if isinstance(v, Fact) else {"text": str(v)} for k, v in found.items()}


def used_fields(source: str) -> set[str]:
    """The data fields (``d.name``) a Typst source uses."""
    return set(_FIELD.findall(re.sub(r"//[^\n]*", "", source)))


def build(results_dir="results", output=None, tables_dir=TABLES, figures_dir="figures",
          notebooks_dir=REPO_ROOT / "notebooks") -> Path:
    """Gather the fields and tables from ``results_dir``, export the tables to ``tables_dir``, and compile
    ``report/paper.typ`` with the figures of ``figures_dir`` into ``output`` (default ``report/report.pdf``,
    written atomically). Returns the PDF's path."""
    results.check_results_folder(results_dir)
    data, found = records(fields(results_dir, notebooks_dir)), tables(results_dir)
    source = PAPER.read_text()
    missing = sorted(used_fields(source) - {k for k, v in data.items() if v["text"] != ""})
    if missing:
        raise KeyError(f"{shown_path(PAPER)} uses {', '.join(missing)}, which {shown_path(project_path(results_dir))} "
                       "does not supply (has every notebook run?)")
    absent = sorted(set(re.findall(r'\btab\("(\w+)"', source)) - set(found))
    if absent:
        raise KeyError(f"{shown_path(PAPER)} shows the tables {', '.join(absent)}, which the results do not supply")
    tables_dir = project_path(tables_dir)
    tables_dir.mkdir(parents=True, exist_ok=True)
    facts_json = json.dumps(data, indent=1, ensure_ascii=False)
    with tempfile.TemporaryDirectory() as stage:      # compiled from a staged copy first:
        export_tables(found, stage)                                # a failure leaves every output as it was
        atomic_write(Path(stage) / "facts.json", lambda f: f.write(facts_json.encode()))
        try:
            pdf = _compile(stage, figures_dir)
        except RuntimeError as exc:
            raise PaperError(f"Typst could not compile {shown_path(PAPER)}: {str(exc).strip()[:400]}. Nothing was "
                             "written.") from None
    export_tables(found, tables_dir)
    atomic_write(tables_dir / "facts.json", lambda f: f.write(facts_json.encode()))
    output = project_path(output) if output else REPO_ROOT / "report" / "report.pdf"
    atomic_write(output, lambda f: f.write(pdf))
    return output


class PaperError(RuntimeError):
    """The paper could not be built; nothing was written."""


def _compile(tables_dir, figures_dir, **options):
    import typst
    tables_dir = project_path(tables_dir)
    return typst.compile(str(PAPER), root="/", timestamp=0, **options,
                         sys_inputs={"data": str(tables_dir / "facts.json"), "tables": str(tables_dir),
                                     "figures": str(project_path(figures_dir))})


def page_images(tables_dir=TABLES, figures_dir="figures", ppi: int = 20) -> list[bytes]:
    """The built paper's pages as PNG images (from the data and tables ``build`` wrote to ``tables_dir``)."""
    pages = _compile(tables_dir, figures_dir, format="png", ppi=ppi)
    return pages if isinstance(pages, list) else [pages]
