"""The follow-up studies' own figures (notebook 09): the ablation ladder, its curves, the JPEG
sensitivity; drawn in the report's style (``plots``)."""
from __future__ import annotations

import textwrap

import matplotlib
import matplotlib.ticker
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..plots import HALF, MIN_FONT, WIDTH


def ladder(table: pd.DataFrame):
    """The ablation ladder: validation accuracy per step on an axis from 0 (ladder steps dark, side branches
    light and marked with an arrow), each bar labelled with the step's parameters and training minutes."""
    labels = [textwrap.fill(("↳ " if b else "") + c, 40) for b, c in zip(table["branch"], table["change"])]
    lines = max(label.count("\n") + 1 for label in labels)      # every bar's slot must hold the longest label
    fig, ax = plt.subplots(figsize=(WIDTH, len(labels) * (0.125 * lines + 0.06) + 0.8))
    y = range(len(table))[::-1]
    colors = ["0.75" if b else "0.25" for b in table["branch"]]
    ax.barh(list(y), table["val acc"], color=colors, height=0.7)
    refreshed = table["bn refreshed"].astype(bool) if "bn refreshed" in table else pd.Series(False, table.index)
    handles = []
    if refreshed.any():
        handles = ax.plot(table.loc[refreshed, "val acc as trained"], [yi for yi, r in zip(y, refreshed) if r], "|",
                          color="black", markersize=9, markeredgewidth=1.5,
                          label="as trained: BatchNorm statistics recorded with dropout on")
    for yi, (_, row) in zip(y, table.iterrows()):
        noise = " ~" if row.get("within noise", False) else ""
        ax.text(row["val acc"] + 1, yi, f"{row['val acc']:.1f}%{noise}  {row['parameters'] / 1e6:.2f}M  "
                f"{row['minutes']:.0f} min", va="center", fontsize=MIN_FONT)
    ax.set_yticks(list(y), labels, fontsize=MIN_FONT)
    ax.set_xlim(0, 150)
    ax.set_xticks(range(0, 101, 20))
    ax.set_xlabel("validation accuracy after the last epoch (%)\nlabels: accuracy (~: gain within noise), "
                  "parameters, training time", loc="left")
    ax.grid(axis="y", visible=False)
    kept = matplotlib.patches.Patch(color="0.25", label="ladder step (kept)")
    branch = matplotlib.patches.Patch(color="0.75", label="↳ side branch from the last step above it (not kept)")
    ax.legend(handles=[kept, branch, *handles], loc="lower left", bbox_to_anchor=(0, 1), ncol=1 if handles else 2)
    fig.tight_layout()
    return fig


def ladder_curves(table: pd.DataFrame, histories: dict, split: str = "val"):
    """Validation accuracy per epoch of every trained ladder step, in two panels so that each line can
    be followed: the model-3 steps with their side branches (dashed), then the compact network's steps,
    each panel on its own accuracy scale. Within a panel, later steps are darker."""
    trained = table[~table["eval only"].astype(bool)]
    compact_from = list(trained["step"]).index("compact") if "compact" in set(trained["step"]) else len(trained)
    panels = [trained.iloc[:compact_from], trained.iloc[compact_from:]]
    panels = [p for p in panels if len(p)]
    fig, axes = plt.subplots(1, len(panels), figsize=(WIDTH, 5.0), squeeze=False)
    for ax, rows, title in zip(axes[0], panels, ("model 3 and its branches", "compact network")):
        main = rows[~rows["branch"].astype(bool)]
        shades = {step: str(0.7 - 0.7 * i / max(1, len(main) - 1)) for i, step in enumerate(main["step"])}
        for k, (_, row) in enumerate(rows.iterrows()):
            h = histories[row["step"]]
            style = ({"color": "#D55E00", "linestyle": "--", "marker": "os^"[k % 3], "markersize": 3}
                     if row["branch"] else {"color": shades[row["step"]], "linestyle": "-", "markersize": 3,
                                            "marker": "ovDs^<>pPX"[list(shades).index(row["step"]) % 10]})
            ax.plot(h["epoch"], h[f"{split}_acc"] * 100, label=textwrap.shorten(row["change"], 34, placeholder="..."),
                    **style)
            if row.get("bn refreshed", False):      # the last epoch judged with BatchNorm statistics measured again
                ax.plot([h["epoch"].iloc[-1]], [row["val acc"]], marker="*", markersize=8, linestyle="none",
                        color=style["color"], markeredgecolor="black", markeredgewidth=0.5)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        handles, _ = ax.get_legend_handles_labels()
        if rows.get("bn refreshed", pd.Series(dtype=bool)).astype(bool).any():
            handles.append(matplotlib.lines.Line2D([], [], marker="*", markersize=8, linestyle="none", color="0.5",
                                                   markeredgecolor="black", markeredgewidth=0.5,
                                                   label="last epoch, BatchNorm statistics\nmeasured without dropout"))
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=1)
        lowest = min(histories[step][f"{split}_acc"].min() * 100 for step in rows["step"])
        ax.set_ylim(10 * np.floor(lowest / 10), 100)        # each panel from just below its lowest point
        ax.set_ylabel("validation accuracy (%)")
    fig.tight_layout()
    return fig


def jpeg_sensitivity(points: pd.DataFrame, cost: dict | None = None):
    """Test accuracy against the mean squared error one more JPEG pass adds to the copy (``jpeg.jpeg_points``):
    every run as a small grey dot, each quality's mean as a black square with its standard error, and,
    where ``cost`` (``jpeg.jpeg_fields``) exists, the line through the copy's mean fitted to the drops and
    extended back by the reference distortion to where it puts the official images (hollow circle), and,
    where two qualities allow a curve that may bend (dotted, drawn where it was fitted), its slope at the
    copy extended back the same way (dash-dotted, hollow diamond)."""
    fig, ax = plt.subplots(figsize=(HALF + 0.6, 3.3))
    ax.plot(points["added mse"], points["test acc (%)"], "o", color="0.6", markersize=3, label="one run (seed)",
            zorder=2)
    acc = points.groupby("quality", sort=False)["test acc (%)"]
    means, counts = acc.mean(), acc.count()
    x = points.groupby("quality", sort=False)["added mse"].first()
    ax.errorbar(x, means, yerr=(acc.std() / counts ** 0.5).fillna(0), fmt="s", color="black", markersize=4,
                capsize=2.5, lw=1, label="mean ± standard error", zorder=3)
    for quality in means.index:
        name = "copy" if quality == "copy as it is" else f"quality {quality}"
        ax.annotate(f"{name}, {counts[quality]} seed{'s' if counts[quality] > 1 else ''}", (x[quality], acc.min()[quality]),
                    xytext=(0, -5), textcoords="offset points", ha="center", va="top", fontsize=MIN_FONT,
                    bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5})
    left = 0
    if cost:
        base, left = means["copy as it is"], -cost["reference_mse"]
        xs = np.linspace(left, x.max(), 50)
        ax.plot(xs, base - cost["slope"] * xs, "--", color="0.3", lw=1, zorder=1,
                label=f"line: {cost['slope']:.3f} points per unit")
        readings = [(cost["estimate"], cost["estimate_se"], "o", "line")]
        if cost.get("tangent") == cost.get("tangent"):         # a curve needs two qualities
            fitted = np.linspace(0, x.max(), 50)                  # the curve only where it was fitted
            ax.plot(fitted, base - cost["curve_a"] * fitted - cost["curve_b"] * fitted ** 2, ":", color="black",
                    lw=1.2, zorder=1, label="curve that bends")
            back = np.array([left, 0.0])
            ax.plot(back, base - cost["curve_a"] * back, "-.", color="black", lw=0.9, zorder=1,
                    label="its slope at the copy")
            readings.append((cost["tangent"], cost["tangent_se"], "D", "slope"))
        for value, se, marker, name in readings:      # the values in the legend: nothing covers the lines
            ax.plot([left], [base + value], marker, markerfacecolor="white", markeredgecolor="black",
                    markersize=5, linestyle="none", zorder=3,
                    label=f"official images, from the {name}: {value} ± {se} higher")
        ax.axvline(0, color="0.8", lw=0.8, zorder=0)
    span = x.max() - left
    ax.set_xlim(left - 0.12 * span, x.max() + 0.2 * span)       # room for the last label
    low, high = points["test acc (%)"].min(), points["test acc (%)"].max()
    ax.set_ylim(low - 0.08 * (high - low) - 0.5, ax.get_ylim()[1])
    ax.set_xlabel("mean squared error added to the copy (pixel values 0–255)")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2)
    fig.tight_layout()
    return fig
