"""Shared code of the CIFAR-10 report: every notebook imports from here.

One module per concern: ``files`` (project paths, atomic writes, the folder lock, cached
measurements, the git state), ``device`` (device, precision, the setup banner), ``data`` (load, check,
split, batch), ``models`` (the networks and ``Network``, their options checked), ``sanity`` (initial
loss and one-batch checks), ``training`` (``TrainConfig`` and ``fit`` with checkpoints and resume),
``evaluation`` (accuracy, loss, confusion matrix) and ``plots`` (style and
``save_figure``), ``tables`` (how a table is shown), ``wording`` (the report's text templates in
``report/text/``). ``results`` turns finished runs into tables and prose; ``summary`` gathers the numbers the README's first
screen and the paper state; ``paper`` builds the written report (Typst) and exports its tables; ``studies`` does the same for
the follow-up studies (a package, one module per study); ``explain`` (class activation
maps, Grad-CAM) and ``calibration`` (reliability, temperature scaling) measure what finished models learned.
"""
from . import (calibration, data, device, evaluation, explain, files, models, paper, plots, results, sanity, studies,
               summary, tables, training, wording)
from .data import (CLASSES, CIFAR10, DataError, balanced_subset, channel_stats, examples_per_class, hold_out,
                   load_cifar10, normalize)
from .evaluation import author_loss_scale, confusion_matrix, evaluate, per_class_accuracy, predict
from .models import COLORS, MARKERS, MODELS, VARIANTS, Network, build_model, count_parameters, layer_table
from .files import RunBusyError
from .sanity import overfit_one_batch
from .device import pick_device, print_setup
from .training import DivergedError, Run, RunConflictError, RunDataError, TrainConfig, fit, load_run

__all__ = [
    "calibration", "data", "device", "evaluation", "explain", "files", "models", "paper", "plots", "results", "sanity", "studies", "summary",
    "tables", "training", "wording",
    "CLASSES", "CIFAR10", "DataError", "balanced_subset", "channel_stats", "examples_per_class", "hold_out",
    "load_cifar10", "normalize",
    "author_loss_scale", "confusion_matrix", "evaluate", "per_class_accuracy", "predict",
    "COLORS", "MARKERS", "MODELS", "VARIANTS", "Network", "build_model", "count_parameters", "layer_table",
    "DivergedError", "Run", "RunBusyError", "RunConflictError", "RunDataError", "TrainConfig", "fit", "load_run", "overfit_one_batch", "pick_device", "print_setup",
]
