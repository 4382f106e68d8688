"""The report's three CNNs, built by name, and tools to inspect them.

All three share seven 3x3 convolutions (stride 1, padding 1, each followed by
ReLU) with four 2x2/2 max-pools, turning a 3x32x32 image into 256x2x2 features.
They differ only in what follows:

* ``fc``: flatten the 1,024 features, Linear 1024->1024, ReLU, Linear 1024->10.
* ``avgpool``: average the 2x2 grid to 256 values, then Linear 256->10.
* ``avgpool_dropout``: ``avgpool`` with Dropout(0.5) after the ReLU of conv4,
  conv5 and conv7.

About the average-pooling head: the author's notebook fed the 256 pooled values
straight into the cross-entropy loss, i.e. a 256-way classifier of which only
ten outputs are ever a target. It trains, because the loss pushes the 246
unused logits down (to zero at most: they come out of a ReLU), but it is not
a 10-class model and its softmax is spread over classes that do not exist. By
default the pooled features therefore go through a Linear 256->10 layer
(+2,570 parameters, which brings the count to exactly the 1,132,842 the author
reported). ``head="author"`` reproduces the original 256-logit output.

Beyond the report (notebook 09): ``convs`` keeps only the first 5 or 6
convolutions of an average-pooling model, and ``compact`` is a different,
deliberately small network (see ``build_compact``). A ``Network`` names one
network with all its options, checks them, and builds it.
"""
from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

VARIANTS = {
    "fc": "Fully connected head",
    "avgpool": "Average pooling",
    "avgpool_dropout": "Average pooling + dropout",
}
# The follow-up study's own network (notebook 09), buildable by name like the report's three.
MODELS = {**VARIANTS, "compact": "Compact BN network"}
# One look per model in every figure: colours from Okabe and Ito's colour-blind-safe palette, chosen so
# that they also differ in grey (luminance 0, 0.15 and 0.42), and a marker each for a greyscale print.
COLORS = {"fc": "#000000", "avgpool": "#E69F00", "avgpool_dropout": "#0072B2", "compact": "#CC79A7"}
MARKERS = {"fc": "o", "avgpool": "s", "avgpool_dropout": "^", "compact": "D"}
COMPACT_WIDTHS = (64, 256, 256)
HEADS = ("linear", "author")
CONV_CHANNELS = [(3, 16), (16, 32), (32, 64), (64, 128), (128, 128), (128, 256), (256, 256)]
POOL_AFTER = {2, 4, 5, 7}       # conv numbers followed by a 2x2/2 max-pool
DROPOUT_AFTER = {4, 5, 7}       # conv numbers followed by dropout in avgpool_dropout


class Dropout(nn.Dropout):
    """Dropout whose keep-mask comes from ``torch.rand`` instead of ``bernoulli_``.

    Same operation as ``nn.Dropout`` (each unit kept with probability 1-p and
    scaled by 1/(1-p)); only the random stream differs. On the CPU,
    ``bernoulli_`` is about four times slower than ``torch.rand`` and took a
    third of every training step of ``avgpool_dropout`` (see benchmarks/).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = torch.rand_like(x, dtype=torch.float32) >= self.p
        return x * keep.to(x.dtype) * (1.0 / (1.0 - self.p))


def batchnorm_layers(model: nn.Module) -> list[nn.Module]:
    """Every BatchNorm layer of ``model``, in order."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


@dataclass(frozen=True)
class Network:
    """What defines a network: which model, its output and the options beyond the report. Every option
    is checked here, once, when a ``Network`` is made; ``build`` then only assembles the layers.

    Options beyond the report (off by default): ``batchnorm`` puts a BatchNorm2d between each
    convolution (then without bias) and its ReLU; ``width`` scales every layer's channel count;
    ``convs`` (5 or 6, average-pooling models with the 10-way head) drops the last convolutions, and
    with them most of the parameters. The rest apply to the compact network only (``build_compact``
    says what they do).
    """
    model: str = "fc"
    head: str = "linear"            # "author": the 256-logit output of models 2 and 3
    batchnorm: bool = False
    width: float = 1.0
    convs: int = 7
    whiten: bool = False            # compact: a frozen 2x2 stem set from the data to whiten image patches
    dirac: bool = False             # compact: 3x3 convolutions start as partly the identity
    bn_scale: bool = True           # compact: False fixes the BatchNorm scales at 1
    bn_momentum: float = 0.1        # compact: weight of each batch in BatchNorm's running statistics
    logit_scale: float = 1.0        # compact: multiply the logits by this

    def __post_init__(self):
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {', '.join(MODELS)}; got {self.model!r}")
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {', '.join(HEADS)} ('linear': 10-way, 'author': 256 logits); "
                             f"got {self.head!r}")
        if not _whole(self.convs):
            raise ValueError(f"convs must be a whole number; got {self.convs!r}")
        for name in ("width", "bn_momentum", "logit_scale"):
            if not _number(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number; got {getattr(self, name)!r}")
        if self.width <= 0:
            raise ValueError(f"width must be positive; got {self.width}")
        if not 0 < self.bn_momentum <= 1 or self.logit_scale <= 0:
            raise ValueError(f"bn_momentum must be in (0, 1] and logit_scale positive; got {self.bn_momentum}, "
                             f"{self.logit_scale}")
        if self.model == "compact":
            if self.head != "linear" or self.convs != 7:
                raise ValueError("the compact network takes only the width option and its own (see build_compact)")
            return
        changed = [f.name for f in dataclasses.fields(self) if f.name in COMPACT_ONLY and getattr(self, f.name) != f.default]
        if changed:
            raise ValueError(f"{', '.join(changed)} {'applies' if len(changed) == 1 else 'apply'} to the compact "
                             "network only (model='compact')")
        if self.convs not in (5, 6, 7):
            raise ValueError(f"convs must be 5, 6 or 7 (the report's models have 7); got {self.convs}")
        if self.convs != 7 and (self.model == "fc" or self.head == "author"):
            raise ValueError("convs < 7 applies to the average-pooling models with the 10-way head")
        if self.model == "fc" and self.head != "linear":
            raise ValueError("head='author' only applies to the average-pooling models")
        if self.head == "author" and self.width != 1.0:
            raise ValueError("head='author' (256 logits) needs width=1.0")

    @property
    def has_batchnorm(self) -> bool:
        return self.batchnorm or self.model == "compact"

    @property
    def dropout_meets_batchnorm(self) -> bool:
        """Whether BatchNorm layers follow dropout: then the statistics they record while training (dropout
        on) are not those of evaluation (dropout off)."""
        return self.model == "avgpool_dropout" and self.batchnorm

    def build(self) -> nn.Sequential:
        """The untrained network (a whitened stem is filled later, from the data: ``whiten_stem``)."""
        if self.model == "compact":
            return build_compact(self.width, self.dirac, self.bn_scale, self.bn_momentum, self.logit_scale)
        return _build_report_model(self.model, self.head, self.batchnorm, self.width, self.convs)


# The options that only the compact network takes.
COMPACT_ONLY = ("whiten", "dirac", "bn_scale", "bn_momentum", "logit_scale")


def build_model(name: str, head: str = "linear", **options) -> nn.Sequential:
    """``Network(name, head, **options).build()``: one of the report's variants (``head="author"`` keeps the
    256-logit output of models 2 and 3) or, with ``name="compact"``, the follow-up network."""
    return Network(name, head, **options).build()


def _build_report_model(name: str, head: str, batchnorm: bool, width: float, convs: int,
                        dropout: float = 0.5) -> nn.Sequential:
    channels = [(c_in if i == 0 else max(4, round(c_in * width)), max(4, round(c_out * width)))
                for i, (c_in, c_out) in enumerate(CONV_CHANNELS[:convs])]
    layers: list[tuple[str, nn.Module]] = []
    for i, (c_in, c_out) in enumerate(channels, start=1):
        layers.append((f"conv{i}", nn.Conv2d(c_in, c_out, 3, stride=1, padding=1, bias=not batchnorm)))
        if batchnorm:
            layers.append((f"bn{i}", nn.BatchNorm2d(c_out)))
        layers.append((f"relu{i}", nn.ReLU()))
        if name == "avgpool_dropout" and i in DROPOUT_AFTER:
            layers.append((f"drop{i}", Dropout(dropout)))
        if i in POOL_AFTER:
            layers.append((f"pool{i}", nn.MaxPool2d(2, stride=2)))
    features = channels[-1][1]
    if name == "fc":
        layers += [("flatten", nn.Flatten()), ("fc1", nn.Linear(4 * features, 1024)), ("relu_fc", nn.ReLU()),
                   ("fc2", nn.Linear(1024, 10))]
    else:
        side = 32 // 2 ** len(POOL_AFTER & set(range(1, convs + 1)))   # 2x2 after all seven convolutions
        layers += [("avgpool", nn.AvgPool2d(side)), ("flatten", nn.Flatten())]
        if head == "linear":
            layers.append(("classifier", nn.Linear(features, 10)))
    return nn.Sequential(OrderedDict(layers))


class Scale(nn.Module):
    """Multiply by a constant: a temperature on the logits."""

    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor

    def extra_repr(self) -> str:
        return f"factor={self.factor:g}"


def build_compact(width: float = 1.0, dirac: bool = False, bn_scale: bool = True, bn_momentum: float = 0.1,
                  logit_scale: float = 1.0) -> nn.Sequential:
    """A small all-convolutional network in the style of fast CIFAR-10 trainers (airbench, ResNet-9 DAWNBench).

    A 2x2 stem (24 channels, no padding: 32x32 -> 31x31), then three blocks of [3x3 conv, 2x2 max-pool,
    BN, ReLU, 3x3 conv, BN, ReLU] with 64, 256 and 256 channels (times ``width``; the stem keeps its 24,
    one filter per sign and patch dimension, so that ``whiten_stem`` can fill it), a global max-pool over
    the last 3x3 map and one Linear layer. Against model 3 it moves the capacity to where the images are
    large: its first block works at 31x31 and 15x15 with 64 channels where model 3 has 16 and 32, and
    its widest layers work at 15x15 to 3x3 rather than 4x4 and 2x2.

    Details of the airbench trainers, off by default: ``dirac`` starts every 3x3 convolution as partly
    the identity (its first filters pass their input channel through), so that the untrained network
    already carries the image forward; ``bn_scale=False`` fixes the BatchNorm scales at 1 (only the
    shifts learn); ``bn_momentum`` is the weight of each batch in the running statistics (PyTorch's
    0.1; airbench uses 0.6, so the statistics follow weights that change fast); ``logit_scale``
    multiplies the logits (airbench: 1/9).
    """
    widths = [max(8, round(w * width)) for w in COMPACT_WIDTHS]
    stem = 2 * 3 * 2 * 2    # two filters (one per sign) per dimension of a 2x2x3 patch; not scaled by width
    layers: list[tuple[str, nn.Module]] = [("conv0", nn.Conv2d(3, stem, 2, padding=0, bias=False)),
                                           ("bn0", nn.BatchNorm2d(stem)), ("relu0", nn.ReLU())]
    c_in = stem
    for b, c in enumerate(widths, start=1):
        layers += [(f"conv{b}a", nn.Conv2d(c_in, c, 3, padding=1, bias=False)), (f"pool{b}", nn.MaxPool2d(2)),
                   (f"bn{b}a", nn.BatchNorm2d(c)), (f"relu{b}a", nn.ReLU()),
                   (f"conv{b}b", nn.Conv2d(c, c, 3, padding=1, bias=False)),
                   (f"bn{b}b", nn.BatchNorm2d(c)), (f"relu{b}b", nn.ReLU())]
        c_in = c
    layers += [("maxpool", nn.MaxPool2d(3)), ("flatten", nn.Flatten()), ("classifier", nn.Linear(c_in, 10))]
    if logit_scale != 1:
        layers.append(("scale", Scale(logit_scale)))
    model = nn.Sequential(OrderedDict(layers))
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = bn_momentum
            module.weight.requires_grad_(bn_scale)
        elif dirac and isinstance(module, nn.Conv2d) and module.kernel_size == (3, 3):
            with torch.no_grad():
                nn.init.dirac_(module.weight[:module.in_channels])
    return model


def whiten_stem(model: nn.Sequential, images: torch.Tensor, eps: float = 5e-4) -> None:
    """Set the compact network's 2x2 stem to whiten the 2x2x3 patches of ``images`` and freeze it.

    The patch covariance has 12 eigenvectors; each becomes a filter scaled by 1/sqrt(eigenvalue + eps),
    once with each sign (24 filters), so the ReLU after the stem keeps both halves. The network then
    starts from decorrelated, unit-variance inputs (the initialisation of the airbench trainers).
    """
    conv = model.conv0
    k = conv.kernel_size
    patches = nn.functional.unfold(images.float(), k).transpose(1, 2).reshape(-1, conv.in_channels * k[0] * k[1])
    cov = patches.T @ patches / len(patches)
    eigenvalues, eigenvectors = torch.linalg.eigh(cov)
    filters = (eigenvectors.T / (eigenvalues + eps).sqrt()[:, None]).reshape(-1, conv.in_channels, *k)
    with torch.no_grad():
        conv.weight.copy_(torch.cat([filters, -filters]))
    conv.weight.requires_grad_(False)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def layer_table(model: nn.Module, input_shape=(3, 32, 32)) -> pd.DataFrame:
    """Per layer: output shape, parameters, forward FLOPs per image (2 per multiply-add) and the
    theoretical receptive field in input pixels (it may exceed the 32-pixel image)."""
    rows, rf, jump = [], 1, 1
    x = torch.zeros(1, *input_shape)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for name, layer in model.named_children():
            x = layer(x)
            flops = 0
            if isinstance(layer, nn.Conv2d):
                k = layer.kernel_size[0]
                flops = 2 * x.numel() * layer.in_channels * k * k // layer.groups
                rf, jump = rf + (k - 1) * jump, jump * layer.stride[0]
            elif isinstance(layer, (nn.MaxPool2d, nn.AvgPool2d)):
                k = layer.kernel_size if isinstance(layer.kernel_size, int) else layer.kernel_size[0]
                s = layer.stride if isinstance(layer.stride, int) else layer.stride[0]
                rf, jump = rf + (k - 1) * jump, jump * s
            elif isinstance(layer, nn.Linear):
                flops = 2 * layer.in_features * layer.out_features
            rows.append({"layer": name, "type": type(layer).__name__,
                         "output": "x".join(map(str, x.shape[1:])),
                         "parameters": sum(p.numel() for p in layer.parameters()),
                         "MFLOPs": flops / 1e6,
                         "receptive field": rf})
    model.train(was_training)
    return pd.DataFrame(rows)


def compare(names=tuple(VARIANTS), head: str = "linear") -> pd.DataFrame:
    """One row per variant: parameters, the share in the head, FLOPs per image, receptive field."""
    rows = {}
    for name in names:
        table = layer_table(build_model(name, head))
        conv = table["type"] == "Conv2d"
        params = int(table["parameters"].sum())
        fwd = float(table["MFLOPs"].sum())
        rows[VARIANTS[name]] = {
            "parameters": params,
            "convolution parameters": int(table.loc[conv, "parameters"].sum()),
            "head parameters": params - int(table.loc[conv, "parameters"].sum()),
            "head share %": 100 * (params - table.loc[conv, "parameters"].sum()) / params,
            "forward MFLOPs/image": fwd,
            "training MFLOPs/image (~3x forward)": 3 * fwd,
            "receptive field of conv7 (px)": int(table.loc[table["layer"] == "conv7", "receptive field"].iloc[0]),
        }
    return pd.DataFrame(rows).T


def design_checks(model: nn.Sequential) -> pd.DataFrame:
    """The author's four design choices, each checked on a built model."""
    table = layer_table(model)
    convs = [m for m in model if isinstance(m, nn.Conv2d)]
    pools = [m for m in model if isinstance(m, nn.MaxPool2d)]
    spatial = table["output"].str.split("x").str[1:]
    conv_rows = [i for i in table.index if table.loc[i, "type"] == "Conv2d" and i > 0]
    size_kept = all(spatial[i - 1] == spatial[i] for i in conv_rows) and spatial[0] == ["32", "32"]
    return pd.DataFrame({
        "choice": ["padding 1 keeps the size of every convolution's input", "stride 1 in every convolution",
                   "only 3x3 filters", "2x2 pools with stride 2 never overlap"],
        "holds": [size_kept and all(c.padding == (1, 1) for c in convs), all(c.stride == (1, 1) for c in convs),
                  all(c.kernel_size == (3, 3) for c in convs), all(p.kernel_size == p.stride == 2 for p in pools)],
    })


def forward_flops(model: nn.Module) -> float:
    """Forward FLOPs per image (convolutions and linear layers)."""
    return float(layer_table(model)["MFLOPs"].sum() * 1e6)


def expected_initial_loss(num_classes: int = 10) -> float:
    """Cross-entropy of a uniform guess: ln(num_classes)."""
    return math.log(num_classes)
