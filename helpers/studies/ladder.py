"""The ablation ladder (notebook 09): from model 3 one change at a time, each step measured on a
validation split with its standard error; the BatchNorm-after-dropout check and the verdict on the
author's fewer-parameters hypothesis."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch.nn.functional as F

from .. import data as D
from ..evaluation import evaluate, refresh_batchnorm
from ..loop import predict
from ..files import cached, digest, project_path, shown_path, weights_digest
from ..models import batchnorm_layers
from ..device import pick_device, runnable_precision
from ..config import EVAL_FIELDS, TrainConfig
from ..recipe import model_to_evaluate, REFRESH_IMAGES, refresh_images
from ..runs import check_measured_on, image_sets, load_run, Run
from ..training import fit
from ..facts import fact, render
from ..wording import fill
from .common import save_table


def airbench_optimiser(batch_size: int = 1024) -> dict:
    """airbench94's optimiser settings for a mean loss and any batch size.

    airbench gives the learning rate (11.5) and the weight decay (0.0153) per 1024 examples, with
    Nesterov momentum 0.85, BatchNorm shifts at 64 times the rate, a triangular schedule and logits
    scaled by 1/9. For a mean loss over a batch of B that is lr = 11.5 * B / (1024 * (1 + 1 / (1 - 0.85)))
    (1.5 at B = 1024) and an L2 weight decay of 0.0153 / 11.5, so that the weights shrink by the same
    fraction per example as in airbench.
    """
    momentum = 0.85
    return {"batch_size": batch_size, "lr": round(11.5 * batch_size / (1024 * (1 + 1 / (1 - momentum))), 6),
            "momentum": momentum, "weight_decay": round(0.0153 / 11.5, 7), "bias_lr": 64.0,
            "schedule": "triangle", "logit_scale": 1 / 9}


@dataclass(frozen=True)
class Step:
    """One rung: ``changes`` applied to the configuration of step ``base`` (None: the ladder's start)."""
    name: str
    label: str
    changes: dict = field(default_factory=dict)
    base: str | None = None
    branch: bool = False    # a side test of the author's hypothesis, not carried further up the ladder


def default_ladder() -> list[Step]:
    """From model 3 one change at a time. The side branches test the author's hypothesis (fewer
    parameters) and dropout; the ladder then continues with a compact network and the training choices
    of fast CIFAR-10 trainers, each again one at a time."""
    airbench = airbench_optimiser(1024)
    return [
        Step("model3", "model 3 as in the report"),
        Step("batchnorm", "+ batch normalisation", {"batchnorm": True}, "model3"),
        Step("augment", "+ random crop (4 px) and flip", {"augment": "flip_crop"}, "batchnorm"),
        Step("onecycle", "+ one-cycle learning rate", {"schedule": "onecycle"}, "augment"),
        Step("smoothing", "+ label smoothing 0.1", {"label_smoothing": 0.1}, "onecycle"),
        Step("tta", "+ test-time flip", {"tta_flip": True}, "smoothing"),
        Step("narrow", "half the channels", {"width": 0.5}, "tta", branch=True),
        Step("shallow", "without conv6 and conv7", {"convs": 5}, "tta", branch=True),
        Step("no_dropout", "without dropout", {"model": "avgpool"}, "tta", branch=True),
        Step("compact", "compact network instead of model 3", {"model": "compact"}, "tta"),
        Step("sgd", "+ SGD (Nesterov, lr 0.05, weight decay 5e-4)",
             {"optimizer": "sgd", "lr": 0.05, "weight_decay": 5e-4}, "compact"),
        Step("whiten", "+ whitened, frozen first layer", {"whiten": True}, "sgd"),
        Step("short_shifts", "+ crops moved by 2 px, not 4", {"crop_pad": 2}, "whiten"),
        Step("smoothing_02", "+ label smoothing 0.2", {"label_smoothing": 0.2}, "short_shifts"),
        Step("airbench_init", "+ identity-initialised convolutions, fixed BN scales, fast BN statistics",
             {"dirac": True, "bn_scale": False, "bn_momentum": 0.6}, "smoothing_02"),
        Step("airbench_opt", f"+ airbench's optimiser settings (batch {airbench['batch_size']}, lr {airbench['lr']:g}, "
             "64x for BN shifts, triangle schedule, logits / 9)", airbench, "airbench_init"),
        Step("lookahead", "+ lookahead weight averaging", {"lookahead": True}, "airbench_opt"),
        Step("tta_shift", "+ test-time shifts (6 views)", {"tta_shift": 2}, "lookahead"),
    ]


def ladder_configs(steps: list[Step], start: TrainConfig) -> dict[str, TrainConfig]:
    configs: dict[str, TrainConfig] = {}
    for step in steps:
        if step.base is not None and step.base not in configs:
            raise ValueError(f"step {step.name!r} builds on {step.base!r}, which is not an earlier step")
        base = configs[step.base] if step.base else start
        configs[step.name] = dataclasses.replace(base, **step.changes)
    return configs


def run_ladder(steps: list[Step], start: TrainConfig, data: D.CIFAR10, results_dir="results",
               device=None, refresh: bool = True) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """Train every step (or load it) into ``results_dir/ladder/<step>`` and tabulate them.

    A step that changes only evaluation options (test-time flip) re-evaluates its base's weights instead
    of training them again. With ``refresh``, a step whose BatchNorm layers follow dropout is judged as
    ``bn_refresh`` would judge it (statistics measured again with dropout off): its training is the same
    either way, so its weights are re-evaluated, not trained again; ``val acc as trained`` keeps the
    evaluation with the statistics recorded in training. Returns the table (also written to
    ``studies/ladder.csv``) and the histories (as trained).
    """
    if not start.validation:
        raise ValueError("the ladder chooses between models: give the start configuration a validation split")
    configs = ladder_configs(steps, start)
    rows, histories, runs, right = [], {}, {}, {}
    for step in steps:
        config = configs[step.name]
        folder = project_path(results_dir) / "ladder" / step.name
        eval_only = step.base is not None and set(step.changes) <= set(EVAL_FIELDS)
        loaded = (folder / ("evaluation.json" if eval_only else "metrics.json")).exists()   # finished before this call
        if eval_only:
            run = runs[step.base]
            ev = _evaluate_step(run, config, data, folder, device)
            hist = run.history.copy()
            as_trained = ev
        else:
            run = fit(config, data, run_name=f"ladder/{step.name}", results_dir=results_dir, device=device,
                      verbose=not loaded)
            hist = run.history
            as_trained = {"accuracy": hist["val_acc"].iloc[-1], "loss": hist["val_loss"].iloc[-1]}
        refreshed = refresh and config.network.dropout_meets_batchnorm and not config.bn_refresh
        judged = dataclasses.replace(config, bn_refresh=True) if refreshed else config
        ev = (_evaluate_step(run, judged, data, folder, device, "evaluation_refreshed.json") if refreshed
              else as_trained)
        right[step.name] = _right_on_validation(run, judged, data, folder, device)
        minutes = run.history["seconds"].sum() / 60
        runs[step.name], histories[step.name] = run, hist
        rows.append({"step": step.name, "change": step.label, "branch": step.branch, "builds on": step.base or "",
                     "val acc": 100 * ev["accuracy"], "val loss": ev["loss"], "parameters": run.metrics["parameters"],
                     "minutes": minutes, "s/epoch": float(hist["seconds"].median()),
                     "images/s": float(hist["images_per_s"].median()), "epochs": len(hist),
                     "train images": run.metrics["train_images"], "val images": config.validation,
                     "eval only": eval_only, "bn refreshed": refreshed,
                     "val acc as trained": 100 * as_trained["accuracy"]})
        if not loaded:    # a step finished before is in the table; only new work gets a line
            print(f"{step.name:>11}: val accuracy {ev['accuracy']:.2%}"
                  + (f" (as trained {as_trained['accuracy']:.2%})" if refreshed else "")
                  + f" after {len(hist)} epochs, {run.metrics['parameters']:,} parameters, "
                  f"{minutes:.1f} min{' (evaluation only)' if eval_only else ''}", flush=True)
    table = pd.DataFrame(rows)
    for column, gain in (("val acc", "gain"), ("val acc as trained", "gain as trained")):
        acc = table.set_index("step")[column]
        table[gain] = [row[column] - acc[row["builds on"]] if row["builds on"] else math.nan for row in rows]
    table = paired_columns(with_noise(table), right)
    save_table(table, "ladder", results_dir)
    return table, histories


def accuracy_se(percent: float, images: int) -> float:
    """Standard error (points) of an accuracy measured on ``images`` images: sqrt(p(1-p)/n)."""
    p = percent / 100
    return 100 * math.sqrt(p * (1 - p) / images)


def with_noise(table: pd.DataFrame) -> pd.DataFrame:
    """The ladder with each step's standard error (``val se``) and a flag for gains within noise: smaller
    than two standard errors of the difference between the step and the step it builds on, treating the
    two measurements as independent. Both were taken on the same validation images, so the real noise of
    the difference is smaller: the flag is conservative, and a flagged step cannot be ranked on one seed."""
    table = table.copy()
    table["val se"] = [accuracy_se(a, n) for a, n in zip(table["val acc"], table["val images"])]
    se = table.set_index("step")["val se"]
    table["within noise"] = [isinstance(b, str) and bool(b) and abs(g) < 2 * math.hypot(s, se[b])
                             for b, g, s in zip(table["builds on"], table["gain"], table["val se"])]
    return table


def _on_validation(run: Run, config: TrainConfig, data: D.CIFAR10, folder: Path, file: str, device, read) -> dict:
    """``run``'s weights evaluated on the validation split as ``config`` says (test-time views; with
    ``bn_refresh``, BatchNorm statistics measured again as training would), ``read(logits, labels)`` giving
    what is kept. Measured once in the precision this machine computes natively and kept in ``folder/file``
    with what it depends on, so that a re-render reads it instead of measuring again."""
    train, val = image_sets(config, data)
    check_measured_on(run, val, train)

    def measure():
        dev = pick_device(device)
        precision = runnable_precision(run.config.precision, dev)
        x, y = D.to_device(val, dev)
        images = refresh_images(train, dev) if config.bn_refresh else None
        model = model_to_evaluate(run.model.to(dev), dataclasses.replace(config, precision=precision), images)
        logits = predict(model, x, precision=precision, tta_flip=config.tta_flip, tta_shift=config.tta_shift)
        run.model.cpu()
        return {**read(logits, y.to(logits.device), val), "precision": precision}
    key = {"config": config.identity(), "base": str(shown_path(run.path)), "official_data": data.official,
           "weights": weights_digest(run.model)}
    return cached(folder / file, key, measure)


def _evaluate_step(run: Run, config: TrainConfig, data: D.CIFAR10, folder: Path, device=None,
                   file: str = "evaluation.json") -> dict:
    """Loss and accuracy on the validation split (``_on_validation``): for an evaluation-only step, or a step
    judged with refreshed statistics."""
    def read(logits, labels, val):
        return {"loss": F.cross_entropy(logits, labels, reduction="sum").item() / len(labels),
                "accuracy": (logits.argmax(1) == labels).float().mean().item()}
    return _on_validation(run, config, data, folder, file, device, read)


def _right_on_validation(run: Run, config: TrainConfig, data: D.CIFAR10, folder: Path, device=None) -> dict:
    """Which validation images ``run``'s weights classify correctly (``_on_validation``), for the paired test
    between steps, kept in ``folder/val_right.json``: the images' digest, their number and the right/wrong
    bits (packed, hex)."""
    def read(logits, labels, val):
        right = (logits.argmax(1) == labels).cpu().numpy()
        return {"images": digest(val.images, val.labels), "n": int(len(right)),
                "right": np.packbits(right).tobytes().hex()}
    return _on_validation(run, config, data, folder, "val_right.json", device, read)


def _bits(measured: dict) -> np.ndarray:
    return np.unpackbits(np.frombuffer(bytes.fromhex(measured["right"]), dtype=np.uint8))[:measured["n"]].astype(bool)


def mcnemar(base: np.ndarray, step: np.ndarray) -> dict:
    """The paired comparison of two classifiers on the same images (McNemar 1947): ``gained`` images the
    step gets right and its base wrong, ``lost`` the reverse, the paired gain in points with its standard
    error, and the exact two-sided p-value of the binomial test on the discordant images (under no
    difference each discordant image is a fair coin)."""
    gained, lost, n = int((step & ~base).sum()), int((base & ~step).sum()), len(base)
    d = gained + lost
    gain = (gained - lost) / n
    se = math.sqrt(max(d / n - gain ** 2, 0.0) / n)
    p = 1.0 if d == 0 else min(1.0, 2 * sum(math.comb(d, k) for k in range(min(gained, lost) + 1)) / 2 ** d)
    return {"gained": gained, "lost": lost, "paired gain": 100 * gain, "paired se": 100 * se, "p (McNemar)": p}


def paired_columns(table: pd.DataFrame, right: dict[str, dict]) -> pd.DataFrame:
    """The ladder with each step's McNemar test against the step it builds on (``mcnemar``), from the
    right/wrong bits of ``_right_on_validation``; NaN where the two were not measured on the same images.
    Where the test was made, ``within noise`` becomes its verdict: p >= 0.05. That is the noise of
    sampling the validation images only; the seed-to-seed spread of training is not in it (one seed
    per step)."""
    table = table.copy()
    rows = []
    for _, r in table.iterrows():
        base = r["builds on"] if isinstance(r["builds on"], str) else ""
        a, b = right.get(base), right.get(r["step"])
        same = a is not None and b is not None and a["images"] == b["images"]
        rows.append(mcnemar(_bits(a), _bits(b)) if same else dict.fromkeys(PAIRED, math.nan))
    for column in PAIRED:
        table[column] = [row[column] for row in rows]
    paired = table["p (McNemar)"].notna()          # the paired test decides where it could be made
    table.loc[paired, "within noise"] = table.loc[paired, "p (McNemar)"] >= 0.05
    return table


PAIRED = ["gained", "lost", "paired gain", "paired se", "p (McNemar)"]


def batchnorm_refresh(table: pd.DataFrame, data: D.CIFAR10, results_dir="results",
                      calibration: int = REFRESH_IMAGES, device=None) -> pd.DataFrame:
    """Every trained ladder step with BatchNorm, evaluated on validation as trained and again after its
    BatchNorm statistics are re-measured with dropout off (``calibration`` training images, class-balanced).

    A large gain for the models with dropout, and none for those without, says that their BatchNorm
    layers recorded the statistics of dropped-out activations that the model never sees at test time.
    Both accuracies are of one view per image (no test-time flip or shifts), so they can be lower than
    the ladder's for the steps that evaluate with them.
    """
    rows = []
    for _, step in table[~table["eval only"].astype(bool)].iterrows():
        folder = project_path(results_dir) / "ladder" / step["step"]
        run = load_run(folder)
        if not batchnorm_layers(run.model):
            continue

        train, val = image_sets(run.config, data)
        check_measured_on(run, val, train)

        def measure(run=run, train=train, val=val):
            dev = pick_device(device)
            precision = runnable_precision(run.config.precision, dev)
            x, y = D.to_device(val, dev)
            calib = refresh_images(train, dev, calibration)
            model = run.model.to(dev)
            before = evaluate(model, x, y, precision=precision)
            after = evaluate(refresh_batchnorm(model, calib, precision=precision), x, y, precision=precision)
            run.model.cpu()
            return {"before": before, "after": after, "precision": precision}
        key = {"config": run.config.identity(), "calibration": calibration, "official_data": data.official,
               "weights": weights_digest(run.model)}
        m = cached(folder / "batchnorm_refresh.json", key, measure)
        before, after = m["before"], m["after"]
        rows.append({"step": step["step"], "change": step["change"],
                     "dropout": run.config.model == "avgpool_dropout", "val acc, one view": 100 * before["accuracy"],
                     "val acc, one view, statistics refreshed": 100 * after["accuracy"],
                     "gain": 100 * (after["accuracy"] - before["accuracy"])})
    return pd.DataFrame(rows, columns=["step", "change", "dropout", "val acc, one view",
                                       "val acc, one view, statistics refreshed", "gain"])


def batchnorm_refresh_findings(refresh: pd.DataFrame) -> str:
    """The refresh check in words: mean gain with and without dropout."""
    def shown(x: float) -> float:          # no "-0.0" in the text
        return round(x, 1) + 0.0
    groups = [fill("ladder:refresh_group", n=len(g), plural="s" if len(g) > 1 else "",
                   with_or_without="with" if has_dropout else "without", mean=shown(g["gain"].mean()),
                   low=shown(g["gain"].min()), high=shown(g["gain"].max()))
              for has_dropout, g in refresh.groupby("dropout")]
    return fill("ladder:refresh", groups="; ".join(groups)) if groups else fill("ladder:refresh_none")


def _notes(row: pd.Series) -> str:
    """A ladder line's notes: within noise, and the gain as trained where the statistics were refreshed."""
    return ((" " + fill("ladder:within_noise_note") if row.get("within noise", False) else "")
            + (" " + fill("ladder:as_trained_note", gain=row["gain as trained"]) if row.get("bn refreshed", False) else ""))


def ladder_findings(table: pd.DataFrame) -> str:
    """The ladder in words: what each change gained and the side branches (the verdict on the author's
    hypothesis is ``hypothesis_verdict``)."""
    main = _main_steps(table)
    text = "\n".join(fill("ladder:step", change=_step_name(r["change"]), gain=step_fact(r, "gain"),
                          acc=step_fact(r, "val acc"), notes=_notes(r)) for _, r in main.iterrows())
    if len(main):
        top = main.loc[main["gain"].idxmax()]
        text += "\n\n" + fill("ladder:largest", change=_step_name(top["change"]), gain=step_fact(top, "gain"))
    rows = table.set_index("step")
    branch_lines = []
    for _, r in table[table["branch"]].iterrows():
        base = rows.loc[r["builds on"]]
        branch_lines.append(fill("ladder:branch", change=r["change"], parameters=_parameter_change(r, base),
                                 minutes=100 * (r["minutes"] / base["minutes"] - 1) if base["minutes"] else math.nan,
                                 gain=step_fact(r, "gain"), acc=step_fact(r, "val acc"), notes=_notes(r)))
    if branch_lines:
        text += "\n\n" + fill("ladder:branches") + "\n" + "\n".join(branch_lines)
    if "within noise" in table and table["within noise"].any():
        cautious = (table["within noise"] & table["eval only"].astype(bool)).any()
        paired = table["p (McNemar)"].dropna() if "p (McNemar)" in table else pd.Series(dtype=float)
        text += "\n\n" + fill("ladder:noise_paired" if len(paired) else "ladder:noise",
                               images=int(table["val images"].iloc[0]), se_low=table["val se"].min(),
                               se_high=table["val se"].max(), noisy=int(table["within noise"].sum()),
                               paired_se_low=table["paired se"].min() if len(paired) else math.nan,
                               paired_se_high=table["paired se"].max() if len(paired) else math.nan,
                               changes=int(table["gain"].notna().sum()),
                               eval_only=" " + fill("ladder:noise_eval_only") if cautious and not len(paired) else "")
        if len(paired):
            text += " " + paired_verdicts(main)
    return text


def p_text(p: float) -> str:
    """A p-value for the text: "p < 0.001" below a thousandth, else three decimals."""
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def paired_verdicts(main: pd.DataFrame) -> str:
    """The ladder's main steps sorted by the paired test's verdict: the gains it supports, the losses it
    finds, and how many it cannot tell from no change (``report/text/ladder.md``, ``paired_verdicts``)."""
    tested = main[main["p (McNemar)"].notna()]
    clear = tested[~tested["within noise"].astype(bool)]

    def listed(rows: pd.DataFrame) -> str:
        return "; ".join(f"{_step_name(r['change'])} ({step_fact(r, 'gain')}, {p_text(r['p (McNemar)'])})"
                         for _, r in rows.iterrows()) or "none"
    return fill("ladder:paired_verdicts", gains=listed(clear[clear["paired gain"] > 0]),
                losses=listed(clear[clear["paired gain"] < 0]), unclear=int(tested["within noise"].astype(bool).sum()),
                steps=len(tested))


# How a ladder step's numbers are stated (``helpers/facts.py``), by column.
STEP_FORMS = {"gain": "+points1", "gain as trained": "+points1", "val acc": "%1", "val acc as trained": "%1",
              "parameters": "count", "val se": "points2"}


def step_fact(row: pd.Series, column: str):
    """A step's number as the fact ``ladder.<step>.<column>``, stated the same wherever it appears."""
    return fact(f"ladder.{row['step']}.{column.replace(' ', '_')}", row[column], STEP_FORMS[column],
                [f"ladder/{row['step']}"])


def _step_name(change: str) -> str:
    """A step's label without its leading "+ " (a Markdown line "- + x" renders as a nested empty bullet)."""
    return change[2:] if change.startswith("+ ") else change


def _main_steps(table: pd.DataFrame) -> pd.DataFrame:
    return table[(~table["branch"].astype(bool)) & table["builds on"].fillna("").astype(bool)]


def _parameter_change(step: pd.Series, base: pd.Series) -> float:
    """How many percent more (or fewer) parameters ``step`` has than ``base``."""
    return 100 * (step["parameters"] / base["parameters"] - 1)


def _verdict(gain: float) -> str:
    # one standard error of an accuracy near 85% on 5,000 images is about half a point
    return "raises" if gain > 0.5 else "lowers" if gain < -0.5 else "barely changes"


def hypothesis_fields(table: pd.DataFrame) -> dict | None:
    """Does cutting parameters (the branches with fewer parameters than their base) raise validation
    accuracy? The values for ``report/text/hypothesis*.md``, from the ladder's accuracies (with refreshed
    BatchNorm statistics where ``run_ladder`` measured them) and, for contrast, as trained. None without a cut."""
    rows = table.set_index("step")
    cuts = [r for _, r in table[table["branch"].astype(bool)].iterrows()
            if r["parameters"] < rows.loc[r["builds on"], "parameters"]]
    if not cuts:
        return None

    def listed(column: str, gain: str) -> str:
        return "; ".join(f"{r['change']} ({render(_parameter_change(r, rows.loc[r['builds on']]), 0, True)}% "
                         f"parameters) {step_fact(r, gain)} points, to {step_fact(r, column)}%"
                         + (f", McNemar {p_text(r['p (McNemar)'])}" if gain == "gain" and r.get("p (McNemar)") == r.get("p (McNemar)")
                            and "p (McNemar)" in r else "") for r in cuts)
    best = max(cuts, key=lambda r: r["gain"])
    main = _main_steps(table)
    first, last = table.iloc[0], main.iloc[-1] if len(main) else table.iloc[0]
    refreshed = "bn refreshed" in table and bool(table["bn refreshed"].any())
    return {"verdict": _verdict(best["gain"]), "cuts": listed("val acc", "gain"), "refreshed": refreshed,
            "verdict_as_trained": _verdict(max(r["gain as trained"] for r in cuts)) if refreshed else "",
            "cuts_as_trained": listed("val acc as trained", "gain as trained") if refreshed else "",
            "first_acc": step_fact(first, "val acc"), "first_change": first["change"],
            "last_acc": step_fact(last, "val acc"), "last_change": _step_name(last["change"]),
            "last_parameters": step_fact(last, "parameters"), "first_parameters": step_fact(first, "parameters"),
            "ratio": fact("ladder.parameter_ratio", last["parameters"] / first["parameters"], "ratio1")}


def hypothesis_verdict(table: pd.DataFrame) -> str:
    """``hypothesis_fields`` in words (empty without a parameter cut)."""
    fields = hypothesis_fields(table)
    if fields is None:
        return ""
    return (fill("hypothesis", **fields)
            + ("\n\n" + fill("hypothesis_as_trained", **fields) if fields["refreshed"] else ""))
