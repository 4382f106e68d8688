"""The paired bf16-fp32 study: the same seeds in both precisions, one difference per seed."""
import math
import shutil
from types import SimpleNamespace

import pandas as pd
import pytest

import helpers as H
from helpers.studies import precision as P


def test_pairs_are_trained_once_read_back_and_tabulated(fake_data, tmp_path):
    config = H.TrainConfig(model="avgpool", epochs=1, train_subset=100, test_subset=50)
    runs = P.precision_runs(config, [0, 1], fake_data, results_dir=tmp_path)
    assert sorted(runs) == [("bf16", 0), ("bf16", 1), ("fp32", 0), ("fp32", 1)]
    assert runs["bf16", 1].config.precision == "bf16" and runs["fp32", 1].config.seed == 1
    (tmp_path / "precision" / "fp32" / "seed0" / "model.pt").unlink()      # weights need not be kept
    again = P.precision_runs(config, [0, 1], fake_data, results_dir=tmp_path)
    assert again["fp32", 0].metrics == runs["fp32", 0].metrics            # read, not trained again
    study = P.precision_summary(tmp_path)
    assert list(study.table.index) == [0, 1]
    row = study.table.loc[1]
    assert row["bf16 - fp32"] == pytest.approx(row["bf16 (%)"] - row["fp32 (%)"])
    assert row["fp32 (%)"] == pytest.approx(runs["fp32", 1].metrics["final_test_acc"] * 100)
    assert study.fields["pairs"] == 2 and "{" not in study.text and f"{study.fields['diff']:+.2f}" in study.text
    again = P.measured_precision(tmp_path)                  # what the README, the paper and What changed read
    assert again["diff"] == pytest.approx(study.fields["diff"]) and again["model"] == "avgpool"
    (tmp_path / "studies" / "precision_paired.csv").write_text("seed,fp32 (%)\n0,50\n1,51\n")   # a hand-edited table
    with pytest.raises(ValueError, match="precision_paired.csv is not what notebook 09 writes"):
        P.measured_precision(tmp_path)


def test_a_seed_finished_in_one_precision_only_is_not_a_pair(fake_data, tmp_path):
    config = H.TrainConfig(model="avgpool", epochs=1, train_subset=100, test_subset=50)
    H.fit(config, fake_data, run_name=P.run_name("fp32", 0), results_dir=tmp_path)      # its bf16 twin still to come
    lone = P.precision_summary(tmp_path)                        # as notebook 09 shows it while the study runs
    assert len(lone.table) == 0 and lone.fields is None and "0 pair(s)" in lone.text
    assert P.measured_precision(tmp_path) is None
    P.precision_runs(config, [0], fake_data, results_dir=tmp_path)
    H.fit(H.TrainConfig(model="avgpool", epochs=1, train_subset=100, test_subset=50, seed=3, precision="fp32"),
          fake_data, run_name=P.run_name("fp32", 3), results_dir=tmp_path)
    study = P.precision_summary(tmp_path)
    assert list(study.table.index) == [0] and study.fields is None and "1 pair" in study.text


def test_a_run_of_another_configuration_is_refused_by_name(fake_data, tmp_path):
    config = H.TrainConfig(model="avgpool", epochs=1, train_subset=100, test_subset=50)
    P.precision_runs(config, [0], fake_data, results_dir=tmp_path)
    H.fit(H.TrainConfig(model="avgpool", epochs=2, train_subset=100, test_subset=50, seed=1, precision="bf16"),
          fake_data, run_name=P.run_name("bf16", 1), results_dir=tmp_path)
    with pytest.raises(ValueError, match=r"seed1 differs from .* in epochs"):
        P.precision_summary(tmp_path)


def test_a_folder_that_is_not_a_seed_is_ignored_and_a_run_in_the_wrong_precision_refused(fake_data, tmp_path):
    config = H.TrainConfig(model="avgpool", epochs=1, train_subset=100, test_subset=50)
    P.precision_runs(config, [0], fake_data, results_dir=tmp_path)
    shutil.copytree(tmp_path / "precision" / "bf16" / "seed0", tmp_path / "precision" / "bf16" / "seed0.bak")
    assert sorted(P.finished_precision_runs(tmp_path)) == [("bf16", 0), ("fp32", 0)]
    shutil.copytree(tmp_path / "precision" / "bf16" / "seed0", tmp_path / "precision" / "fp32" / "seed7")
    with pytest.raises(ValueError, match=r"fp32.seed7 trained in bf16, not fp32"):
        P.finished_precision_runs(tmp_path)


def test_the_paired_difference_its_error_and_interval():
    table = pd.DataFrame({"fp32 (%)": [75.0, 76.0, 74.0], "bf16 (%)": [74.0, 76.5, 73.5],
                          "fp32 s/epoch": [100.0, 100.0, 100.0], "bf16 s/epoch": [50.0, 50.0, 50.0]},
                         index=pd.Index([0, 1, 2], name="seed"))
    table["bf16 - fp32"] = table["bf16 (%)"] - table["fp32 (%)"]          # -1.0, +0.5, -0.5
    run = SimpleNamespace(config=H.TrainConfig(model="fc", epochs=10), metrics={"train_images": 50_000})
    f = P.paired_fields(table, run)
    sd = pd.Series([-1.0, 0.5, -0.5]).std()
    assert f["diff"] == pytest.approx(-1 / 3) and f["se"] == pytest.approx(sd / math.sqrt(3))
    assert f["ci_low"] == pytest.approx(-1 / 3 - 4.303 * sd / math.sqrt(3)) and f["ci_high"] > 0
    assert f["within"] and f["verdict"].startswith("within the noise") and f["speedup"] == pytest.approx(2.0)
    assert f["model_name"] == "model 1 (fully connected head)" and f["train_images"] == "50,000"
    assert f["within_sd"] == pytest.approx(math.sqrt((1.0 + table["bf16 (%)"].var()) / 2))
    assert "{" not in H.wording.fill("precision_paired", **f)
    shifted = table.assign(**{"bf16 (%)": table["fp32 (%)"] + [-1.0, -1.1, -0.9]})     # the column is not trusted:
    shifted = shifted.assign(**{"bf16 - fp32": 0.0})                                   # recomputed from the two
    g = P.paired_fields(shifted, run)
    assert g["diff"] == pytest.approx(-1.0) and g["verdict"].startswith("larger than the noise") and g["ci_high"] < 0
    # the verdict follows the t interval, not two standard errors: 3 pairs, mean 0.6, se 0.15 -> 4.3 x 0.15 > 0.6
    wide = table.assign(**{"bf16 (%)": table["fp32 (%)"] + [0.4, 0.9, 0.5]})
    w = P.paired_fields(wide, run)
    assert abs(w["diff"]) > 2 * w["se"] and w["ci_low"] < 0 < w["ci_high"] and w["within"]
    same = table.assign(**{"bf16 (%)": table["fp32 (%)"]})                           # identical runs: no difference
    assert P.paired_fields(same, run)["within"]
    assert f["unpaired_sd"] == pytest.approx(math.sqrt(2) * f["within_sd"]) and "pairing removes part" in f["pairing"]
    loose = table.assign(**{"fp32 (%)": [75.0, 75.0, 75.0], "bf16 (%)": [74.0, 76.0, 75.0]})   # pairs as far apart as seeds
    assert "pairing removes little" in P.paired_fields(loose, run)["pairing"]
    assert P.paired_fields(table.iloc[:1], run) is None
    with pytest.raises(ValueError, match="missing values"):
        P.paired_fields(table.assign(**{"bf16 (%)": [74.0, math.nan, 73.5]}), run)
