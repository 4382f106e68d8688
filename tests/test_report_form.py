"""What a reader meets in the committed notebooks: short outputs, no machine-specific paths, no
random ids, Markdown that renders as meant."""
import json
import re

import pytest

import helpers as H

from conftest import REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
MAX_LINES = 25


def _texts(cell):
    for out in cell.get("outputs", []):
        if "text" in out:
            yield "".join(out["text"])
        for kind, value in out.get("data", {}).items():
            if kind in ("text/plain", "text/markdown", "text/html"):
                yield "".join(value)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_outputs_are_short_and_machine_independent(path):
    nb = json.loads(path.read_text())
    assert len(NOTEBOOKS) == 10
    for i, cell in enumerate(nb["cells"]):
        for out in cell.get("outputs", []):
            if "text" in out:
                lines = "".join(out["text"]).count("\n")
                assert lines <= MAX_LINES, f"{path.name} cell {i}: {lines} lines of output"
        for text in _texts(cell):
            assert "/work/" not in text and "/home/" not in text, f"{path.name} cell {i}: an absolute path"
            assert not re.search(r"object at 0x[0-9a-f]+", text), f"{path.name} cell {i}: a memory address"
            assert "WARNING" not in text, f"{path.name} cell {i}: a warning"
            if "text/markdown" in json.dumps(cell.get("outputs", [])):
                assert not re.search(r"^- \+", text, re.M), f"{path.name} cell {i}: a '- +' bullet"
    assert "injected-parameters" not in path.read_text(), f"{path.name}: parameters injected by a re-run"


def test_the_training_notebooks_are_renderings_of_one_source():
    """03-05 come from notebooks/templates/train_model.ipynb: the same cells, with their own text from
    report/text/notebooks/ and their own model; a hand edit of one of them would be lost at the next render."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("run_notebooks", REPO / "scripts" / "run_notebooks.py")
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    assert len(runner.RENDERED) == 3
    for name, (_, defaults) in runner.RENDERED.items():
        committed = json.loads((REPO / "notebooks" / f"{name}.ipynb").read_text())["cells"]
        rendered = runner.source(name).cells
        assert ["".join(c["source"]) for c in committed] == [c.source for c in rendered], name
        assert [c["id"] for c in committed] == [c.id for c in rendered], name
        assert f'model = "{defaults["model"]}"' in rendered[2].source
    ids = [c["id"] for nb in NOTEBOOKS for c in json.loads(nb.read_text())["cells"]]
    assert len(ids) == len(set(ids)), "cell ids repeat across notebooks"


def test_notebook_diffs_go_through_nbdime_cell_by_cell():
    nbdime = pytest.importorskip("nbdime")
    import nbformat
    attributes = (REPO / ".gitattributes").read_text()
    assert "*.ipynb diff=jupyternotebook" in attributes
    nb = nbformat.read(NOTEBOOKS[0], as_version=4)
    assert nbdime.diff_notebooks(nb, nb) == []
    changed = nbformat.read(NOTEBOOKS[0], as_version=4)
    changed.cells[0].source += "\nOne more line."
    diff = nbdime.diff_notebooks(nb, changed)
    assert [d["key"] for d in diff] == ["cells"]          # the change is found in the cells, not elsewhere


def test_every_figure_is_listed_in_the_figure_list_and_every_listed_figure_exists():
    table = (REPO / "figures" / "README.md").read_text()
    listed = {name for row in table.splitlines() if row.startswith("| `")
              for name in re.findall(r"`(\w+)`", row.split("|")[1])}
    exported = {p.stem for p in (REPO / "figures").glob("*.pdf")}
    assert exported - listed == set(), "figures missing from figures/README.md"
    # a figure notebook 09 draws only once some run exists may be listed before it is exported
    assert listed - exported <= {"jpeg_sensitivity"}, "figures/README.md lists figures that were never exported"


def test_the_readme_is_a_front_page_and_its_generated_sentences_are_short():
    readme = (REPO / "README.md").read_text()
    assert len(readme.split()) <= 1200, f"the README has {len(readme.split())} words; the details go to docs/"
    for part in ("## Two commands", "## Open the notebooks", "## Data", "## Layout", "report/report.pdf",
                 "docs/using.md"):
        assert part in readme, part
    headline = readme[readme.index("<!-- headline:start -->"):readme.index("<!-- headline:end -->")]
    units, unit = [], []                     # paragraphs and bullets, each then cut into sentences
    for line in headline.splitlines()[1:]:
        if not line.strip() or line.startswith(("- ", "|", "!", "_")):
            units.append(" ".join(unit))
            unit = [line[2:]] if line.startswith("- ") else []
        else:
            unit.append(line)
    units.append(" ".join(unit))
    sentences = [s for u in units for s in re.split(r"(?<=[.!?])\s+(?=[A-Z0-9])", u) if s.strip()]
    assert sentences and max(len(s.split()) for s in sentences) <= 45, max(sentences, key=lambda s: len(s.split()))


def test_the_notebooks_generated_sentences_are_short():
    """Every sentence the committed notebooks generate (their Markdown outputs) has at most about 45 words."""
    long = []
    for path in H.files.numbered_notebooks(REPO / "notebooks"):
        for cell in json.loads(path.read_text())["cells"]:
            for output in cell.get("outputs", []):
                text = "".join(output.get("data", {}).get("text/markdown", ""))
                for line in text.splitlines():
                    if line.lstrip().startswith(("|", "#")):
                        continue
                    for sentence in re.split(r"(?<=[.!?])\s+(?=[A-Z0-9*(])", re.sub(r"^\s*([-*] |\d+\. )", "", line)):
                        if len(sentence.split()) > 45:
                            long.append(f"{path.name}: {len(sentence.split())} words: {sentence[:90]}...")
    assert not long, "\n".join(long)
