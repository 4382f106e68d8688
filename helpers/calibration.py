"""How sure a model is, and whether it should be: reliability, expected calibration error (ECE) and
temperature scaling (Guo, Pleiss, Sun and Weinberger, ICML 2017, "On Calibration of Modern Neural
Networks").

* Confidence is a prediction's largest softmax probability.
* ECE uses ``BINS`` = 15 equal-width confidence bins over (0, 1], bin b holding the confidences in
  ((b-1)/15, b/15]: the mean over images of |accuracy - mean confidence| of each image's bin (each
  bin weighted by its share of the images), in percentage points.
* Temperature scaling divides the logits by one number T > 0, fitted to minimise the cross-entropy
  on held-out images. It never changes which class is largest, so accuracy cannot change.

``calibration`` measures a finished run on the test set with two-fold cross-fitting: T is fitted on
one half of the test images (a seeded random split) and applied to the other, and the other way
round, so every image is scored with a temperature that was not fitted on it and the scaled loss
covers the whole test set like the run's own curves. The result is kept beside the run
(``calibration.json``) and read back at the next render.

ECE is ten lines here instead of a dependency (torchmetrics' ``MulticlassCalibrationError`` with
``n_bins=15, norm="l1"`` bins the same way); the tests check it against a hand-computed case.
"""
from __future__ import annotations

import math

import pandas as pd
import torch
import torch.nn.functional as F

from .evaluation import predict
from .facts import facts
from .files import cached, digest, weights_digest
from .device import runnable_precision
from .runs import check_measured_on, Run

BINS = 15
SURE = 0.99          # "over 99% sure"


def confidence(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image's predicted class (the arg-max of its logits) and the softmax probability of that class.
    The probability is computed in float64 and taken at the logits' arg-max, so that a nearly flat or a
    nearly one-hot softmax, whose float32 probabilities can tie, never picks another class."""
    predicted = logits.argmax(1)
    probs = F.softmax(logits.double(), 1)
    return probs.gather(1, predicted[:, None]).squeeze(1), predicted


def reliability(logits: torch.Tensor, labels: torch.Tensor, bins: int = BINS) -> pd.DataFrame:
    """Per confidence bin: its range, its number of images, their mean confidence and accuracy (0-1)."""
    conf, predicted = confidence(logits)
    correct = (predicted == labels).float()
    which = (conf * bins).ceil().clamp(1, bins).long() - 1          # (b/bins, (b+1)/bins] -> b
    rows = []
    for b in range(bins):
        inside = which == b
        n = int(inside.sum())
        rows.append({"lower": b / bins, "upper": (b + 1) / bins, "images": n,
                     "confidence": conf[inside].mean().item() if n else math.nan,
                     "accuracy": correct[inside].mean().item() if n else math.nan})
    return pd.DataFrame(rows)


def ece(logits: torch.Tensor, labels: torch.Tensor, bins: int = BINS) -> float:
    """Expected calibration error in percentage points (see the module's docstring)."""
    table = reliability(logits, labels, bins)
    filled = table[table["images"] > 0]
    gaps = (filled["accuracy"] - filled["confidence"]).abs()
    return float((gaps * filled["images"]).sum() / filled["images"].sum() * 100)


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The T > 0 that minimises the mean cross-entropy of ``logits / T`` (optimised in log T)."""
    logits, labels = logits.float().detach(), labels.detach()
    log_t = torch.zeros((), requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss
    with torch.enable_grad():
        opt.step(closure)
    return float(log_t.detach().exp())


def halves(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two disjoint halves of ``range(n)``, drawn by a seeded permutation."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[: n // 2], order[n // 2:]


def cross_fitted(logits: torch.Tensor, labels: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, list[float]]:
    """Logits scaled by temperatures fitted on the other half (see the module's docstring), and the two
    temperatures (fitted on half A, then on half B)."""
    a, b = halves(len(labels), seed)
    t_a, t_b = fit_temperature(logits[a], labels[a]), fit_temperature(logits[b], labels[b])
    scaled = logits.float().clone()
    scaled[b] = logits[b].float() / t_a
    scaled[a] = logits[a].float() / t_b
    return scaled, [t_a, t_b]


def summary(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """Accuracy, mean cross-entropy, ECE, mean confidence of right and wrong answers (all but the loss in
    percent) and the share of wrong answers given with over 99% confidence."""
    conf, predicted = confidence(logits)
    right = predicted == labels
    wrong = ~right
    return {"accuracy": right.float().mean().item() * 100,
            "loss": F.cross_entropy(logits.float(), labels).item(),
            "ece": ece(logits, labels),
            "confidence right": conf[right].mean().item() * 100 if right.any() else math.nan,
            "confidence wrong": conf[wrong].mean().item() * 100 if wrong.any() else math.nan,
            "wrong over 99% sure": (conf[wrong] > SURE).float().mean().item() * 100 if wrong.any() else math.nan}


def calibration(run: Run, images: torch.Tensor, labels: torch.Tensor, device=None, seed: int = 0) -> dict:
    """Calibration of a finished run's final weights on ``images`` (normalised test images), before and
    after cross-fitted temperature scaling; measured once and kept in ``<run>/calibration.json``.

    The logits are the run's own test-time outputs (with its test-time augmentation, if any), in the
    run's precision where this device computes it natively, else fp32 (recorded)."""
    check_measured_on(run, images)
    device = torch.device(device) if device is not None else torch.device("cpu")

    def measure():
        precision = runnable_precision(run.config.precision, device)
        logits = predict(run.model.to(device), images, precision=precision, tta_flip=run.config.tta_flip,
                         tta_shift=run.config.tta_shift).cpu()
        run.model.cpu()
        scaled, temperatures = cross_fitted(logits, labels, seed)
        if not torch.equal(scaled.argmax(1), logits.argmax(1)):
            raise AssertionError("temperature scaling changed a prediction; it must not")
        return {"precision": precision, "temperatures": temperatures, "split seed": seed,
                "before": summary(logits, labels), "after": summary(scaled, labels),
                "bins before": reliability(logits, labels).to_dict("list"),
                "bins after": reliability(scaled, labels).to_dict("list")}
    key = {"images": digest(images, labels), "config": run.config.identity(), "bins": BINS, "seed": seed,
           "weights": weights_digest(run.model)}
    return cached(run.path / "calibration.json", key, measure)


def loss_rise(run: Run, measured: dict) -> dict:
    """How much of the climb of a run's test loss after its lowest epoch temperature scaling removes:
    the lowest and the final loss from the run's history, the final loss after scaling (cross-fitted),
    and the share of the climb removed (percent). NaN where the run did not record the test loss."""
    h = run.history
    column = "test_loss"
    if column not in h or h[column].isna().all():
        return {"lowest loss": math.nan, "lowest epoch": math.nan, "final loss": measured["before"]["loss"],
                "scaled loss": measured["after"]["loss"], "climb removed": math.nan}
    lowest = float(h[column].min())
    final, scaled = measured["before"]["loss"], measured["after"]["loss"]
    climb = final - lowest
    return {"lowest loss": lowest, "lowest epoch": int(h.loc[h[column].idxmin(), "epoch"]), "final loss": final,
            "scaled loss": scaled, "climb removed": (final - scaled) / climb * 100 if climb > 0 else math.nan}


def mean_confidence(s: dict) -> float:
    """Mean confidence over all images (percent), from a ``summary``'s right and wrong means."""
    nan_to_0 = lambda v: 0.0 if v != v else v        # noqa: E731  (no wrong answers: no wrong mean)
    return (s["accuracy"] * nan_to_0(s["confidence right"]) + (100 - s["accuracy"]) * nan_to_0(s["confidence wrong"])) / 100


def direction(measured: dict) -> str:
    """Over- or underconfident as trained, from mean confidence minus accuracy: within 1 point "close to
    calibrated", within 3 "slightly" so."""
    s = measured["before"]
    gap = mean_confidence(s) - s["accuracy"]
    if abs(gap) <= 1:
        return "close to calibrated"
    return ("slightly " if abs(gap) <= 3 else "") + ("overconfident" if gap > 0 else "underconfident")


def model_fields(name: str, measured: dict, rise: dict) -> dict:
    """Fields of ``report/text/calibration_model.md`` for one model (its ``climb`` clause filled in)."""
    from .wording import fill
    s, t = measured["before"], measured["after"]
    climb = "" if rise["climb removed"] != rise["climb removed"] else fill(
        "calibration_climb", removed=rise["climb removed"], lowest=rise["lowest loss"], epoch=rise["lowest epoch"])
    return {"name": name, "direction": direction(measured), "confidence": mean_confidence(s), "accuracy": s["accuracy"],
            "temperature": sum(measured["temperatures"]) / 2, "ece_before": s["ece"], "ece_after": t["ece"],
            "sure_before": s["wrong over 99% sure"], "sure_after": t["wrong over 99% sure"],
            "loss_before": s["loss"], "loss_after": t["loss"], "climb": climb}


# How the calibration's numbers are stated (``helpers/facts.py``), by the start of the field's name.
FORMS = {"ece_": "%1", "sure_": "%0", "removed_": "%0", "t_": "ratio2", "acc_lost_": "points1"}


def report_fields(measured: dict, rises: dict, runs: dict, names: dict) -> dict:
    """Fields of ``report/text/calibration.md`` and ``10_found.md``: ``measured``/``rises``/``runs`` map
    a run name (``fc``, ``avgpool``, ``avgpool_dropout``, ``final``) to its ``calibration``, ``loss_rise``
    and ``Run``; ``names`` to its name in the text."""
    from .wording import fill
    short = {"fc": "fc", "avgpool": "avgpool", "avgpool_dropout": "dropout", "final": "final"}
    f = {"models": "\n".join(fill("calibration_model", **model_fields(names[n], measured[n], rises[n]))
                             for n in measured),
         "t_spread": max(abs(m["temperatures"][0] - m["temperatures"][1]) for m in measured.values())}
    for n, m in measured.items():
        s = short[n]
        f.update({f"{s}_direction": direction(m), f"sure_{s}": m["before"]["wrong over 99% sure"],
                  f"ece_{s}": m["before"]["ece"], f"ece_{s}_after": m["after"]["ece"],
                  f"t_{s}": sum(m["temperatures"]) / 2, f"removed_{s}": rises[n]["climb removed"]})
    pair = [f["fc_direction"], f["avgpool_direction"]]
    f["pair_direction"] = (f"both end {pair[0]}" if pair[0] == pair[1]
                           else f"end {pair[0]} and {pair[1]} respectively")
    changed = [n for n, m in measured.items() if m["precision"] != runs[n].config.precision]
    shift = max((abs(measured[n]["before"]["accuracy"] - runs[n].history["test_acc"].iloc[-1] * 100) for n in changed),
                default=0.0)
    f["precision_note"] = "" if not changed else fill(
        "calibration_precision", measured_in=measured[changed[0]]["precision"],
        trained_in=", ".join(sorted({runs[n].config.precision for n in changed})), shift=shift)
    for n in ("fc", "avgpool"):      # accuracy lost from the best epoch to the last (percentage points)
        acc = runs[n].history["test_acc"] * 100
        f[f"acc_lost_{n}"] = float(acc.max() - acc.iloc[-1])
    f = facts("calibration", f, {k: short for pattern, short in FORMS.items()
                                 for k in f if k.startswith(pattern)}, [*measured])
    removed = [f["removed_fc"], f["removed_avgpool"]]
    f["climb_paragraph"] = "" if any(r != r for r in removed) else fill(
        "calibration_climb_summary", removed_fc=removed[0], removed_avgpool=removed[1],
        acc_lost_fc=f["acc_lost_fc"], acc_lost_avgpool=f["acc_lost_avgpool"],
        climb_verdict="mostly overconfidence" if min(removed) > 50 else "only partly overconfidence")
    final = runs["final"].config
    views = (2 if final.tta_flip else 1) * (3 if final.tta_shift else 1)
    explained = f["final_direction"] == "underconfident" and final.label_smoothing > 0
    f["final_paragraph"] = fill("calibration_final" if explained else "calibration_final_plain",
                                final_direction=f["final_direction"], t_final=f["t_final"],
                                smoothing=final.label_smoothing, views=views,
                                smoothing_target=(1 - final.label_smoothing + final.label_smoothing / 10) * 100)
    return f
