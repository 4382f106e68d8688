"""The gap study (issue 30): runs scored at epoch 10 the same way, and the classes a model with the author's
256-logit head can no longer predict."""
import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch

import helpers as H
from helpers.studies import gap

TINY = dict(train_subset=200, test_subset=100)


def test_a_run_is_scored_over_epochs_9_to_11_and_a_short_one_is_refused(fake_data, tmp_path):
    config = dataclasses.replace(gap.gap_config("avgpool_author_head", epochs=2), **TINY)
    run = H.fit(config, fake_data, run_name="short", results_dir=tmp_path, progress=False, verbose=False)
    with pytest.raises(ValueError, match="has no epoch 9"):
        gap.epoch10_score(run)
    run.history = pd.DataFrame({"epoch": range(1, 13), "test_acc": [0.5] * 8 + [0.60, 0.70, 0.80, 0.90]})
    score = gap.epoch10_score(run)
    assert score["epochs 9-11 (%)"] == pytest.approx(70.0) and score["epoch 10 (%)"] == pytest.approx(70.0)
    assert score["best of epochs 1-12 (%)"] == pytest.approx(90.0)


def test_a_class_whose_relu_output_is_zero_everywhere_is_silent(fake_data, tmp_path):
    run = H.fit(H.TrainConfig(model="avgpool", head="author", epochs=1, **TINY), fake_data, run_name="run",
                results_dir=tmp_path, progress=False, verbose=False)
    data = fake_data.__class__(fake_data.train, H.data.balanced_subset(fake_data.test, 100), fake_data.root,
                               fake_data.official)
    with torch.no_grad():                       # frog's output channel can never be above zero
        run.model.conv7.weight[6].zero_()
        run.model.conv7.bias[6] = -1.0
    measured = gap.silent_classes(run, data)
    assert "frog" in measured["silent"] and measured["output above zero %"][6] == 0
    assert measured["accuracy %"][6] == 0
    stored = json.loads((tmp_path / "run" / "classes.json").read_text())
    assert stored["key"]["weights"] == H.files.weights_digest(run.model)
    assert gap.silent_classes(run) == measured                # read back without data


def test_the_study_reads_only_runs_whose_folder_says_what_they_are(fake_data, tmp_path):
    config = dataclasses.replace(gap.gap_config("avgpool_author_head", "fp32", 1, epochs=1), **TINY)
    H.fit(config, fake_data, run_name=gap.run_name("avgpool_author_head", None, "fp32", 1), results_dir=tmp_path,
          progress=False, verbose=False)
    with pytest.raises(ValueError, match="does not hold the run its folder names"):
        gap.finished_gap_runs(tmp_path)            # trained on a subset: not the study's configuration
    assert gap.gap_summary(tmp_path / "none")[1].startswith("No run of the gap study has finished yet")


def test_the_report_models_jpeg_cost_pairs_seeds_and_reads_the_line(tmp_path, monkeypatch):
    rows = [{"model": "Average pooling, author's head", "run": "gap study", "precision": "fp32", "data": data,
             "seed": seed, "epochs 9-11 (%)": acc}
            for data, seed, acc in (("copy", 0, 60.0), ("copy", 1, 76.0), ("copy", 2, 75.0),
                                    ("q50", 1, 73.0), ("q50", 2, 73.0))]
    monkeypatch.setattr(gap, "runs_table", lambda results_dir: pd.DataFrame(rows))
    assert gap.jpeg_table(tmp_path).loc[0, "line reading"] != gap.jpeg_table(tmp_path).loc[0, "line reading"]  # no JPEG study yet
    (tmp_path / "studies").mkdir()
    pd.DataFrame({"quality": ["copy as it is", "50"], "added mse": [0.0, 100.0], "drop": [0.0, 2.4]}).to_csv(
        tmp_path / "studies" / "jpeg.csv", index=False)
    (tmp_path / "jpeg").mkdir()
    H.files.save_json({"key": {}, "value": {"psnr": 10 * np.log10(255 ** 2 / 50.0)}}, tmp_path / "jpeg" / "reference.json")
    table = gap.jpeg_table(tmp_path)
    row = table.iloc[0]
    assert row["seeds"] == "1, 2" and row["drop"] == pytest.approx(2.5)     # seed 0 has no pair and is left out
    assert row["drop se"] == pytest.approx(0.5) and row["line reading"] == pytest.approx(2.5 / 100 * 50)
    text = gap.jpeg_text(table)
    assert "a drop of 2.50 points" in text and "lost 2.40 points" in text and "at 1.2 points" in text
    assert "anecdote" not in text and gap.jpeg_text(table.iloc[:0]) == ""


def test_the_gap_is_taken_apart_into_the_jpeg_cost_and_what_is_left(tmp_path, monkeypatch):
    name = "Average pooling, author's head"
    rows = [{"model": name, "run": run, "precision": precision, "data": data, "seed": seed,
             "epochs 9-11 (%)": acc, "author epoch 10 (%)": 79.7}
            for run, precision, data, seed, acc in (("report run", "bf16", "copy", 0, 75.0),
                                                   ("gap study", "fp32", "copy", 1, 76.0),
                                                   ("gap study", "fp32", "copy", 2, 75.0),
                                                   ("gap study", "fp32", "q50", 1, 73.0),
                                                   ("gap study", "fp32", "q50", 2, 73.0))]
    monkeypatch.setattr(gap, "runs_table", lambda results_dir: pd.DataFrame(rows))
    assert gap.decomposition_text(gap.decomposition(tmp_path)) == ""          # no JPEG study: nothing to take apart
    (tmp_path / "studies").mkdir()
    pd.DataFrame({"quality": ["copy as it is", "50"], "added mse": [0.0, 100.0], "drop": [0.0, 2.4]}).to_csv(
        tmp_path / "studies" / "jpeg.csv", index=False)
    (tmp_path / "jpeg").mkdir()
    H.files.save_json({"key": {}, "value": {"psnr": 10 * np.log10(255 ** 2 / 50.0)}}, tmp_path / "jpeg" / "reference.json")
    row = gap.decomposition(tmp_path).iloc[0]
    assert row["gap"] == pytest.approx(79.7 - 75.5) and row["JPEG cost"] == pytest.approx(1.25)
    assert row["unexplained"] == pytest.approx(79.7 - 75.5 - 1.25) and row["JPEG pairs"] == 2
    assert row["gap se"] == pytest.approx(0.5) and row["JPEG se"] == pytest.approx(0.5 / 2.5 * 1.25)
    assert row["report run minus fp32 seeds"] == pytest.approx(-0.5)
    text = gap.decomposition_text(gap.decomposition(tmp_path))
    assert "gap 4.2 points" in text and "unexplained 3.0" in text and "name no other cause" in text
