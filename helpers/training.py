"""Train one model with the report's protocol, resumably.

``fit(TrainConfig(model="fc"), data)`` runs the author's protocol by default:
batch 64, Adam (lr 1e-3, weight decay 1e-6), cross-entropy, 100 epochs, the
whole test set evaluated after every epoch. Each epoch appends one row to the
history (train loss and accuracy, test loss and accuracy, seconds, images per
second) and prints it as one line.

A run lives in ``results/<run name>/``:

* ``config.json``: the configuration; a folder never holds two configurations.
* ``checkpoint.pt``: model, optimiser, every RNG state and the history after the
  last finished epoch, replaced atomically each epoch and deleted once the run
  is done. An interrupted run resumes from it and ends bit-for-bit where an
  uninterrupted run would have (same device and thread count).
* ``history.csv``, ``metrics.json`` and, when finished, ``model.pt`` (weights).
"""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import random
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

from . import data as D
from .evaluation import autocast, evaluate
from .models import batchnorm_layers, build_model, count_parameters, whiten_stem



COMPACT_DEFAULTS = {"dirac": False, "bn_scale": True, "bn_momentum": 0.1, "logit_scale": 1.0}


class RunConflictError(RuntimeError):
    """The results folder holds a run made with a different configuration."""


@dataclass(frozen=True)
class TrainConfig:
    model: str = "fc"
    head: str = "linear"            # "author": the 256-logit output of models 2 and 3
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
    batchnorm: bool = False         # BatchNorm2d after every convolution
    width: float = 1.0              # channel multiplier
    convs: int = 7                  # 5 or 6: drop the last convolutions of an average-pooling model
    optimizer: str = "adam"         # adam | sgd (Nesterov)
    momentum: float = 0.9           # sgd's momentum
    bias_lr: float = 1.0            # learning-rate multiplier for BatchNorm shifts (weight decay divided by it)
    whiten: bool = False            # compact model: a frozen 2x2 stem that whitens image patches
    lookahead: bool = False         # average the weights of the last steps (from 30% of training on)
    dirac: bool = False             # compact model: 3x3 convolutions start as partly the identity
    bn_scale: bool = True           # compact model: False fixes the BatchNorm scales at 1
    bn_momentum: float = 0.1        # compact model: weight of each batch in BatchNorm's running statistics
    logit_scale: float = 1.0        # compact model: multiply the logits by this
    augment: str = "none"           # none | flip_crop (random mirror and a crop of the image padded by crop_pad)
    crop_pad: int = 4               # how far flip_crop may move the image, in pixels
    schedule: str = "constant"      # constant | onecycle | cosine | triangle (per step)
    label_smoothing: float = 0.0
    tta_flip: bool = False          # evaluate on each image and its mirror image
    tta_shift: int = 0              # >0: also on copies moved by this many pixels (up-left, down-right)
    eval_each_epoch: bool = True    # False: evaluate once, after the last epoch (a final model and its test set)

    def __post_init__(self):
        checks = {"augment": ("none", "flip_crop"), "schedule": ("constant", "onecycle", "cosine", "triangle"),
                  "precision": ("fp32", "bf16", "auto"), "optimizer": ("adam", "sgd")}
        for field, allowed in checks.items():
            if getattr(self, field) not in allowed:
                raise ValueError(f"{field} must be one of {', '.join(allowed)}; got {getattr(self, field)!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be positive; got {self.epochs} and {self.batch_size}")
        if self.whiten and self.model != "compact":
            raise ValueError("whiten needs model='compact' (the only model with a 2x2 patch stem)")
        changed = [k for k, v in self.compact_options().items() if v != COMPACT_DEFAULTS[k]]
        if changed and self.model != "compact":
            raise ValueError(f"{', '.join(changed)} apply to model='compact' only")
        if not 0 <= self.momentum < 1 or self.bias_lr <= 0:
            raise ValueError(f"momentum must be in [0, 1) and bias_lr positive; got {self.momentum}, {self.bias_lr}")

    def compact_options(self) -> dict:
        """The options that only the compact network takes (see models.build_compact)."""
        return {k: getattr(self, k) for k in COMPACT_DEFAULTS}

    @classmethod
    def from_dict(cls, saved: dict) -> "TrainConfig":
        """A saved configuration; fields added to the class since it was saved take their defaults."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in saved.items() if k in known})

    @property
    def eval_split(self) -> str:
        return "val" if self.validation else "test"

    def default_name(self) -> str:
        name = self.model + ("_author_head" if self.head == "author" else "")
        return name if self.seed == 0 else f"{name}_seed{self.seed}"


# ---------------------------------------------------------------- device and precision

def pick_device(device: str | None = None) -> torch.device:
    """The given device, else cuda, then mps, then cpu."""
    if device:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_has_native_bf16() else "fp32"
    return "fp32"


def environment(device: torch.device) -> dict:
    """What a reader needs to trust a run: versions, device, threads."""
    info = {"python": platform.python_version(), "torch": torch.__version__, "device": str(device),
            "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def print_setup(parameters: dict, data: "D.CIFAR10 | None" = None, device: str | None = None) -> None:
    """What a reader needs to trust a notebook: versions, device, threads, data source, parameters."""
    dev = pick_device(device)
    for key, value in environment(dev).items():
        print(f"{key:>12}: {value}")
    if data is not None:
        print(f"{'data':>12}: {data.source}")
        if not data.official:
            print(f"{'':>12}  a JPEG (quality 75) re-encoding of CIFAR-10: expect accuracy up to ~2 points lower")
    for key, value in parameters.items():
        print(f"{key:>12} = {value!r}")


def overfit_one_batch(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                      steps: int = 150, lr: float = 1e-3) -> list[float]:
    """Train on one fixed batch (dropout off) and return the loss per step: a working model drives it to ~0."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.eval()   # no dropout: the point is to check that gradients flow, not to regularise
    losses = []
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(images), labels)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


# ---------------------------------------------------------------- atomic files

def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_json(obj, path: Path) -> None:
    _atomic_write(path, lambda f: f.write(json.dumps(obj, indent=2).encode()))


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


def load_run(path) -> Run:
    """A finished run from its results folder, with its final weights loaded on the CPU."""
    path = D.project_path(path)
    metrics_file = path / "metrics.json"
    if not metrics_file.exists():
        raise FileNotFoundError(f"{path} holds no finished run (no metrics.json); train it first")
    metrics = json.loads(metrics_file.read_text())
    config = TrainConfig.from_dict(metrics["config"])
    model = make_model(config)
    if (path / "model.pt").exists():
        model.load_state_dict(torch.load(path / "model.pt", map_location="cpu", weights_only=True))
    return Run(path, config, pd.read_csv(path / "history.csv"), metrics, model)


def make_model(config: TrainConfig) -> torch.nn.Module:
    extra = config.compact_options() if config.model == "compact" else {}
    model = build_model(config.model, config.head, batchnorm=config.batchnorm, width=config.width,
                        convs=config.convs, **extra)
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


def splits(config: TrainConfig, data: D.CIFAR10) -> tuple[D.Split, D.Split]:
    """The (train, evaluation) images a run uses: optional validation hold-out, optional quick-run subsets."""
    train, test = data.train, data.test
    if config.validation:
        train, test = D.hold_out(train, config.validation)
    if config.train_subset:
        train = D.balanced_subset(train, config.train_subset)
    if config.test_subset:
        test = D.balanced_subset(test, config.test_subset)
    return train, test


def _check_config(path: Path, config: TrainConfig) -> None:
    saved_file = path / "config.json"
    if not saved_file.exists():
        return
    saved = dataclasses.asdict(TrainConfig.from_dict(json.loads(saved_file.read_text())))
    now = dataclasses.asdict(config)
    diff = {k: (saved.get(k), v) for k, v in now.items() if saved.get(k) != v}
    if diff:
        changes = ", ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in diff.items())
        raise RunConflictError(
            f"{path} holds a run with a different configuration ({changes}). "
            "Choose another run name (or results folder), or delete that folder to start over.")


def _epoch_line(row: dict, split: str, total: int) -> str:
    loss, acc = row[f"{split}_loss"], row[f"{split}_acc"]
    evaluated = (f"{split} loss {loss:.4f} acc {acc:6.2%}" if acc == acc   # NaN: not evaluated this epoch
                 else f"{split} not evaluated".ljust(len(split) + 25))
    return (f"epoch {row['epoch']:>3}/{total}  train loss {row['train_loss']:.4f} acc {row['train_acc']:6.2%}  "
            f"{evaluated}  {row['seconds']:6.1f} s  {row['images_per_s']:6.0f} img/s")


def fit(config: TrainConfig, data: D.CIFAR10, run_name: str | None = None, results_dir="results",
        device: str | None = None, progress: bool | None = None, verbose: bool = True, replay: bool = True) -> Run:
    """Train ``config`` on ``data`` into ``results_dir/run_name``, resuming if a checkpoint is there.

    A finished run of the same configuration is loaded, not retrained (``replay``: print its epochs
    again, else one line). ``progress``
    shows a per-batch bar that disappears at the end of each epoch (default: on
    unless TQDM_DISABLE is set).
    """
    from tqdm.auto import tqdm

    dev = pick_device(device)
    config = dataclasses.replace(config, precision=resolve_precision(config.precision, dev))
    path = D.project_path(results_dir) / (run_name or config.default_name())
    _check_config(path, config)
    split = config.eval_split
    if (path / "metrics.json").exists() and (path / "model.pt").exists():
        run = load_run(path)
        if verbose:
            print(f"{path.name}: finished run found in {D.shown_path(path)}; loading it instead of training again.")
            for row in run.history.to_dict("records")[(0 if replay else -1):]:
                print(_epoch_line(row, split, config.epochs))
        return run
    path.mkdir(parents=True, exist_ok=True)
    save_json(dataclasses.asdict(config), path / "config.json")

    train, test = splits(config, data)
    channels_last = dev.type != "mps"
    x_train, y_train = D.to_device(train, dev, channels_last)
    x_test, y_test = D.to_device(test, dev, channels_last)

    torch.manual_seed(config.seed)
    random.seed(config.seed)
    shuffle = torch.Generator().manual_seed(config.seed)
    model = make_model(config).to(dev)
    if config.whiten:
        whiten_stem(model, x_train[:5000])
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = make_optimizer(config, model)
    n_batches = -(-len(y_train) // config.batch_size)
    schedule = make_schedule(config, opt, n_batches)
    lookahead = Lookahead() if config.lookahead else None
    history: list[dict] = []
    ckpt_file = path / "checkpoint.pt"
    if ckpt_file.exists():
        ckpt = torch.load(ckpt_file, map_location=dev, weights_only=False)
        if dataclasses.asdict(TrainConfig.from_dict(ckpt["config"])) != dataclasses.asdict(config):
            raise RunConflictError(f"{ckpt_file} was made with a different configuration; "
                                   "delete it or choose another run name.")
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        if schedule is not None:
            schedule.load_state_dict(ckpt["schedule"])
        _restore_rng(ckpt["rng"], shuffle)
        if lookahead is not None:
            lookahead.slow = ckpt.get("lookahead")
        history = ckpt["history"]
        if verbose:
            print(f"{path.name}: resuming after epoch {len(history)} from {D.shown_path(ckpt_file)}; "
                  "the epochs so far:")
            for row in history:
                print(_epoch_line(row, split, config.epochs))

    # tqdm's notebook bar ignores TQDM_DISABLE, so honour it here (papermill runs set it)
    show_bar = progress if progress is not None else not os.environ.get("TQDM_DISABLE")
    env = environment(dev)
    if verbose and not history:
        print(f"{path.name}: {config.model} ({count_parameters(model):,} parameters), {len(train):,} train / "
              f"{len(test):,} {split} images, {config.epochs} epochs, batch {config.batch_size}, "
              f"{config.precision} on {dev} with {env['threads']} threads")
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
        if config.eval_each_epoch or epoch == config.epochs:
            ev = evaluate(model, x_test, y_test, precision=config.precision, tta_flip=config.tta_flip,
                          tta_shift=config.tta_shift)
        else:
            ev = {"loss": float("nan"), "accuracy": float("nan")}
        seconds = time.perf_counter() - start
        row = {"epoch": epoch, "train_loss": loss_sum.item() / len(y_train),
               "train_acc": correct.item() / len(y_train),
               f"{split}_loss": ev["loss"], f"{split}_acc": ev["accuracy"],
               "seconds": seconds, "images_per_s": len(y_train) / train_seconds}
        history.append(row)
        ckpt = {"config": dataclasses.asdict(config), "model": model.state_dict(), "optimizer": opt.state_dict(),
                "schedule": schedule.state_dict() if schedule is not None else None,
                "rng": _rng_state(shuffle), "history": history,
                "lookahead": lookahead.slow if lookahead is not None else None}
        _atomic_write(ckpt_file, lambda f: torch.save(ckpt, f))
        _atomic_write(path / "history.csv", lambda f: f.write(pd.DataFrame(history).to_csv(index=False).encode()))
        if verbose:
            print(_epoch_line(row, split, config.epochs), flush=True)

    hist = pd.DataFrame(history)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    _atomic_write(path / "model.pt", lambda f: torch.save(state, f))
    best = hist.loc[hist[f"{split}_acc"].idxmax()]
    metrics = {
        "config": dataclasses.asdict(config), "environment": env, "data": data.source,
        "official_data": data.official, "parameters": count_parameters(model),
        "train_images": len(train), f"{split}_images": len(test),
        f"best_{split}_acc": float(best[f"{split}_acc"]), "best_epoch": int(best["epoch"]),
        f"final_{split}_acc": float(hist[f"{split}_acc"].iloc[-1]),
        f"lowest_{split}_loss_epoch": int(hist.loc[hist[f"{split}_loss"].idxmin(), "epoch"]),
        "train_seconds": float(hist["seconds"].sum()),
        "finished": True,
    }
    save_json(metrics, path / "metrics.json")
    ckpt_file.unlink(missing_ok=True)
    model.cpu()
    return Run(path, config, hist, metrics, model)
