"""How much JPEG compression costs (issue 17, notebook 09): the offline copy of CIFAR-10 is itself a JPEG
re-encoding at quality 75, so its cost against the official archive cannot be measured here directly.
Instead the copy is compressed once more at lower qualities, the final recipe is trained on each with
several seeds, and accuracy is read against the distortion each pass adds (PSNR against the copy).

* ``reencode`` / ``jpeg_copy``: the images after one more JPEG pass, in memory, deterministic.
* ``psnr``: the distortion of a pass, in dB over a whole set.
* ``jpeg_runs``: the recipe per quality and seed, in ``results/jpeg/q<quality>/seed<seed>``.
* ``jpeg_table`` / ``jpeg_points`` / ``jpeg_fields``: accuracy against distortion (per quality, per run),
  and the cost of a pass estimated from it.
* ``reference_distortion`` / ``stand_in_variants``: the stand-in for the copy's own pass, and how much its
  distortion depends on how it is made (shift, border, seam, later passes).
* ``jpeg_summary``: notebook 09's section (it saves ``results/studies/jpeg.csv``); ``measured_cost`` reads
  the estimate back for notebook 06, the README and the paper.
"""
from __future__ import annotations

import dataclasses
import io
import math

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image

from .. import data as D
from ..files import cached, digest, project_path, read_json, shown_path
from ..config import TrainConfig
from ..runs import load_run, Run
from ..facts import fact, facts, render
from ..wording import fill
from .common import read_or_train, save_table


def reencode(images: torch.Tensor, quality: int) -> torch.Tensor:
    """uint8 images (N, 3, H, W) after one JPEG pass at ``quality`` (Pillow's encoder, its default 4:2:0
    chroma subsampling, as most JPEG files have), decoded back to uint8. Deterministic."""
    if not (isinstance(quality, int) and 1 <= quality <= 95):
        raise ValueError(f"quality must be a whole number from 1 to 95; got {quality!r}")
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be uint8 of shape (N, 3, H, W); got {images.dtype} {tuple(images.shape)}")
    out = np.empty(tuple(images.shape), dtype=np.uint8)
    for i, image in enumerate(images.permute(0, 2, 3, 1).numpy()):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
        out[i] = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")).transpose(2, 0, 1)
    return torch.from_numpy(out)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Peak signal-to-noise ratio (dB) between two sets of uint8 images, from the mean squared error
    over every pixel and channel of the set: 10 log10(255^2 / MSE)."""
    mse = (a.double() - b.double()).pow(2).mean().item()
    return math.inf if mse == 0 else 10 * math.log10(255 ** 2 / mse)


def psnr_to_mse(db: float) -> float:
    """The mean squared error (in squared 8-bit levels) that a PSNR in dB stands for."""
    return 255 ** 2 / 10 ** (db / 10)


def jpeg_copy(data: D.CIFAR10, quality: int) -> D.CIFAR10:
    """``data`` with every training and test image passed through JPEG once more at ``quality``; its
    ``source`` says so. A few seconds per 10,000 images."""
    change = f"re-encoded once more as JPEG at quality {quality}"
    return dataclasses.replace(
        data, train=D.ImageSet(reencode(data.train.images, quality), data.train.labels),
        test=D.ImageSet(reencode(data.test.images, quality), data.test.labels), official=False,
        changed=f"{data.changed}; {change}" if data.changed else change)


def run_name(quality: int, seed: int) -> str:
    return f"jpeg/q{quality}/seed{seed}"


def jpeg_runs(config: TrainConfig, qualities, seeds, data: D.CIFAR10, results_dir="results",
              device=None) -> dict[tuple[int, int], Run]:
    """The recipe ``config`` trained once per quality and seed on ``jpeg_copy(data, quality)``, seed by seed,
    so that every quality has a run early. A finished run is read, not trained (its numbers only: the study
    needs no weights, so they need not be kept); a quality's copy is made only for an unfinished run."""
    copies: dict[int, D.CIFAR10] = {}

    def copy(quality: int) -> D.CIFAR10:
        if quality not in copies:
            copies[quality] = jpeg_copy(data, quality)
        return copies[quality]
    return {(quality, seed): read_or_train(dataclasses.replace(config, seed=seed), lambda q=quality: copy(q),
                                           run_name(quality, seed), results_dir, device)
            for seed in seeds for quality in qualities}


def distortion(data: D.CIFAR10, quality: int, results_dir="results") -> dict:
    """PSNR (dB) of one more JPEG pass at ``quality`` against the copy, on the training and on the test
    images; measured once and kept in ``results/jpeg/q<quality>/distortion.json``."""
    def measure():
        copy = jpeg_copy(data, quality)
        return {"train psnr": psnr(copy.train.images, data.train.images),
                "test psnr": psnr(copy.test.images, data.test.images)}
    folder = project_path(results_dir) / "jpeg" / f"q{quality}"
    folder.mkdir(parents=True, exist_ok=True)
    key = {"images": digest(data.train.images[:1000], data.test.images[:1000]), "quality": quality}
    return cached(folder / "distortion.json", key, measure)


def finished_jpeg_runs(results_dir="results") -> dict[tuple[int, int], Run]:
    """The finished runs under ``results/jpeg/``, by (quality, seed), read without training anything."""
    runs = {}
    for path in sorted(project_path(results_dir).glob("jpeg/q*/seed*")):
        if (path / "metrics.json").exists():
            runs[int(path.parent.name[1:]), int(path.name[4:])] = load_run(path, weights=False)
    return runs


def jpeg_table(baseline: pd.DataFrame, runs: dict[tuple[int, int], Run], psnrs: dict[int, dict]) -> pd.DataFrame:
    """Test accuracy against the distortion of the extra pass: the copy as it is (``baseline``, the final
    recipe's seed table) and one row per quality: seeds, mean and standard deviation of the test accuracy,
    its standard error, the mean squared error the pass adds (from its test PSNR) and the drop from the copy."""
    base = baseline["test acc (%)"]
    rows = [{"quality": "copy as it is", "psnr (dB)": math.inf, "added mse": 0.0, "seeds": len(base),
             "test acc (%)": base.mean(), "sd": base.std(), "se": base.std() / math.sqrt(len(base)), "drop": 0.0}]
    for quality in sorted({q for q, _ in runs}, reverse=True):
        acc = pd.Series([r.metrics["final_test_acc"] * 100 for (q, _), r in runs.items() if q == quality])
        p = psnrs[quality]["test psnr"]
        rows.append({"quality": str(quality), "psnr (dB)": p, "added mse": psnr_to_mse(p), "seeds": len(acc),
                     "test acc (%)": acc.mean(), "sd": acc.std() if len(acc) > 1 else math.nan,
                     "se": acc.std() / math.sqrt(len(acc)) if len(acc) > 1 else math.nan,
                     "drop": base.mean() - acc.mean()})
    return pd.DataFrame(rows).set_index("quality")


def reference_distortion(data: D.CIFAR10, quality: int = 75, shift: int = 4, results_dir="results") -> dict:
    """A stand-in for the distortion of the copy's own quality-75 pass, which cannot be measured without
    the original images: a quality-75 pass over the copy moved by ``shift`` pixels, so that JPEG's 8x8
    blocks no longer line up with the first pass (aligned, a second pass at the same quality changes
    almost nothing). The copy has already lost detail, so this likely understates the first pass.
    Kept in ``results/jpeg/reference.json``."""
    def measure():
        moved = torch.roll(data.test.images, (shift, shift), (2, 3))
        aligned = reencode(data.test.images, quality)
        return {"quality": quality, "shift": shift, "psnr": psnr(reencode(moved, quality), moved),
                "aligned psnr": psnr(aligned, data.test.images)}
    folder = project_path(results_dir) / "jpeg"
    folder.mkdir(parents=True, exist_ok=True)
    key = {"images": digest(data.test.images[:1000]), "quality": quality, "shift": shift}
    return cached(folder / "reference.json", key, measure)


def _moved(images: torch.Tensor, shift: int, how: str) -> torch.Tensor:
    """``images`` moved ``shift`` pixels down and right: wrapped round (``roll``, what the stand-in does),
    or with the border filled by reflection (``reflect``, no seam)."""
    if how == "roll":
        return torch.roll(images, (shift, shift), (2, 3))
    h, w = images.shape[-2:]
    padded = F.pad(images.float(), (shift, 0, shift, 0), mode="reflect")
    return padded[..., :h, :w].round().to(torch.uint8)


def stand_in_variants(data: D.CIFAR10, quality: int = 75, results_dir="results") -> pd.DataFrame:
    """How much the stand-in's distortion (``reference_distortion``) depends on how it is made, on the test
    images: other shifts (odd ones move the 16x16 colour blocks of 4:2:0 subsampling off their grid too),
    a reflected border instead of the wrapped one, the wrapped seam left out of the measurement, and a
    second and third pass of the same kind (later passes distort less). One row per variant with its
    PSNR (dB) and mean squared error; kept in ``results/jpeg/stand_in.json``."""
    def measure():
        x, rows = data.test.images, []
        for how, shifts in (("roll", (1, 2, 3, 4, 5, 7)), ("reflect", (1, 3, 4, 5))):
            for s in shifts:
                moved = _moved(x, s, how)
                out = reencode(moved, quality)
                rows.append({"variant": f"{how} {s} px", "psnr (dB)": psnr(out, moved)})
                if how == "roll" and s == 4:
                    rows.append({"variant": "roll 4 px, seam left out",
                                 "psnr (dB)": psnr(out[..., s:, s:], moved[..., s:, s:])})
        current = reencode(_moved(x, 4, "roll"), quality)
        for n in (2, 3):                      # the stand-in pass repeated, each measured against its input
            moved = _moved(current, 4, "roll")
            current = reencode(moved, quality)
            rows.append({"variant": f"roll 4 px, pass {n}", "psnr (dB)": psnr(current, moved)})
        return rows
    folder = project_path(results_dir) / "jpeg"
    folder.mkdir(parents=True, exist_ok=True)
    rows = cached(folder / "stand_in.json", {"images": digest(data.test.images), "quality": quality}, measure)
    table = pd.DataFrame(rows).set_index("variant")
    table["added mse"] = table["psnr (dB)"].map(psnr_to_mse)
    return table


def stand_in_text(variants: pd.DataFrame, cost: dict | None) -> str:
    """The spread of the stand-in variants in words, with the line's and the tangent's readings at each
    end (``report/text/jpeg_stand_in.md``); empty without a cost."""
    if cost is None or not len(variants):
        return ""
    later = variants[variants.index.str.contains("pass")]
    variants = variants.drop(later.index)           # the spread is of stand-ins for one pass
    mse = variants["added mse"]
    low, high = variants["psnr (dB)"].idxmax(), variants["psnr (dB)"].idxmin()
    tangent = cost["tangent"] == cost["tangent"]
    return fill("jpeg_stand_in", n=len(variants), low_variant=low, high_variant=high,
                later=", then ".join(f"{fact('jpeg.stand_in.' + v.replace(' ', '_').replace(',', ''), p, 'dB1')} dB"
                                     for v, p in later["psnr (dB)"].items()),
                db_low=fact("jpeg.stand_in.psnr_low", variants["psnr (dB)"].min(), "dB1"),
                db_high=fact("jpeg.stand_in.psnr_high", variants["psnr (dB)"].max(), "dB1"),
                line_low=fact("jpeg.stand_in.line_low", float(cost["slope"]) * mse.min(), "points2"),
                line_high=fact("jpeg.stand_in.line_high", float(cost["slope"]) * mse.max(), "points2"),
                tangent=fill("jpeg_stand_in_tangent",
                             low=fact("jpeg.stand_in.tangent_low", float(cost["curve_a"]) * mse.min(), "points2"),
                             high=fact("jpeg.stand_in.tangent_high", float(cost["curve_a"]) * mse.max(), "points2"))
                if tangent else "")


def jpeg_fields(table: pd.DataFrame, reference: dict) -> dict | None:
    """The cost of a JPEG pass read from ``jpeg_table``: the drop in accuracy per unit of added mean
    squared error (a line through the origin, least squares over the qualities with two seeds or more),
    its standard error, and the drop it predicts for ``reference``'s distortion. None unless some quality
    has two seeds.

    The seed-to-seed standard deviation is pooled over the copy and those qualities (two seeds alone say
    little about their spread), and the slope's error counts that every drop shares the copy's mean.

    A line assumes the cost grows in proportion to the distortion. With two qualities or more a curve
    that may bend, drop = a mse + b mse^2 through the copy, is fitted too (least squares, like the line;
    two qualities fit it exactly), and its slope at the copy gives a second reading, ``tangent`` = a m
    (``tangent_se`` from the seeds). Where the cost grows faster than the distortion (b > 0, as measured
    here), a pass at the copy's level costs at most that slope times its distortion, and the line's reading
    is larger still: both are upper readings, the tangent the tighter. ``low`` and ``high`` span the two,
    ``range`` says so in words (``report/text/jpeg_range.md``). ``bend`` is how far the quality with the
    least distortion lies above the line, in points, and ``bend_se`` the standard error of that quality's
    drop: the evidence for a bend. The curve is not extended back itself: a parabola through two points
    turns over just outside them, which would be its shape, not the data."""
    rows = table[(table.index != "copy as it is") & (table["seeds"] >= 2)]
    if rows.empty:
        return None
    copy = table.loc["copy as it is"]
    groups = pd.concat([rows, table.loc[["copy as it is"]]])
    sd = float(((groups["seeds"] - 1) * groups["sd"] ** 2).sum() / (groups["seeds"] - 1).sum()) ** 0.5
    x, y, n = (rows[c].to_numpy(float) for c in ("added mse", "drop", "seeds"))
    # every drop is a quality's mean less the copy's mean: independent seeds, one shared copy mean
    drop_cov = sd ** 2 * (np.diag(1 / n) + 1 / float(copy["seeds"]))
    mse = psnr_to_mse(reference["psnr"])

    def read(design: np.ndarray, at: np.ndarray) -> tuple[np.ndarray, float, float]:
        """Least squares of the drops on ``design``: the coefficients, ``at`` . coefficients and its se."""
        solve = np.linalg.pinv(design.T @ design) @ design.T
        coef = solve @ y
        return coef, float(at @ coef), float(at @ solve @ drop_cov @ solve.T @ at) ** 0.5

    (slope,), estimate, estimate_se = read(x[:, None], np.array([mse]))
    tangent = tangent_se = a = b = math.nan
    if len(x) >= 2:
        (a, b), tangent, tangent_se = read(np.column_stack([x, x * x]), np.array([mse, 0.0]))
    least = int(np.argmin(x))
    readings = [estimate] + ([tangent] if tangent == tangent else [])
    f = facts("jpeg", {
        "seeds": int(n.min()), "sd": sd, "slope": float(slope), "slope_se": estimate_se / mse,
        "reference_psnr": reference["psnr"], "aligned_psnr": reference["aligned psnr"], "reference_mse": mse,
        "estimate": estimate, "estimate_se": estimate_se, "tangent": tangent, "tangent_se": tangent_se,
        "curve_a": float(a), "curve_b": float(b), "low": min(readings), "high": max(readings),
        "high_se": tangent_se if tangent == max(readings) else estimate_se,
        "bend": float(slope * x[least] - y[least]), "bend_se": float(drop_cov[least, least]) ** 0.5}, COST_FORMS,
        [f"jpeg/q{q}" for q in rows.index])
    return {**f, "qualities": ", ".join(rows.index), "reference_quality": reference.get("quality", 75),
            "reference_shift": reference.get("shift", 4), "bend_quality": rows.index[least],
            "range": fill("jpeg_range:line" if len(readings) == 1 else "jpeg_range:one"
                          if str(f["low"]) == str(f["high"]) else "jpeg_range:two", low=f["low"], high=f["high"]),
            "points": "; ".join(f"quality {q}: {render(r['psnr (dB)'], 1)} dB, {render(r['test acc (%)'], 2)}%, "
                                f"{fact(f'jpeg.q{q}.drop', r['drop'], 'points2')} points below the copy"
                                for q, r in rows.iterrows())}


# How the cost's numbers are stated (``helpers/facts.py``): readings in points with two decimals, as their
# standard errors (a few hundredths) need; distortion in dB with one.
COST_FORMS = {"seeds": "count", "sd": "sd", "slope": "points/mse3", "slope_se": "points/mse3", "reference_psnr": "dB1",
              "aligned_psnr": "dB1", "reference_mse": "mse1", "estimate": "points2", "estimate_se": "points2",
              "tangent": "points2", "tangent_se": "points2", "curve_a": "points/mse4",
              "low": "points2", "high": "points2", "high_se": "points2", "bend": "points2", "bend_se": "points2"}


def jpeg_points(baseline: pd.DataFrame, runs: dict[tuple[int, int], Run], psnrs: dict[int, dict]) -> pd.DataFrame:
    """One row per run, for a figure: its quality (``copy as it is`` for the recipe's seeds on the copy),
    seed, the mean squared error its images carry beyond the copy's, and its test accuracy."""
    rows = [{"quality": "copy as it is", "seed": seed, "added mse": 0.0, "test acc (%)": acc}
            for seed, acc in baseline["test acc (%)"].items()]
    rows += [{"quality": str(q), "seed": s, "added mse": psnr_to_mse(psnrs[q]["test psnr"]),
              "test acc (%)": r.metrics["final_test_acc"] * 100} for (q, s), r in sorted(runs.items())]
    return pd.DataFrame(rows)


@dataclasses.dataclass
class JpegStudy:
    """What notebook 09 shows of the study: ``table`` and ``points`` (None before any run has finished),
    ``cost`` (``jpeg_fields``; None until some quality has two seeds) and ``text``, its reading in words."""
    table: pd.DataFrame | None
    points: pd.DataFrame | None
    cost: dict | None
    text: str


def jpeg_summary(baseline: pd.DataFrame, data: D.CIFAR10, results_dir="results") -> JpegStudy:
    """Notebook 09's JPEG section from the finished runs only (it trains nothing): the table of accuracy
    against distortion, saved as ``results/studies/jpeg.csv``, the runs behind it, the cost of a pass read
    from them and the reading in words (``report/text/jpeg.md``), or a line saying that no run has finished."""
    runs = finished_jpeg_runs(results_dir)
    if not runs:
        return JpegStudy(None, None, None, fill("jpeg_none"))
    psnrs = {q: distortion(data, q, results_dir) for q in sorted({q for q, _ in runs})}
    table = jpeg_table(baseline, runs, psnrs)
    save_table(table, "jpeg", results_dir)
    cost = jpeg_fields(table, reference_distortion(data, results_dir=results_dir))
    if cost is None:
        text = fill("jpeg_few", runs=len(runs))
    else:
        text = fill("jpeg", **cost) + ("\n\n" + fill("jpeg_curved", **cost) if cost["tangent"] == cost["tangent"] else "")
        text += "\n\n" + stand_in_text(stand_in_variants(data, results_dir=results_dir), cost)
    return JpegStudy(table, jpeg_points(baseline, runs, psnrs), cost, text)


def measured_cost(results_dir="results") -> dict | None:
    """The cost of the copy's own JPEG pass as notebook 09 last estimated it (``jpeg_fields``, from
    ``results/studies/jpeg.csv`` and ``results/jpeg/reference.json``), or None where it has not been
    measured (no table, no reference distortion, or no quality with two seeds yet)."""
    folder = project_path(results_dir)
    table_path, reference_path = folder / "studies" / "jpeg.csv", folder / "jpeg" / "reference.json"
    if not (table_path.exists() and reference_path.exists()):
        return None
    try:
        table = pd.read_csv(table_path, dtype={"quality": str}).set_index("quality")
        return jpeg_fields(table, read_json(reference_path, "measurement")["value"])
    except (KeyError, TypeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ValueError(f"{shown_path(table_path)} or {shown_path(reference_path)} is not what notebook 09 writes "
                         f"({type(exc).__name__}: {exc}); re-run notebook 09 to write them again, or restore them "
                         "from git (git checkout -- <file>).") from None
