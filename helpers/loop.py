"""The lesson: one epoch of training and one pass of evaluation, in plain PyTorch.

``training.fit`` calls exactly these functions for every run of the project; what surrounds them there
(resume, checkpoints, the lock, provenance) is kept out of this file.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F


def autocast(device: torch.device, precision: str):
    """bf16 autocast for the forward pass; parameters, gradients and the loss stay fp32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def train_one_epoch(model, batches, optimizer, precision="fp32", label_smoothing=0.0, augment=None,
                    after_step=None) -> tuple[float, float]:
    """Train on every (images, labels) batch once; return the mean loss and the accuracy seen on the way.

    ``augment`` changes each batch before the model sees it; ``after_step`` runs after every update (the
    recipe's learning-rate schedule and weight averaging).
    """
    model.train()                               # dropout on; BatchNorm uses each batch's own statistics
    device = next(model.parameters()).device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    seen = 0
    for images, labels in batches:
        if augment is not None:
            images = augment(images)
        with autocast(device, precision):
            logits = model(images)              # forward
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()                         # backward: a gradient for every parameter
        optimizer.step()                        # update
        if after_step is not None:
            after_step()
        loss_sum += loss.detach() * len(labels)  # the batch's mean loss, weighted by its size
        correct += (logits.argmax(1) == labels).sum()
        seen += len(labels)
    return loss_sum.item() / seen, correct.item() / seen


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module):
    """Dropout off, BatchNorm on its running statistics, no gradients; the model's mode restored after."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


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
    device = next(model.parameters()).device
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
    """Mean cross-entropy per image and accuracy over the whole set (exact, however the last batch is cut)."""
    logits = predict(model, images, batch_size, precision, tta_flip, tta_shift)
    labels = labels.to(logits.device)
    loss = F.cross_entropy(logits, labels, reduction="sum").item() / len(labels)
    accuracy = (logits.argmax(1) == labels).float().mean().item()
    return {"loss": loss, "accuracy": accuracy}
