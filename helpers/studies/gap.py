"""Why our runs of the author's protocol stay below the author's (issue 30): the report's own models,
trained for a few epochs in other conditions (fp32 instead of bf16; the copy compressed once more), scored at
epoch 10, where SPEC.md gives the author's numbers.

* ``GAP_MODELS``: the three models as the author trained them (models 2 and 3 with the 256-logit head).
* ``gap_config`` / ``run_name`` / ``gap_runs``: the runs, in
  ``results/gap/<model>/<data>/<precision>/seed<seed>`` (``data`` is ``copy`` or ``q<quality>``); weights
  are not kept, the study reads numbers only (and the measurement below, kept beside each run).
* ``epoch10_score``: a run's accuracy at epoch 10 as the mean of epochs 9-11 (one epoch jumps by about a
  point), beside its best.
* ``silent_classes``: the classes a run's weights never predict. With the author's head each class output
  comes straight out of a ReLU, and a class whose output is zero on every image is lost until it comes back.
* ``jpeg_table``: the report models' own JPEG sensitivity, the copy against the copy compressed once more,
  paired by seed, with the cost of the copy's own pass read from a line.
* ``decomposition``: the gap at epoch 10 as the JPEG cost plus what is left, each with its error.
* ``runs_table`` / ``gap_summary``: notebook 09's section.

The same code runs on the official archive (``CIFAR10_ROOT`` pointing at it): ``scripts/run_gap.py``.
"""
from __future__ import annotations

import math
import re

import pandas as pd
import torch

from .. import data as D
from .. import results as R
from ..files import cached, digest, project_path, read_json, weights_digest
from ..config import TrainConfig
from ..runs import check_measured_on, load_run, Run
from ..facts import fact
from ..wording import fill
from .common import read_or_train
from .jpeg import jpeg_copy, psnr_to_mse

# the report's models as the author trained them: (folder name, model, head)
GAP_MODELS = {"fc": ("fc", "linear"), "avgpool_author_head": ("avgpool", "author"),
              "avgpool_dropout_author_head": ("avgpool_dropout", "author")}
EPOCHS = 12               # the author's epoch-10 numbers, and a window of epochs 9-11 around them
WINDOW = (9, 10, 11)
_FOLDER = re.compile(r"gap/(?P<model>[a-z_]+)/(?P<data>copy|q\d+)/(?P<precision>fp32|bf16)/seed(?P<seed>\d+)")


def gap_config(model_key: str, precision: str = "fp32", seed: int = 0, epochs: int = EPOCHS) -> TrainConfig:
    """The author's protocol for one of ``GAP_MODELS``, shortened to ``epochs`` (the rate is constant, so
    the first epochs are those of the 100-epoch run)."""
    if model_key not in GAP_MODELS:
        raise ValueError(f"model must be one of {', '.join(GAP_MODELS)}; got {model_key!r}")
    model, head = GAP_MODELS[model_key]
    return TrainConfig(model=model, head=head, epochs=epochs, precision=precision, seed=seed)


def data_key(quality: int | None) -> str:
    return "copy" if quality is None else f"q{quality}"


def run_name(model_key: str, quality: int | None, precision: str, seed: int) -> str:
    return f"gap/{model_key}/{data_key(quality)}/{precision}/seed{seed}"


def gap_runs(plan, data: D.CIFAR10, results_dir="results", device=None, epochs: int = EPOCHS) -> dict[str, Run]:
    """Train (or read) each (model_key, quality or None, precision, seed) of ``plan`` in order; a quality's
    copy is made once, and only for a run that still has to train."""
    copies: dict[int, D.CIFAR10] = {}

    def images(quality):
        if quality is None:
            return data
        if quality not in copies:
            copies[quality] = jpeg_copy(data, quality)
        return copies[quality]
    runs = {}
    for model_key, quality, precision, seed in plan:
        name = run_name(model_key, quality, precision, seed)
        runs[name] = read_or_train(gap_config(model_key, precision, seed, epochs), lambda q=quality: images(q),
                                   name, results_dir, device)
    return runs


def epoch10_score(run: Run) -> dict:
    """Test accuracy (%) at epoch 10 as the mean of epochs 9-11, the single epoch 10, and the best of the first
    ``EPOCHS`` epochs (so that a 100-epoch run and a 12-epoch run are read over the same epochs)."""
    h = run.history.set_index("epoch")["test_acc"] * 100
    missing = [e for e in WINDOW if e not in h.index]
    if missing:
        raise ValueError(f"{run.path} has no epoch {missing[0]}; the gap study scores epochs 9-11")
    return {"epochs 9-11 (%)": h.loc[list(WINDOW)].mean(), "epoch 10 (%)": h.loc[10],
            f"best of epochs 1-{EPOCHS} (%)": h.loc[:EPOCHS].max()}


def silent_classes(run: Run, data: D.CIFAR10 | None = None) -> dict:
    """Which classes a run's final weights can still predict: per class, the share of test images on which
    its output is above zero and its test accuracy. With the author's 256-logit head the ten class outputs
    come straight out of a ReLU: a class whose output is zero on every image is never predicted (a "silent"
    class), whatever the image. Measured once and kept in ``<run>/classes.json`` (keyed by the weights and
    the images); without ``data``, the kept measurement (None if there is none)."""
    path = run.path / "classes.json"
    if data is None:
        return read_json(path, "cached measurement")["value"] if path.exists() else None
    images = data.test.images

    def measure():
        x, y = D.to_device(data.test, "cpu")
        model = run.model.eval()
        with torch.no_grad():
            out = torch.cat([model(x[i:i + 1000]).float() for i in range(0, len(x), 1000)])
        pred = out.argmax(1)
        on = [(out[:, c] > 0).float().mean().item() * 100 for c in range(10)]
        return {"output above zero %": on, "accuracy %": [(pred[y == c] == c).float().mean().item() * 100
                                                          for c in range(10)],
                "silent": [D.CLASSES[c] for c in range(10) if on[c] == 0]}
    check_measured_on(run, images)
    return cached(path, {"images": digest(images), "weights": weights_digest(run.model)}, measure)


def finished_gap_runs(results_dir="results") -> dict[tuple, Run]:
    """The finished runs under ``results/gap/``, by (model, data, precision, seed); other folders are ignored."""
    root = project_path(results_dir)
    runs = {}
    for metrics in sorted(root.glob("gap/*/*/*/seed*/metrics.json")):
        match = _FOLDER.fullmatch(metrics.parent.relative_to(root).as_posix())
        if match:
            run = load_run(metrics.parent, weights=False)
            key = (match["model"], match["data"], match["precision"], int(match["seed"]))
            expected = gap_config(key[0], key[2], key[3], run.config.epochs)
            if run.config.differences(expected) or run.config.precision != key[2]:
                raise ValueError(f"{metrics.parent} does not hold the run its folder names; move it out of gap/")
            runs[key] = run
    return runs


def report_runs(results_dir="results") -> dict[tuple, Run]:
    """The report's own runs of the author's protocol (seed 0, 100 epochs, bf16 on the project's machines),
    keyed like ``finished_gap_runs``: their first epochs are those of a 12-epoch run (the rate is constant)."""
    root = project_path(results_dir)
    runs = {}
    for key in GAP_MODELS:
        if (root / key / "metrics.json").exists():
            run = load_run(root / key, weights=False)
            full = run.config.train_subset is None and run.config.test_subset is None and not run.config.validation
            if full and run.config.epochs >= max(WINDOW):
                runs[key, "copy" if not run.metrics.get("official_data") else "official", run.config.precision, 0] = run
    return runs


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _label(model_key: str) -> str:
    from ..models import VARIANTS
    model, head = GAP_MODELS[model_key]
    return VARIANTS[model] + (", author's head" if head == "author" else "")


def runs_table(results_dir="results") -> pd.DataFrame:
    """Every run that speaks to the gap at epoch 10, one row each: the report's 100-epoch runs and the gap
    study's 12-epoch runs, with the author's epoch-10 accuracy beside them, the score at epoch 10 (mean of
    epochs 9-11) and the classes the final weights never predict (``silent_classes``; for the report's runs
    that is at epoch 100, for the study's at epoch 12)."""
    rows = []
    for source, runs in (("report run", report_runs(results_dir)), ("gap study", finished_gap_runs(results_dir))):
        for (model, data, precision, seed), run in sorted(runs.items()):
            silent = silent_classes(run) if GAP_MODELS[model][1] == "author" else None
            rows.append({"model": _label(model), "run": source, "data": data, "precision": precision, "seed": seed,
                         "epochs": run.config.epochs,
                         "author epoch 10 (%)": float(R.AUTHOR.loc[GAP_MODELS[model][0], "epoch 10"]),
                         **epoch10_score(run),
                         "silent classes at the end": (", ".join(silent["silent"]) or "none") if silent else
                         "not measured" if GAP_MODELS[model][1] == "author" else "cannot be (10-way output)",
                         "silent count": len(silent["silent"]) if silent else math.nan})
    return pd.DataFrame(rows)


def measure_silent_classes(data: D.CIFAR10, results_dir="results") -> None:
    """Measure (once; kept beside each run) which classes the final weights of every run in ``runs_table``
    never predict; runs whose weights are gone keep what was measured."""
    for (model, *_), run in [*report_runs(results_dir).items(), *finished_gap_runs(results_dir).items()]:
        if GAP_MODELS[model][1] == "author" and (run.path / "model.pt").exists():
            silent_classes(load_run(run.path), data)


def gap_summary(results_dir="results") -> tuple[pd.DataFrame, str]:
    """Notebook 09's section: the runs table and its reading in words (``report/text/gap.md``)."""
    table = runs_table(results_dir)
    study = table[table["run"] == "gap study"] if len(table) else table
    if not len(study):
        return table, fill("gap:none")
    lines = []
    for name, rows in table.groupby("model", sort=False):
        report = rows[rows["run"] == "report run"]
        fp32 = rows[(rows["run"] == "gap study") & (rows["precision"] == "fp32") & (rows["data"] == "copy")]
        if not len(report) or not len(fp32):
            continue
        ours, author = report["epochs 9-11 (%)"].iloc[0], report["author epoch 10 (%)"].iloc[0]
        silent = fp32[fp32["silent count"] > 0]
        lines.append(fill("gap:model", name=name, author=author, ours=ours, ours_precision=report["precision"].iloc[0],
                          fp32=_and([f"{r['epochs 9-11 (%)']:.1f}% (seed {r['seed']})" for _, r in fp32.iterrows()]),
                          report_silent=report["silent classes at the end"].iloc[0],
                          silent=fill("gap:silent", classes="; ".join(
                              f"{r['silent classes at the end']} (seed {r['seed']})" for _, r in silent.iterrows()))
                          if len(silent) else fill("gap:none_silent"))
                     + (" " + fill("gap:spread", spread=fp32["epochs 9-11 (%)"].max() - fp32["epochs 9-11 (%)"].min(),
                                   gap=author - ours) if len(fp32) > 1 else ""))
    text = "\n".join(lines)
    if study["silent count"].gt(0).any():
        text += "\n\n" + fill("gap:reading")
    extra = [t for t in (jpeg_text(jpeg_table(results_dir)), decomposition_text(decomposition(results_dir))) if t]
    return table, "\n\n".join([text, *extra])


def jpeg_table(results_dir="results") -> pd.DataFrame:
    """The report models' own JPEG sensitivity (issue 30, item 1): for each model and quality of the gap study,
    the fp32 seeds run both on the copy and on the copy compressed once more, paired by seed. Per row: the
    seeds, the mean score at epochs 9-11 on each, the paired drop (copy minus the quality) with its standard
    error over pairs (NaN with one pair), the mean squared error the pass adds to the test images
    (``results/studies/jpeg.csv``, notebook 09's JPEG study; NaN before it ran), the final recipe's drop at
    that quality, and the drop per unit of added error times the stand-in pass's error
    (``results/jpeg/reference.json``): what the copy's own pass would cost these models if the cost grew in
    proportion to the distortion, the line reading of ``jpeg.jpeg_fields``."""
    table = runs_table(results_dir)
    columns = ["model", "quality", "seeds", "copy (%)", "quality (%)", "drop", "drop se", "added mse",
               "final recipe drop", "line reading"]
    if not len(table):
        return pd.DataFrame(columns=columns)
    study = table[(table["run"] == "gap study") & (table["precision"] == "fp32")]
    folder = project_path(results_dir)
    recipe = (pd.read_csv(folder / "studies" / "jpeg.csv", dtype={"quality": str}).set_index("quality")
              if (folder / "studies" / "jpeg.csv").exists() else None)
    reference = folder / "jpeg" / "reference.json"
    stand_in = psnr_to_mse(read_json(reference, "measurement")["value"]["psnr"]) if reference.exists() else math.nan
    rows = []
    for model, runs in study.groupby("model", sort=False):
        copy = runs[runs["data"] == "copy"].set_index("seed")["epochs 9-11 (%)"]
        for data, other in runs[runs["data"] != "copy"].groupby("data"):
            other = other.set_index("seed")["epochs 9-11 (%)"]
            seeds = sorted(set(copy.index) & set(other.index))
            if not seeds:
                continue
            drop = copy[seeds] - other[seeds]
            quality = data.removeprefix("q")
            known = recipe is not None and quality in recipe.index
            added = float(recipe.loc[quality, "added mse"]) if known else math.nan
            rows.append({"model": model, "quality": quality, "seeds": ", ".join(map(str, seeds)),
                         "copy (%)": copy[seeds].mean(), "quality (%)": other[seeds].mean(), "drop": drop.mean(),
                         "drop se": drop.std() / math.sqrt(len(drop)) if len(drop) > 1 else math.nan,
                         "added mse": added, "final recipe drop": float(recipe.loc[quality, "drop"]) if known else math.nan,
                         "line reading": drop.mean() / added * stand_in if known else math.nan})
    return pd.DataFrame(rows, columns=columns)


def jpeg_text(table: pd.DataFrame) -> str:
    """``jpeg_table`` in words (``report/text/gap.md``, pieces ``jpeg*``); empty before a pair has finished."""
    if not len(table):
        return ""
    lines = []
    for _, r in table.iterrows():
        n = len(r["seeds"].split(", "))
        lines.append(fill("gap:jpeg_model", name=r["model"], quality=r["quality"],
                          seeds=f"seed{'s' if n > 1 else ''} {r['seeds']}",
                          pairs=f"{n} pair{'s' if n > 1 else ''}",
                          copy=fact(f"gap.jpeg.{r['model']}.q{r['quality']}.copy", r["copy (%)"], "%2"),
                          other=fact(f"gap.jpeg.{r['model']}.q{r['quality']}.other", r["quality (%)"], "%2"),
                          drop=fact(f"gap.jpeg.{r['model']}.q{r['quality']}.drop", r["drop"], "points2"),
                          spread="" if r["drop se"] != r["drop se"] else
                          fill("gap:jpeg_se", se=fact(f"gap.jpeg.{r['model']}.q{r['quality']}.drop_se", r["drop se"], "points2")),
                          recipe="" if r["final recipe drop"] != r["final recipe drop"] else fill(
                              "gap:jpeg_recipe", final=fact(f"jpeg.q{r['quality']}.drop", r["final recipe drop"], "points2"),
                              line=fact(f"gap.jpeg.{r['model']}.q{r['quality']}.line", r["line reading"], "points1"))))
    return "\n".join([fill("gap:jpeg_intro"), *lines]) + "\n\n" + fill(
        "gap:jpeg_one_pair" if table["drop se"].isna().all() else "gap:jpeg_pairs")


def jpeg_cost_list(table: pd.DataFrame) -> str:
    """``jpeg_table``'s line readings in one phrase for the README, notebook 06 and the paper (template
    ``gap:jpeg_cost_item``); empty before a pair has finished."""
    return "; ".join(fill("gap:jpeg_cost_item", name=r["model"], line=fact(
        f"gap.jpeg.{r['model']}.q{r['quality']}.line", r["line reading"], "points1"),
        pairs=f"{len(r['seeds'].split(', '))} pair{'s' if ', ' in r['seeds'] else ''} of seeds")
        for _, r in table.iterrows())


def decomposition(results_dir="results") -> pd.DataFrame:
    """The gap to the author at epoch 10 taken apart (issue 30, item 4), one row per model with fp32 seeds
    on the copy: the gap (the author's epoch-10 accuracy less the mean of our fp32 seeds at epochs 9-11,
    standard error from the seeds' spread), the JPEG copy's cost to this model (``jpeg_table``'s line
    reading at the lowest quality run, standard error over its pairs; NaN before a pair), and what is left.
    Beside them, the report's own bf16 run less the fp32 seeds' mean: precision and seed together, one run,
    since these models have no paired precision runs. The errors are combined as independent."""
    table = runs_table(results_dir)
    columns = ["model", "seeds", "gap", "gap se", "JPEG cost", "JPEG se", "JPEG pairs", "unexplained",
               "unexplained se", "report run minus fp32 seeds"]
    if not len(table):
        return pd.DataFrame(columns=columns)
    jpeg = jpeg_table(results_dir)
    rows = []
    for model, runs in table.groupby("model", sort=False):
        fp32 = runs[(runs["run"] == "gap study") & (runs["precision"] == "fp32") & (runs["data"] == "copy")]
        if not len(fp32):
            continue
        scores, author = fp32["epochs 9-11 (%)"], float(runs["author epoch 10 (%)"].iloc[0])
        gap_se = scores.std() / math.sqrt(len(scores)) if len(scores) > 1 else math.nan
        mine = jpeg[jpeg["model"] == model].sort_values("added mse")
        cost = mine.iloc[-1] if len(mine) else None
        jpeg_cost = float(cost["line reading"]) if cost is not None else math.nan
        jpeg_se = (float(cost["drop se"]) / float(cost["drop"]) * jpeg_cost) if cost is not None else math.nan
        report = runs[runs["run"] == "report run"]["epochs 9-11 (%)"]
        rows.append({"model": model, "seeds": len(scores), "gap": author - scores.mean(), "gap se": gap_se,
                     "JPEG cost": jpeg_cost, "JPEG se": jpeg_se,
                     "JPEG pairs": len(cost["seeds"].split(", ")) if cost is not None else 0,
                     "unexplained": author - scores.mean() - jpeg_cost,
                     "unexplained se": math.hypot(gap_se, jpeg_se),
                     "report run minus fp32 seeds": float(report.iloc[0]) - scores.mean() if len(report) else math.nan})
    return pd.DataFrame(rows, columns=columns)


def decomposition_text(table: pd.DataFrame) -> str:
    """``decomposition`` in words (``report/text/gap.md``, ``decomposition*``); empty before a JPEG pair."""
    table = table[table["JPEG cost"].notna()]
    if not len(table):
        return ""
    lines = [fill("gap:decomposition_model", name=r["model"], seeds=r["seeds"],
                  gap=fact(f"gap.{r['model']}.gap", r["gap"], "points1"),
                  gap_se=fact(f"gap.{r['model']}.gap_se", r["gap se"], "points1"),
                  jpeg=fact(f"gap.{r['model']}.jpeg_cost", r["JPEG cost"], "points1"),
                  pairs=f"{r['JPEG pairs']} pair{'s' if r['JPEG pairs'] != 1 else ''}",
                  left=fact(f"gap.{r['model']}.unexplained", r["unexplained"], "points1"),
                  left_se=fact(f"gap.{r['model']}.unexplained_se", r["unexplained se"], "points1"),
                  report=fact(f"gap.{r['model']}.report_minus_fp32", r["report run minus fp32 seeds"], "+points1"))
             for _, r in table.iterrows()]
    return "\n".join([fill("gap:decomposition_intro"), *lines]) + "\n\n" + fill("gap:decomposition_reading")


def seed_spread(results_dir="results") -> dict | None:
    """The widest spread between the fp32 seeds of one model on the copy at epochs 9-11 (the README's line):
    the model, the number of seeds and the spread in points; None before two seeds of a model have finished."""
    table = runs_table(results_dir)
    if not len(table):
        return None
    study = table[(table["run"] == "gap study") & (table["precision"] == "fp32") & (table["data"] == "copy")]
    spreads = [(rows["epochs 9-11 (%)"].max() - rows["epochs 9-11 (%)"].min(), name, len(rows))
               for name, rows in study.groupby("model", sort=False) if len(rows) > 1]
    if not spreads:
        return None
    spread, name, seeds = max(spreads)
    number = {_label(key): i for i, key in enumerate(GAP_MODELS, start=1)}[name]
    return {"name": f"model {number}", "seeds": seeds, "spread": fact("gap.seed_spread", spread, "points1")}
