"""Measure a trained model: loss, accuracy, predictions, confusion matrix.

Everything here runs in eval mode under ``torch.inference_mode`` with large
batches, and puts the model back in the mode it was in. Losses are exact
per-image means over the whole set, however the last batch is cut.
"""
from __future__ import annotations

import contextlib
import copy

import pandas as pd
import torch
import torch.nn.functional as F

from .data import CLASSES
from .models import batchnorm_layers


def autocast(device: torch.device, precision: str):
    """bf16 autocast for the forward pass; parameters, gradients and the loss stay fp32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module):
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


def device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Each image moved by (dy, dx) pixels, the border filled by reflection."""
    p = max(abs(dy), abs(dx))
    padded = F.pad(x, (p, p, p, p), mode="reflect")
    h, w = x.shape[-2:]
    return padded[..., p - dy:p - dy + h, p - dx:p - dx + w]


def predict(model, images: torch.Tensor, batch_size: int = 1000, precision: str = "fp32",
            tta_flip: bool = False, tta_shift: int = 0) -> torch.Tensor:
    """Logits (float32) for normalised ``images``, computed on the model's device.
    ``tta_flip`` averages the logits of each image and its mirror image; ``tta_shift`` > 0 also averages
    in copies moved by that many pixels up-left and down-right (six views with the flip)."""
    device = device_of(model)
    outputs = []
    with eval_mode(model):
        for start in range(0, len(images), batch_size):
            xb = images[start:start + batch_size].to(device)
            views = [xb] + ([_shift(xb, s, s) for s in (tta_shift, -tta_shift)] if tta_shift else [])
            if tta_flip:
                views += [v.flip(3) for v in views]
            with autocast(device, precision):
                logits = torch.stack([model(v).float() for v in views]).mean(0)
            outputs.append(logits)
    return torch.cat(outputs)


def evaluate(model, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000,
             precision: str = "fp32", tta_flip: bool = False, tta_shift: int = 0) -> dict:
    """Mean cross-entropy per image and accuracy over the whole set."""
    logits = predict(model, images, batch_size, precision, tta_flip, tta_shift)
    labels = labels.to(logits.device)
    loss = F.cross_entropy(logits, labels, reduction="sum").item() / len(labels)
    accuracy = (logits.argmax(1) == labels).float().mean().item()
    return {"loss": loss, "accuracy": accuracy}


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
