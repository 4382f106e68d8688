"""Shared code of the CIFAR-10 report: every notebook imports from here.

One module per concern: ``data`` (load, check, split, batch), ``models`` (the
three variants), ``training`` (``fit`` with checkpoints and resume),
``evaluation`` (accuracy, loss, confusion matrix) and ``plots`` (style and
``save_figure``). ``results`` turns finished runs into tables and prose; ``studies`` does the same for
the follow-up studies (seeds, the author's head, the ablation ladder).
"""
from . import data, evaluation, models, plots, results, studies, training
from .data import (CLASSES, CIFAR10, DataError, balanced_subset, channel_stats, examples_per_class, hold_out,
                   load_cifar10, normalize)
from .evaluation import author_loss_scale, confusion_matrix, evaluate, per_class_accuracy, predict
from .models import COLORS, MODELS, VARIANTS, build_model, count_parameters, layer_table
from .training import (Run, RunConflictError, TrainConfig, fit, load_run, overfit_one_batch, pick_device,
                       print_setup)

__all__ = [
    "data", "evaluation", "models", "plots", "results", "studies", "training",
    "CLASSES", "CIFAR10", "DataError", "balanced_subset", "channel_stats", "examples_per_class", "hold_out",
    "load_cifar10", "normalize",
    "author_loss_scale", "confusion_matrix", "evaluate", "per_class_accuracy", "predict",
    "COLORS", "MODELS", "VARIANTS", "build_model", "count_parameters", "layer_table",
    "Run", "RunConflictError", "TrainConfig", "fit", "load_run", "overfit_one_batch", "pick_device", "print_setup",
]
