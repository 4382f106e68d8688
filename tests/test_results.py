"""The generated prose must follow the numbers: build histories with known shapes and check the verdicts."""
import numpy as np
import pandas as pd

from helpers import results
from helpers.training import Run, TrainConfig


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


def test_findings_need_all_three_models():
    runs = _author_like()
    del runs["fc"]
    assert results.findings(runs) == []
    assert "need finished runs" in results.findings_markdown([])
