"""The report's three CNNs as plain ``nn.Module`` classes, and ``Network``, which names and builds one.

``FullyConnectedNet``, ``AvgPoolNet`` and ``AvgPoolDropoutNet`` (models 1-3) share seven 3x3
convolutions (stride 1, padding 1, each followed by ReLU) with four 2x2/2 max-pools, turning a 3x32x32
image into 256x2x2 features (``SevenConvs``). They differ only in what follows:

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
deliberately small network (``CompactNet``). A ``Network`` names one
network with all its options, checks them, and builds it.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

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
# Models of your own (``register``): name -> the class that builds one, called without arguments.
CUSTOM: dict[str, type] = {}


def register(name: str, cls: type, label: str | None = None) -> None:
    """Make a model of your own trainable by name: ``TrainConfig(model=name)`` then builds ``cls()``, and
    its ``config.json`` records ``name``. Register it again (same name, same class) in every session that
    trains or loads its runs. ``label`` names it in figures (default: the name made readable)."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"a model's name must be a plain identifier (letters, digits, _); got {name!r}")
    if name in MODELS and CUSTOM.get(name) is not cls:
        raise ValueError(f"the name {name!r} is taken ({MODELS[name]}); register your model under another one")
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"register takes an nn.Module class (not an instance); got {cls!r}")
    CUSTOM[name] = cls
    MODELS[name] = label or name.replace("_", " ").capitalize()


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


def is_number(value) -> bool:
    """A real, finite number (not a bool)."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


@dataclass(frozen=True)
class Network:
    """What defines a network: which model, its output and the options beyond the report. Every option
    is checked here, once, when a ``Network`` is made; ``build`` then only assembles the layers.

    Options beyond the report (off by default): ``batchnorm`` puts a BatchNorm2d between each
    convolution (then without bias) and its ReLU; ``width`` scales every layer's channel count;
    ``convs`` (5 or 6, average-pooling models with the 10-way head) drops the last convolutions, and
    with them most of the parameters; ``dropout`` is the rate of model 3's dropout layers. The rest apply
    to the compact network only (``CompactNet`` says what they do). A model of your own (``register``)
    takes none of them.
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
    dropout: float = 0.5            # avgpool_dropout: the rate of its three dropout layers

    def __post_init__(self):
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {', '.join(MODELS)}; got {self.model!r} (a model of your "
                             "own: H.models.register it first, in this session)")
        if self.model in CUSTOM:
            changed = [f.name for f in dataclasses.fields(self)
                       if f.name != "model" and getattr(self, f.name) != f.default]
            if changed:
                raise ValueError(f"{', '.join(changed)} cannot be set for {self.model!r}, a model of your own: give "
                                 "its class the options it needs and register each version under its own name")
            return
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {', '.join(HEADS)} ('linear': 10-way, 'author': 256 logits); "
                             f"got {self.head!r}")
        if not _whole(self.convs):
            raise ValueError(f"convs must be a whole number; got {self.convs!r}")
        for name in ("width", "bn_momentum", "logit_scale", "dropout"):
            if not is_number(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number; got {getattr(self, name)!r}")
        if self.width <= 0:
            raise ValueError(f"width must be positive; got {self.width}")
        if not 0 < self.bn_momentum <= 1 or self.logit_scale <= 0:
            raise ValueError(f"bn_momentum must be in (0, 1] and logit_scale positive; got {self.bn_momentum}, "
                             f"{self.logit_scale}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1); got {self.dropout}")
        if self.dropout != 0.5 and self.model != "avgpool_dropout":
            raise ValueError("dropout sets the rate of model 3's dropout layers: it applies to "
                             "model='avgpool_dropout' only")
        if self.model == "compact":
            if self.head != "linear" or self.convs != 7:
                raise ValueError("the compact network takes only the width option and its own (see CompactNet)")
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

    def build(self) -> nn.Module:
        """The untrained network (a whitened stem is filled later, from the data: ``whiten_stem``)."""
        if self.model in CUSTOM:
            return CUSTOM[self.model]()
        if self.model == "compact":
            return CompactNet(self.width, self.dirac, self.bn_scale, self.bn_momentum, self.logit_scale)
        if self.model == "fc":
            return FullyConnectedNet(self.width, self.batchnorm)
        if self.model == "avgpool":
            return AvgPoolNet(self.width, self.batchnorm, self.convs, self.head)
        return AvgPoolDropoutNet(self.width, self.batchnorm, self.convs, self.head, self.dropout)


# The options that only the compact network takes.
COMPACT_ONLY = ("whiten", "dirac", "bn_scale", "bn_momentum", "logit_scale")


def build_model(name: str, head: str = "linear", **options) -> nn.Module:
    """``Network(name, head, **options).build()``: one of the report's variants (``head="author"`` keeps the
    256-logit output of models 2 and 3) or, with ``name="compact"``, the follow-up network."""
    return Network(name, head, **options).build()


def conv_channels(width: float = 1.0, convs: int = 7) -> list[tuple[int, int]]:
    """(in, out) channels of the first ``convs`` convolutions, each layer's width scaled by ``width``."""
    scaled = [3] + [max(4, round(c_out * width)) for _, c_out in CONV_CHANNELS[:convs]]
    return list(zip(scaled[:-1], scaled[1:]))


class SevenConvs(nn.Module):
    """What the three report models share: seven 3x3 convolutions (stride 1, padding 1), each followed by
    a ReLU, with 2x2 max-pools after conv2, conv4, conv5 and conv7 (32x32 -> 2x2).

    Options beyond the report replace a do-nothing ``nn.Identity`` by a real layer: ``batchnorm`` puts a
    BatchNorm2d between each convolution (then without bias) and its ReLU, ``dropout`` > 0 adds dropout
    after the ReLU of conv4, conv5 and conv7 (model 3), ``width`` scales the channels and ``convs`` (5 or
    6) keeps only the first convolutions.
    """

    def __init__(self, width: float = 1.0, batchnorm: bool = False, dropout: float = 0.0, convs: int = 7):
        super().__init__()
        for i, (c_in, c_out) in enumerate(conv_channels(width), start=1):
            kept = i <= convs
            self.add_module(f"conv{i}", nn.Conv2d(c_in, c_out, kernel_size=3, stride=1, padding=1,
                                                  bias=not batchnorm) if kept else nn.Identity())
            self.add_module(f"bn{i}", nn.BatchNorm2d(c_out) if kept and batchnorm else nn.Identity())
            self.add_module(f"relu{i}", nn.ReLU() if kept else nn.Identity())
            if i in DROPOUT_AFTER:
                self.add_module(f"drop{i}", Dropout(dropout) if kept and dropout else nn.Identity())
            if i in POOL_AFTER:
                self.add_module(f"pool{i}", nn.MaxPool2d(kernel_size=2, stride=2) if kept else nn.Identity())
        self.out_channels = conv_channels(width, convs)[-1][1]
        self.out_side = 32 // 2 ** len(POOL_AFTER & set(range(1, convs + 1)))    # 2 after all seven

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, 3, 32, 32) -> feature maps (N, 256, 2, 2); shapes at width 1, all seven convolutions."""
        x = self.relu1(self.bn1(self.conv1(x)))                               # 16 x 32 x 32
        x = self.pool2(self.relu2(self.bn2(self.conv2(x))))                   # 32 x 16 x 16
        x = self.relu3(self.bn3(self.conv3(x)))                               # 64 x 16 x 16
        x = self.pool4(self.drop4(self.relu4(self.bn4(self.conv4(x)))))       # 128 x 8 x 8
        x = self.pool5(self.drop5(self.relu5(self.bn5(self.conv5(x)))))       # 128 x 4 x 4
        x = self.relu6(self.bn6(self.conv6(x)))                               # 256 x 4 x 4
        return self.pool7(self.drop7(self.relu7(self.bn7(self.conv7(x)))))    # 256 x 2 x 2


class FullyConnectedNet(SevenConvs):
    """Model 1: the seven convolutions, then two fully connected layers on the flattened maps."""

    def __init__(self, width: float = 1.0, batchnorm: bool = False):
        super().__init__(width, batchnorm)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(self.out_channels * self.out_side ** 2, 1024)
        self.relu_fc = nn.ReLU()
        self.fc2 = nn.Linear(1024, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.flatten(self.features(x))      # 256 x 2 x 2 -> 1,024 values
        x = self.relu_fc(self.fc1(x))           # 1,024 hidden units
        return self.fc2(x)                      # 10 class scores (logits)


class AvgPoolNet(SevenConvs):
    """Model 2: the seven convolutions, each feature map averaged to one value, then a 10-way classifier.
    ``head="author"`` returns the 256 averages themselves, as the author's notebook did (256 logits)."""

    def __init__(self, width: float = 1.0, batchnorm: bool = False, convs: int = 7, head: str = "linear",
                 dropout: float = 0.0):
        super().__init__(width, batchnorm, dropout, convs)
        self.avgpool = nn.AvgPool2d(self.out_side)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(self.out_channels, 10) if head == "linear" else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.flatten(self.avgpool(self.features(x)))     # 256 x 2 x 2 -> 256 averages
        return self.classifier(x)                            # 10 class scores (author's head: the 256 averages)


class AvgPoolDropoutNet(AvgPoolNet):
    """Model 3: model 2 with dropout (p = 0.5) after the ReLU of conv4, conv5 and conv7."""

    def __init__(self, width: float = 1.0, batchnorm: bool = False, convs: int = 7, head: str = "linear",
                 dropout: float = 0.5):
        super().__init__(width, batchnorm, convs, head, dropout)


class Scale(nn.Module):
    """Multiply by a constant: a temperature on the logits."""

    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor

    def extra_repr(self) -> str:
        return f"factor={self.factor:g}"


class CompactNet(nn.Module):
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
    shifts learn); ``bn_momentum`` is PyTorch's BatchNorm momentum, the weight of each new batch in the
    running statistics (PyTorch's default 0.1); ``logit_scale`` multiplies the logits (airbench: 1/9).
    """

    def __init__(self, width: float = 1.0, dirac: bool = False, bn_scale: bool = True, bn_momentum: float = 0.1,
                 logit_scale: float = 1.0):
        super().__init__()
        widths = [max(8, round(w * width)) for w in COMPACT_WIDTHS]
        stem = 2 * 3 * 2 * 2    # two filters (one per sign) per dimension of a 2x2x3 patch; not scaled by width
        self.conv0, self.bn0, self.relu0 = nn.Conv2d(3, stem, 2, padding=0, bias=False), nn.BatchNorm2d(stem), nn.ReLU()
        c_in = stem
        for b, c in enumerate(widths, start=1):
            for name, layer in ((f"conv{b}a", nn.Conv2d(c_in, c, 3, padding=1, bias=False)), (f"pool{b}", nn.MaxPool2d(2)),
                                (f"bn{b}a", nn.BatchNorm2d(c)), (f"relu{b}a", nn.ReLU()),
                                (f"conv{b}b", nn.Conv2d(c, c, 3, padding=1, bias=False)),
                                (f"bn{b}b", nn.BatchNorm2d(c)), (f"relu{b}b", nn.ReLU())):
                self.add_module(name, layer)
            c_in = c
        self.maxpool, self.flatten, self.classifier = nn.MaxPool2d(3), nn.Flatten(), nn.Linear(c_in, 10)
        self.scale = Scale(logit_scale) if logit_scale != 1 else nn.Identity()
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.momentum = bn_momentum
                module.weight.requires_grad_(bn_scale)
            elif dirac and isinstance(module, nn.Conv2d) and module.kernel_size == (3, 3):
                with torch.no_grad():
                    nn.init.dirac_(module.weight[:module.in_channels])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu0(self.bn0(self.conv0(x)))                       # stem: 24 x 31 x 31
        x = self.relu1a(self.bn1a(self.pool1(self.conv1a(x))))        # block 1: 64 x 15 x 15
        x = self.relu1b(self.bn1b(self.conv1b(x)))
        x = self.relu2a(self.bn2a(self.pool2(self.conv2a(x))))        # block 2: 256 x 7 x 7
        x = self.relu2b(self.bn2b(self.conv2b(x)))
        x = self.relu3a(self.bn3a(self.pool3(self.conv3a(x))))        # block 3: 256 x 3 x 3
        x = self.relu3b(self.bn3b(self.conv3b(x)))
        x = self.flatten(self.maxpool(x))                             # 256 values
        return self.scale(self.classifier(x))                         # 10 class scores


def whiten_stem(model: nn.Module, images: torch.Tensor, eps: float = 5e-4) -> None:
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
