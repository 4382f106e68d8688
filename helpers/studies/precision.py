"""Does computing in bf16 change the result? (issue 17, notebook 09): model 1 with the report's protocol,
trained for a few epochs on the full training set with the same seeds once in fp32 and once in bf16, so
that every seed gives one paired difference and the seed-to-seed noise cancels from it.

* ``precision_runs``: the pairs, in ``results/precision/<precision>/seed<seed>`` (weights not kept: the
  study reads numbers only).
* ``finished_precision_runs`` / ``precision_table``: the finished pairs, one row per seed.
* ``paired_fields`` / ``precision_summary``: the mean paired difference, its standard error and 95%
  interval, and the reading in words (``report/text/precision_paired.md``).
"""
from __future__ import annotations

import dataclasses
import math
import re

import pandas as pd

from .. import data as D
from ..files import project_path, shown_path
from ..models import VARIANTS
from ..config import TrainConfig
from ..runs import load_run, Run
from ..facts import facts
from ..wording import fill
from .common import read_or_train, save_table

PRECISIONS = ("fp32", "bf16")
# two-sided 95% quantiles of Student's t by degrees of freedom (scipy is not a dependency); 1.96 beyond 30
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
        20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048,
        29: 2.045, 30: 2.042}
COLUMNS = ["fp32 (%)", "bf16 (%)", "bf16 - fp32", "fp32 s/epoch", "bf16 s/epoch"]
_SEED_FOLDER = re.compile(r"seed(\d+)")


def paired_config(epochs: int = 10, model: str = "fc") -> TrainConfig:
    """The study's configuration: the report's protocol for ``model``, ``epochs`` epochs, all 50,000
    training images, the test set after every epoch."""
    return TrainConfig(model=model, epochs=epochs)


def run_name(precision: str, seed: int) -> str:
    return f"precision/{precision}/seed{seed}"


def precision_runs(config: TrainConfig, seeds, data: D.CIFAR10, results_dir="results",
                   device=None) -> dict[tuple[str, int], Run]:
    """``config`` trained once per seed in each precision, seed by seed (so that every seed finished is a
    pair). A finished run is read, not trained; bf16 where the device does not compute it natively is
    emulated, correct but several times slower."""
    return {(precision, seed): read_or_train(dataclasses.replace(config, seed=seed, precision=precision), data,
                                             run_name(precision, seed), results_dir, device)
            for seed in seeds for precision in PRECISIONS}


def finished_precision_runs(results_dir="results") -> dict[tuple[str, int], Run]:
    """The finished runs under ``results/precision/<precision>/seed<N>``, by (precision, seed), read without
    training; other folders there are ignored. A run that trained in another precision than its folder's
    is refused by name (it would pair a run with itself)."""
    runs = {}
    for precision in PRECISIONS:
        for path in sorted((project_path(results_dir) / "precision" / precision).glob("seed*")):
            match = _SEED_FOLDER.fullmatch(path.name)
            if match and (path / "metrics.json").exists():
                run = load_run(path, weights=False)
                if run.config.precision != precision:
                    raise ValueError(f"{shown_path(path)} trained in {run.config.precision}, not {precision}; move it "
                                     "out of results/precision/ (precision_runs trains each seed in both precisions).")
                runs[precision, int(match.group(1))] = run
    return runs


def precision_table(runs: dict[tuple[str, int], Run]) -> pd.DataFrame:
    """One row per seed that has finished in both precisions: final test accuracy (after the last epoch)
    in each, their difference (bf16 - fp32), and the median seconds per epoch of each; no rows before a pair has
    finished. Runs whose configuration differs in anything but seed and precision from the first are
    refused (they would not be a pair)."""
    rows = []
    if runs:
        first = next(iter(runs.values()))
        for run in runs.values():
            other = set(run.config.differences(first.config)) - {"seed", "precision"}
            if other:
                raise ValueError(f"{shown_path(run.path)} differs from {shown_path(first.path)} in "
                                 f"{', '.join(sorted(other))}; a paired comparison needs the same configuration. "
                                 "Move it out of results/precision/.")
    for seed in sorted({s for _, s in runs}):
        if not all((p, seed) in runs for p in PRECISIONS):
            continue
        acc = {p: runs[p, seed].metrics["final_test_acc"] * 100 for p in PRECISIONS}
        speed = {p: runs[p, seed].history["seconds"].median() for p in PRECISIONS}   # a busy epoch moves it less
        rows.append({"seed": seed, "fp32 (%)": acc["fp32"], "bf16 (%)": acc["bf16"],
                     "bf16 - fp32": acc["bf16"] - acc["fp32"],
                     "fp32 s/epoch": speed["fp32"], "bf16 s/epoch": speed["bf16"]})
    return pd.DataFrame(rows, columns=["seed", *COLUMNS]).set_index("seed")


def paired_fields(table: pd.DataFrame, run: Run) -> dict | None:
    """The paired comparison in numbers: pairs, mean difference (bf16 - fp32, points, recomputed from the
    two accuracy columns), its standard deviation over seeds, standard error, 95% interval (Student's t)
    and the verdict: within the noise when that interval holds zero. Beside it the seed-to-seed standard
    deviation within each precision, and whether pairing narrowed the spread (the differences' standard
    deviation below 0.7 of the sqrt(2) x that which two unrelated runs would show); ``run``, one of the pairs, says what
    was trained. None with fewer than two pairs."""
    n = len(table)
    if n < 2:
        return None
    if table[COLUMNS].isna().any().any():
        raise ValueError("the paired table has missing values; re-run notebook 09 to tabulate the runs again")
    model = run.config.model
    diff = table["bf16 (%)"] - table["fp32 (%)"]
    se = diff.std() / math.sqrt(n)
    t = _T95.get(n - 1, 1.96)
    low, high = diff.mean() - t * se, diff.mean() + t * se
    within = low <= 0 <= high
    within_sd = math.sqrt((table["fp32 (%)"].var() + table["bf16 (%)"].var()) / 2)
    unpaired_sd = math.sqrt(2) * within_sd          # how far apart two unrelated runs lie
    f = facts("precision_paired", {
        "pairs": n, "diff": diff.mean(), "diff_sd": diff.std(), "se": se, "ci_low": low, "ci_high": high,
        "lowest": diff.min(), "highest": diff.max(), "within_sd": within_sd, "unpaired_sd": unpaired_sd,
        "fp32_mean": table["fp32 (%)"].mean(), "bf16_mean": table["bf16 (%)"].mean(),
        "speedup": table["fp32 s/epoch"].median() / table["bf16 s/epoch"].median()}, PAIRED_FORMS,
        ["precision/fp32", "precision/bf16"])
    pairing = fill("pairing:helps" if diff.std() < 0.7 * unpaired_sd else "pairing:no_help",
                   diff_sd=f["diff_sd"], unpaired_sd=f["unpaired_sd"])
    return {**f, "seeds": ", ".join(str(s) for s in table.index), "t": t, "pairing": pairing, "within": within,
            "verdict": "within the noise (the interval holds zero)" if within
                       else "larger than the noise (the interval excludes zero)",
            "model": model, "model_name": _model_name(model), "epochs": run.config.epochs,
            "train_images": f"{run.metrics['train_images']:,}"}


# How the paired study's numbers are stated (``helpers/facts.py``): hundredths of a point throughout.
PAIRED_FORMS = {"pairs": "count", "diff": "+points2", "diff_sd": "sd", "se": "points2", "ci_low": "+points2",
                "ci_high": "+points2", "lowest": "+points2", "highest": "+points2", "within_sd": "sd",
                "unpaired_sd": "sd", "fp32_mean": "%2", "bf16_mean": "%2", "speedup": "ratio1"}


def _model_name(model: str) -> str:
    """"model 1 (fully connected head)" for the report's models, the name itself otherwise."""
    if model not in VARIANTS:
        return model
    return f"model {list(VARIANTS).index(model) + 1} ({VARIANTS[model][0].lower() + VARIANTS[model][1:]})"


@dataclasses.dataclass
class PrecisionStudy:
    """What notebook 09 shows: ``table`` (one row per pair), ``fields`` (``paired_fields``; None below two
    pairs) and ``text``, its reading in words."""
    table: pd.DataFrame
    fields: dict | None
    text: str


def precision_summary(results_dir="results") -> PrecisionStudy:
    """Notebook 09's paired bf16-fp32 section from the finished runs only (it trains nothing), its table
    saved as ``results/studies/precision_paired.csv`` (header only before a pair has finished, so that no
    older table outlives its runs)."""
    runs = finished_precision_runs(results_dir)
    table = precision_table(runs)
    save_table(table, "precision_paired", results_dir)
    fields = paired_fields(table, next(iter(runs.values()))) if runs else None
    text = fill("precision_paired", **fields) if fields else fill("precision_paired_few", pairs=len(table))
    return PrecisionStudy(table, fields, text)


def measured_precision(results_dir="results") -> dict | None:
    """``paired_fields`` of the pairs notebook 09 last tabulated (``results/studies/precision_paired.csv``),
    for the README, the paper and "What changed"; None before two pairs, or where the runs are gone."""
    path = project_path(results_dir) / "studies" / "precision_paired.csv"
    runs = finished_precision_runs(results_dir)
    if not path.exists() or not runs:
        return None
    try:
        table = pd.read_csv(path).set_index("seed")
        return paired_fields(table, next(iter(runs.values())))
    except (KeyError, TypeError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ValueError(f"{shown_path(path)} is not what notebook 09 writes ({type(exc).__name__}: {exc}); re-run "
                         "notebook 09 to write it again, or restore it from git (git checkout -- <file>).") from None
