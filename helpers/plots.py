"""One look for every figure, and ``save_figure`` to export them.

Figures go to ``figures/`` (or ``$FIGURES_DIR``) as PNG (200 dpi) and PDF with
stable names. Timestamps and software tags are stripped, so the same figure
always gives the same bytes and a re-run only shows up in git when a figure
really changed.
"""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

from .data import CLASSES, project_path
from .models import COLORS, VARIANTS

DPI = 200


def use_style() -> None:
    """The report's style: white grid, readable fonts, no top/right spines."""
    sns.set_theme(style="whitegrid", context="notebook", font_scale=0.95)
    matplotlib.rcParams.update({"figure.dpi": 100, "savefig.bbox": "tight", "axes.spines.top": False,
                                "axes.spines.right": False, "legend.frameon": False,
                                "svg.hashsalt": "cifar10", "pdf.compression": 6})


def figures_dir(folder=None) -> Path:
    return project_path(folder or os.environ.get("FIGURES_DIR") or "figures")


def save_figure(fig, name: str, folder=None) -> list[Path]:
    """Write ``name.png`` and ``name.pdf``, byte-stable, and return their paths."""
    if not name or any(c in name for c in "/\\ ."):
        raise ValueError(f"figure name must be a plain file stem like 'test_accuracy', got {name!r}")
    out = figures_dir(folder)
    out.mkdir(parents=True, exist_ok=True)
    png, pdf = out / f"{name}.png", out / f"{name}.pdf"
    fig.savefig(png, dpi=DPI, metadata={"Software": None})
    fig.savefig(pdf, metadata={"Creator": None, "Producer": None, "CreationDate": None})
    return [png, pdf]


def curves(histories: dict, column: str, ax=None, ylabel: str | None = None, percent: bool = False,
           linestyle: str = "-", label_suffix: str = ""):
    """One line per model (the report's colours) of a history column against the epoch."""
    ax = ax or plt.gca()
    for name, hist in histories.items():
        y = hist[column] * (100 if percent else 1)
        ax.plot(hist["epoch"], y, color=COLORS.get(name), linestyle=linestyle,
                label=VARIANTS.get(name, name) + label_suffix)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel or column)
    ax.legend()
    return ax


def image_grid(images, titles=None, ncols: int = 10, size: float = 1.1, title_colors=None):
    """A grid of uint8 images (N, 3, H, W) with optional titles; returns the figure."""
    images = np.asarray(images)
    n = len(images)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * size, nrows * size * (1.25 if titles else 1)))
    for i, ax in enumerate(np.atleast_1d(axes).flat):
        ax.axis("off")
        if i < n:
            ax.imshow(images[i].transpose(1, 2, 0))
            if titles is not None:
                ax.set_title(titles[i], fontsize=7, color=(title_colors[i] if title_colors else "black"))
    return fig


def confusion(matrix, ax=None, classes=CLASSES, title: str | None = None):
    """Row-normalised confusion matrix (true class by row) as a heatmap in percent."""
    ax = ax or plt.gca()
    m = np.asarray(matrix, dtype=float)
    m = 100 * m / m.sum(1, keepdims=True)
    sns.heatmap(m, annot=True, fmt=".0f", cmap="Blues", cbar=False, square=True, ax=ax,
                xticklabels=classes, yticklabels=classes, annot_kws={"fontsize": 7})
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title)
    return ax
