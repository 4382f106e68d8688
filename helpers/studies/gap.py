"""Why our runs of the author's protocol stay below the author's (issue 30): the report's own models,
trained for a few epochs on the copy as it is and on the copy compressed once more, in fp32 and in bf16,
scored at epoch 10 where SPEC.md gives the author's numbers.

* ``GAP_MODELS``: the three models as the author trained them (models 2 and 3 with the 256-logit head).
* ``gap_config`` / ``run_name`` / ``gap_runs``: the runs, in
  ``results/gap/<model>/<data>/<precision>/seed<seed>`` (``data`` is ``copy`` or ``q<quality>``); weights
  are not kept, the study reads numbers only.
* ``epoch10_score``: a run's accuracy at epoch 10 as the mean of epochs 9-11 (one epoch jumps by about a
  point), beside its best.
* ``gap_table``: one row per finished run; ``gap_cells``: mean, sd and count per (model, data, precision).

The same code runs on the official archive (``CIFAR10_ROOT`` pointing at it): ``scripts/run_gap.py``.
"""
from __future__ import annotations

import math
import re

import pandas as pd

from .. import data as D
from ..files import project_path, read_json
from ..training import Run, TrainConfig, load_run
from ..wording import fill
from .common import read_or_train
from .jpeg import jpeg_copy

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
    """Test accuracy (%) at epoch 10 as the mean of epochs 9-11, the single epoch 10, and the best so far."""
    h = run.history.set_index("epoch")["test_acc"] * 100
    missing = [e for e in WINDOW if e not in h.index]
    if missing:
        raise ValueError(f"{run.path} has no epoch {missing[0]}; the gap study scores epochs 9-11")
    return {"epochs 9-11 (%)": h.loc[list(WINDOW)].mean(), "epoch 10 (%)": h.loc[10], "best (%)": h.max()}


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


def gap_table(runs: dict[tuple, Run]) -> pd.DataFrame:
    """One row per finished run: model, data, precision, seed and its scores."""
    rows = [{"model": m, "data": d, "precision": p, "seed": s, **epoch10_score(run)}
            for (m, d, p, s), run in sorted(runs.items())]
    return pd.DataFrame(rows, columns=["model", "data", "precision", "seed", "epochs 9-11 (%)", "epoch 10 (%)",
                                       "best (%)"])


def gap_cells(table: pd.DataFrame) -> pd.DataFrame:
    """Mean, standard deviation and count of the epoch 9-11 score per (model, data, precision)."""
    return (table.groupby(["model", "data", "precision"])["epochs 9-11 (%)"]
            .agg(["mean", "std", "count"]).rename(columns={"count": "runs"}))


def _long_enough(folder) -> Run | None:
    """The finished run in ``folder`` (numbers only) if it trained past epoch 11 on all the data, else None."""
    if not (folder / "metrics.json").exists():
        return None
    run = load_run(folder, weights=False)
    full = run.config.train_subset is None and run.config.test_subset is None and not run.config.validation
    return run if full and run.config.epochs >= max(WINDOW) else None


def seed_noise(results_dir="results") -> dict:
    """How far one run's epoch 9-11 score moves with the seed: per model, the standard deviation over the
    report's run (seed 0) and the seed study's runs (seeds 1 and 2; 10-way heads, the same protocol), and
    the pooled value over the models. This is the noise of one cell of the gap table."""
    root = project_path(results_dir)
    sds = {}
    for model in ("fc", "avgpool", "avgpool_dropout"):
        folders = [root / model, *sorted((root / "seeds").glob(f"{model}_seed*"))]
        scores = [epoch10_score(run)["epochs 9-11 (%)"] for run in map(_long_enough, folders) if run]
        if len(scores) > 1:
            sds[model] = float(pd.Series(scores).std())
    pooled = float(pd.Series(sds).pow(2).mean() ** 0.5) if sds else float("nan")
    return {"per model": sds, "pooled": pooled, "runs": 3}


def decomposition(results_dir="results", quality: int = 25) -> pd.DataFrame:
    """Per model, the gap to the author at epoch 10 split by experiment, each part from single runs of seed 0:

    * ``ours``: the report's own run (bf16, the copy as it is), epochs 9-11;
    * ``gap``: the author's epoch 10 minus ``ours``;
    * ``bf16 cost``: the fp32 run minus the bf16 run (same seed, same data);
    * ``drop at q<quality>``: the fp32 run on the copy minus the fp32 run on the copy compressed again;
    * ``copy cost (line)``: that drop scaled by the distortion of the stand-in pass over the distortion of
      the q<quality> pass (both as mean squared error; a straight line through no-distortion);
    * ``unexplained``: gap minus bf16 cost minus copy cost.

    Each part carries its standard error from ``seed_noise`` (a difference of two single runs: sqrt(2) x
    the pooled seed sd). Empty where a run is missing."""
    from .. import results as R
    from .jpeg import psnr_to_mse
    root = project_path(results_dir)
    runs = finished_gap_runs(results_dir)
    noise = seed_noise(results_dir)["pooled"]
    reference = root / "jpeg" / "reference.json"
    distortion = root / "jpeg" / f"q{quality}" / "distortion.json"
    ratio = math.nan
    if reference.exists() and distortion.exists():
        ratio = (psnr_to_mse(read_json(reference, "measurement")["value"]["psnr"])
                 / psnr_to_mse(read_json(distortion, "measurement")["value"]["test psnr"]))
    rows = []
    for key, (model, _) in GAP_MODELS.items():
        report_run = _long_enough(root / key)
        if report_run is None:
            continue
        ours = epoch10_score(report_run)["epochs 9-11 (%)"]
        author = float(R.AUTHOR.loc[model, "epoch 10"])

        def score(data, precision):
            found = [epoch10_score(r)["epochs 9-11 (%)"] for (m, d, p, s), r in runs.items()
                     if m == key and d == data and p == precision and s == 0]
            return found[0] if found else math.nan
        fp32, fp32_q = score("copy", "fp32"), score(f"q{quality}", "fp32")
        bf16_cost = fp32 - ours
        drop = fp32 - fp32_q
        copy_cost = drop * ratio
        # unexplained = author - fp32 - ratio (fp32 - q): our bf16 run cancels; the author's run counted as
        # noisy as one of ours
        rows.append({"model": key, "author epoch 10": author, "ours (bf16)": ours, "gap": author - ours,
                     "fp32": fp32, "bf16 cost": bf16_cost, f"fp32 q{quality}": fp32_q, f"drop at q{quality}": drop,
                     "copy cost (line)": copy_cost, "unexplained": author - ours - bf16_cost - copy_cost,
                     "se of a difference": math.sqrt(2) * noise, "se of copy cost": math.sqrt(2) * noise * ratio,
                     "se of unexplained": noise * math.sqrt(1 + (1 + ratio) ** 2 + ratio ** 2), "mse ratio": ratio})
    return pd.DataFrame(rows).set_index("model") if rows else pd.DataFrame()


def gap_summary(results_dir="results") -> tuple[pd.DataFrame, str]:
    """Notebook 09's section: the decomposition table and its reading in words (``report/text/gap.md``)."""
    from ..models import VARIANTS
    table = decomposition(results_dir)
    if table.empty or table["fp32"].isna().all():
        return table, fill("gap:none")
    noise = seed_noise(results_dir)
    lines = [fill("gap:noise", sd=noise["pooled"], runs=noise["runs"])]
    for key, row in table.iterrows():
        name = VARIANTS[GAP_MODELS[key][0]] + (" (the author's head)" if GAP_MODELS[key][1] == "author" else "")
        if row["fp32"] != row["fp32"]:
            lines.append(fill("gap:model_waiting", name=name, gap=row["gap"]))
            continue
        parts = {"name": name, "gap": row["gap"], "bf16": row["bf16 cost"], "se": row["se of a difference"],
                 "bf16_z": row["bf16 cost"] / row["se of a difference"]}
        if row["copy cost (line)"] == row["copy cost (line)"]:
            lines.append(fill("gap:model", **parts, drop=row["drop at q25"], copy=row["copy cost (line)"],
                              copy_se=row["se of copy cost"], rest=row["unexplained"],
                              rest_se=row["se of unexplained"], rest_z=row["unexplained"] / row["se of unexplained"]))
        else:
            lines.append(fill("gap:model_precision_only", **parts))
    return table, "\n".join(lines)
