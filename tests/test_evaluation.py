import pytest
import torch
import torch.nn.functional as F

import helpers as H


def test_loss_is_the_whole_set_mean_with_a_short_last_batch():
    torch.manual_seed(0)
    model = H.build_model("avgpool")
    x, y = torch.randn(250, 3, 32, 32), torch.randint(0, 10, (250,))
    with torch.no_grad():
        model.eval()
        expected = F.cross_entropy(model(x), y).item()
    for batch in (64, 100, 1000):
        assert H.evaluate(model, x, y, batch_size=batch)["loss"] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("training", [True, False])
def test_evaluation_restores_the_mode_and_tracks_no_gradients(training):
    model = H.build_model("avgpool_dropout").train(training)
    logits = H.predict(model, torch.randn(10, 3, 32, 32))
    assert model.training is training
    assert not logits.requires_grad


def test_evaluation_is_deterministic_with_dropout():
    model = H.build_model("avgpool_dropout").train()
    x = torch.randn(20, 3, 32, 32)
    assert torch.equal(H.predict(model, x), H.predict(model, x))


def test_confusion_matrix_and_per_class_accuracy():
    labels = torch.tensor([0, 0, 1, 1, 2])
    pred = torch.tensor([0, 1, 1, 1, 0])
    m = H.confusion_matrix(pred, labels, num_classes=3)
    assert m.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    acc = H.per_class_accuracy(m, classes=["a", "b", "c"])
    assert acc.tolist() == [0.5, 1.0, 0.0]


def test_author_loss_scale_is_about_one_64th():
    assert H.author_loss_scale(1.0) == pytest.approx(157 / 10_000)


def test_test_time_views_average_the_flip_and_the_shifts():
    from helpers.loop import _shift
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    moved = _shift(x, 1, 1)
    assert torch.equal(moved[..., 1:, 1:], x[..., :-1, :-1])          # content moves down and right
    assert torch.equal(_shift(x, -2, -2)[..., :-2, :-2], x[..., 2:, 2:])
    torch.manual_seed(0)
    model = H.build_model("avgpool").eval()
    x = torch.randn(6, 3, 32, 32)
    with torch.no_grad():
        plain, flipped = model(x), model(x.flip(3))
        views = [x, _shift(x, 2, 2), _shift(x, -2, -2)]
        six = torch.stack([model(v) for v in views] + [model(v.flip(3)) for v in views]).mean(0)
    assert torch.allclose(H.predict(model, x), plain, atol=1e-6)
    assert torch.allclose(H.predict(model, x, tta_flip=True), (plain + flipped) / 2, atol=1e-6)
    assert torch.allclose(H.predict(model, x, tta_flip=True, tta_shift=2), six, atol=1e-5)


def test_refreshed_batchnorm_measures_the_activations_without_dropout():
    torch.manual_seed(0)
    model = torch.nn.Sequential(H.models.Dropout(0.5), torch.nn.BatchNorm2d(3))
    x = torch.randn(400, 3, 4, 4) * 2 + 1
    model.train()
    for start in range(0, 400, 50):        # training records statistics of the thinned activations
        model(x[start:start + 50])
    before = model[1].running_var.clone()
    fresh = H.evaluation.refresh_batchnorm(model, x, batch_size=100)
    assert torch.allclose(fresh[1].running_mean, x.mean((0, 2, 3)), atol=1e-4)
    assert torch.allclose(fresh[1].running_var, x.var((0, 2, 3)), rtol=0.02)
    assert (model[1].running_var > 1.3 * fresh[1].running_var).all()    # dropout inflated the recorded variance
    assert torch.equal(model[1].running_var, before) and not fresh.training
    with pytest.raises(ValueError, match="no BatchNorm"):
        H.evaluation.refresh_batchnorm(torch.nn.Linear(3, 3), x)
