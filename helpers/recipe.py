"""How a configuration trains and evaluates: the network it builds, the optimiser, the learning-rate
schedule, Lookahead weight averaging and the model it evaluates (``bn_refresh``)."""
from __future__ import annotations

import torch

from . import data as D
from .config import TrainConfig
from .evaluation import refresh_batchnorm
from .models import batchnorm_layers

# bn_refresh re-measures BatchNorm statistics on this many training images (class-balanced)
REFRESH_IMAGES = 10_000


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
