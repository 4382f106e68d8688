"""Shared code of the CIFAR-10 report: every notebook imports from here.

What a student reads first (the lesson): ``models`` (the three networks as ``nn.Module`` classes, and
the compact one), ``loop`` (one epoch of training, evaluation), ``data`` (load, check, split, batch),
``evaluation`` (confusion matrix, per-class accuracy), ``architecture`` (layer tables) and ``plots``.

How runs are made and kept: ``config`` (``TrainConfig``, every field checked), ``recipe`` (optimiser,
schedules, weight averaging), ``training`` (``fit``: the loop with checkpoints, resume and a lock),
``runs`` (a finished run read back and checked), ``files`` (paths, atomic writes, caches, the git state),
``device`` (device, precision, the setup banner), ``sanity`` (initial loss, one-batch checks).

The report around them: ``facts`` (every stated number with its unit and sources, and the one formatter;
``say`` shows a text in a notebook), ``results`` (finished runs as tables and prose), ``summary`` (the
report as a whole: the README's first screen, the paper's facts, notebook 06's causes), ``paper`` (the
written report), ``tables`` and ``wording`` (how tables, code and the text
templates in ``report/text/`` are shown), ``studies`` (one module per follow-up study, and their
figures), ``explain`` (class activation maps, Grad-CAM) and ``calibration`` (reliability, temperature
scaling).
"""
from . import (architecture, calibration, config, data, device, evaluation, explain, facts, files, loop, models, paper,
               plots, recipe, results, runs, sanity, studies, summary, tables, training, wording)
from .config import TrainConfig
from .data import (CLASSES, CIFAR10, DataError, balanced_subset, channel_stats, examples_per_class, hold_out,
                   load_cifar10, normalize)
from .device import pick_device, print_setup
from .evaluation import author_loss_scale, confusion_matrix, per_class_accuracy
from .facts import say
from .files import RunBusyError
from .loop import evaluate, predict, train_one_epoch
from .models import (COLORS, MARKERS, MODELS, VARIANTS, AvgPoolDropoutNet, AvgPoolNet, CompactNet, FullyConnectedNet,
                     Network, build_model, count_parameters)
from .architecture import layer_table
from .runs import DivergedError, Run, RunConflictError, RunDataError, load_run
from .sanity import overfit_one_batch
from .training import fit

__all__ = [
    "architecture", "calibration", "config", "data", "device", "evaluation", "explain", "facts", "files", "loop", "models", "paper", "plots",
    "recipe", "results", "runs", "sanity", "studies", "summary", "tables", "training", "wording",
    "TrainConfig",
    "CLASSES", "CIFAR10", "DataError", "balanced_subset", "channel_stats", "examples_per_class", "hold_out",
    "load_cifar10", "normalize",
    "pick_device", "print_setup",
    "author_loss_scale", "confusion_matrix", "per_class_accuracy",
    "RunBusyError", "say",
    "evaluate", "predict", "train_one_epoch",
    "COLORS", "MARKERS", "MODELS", "VARIANTS", "AvgPoolDropoutNet", "AvgPoolNet", "CompactNet", "FullyConnectedNet",
    "Network", "build_model", "count_parameters", "layer_table",
    "DivergedError", "Run", "RunConflictError", "RunDataError", "load_run",
    "overfit_one_batch", "fit",
]
