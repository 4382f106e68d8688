"""The follow-up studies: several runs per question, each summarised as a table, checks and prose.

* ``seed_study``: every variant with several seeds on a shorter schedule (notebook 08).
* ``head_table``: the author's 256-logit head beside the 10-way head (notebook 07).
* ``run_ladder``: from model 3, one change at a time, measured on a validation split (notebook 09).

Like ``results``, every number these functions put in a sentence is read from finished runs.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from . import data as D
from .evaluation import device_of, evaluate, predict, refresh_batchnorm
from .models import VARIANTS, batchnorm_layers
from .results import overfits
from .files import atomic_write, cached, digest, project_path, read_json, save_json
from .training import Run, TrainConfig, fit, load_run, pick_device, resolve_precision, runnable_precision, splits


# ---------------------------------------------------------------- saving

def _studies_folder(results_dir) -> Path:
    folder = D.project_path(results_dir) / "studies"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def save_table(table: pd.DataFrame, name: str, results_dir="results") -> Path:
    """Write a study's table to ``results_dir/studies/<name>.csv`` (atomically), for the README and readers."""
    path = _studies_folder(results_dir) / f"{name}.csv"
    index = table.index.name is not None or not isinstance(table.index, pd.RangeIndex)
    atomic_write(path, lambda f: f.write(table.to_csv(index=index).encode()))
    return path


SHORT_NAMES = {"fc": "FC", "avgpool": "AP", "avgpool_dropout": "AP+D"}     # models in dense evidence lists


def _share(percent: float) -> str:
    """A percentage for prose: one decimal, or "under 0.1%" / "none" rather than a row of zeros."""
    return "none" if percent == 0 else "under 0.1%" if percent < 0.05 else f"{percent:.1f}%"


# ---------------------------------------------------------------- seeds

def history_prefix(longer: Run, config: TrainConfig) -> pd.DataFrame | None:
    """The first ``config.epochs`` epochs of ``longer`` when they *are* a run of ``config``, else None.

    That holds when the two configurations differ only in the number of epochs, the learning rate is
    constant and the model is evaluated every epoch: then nothing in the first N epochs depends on the
    total, and a shorter run repeats them bit for bit (tests/test_studies.py checks this).
    """
    same = set(longer.config.differences(config)) <= {"epochs"}   # precision aside: it says how, not what
    if not same or config.schedule != "constant" or not config.eval_each_epoch or len(longer.history) < config.epochs:
        return None
    return longer.history.iloc[:config.epochs].reset_index(drop=True)


def seed_study(data: D.CIFAR10, seeds, epochs: int, results_dir="results", reuse_from="results",
               device=None, **options) -> tuple[dict, pd.DataFrame]:
    """Train every variant with each seed for ``epochs`` epochs (report protocol otherwise).

    A run already in ``reuse_from/<variant>`` (the report's 100-epoch runs) stands in for its seed when
    ``history_prefix`` says its first epochs are exactly the shorter run. Returns
    ``{(variant, seed): history}`` and a table saying where each history came from.
    """
    histories, sources = {}, []
    for variant in VARIANTS:
        for seed in seeds:
            config = TrainConfig(model=variant, seed=seed, epochs=epochs, **options)
            config = dataclasses.replace(config, precision=resolve_precision(config.precision, pick_device(device)))
            longer = D.project_path(reuse_from) / config.default_name()
            hist = None
            if (longer / "metrics.json").exists():
                hist = history_prefix(load_run(longer), config)
            if hist is not None:
                source = f"first {epochs} epochs of {D.shown_path(longer)}"
            else:
                name = f"seeds/{config.default_name()}_{epochs}ep"
                run = fit(config, data, run_name=name, results_dir=results_dir, device=device,
                          verbose=not (D.project_path(results_dir) / name / "metrics.json").exists())
                hist, source = run.history, str(D.shown_path(run.path))
            histories[variant, seed] = hist
            sources.append({"model": VARIANTS[variant], "seed": seed, "history from": source})
            print(f"{variant} seed {seed}: best test accuracy {hist['test_acc'].max():.2%}, "
                  f"final {hist['test_acc'].iloc[-1]:.2%} ({source})", flush=True)
    return histories, pd.DataFrame(sources)


def seed_table(histories: dict) -> pd.DataFrame:
    """Per variant: mean, standard deviation and range over seeds of best and final test accuracy (%),
    and the epochs of the lowest test loss."""
    rows = {}
    for variant in VARIANTS:
        hs = [h for (v, _), h in histories.items() if v == variant]
        if not hs:
            continue
        best = pd.Series([h["test_acc"].max() * 100 for h in hs])
        final = pd.Series([h["test_acc"].iloc[-1] * 100 for h in hs])
        rows[VARIANTS[variant]] = {
            "seeds": len(hs), "epochs": max(len(h) for h in hs),
            "best mean": best.mean(), "best sd": best.std(ddof=1) if len(hs) > 1 else math.nan,
            "best min": best.min(), "best max": best.max(), "final mean": final.mean(),
            "final sd": final.std(ddof=1) if len(hs) > 1 else math.nan,
            "lowest loss epochs": ", ".join(str(int(h.loc[h["test_loss"].idxmin(), "epoch"])) for h in hs),
            "final/lowest loss": pd.Series([h["test_loss"].iloc[-1] / h["test_loss"].min() for h in hs]).mean()}
    return pd.DataFrame(rows).T.infer_objects()


def seed_checks(histories: dict) -> list[dict]:
    """The report's conclusions, each checked seed by seed: {claim, seeds, held, evidence}."""
    seeds = sorted({s for (_, s) in histories})
    if any((v, s) not in histories for v in VARIANTS for s in seeds):
        return []
    per_seed = {s: {v: histories[v, s] for v in VARIANTS} for s in seeds}
    best = {s: {v: h["test_acc"].max() * 100 for v, h in hs.items()} for s, hs in per_seed.items()}
    final_loss = {s: {v: h["test_loss"].iloc[-1] for v, h in hs.items()} for s, hs in per_seed.items()}
    checks = [
        ("Best accuracy ranks FC < average pooling < average pooling + dropout",
         {s: b["fc"] < b["avgpool"] < b["avgpool_dropout"] for s, b in best.items()},
         {s: " < ".join(f"{b[v]:.1f}" for v in VARIANTS) for s, b in best.items()}),
        ("The FC model overfits (test loss lowest in the first half, then ends more than 10% above it)",
         {s: overfits(hs["fc"]["test_loss"], hs["fc"]["epoch"]) for s, hs in per_seed.items()},
         {s: _loss_story(hs["fc"]) for s, hs in per_seed.items()}),
        ("The average-pooling model overfits the same way",
         {s: overfits(hs["avgpool"]["test_loss"], hs["avgpool"]["epoch"]) for s, hs in per_seed.items()},
         {s: _loss_story(hs["avgpool"]) for s, hs in per_seed.items()}),
        ("Dropout ends with the lowest test loss of the three",
         {s: min(fl, key=fl.get) == "avgpool_dropout" for s, fl in final_loss.items()},
         {s: ", ".join(f"{SHORT_NAMES[v]} {fl[v]:.2f}" for v in VARIANTS) for s, fl in final_loss.items()}),
    ]
    return [{"claim": claim, "seeds": len(seeds), "held": sum(holds.values()),
             "evidence": "; ".join(f"seed {s}: {ev[s]}" for s in seeds)} for claim, holds, ev in checks]


def _loss_story(h: pd.DataFrame) -> str:
    loss = h["test_loss"]
    return f"lowest {loss.min():.2f} at epoch {int(h.loc[loss.idxmin(), 'epoch'])}, final {loss.iloc[-1]:.2f}"


def seed_checks_markdown(checks: list[dict]) -> str:
    if not checks:
        return "_The checks need every variant trained with every seed._"
    lines = [f"- **{c['claim']}**: holds in {c['held']} of {c['seeds']} seeds ({c['evidence']})." for c in checks]
    solid = [c for c in checks if c["held"] == c["seeds"]]
    return "\n".join(lines) + f"\n\n{len(solid)} of these {len(checks)} conclusions hold in every seed."


def seed_spread(table: pd.DataFrame) -> str:
    """How the seed-to-seed spread compares with the gaps between the models, in one paragraph."""
    if len(table) < 2:
        return ""
    spread = table["best max"] - table["best min"]
    order = table["best mean"].sort_values()
    gaps = ", ".join(f"{order.index[i + 1]} over {order.index[i]} {order.iloc[i + 1] - order.iloc[i]:+.1f}"
                     for i in range(len(order) - 1))
    return (f"Over {int(table['seeds'].min())} seeds the best test accuracy of one model ranges over at most "
            f"{spread.max():.1f} points ({spread.idxmax()}) and its standard deviation is at most "
            f"{table['best sd'].max():.2f} points. The mean gaps between the models are: {gaps} points.")


# ---------------------------------------------------------------- the author's head

def unused_logit_share(run: Run, images: torch.Tensor) -> dict:
    """For a 256-logit model: the softmax mass it puts on the 246 outputs that are never a class, how often
    its arg-max falls there, and how large its outputs are (mean over images of the largest class output and
    of the largest unused one; both come out of a ReLU, so 0 is the floor). Measured once and kept beside
    the run (``unused_outputs.json``, keyed by the images)."""
    def measure():
        precision = runnable_precision(run.config.precision, device_of(run.model))
        logits = predict(run.model, images, precision=precision).float()
        probs = logits.softmax(1)
        return {"mass on unused outputs %": 100 * probs[:, 10:].sum(1).mean().item(),
                "predictions outside 0-9 %": 100 * (probs.argmax(1) >= 10).float().mean().item(),
                "largest class output": logits[:, :10].max(1).values.mean().item(),
                "largest unused output": logits[:, 10:].max(1).values.mean().item(), "precision": precision}
    key = {"images": digest(images),
           "config": run.config.identity()}
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
        d_best, d_final = auth["best acc"] - ten["best acc"], auth["final acc"] - ten["final acc"]
        text = (f"**{model}**: the author's 256-logit head reaches a best test accuracy of {auth['best acc']:.1f}% "
                f"against {ten['best acc']:.1f}% with the 10-way head ({d_best:+.1f} points; final "
                f"{auth['final acc']:.1f}% against {ten['final acc']:.1f}%, {d_final:+.1f}). Its test loss is lowest at "
                f"epoch {auth['lowest loss epoch']} (10-way: {ten['lowest loss epoch']}), and at the end it fits its "
                f"training images {auth['train - test acc at end']:.1f} points better than the test images "
                f"(10-way: {ten['train - test acc at end']:.1f}).")
        if pd.notna(auth.get("mass on unused outputs %")):
            text += (f" It puts {_share(auth['mass on unused outputs %'])} of its softmax mass on the 246 outputs that "
                     f"are no class, and {_share(auth['predictions outside 0-9 %'])} of its predictions land there.")
        if pd.notna(auth.get("largest class output")):
            text += (f" Its largest class output averages {auth['largest class output']:.1f} over the test images, "
                     f"the largest of the unused ones {auth['largest unused output']:.2g}.")
        out.append(text)
    return "\n\n".join(out) or "_The comparison needs both heads of at least one model._"


# ---------------------------------------------------------------- the ablation ladder

EVAL_ONLY = {"tta_flip", "tta_shift"}    # options that change only how a trained model is evaluated
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
               device=None) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """Train every step (or load it) into ``results_dir/ladder/<step>`` and tabulate them.

    A step that changes only evaluation options (test-time flip) re-evaluates its base's weights instead
    of training them again. Returns the table (also written to ``studies/ladder.csv``) and the histories.
    """
    if not start.validation:
        raise ValueError("the ladder chooses between models: give the start configuration a validation split")
    configs = ladder_configs(steps, start)
    rows, histories, runs = [], {}, {}
    for step in steps:
        config = configs[step.name]
        eval_only = step.base is not None and set(step.changes) <= EVAL_ONLY
        if eval_only:
            base = runs[step.base]
            ev = _evaluate_step(base, config, data, D.project_path(results_dir) / "ladder" / step.name, device)
            hist = base.history.copy()
            final_acc, final_loss, minutes = ev["accuracy"], ev["loss"], base.history["seconds"].sum() / 60
            run = base
        else:
            folder = D.project_path(results_dir) / "ladder" / step.name
            run = fit(config, data, run_name=f"ladder/{step.name}", results_dir=results_dir, device=device,
                      verbose=not (folder / "metrics.json").exists())   # a loaded step: the line below is enough
            hist = run.history
            final_acc, final_loss = hist["val_acc"].iloc[-1], hist["val_loss"].iloc[-1]
            minutes = hist["seconds"].sum() / 60
        runs[step.name], histories[step.name] = run, hist
        rows.append({"step": step.name, "change": step.label, "branch": step.branch, "builds on": step.base or "",
                     "val acc": 100 * final_acc, "val loss": final_loss, "parameters": run.metrics["parameters"],
                     "minutes": minutes, "s/epoch": float(hist["seconds"].median()),
                     "images/s": float(hist["images_per_s"].median()), "epochs": len(hist),
                     "train images": run.metrics["train_images"], "val images": config.validation,
                     "eval only": eval_only})
        print(f"{step.name:>11}: val accuracy {final_acc:.2%} after {len(hist)} epochs, "
              f"{run.metrics['parameters']:,} parameters, "
              f"{minutes:.1f} min{' (evaluation only)' if eval_only else ''}", flush=True)
    table = pd.DataFrame(rows)
    base_acc = table.set_index("step")["val acc"]
    table["gain"] = [row["val acc"] - base_acc[row["builds on"]] if row["builds on"] else math.nan
                     for row in rows]
    table = with_noise(table)
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


def _evaluate_step(base: Run, config: TrainConfig, data: D.CIFAR10, folder: Path, device=None) -> dict:
    """An evaluation-only step: the base run's weights evaluated with ``config``'s test-time options on
    the validation split. Measured once and kept in ``folder/evaluation.json`` with what it depends on
    (and the precision it was computed in), so that a re-render reads it instead of measuring again."""
    def measure():
        dev = pick_device(device)
        precision = runnable_precision(base.config.precision, dev)
        _, val = splits(config, data)
        x, y = D.to_device(val, dev)
        ev = evaluate(base.model.to(dev), x, y, precision=precision, tta_flip=config.tta_flip,
                      tta_shift=config.tta_shift)
        base.model.cpu()
        return {**ev, "precision": precision}
    key = {"config": config.identity(), "base": str(D.shown_path(base.path)), "official_data": data.official}
    return cached(folder / "evaluation.json", key, measure)


def batchnorm_refresh(table: pd.DataFrame, data: D.CIFAR10, results_dir="results",
                      calibration: int = 10_000, device=None) -> pd.DataFrame:
    """Every trained ladder step with BatchNorm, evaluated on validation as trained and again after its
    BatchNorm statistics are re-measured with dropout off (``calibration`` training images, class-balanced).

    A large gain for the models with dropout, and none for those without, says that their BatchNorm
    layers recorded the statistics of dropped-out activations that the model never sees at test time.
    Both accuracies are of one view per image (no test-time flip or shifts), so they can be lower than
    the ladder's for the steps that evaluate with them.
    """
    rows = []
    for _, step in table[~table["eval only"].astype(bool)].iterrows():
        folder = D.project_path(results_dir) / "ladder" / step["step"]
        run = load_run(folder)
        if not batchnorm_layers(run.model):
            continue

        def measure(run=run):
            dev = pick_device(device)
            precision = runnable_precision(run.config.precision, dev)
            train, val = splits(run.config, data)
            x, y = D.to_device(val, dev)
            calib = D.normalize((D.balanced_subset(train, calibration) if calibration < len(train) else train).images)
            model = run.model.to(dev)
            before = evaluate(model, x, y, precision=precision)
            after = evaluate(refresh_batchnorm(model, calib, precision=precision), x, y, precision=precision)
            run.model.cpu()
            return {"before": before, "after": after, "precision": precision}
        key = {"config": run.config.identity(), "calibration": calibration, "official_data": data.official}
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
    parts = []
    for has_dropout, group in refresh.groupby("dropout"):
        parts.append(f"the {len(group)} BatchNorm model{'s' if len(group) > 1 else ''} "
                     f"{'with' if has_dropout else 'without'} dropout gain {group['gain'].mean():+.1f} points on "
                     f"average (from {group['gain'].min():+.1f} to {group['gain'].max():+.1f})")
    if not parts:
        return "_No trained ladder step has BatchNorm layers._"
    return ("Re-measuring the BatchNorm statistics with dropout off (no retraining): " + "; ".join(parts) + ".")


def ladder_findings(table: pd.DataFrame) -> str:
    """The ladder in words: what each change gained and the side branches (the verdict on the author's
    hypothesis, which needs the BatchNorm check too, is ``hypothesis_verdict``)."""
    main = _main_steps(table)
    lines = [f"- {_step_name(r['change'])}: {r['gain']:+.1f} points (to {r['val acc']:.1f}%)"
             + (" (within noise)" if r.get("within noise", False) else "") for _, r in main.iterrows()]
    text = "\n".join(lines)
    if len(main):
        top = main.loc[main["gain"].idxmax()]
        text += (f"\n\nThe largest single gain on the ladder comes from **{top['change'].lstrip('+ ')}** "
                 f"({top['gain']:+.1f} points).")
    rows = table.set_index("step")
    branch_lines = []
    for _, r in table[table["branch"]].iterrows():
        base = rows.loc[r["builds on"]]
        params = _parameter_change(r, base)
        minutes = 100 * (r["minutes"] / base["minutes"] - 1) if base["minutes"] else math.nan
        branch_lines.append(f"- {r['change']} ({params:+.0f}% parameters, {minutes:+.0f}% training time): "
                            f"{r['gain']:+.1f} points (to {r['val acc']:.1f}%)"
                            + (" (within noise)" if r.get("within noise", False) else ""))
    if branch_lines:
        text += "\n\nSide branches from the last ladder step:\n" + "\n".join(branch_lines)
    if "within noise" in table and table["within noise"].any():
        text += ("\n\n*Within noise*: a gain smaller than two standard errors of the difference of two accuracies "
                 f"on {int(table['val images'].iloc[0]):,} validation images (a standard error is "
                 f"{table['val se'].min():.2f} to {table['val se'].max():.2f} points here). With one seed per step, "
                 f"{int(table['within noise'].sum())} of the {int(table['gain'].notna().sum())} changes cannot be "
                 "told from no change"
                 + (" (the evaluation-only steps re-measure the same weights, so for them the rule is "
                    "especially cautious)" if (table["within noise"] & table["eval only"].astype(bool)).any() else "")
                 + ".")
    return text


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


def _trained_step(rows: pd.DataFrame, step: str) -> str:
    """The step whose weights ``step`` uses (an evaluation-only step re-uses those of the step it builds on)."""
    while bool(rows.loc[step, "eval only"]):
        step = rows.loc[step, "builds on"]
    return step


def hypothesis_verdict(table: pd.DataFrame, refresh: pd.DataFrame | None = None) -> str:
    """Does cutting parameters (the branches with fewer parameters than their base) raise accuracy?

    As trained, and, given the ``batchnorm_refresh`` table, again with every model's BatchNorm statistics
    measured without dropout, so that a cut is not credited with removing a BatchNorm-after-dropout artefact.
    """
    rows = table.set_index("step")
    cuts = [r for _, r in table[table["branch"].astype(bool)].iterrows()
            if r["parameters"] < rows.loc[r["builds on"], "parameters"]]
    if not cuts:
        return ""
    best = max(cuts, key=lambda r: r["gain"])
    each = "; ".join(f"{r['change']} ({_parameter_change(r, rows.loc[r['builds on']]):+.0f}% parameters) "
                     f"{r['gain']:+.1f} points" for r in cuts)
    text = (f"**The author's hypothesis.** As trained, the best parameter cut {_verdict(best['gain'])} validation "
            f"accuracy: {each}.")
    if refresh is not None and len(refresh):
        refreshed = refresh.set_index("step")["val acc, one view, statistics refreshed"]
        pairs = [(r["change"], refreshed.get(_trained_step(rows, r["step"])),
                  refreshed.get(_trained_step(rows, r["builds on"]))) for r in cuts]
        pairs = [(change, cut, base) for change, cut, base in pairs if cut is not None and base is not None]
        if pairs:
            top = max(cut - base for _, cut, base in pairs)
            text += (f" With the BatchNorm statistics of every model measured without dropout (notebook 09's "
                     f"BatchNorm check, one view per image), the best cut {_verdict(top)} it: "
                     + "; ".join(f"{change} {cut:.1f}% against {base:.1f}% ({cut - base:+.1f} points)"
                                 for change, cut, base in pairs) + ".")
    main = _main_steps(table)
    first, last = table.iloc[0], main.iloc[-1] if len(main) else table.iloc[0]
    return text + (f" The ladder took it from {first['val acc']:.1f}% ({first['change']}) to {last['val acc']:.1f}% "
                   f"({last['change'].lstrip('+ ')}) with {last['parameters']:,} parameters, "
                   f"{last['parameters'] / first['parameters']:.1f} times model 3's {first['parameters']:,}.")


def choose_final(table: pd.DataFrame, configs: dict[str, TrainConfig], epochs: int, budget_minutes: float,
                 train_images: int, **overrides) -> tuple[str, TrainConfig, str]:
    """The most accurate step on validation whose training, projected from its median training
    throughput (images per second, without the ladder's per-epoch validation) to ``epochs`` epochs on
    ``train_images`` images, fits the budget; its configuration for the final run (all training images,
    the test set read once, after the last epoch; ``overrides`` such as a quick run's test_subset) and
    the reason in words."""
    t = table.copy()
    t["projected minutes"] = epochs * train_images / t["images/s"] / 60
    fits = t[t["projected minutes"] <= budget_minutes]
    if fits.empty:
        raise ValueError(f"no step fits {budget_minutes} minutes at {epochs} epochs; lower final_epochs")
    pick = fits.loc[fits["val acc"].idxmax()]
    config = dataclasses.replace(configs[pick["step"]], validation=0, epochs=epochs, eval_each_epoch=False,
                                 **overrides)
    reason = (f"Step **{pick['step']}** ({pick['change']}) has the highest validation accuracy, "
              f"{pick['val acc']:.2f}%, among the steps whose training is projected to fit {budget_minutes:g} "
              f"minutes at {epochs} epochs on {train_images:,} images (projected {pick['projected minutes']:.1f} "
              f"min from its median training throughput, {pick['images/s']:.0f} images/s).")
    return pick["step"], config, reason


def save_final(run: Run, step: str, reason: str, results_dir="results") -> dict:
    """What the final model did, beside its run: step, reason, test accuracy, minutes."""
    info = {"step": step, "reason": reason, "test_acc": run.metrics["final_test_acc"],
            "test_loss": float(run.history["test_loss"].iloc[-1]), "minutes": run.metrics["train_seconds"] / 60,
            "parameters": run.metrics["parameters"], "epochs": run.config.epochs, "data": run.metrics["data"],
            "official_data": run.metrics["official_data"]}
    save_json(info, _studies_folder(results_dir) / "final.json")
    return info


def final_summary(info: dict, budget_minutes: float, goal: float = 90.0) -> str:
    """The answer in one paragraph: the final model's test accuracy and time against the goal."""
    acc, minutes = 100 * info["test_acc"], info["minutes"]
    met = acc >= goal and minutes <= budget_minutes
    data = ("the official CIFAR-10 test set" if info["official_data"] else
            "a copy of CIFAR-10 that is not the official archive (on the project's machines the offline JPEG "
            "re-encoding, which costs about 2 points)")
    return (f"The final model (step **{info['step']}**, {info['parameters']:,} parameters, {info['epochs']} epochs) "
            f"reaches **{acc:.2f}%** test accuracy on {data} after {minutes:.1f} minutes of training (the last epoch's "
            f"time includes the one evaluation on the test set). "
            + (f"That meets the goal of {goal:g}% within {budget_minutes:g} minutes." if met else
               f"That does not meet the goal of {goal:g}% within {budget_minutes:g} minutes "
               f"({'accuracy' if acc < goal else 'time'} falls short)."))


# ---------------------------------------------------------------- the final recipe over seeds

def final_run_name(seed: int) -> str:
    """Where the final recipe's run with ``seed`` lives: seed 0 is the notebook's ``final`` run."""
    return "final" if seed == 0 else f"final_seeds/seed{seed}"


def final_seed_runs(config: TrainConfig, seeds, data: D.CIFAR10, results_dir="results", device=None) -> dict[int, Run]:
    """The final configuration trained (or loaded) once per seed, each into its own folder."""
    return {seed: fit(dataclasses.replace(config, seed=seed), data, run_name=final_run_name(seed),
                      results_dir=results_dir, device=device, replay=False)
            for seed in seeds}


def finished_final_seeds(results_dir="results") -> dict[int, Run]:
    """The final recipe's finished runs by seed (seed 0 is ``final``), read without training anything; a
    folder whose configuration differs from seed 0's in anything but the seed and the precision is skipped."""
    root = project_path(results_dir)
    found: dict[int, Run] = {}
    if not (root / "final" / "metrics.json").exists():
        return found
    first = load_run(root / "final")
    found[first.config.seed] = first
    for path in sorted((root / "final_seeds").glob("seed*")):
        if (path / "metrics.json").exists():
            run = load_run(path)
            if set(run.config.differences(first.config)) <= {"seed"}:
                found[run.config.seed] = run
    return dict(sorted(found.items()))


def one_view_accuracy(run: Run, images: torch.Tensor | None, labels: torch.Tensor | None, device=None) -> float:
    """Test accuracy (percent) of a run's final weights on one view per image, without its test-time
    augmentation; measured once and kept in ``<run>/one_view.json``. Without images, the kept value
    (NaN if none was measured)."""
    if images is None:
        path = run.path / "one_view.json"
        return read_json(path)["value"]["accuracy"] if path.exists() else math.nan
    device = torch.device(device) if device is not None else torch.device("cpu")

    def measure():
        precision = runnable_precision(run.config.precision, device)
        accuracy = evaluate(run.model.to(device), images, labels.to(device), precision=precision)["accuracy"]
        run.model.cpu()
        return {"accuracy": accuracy * 100, "precision": precision}
    key = {"images": digest(images, labels), "config": run.config.identity()}
    return cached(run.path / "one_view.json", key, measure)["accuracy"]


def final_seed_table(runs: dict[int, Run], images: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                     device=None) -> pd.DataFrame:
    """Per seed of the final recipe: test accuracy with its test-time views and on one view, training
    minutes, and where and in which precision it trained."""
    rows = []
    for seed, run in runs.items():
        env = run.metrics.get("environment", {})
        rows.append({"seed": seed, "test acc (%)": run.metrics["final_test_acc"] * 100,
                     "one view (%)": one_view_accuracy(run, images, labels, device),
                     "minutes": run.metrics["train_seconds"] / 60, "precision": run.config.precision,
                     "device": f"{env.get('device', '?')}, {env.get('threads', '?')} threads"})
    return pd.DataFrame(rows).set_index("seed")


def final_seed_fields(table: pd.DataFrame, planned: int = 5) -> dict:
    """Mean, standard deviation and minimum of the final recipe's accuracies over seeds, for the text."""
    acc, one = table["test acc (%)"], table["one view (%)"]
    sd = acc.std() if len(table) > 1 else math.nan
    return {"n": len(table), "planned": planned, "mean": acc.mean(), "sd": sd,
            "spread": "" if sd != sd else f" (standard deviation {sd:.2f} points)",
            "low": acc.min(), "high": acc.max(), "one_mean": one.mean(), "one_low": one.min(),
            "minutes_low": table["minutes"].min(), "minutes_high": table["minutes"].max(),
            "precisions": ", ".join(f"seed {s}: {p}" for s, p in table["precision"].items())}
