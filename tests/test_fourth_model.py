"""The README's "add a fourth model" recipe, end to end: a model of your own, registered, trained, recorded
under its own name, loaded back and drawn with a label and a style of its own."""
import json

import pytest
import torch
from torch import nn

import helpers as H


class TinyNet(nn.Module):
    """The README's example: one convolution, a global average, a classifier."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 32, kernel_size=3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(32, 10)

    def forward(self, x):
        x = self.pool(torch.relu(self.conv(x)))
        return self.classifier(x.flatten(1))


@pytest.fixture
def tiny():
    H.models.register("tiny", TinyNet, "Tiny network")
    yield "tiny"
    H.models.CUSTOM.pop("tiny", None)
    H.models.MODELS.pop("tiny", None)


def test_a_fourth_model_trains_under_its_own_name(tiny, fake_data, tmp_path):
    run = H.fit(H.TrainConfig(model=tiny, epochs=1, train_subset=200), fake_data, results_dir=tmp_path, verbose=False)
    assert run.path.name == "tiny"
    assert json.loads((run.path / "config.json").read_text())["model"] == "tiny"
    assert isinstance(H.load_run(run.path).model, TinyNet)
    assert H.plots.label(tiny) == "Tiny network"
    style = H.plots.model_style(tiny)
    assert style["color"] not in H.COLORS.values() and style["marker"] not in H.MARKERS.values()
    # a record that would not be true is refused: options of the report's models, or another class under the name
    with pytest.raises(ValueError, match="cannot be set for 'tiny'"):
        H.TrainConfig(model=tiny, width=0.5)
    with pytest.raises(ValueError, match="is taken"):
        H.models.register("tiny", nn.Identity)
    with pytest.raises(ValueError, match="is taken"):
        H.models.register("fc", TinyNet)


def test_a_run_of_an_unregistered_model_says_what_to_do(tiny, fake_data, tmp_path):
    run = H.fit(H.TrainConfig(model=tiny, epochs=1, train_subset=200), fake_data, results_dir=tmp_path, verbose=False)
    H.models.CUSTOM.pop(tiny)
    H.models.MODELS.pop(tiny)
    with pytest.raises(H.RunDataError, match="register it first"):
        H.load_run(run.path)


def test_a_variant_of_a_report_model_is_recorded_and_kept_apart(fake_data, tmp_path):
    config = H.TrainConfig(model="avgpool_dropout", dropout=0.3, epochs=1, train_subset=200)
    run = H.fit(config, fake_data, results_dir=tmp_path, verbose=False)
    assert run.path.name == "avgpool_dropout_dropout0.3"
    assert json.loads((run.path / "config.json").read_text())["dropout"] == 0.3
    assert {m.p for m in run.model.modules() if isinstance(m, nn.Dropout)} == {0.3}
