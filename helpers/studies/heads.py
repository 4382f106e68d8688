"""The author's 256-logit head beside the 10-way head (notebook 07): accuracy, overfitting, and the
softmax mass the unused outputs take."""
from __future__ import annotations

import pandas as pd
import torch

from ..evaluation import device_of, predict
from ..files import cached, digest, weights_digest
from ..models import VARIANTS
from ..device import runnable_precision
from ..runs import check_measured_on, Run
from ..wording import fill
from .common import _share


def unused_logit_share(run: Run, images: torch.Tensor) -> dict:
    """For a 256-logit model: the softmax mass it puts on the 246 outputs that are never a class, how often
    its arg-max falls there, and how large its outputs are (mean over images of the largest class output and
    of the largest unused one; both come out of a ReLU, so 0 is the floor). Measured once and kept beside
    the run (``unused_outputs.json``, keyed by the images)."""
    check_measured_on(run, images)

    def measure():
        precision = runnable_precision(run.config.precision, device_of(run.model))
        logits = predict(run.model, images, precision=precision).float()
        probs = logits.softmax(1)
        return {"mass on unused outputs %": 100 * probs[:, 10:].sum(1).mean().item(),
                "predictions outside 0-9 %": 100 * (probs.argmax(1) >= 10).float().mean().item(),
                "largest class output": logits[:, :10].max(1).values.mean().item(),
                "largest unused output": logits[:, 10:].max(1).values.mean().item(), "precision": precision}
    key = {"images": digest(images), "config": run.config.identity(), "weights": weights_digest(run.model)}
    measured = cached(run.path / "unused_outputs.json", key, measure)
    return {k: v for k, v in measured.items() if k != "precision"}


def head_table(pairs: dict[str, dict[str, Run]], test_images: torch.Tensor | None = None) -> pd.DataFrame:
    """``pairs[model][head] = run`` as one row per run: accuracy (%), loss story, overfitting gap."""
    rows = []
    for model, runs in pairs.items():
        for head, run in runs.items():
            h = run.history
            row = {"model": VARIANTS[model], "head": head, "epochs": len(h), "parameters": run.metrics["parameters"],
                   "best acc": h["test_acc"].max() * 100, "best epoch": int(h.loc[h["test_acc"].idxmax(), "epoch"]),
                   "final acc": h["test_acc"].iloc[-1] * 100,
                   "lowest loss epoch": int(h.loc[h["test_loss"].idxmin(), "epoch"]),
                   "final loss": h["test_loss"].iloc[-1],
                   "train - test acc at end": (h["train_acc"].iloc[-1] - h["test_acc"].iloc[-1]) * 100}
            if test_images is not None and run.config.head == "author":
                row.update(unused_logit_share(run, test_images))
            rows.append(row)
    return pd.DataFrame(rows)


def head_findings(table: pd.DataFrame) -> str:
    """One sentence per model: what the author's head costs or gains against the 10-way head."""
    out = []
    for model, rows in table.groupby("model", sort=False):
        if set(rows["head"]) != {"10-way", "author"}:
            continue
        ten, auth = rows.set_index("head").loc["10-way"], rows.set_index("head").loc["author"]
        text = fill("heads:model", model=model, best=auth["best acc"], ten_best=ten["best acc"],
                    d_best=auth["best acc"] - ten["best acc"], final=auth["final acc"], ten_final=ten["final acc"],
                    d_final=auth["final acc"] - ten["final acc"], low_epoch=auth["lowest loss epoch"],
                    ten_low_epoch=ten["lowest loss epoch"], gap=auth["train - test acc at end"],
                    ten_gap=ten["train - test acc at end"])
        if pd.notna(auth.get("mass on unused outputs %")):
            text += " " + fill("heads:unused_mass", mass=_share(auth["mass on unused outputs %"]),
                               outside=_share(auth["predictions outside 0-9 %"]))
        if pd.notna(auth.get("largest class output")):
            text += " " + fill("heads:outputs", largest=auth["largest class output"],
                               unused=auth["largest unused output"])
        out.append(text)
    return "\n\n".join(out) or fill("heads:missing")
