"""One look for every figure, and ``save_figure`` to export them.

Figures are drawn for a printed page: 6.5 inches wide at most (``WIDTH``; ``HALF`` for a figure
beside another), no text under 7 points at that size, one colour and marker per model that stay
distinct in greyscale and for colour-blind readers (``models.COLORS``, ``models.MARKERS``), and
axes that start at zero where bar lengths are compared. ``save_figure`` checks the size and the
text and writes ``figures/NAME.png`` (200 dpi) and ``NAME.pdf`` (TrueType fonts, embedded), without
the figure's title: the caption belongs to the document a figure goes into (the notebook shows it).
Timestamps and software tags are stripped, so the same figure always gives the same bytes and
a re-run only shows up in git when a figure really changed.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
from pathlib import Path

import matplotlib
import matplotlib.lines
import matplotlib.patches
import matplotlib.pyplot as plt
import matplotlib.text
import matplotlib.ticker
import numpy as np
import pandas as pd
import seaborn as sns

from .data import CLASSES
from .files import atomic_write, project_path
from .models import COLORS, CUSTOM, MARKERS, MODELS, VARIANTS

DPI = 200
WIDTH = 6.5        # inches: the text width of an A4 or Letter page with 1-inch margins
HALF = 3.2
MIN_FONT = 7.0     # points


def use_style() -> None:
    """The report's style: white grid, print-sized fonts, no top/right spines, TrueType fonts in PDFs."""
    sns.set_theme(style="whitegrid", context="paper")
    matplotlib.rcParams.update({
        "figure.dpi": 100, "figure.figsize": (WIDTH, 2.8), "savefig.bbox": "tight", "savefig.pad_inches": 0.02,
        "font.size": 8, "axes.titlesize": 9, "axes.labelsize": 8, "xtick.labelsize": 7, "ytick.labelsize": 7,
        "legend.fontsize": 7, "legend.title_fontsize": 7, "figure.titlesize": 9,
        "axes.spines.top": False, "axes.spines.right": False, "legend.frameon": False,
        "lines.linewidth": 1.3, "lines.markersize": 3.5,
        "pdf.fonttype": 42, "ps.fonttype": 42, "svg.hashsalt": "cifar10", "pdf.compression": 6})


def figures_dir(folder=None) -> Path:
    return project_path(folder or os.environ.get("FIGURES_DIR") or "figures")


def check_print_size(fig, name: str) -> None:
    """Refuse a figure wider than the page or with text smaller than ``MIN_FONT`` points at its size."""
    width = fig.get_size_inches()[0]
    if width > WIDTH + 0.05:
        raise ValueError(f"figure {name!r} is {width:.2f} inches wide; draw it at most {WIDTH} inches wide "
                         "(plots.WIDTH) so that it prints at its size")
    drawn = fig.get_tightbbox(fig.canvas.get_renderer()).width     # what bbox="tight" saves, labels included
    if drawn > WIDTH + 0.1:
        raise ValueError(f"figure {name!r} is drawn {drawn:.2f} inches wide with its labels; shorten or wrap them "
                         f"to fit {WIDTH} inches")
    small = sorted({round(t.get_fontsize(), 1) for t in fig.findobj(matplotlib.text.Text)
                    if t.get_visible() and t.get_text().strip() and t.get_fontsize() < MIN_FONT})
    if small:
        raise ValueError(f"figure {name!r} has text of {small} points; use at least {MIN_FONT:g}")


@contextlib.contextmanager
def _without_title(fig):
    """The figure without its title (the figure's suptitle, or the title of a figure with one plot) while it
    is saved: an exported figure takes its caption from the document it goes into. The notebook still
    shows the title."""
    titles = []
    if fig._suptitle is not None and fig._suptitle.get_text():
        titles.append(fig._suptitle)
    plots = [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]
    if len(plots) == 1 and plots[0].title.get_text():
        titles.append(plots[0].title)
    kept = [t.get_text() for t in titles]
    try:
        for t in titles:
            t.set_text("")
        yield
    finally:
        for t, text in zip(titles, kept):
            t.set_text(text)


def save_figure(fig, name: str, folder=None) -> list[Path]:
    """Check the print size (``check_print_size``), write ``name.png`` and ``name.pdf`` without the figure's
    title (``_without_title``), byte-stable, and return their paths."""
    if not name or any(c in name for c in "/\\ ."):
        raise ValueError(f"figure name must be a plain file stem like 'test_accuracy', got {name!r}")
    check_print_size(fig, name)
    out = figures_dir(folder)
    out.mkdir(parents=True, exist_ok=True)
    png, pdf = out / f"{name}.png", out / f"{name}.pdf"
    images = {}
    with _without_title(fig):
        for path, options in ((png, {"dpi": DPI, "metadata": {"Software": None}}),
                              (pdf, {"metadata": {"Creator": None, "Producer": None, "CreationDate": None}})):
            buffer = io.BytesIO()           # drawn in memory first: a failed drawing replaces no file
            fig.savefig(buffer, format=path.suffix[1:], **options)
            images[path] = buffer.getvalue()
    for path, content in images.items():    # each replaced whole (files.atomic_write), never half-written
        atomic_write(path, lambda f, c=content: f.write(c))
    return [png, pdf]


# A model of your own gets one of these, chosen by its name (the same in every figure): the rest of the
# Okabe-Ito palette, each with a marker the report's models do not use.
EXTRA_STYLES = (("#009E73", "v"), ("#D55E00", "P"), ("#56B4E9", "X"), ("#999999", "*"))


def label(name: str) -> str:
    """How a figure names a model: the report's name, or the label a model of your own was registered with."""
    return VARIANTS.get(name) or (MODELS[name] if name in CUSTOM else name)


def model_style(name: str, n_points: int = 10) -> dict:
    """Colour, marker and marker spacing of a model's line, the same in every figure."""
    if name in COLORS:
        color, marker = COLORS[name], MARKERS[name]
    else:
        color, marker = EXTRA_STYLES[int(hashlib.sha1(name.encode()).hexdigest(), 16) % len(EXTRA_STYLES)]
    return {"color": color, "marker": marker, "markevery": max(1, n_points // 10)}


def curves(histories: dict, column: str, ax=None, ylabel: str | None = None, percent: bool = False,
           linestyle: str = "-", label_suffix: str = ""):
    """One line per model (its colour and marker) of a history column against the epoch."""
    ax = ax or plt.gca()
    for name, hist in histories.items():
        y = hist[column] * (100 if percent else 1)
        ax.plot(hist["epoch"], y, linestyle=linestyle, label=label(name) + label_suffix,
                **model_style(name, len(hist)))
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    if ylabel:
        ax.set_ylabel(ylabel)
    ax.legend()
    return ax


def run_curves(history, split: str = "test", title: str | None = None, loss_max: float | None = None):
    """Loss and accuracy per epoch, training against evaluation: where the gap opens is overfitting.
    Accuracy runs from 0 to 100% and the loss from 0 to ``loss_max``, so that runs drawn apart compare."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(WIDTH, 2.5))
    for ax, metric, label in ((ax_loss, "loss", "mean cross-entropy"), (ax_acc, "acc", "accuracy (%)")):
        scale = 100 if metric == "acc" else 1
        ax.plot(history["epoch"], history[f"train_{metric}"] * scale, color="0.6", linestyle="--", label="train")
        ax.plot(history["epoch"], history[f"{split}_{metric}"] * scale, color="black", label=split)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.legend(loc="lower right" if metric == "acc" else "best")
    ax_acc.set_ylim(0, 100)
    top = max(loss_max or 0, float(history[["train_loss", f"{split}_loss"]].max().max()) * 1.05)
    ax_loss.set_ylim(0, top)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def pixel_histograms(raw, normalised):
    """Per-channel pixel histograms before (0..255) and after the report's normalisation."""
    fig, axes = plt.subplots(1, 2, figsize=(WIDTH, 2.4))
    colors = ("#D55E00", "#009E73", "#0072B2")
    for c, (name, color) in enumerate(zip(("red", "green", "blue"), colors)):
        style = {"histtype": "step", "color": color, "label": name, "density": True, "linestyle": ("-", "--", ":")[c]}
        axes[0].hist(np.asarray(raw[:, c]).ravel(), bins=64, range=(0, 255), **style)
        axes[1].hist(np.asarray(normalised[:, c]).ravel(), bins=64, range=(-1, 1), **style)
    axes[0].set_xlabel("pixel value (uint8)")
    axes[1].set_xlabel("after (x/255 - 0.5) / 0.5")
    for ax in axes:
        ax.set_ylabel("density")
        ax.legend()
    fig.tight_layout()
    return fig


def image_grid(images, titles=None, ncols: int = 10, row_labels=None):
    """A grid of uint8 images (N, 3, H, W), as wide as the page, with optional per-image titles or
    per-row labels."""
    images = np.asarray(images)
    n = len(images)
    nrows = -(-n // ncols)
    label_width = 0.8 if row_labels is not None else 0.0
    size = (WIDTH - label_width) / ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(WIDTH, nrows * (size + (0.2 if titles is not None else 0))),
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
                ax.set_title(titles[i], fontsize=MIN_FONT, pad=2)
        if row_labels is not None and i % ncols == 0 and i // ncols < len(row_labels):
            ax.set_ylabel(row_labels[i // ncols], rotation=0, ha="right", va="center", fontsize=8)
    height = fig.get_size_inches()[1]
    fig.subplots_adjust(left=label_width / WIDTH, right=1, bottom=0, top=1 - (0.2 if titles is not None else 0.02) / height,
                        wspace=0.05, hspace=0.3 if titles is not None else 0.05)
    return fig


def confusion(matrix, ax=None, classes=CLASSES, title: str | None = None):
    """Row-normalised confusion matrix as a heatmap: each row a true class, each cell the percentage of
    that class's test images predicted as the column's class (a row sums to 100)."""
    ax = ax or plt.gca()
    m = np.asarray(matrix, dtype=float)
    m = 100 * m / m.sum(1, keepdims=True)
    sns.heatmap(m, annot=True, fmt=".0f", cmap="Greys", vmin=0, vmax=100, cbar=False, square=True, ax=ax,
                xticklabels=classes, yticklabels=classes, annot_kws={"fontsize": MIN_FONT})
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.tick_params(length=0, labelsize=MIN_FONT)
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
        ax.plot(table.index, table.mean(axis=1), label=f"{VARIANTS[variant]} ({len(runs)} seeds)",
                **model_style(variant, len(table)))
        ax.fill_between(table.index, table.min(axis=1), table.max(axis=1), color=COLORS[variant], alpha=0.2, lw=0)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylabel(ylabel or column)
    ax.legend()
    return ax


def activation_maps(images, rows: dict, titles=None, captions: dict | None = None):
    """Test images (top row, uint8 (N, 3, H, W)) and, in each further row, one map per image (N, h, w)
    drawn over the image in grey: its positive part, scaled to the map's own maximum and smoothed to the
    image's size, in a colour scale whose brightness rises with the evidence (it prints in greyscale).
    ``rows`` maps a row label to its maps; ``titles`` gives one text per image above it, ``captions`` a
    row label to one short text per map, drawn above the map."""
    images = np.asarray(images)
    n, nrows = len(images), len(rows) + 1
    label_width = 1.1
    size = (WIDTH - label_width) / n
    fig, axes = plt.subplots(nrows, n, figsize=(WIDTH, nrows * (size + 0.16) + 0.2), squeeze=False, dpi=110)
    grey = images.astype(float).mean(1) / 255
    side = images.shape[-1]
    for r, (label, maps) in enumerate([(None, None), *rows.items()]):
        for i in range(n):
            ax = axes[r][i]
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            for spine in ax.spines.values():
                spine.set_visible(False)
            if maps is None:
                ax.imshow(images[i].transpose(1, 2, 0), interpolation="nearest")
                if titles is not None:
                    ax.set_title(titles[i], fontsize=MIN_FONT, pad=2)
                continue
            m = np.clip(np.asarray(maps[i], dtype=float), 0, None)
            m = m / m.max() if m.max() > 0 else m
            extent = (-0.5, side - 0.5, side - 0.5, -0.5)
            ax.imshow(grey[i], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.imshow(m, cmap="inferno", vmin=0, vmax=1, alpha=0.6, interpolation="bilinear", extent=extent)
            if captions and label in captions:
                ax.set_title(captions[label][i], fontsize=MIN_FONT, pad=2)
        axes[r][0].set_ylabel("image" if maps is None else label, rotation=0, ha="right", va="center", fontsize=MIN_FONT)
    fig.subplots_adjust(left=label_width / WIDTH, right=1, bottom=0.02, top=0.96, wspace=0.05, hspace=0.35)
    return fig


def reliability(bins: dict, titles: dict | None = None, notes: dict | None = None, styles: dict | None = None,
                min_images: int = 20):
    """Reliability diagrams, one panel per model: accuracy against mean confidence per confidence bin,
    before (the model's colour and marker) and after temperature scaling (grey, open markers), beside
    the diagonal of perfect calibration. ``bins`` maps a run to ``(before, after)`` tables with the
    columns ``images``, ``confidence`` and ``accuracy`` (0-1); bins of fewer than ``min_images`` images
    are left out (their accuracy is noise). ``styles`` maps a run to the model whose look it takes;
    ``notes`` adds a line of text per panel."""
    fig, axes = plt.subplots(1, len(bins), figsize=(WIDTH, 2.2), sharey=True, squeeze=False)
    for ax, (name, (before, after)) in zip(axes[0], bins.items()):
        ax.plot([0, 100], [0, 100], color="0.7", linestyle=":", linewidth=1)
        look = (styles or {}).get(name, name)
        for table, style in ((before, dict(model_style(look), label="as trained")),
                             (after, {"color": "0.45", "marker": MARKERS.get(look, "o"), "markerfacecolor": "white",
                                      "linestyle": "--", "label": "temperature-scaled"})):
            table = pd.DataFrame(table)
            table = table[table["images"] >= min_images]
            style.pop("markevery", None)
            ax.plot(table["confidence"] * 100, table["accuracy"] * 100, **style)
        ax.set_xlim(0, 100)
        ax.set_ylim(0, 100)
        ax.set_xticks([0, 50, 100])
        title = (titles or {}).get(name, VARIANTS.get(name, name))
        ax.set_title(title + (f"\n{notes[name]}" if notes and name in notes else ""), fontsize=MIN_FONT + 1)
        ax.set_xlabel("confidence (%)")
    axes[0][0].set_ylabel("accuracy (%)")
    handles = [matplotlib.lines.Line2D([], [], color="0.2", marker="o", label="as trained (the model's colour)"),
               matplotlib.lines.Line2D([], [], color="0.45", marker="o", markerfacecolor="white", linestyle="--",
                                       label="temperature-scaled"),
               matplotlib.lines.Line2D([], [], color="0.7", linestyle=":", label="perfect calibration")]
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3)
    fig.tight_layout()
    return fig
