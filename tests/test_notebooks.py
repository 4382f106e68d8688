"""Every notebook runs top to bottom on a tiny budget, as `make quick` and `make report` run them."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import helpers as H
from conftest import REPO, real_root, requires_real_data

FIGURES = ["class_balance", "examples_per_class", "pixel_histograms", "parameters_per_layer", "overfit_one_batch",
           "curves_fc", "curves_avgpool", "curves_avgpool_dropout", "test_accuracy", "test_loss", "train_vs_test",
           "confusion_matrices", "per_class_accuracy", "misclassified", "author_head", "seeds", "ladder", "ladder_curves",
           "class_activation_maps", "reliability"]


def run_notebooks(out: Path, root: Path, extra: list[str], only=()):
    params = {"epochs": "1", "data_root": str(root), "results_dir": str(out / "results"),
              "figures_dir": str(out / "figures"), "sanity_steps": "5",
              "seed_epochs": "1", "ladder_epochs": "1", "final_epochs": "1", "validation": "100"}
    cmd = [sys.executable, str(REPO / "scripts" / "run_notebooks.py"), "--output", str(out / "notebooks")]
    for k, v in params.items():
        cmd += ["-p", k, v]
    cmd += extra + (["--only", *only] if only else [])
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def check_outputs(out: Path):
    for model in H.VARIANTS:
        run = out / "results" / model
        assert {"config.json", "history.csv", "metrics.json", "model.pt"} <= {p.name for p in run.iterdir()}
    assert (out / "results" / "avgpool_author_head" / "model.pt").exists()
    assert (out / "results" / "seeds" / "avgpool_dropout_seed2_1ep" / "metrics.json").exists()
    ladder = pd.read_csv(out / "results" / "studies" / "ladder.csv")
    assert len(pd.read_csv(out / "results" / "studies" / "seeds.csv")) == 3
    assert len(pd.read_csv(out / "results" / "studies" / "heads.csv")) == 4
    assert len(ladder) == len(H.studies.default_ladder()) and ladder["val acc"].between(0, 100).all()
    refresh = pd.read_csv(out / "results" / "studies" / "batchnorm_refresh.csv")
    assert len(refresh) and refresh["val acc, one view, statistics refreshed"].between(0, 100).all()
    final = json.loads((out / "results" / "studies" / "final.json").read_text())
    assert 0 <= final["test_acc"] <= 1 and final["epochs"] == 1
    assert "The author's hypothesis" in (out / "notebooks" / "09_beyond_90.ipynb").read_text()
    cams = json.loads((out / "results" / "studies" / "cam_statistics.json").read_text())["value"]
    assert set(cams["models"]) == set(H.VARIANTS)
    for run in [*H.VARIANTS, "final"]:
        calibration = json.loads((out / "results" / run / "calibration.json").read_text())["value"]
        assert calibration["before"]["accuracy"] == calibration["after"]["accuracy"]
    assert "What we found" in (out / "notebooks" / "10_what_the_networks_learned.ipynb").read_text()
    made = {p.name for p in (out / "figures").iterdir()}
    assert {f"{name}.{ext}" for name in FIGURES for ext in ("png", "pdf")} <= made
    for nb in (out / "notebooks").glob("*.ipynb"):
        text = nb.read_text()
        assert nb.stat().st_size < 1_000_000, nb.name
        assert '"output_type": "error"' not in text and "widget-view" not in text, nb.name
        executed = json.loads(text)
        tags = [c["metadata"].get("tags", []) for c in executed["cells"]]
        assert Path(executed["metadata"]["papermill"]["output_path"]).name == nb.name   # not the temporary name
        assert ["parameters"] in tags, f"{nb.name} has no cell tagged 'parameters'"


def _outputs(path: Path) -> list:
    """A notebook's cell sources and outputs, without execution counts and times."""
    cells = json.loads(path.read_text())["cells"]
    return [(c["source"], [{k: v for k, v in o.items() if k != "execution_count"} for o in c.get("outputs", [])])
            for c in cells]


@pytest.mark.slow
def test_every_notebook_runs_on_generated_data(fake_root, tmp_path):
    log = run_notebooks(tmp_path, fake_root, [])
    assert log.count("done in") == 10
    check_outputs(tmp_path)
    # the written report builds from the same results and figures, every field filled
    pdf = H.paper.build(tmp_path / "results", output=tmp_path / "report.pdf", tables_dir=tmp_path / "tables",
                        figures_dir=tmp_path / "figures", notebooks_dir=tmp_path / "notebooks")
    assert pdf.read_bytes()[:5] == b"%PDF-"
    assert len(H.paper.page_images(tmp_path / "tables", tmp_path / "figures", ppi=5)) >= 4
    assert all(v["text"] for v in json.loads((tmp_path / "tables" / "facts.json").read_text()).values())
    # the analysis notebook runs on its own from saved results, training nothing
    for f in (tmp_path / "figures").iterdir():
        f.unlink()
    before = {p: p.stat().st_mtime for p in (tmp_path / "results").rglob("*")}
    run_notebooks(tmp_path, fake_root, [], only=["06"])
    assert (tmp_path / "figures" / "test_accuracy.png").exists()
    assert before == {p: p.stat().st_mtime for p in (tmp_path / "results").rglob("*")}
    # a re-run from the same results shows exactly the same outputs (no random table ids, no addresses);
    # (the first pass of 06 came before 07 and 08 had saved the studies its list of causes cites)
    first = _outputs(tmp_path / "notebooks" / "06_results_analysis.ipynb")
    run_notebooks(tmp_path, fake_root, [], only=["06"])
    assert _outputs(tmp_path / "notebooks" / "06_results_analysis.ipynb") == first
    # the README's first screen is written from what the notebooks saved
    spec = importlib.util.spec_from_file_location("update_readme", REPO / "scripts" / "update_readme.py")
    update_readme = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(update_readme)
    runs = H.results.load_runs(tmp_path / "results")
    text = update_readme.headline(runs, tmp_path / "results")
    for part in ("What it finds", "| Fully connected head | 10-way |", "findings hold", "figures/test_accuracy.png"):
        assert part in text



@pytest.mark.slow
@requires_real_data
def test_every_notebook_runs_on_a_real_subset(tmp_path):
    run_notebooks(tmp_path, real_root(), ["-p", "train_subset", "1000", "-p", "test_subset", "500"])
    check_outputs(tmp_path)


@pytest.mark.slow
def test_a_training_notebooks_parameters_reach_the_run_and_its_text(fake_root, tmp_path):
    """A student's lr, batch size and weight decay (the parameters cell of 03-05) are what the run trains and
    records, and its text names them instead of comparing the run with the author's."""
    run_notebooks(tmp_path, fake_root, ["-p", "lr", "0.01", "-p", "batch_size", "32", "-p", "weight_decay", "0.0"],
                  only=["03"])
    config = json.loads((tmp_path / "results" / "fc" / "config.json").read_text())
    assert (config["lr"], config["batch_size"], config["weight_decay"]) == (0.01, 32, 0.0)
    text = (tmp_path / "notebooks" / "03_train_fc.ipynb").read_text()
    assert "This run departs from the author&#x27;s protocol" in text or "This run departs from the author's" in text
    assert "lr = 0.01 (the protocol&#x27;s: 0.001)" in text or "lr = 0.01 (the protocol's: 0.001)" in text
    assert "The author's run of this model peaked" not in text
