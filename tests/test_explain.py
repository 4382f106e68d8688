"""Class activation maps, Grad-CAM and calibration: exact identities and hand-computed cases."""
import json
import math

import pytest
import torch

import helpers as H
from helpers import calibration as C
from helpers import explain as E
from helpers import wording


@pytest.mark.parametrize("name", ["avgpool", "avgpool_dropout"])
def test_cam_cells_and_bias_add_up_to_the_logits(name):
    torch.manual_seed(0)
    model = H.build_model(name)
    images = torch.randn(6, 3, 32, 32)
    logits, maps = E.cam(model, images, batch_size=4)
    assert maps.shape == (6, 10, 4, 4)
    assert torch.allclose(logits, H.predict(model, images), atol=1e-4)
    assert torch.allclose(maps.sum((2, 3)) + model.classifier.bias, logits, atol=1e-4)


def test_cam_refuses_models_without_a_map():
    with pytest.raises(ValueError, match="grad_cam"):
        E.cam(H.build_model("fc"), torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match="grad_cam"):
        E.cam(H.build_model("avgpool", head="author"), torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match="report's three models"):
        E.grad_cam(H.build_model("compact"), torch.randn(2, 3, 32, 32))


def test_grad_cam_is_non_negative_follows_the_class_and_leaves_the_model_as_it_was():
    torch.manual_seed(0)
    model = H.build_model("fc").train()
    images = torch.randn(5, 3, 32, 32)
    logits, maps = E.grad_cam(model, images)
    assert maps.shape == (5, 4, 4) and (maps >= 0).all()
    assert torch.allclose(logits, H.predict(model, images), atol=1e-4)
    assert model.training and all(p.grad is None for p in model.parameters())
    _, other = E.grad_cam(model, images, torch.full((5,), 3))
    assert not torch.equal(maps, other) or (logits.argmax(1) == 3).all()


def test_grad_cam_of_an_average_pooling_model_is_known_in_closed_form():
    # score = W . mean(maxpool2x2(f)) + b: its gradient is W/4 at the 4 kept cells of each channel and 0 elsewhere,
    # so Grad-CAM's channel weights are W/16 and its map is relu(W . f / 16) at every cell
    torch.manual_seed(1)
    model = H.build_model("avgpool").eval()
    images = torch.randn(6, 3, 32, 32)
    target = torch.arange(6)
    _, maps = E.grad_cam(model, images, target)
    with torch.no_grad():
        features = E.feature_maps(model, images)[1]
    expected = torch.relu(torch.einsum("nkhw,nk->nhw", features, model.classifier.weight[target]) / 16)
    assert torch.allclose(maps, expected, atol=1e-5)
    found = E.maps_for({"avgpool": model}, images, target)["avgpool"]
    assert found["method"] == "CAM" and found["pred_map"].shape == (6, 4, 4)


def test_centre_share_and_agreement():
    even, centre, empty = torch.ones(4, 4), torch.zeros(4, 4), torch.zeros(4, 4)
    centre[1:3, 1:3] = 1
    shares = E.centre_share(torch.stack([even, centre, -even, empty]))
    assert shares[0] == pytest.approx(0.25) and shares[1] == pytest.approx(1.0)
    assert shares[2:].isnan().all()
    r = E.agreement(torch.stack([centre, centre, even]), torch.stack([centre, 1 - centre, centre]))
    assert r[0] == pytest.approx(1.0) and r[1] == pytest.approx(-1.0) and r[2].isnan()


def test_examples_are_right_then_wrong_each_of_different_classes():
    labels = torch.tensor([0, 0, 1, 2, 3, 1, 4, 5])
    right = labels.clone()
    wrong = labels.clone()
    wrong[[1, 5, 6]] = 9
    chosen = E.pick_examples({"fc": right, "avgpool": wrong}, labels, n=2)
    assert chosen[:2] == [0, 2]           # right everywhere, classes 0 and 1
    assert chosen[2:] == [1, 5]           # wrong for avgpool: class 0 (image 1), class 1 (image 5)
    assert len(E.pick_examples({"fc": right, "avgpool": right}, labels, n=2)) == 4   # topped up


def test_expected_calibration_error_by_hand():
    # four images: two 90% sure (one right), two 60% sure (both right) -> bins (0.867, 0.933] and (0.533, 0.6]
    p90, p60 = math.log(0.9 / (0.1 / 9)), math.log(0.6 / (0.4 / 9))
    logits = torch.zeros(4, 10)
    logits[0, 0] = logits[1, 0] = p90
    logits[2, 1] = logits[3, 1] = p60
    labels = torch.tensor([0, 5, 1, 1])
    table = C.reliability(logits, labels)
    assert table["images"].sum() == 4 and (table["images"] > 0).sum() == 2
    # |0.5 - 0.9| * 2/4 + |1.0 - 0.6| * 2/4 = 0.4
    assert C.ece(logits, labels) == pytest.approx(40.0, abs=1e-3)
    s = C.summary(logits, labels)
    assert s["accuracy"] == pytest.approx(75) and s["confidence wrong"] == pytest.approx(90, abs=1e-3)
    assert s["wrong over 99% sure"] == 0


def test_temperature_recovers_a_known_temperature_and_keeps_every_prediction():
    g = torch.Generator().manual_seed(0)
    true_logits = torch.randn(4000, 10, generator=g) * 2
    labels = torch.multinomial(true_logits.softmax(1), 1, generator=g).flatten()
    assert C.fit_temperature(true_logits * 3, labels) == pytest.approx(3, rel=0.1)
    scaled, (t_a, t_b) = C.cross_fitted(true_logits * 3, labels)
    assert torch.equal(scaled.argmax(1), true_logits.argmax(1))
    a, b = C.halves(len(labels))
    assert torch.allclose(scaled[b], true_logits[b] * 3 / t_a) and torch.allclose(scaled[a], true_logits[a] * 3 / t_b)
    assert set(a.tolist()).isdisjoint(b.tolist()) and len(a) + len(b) == len(labels)
    assert C.direction({"before": C.summary(true_logits * 3, labels)}) == "overconfident"
    assert C.direction({"before": C.summary(true_logits / 3, labels)}) == "underconfident"


def test_calibration_is_measured_once_and_kept_beside_the_run(tmp_path, fake_data, monkeypatch):
    run = H.fit(H.TrainConfig(model="avgpool", epochs=1, train_subset=100, test_subset=50), fake_data,
                results_dir=tmp_path, verbose=False)
    _, test = H.runs.image_sets(run.config, fake_data)
    x, y = H.normalize(test.images), test.labels
    first = C.calibration(run, x, y)
    assert (run.path / "calibration.json").exists()
    assert first["before"]["accuracy"] == pytest.approx(first["after"]["accuracy"])
    monkeypatch.setattr(C, "predict", lambda *a, **k: (_ for _ in ()).throw(AssertionError("measured again")))
    assert C.calibration(run, x, y) == json.loads(json.dumps(first))
    rise = C.loss_rise(run, first)
    assert rise["final loss"] == pytest.approx(first["before"]["loss"])


def test_a_template_names_a_missing_field(tmp_path, monkeypatch):
    monkeypatch.setattr(wording, "TEXT", tmp_path)
    (tmp_path / "t.md").write_text("Accuracy {acc:.1f}% for {name}.\n")
    assert wording.fields_of("t") == {"acc", "name"}
    assert wording.fill("t", acc=91.234, name="x", unused=1) == "Accuracy 91.2% for x."
    with pytest.raises(KeyError, match="t.md uses name"):
        wording.fill("t", acc=1.0)
    with pytest.raises(FileNotFoundError, match="no template"):
        wording.fill("absent")


def test_pieces_of_one_template_file_are_filled_by_name(tmp_path, monkeypatch):
    monkeypatch.setattr(wording, "TEXT", tmp_path)
    (tmp_path / "f.md").write_text("<!-- claim -->\nModel {m} wins.\n\n<!-- evidence -->\n{a:.1f} against {b:.1f}.\n")
    assert wording.pieces("f") == {"claim": "Model {m} wins.", "evidence": "{a:.1f} against {b:.1f}."}
    assert wording.fill("f:evidence", a=1, b=2) == "1.0 against 2.0."
    with pytest.raises(KeyError, match=r"f.md \(claim\) uses m"):
        wording.fill("f:claim")
    with pytest.raises(KeyError, match="no piece '<!-- verdict -->'; it has claim, evidence"):
        wording.fill("f:verdict")


def test_filled_text_has_one_line_per_paragraph_and_list_item():
    text = "A wrapped\nparagraph.\n\n- an item\n  that goes on\n- another\n\n| a | b |\n|---|---|\n### Head\nnext"
    assert wording.unwrap(text) == ("A wrapped paragraph.\n\n- an item that goes on\n- another\n\n| a | b |\n"
                                    "|---|---|\n### Head\nnext")


def test_every_template_in_the_report_parses():
    for path in wording.TEXT.rglob("*.md"):
        name = str(path.relative_to(wording.TEXT).with_suffix(""))
        names = [f"{name}:{piece}" for piece in wording.pieces(name)] or [name]
        assert all(isinstance(wording.fields_of(n), set) for n in names)


def test_cam_fields_words_what_the_numbers_say():
    models = {n: {"method": m, "accuracy": 80.0, "centre share": 40.0, "centre share right": 42.0,
                  "centre share wrong": 35.0, "grad_cam agrees with cam": 0.9 if m == "CAM" else math.nan}
              for n, m in [("fc", "Grad-CAM"), ("avgpool", "CAM"), ("avgpool_dropout", "CAM")]}
    stats = {"models": models, "images": 100,
             "agreement (true class)": {"fc / avgpool": 0.1, "fc / avgpool_dropout": 0.2, "avgpool / avgpool_dropout": 0.7}}
    f = E.cam_fields(stats)
    assert f["right_verdict"] == "more than" and f["agree_verdict"] == "moderately"
    assert f["centre_verdict"].startswith("all three favour the centre, yet")
    text = wording.fill("cams", **f)
    assert "{" not in text and "r = 0.90" in text


def test_a_flat_or_extreme_temperature_never_changes_the_accuracy():
    # an untrained model's logits differ by little: divided by a large T, their float32 softmax ties
    logits = torch.tensor([[0.0, 1e-6, 0.0], [3.0, 0.0, 3.0 + 1e-6]])
    labels = torch.tensor([1, 2])
    for t in (1.0, 1e4, 1e-4):
        assert C.summary(logits / t, labels)["accuracy"] == 100.0


def test_every_training_setting_has_a_description_for_the_recipe_table():
    import dataclasses
    fields = {f.name for f in dataclasses.fields(H.TrainConfig)}
    described = set(H.wording.pieces("settings"))
    assert fields - described == set() and described - fields == set()
    final = H.TrainConfig(model="compact", epochs=10, label_smoothing=0.2, precision="bf16", seed=3)
    table = H.studies.recipe_table(final, H.TrainConfig(model="avgpool_dropout"))
    assert list(table.index) == ["model", "epochs", "label_smoothing"]     # seed and precision are not the recipe
    assert table.loc["epochs"].tolist() == ["100", "10", "passes over the training set"]
