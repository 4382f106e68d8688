"""Measure a trained model beyond loss and accuracy (``predict`` and ``evaluate`` live in ``loop``):
the confusion matrix, per-class accuracy, BatchNorm statistics measured again, the author's loss scale.

Everything here runs in eval mode under ``torch.inference_mode`` and puts the model back in the mode it
was in.
"""
from __future__ import annotations

import copy

import pandas as pd
import torch

from .data import CLASSES
from .loop import autocast, eval_mode, evaluate, predict  # noqa: F401  (measured here too)
from .models import batchnorm_layers


def device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def refresh_batchnorm(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 500,
                      precision: str = "fp32") -> torch.nn.Module:
    """A copy of ``model`` whose BatchNorm running statistics are measured again on normalised
    ``images`` with every other layer in eval mode (dropout off), as an exact average over the batches.

    During training BatchNorm records the statistics of activations thinned by dropout; at test time
    dropout is off and the activations have another variance. Comparing a model with its refreshed copy
    measures how much that mismatch costs. The model itself is left as it was.
    """
    fresh = copy.deepcopy(model)
    norms = batchnorm_layers(fresh)
    if not norms:
        raise ValueError("the model has no BatchNorm layers whose statistics could be refreshed")
    fresh.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None           # a cumulative average: every batch counts the same
        m.train()
    device = device_of(fresh)
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            with autocast(device, precision):
                fresh(images[start:start + batch_size].to(device))
    return fresh.eval()


def author_loss_scale(mean_loss: float, n_images: int = 10_000, batch_size: int = 64) -> float:
    """The author's plotted "average loss": per-batch mean losses summed, divided by the image count.

    With equal batches that is the true mean times (number of batches / number of images),
    about mean / 64; the short last batch makes it an approximation of what was plotted.
    """
    n_batches = -(-n_images // batch_size)
    return mean_loss * n_batches / n_images


def confusion_matrix(predicted: torch.Tensor, labels: torch.Tensor, num_classes: int = 10) -> torch.Tensor:
    """counts[true, predicted]."""
    index = labels.cpu() * num_classes + predicted.cpu()
    return torch.bincount(index, minlength=num_classes ** 2).view(num_classes, num_classes)


def per_class_accuracy(matrix: torch.Tensor, classes=CLASSES) -> pd.Series:
    correct = matrix.diag().double()
    return pd.Series((correct / matrix.sum(1).double()).numpy(), index=list(classes), name="accuracy")
