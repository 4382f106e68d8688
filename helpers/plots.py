"""One look for every figure, and ``save_figure`` to export them.

Figures go to ``figures/`` (or ``$FIGURES_DIR``) as PNG (200 dpi) and PDF with
stable names. Timestamps and software tags are stripped, so the same figure
always gives the same bytes and a re-run only shows up in git when a figure
really changed.
"""
from __future__ import annotations

import os
import textwrap
from pathlib import Path

import matplotlib
import matplotlib.patches
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import pandas as pd
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
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylabel(ylabel or column)
    ax.legend()
    return ax


def run_curves(history, split: str = "test", title: str | None = None):
    """Loss and accuracy per epoch, training against evaluation: where the gap opens is overfitting."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, metric, label in ((ax_loss, "loss", "mean cross-entropy"), (ax_acc, "acc", "accuracy (%)")):
        scale = 100 if metric == "acc" else 1
        ax.plot(history["epoch"], history[f"train_{metric}"] * scale, color="0.55", label="train")
        ax.plot(history["epoch"], history[f"{split}_{metric}"] * scale, color="tab:red", label=split)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def pixel_histograms(raw, normalised):
    """Per-channel pixel histograms before (0..255) and after the report's normalisation."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    colors = ("tab:red", "tab:green", "tab:blue")
    for c, (name, color) in enumerate(zip(("red", "green", "blue"), colors)):
        axes[0].hist(np.asarray(raw[:, c]).ravel(), bins=64, range=(0, 255), histtype="step", color=color,
                     label=name, density=True)
        axes[1].hist(np.asarray(normalised[:, c]).ravel(), bins=64, range=(-1, 1), histtype="step", color=color,
                     label=name, density=True)
    axes[0].set_xlabel("pixel value (uint8)")
    axes[1].set_xlabel("after (x/255 - 0.5) / 0.5")
    for ax in axes:
        ax.set_ylabel("density")
        ax.legend()
    fig.tight_layout()
    return fig


def image_grid(images, titles=None, ncols: int = 10, size: float = 1.1, row_labels=None):
    """A grid of uint8 images (N, 3, H, W) with optional per-image titles or per-row labels."""
    images = np.asarray(images)
    n = len(images)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * size + (1 if row_labels else 0),
                                                    nrows * size * (1.25 if titles else 1)),
                             squeeze=False, dpi=72)   # small inline; save_figure still writes 200 dpi
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
        for spine in ax.spines.values():
            spine.set_visible(False)
        if i < n:
            ax.imshow(images[i].transpose(1, 2, 0), interpolation="nearest")
            if titles is not None:
                ax.set_title(titles[i], fontsize=7)
        if row_labels is not None and i % ncols == 0 and i // ncols < len(row_labels):
            ax.set_ylabel(row_labels[i // ncols], rotation=0, ha="right", va="center", fontsize=9)
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


def seed_bands(histories: dict, column: str, ax=None, ylabel: str | None = None, percent: bool = False):
    """Per variant, the mean over seeds of a history column (line) and its range (band).
    ``histories`` maps (variant, seed) to a history."""
    ax = ax or plt.gca()
    scale = 100 if percent else 1
    for variant in VARIANTS:
        runs = [h.set_index("epoch")[column] * scale for (v, _), h in histories.items() if v == variant]
        if not runs:
            continue
        table = pd.concat(runs, axis=1)
        ax.plot(table.index, table.mean(axis=1), color=COLORS[variant], label=f"{VARIANTS[variant]} ({len(runs)} seeds)")
        ax.fill_between(table.index, table.min(axis=1), table.max(axis=1), color=COLORS[variant], alpha=0.2, lw=0)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylabel(ylabel or column)
    ax.legend()
    return ax


def ladder(table: pd.DataFrame):
    """The ablation ladder: validation accuracy per step (ladder steps dark, side branches light and marked
    with an arrow), each bar labelled with the step's parameters and training minutes."""
    labels = [textwrap.fill(("↳ " if b else "") + c, 42) for b, c in zip(table["branch"], table["change"])]
    fig, ax = plt.subplots(figsize=(11, sum(0.2 * (l.count("\n") + 1) + 0.25 for l in labels) + 1.2))
    y = range(len(table))[::-1]
    colors = ["tab:gray" if b else "tab:blue" for b in table["branch"]]
    ax.barh(list(y), table["val acc"], color=colors)
    low = max(0.0, table["val acc"].min() - 10)
    for yi, (_, row) in zip(y, table.iterrows()):
        ax.text(row["val acc"] + 0.3, yi, f"{row['val acc']:.1f}%  ·  {row['parameters'] / 1e6:.2f}M params  ·  "
                f"{row['minutes']:.0f} min", va="center", fontsize=8)
    ax.set_yticks(list(y), labels, fontsize=9)
    ax.set_xlim(low, min(100.0, table["val acc"].max() + 12))
    ax.set_xlabel("validation accuracy after the last epoch (%)")
    ax.grid(axis="y", visible=False)
    kept = matplotlib.patches.Patch(color="tab:blue", label="ladder step (kept)")
    branch = matplotlib.patches.Patch(color="tab:gray",
                                      label="↳ side branch from the last ladder step above it (not kept)")
    ax.legend(handles=[kept, branch], loc="lower left", bbox_to_anchor=(0, 1), ncol=2, fontsize=8)
    fig.tight_layout()
    return fig
