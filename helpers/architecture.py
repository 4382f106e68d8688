"""Tools to inspect a built network: its layers one by one (shapes, parameters, FLOPs, receptive field),
the three report models side by side, and the author's design choices checked."""
from __future__ import annotations

import pandas as pd
import torch
from torch import nn

from .models import VARIANTS, build_model


def layer_table(model: nn.Module, input_shape=(3, 32, 32)) -> pd.DataFrame:
    """Per layer: output shape, parameters, forward FLOPs per image (2 per multiply-add) and the
    theoretical receptive field in input pixels (it may exceed the 32-pixel image)."""
    rows, rf, jump = [], 1, 1
    x = torch.zeros(1, *input_shape)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for name, layer in model.named_children():
            if isinstance(layer, nn.Identity):      # an option that is off
                continue
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


def design_checks(model: nn.Module) -> pd.DataFrame:
    """The author's four design choices, each checked on a built model."""
    table = layer_table(model)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    pools = [m for m in model.modules() if isinstance(m, nn.MaxPool2d)]
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
