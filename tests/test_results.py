"""The generated prose must follow the numbers: build histories with known shapes and check the verdicts."""
import dataclasses

import numpy as np
import pytest
import pandas as pd

import helpers as H
from helpers import results
from helpers.config import TrainConfig
from helpers.runs import Run


def _run(name, loss, acc):
    epochs = np.arange(1, len(loss) + 1)
    hist = pd.DataFrame({"epoch": epochs, "train_loss": 0.1, "train_acc": 0.99, "test_loss": loss,
                         "test_acc": acc, "seconds": 1.0, "images_per_s": 1.0})
    return Run(None, TrainConfig(model=name), hist, {"parameters": 1}, None)


def _author_like():
    e = np.arange(1, 101)
    fc_loss = np.where(e < 6, 1.2 - 0.1 * e, 0.7 + 0.02 * (e - 5))           # falls, then rises
    avg_loss = np.where(e < 9, 1.1 - 0.08 * e, 0.46 + 0.03 * (e - 8))        # lower than FC until epoch 37
    drop_loss = 1.6 - 0.9 * (1 - np.exp(-e / 15))                             # starts high, keeps falling
    return {"fc": _run("fc", fc_loss, np.full(100, 0.77)),
            "avgpool": _run("avgpool", avg_loss, np.full(100, 0.80)),
            "avgpool_dropout": _run("avgpool_dropout", drop_loss, np.full(100, 0.83))}


def test_author_like_results_confirm_every_finding():
    items = results.findings(_author_like())
    assert len(items) == 8 and all(f["holds"] for f in items), [f for f in items if not f["holds"]]
    assert "8 of the author's 8 findings hold" in results.findings_markdown(items)


def test_reversed_ranking_is_reported_as_not_holding():
    runs = _author_like()
    runs["fc"].history["test_acc"] = 0.90
    verdicts = {f["claim"]: f["holds"] for f in results.findings(runs)}
    assert not verdicts["Average pooling is slightly more accurate than the fully connected head."]
    assert verdicts["The dropout model is the most accurate."] is False


def test_overfitting_rule_scales_with_the_schedule():
    e = pd.Series(np.arange(1, 31))
    bottom_at_8 = pd.Series(np.where(e <= 8, 1.0 - 0.04 * e, 0.68 + 0.05 * (e - 8)))   # 30 epochs: low at 8, doubles
    assert results.overfits(bottom_at_8, e)
    assert not results.overfits(pd.Series(1.0 / e), e)                                   # keeps falling
    late = pd.Series(np.where(e <= 25, 1.0 - 0.02 * e, 0.5 + 0.1 * (e - 25)))            # low at 25 of 30
    assert not results.overfits(late, e)
    flat = pd.Series(np.where(e <= 8, 1.0 - 0.04 * e, 0.68 + 0.001 * (e - 8)))         # ends within 10% of it
    assert not results.overfits(flat, e)


def test_findings_need_all_three_models():
    runs = _author_like()
    del runs["fc"]
    assert results.findings(runs) == []
    assert "need finished runs" in results.findings_markdown([])


def test_timing_flags_epochs_slowed_by_other_work():
    h = pd.DataFrame({"seconds": [60.0, 58.0, 62.0, 300.0]})
    text = results.timing(h, {"device": "cpu", "threads": 2})
    assert "8.0 minutes of wall time" in text and "median) epoch took 61.0 s" in text
    assert "1 of 4 epochs" in text and "An undisturbed run takes about 4.1 minutes" in text
    assert "slowed" not in results.timing(h.iloc[:3], {})


def test_differences_name_the_gap_and_the_measured_causes(tmp_path):
    runs = _author_like()
    for run in runs.values():
        run.metrics["official_data"] = False
    text = H.summary.differences(runs, tmp_path)
    assert "best 77.0% (author 77.3%, \u22120.3 points)" in text and "JPEG re-encoding" in text
    assert "measured in notebook 08" in text and "account for" not in text
    (tmp_path / "studies").mkdir()
    pd.DataFrame({"model": ["a", "b"], "seeds": [3, 3], "epochs": [30, 30], "best mean": [70.5, 75.7],
                  "best sd": [0.5, 0.7], "best min": [70.0, 75.0], "best max": [71.0, 76.5],
                  "final mean": [70.0, 75.0], "lowest loss epochs": ["6, 8, 6", "9, 8, 7"]}).to_csv(
        tmp_path / "studies" / "seeds.csv", index=False)
    runs["avgpool"].history["test_acc"] = 0.70     # 10 points below the author's 80.0
    text = H.summary.differences(runs, tmp_path)
    assert "up to 1.5 points" in text and "add up to about 3.5 points" in text and "not an explanation" in text
    assert "the gap of Average pooling is larger than this yardstick" in text
    # once notebook 09 has estimated the copy's JPEG cost, the band uses it (its upper end) instead of the claim
    pd.DataFrame({"quality": ["copy as it is", "50"], "psnr (dB)": [np.inf, 28.1], "added mse": [0.0, 100.0],
                  "test acc (%)": [90.0, 88.0], "seeds": [6, 2], "sd": [0.2, 0.2],
                  "drop": [0.0, 2.0]}).to_csv(tmp_path / "studies" / "jpeg.csv", index=False)
    (tmp_path / "jpeg").mkdir()
    H.files.save_json({"key": {}, "value": {"psnr": 10 * np.log10(255 ** 2 / 40.0), "aligned psnr": 50.0}},
                      tmp_path / "jpeg" / "reference.json")
    text = H.summary.differences(runs, tmp_path)
    # one quality: a line only, so the range is one number: 0.02 points per unit x 40 = 0.8
    assert "estimates what that pass costs the final recipe: about 0.80 points (one reading: a straight line " \
        "through the copy). With two standard errors" in H.wording.unwrap(text)
    assert "up to about 2.4 points" in text      # 1.5 (seeds) + 0.8 + 2 x 0.065 (two standard errors)


def test_markdown_tables_format_numbers_and_leave_missing_ones_empty():
    table = pd.DataFrame({"step": ["first", "second"], "gain": [float("nan"), 1.25], "n": [1, 2]})
    assert results.markdown_table(table).splitlines() == [
        "| step | gain | n |", "|---|---|---|", "| first |  | 1 |", "| second | 1.2 | 2 |"]


def test_each_authors_number_sits_beside_the_run_of_the_same_design():
    runs = _author_like()
    plain = results.accuracy_table(runs)
    assert list(plain["output"]) == ["10-way", "10-way (ours)", "10-way (ours)"]
    assert plain["author best"].tolist() == results.AUTHOR["best"].tolist()
    head = _run("avgpool", np.full(100, 0.5), np.full(100, 0.79))
    table = results.accuracy_table(runs, {"avgpool_author_head": head})
    avg = table[table["model"] == "Average pooling"]
    assert list(avg["output"]) == ["256 logits (author's)", "10-way (ours)"]
    assert avg["best - author"].iloc[0] == pytest.approx(79 - 80.0) and np.isnan(avg["author best"].iloc[1])
    epochs = results.epoch_table(runs).set_index("model")
    assert epochs.loc["Fully connected head", "lowest loss epoch"] == 5
    assert epochs.loc["Fully connected head", "author lowest loss epoch"] == 5
    assert epochs.loc["Average pooling", "author lowest loss epoch"] is pd.NA    # 10-way only: nothing like it
    paired = results.epoch_table(runs, {"avgpool_author_head": head})
    avg = paired[paired["model"] == "Average pooling"]
    assert list(avg["output"]) == ["256 logits (author's)", "10-way (ours)"]
    assert avg["author best epoch"].iloc[0] == results.AUTHOR.loc["avgpool", "best epoch"]
    assert avg["author best epoch"].iloc[1] is pd.NA


def test_the_expectation_check_says_when_a_run_behaves_unlike_the_authors():
    runs = _author_like()
    assert "As expected, the test loss turns upward early" in results.expectation(runs["fc"])
    author_like = dataclasses.replace(runs["avgpool_dropout"], config=TrainConfig(model="avgpool_dropout", head="author"))
    assert "As expected, the test loss does not climb back" in results.expectation(author_like)
    # our 10-way variant is not set beside the author's 256-logit run
    variant = results.expectation(runs["avgpool_dropout"])
    assert "not set beside the author's run" in variant and "points below" not in variant
    steady = _run("fc", np.linspace(1.5, 0.5, 100), np.full(100, 0.70))
    text = results.expectation(steady)
    assert text.startswith("**Compared with the report.** Unlike what we expected") and "7.3 points below" in text


def test_the_precision_cause_cites_notebook_09s_comparison_where_it_exists(tmp_path, monkeypatch):
    runs = _author_like()
    runs = {name: dataclasses.replace(run, config=dataclasses.replace(run.config, precision="bf16"))
            for name, run in runs.items()}
    assert "parity runs" in H.summary.differences(runs, tmp_path)        # no final seeds: the benchmark's parity
    fields = H.facts.facts("precision_unpaired", {"bf16_n": 3, "fp32_n": 3, "diff": 0.3, "se": 0.1, "one_diff": -0.05,
                                                  "one_se": 0.12, "t": 3.0, "df": 4, "verdict": "larger than the noise"},
                           {"diff": "+points2", "se": "points2", "one_diff": "+points2", "one_se": "points2", "t": "t2"})
    monkeypatch.setattr(H.studies, "precision_fields", lambda table: fields)
    text = H.wording.unwrap(H.summary.differences(runs, tmp_path))
    assert "bf16 minus fp32 is +0.30 points of test accuracy (standard error 0.10; t = 3.00 on 4 degrees" in text
    assert "unpaired and on different machines" in text
