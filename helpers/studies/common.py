"""What every study shares: where its tables are written, how a study that reads numbers only gets its
runs, and short names for dense prose."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..files import atomic_write, project_path
from ..config import TrainConfig
from ..runs import load_run, Run
from ..training import fit


def _studies_folder(results_dir) -> Path:
    folder = project_path(results_dir) / "studies"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def save_table(table: pd.DataFrame, name: str, results_dir="results") -> Path:
    """Write a study's table to ``results_dir/studies/<name>.csv`` (atomically), for the README and readers."""
    path = _studies_folder(results_dir) / f"{name}.csv"
    index = table.index.name is not None or not isinstance(table.index, pd.RangeIndex)
    atomic_write(path, lambda f: f.write(table.to_csv(index=index).encode()))
    return path


def read_or_train(config: TrainConfig, data, run_name: str, results_dir="results", device=None) -> Run:
    """A run of a study that reads numbers only: a finished one is loaded without its weights (they need
    not be kept), else ``config`` is trained. ``data`` may be a function that makes the data set, so that
    it is made only for a run that still has to train."""
    folder = project_path(results_dir) / run_name
    if (folder / "metrics.json").exists():
        return load_run(folder, weights=False)
    return fit(config, data() if callable(data) else data, run_name=run_name, results_dir=results_dir, device=device)


SHORT_NAMES = {"fc": "FC", "avgpool": "AP", "avgpool_dropout": "AP+D"}     # models in dense evidence lists


def _share(percent: float) -> str:
    """A percentage for prose: one decimal, or "under 0.1%" / "none" rather than a row of zeros."""
    return "none" if percent == 0 else "under 0.1%" if percent < 0.05 else f"{percent:.1f}%"
