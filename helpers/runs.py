"""A run's folder, read back: ``load_run``, its history checked against its metrics, the images it uses,
and the errors that name a damaged or conflicting folder. ``training.fit`` writes these folders.

A run lives in ``results/<run name>/``: ``config.json`` (what it trains; a folder never holds two
configurations), ``history.csv`` (one row per epoch), ``metrics.json`` (the summary, the machine and the
code that ran it) and, when finished, ``model.pt`` (the weights); ``checkpoint.pt`` and ``.lock`` exist
only while it trains.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from . import data as D
from .config import TrainConfig
from .files import read_json, project_path, shown_path
from .recipe import make_model


class RunConflictError(RuntimeError):
    """The results folder holds a run made with a different configuration."""


class RunDataError(RuntimeError):
    """A file of a run (checkpoint, configuration, metrics, weights) is missing or damaged."""


class DivergedError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class Run:
    """A finished (or loaded) run: its folder, config, history and trained model."""
    path: Path
    config: TrainConfig
    history: pd.DataFrame
    metrics: dict
    model: torch.nn.Module


def check_measured_on(run: Run, images, train=None) -> None:
    """Refuse to measure ``run`` on a set of another size than the one it was evaluated (and trained) on
    (metrics.json): an incomplete data folder would otherwise replace the run's kept measurements with ones
    of a smaller set."""
    split = run.config.eval_split
    for what, given in ((split, images), ("train", train)):
        expected = run.metrics.get(f"{what}_images")
        if given is not None and expected is not None and len(given) != expected:
            raise RunDataError(f"{shown_path(run.path)} was measured on {expected:,} {what} images (metrics.json), "
                               f"but {len(given):,} were given: the data folder is incomplete or another one. Its "
                               "kept measurements are left as they are; point CIFAR10_ROOT at the complete data set.")


def _read_run_json(path: Path, what: str) -> dict:
    try:
        return read_json(path, what)
    except ValueError as exc:
        raise RunDataError(str(exc)) from None


def load_run(path, weights: bool = True) -> Run:
    """A finished run from its results folder, with its final weights loaded on the CPU (``weights``)."""
    path = project_path(path)
    metrics_file = path / "metrics.json"
    if not metrics_file.exists():
        raise FileNotFoundError(f"{shown_path(path)} holds no finished run (no metrics.json); train it first")
    metrics = _read_run_json(metrics_file, "run's metrics file")
    try:
        config = TrainConfig.from_dict(metrics["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise RunDataError(f"{shown_path(metrics_file)} holds no valid configuration ({exc}). Restore the file "
                           "from git (git checkout -- <file>) or from a backup.") from None
    model = make_model(config)
    weights_file = path / "model.pt"
    if weights:
        if not weights_file.exists():
            raise RunDataError(f"{shown_path(weights_file)} is missing: the run finished (metrics.json) but its "
                               "weights are gone, and a model with random weights would give random results. "
                               "Restore the file (git checkout -- <file>, or from a backup), or train the "
                               "configuration into another folder.")
        try:
            model.load_state_dict(torch.load(weights_file, map_location="cpu", weights_only=True))
        except (RuntimeError, EOFError, OSError, ValueError, KeyError) as exc:
            raise RunDataError(f"{shown_path(weights_file)} cannot be read as this run's weights "
                               f"({type(exc).__name__}: {str(exc)[:200]}). Restore it from git or a backup.") from None
    return Run(path, config, read_history(path / "history.csv", config, metrics), metrics, model)


def read_history(history_file: Path, config: TrainConfig, metrics: dict) -> pd.DataFrame:
    """A finished run's history, checked against its ``metrics.json``: the columns a run writes, one row per
    epoch of its configuration, and the final (and best) accuracy that metrics.json records. A hand-edited
    or damaged file is refused by name rather than reported."""
    again = "Restore it from git (git checkout -- <file>) or a backup."
    shown = shown_path(history_file)
    if not history_file.exists():
        raise RunDataError(f"{shown} is missing from a finished run. {again}")
    try:
        history = pd.read_csv(history_file)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise RunDataError(f"{shown} cannot be read as a run's history ({type(exc).__name__}: "
                           f"{str(exc)[:120]}). {again}") from None
    split = config.eval_split
    columns = ["epoch", "train_loss", "train_acc", f"{split}_loss", f"{split}_acc", "seconds"]
    missing = [c for c in columns if c not in history.columns]
    if missing:
        raise RunDataError(f"{shown} lacks the column(s) {', '.join(missing)} (it has {', '.join(map(str, history.columns))}). "
                           f"{again}")
    if history["epoch"].tolist() != list(range(1, config.epochs + 1)):
        raise RunDataError(f"{shown} holds {len(history)} rows (epochs {history['epoch'].tolist()[:3]}...), but the run "
                           f"trained epochs 1 to {config.epochs} (metrics.json). {again}")
    try:
        accuracy = pd.to_numeric(history[f"{split}_acc"], errors="raise")
    except (ValueError, TypeError):
        raise RunDataError(f"{shown}: the column {split}_acc holds something that is not a number. {again}") from None
    recorded = {"final": (metrics.get(f"final_{split}_acc"), accuracy.iloc[-1])}
    if config.eval_each_epoch:
        recorded["best"] = (metrics.get(f"best_{split}_acc"), accuracy.max())
    for what, (stored, found) in recorded.items():
        if stored is not None and not abs(stored - found) < 1e-6:
            raise RunDataError(f"{shown} gives a {what} {split} accuracy of {found:.4f}, but metrics.json records "
                               f"{stored:.4f}: one of the two was edited. {again}")
    return history


def image_sets(config: TrainConfig, data: D.CIFAR10) -> tuple[D.ImageSet, D.ImageSet]:
    """The (train, evaluation) images a run uses: optional validation hold-out, optional quick-run subsets."""
    train, test = data.train, data.test
    if config.validation:
        if len(train) - config.validation < 100:
            raise ValueError(f"validation={config.validation} leaves {len(train) - config.validation} of the "
                             f"{len(train):,} training images to train on; hold out fewer")
        train, test = D.hold_out(train, config.validation)
    for name, size, split in (("train_subset", config.train_subset, train), ("test_subset", config.test_subset, test)):
        if size and size > len(split):
            raise ValueError(f"{name}={size:,} asks for more images than there are ({len(split):,})")
    if config.train_subset:
        train = D.balanced_subset(train, config.train_subset)
    if config.test_subset:
        test = D.balanced_subset(test, config.test_subset)
    return train, test


def _saved_config(path: Path) -> TrainConfig | None:
    saved_file = path / "config.json"
    if not saved_file.exists():
        return None
    saved = _read_run_json(saved_file, "run's configuration")
    try:
        return TrainConfig.from_dict(saved)
    except (TypeError, ValueError) as exc:
        raise RunDataError(f"{shown_path(saved_file)} is not a valid configuration ({exc}). Restore it from git "
                           "or a backup.") from None


def check_config(path: Path, config: TrainConfig) -> TrainConfig | None:
    """The configuration saved in ``path`` (None if there is none); a conflict if it trained something else."""
    saved = _saved_config(path)
    if saved is None:
        return None
    diff = saved.differences(config)
    if diff:
        changes = ", ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in diff.items())
        raise RunConflictError(
            f"{shown_path(path)} holds a run with a different configuration ({changes}). It is kept as it is: "
            "train this configuration under another run name or into another results folder.")
    return saved
