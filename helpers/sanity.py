"""Checks that a model is wired right before it is trained: its loss at initialisation, and whether
it can drive the loss on one fixed batch to zero.

Both are measured once and kept in ``results/sanity/`` with what they depend on, so that
re-rendering notebook 02 reads them back instead of training three models for a minute or more.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .data import CIFAR10, normalize
from .evaluation import evaluate
from .files import cached, digest, project_path
from .models import VARIANTS, build_model


def overfit_one_batch(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                      steps: int = 150, lr: float = 1e-3) -> list[float]:
    """Train on one fixed batch (dropout off) and return the loss per step: a working model drives it to ~0.

    It runs on one thread, so the curve is the same on every machine with the same torch (how a sum is
    split across threads changes the last bits, and over many steps of a loss near zero they grow)."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.eval()   # no dropout: the point is to check that gradients flow, not to regularise
    losses = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(images), labels)
            loss.backward()
            opt.step()
            losses.append(loss.item())
    finally:
        torch.set_num_threads(threads)
    return losses


def initial_losses(data: CIFAR10, seed: int = 0, images: int = 1000, results_dir="results") -> dict[str, float]:
    """Each variant's mean test loss at initialisation (seeded), on the first ``images`` test images."""
    x, y = normalize(data.test.images[:images]), data.test.labels[:images]

    def measure():
        out = {}
        for name in VARIANTS:
            torch.manual_seed(seed)
            out[name] = evaluate(build_model(name), x, y)["loss"]
        return out
    key = {"seed": seed, "images": digest(x, y), "torch": torch.__version__}
    return cached(project_path(results_dir) / "sanity" / "initial_losses.json", key, measure)


def one_batch_curves(data: CIFAR10, seed: int = 0, steps: int = 100, batch: int = 64,
                     results_dir="results") -> dict[str, list[float]]:
    """Each variant's loss per step while it trains on the first ``batch`` training images alone."""
    x, y = normalize(data.train.images[:batch]), data.train.labels[:batch]

    def measure():
        out = {}
        for name in VARIANTS:
            torch.manual_seed(seed)
            out[name] = overfit_one_batch(build_model(name), x, y, steps=steps)
        return out
    key = {"seed": seed, "steps": steps, "images": digest(x, y), "torch": torch.__version__}
    return cached(project_path(results_dir) / "sanity" / "one_batch.json", key, measure)


def largest_setback(losses: list[float]) -> dict:
    """The worst moment of a curve that should fall: the largest ratio of a loss to the lowest loss
    before it, with both steps (1-based). A ratio near 1 means the curve never went back up."""
    low, low_step, worst = losses[0], 1, {"ratio": 1.0, "low": losses[0], "low_step": 1,
                                          "high": losses[0], "high_step": 1}
    for step, loss in enumerate(losses, start=1):
        if loss < low:
            low, low_step = loss, step
        elif loss / low > worst["ratio"]:
            worst = {"ratio": loss / low, "low": low, "low_step": low_step, "high": loss, "high_step": step}
    return worst
