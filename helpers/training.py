"""Train one model with the report's protocol, resumably.

``fit(TrainConfig(model="fc"), data)`` runs the author's protocol by default:
batch 64, Adam (lr 1e-3, weight decay 1e-6), cross-entropy, 100 epochs, the
whole test set evaluated after every epoch. Each epoch appends one row to the
history (train loss and accuracy, test loss and accuracy, seconds, images per
second) and prints it as one line.

A run lives in ``results/<run name>/``:

* ``config.json``: the configuration; a folder never holds two configurations. Only what was
  trained counts: ``precision`` says how a run was computed, so a bf16 run loads (and resumes,
  saying so) on a machine that computes in fp32.
* ``.lock``: held while a process trains into the folder; a second process is refused.
* ``checkpoint.pt``: model, optimiser, every RNG state and the history after the
  last finished epoch, replaced atomically each epoch and deleted once the run
  is done. An interrupted run resumes from it and ends bit-for-bit where an
  uninterrupted run would have (same device and thread count).
* ``history.csv``, ``metrics.json`` and, when finished, ``model.pt`` (weights). ``metrics.json`` names
  the code that started the run (git commit, and whether ``helpers/`` or ``scripts/`` had uncommitted
  changes) and lists what changed on a resume (precision, device, code).
"""
from __future__ import annotations

import dataclasses
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

from . import data as D
from .device import environment, pick_device, resolve_precision
from .evaluation import autocast, evaluate, refresh_batchnorm
from .files import FolderLock, RunBusyError, atomic_write, git_state, project_path, read_json, save_json, shown_path
from .models import Network, batchnorm_layers, count_parameters, whiten_stem

# Fields that say how a run was computed, not what was trained: a finished run loads whatever they are now.
COMPUTE_FIELDS = ("precision",)

# Fields added after runs and their measurements were stored, with their defaults: ``identity`` leaves them
# out while they have that value.
ADDED_FIELDS = {"bn_refresh": False}

# Fields every configuration the project ever saved holds (the protocol's); the others were added over time,
# and a configuration saved before one of them loads with its default.
REQUIRED_FIELDS = ("model", "epochs", "batch_size", "lr", "weight_decay", "seed")

# bn_refresh re-measures BatchNorm statistics on this many training images (class-balanced)
REFRESH_IMAGES = 10_000


class RunConflictError(RuntimeError):
    """The results folder holds a run made with a different configuration."""


class RunDataError(RuntimeError):
    """A file of a run (checkpoint, configuration, metrics, weights) is missing or damaged."""


class DivergedError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class TrainConfig:
    """One run: the network (the fields of ``models.Network``, marked below; ``network`` gives it, checked
    there) and how it is trained and evaluated (the rest, checked here). The fields are stored flat, in this
    order, in ``config.json``; a file saved before a field existed loads with its default (``from_dict``)."""
    model: str = "fc"               # network
    head: str = "linear"            # network: "author" is the 256-logit output of models 2 and 3
    epochs: int = 100
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-6
    seed: int = 0
    precision: str = "fp32"         # fp32 | bf16 | auto (bf16 where the hardware runs it natively)
    train_subset: int | None = None  # class-balanced subset of the training set, for quick runs
    test_subset: int | None = None
    validation: int = 0             # >0: hold this many training images out and evaluate on them, not on test
    # options beyond the report's protocol (all off by default; see the follow-up study)
    batchnorm: bool = False         # network: BatchNorm2d after every convolution
    width: float = 1.0              # network: channel multiplier
    convs: int = 7                  # network: 5 or 6: drop the last convolutions of an average-pooling model
    optimizer: str = "adam"         # adam | sgd (Nesterov)
    momentum: float = 0.9           # sgd's momentum
    bias_lr: float = 1.0            # learning-rate multiplier for BatchNorm shifts (weight decay divided by it)
    whiten: bool = False            # network: compact model: a frozen 2x2 stem that whitens image patches
    lookahead: bool = False         # average the weights of the last steps (from 30% of training on)
    dirac: bool = False             # network: compact model: 3x3 convolutions start as partly the identity
    bn_scale: bool = True           # network: compact model: False fixes the BatchNorm scales at 1
    bn_momentum: float = 0.1        # network: compact model: weight of each batch in BatchNorm's running statistics
    logit_scale: float = 1.0        # network: compact model: multiply the logits by this
    augment: str = "none"           # none | flip_crop (random mirror and a crop of the image padded by crop_pad)
    crop_pad: int = 4               # how far flip_crop may move the image, in pixels
    schedule: str = "constant"      # constant | onecycle | cosine | triangle (per step)
    label_smoothing: float = 0.0
    tta_flip: bool = False          # evaluate on each image and its mirror image
    tta_shift: int = 0              # >0: also on copies moved by this many pixels (up-left, down-right)
    eval_each_epoch: bool = True    # False: evaluate once, after the last epoch (a final model and its test set)
    bn_refresh: bool = False        # re-measure BatchNorm statistics with dropout off before each evaluation

    def __post_init__(self):
        self.network                  # checks the network's fields
        checks = {"augment": ("none", "flip_crop"), "schedule": ("constant", "onecycle", "cosine", "triangle"),
                  "precision": ("fp32", "bf16", "auto"), "optimizer": ("adam", "sgd")}
        for field, allowed in checks.items():
            if getattr(self, field) not in allowed:
                raise ValueError(f"{field} must be one of {', '.join(allowed)}; got {getattr(self, field)!r}")
        for field in ("epochs", "batch_size", "seed", "crop_pad", "tta_shift", "validation"):
            if not _whole(getattr(self, field)):
                raise ValueError(f"{field} must be a whole number; got {getattr(self, field)!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be positive; got {self.epochs} and {self.batch_size}")
        for field in ("train_subset", "test_subset"):
            value = getattr(self, field)
            if value is not None and (not _whole(value) or value < 10 or value % 10):
                raise ValueError(f"{field} must be None (all images) or a positive multiple of 10 (a tenth per "
                                 f"class); got {value!r}")
        if self.validation < 0 or self.validation % 10:
            raise ValueError(f"validation must be 0 (evaluate on the test set) or a positive multiple of 10 "
                             f"(held-out training images, a tenth per class); got {self.validation!r}")
        for field in ("lr", "weight_decay", "label_smoothing", "momentum", "bias_lr"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{field} must be a finite number; got {value!r}")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError(f"lr must be positive and weight_decay zero or positive; got lr={self.lr}, "
                             f"weight_decay={self.weight_decay}")
        if not 0 <= self.label_smoothing < 1 or not 0 <= self.crop_pad < 16 or not 0 <= self.tta_shift < 16:
            raise ValueError(f"label_smoothing must be in [0, 1), crop_pad and tta_shift from 0 to 15 pixels; got "
                             f"{self.label_smoothing}, {self.crop_pad}, {self.tta_shift}")
        if self.bn_refresh and not self.network.has_batchnorm:
            raise ValueError("bn_refresh re-measures BatchNorm statistics: it needs batchnorm=True or model='compact'")
        if not 0 <= self.momentum < 1 or self.bias_lr <= 0:
            raise ValueError(f"momentum must be in [0, 1) and bias_lr positive; got {self.momentum}, {self.bias_lr}")

    @property
    def network(self) -> Network:
        """The network this run trains (its fields checked by ``models.Network``)."""
        return Network(**{f.name: getattr(self, f.name) for f in dataclasses.fields(Network)})

    @classmethod
    def from_dict(cls, saved: dict) -> "TrainConfig":
        """A saved configuration; fields added to the class over time take their defaults when absent. An
        absent protocol field (``REQUIRED_FIELDS``) is an error: filling in its default would make the file
        say something it does not say."""
        known = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(saved, dict):
            raise TypeError(f"a configuration is a JSON object of fields, not {type(saved).__name__}")
        absent = [name for name in REQUIRED_FIELDS if name not in saved]
        if absent:
            raise ValueError(f"the field(s) {', '.join(sorted(absent))} are missing")
        return cls(**{k: v for k, v in saved.items() if k in known})

    def identity(self) -> dict:
        """What was trained: every field but those that only say how it was computed (``COMPUTE_FIELDS``),
        and those added later (``ADDED_FIELDS``) while they keep their default, so that a measurement
        stored under an older identity stays valid."""
        return {k: v for k, v in dataclasses.asdict(self).items()
                if k not in COMPUTE_FIELDS and not (k in ADDED_FIELDS and v == ADDED_FIELDS[k])}

    def differences(self, other: "TrainConfig") -> dict:
        """{field: (self's value, other's value)} for the fields of what was trained that differ."""
        a, b = dataclasses.asdict(self), dataclasses.asdict(other)
        return {k: (a[k], b[k]) for k in a if k not in COMPUTE_FIELDS and a[k] != b[k]}

    @property
    def eval_split(self) -> str:
        return "val" if self.validation else "test"

    def default_name(self) -> str:
        name = self.model + ("_author_head" if self.head == "author" else "")
        return name if self.seed == 0 else f"{name}_seed{self.seed}"


# ---------------------------------------------------------------- random states

def _rng_state(shuffle: torch.Generator) -> dict:
    state = {"torch": torch.get_rng_state(), "shuffle": shuffle.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state: dict, shuffle: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    shuffle.set_state(state["shuffle"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------- weight averaging

class Lookahead:
    """Lookahead weight averaging as in the airbench trainers. From ``start`` (a fraction of training) on,
    every ``every`` steps the slow weights move towards the trained ones by 1 - rho and the trained ones
    are reset to them. rho = base**every * progress**3 grows towards the end, so the final steps are
    averaged most. At the end of each epoch the model takes the slow weights (for evaluation)."""

    def __init__(self, start: float = 0.3, every: int = 5, base: float = 0.95):
        self.start, self.every, self.base = start, every, base
        self.slow: dict | None = None

    def step(self, model: torch.nn.Module, step: int, total: int) -> None:
        progress = step / total
        if progress < self.start or step % self.every:
            return
        if self.slow is None:
            self.slow = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}
            return
        rho = self.base ** self.every * progress ** 3
        self._pull(model, 1 - rho)

    def end_epoch(self, model: torch.nn.Module) -> None:
        if self.slow is not None:
            self._pull(model, 0.0)

    @torch.no_grad()
    def _pull(self, model: torch.nn.Module, weight: float) -> None:
        for name, value in model.state_dict().items():
            if name in self.slow:
                self.slow[name].lerp_(value, weight)
                value.copy_(self.slow[name])


# ---------------------------------------------------------------- the run

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


def make_model(config: TrainConfig) -> torch.nn.Module:
    model = config.network.build()
    if config.whiten:
        model.conv0.weight.requires_grad_(False)   # set from the data by fit (whiten_stem), then kept
    return model


def make_optimizer(config: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """The report's Adam, or SGD with Nesterov momentum; ``weight_decay`` is an L2 term in both.

    With ``bias_lr`` != 1 the BatchNorm shifts form a second group whose learning rate is multiplied
    and whose weight decay is divided by it, so that both groups decay by the same factor per step
    (as in airbench, where the shifts learn 64 times faster). Frozen parameters are left out.
    """
    shifts = {id(m.bias) for m in batchnorm_layers(model) if m.bias is not None}
    if config.bias_lr == 1:
        shifts = set()
    rest, fast = [], []
    for p in model.parameters():
        if p.requires_grad:
            (fast if id(p) in shifts else rest).append(p)
    groups = [{"params": rest}]
    if fast:
        groups.append({"params": fast, "lr": config.lr * config.bias_lr,
                       "weight_decay": config.weight_decay / config.bias_lr})
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=True,
                               weight_decay=config.weight_decay)
    return torch.optim.Adam(groups, lr=config.lr, weight_decay=config.weight_decay)


def triangle(progress: float, start: float = 0.2, peak_at: float = 0.23, end: float = 0.07) -> float:
    """The learning-rate factor of airbench's schedule: linear from ``start`` up to 1 at ``peak_at`` of
    training, then linear down to ``end``."""
    if progress < peak_at:
        return start + (1 - start) * progress / peak_at
    return 1 + (end - 1) * (progress - peak_at) / (1 - peak_at)


def make_schedule(config: TrainConfig, opt: torch.optim.Optimizer, steps_per_epoch: int):
    """A per-step learning-rate schedule, or None for the report's constant rate."""
    total = config.epochs * steps_per_epoch
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[g["lr"] for g in opt.param_groups],
                                                   total_steps=total, cycle_momentum=False)
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    if config.schedule == "triangle":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: triangle(min(step / total, 1.0)))
    return None


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


def _check_config(path: Path, config: TrainConfig) -> TrainConfig | None:
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


def _epoch_line(row: dict, split: str, total: int) -> str:
    loss, acc = row[f"{split}_loss"], row[f"{split}_acc"]
    evaluated = (f"{split} loss {loss:.4f} acc {acc:6.2%}" if acc == acc   # NaN: not evaluated this epoch
                 else f"{split} not evaluated".ljust(len(split) + 25))
    return (f"epoch {row['epoch']:>3}/{total}  train loss {row['train_loss']:.4f} acc {row['train_acc']:6.2%}  "
            f"{evaluated}  {row['seconds']:6.1f} s  {row['images_per_s']:6.0f} img/s")


def fit(config: TrainConfig, data: D.CIFAR10, run_name: str | None = None, results_dir="results",
        device: str | None = None, progress: bool | None = None, verbose: bool = True, replay: bool = False) -> Run:
    """Train ``config`` on ``data`` into ``results_dir/run_name``, resuming if a checkpoint is there.

    A finished run of the same configuration is loaded, not retrained, with one line (``replay``: its
    epochs too). ``progress`` shows a per-batch bar that disappears at the end of each epoch (default:
    on unless TQDM_DISABLE is set). Nothing is written before the configuration, the data sizes and the
    model have been checked, and only one process at a time trains into a folder.
    """
    dev = pick_device(device)
    config = dataclasses.replace(config, precision=resolve_precision(config.precision, dev))
    path = project_path(results_dir) / (run_name or config.default_name())
    _check_config(path, config)
    if (path / "metrics.json").exists():
        return _load_finished(path, config, verbose, replay)
    train, test = image_sets(config, data)            # sizes checked before anything is written
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot create the results folder {shown_path(path)} ({exc.strerror}); "
                                 "choose a results_dir you can write to") from None
    with FolderLock(path):
        saved = _check_config(path, config)       # again, now that no one else can write here
        if (path / "metrics.json").exists():
            return _load_finished(path, config, verbose, replay, locked=True)
        return _train(config, saved, data, train, test, path, dev, progress, verbose)


def refresh_images(train: D.ImageSet, device, images: int = REFRESH_IMAGES) -> torch.Tensor:
    """The normalised training images on which ``bn_refresh`` measures BatchNorm statistics: a class-balanced
    subset of ``images`` (all of them for a smaller split), the same ones for every run of that split."""
    chosen = D.balanced_subset(train, images) if images < len(train) else train
    return D.to_device(chosen, device)[0]


def model_to_evaluate(model: torch.nn.Module, config: TrainConfig, images: torch.Tensor | None) -> torch.nn.Module:
    """The model as ``config`` evaluates it: with ``bn_refresh``, a copy whose BatchNorm statistics are measured
    again on ``images`` with dropout off (Li et al., CVPR 2019: BatchNorm after dropout records the variance of
    thinned activations, which evaluation never sees). The copy leaves training untouched: in training mode
    BatchNorm normalises by each batch's own statistics, so a run trains identically with or without it."""
    return refresh_batchnorm(model, images, precision=config.precision) if config.bn_refresh else model


def _load_finished(path: Path, config: TrainConfig, verbose: bool, replay: bool, locked: bool = False) -> Run:
    run = load_run(path)
    diff = run.config.differences(config)
    if diff:      # config.json may be missing; metrics.json still says what was trained
        raise RunConflictError(f"{shown_path(path)} holds a finished run of another configuration "
                               f"({', '.join(f'{k}: {a!r} there, {b!r} now' for k, (a, b) in diff.items())}). It is "
                               "kept as it is: train this configuration under another run name or results folder.")
    try:          # a kill after the run finished, before it tidied up: finish that if no one else is here
        if locked:
            (path / "checkpoint.pt").unlink(missing_ok=True)
        elif (path / "checkpoint.pt").exists() or (path / ".lock").exists():
            with FolderLock(path):
                (path / "checkpoint.pt").unlink(missing_ok=True)
    except (RunBusyError, OSError):
        pass      # the run is loaded; tidying up can wait
    if verbose:
        split = run.config.eval_split
        h = run.history
        note = (f"; trained in {run.config.precision}, this machine computes in {config.precision}"
                if run.config.precision != config.precision else "")
        best = h[f"{split}_acc"].max()
        accuracy = (f"best {split} accuracy {best:.2%}, final {h[f'{split}_acc'].iloc[-1]:.2%}"
                    if run.config.eval_each_epoch else
                    f"{split} accuracy {h[f'{split}_acc'].iloc[-1]:.2%}, evaluated once after the last epoch")
        print(f"{path.name}: finished run loaded from {shown_path(path)} ({len(h)} epochs): {accuracy}{note}")
        if replay:
            for row in h.to_dict("records"):
                print(_epoch_line(row, split, run.config.epochs))
    return run


def _load_checkpoint(ckpt_file: Path, dev: torch.device) -> dict:
    try:
        ckpt = torch.load(ckpt_file, map_location="cpu", weights_only=True)   # RNG states must stay on the CPU
        if not isinstance(ckpt, dict) or not {"config", "model", "optimizer", "rng", "history"} <= set(ckpt):
            raise ValueError("not a checkpoint of this project")
        return ckpt
    except Exception as exc:      # torch raises many types for a torn or foreign file
        raise RunDataError(
            f"{shown_path(ckpt_file)} cannot be read ({type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}). "
            "It holds only the unfinished part of this run: delete it to train this run again from its first "
            "epoch (finished runs are not affected).") from None


def _write_history(path: Path, history: list[dict]) -> None:
    atomic_write(path / "history.csv", lambda f: f.write(pd.DataFrame(history).to_csv(index=False).encode()))


def _train(config: TrainConfig, saved: TrainConfig | None, data: D.CIFAR10, train: D.ImageSet, test: D.ImageSet,
           path: Path, dev: torch.device, progress: bool | None, verbose: bool) -> Run:
    from tqdm.auto import tqdm

    split = config.eval_split
    channels_last = dev.type != "mps"
    x_train, y_train = D.to_device(train, dev, channels_last)
    x_test, y_test = D.to_device(test, dev, channels_last)
    x_refresh = refresh_images(train, dev) if config.bn_refresh else None

    torch.manual_seed(config.seed)
    random.seed(config.seed)
    shuffle = torch.Generator().manual_seed(config.seed)
    model = make_model(config).to(dev)            # checks the model options
    if config.whiten:
        whiten_stem(model, x_train[:5000])
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = make_optimizer(config, model)
    n_batches = -(-len(y_train) // config.batch_size)
    schedule = make_schedule(config, opt, n_batches)
    lookahead = Lookahead() if config.lookahead else None
    history: list[dict] = []
    changes: list[dict] = []
    code = git_state()                             # the code that starts (or resumes) this run, not the one that ends it
    first_code = code
    ckpt_file = path / "checkpoint.pt"
    if ckpt_file.exists():
        ckpt = _load_checkpoint(ckpt_file, dev)
        try:
            before = TrainConfig.from_dict(ckpt["config"])
        except (TypeError, ValueError) as exc:
            raise RunDataError(f"{shown_path(ckpt_file)} holds no valid configuration ({exc}). It is kept as it is: "
                               "train under another run name, or move the checkpoint away to start afresh.") from None
        if before.differences(config):
            raise RunConflictError(f"{shown_path(ckpt_file)} was made with a different configuration "
                                   f"({before.differences(config)}); train this one under another run name.")
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        if schedule is not None:
            schedule.load_state_dict(ckpt["schedule"])
        _restore_rng(ckpt["rng"], shuffle)
        if lookahead is not None and ckpt.get("lookahead") is not None:
            lookahead.slow = {k: v.to(dev) for k, v in ckpt["lookahead"].items()}
        history = [dict(row) for row in ckpt["history"]]
        changes = list(ckpt.get("changes") or [])
        first_code = ckpt.get("code")             # None for a checkpoint written before runs recorded their code
        if code != first_code and len(history) < config.epochs:
            changes.append({"after_epoch": len(history), "code": code})
        _write_history(path, history)            # a kill may have come between the checkpoint and this file
        if len(history) == config.epochs:       # killed after the last epoch: nothing is computed any more
            config = before
        if before.precision != config.precision:
            changes.append({"after_epoch": len(history), "precision": [before.precision, config.precision],
                            "device": str(dev)})
        if verbose:
            moved = (f" Epochs 1-{len(history)} ran in {before.precision}, the rest runs in {config.precision} on "
                     f"{dev}: the result will be close to, not bit-identical with, an uninterrupted run."
                     if before.precision != config.precision else "")
            print(f"{path.name}: resuming after epoch {len(history)} of {config.epochs} from "
                  f"{shown_path(ckpt_file)}.{moved}")
    if saved is None or not history:      # a fresh start says how it trains, whatever an earlier attempt wrote
        save_json(dataclasses.asdict(config), path / "config.json")
    for stale in path.glob("*.tmp"):              # left by a process killed while it wrote; we hold the lock
        stale.unlink(missing_ok=True)

    # tqdm's notebook bar ignores TQDM_DISABLE, so honour it here (papermill runs set it)
    show_bar = progress if progress is not None else not os.environ.get("TQDM_DISABLE")
    env = environment(dev)
    if verbose and not history:
        print(f"{path.name}: {config.model} ({count_parameters(model):,} parameters), {len(train):,} train / "
              f"{len(test):,} {split} images, {config.epochs} epoch{'s' if config.epochs != 1 else ''}, batch "
              f"{config.batch_size}, {config.precision} on {dev} with {env['threads']} thread{'s' if env['threads'] != 1 else ''}")
    for epoch in range(len(history) + 1, config.epochs + 1):
        start = time.perf_counter()
        model.train()
        loss_sum = torch.zeros((), device=dev)
        correct = torch.zeros((), device=dev, dtype=torch.int64)
        bar = tqdm(D.batches(x_train, y_train, config.batch_size, shuffle), total=n_batches, leave=False,
                   desc=f"epoch {epoch}", disable=not show_bar)
        for i, (xb, yb) in enumerate(bar, start=1):
            if config.augment == "flip_crop":
                xb = D.flip_and_crop(xb, shuffle, pad=config.crop_pad)
            with autocast(dev, config.precision):
                logits = model(xb)
            loss = F.cross_entropy(logits.float(), yb, label_smoothing=config.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if schedule is not None:
                schedule.step()
            if lookahead is not None:
                lookahead.step(model, (epoch - 1) * n_batches + i, config.epochs * n_batches)
            loss_sum += loss.detach() * len(yb)
            correct += (logits.argmax(1) == yb).sum()
        if lookahead is not None:
            lookahead.end_epoch(model)
        train_seconds = time.perf_counter() - start
        train_loss = loss_sum.item() / len(y_train)
        _stop_if_diverged(train_loss, "training", epoch, config, path)
        if config.eval_each_epoch or epoch == config.epochs:
            ev = evaluate(model_to_evaluate(model, config, x_refresh), x_test, y_test, precision=config.precision,
                          tta_flip=config.tta_flip, tta_shift=config.tta_shift)
            _stop_if_diverged(ev["loss"], split, epoch, config, path)
        else:
            ev = {"loss": float("nan"), "accuracy": float("nan")}
        seconds = time.perf_counter() - start
        row = {"epoch": epoch, "train_loss": train_loss,
               "train_acc": correct.item() / len(y_train),
               f"{split}_loss": ev["loss"], f"{split}_acc": ev["accuracy"],
               "seconds": seconds, "images_per_s": len(y_train) / train_seconds}
        history.append(row)
        ckpt = {"config": dataclasses.asdict(config), "model": model.state_dict(), "optimizer": opt.state_dict(),
                "schedule": schedule.state_dict() if schedule is not None else None,
                "rng": _rng_state(shuffle), "history": history, "changes": changes,
                "lookahead": lookahead.slow if lookahead is not None else None, "code": first_code}
        atomic_write(ckpt_file, lambda f: torch.save(ckpt, f))
        _write_history(path, history)
        if verbose:
            print(_epoch_line(row, split, config.epochs), flush=True)

    hist = pd.DataFrame(history)
    model = model_to_evaluate(model, config, x_refresh)     # the weights as evaluated
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_write(path / "model.pt", lambda f: torch.save(state, f))
    best = hist.loc[hist[f"{split}_acc"].idxmax()]
    metrics = {
        "config": dataclasses.asdict(config), "environment": env, "data": data.source,
        "official_data": data.official, "parameters": count_parameters(model),
        "train_images": len(train), f"{split}_images": len(test),
        f"best_{split}_acc": float(best[f"{split}_acc"]), "best_epoch": int(best["epoch"]),
        f"final_{split}_acc": float(hist[f"{split}_acc"].iloc[-1]),
        f"lowest_{split}_loss_epoch": int(hist.loc[hist[f"{split}_loss"].idxmin(), "epoch"]),
        "train_seconds": float(hist["seconds"].sum()),
        "code": first_code,
        "finished": True,
    }
    if changes:
        metrics["changes_on_resume"] = changes
    save_json(metrics, path / "metrics.json")
    ckpt_file.unlink(missing_ok=True)
    model.cpu()
    return Run(path, config, hist, metrics, model)


def _stop_if_diverged(loss: float, what: str, epoch: int, config: TrainConfig, path: Path) -> None:
    if math.isfinite(loss):
        return
    kept = (f"the checkpoint after epoch {epoch - 1} is kept" if epoch > 1 else
            "no epoch finished; only its config.json was written")
    raise DivergedError(
        f"{shown_path(path)}: the {what} loss is {loss} in epoch {epoch}: training diverged with lr={config.lr:g} "
        f"and stopped before saving this epoch ({kept}; no result was written). Train again with a lower "
        "learning rate (lr) under another run name.")
