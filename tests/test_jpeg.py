"""The JPEG sensitivity study: one more JPEG pass, its distortion, runs on the copy and their table."""
import math

import pandas as pd
import pytest
import torch

import helpers as H
from helpers.studies import jpeg


def test_a_jpeg_pass_is_deterministic_and_lower_quality_distorts_more(fake_data):
    images = fake_data.test.images[:50]
    q75, q25 = jpeg.reencode(images, 75), jpeg.reencode(images, 25)
    assert torch.equal(q75, jpeg.reencode(images, 75)) and q75.dtype == torch.uint8 and q75.shape == images.shape
    assert math.isinf(jpeg.psnr(images, images))
    assert jpeg.psnr(q25, images) < jpeg.psnr(q75, images) < 60
    assert jpeg.psnr(torch.zeros(1, 3, 2, 2, dtype=torch.uint8), torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)) == 0
    with pytest.raises(ValueError, match="quality must be"):
        jpeg.reencode(images, 0)
    with pytest.raises(ValueError, match="uint8 of shape"):
        jpeg.reencode(images.float(), 50)


def test_runs_on_a_jpeg_copy_say_so_and_are_tabulated_against_distortion(fake_data, tmp_path):
    copy = jpeg.jpeg_copy(fake_data, 50)
    assert not copy.official and "re-encoded once more as JPEG at quality 50" in copy.source
    assert torch.equal(copy.train.labels, fake_data.train.labels)
    assert not torch.equal(copy.train.images, fake_data.train.images)
    config = H.TrainConfig(model="avgpool", epochs=1, train_subset=100, test_subset=50)
    runs = jpeg.jpeg_runs(config, [50, 25], [0, 1], fake_data, results_dir=tmp_path)
    assert sorted(runs) == [(25, 0), (25, 1), (50, 0), (50, 1)]
    assert "quality 25" in runs[25, 1].metrics["data"]
    assert sorted(jpeg.finished_jpeg_runs(tmp_path)) == sorted(runs)
    (tmp_path / "jpeg" / "q50" / "seed0" / "model.pt").unlink()       # weights need not be kept
    again = jpeg.jpeg_runs(config, [50, 25], [0, 1], fake_data, results_dir=tmp_path)
    assert again[50, 0].metrics == runs[50, 0].metrics          # read, not trained again, and no RunDataError
    psnrs = {q: jpeg.distortion(fake_data, q, results_dir=tmp_path) for q in (50, 25)}
    assert (tmp_path / "jpeg" / "q50" / "distortion.json").exists()
    assert psnrs[25]["test psnr"] < psnrs[50]["test psnr"]
    baseline = pd.DataFrame({"test acc (%)": [80.0, 82.0]})
    table = jpeg.jpeg_table(baseline, jpeg.finished_jpeg_runs(tmp_path), psnrs)
    assert list(table.index) == ["copy as it is", "50", "25"] and table.loc["copy as it is", "test acc (%)"] == 81.0
    assert table.loc["25", "added mse"] > table.loc["50", "added mse"] > 0
    assert table.loc["50", "drop"] == pytest.approx(81.0 - table.loc["50", "test acc (%)"])
    assert jpeg.measured_cost(tmp_path) is None                 # notebook 09 has not read the runs yet
    study = jpeg.jpeg_summary(baseline, fake_data, tmp_path)    # as notebook 09 shows it
    assert study.cost is not None and "{" not in study.text and f"{study.cost['estimate']}" in study.text
    assert len(study.points) == 2 + 4 and set(study.points["quality"]) == {"copy as it is", "50", "25"}
    again = jpeg.measured_cost(tmp_path)                        # what notebook 06, the README and the paper read
    assert again["qualities"] == study.cost["qualities"] == "50, 25" and again["points"] == study.cost["points"]
    assert [again[k] for k in ("slope", "slope_se", "estimate")] == pytest.approx(
        [study.cost[k] for k in ("slope", "slope_se", "estimate")])
    (tmp_path / "studies" / "jpeg.csv").write_text("quality,seeds\n50,2\n")      # a hand-edited table
    with pytest.raises(ValueError, match="jpeg.csv or .*reference.json is not what notebook 09 writes"):
        jpeg.measured_cost(tmp_path)
    H.plots.use_style()
    paths = H.plots.save_figure(H.studies.figures.jpeg_sensitivity(study.points, study.cost), "jpeg_sensitivity", tmp_path)
    assert all(p.stat().st_size > 0 for p in paths)


def test_the_cost_of_a_pass_is_read_from_a_line_through_the_origin(fake_data, tmp_path):
    table = pd.DataFrame({"psnr (dB)": [math.inf, 28.0, 26.0], "added mse": [0.0, 10.0, 20.0], "seeds": [5, 3, 3],
                          "test acc (%)": [90.0, 89.0, 88.0], "sd": [0.2, 0.1, 0.3], "drop": [0.0, 1.0, 2.0]},
                         index=pd.Index(["copy as it is", "50", "25"], name="quality"))
    reference = {"psnr": 10 * math.log10(255 ** 2 / 5.0), "aligned psnr": 50.0}
    f = jpeg.jpeg_fields(table, reference)
    assert f["slope"] == pytest.approx(0.1) and f["estimate"] == pytest.approx(0.5) and f["reference_mse"] == pytest.approx(5)
    assert f["sd"] == pytest.approx(((4 * 0.04 + 2 * 0.01 + 2 * 0.09) / 8) ** 0.5)     # pooled over 5 + 3 + 3 seeds
    # both drops share the copy's mean: var(slope) = sd^2 (sum x^2/n + (sum x)^2/n_copy) / (sum x^2)^2
    assert f["slope_se"] == pytest.approx(f["sd"] * (100 / 3 + 400 / 3 + 900 / 5) ** 0.5 / 500)
    assert 0 < f["estimate_se"] < f["estimate"] and "{" not in H.wording.fill("jpeg", **f)
    assert jpeg.jpeg_fields(table.assign(seeds=[5, 1, 1]), reference) is None
    copy = jpeg.jpeg_copy(fake_data, 75)                        # like the offline copy: JPEG at quality 75 once
    measured = jpeg.reference_distortion(copy, results_dir=tmp_path)
    assert measured["psnr"] < measured["aligned psnr"] - 3        # moved blocks: a real second pass


def test_a_bending_curve_gives_a_second_reading_and_the_range_spans_both():
    a, b = 0.01, 0.001                     # drop = a x + b x^2: bends, as the real points do
    x = [10.0, 20.0]
    table = pd.DataFrame({"psnr (dB)": [math.inf, 28.0, 26.0], "added mse": [0.0] + x, "seeds": [6, 3, 3],
                          "test acc (%)": [90.0] + [90.0 - a * v - b * v * v for v in x], "sd": [0.2, 0.2, 0.2],
                          "drop": [0.0] + [a * v + b * v * v for v in x]},
                         index=pd.Index(["copy as it is", "50", "25"], name="quality"))
    reference = {"psnr": 10 * math.log10(255 ** 2 / 5.0), "aligned psnr": 50.0}
    f = jpeg.jpeg_fields(table, reference)
    assert (f["curve_a"], f["curve_b"]) == pytest.approx((a, b))
    assert f["tangent"] == pytest.approx(a * 5)                  # the curve's slope at the copy x the reference mse
    assert f["low"] == pytest.approx(f["tangent"]) and f["high"] == pytest.approx(f["estimate"]) and f["estimate"] > f["tangent"]
    assert f["high_se"] == f["estimate_se"] and f["range"] == f"between about {f['low']} and {f['high']} points (two readings of the same runs: a curve that keeps bending, and a straight line)"
    assert f["bend_quality"] == "50" and f["bend"] == pytest.approx(f["slope"] * 10 - (a * 10 + b * 100)) and f["bend"] > 0
    assert f["bend_se"] == pytest.approx(0.2 * (1 / 3 + 1 / 6) ** 0.5) and f["tangent_se"] > f["estimate_se"]
    assert "{" not in H.wording.fill("jpeg_curved", **f)
    one = jpeg.jpeg_fields(table.drop(index="25"), reference)     # one quality: a line only
    assert math.isnan(one["tangent"]) and one["low"] == one["high"] == pytest.approx(one["estimate"])
    assert one["range"] == f"about {one['estimate']} points (one reading: a straight line through the copy)" and one["high_se"] == one["estimate_se"]


def test_the_stand_in_is_measured_several_ways_and_its_spread_read_both_ways(fake_data, tmp_path):
    from helpers.studies import jpeg
    small = fake_data.__class__(fake_data.train, H.data.balanced_subset(fake_data.test, 50), fake_data.root,
                                fake_data.official)
    variants = jpeg.stand_in_variants(small, results_dir=tmp_path)
    assert {"roll 4 px", "roll 4 px, seam left out", "reflect 3 px", "roll 4 px, pass 3"} <= set(variants.index)
    assert (variants["added mse"] > 0).all() and (tmp_path / "jpeg" / "stand_in.json").exists()
    moved = jpeg._moved(small.test.images, 2, "reflect")
    assert torch.equal(moved[..., 2:, 2:], small.test.images[..., :-2, :-2])    # moved down-right, no wrap
    cost = {"slope": 0.02, "curve_a": 0.01, "tangent": 0.5}
    text = jpeg.stand_in_text(variants, cost)
    first = variants.drop([v for v in variants.index if "pass" in v])
    assert f"{0.02 * first['added mse'].max():.2f} points" in text and "pass 2" not in text.split("Repeating")[0]
    assert jpeg.stand_in_text(variants, None) == ""
