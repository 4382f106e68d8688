"""Train one configuration into its results folder, resumably: ``fit``.

``fit(TrainConfig(model="fc"), data)`` runs the author's protocol by default: batch 64, Adam (lr 1e-3,
weight decay 1e-6), cross-entropy, 100 epochs, the whole test set evaluated after every epoch. Each
epoch is ``loop.train_one_epoch`` then ``loop.evaluate``; it appends one row to the history and prints
it as one line. Around the loop, this module keeps a run safe to stop and restart:

* ``config.json`` is written first; a folder never holds two configurations. Only what was trained
  counts: ``precision`` says how a run was computed, so a bf16 run loads (and resumes, saying so) on a
  machine that computes in fp32.
* ``.lock`` is held while a process trains into the folder; a second process is refused.
* ``checkpoint.pt`` (model, optimiser, every RNG state and the history after the last finished epoch)
  is replaced atomically each epoch and deleted once the run is done. An interrupted run resumes from it
  and ends bit-for-bit where an uninterrupted run would have (same device and thread count).
* ``history.csv``, ``metrics.json`` and, when finished, ``model.pt``. ``metrics.json`` names the code
  that started the run (git commit, and whether ``helpers/`` or ``scripts/`` had uncommitted changes),
  the machine, and what changed on a resume (precision, device, code).
"""
from __future__ import annotations

import dataclasses
import math
import os
import random
import time
from pathlib import Path

import pandas as pd
import torch

from . import data as D
from .config import TrainConfig
from .device import environment, pick_device, resolve_precision
from .files import FolderLock, RunBusyError, atomic_write, git_state, project_path, save_json, shown_path
from .loop import evaluate, train_one_epoch
from .models import count_parameters, whiten_stem
from .recipe import Lookahead, make_model, make_optimizer, make_schedule, model_to_evaluate, refresh_images
from .runs import DivergedError, Run, RunConflictError, RunDataError, check_config, image_sets, load_run


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
    check_config(path, config)
    if (path / "metrics.json").exists():
        return _load_finished(path, config, verbose, replay)
    train, test = image_sets(config, data)            # sizes checked before anything is written
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot create the results folder {shown_path(path)} ({exc.strerror}); "
                                 "choose a results_dir you can write to") from None
    with FolderLock(path):
        saved = check_config(path, config)       # again, now that no one else can write here
        if (path / "metrics.json").exists():
            return _load_finished(path, config, verbose, replay, locked=True)
        return _train(config, saved, data, train, test, path, dev, progress, verbose)


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
    step, total_steps = len(history) * n_batches, config.epochs * n_batches

    def after_step():                             # the recipe's extras after every update
        nonlocal step
        step += 1
        if schedule is not None:
            schedule.step()
        if lookahead is not None:
            lookahead.step(model, step, total_steps)

    augment = (lambda xb: D.flip_and_crop(xb, shuffle, pad=config.crop_pad)) if config.augment == "flip_crop" else None
    for epoch in range(len(history) + 1, config.epochs + 1):
        start = time.perf_counter()
        batches = tqdm(D.batches(x_train, y_train, config.batch_size, shuffle), total=n_batches, leave=False,
                       desc=f"epoch {epoch}", disable=not show_bar)
        train_loss, train_acc = train_one_epoch(model, batches, opt, config.precision, config.label_smoothing,
                                                augment, after_step)
        if lookahead is not None:
            lookahead.end_epoch(model)
        train_seconds = time.perf_counter() - start
        _stop_if_diverged(train_loss, "training", epoch, config, path)
        if config.eval_each_epoch or epoch == config.epochs:
            ev = evaluate(model_to_evaluate(model, config, x_refresh), x_test, y_test, precision=config.precision,
                          tta_flip=config.tta_flip, tta_shift=config.tta_shift)
            _stop_if_diverged(ev["loss"], split, epoch, config, path)
        else:
            ev = {"loss": float("nan"), "accuracy": float("nan")}
        seconds = time.perf_counter() - start
        row = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc,
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
