"""The follow-up studies: seed prefixes, seed checks, the ladder and the choice of the final model."""
import dataclasses
import math

import pandas as pd
import pytest
import torch

import helpers as H
from helpers import studies as S
from conftest import REPO

METRICS = ["epoch", "train_loss", "train_acc", "test_loss", "test_acc"]
TINY = dict(train_subset=200, test_subset=100)


def _fit(data, tmp_path, name, **kw):
    return H.fit(H.TrainConfig(**{**TINY, **kw}), data, run_name=name, results_dir=tmp_path, progress=False,
                 verbose=False)


def test_a_short_run_is_the_prefix_of_a_long_one(fake_data, tmp_path):
    long = _fit(fake_data, tmp_path, "long", model="avgpool_dropout", epochs=3)
    short = _fit(fake_data, tmp_path, "short", model="avgpool_dropout", epochs=2)
    prefix = S.history_prefix(long, short.config)
    pd.testing.assert_frame_equal(prefix[METRICS], short.history[METRICS])
    # anything but the number of epochs, or a schedule that depends on the total, rules the prefix out
    assert S.history_prefix(long, H.TrainConfig(model="avgpool_dropout", epochs=2, seed=1, **TINY)) is None
    scheduled = _fit(fake_data, tmp_path, "sched", model="avgpool", epochs=3, schedule="cosine")
    assert S.history_prefix(scheduled, H.TrainConfig(model="avgpool", epochs=2, schedule="cosine", **TINY)) is None
    assert S.history_prefix(long, H.TrainConfig(model="avgpool_dropout", epochs=4, **TINY)) is None


def _history(acc, loss):
    return pd.DataFrame({"epoch": range(1, len(acc) + 1), "train_acc": [0.9] * len(acc), "test_acc": acc,
                         "test_loss": loss})


def test_seed_checks_count_the_seeds_where_a_conclusion_holds():
    rising = [1.0, 0.8, 0.9, 1.0, 1.2, 1.4, 1.5, 1.6]
    falling = [1.0, 0.9, 0.8, 0.75, 0.7, 0.68, 0.66, 0.65]
    histories = {}
    for seed, order in enumerate([(0.70, 0.72, 0.75), (0.70, 0.72, 0.75), (0.73, 0.72, 0.75)]):
        for variant, best in zip(H.VARIANTS, order):
            loss = falling if variant == "avgpool_dropout" else rising
            histories[variant, seed] = _history([best - 0.05] * 7 + [best], loss)
    checks = {c["claim"].split(" ")[0] + c["claim"].split(" ")[1]: c for c in S.seed_checks(histories)}
    assert checks["Bestaccuracy"]["held"] == 2 and checks["Bestaccuracy"]["seeds"] == 3
    assert checks["TheFC"]["held"] == 3 and checks["Dropoutends"]["held"] == 3
    table = S.seed_table(histories)
    assert table.loc["Fully connected head", "best mean"] == pytest.approx(71.0)
    assert table.loc["Fully connected head", "best sd"] == pytest.approx(pd.Series([70, 70, 73.0]).std())
    assert table.loc["Average pooling + dropout", "lowest loss epochs"] == "8, 8, 8"
    assert "holds in 2 of 3 seeds" in S.seed_checks_markdown(S.seed_checks(histories))
    del histories["fc", 2]
    assert S.seed_checks(histories) == []


def test_the_seed_study_reuses_a_longer_run_and_trains_the_rest(fake_data, tmp_path, monkeypatch):
    for variant in H.VARIANTS:
        _fit(fake_data, tmp_path / "report", variant, model=variant, epochs=2)
    # relative folders are the project's, whatever the working directory (notebooks run in notebooks/)
    monkeypatch.setattr(H.files, "REPO_ROOT", tmp_path)
    monkeypatch.chdir(tmp_path / "report")
    histories, sources = S.seed_study(fake_data, seeds=[0, 1], epochs=1, results_dir="study",
                                      reuse_from="report", **TINY)
    assert len(histories) == 6 and all(len(h) == 1 for h in histories.values())
    reused = sources["history from"].str.startswith("first 1 epochs of")
    assert reused.tolist() == [True, False] * 3
    assert (tmp_path / "study" / "seeds" / "fc_seed1_1ep" / "metrics.json").exists()
    assert not (tmp_path / "study" / "seeds" / "fc_1ep").exists()


def test_ladder_steps_accumulate_and_branches_do_not():
    configs = S.ladder_configs(S.default_ladder(), H.TrainConfig(model="avgpool_dropout", validation=5000))
    assert configs["model3"] == H.TrainConfig(model="avgpool_dropout", validation=5000)
    tta = configs["tta"]
    assert tta.batchnorm and tta.augment == "flip_crop" and tta.schedule == "onecycle" and tta.tta_flip
    assert configs["narrow"].width == 0.5 and configs["narrow"].label_smoothing == 0.1
    assert configs["compact"].model == "compact" and configs["shallow"].width == 1.0
    last = configs["tta_shift"]
    assert (last.model, last.optimizer, last.whiten, last.crop_pad, last.label_smoothing, last.tta_shift) == \
        ("compact", "sgd", True, 2, 0.2, 2) and last.lookahead and last.augment == "flip_crop"
    assert configs["smoothing_02"].schedule == "onecycle" and configs["smoothing_02"].batch_size == 64
    assert last.dirac and not last.bn_scale and (last.batch_size, last.lr, last.momentum, last.schedule) == \
        (1024, 1.5, 0.85, "triangle")
    # airbench's decay per step (0.0153 per 1024 examples over 1 + 1/(1 - momentum)) is kept
    assert last.lr * last.weight_decay == pytest.approx(0.0153 * 1024 / (1024 * (1 + 1 / 0.15)), rel=1e-4)
    with pytest.raises(ValueError, match="not an earlier step"):
        S.ladder_configs([S.Step("a", "a", {}, "b")], H.TrainConfig())


def test_the_ladder_runs_tabulates_and_reuses_weights_for_evaluation_only_steps(fake_data, tmp_path):
    steps = [S.Step("base", "model 3"), S.Step("bn", "+ BN", {"batchnorm": True}, "base"),
             S.Step("tta", "+ flip", {"tta_flip": True}, "bn"),
             S.Step("small", "narrow", {"width": 0.25}, "tta", branch=True)]
    start = H.TrainConfig(model="avgpool_dropout", epochs=1, validation=100, train_subset=200)
    with pytest.raises(ValueError, match="validation split"):
        S.run_ladder(steps, H.TrainConfig(), fake_data, results_dir=tmp_path)
    table, histories = S.run_ladder(steps, start, fake_data, results_dir=tmp_path)
    saved = pd.read_csv(tmp_path / "studies" / "ladder.csv")
    assert saved["step"].tolist() == ["base", "bn", "tta", "small"]
    # evaluated, not trained again: its folder keeps only the measurement, which a re-run reads back
    # (the tta step's base has BatchNorm after dropout: judged with refreshed statistics, as trained kept beside)
    assert sorted(p.name for p in (tmp_path / "ladder" / "tta").iterdir()) == ["evaluation.json",
                                                                             "evaluation_refreshed.json",
                                                                             "val_right.json"]
    assert table["p (McNemar)"].notna().sum() == 3                        # each step against its base
    rows = table.set_index("step")
    assert rows["bn refreshed"].tolist() == [False, True, True, True]
    assert rows.loc["tta", "minutes"] == rows.loc["bn", "minutes"] and rows.loc["tta", "eval only"]
    assert rows.loc["bn", "gain"] == pytest.approx(rows.loc["bn", "val acc"] - rows.loc["base", "val acc"])
    assert math.isnan(rows.loc["base", "gain"]) and rows.loc["small", "parameters"] < rows.loc["bn", "parameters"]
    assert rows.loc["base", "train images"] == 200 and "val_acc" in histories["bn"]

    refresh = S.batchnorm_refresh(table, fake_data, results_dir=tmp_path, calibration=50)
    assert refresh["step"].tolist() == ["bn", "small"] and refresh["dropout"].all()   # base has no BatchNorm
    assert refresh.set_index("step").loc["bn", "val acc, one view"] == pytest.approx(rows.loc["bn", "val acc as trained"])
    assert rows.loc["bn", "gain as trained"] == pytest.approx(rows.loc["bn", "val acc as trained"] - rows.loc["base", "val acc"])
    # re-evaluating is re-running: a run with bn_refresh trains identically and ends where the ladder says
    configs = S.ladder_configs(steps, start)
    rerun = H.fit(dataclasses.replace(configs["bn"], bn_refresh=True), fake_data, run_name="bn_rerun",
                  results_dir=tmp_path, verbose=False)
    pd.testing.assert_series_equal(rerun.history["train_loss"], histories["bn"]["train_loss"])
    assert 100 * rerun.history["val_acc"].iloc[-1] == pytest.approx(rows.loc["bn", "val acc"], abs=1e-6)
    assert (refresh["gain"] == refresh["val acc, one view, statistics refreshed"] - refresh["val acc, one view"]).all()
    assert "the 2 BatchNorm models with dropout gain" in S.batchnorm_refresh_findings(refresh)
    # measured once: a second pass reads what the first stored beside each run, and changes no file
    stored = sorted(tmp_path.rglob("*.json"))
    before = {p: p.read_bytes() for p in stored}
    monkey = pytest.MonkeyPatch()
    monkey.setattr(S.ladder, "evaluate", lambda *a, **k: pytest.fail("measured again"))
    try:
        again = S.batchnorm_refresh(table, fake_data, results_dir=tmp_path, calibration=50)
        table_again, _ = S.run_ladder(steps, start, fake_data, results_dir=tmp_path)
    finally:
        monkey.undo()
    pd.testing.assert_frame_equal(again, refresh)
    pd.testing.assert_frame_equal(table_again.drop(columns="minutes"), table.drop(columns="minutes"))
    assert before == {p: p.read_bytes() for p in stored}

    table = table.assign(**{"val acc": [50.0, 60.0, 70.0, 80.0], "images/s": [20.0, 20.0, 20.0, 2.0]})
    step, config, reason = S.choose_final(table, configs, epochs=3, budget_minutes=1.0, train_images=200)
    assert step == "tta" and config.tta_flip and config.validation == 0 and config.epochs == 3
    assert not config.eval_each_epoch and "70.00%" in reason
    with pytest.raises(ValueError, match="no step fits"):
        S.choose_final(table, configs, epochs=30, budget_minutes=1.0, train_images=200)


def test_a_final_run_reads_its_evaluation_set_once(fake_data, tmp_path):
    run = _fit(fake_data, tmp_path, "final", model="compact", width=0.25, epochs=2, eval_each_epoch=False,
               optimizer="sgd", lr=0.05, batch_size=32)
    assert run.history["test_acc"].isna().tolist() == [True, False]
    assert run.metrics["final_test_acc"] == run.metrics["best_test_acc"] == run.history["test_acc"].iloc[-1]
    info = S.save_final(run, "compact", "why", results_dir=tmp_path)
    assert info["test_acc"] == run.metrics["final_test_acc"]
    assert (tmp_path / "studies" / "final.json").exists()


def test_the_authors_head_puts_mass_on_outputs_that_are_no_class(fake_data, tmp_path):
    run = _fit(fake_data, tmp_path, "author", model="avgpool", head="author", epochs=1)
    test = H.normalize(H.runs.image_sets(run.config, fake_data)[1].images)     # the run's own test images
    with pytest.raises(H.runs.RunDataError, match="measured on 100 test images"):
        S.unused_logit_share(run, test[:50])                                     # never on a smaller set
    share = S.unused_logit_share(run, test)
    assert 0 <= share["mass on unused outputs %"] < 100 and 0 <= share["predictions outside 0-9 %"] <= 100
    assert share["largest class output"] >= 0 and share["largest unused output"] >= 0   # ReLU outputs
    ten = _fit(fake_data, tmp_path, "ten", model="avgpool", epochs=1)
    table = S.head_table({"avgpool": {"10-way": ten, "author": run}}, test)
    assert table["parameters"].tolist() == [1_132_842, 1_130_272]
    assert "256-logit head reaches" in S.head_findings(table)
    assert torch.isfinite(torch.tensor(table["final loss"].tolist())).all()


def test_the_verdict_on_fewer_parameters_discounts_the_batchnorm_dropout_artefact():
    # a cut that gains as trained only because its base's BatchNorm statistics were wrong
    def row(step, base, acc, trained, params, branch=False, eval_only=False, refreshed=True):
        return {"step": step, "change": step, "branch": branch, "builds on": base, "eval only": eval_only,
                "val acc": acc, "val acc as trained": trained, "parameters": params, "bn refreshed": refreshed}
    table = pd.DataFrame([row("model 3", "", 75.0, 75.0, 1000, refreshed=False), row("bn", "model 3", 82.0, 65.0, 1010),
                          row("flip", "bn", 82.5, 66.0, 1010, eval_only=True),
                          row("fewer layers", "flip", 78.0, 72.0, 250, branch=True)])
    for column, gain in (("val acc", "gain"), ("val acc as trained", "gain as trained")):
        acc = table.set_index("step")[column]
        table[gain] = [a - acc[b] if b else math.nan for a, b in zip(table[column], table["builds on"])]
    text = " ".join(S.hypothesis_verdict(table).split())
    assert "the best parameter cut lowers validation accuracy. The cuts: fewer layers (\u221275% parameters) \u22124.5 points, to 78.0%" in text
    assert "the best cut raises it (fewer layers (\u221275% parameters) +6.0 points, to 72.0%)" in text   # as trained
    assert "to 82.5% (flip) with 1,010 parameters, 1.0 times model 3's 1,000" in text
    plain = S.hypothesis_verdict(table.assign(**{"bn refreshed": False}))
    assert "as trained" not in plain.lower().replace("as trained,", "")
    assert S.hypothesis_verdict(table[table["step"] != "fewer layers"]) == ""


def test_final_seed_runs_are_read_only_when_they_are_the_same_recipe(tmp_path, fake_data):
    config = H.TrainConfig(model="avgpool", epochs=1, train_subset=100, test_subset=50)
    for seed in (0, 1):
        H.fit(dataclasses.replace(config, seed=seed), fake_data, run_name=S.final_run_name(seed),
              results_dir=tmp_path, verbose=False)
    H.fit(dataclasses.replace(config, seed=2, epochs=2), fake_data, run_name=S.final_run_name(2),
          results_dir=tmp_path, verbose=False)                  # another recipe: not one of the seeds
    runs = S.finished_final_seeds(tmp_path)
    assert list(runs) == [0, 1]
    assert S.final_seed_table(runs)["one view (%)"].isna().all()          # nothing measured yet, nothing trained
    _, test = H.runs.image_sets(config, fake_data)
    table = S.final_seed_table(runs, H.normalize(test.images), test.labels)
    assert (tmp_path / "final_seeds" / "seed1" / "one_view.json").exists()
    assert S.final_seed_table(runs)["one view (%)"].tolist() == table["one view (%)"].tolist()
    fields = S.final_seed_fields(table)
    assert fields["n"] == 2 and fields["low"] == table["test acc (%)"].min() and "standard deviation" in fields["spread"]
    assert "{" not in H.wording.fill("final_seeds", **fields)


def test_a_ladder_gain_under_two_standard_errors_is_marked_within_noise():
    table = pd.DataFrame({"step": ["a", "b", "c"], "builds on": ["", "a", "b"], "val acc": [80.0, 80.5, 84.0],
                          "gain": [math.nan, 0.5, 3.5], "val images": [5000] * 3, "eval only": [False] * 3,
                          "change": ["a", "+ b", "+ c"], "branch": [False] * 3, "parameters": [1] * 3,
                          "minutes": [1.0] * 3})
    noisy = S.with_noise(table)
    assert noisy["val se"].iloc[0] == pytest.approx(100 * math.sqrt(0.8 * 0.2 / 5000))
    assert noisy["within noise"].tolist() == [False, True, False]       # 2 se of a difference here: about 1.1 points
    assert "1 of the 2 changes cannot be told from no change" in S.ladder_findings(noisy)


def test_bf16_against_fp32_over_seeds_with_its_standard_error():
    table = pd.DataFrame({"test acc (%)": [90.3, 90.1, 90.2, 90.0, 90.4, 90.2],
                          "one view (%)": [89.4, 89.2, 89.3, 89.3, 89.5, 89.1],
                          "minutes": [19.0, 20.0, 21.0, 130.0, 140.0, 128.0],
                          "precision": ["bf16", "bf16", "bf16", "fp32", "fp32", "fp32"]},
                         index=pd.Index([0, 4, 5, 1, 2, 3], name="seed"))
    f = S.precision_fields(table)
    assert f["diff"] == pytest.approx(0.0) and f["bf16_n"] == f["fp32_n"] == 3 and f["bf16_seeds"] == "0, 4, 5"
    pooled = math.sqrt((2 * 0.1 ** 2 + 2 * 0.2 ** 2) / 4)            # sd 0.1 in bf16, 0.2 in fp32
    assert f["se"] == pytest.approx(pooled * math.sqrt(2 / 3))
    assert f["within"] and f["verdict"] == "within the noise" and f["bf16_minutes"] == pytest.approx(20.0)
    shifted = table.assign(**{"test acc (%)": table["test acc (%)"] + ([1.0] * 3 + [0.0] * 3)})
    assert S.precision_fields(shifted)["verdict"] == "larger than the noise"
    assert S.precision_fields(table.iloc[:4]) is None                       # one fp32 seed: no spread to compare
    assert "{" not in H.wording.fill("final_precision", **f)
    found = S.found_fields(table, {"step": "s", "parameters": 10, "epochs": 10}, budget_minutes=20)
    assert found["goal_met"] == "meets" and found["above"] == "all" and found["budget_met"] == "within"   # fastest 19 min
    assert found["fastest_seed"] == 0 and found["fastest_precision"] == "bf16" and found["slowest_same"] == 21.0
    assert found["median_same"] == 20.0 and "within the 20-minute budget; the median bf16 run took 20" in found["budget_line"]
    assert "19 to 21 minutes in bf16 (3 runs)" in found["minutes"]
    slow = S.found_fields(table.assign(minutes=table["minutes"] + 2), {"step": "s", "parameters": 10, "epochs": 10},
                          budget_minutes=20)
    assert slow["budget_met"] == "over" and slow["budget_line"].startswith("Even the fastest run (seed 0, bf16) took 21")
    assert "holds" not in slow["budget_line"] and "{" not in H.wording.fill("09_found", **slow)
    assert "{" not in H.wording.fill("09_found", **found)


def test_a_gap_between_models_is_judged_by_welchs_t():
    import pandas as pd
    a = pd.Series({"best mean": 79.1, "best sd": 0.19, "seeds": 3})
    b = pd.Series({"best mean": 77.3, "best sd": 0.74, "seeds": 3})
    from helpers.studies.seeds import welch
    out = welch(a, b)
    se = (0.19 ** 2 / 3 + 0.74 ** 2 / 3) ** 0.5
    assert out["t"] == pytest.approx(1.8 / se) and 2 < out["df"] < 3
    assert out["verdict"] == "within the seed noise"           # t about 4.1 on 2 df: below 4.303
    c = pd.Series({"best mean": 77.3, "best sd": 0.1, "seeds": 3})
    assert welch(a, c)["verdict"] == "beyond the seed noise"


def test_mcnemar_counts_only_the_images_two_steps_disagree_on():
    import numpy as np
    from helpers.studies import ladder
    base = np.array([True] * 80 + [False] * 20)
    step = base.copy()
    step[80:90] = True                       # ten images gained, none lost
    m = ladder.mcnemar(base, step)
    assert (m["gained"], m["lost"]) == (10, 0) and m["paired gain"] == pytest.approx(10.0)
    assert m["p (McNemar)"] == pytest.approx(2 / 2 ** 10)            # exact: both tails of Binomial(10, 1/2)
    assert m["paired se"] == pytest.approx(100 * ((0.1 - 0.01) / 100) ** 0.5)
    step[:10] = False                        # and ten lost: no difference
    assert ladder.mcnemar(base, step)["p (McNemar)"] == 1.0 and ladder.mcnemar(base, base)["p (McNemar)"] == 1.0


def test_the_ladder_judges_each_step_by_the_paired_test_on_the_committed_runs():
    table = pd.read_csv(REPO / "results" / "studies" / "ladder.csv")
    tested = table[table["p (McNemar)"].notna()]
    assert len(tested) == table["builds on"].notna().sum()                 # every step against its base
    assert (tested["within noise"] == (tested["p (McNemar)"] >= 0.05)).all()
    assert (abs(tested["paired gain"] - tested["gain"]) < 0.3).all()       # fp32 re-evaluation agrees with the table
