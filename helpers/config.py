"""A run's configuration: ``TrainConfig``, every field checked, and how its fields are classified.

The fields are stored flat, in the order below, in each run's ``config.json``. What each field means is
written once, in ``report/text/settings.md`` (the comments here are reminders); the network's own fields
are those of ``models.Network``, which checks them.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from .models import Network, is_number

# How the package classifies the fields (one place for all of them):
# fields that say how a run was computed, not what was trained: a finished run loads whatever they are now;
COMPUTE_FIELDS = ("precision",)
# fields that change only how a run is evaluated, not its training (the ladder re-evaluates runs under them);
EVAL_FIELDS = ("tta_flip", "tta_shift", "bn_refresh")
# fields added after runs and their measurements were stored, with their defaults: ``identity`` leaves them
# out while they have that value;
ADDED_FIELDS = {"bn_refresh": False, "dropout": 0.5}
# fields every configuration the project ever saved holds (the protocol's); a configuration saved before
# one of the others existed loads with its default.
REQUIRED_FIELDS = ("model", "epochs", "batch_size", "lr", "weight_decay", "seed")
# the fields of the network (``models.Network``), stored flat among the others
NETWORK_FIELDS = tuple(f.name for f in dataclasses.fields(Network))


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class TrainConfig:
    """One run: the network (the fields of ``models.Network``: ``NETWORK_FIELDS``; ``network`` gives it,
    checked there) and how it is trained and evaluated (the rest, checked here). The defaults are the
    author's protocol; every option beyond it is off. What each field means: ``report/text/settings.md``.
    The fields are stored flat, in this order, in ``config.json``; a file saved before a field existed
    loads with its default (``from_dict``)."""
    model: str = "fc"
    head: str = "linear"
    epochs: int = 100
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-6
    seed: int = 0
    precision: str = "fp32"
    train_subset: int | None = None
    test_subset: int | None = None
    validation: int = 0
    batchnorm: bool = False
    width: float = 1.0
    convs: int = 7
    optimizer: str = "adam"
    momentum: float = 0.9
    bias_lr: float = 1.0
    whiten: bool = False
    lookahead: bool = False
    dirac: bool = False
    bn_scale: bool = True
    bn_momentum: float = 0.1
    logit_scale: float = 1.0
    augment: str = "none"
    crop_pad: int = 4
    schedule: str = "constant"
    label_smoothing: float = 0.0
    tta_flip: bool = False
    tta_shift: int = 0
    eval_each_epoch: bool = True
    bn_refresh: bool = False
    dropout: float = 0.5

    def __post_init__(self):
        self.network                  # checks the network's fields
        checks = {"augment": ("none", "flip_crop"), "schedule": ("constant", "onecycle", "cosine", "triangle"),
                  "precision": ("fp32", "bf16", "auto"), "optimizer": ("adam", "sgd")}
        for field, allowed in checks.items():
            if getattr(self, field) not in allowed:
                raise ValueError(f"{field} must be one of {', '.join(allowed)}; got {getattr(self, field)!r}")
        for field in ("epochs", "batch_size", "seed", "crop_pad", "tta_shift", "validation"):
            if not _whole(getattr(self, field)):
                raise ValueError(f"{field} must be a whole number; got {getattr(self, field)!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be positive; got {self.epochs} and {self.batch_size}")
        for field in ("train_subset", "test_subset"):
            value = getattr(self, field)
            if value is not None and (not _whole(value) or value < 10 or value % 10):
                raise ValueError(f"{field} must be None (all images) or a positive multiple of 10 (a tenth per "
                                 f"class); got {value!r}")
        if self.validation < 0 or self.validation % 10:
            raise ValueError(f"validation must be 0 (evaluate on the test set) or a positive multiple of 10 "
                             f"(held-out training images, a tenth per class); got {self.validation!r}")
        for field in ("lr", "weight_decay", "label_smoothing", "momentum", "bias_lr"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{field} must be a finite number; got {value!r}")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError(f"lr must be positive and weight_decay zero or positive; got lr={self.lr}, "
                             f"weight_decay={self.weight_decay}")
        if not 0 <= self.label_smoothing < 1 or not 0 <= self.crop_pad < 16 or not 0 <= self.tta_shift < 16:
            raise ValueError(f"label_smoothing must be in [0, 1), crop_pad and tta_shift from 0 to 15 pixels; got "
                             f"{self.label_smoothing}, {self.crop_pad}, {self.tta_shift}")
        if self.bn_refresh and not self.network.has_batchnorm:
            raise ValueError("bn_refresh re-measures BatchNorm statistics: it needs batchnorm=True or model='compact'")
        if not 0 <= self.momentum < 1 or self.bias_lr <= 0:
            raise ValueError(f"momentum must be in [0, 1) and bias_lr positive; got {self.momentum}, {self.bias_lr}")

    @property
    def network(self) -> Network:
        """The network this run trains (its fields checked by ``models.Network``)."""
        return Network(**{name: getattr(self, name) for name in NETWORK_FIELDS})

    @classmethod
    def from_dict(cls, saved: dict) -> "TrainConfig":
        """A saved configuration; fields added to the class over time take their defaults when absent. An
        absent protocol field (``REQUIRED_FIELDS``) is an error: filling in its default would make the file
        say something it does not say."""
        known = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(saved, dict):
            raise TypeError(f"a configuration is a JSON object of fields, not {type(saved).__name__}")
        absent = [name for name in REQUIRED_FIELDS if name not in saved]
        if absent:
            raise ValueError(f"the field(s) {', '.join(sorted(absent))} are missing")
        return cls(**{k: v for k, v in saved.items() if k in known})

    def identity(self) -> dict:
        """What was trained: every field but those that only say how it was computed (``COMPUTE_FIELDS``),
        and those added later (``ADDED_FIELDS``) while they keep their default, so that a measurement
        stored under an older identity stays valid."""
        return {k: v for k, v in dataclasses.asdict(self).items()
                if k not in COMPUTE_FIELDS and not (k in ADDED_FIELDS and v == ADDED_FIELDS[k])}

    def differences(self, other: "TrainConfig") -> dict:
        """{field: (self's value, other's value)} for the fields of what was trained that differ."""
        a, b = dataclasses.asdict(self), dataclasses.asdict(other)
        return {k: (a[k], b[k]) for k in a if k not in COMPUTE_FIELDS and a[k] != b[k]}

    @property
    def eval_split(self) -> str:
        return "val" if self.validation else "test"

    def default_name(self) -> str:
        """The run's folder: the model, then every network option that differs from its default (so that a
        variant never shares the folder of the report's model), then the seed."""
        name = self.model + ("_author_head" if self.head == "author" else "")
        for field in dataclasses.fields(Network):
            value = getattr(self, field.name)
            if field.name not in ("model", "head") and value != field.default:
                name += f"_{field.name}" + ("" if value is True else f"{value:g}" if is_number(value) else str(value))
        return name if self.seed == 0 else f"{name}_seed{self.seed}"
