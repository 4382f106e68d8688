"""Finished runs into tables and sentences: the comparison with the author and
each of the author's findings checked against the numbers, and the runs' test predictions
(measured once, kept beside each run).

Every number that the analysis notebook writes in prose comes from here, read
from ``results/``, so the text cannot disagree with the data.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from .evaluation import predict
from .files import cached, digest, project_path
from .models import VARIANTS
from .device import runnable_precision
from .training import Run, load_run

# The original report's results (SPEC.md): one unseeded run per model on a Colab GPU.
AUTHOR = pd.DataFrame(
    {"epoch 1": [54.8, 49.0, 47.9], "epoch 10": [76.4, 79.7, 76.9], "best": [77.3, 80.0, 83.0],
     "best epoch": [21, 9, 55], "final": [76.6, 77.2, 82.3], "lowest loss epoch": [5, 8, 95],
     "parameters": [2_190_122, 1_132_842, 1_132_842]},
    index=list(VARIANTS))


def markdown_table(df: pd.DataFrame, floatfmt: str = "{:,.1f}") -> str:
    """A pandas table as GitHub Markdown (without the optional tabulate dependency); a missing number
    (NaN, such as the gain of a ladder's first step) is an empty cell."""
    cell = lambda v: ("" if v != v else floatfmt.format(v)) if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def write_section(path, name: str, text: str) -> None:
    """Replace the text between ``<!-- name:start -->`` and ``<!-- name:end -->`` in a Markdown file
    (appending the section if the markers are missing), so generated numbers live beside prose."""
    path = Path(path)
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    old = path.read_text() if path.exists() else ""
    block = f"{start}\n{text.strip()}\n{end}"
    if start in old and end in old:
        new = old[:old.index(start)] + block + old[old.index(end) + len(end):]
    else:
        new = old.rstrip() + "\n\n" + block + "\n"
    path.write_text(new)


def load_runs(results_dir="results", names=tuple(VARIANTS)) -> dict[str, Run]:
    """The finished runs among ``names``; missing ones are reported and skipped."""
    runs = {}
    for name in names:
        try:
            runs[name] = load_run(Path(results_dir) / name)
        except FileNotFoundError as exc:
            print(f"skipped {name}: {exc}")
    return runs


def author_head_runs(results_dir="results") -> dict[str, Run]:
    """Notebook 07's runs of models 2 and 3 with the author's 256-logit output, those that have finished."""
    names = [f"{n}_author_head" for n in VARIANTS if n != "fc"]
    return {n: load_run(Path(project_path(results_dir)) / n) for n in names
            if (project_path(results_dir) / n / "metrics.json").exists()}


def test_predictions(run: Run, images: torch.Tensor, device=None) -> torch.Tensor:
    """The class ``run``'s final weights predict for each of ``images`` (normalised), with the run's own
    test-time options. Measured once and kept beside the run (``test_predictions.json``, with the
    precision it was computed in), keyed by the images, so a re-render reads it back."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    def measure():
        precision = runnable_precision(run.config.precision, device)
        logits = predict(run.model.to(device), images, precision=precision, tta_flip=run.config.tta_flip,
                         tta_shift=run.config.tta_shift)
        run.model.cpu()
        return {"predicted": logits.argmax(1).cpu().tolist(), "precision": precision}
    key = {"images": digest(images),
           "config": run.config.identity()}
    return torch.tensor(cached(run.path / "test_predictions.json", key, measure)["predicted"])


def _split(run: Run) -> str:
    return run.config.eval_split


def run_summary(run: Run) -> str:
    """A short paragraph about one run, every number read from its history and metrics."""
    h, s = run.history, _split(run)
    acc, loss = h[f"{s}_acc"] * 100, h[f"{s}_loss"]
    best_ep = int(h.loc[acc.idxmax(), "epoch"])
    low_ep = int(h.loc[loss.idxmin(), "epoch"])
    gap = (h["train_acc"].iloc[-1] - h[f"{s}_acc"].iloc[-1]) * 100
    env = run.metrics.get("environment", {})
    return (f"**{VARIANTS.get(run.config.model, run.config.model)}** ({run.metrics['parameters']:,} parameters, "
            f"{len(h)} epochs, {run.config.precision}): best {s} accuracy **{acc.max():.2f}%** at epoch {best_ep}, "
            f"final {acc.iloc[-1]:.2f}%. The {s} loss was lowest at epoch {low_ep} ({loss.min():.3f}) and ended at "
            f"{loss.iloc[-1]:.3f}. At the end the model fits {h['train_acc'].iloc[-1] * 100:.1f}% of its training "
            f"images, {abs(gap):.1f} points {'above' if gap >= 0 else 'below'} its {s} accuracy. "
            + timing(h, env))


def timing(h: pd.DataFrame, env: dict) -> str:
    """Wall time of a run in words; flags epochs slowed by other work on the machine (over 1.5x the median)."""
    median, total = h["seconds"].median(), h["seconds"].sum()
    slow = h["seconds"] > 1.5 * median
    text = (f"Training took {total / 60:.1f} minutes of wall time on {env.get('device', '?')} with "
            f"{_threads(env.get('threads', '?'))}, a typical (median) epoch {median:.1f} s")
    if slow.any():
        text += (f"; {int(slow.sum())} of {len(h)} epochs took over 1.5 times that (up to {_duration(h['seconds'].max())}), "
                 f"slowed by other work on the machine, so {len(h) * median / 60:.1f} minutes is the time of an "
                 "undisturbed run")
    return text + "."


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _threads(n) -> str:
    return f"{n} thread" + ("" if n == 1 else "s")


def accuracy_table(runs: dict[str, Run], author_head: dict[str, Run] | None = None) -> pd.DataFrame:
    """Test accuracy in percent, ours beside the author's, like with like: each of the author's rows
    sits beside our run with the same output (the 256-logit head of models 2 and 3 where ``author_head``
    holds those runs; our 10-way runs get their own rows). Best is the maximum over all evaluated
    epochs, final the last one."""
    rows = []
    for name, run in runs.items():
        same = (author_head or {}).get(f"{name}_author_head")
        pairs = ([(same, "256 logits (author's)"), (run, "10-way (ours)")] if same else
                 [(run, "10-way" if name == "fc" else "10-way (ours)")])
        for k, (r, output) in enumerate(pairs):       # the author's numbers go beside the first, comparable row
            acc = r.history[f"{_split(r)}_acc"] * 100
            author = AUTHOR.loc[name] if k == 0 else {"best": float("nan"), "final": float("nan")}
            rows.append({"model": VARIANTS[name], "output": output, "best": acc.max(), "final": acc.iloc[-1],
                         "author best": author["best"], "author final": author["final"],
                         "best - author": acc.max() - author["best"]})
    return pd.DataFrame(rows)


def epoch_table(runs: dict[str, Run]) -> pd.DataFrame:
    """When each run peaked and when its loss was lowest, beside the author's epochs."""
    rows = []
    for name, run in runs.items():
        h, s = run.history, _split(run)
        rows.append({"model": VARIANTS[name], "best epoch": int(h.loc[h[f"{s}_acc"].idxmax(), "epoch"]),
                     "author best epoch": int(AUTHOR.loc[name, "best epoch"]),
                     "lowest loss epoch": int(h.loc[h[f"{s}_loss"].idxmin(), "epoch"]),
                     "author lowest loss epoch": int(AUTHOR.loc[name, "lowest loss epoch"]), "epochs": len(h)})
    return pd.DataFrame(rows)


def _first_epoch_from_which(mask: pd.Series, epochs: pd.Series):
    """First epoch from which ``mask`` stays true to the end, or None."""
    if not mask.iloc[-1]:
        return None
    false = (~mask).to_numpy().nonzero()[0]
    return int(epochs.iloc[false[-1] + 1]) if len(false) else int(epochs.iloc[0])


def overfits(loss: pd.Series, epochs: pd.Series) -> bool:
    """The overfitting rule of the findings: the lowest evaluation loss comes in the first half of
    training (or the first two epochs) and the loss ends more than 10% above it. (A rule tied to the first
    quarter would call a 30-epoch run whose loss bottoms out at epoch 8 and then doubles "not overfitting".)"""
    low_ep = int(epochs.iloc[loss.reset_index(drop=True).idxmin()])
    return low_ep <= max(2, len(loss) // 2) and loss.iloc[-1] - loss.min() > 0.1 * loss.min()


def expectation(run: Run) -> str:
    """How a report model's run compares with what its notebook expected from the author's run: whether
    the evaluation loss climbs back (the author's lowest-loss epoch in the first half says it should)
    and the best accuracy against the author's (``report/text/expectation.md``)."""
    from .wording import fill
    h, s, name = run.history, _split(run), run.config.model
    author = AUTHOR.loc[name]
    loss, acc = h[f"{s}_loss"], h[f"{s}_acc"] * 100
    climbs, expected = overfits(loss, h["epoch"]), author["lowest loss epoch"] <= 50
    shape = fill("expect_climb" if climbs else "expect_steady",
                 verdict="As expected" if climbs == expected else "Unlike what we expected",
                 low=int(h.loc[loss.idxmin(), "epoch"]), epochs=len(h), author_low=int(author["lowest loss epoch"]),
                 ratio=loss.iloc[-1] / loss.min(), excess=(loss.iloc[-1] / loss.min() - 1) * 100,
                 train=h["train_acc"].iloc[-1] * 100)
    gap = acc.max() - author["best"]
    return fill("expectation", shape=shape, author_best=author["best"], author_best_epoch=int(author["best epoch"]),
                best=acc.max(), best_epoch=int(h.loc[acc.idxmax(), "epoch"]), gap=abs(gap),
                gap_direction="above it" if gap > 0 else "below it")


def findings(runs: dict[str, Run]) -> list[dict]:
    """Each finding of the author as {claim, holds, evidence}; needs all three variants."""
    if set(runs) != set(VARIANTS):
        return []
    s = _split(runs["fc"])
    h = {n: r.history for n, r in runs.items()}
    acc = {n: h[n][f"{s}_acc"] * 100 for n in h}
    loss = {n: h[n][f"{s}_loss"] for n in h}
    epochs = h["fc"]["epoch"]
    n_ep = len(epochs)
    out = []

    def add(claim, holds, evidence):
        out.append({"claim": claim, "holds": bool(holds), "evidence": evidence})

    best = {n: acc[n].max() for n in acc}
    add("Average pooling is slightly more accurate than the fully connected head.",
        best["avgpool"] > best["fc"],
        f"best {s} accuracy {best['avgpool']:.1f}% against {best['fc']:.1f}% "
        f"(final {acc['avgpool'].iloc[-1]:.1f}% against {acc['fc'].iloc[-1]:.1f}%).")

    lower = (loss["avgpool"] < loss["fc"]).to_numpy()
    last = int(epochs.iloc[lower.nonzero()[0][-1]]) if lower.any() else None
    share = lower[:last].mean() if last else 0.0
    add("Average pooling has the lower test loss until about epoch 40.",
        last is not None and 20 <= last <= 60 and share >= 0.5,
        (f"its {s} loss is below the FC model's in {int(lower[:last].sum())} of the first {last} epochs "
         f"and in none after epoch {last}." if last else f"its {s} loss is never below the FC model's."))

    for name in ("fc", "avgpool"):
        low_ep = int(epochs.iloc[loss[name].idxmin()])
        add(f"{VARIANTS[name]}: the test loss falls fast, then rises for the rest of training (overfitting).",
            overfits(loss[name], epochs),
            f"lowest {s} loss {loss[name].min():.3f} at epoch {low_ep}, final {loss[name].iloc[-1]:.3f} "
            f"(train accuracy at the end {h[name]['train_acc'].iloc[-1] * 100:.1f}%).")

    d = "avgpool_dropout"
    add("The dropout model starts with a higher test loss than the other two.",
        loss[d].iloc[0] > max(loss["fc"].iloc[0], loss["avgpool"].iloc[0]),
        f"epoch-1 {s} loss {loss[d].iloc[0]:.3f} against {loss['fc'].iloc[0]:.3f} (FC) and "
        f"{loss['avgpool'].iloc[0]:.3f} (average pooling).")
    low_ep = int(epochs.iloc[loss[d].idxmin()])
    add("The dropout model's test loss keeps falling late into training.",
        low_ep >= n_ep // 2,
        f"its lowest {s} loss is at epoch {low_ep} of {n_ep} ({loss[d].min():.3f}; final {loss[d].iloc[-1]:.3f}).")
    lowest = (loss[d] < loss["fc"]) & (loss[d] < loss["avgpool"])
    from_ep = _first_epoch_from_which(lowest, epochs)
    add("The dropout model has the lowest test loss from about epoch 20 on.",
        from_ep is not None and from_ep <= 30,
        f"it is the lowest of the three from epoch {from_ep} to the end." if from_ep else
        f"it is the lowest in {int(lowest.sum())} of {n_ep} epochs, but not to the end.")
    add("The dropout model is the most accurate.",
        best[d] > max(best["fc"], best["avgpool"]),
        f"best {s} accuracy {best[d]:.1f}% against {best['avgpool']:.1f}% and {best['fc']:.1f}%.")
    return out


def findings_markdown(items: list[dict]) -> str:
    if not items:
        return "_The findings need finished runs of all three variants._"
    lines = [f"- {'✅ holds' if f['holds'] else '❌ does not hold'}: **{f['claim']}** {f['evidence'][0].upper()}"
             f"{f['evidence'][1:]}" for f in items]
    held = sum(f["holds"] for f in items)
    return "\n".join(lines) + f"\n\n{held} of the author's {len(items)} findings hold in this run."


def conclusion(runs: dict[str, Run]) -> str:
    """The closing paragraph: the ranking, the overfitting and what they say about the author's conclusion."""
    if set(runs) != set(VARIANTS):
        return "_The conclusion needs finished runs of all three variants._"
    s = _split(runs["fc"])
    best = {n: r.history[f"{s}_acc"].max() * 100 for n, r in runs.items()}
    order = sorted(best, key=best.get)
    ranking = " < ".join(f"{VARIANTS[n]} ({best[n]:.1f}%)" for n in order)
    same_order = order == list(VARIANTS)
    rises = {n: runs[n].history[f"{s}_loss"].iloc[-1] / runs[n].history[f"{s}_loss"].min() for n in runs}
    held = sum(f["holds"] for f in findings(runs))
    epochs = len(runs["fc"].history)
    text = (f"Ranked by best {s} accuracy over {epochs} epochs: {ranking}. "
            + ("This is the author's order. " if same_order else "This is not the author's order. ")
            + "At the end of training the test loss is "
            + ", ".join(f"{rises[n]:.2f}x its minimum for {VARIANTS[n]}" for n in runs) + ". "
            + f"{held} of the author's {len(findings(runs))} findings hold in this run. ")
    if rises["avgpool_dropout"] < min(rises["fc"], rises["avgpool"]):
        text += ("The central conclusion stands: without regularisation both models overfit, and dropout "
                 "keeps the test loss from climbing. Dropout does not remove parameters, though; it makes "
                 "each one less able to rely on the others, so the author's reading (dropout \"reduces the "
                 "number of parameters\") is better put as \"dropout regularises\". Whether fewer "
                 "parameters are the way past 90%, as the author suspected, is the subject of the "
                 "follow-up notebooks.")
    else:
        text += "In this run dropout did not keep the test loss lower than the other two models did."
    return text


JPEG_COST = 2.0   # points; the offline copy's README: a JPEG re-encoding costs about two points against the official data


def differences(runs: dict[str, Run], results_dir="results") -> str:
    """Our runs against the author's, model by model, and the known causes of a difference with their
    size where this project measured it (the head and seed studies of notebooks 07 and 08, when they exist)."""
    if not runs:
        return "_No finished runs._"
    s = _split(next(iter(runs.values())))
    lines = []
    for name, run in runs.items():
        h, a = run.history, AUTHOR.loc[name]
        acc = h[f"{s}_acc"] * 100
        lines.append(f"- **{VARIANTS[name]}**: best {acc.max():.1f}% (author {a['best']:.1f}%, {acc.max() - a['best']:+.1f} "
                     f"points) at epoch {int(h.loc[acc.idxmax(), 'epoch'])} (author {int(a['best epoch'])}); final "
                     f"{acc.iloc[-1]:.1f}% (author {a['final']:.1f}%, {acc.iloc[-1] - a['final']:+.1f}).")
    official = all(r.metrics.get("official_data") for r in runs.values())
    causes = []
    if not official:
        causes.append(f"**Data.** These runs used a JPEG re-encoding of CIFAR-10, which its maker expects to cost "
                      f"about {JPEG_COST:g} points against the official archive the author used (not measurable "
                      "here: the official archive cannot be downloaded on the project's machines).")
    studies = project_path(results_dir) / "studies"
    spread = None
    if (studies / "seeds.csv").exists():
        seeds = pd.read_csv(studies / "seeds.csv")
        spread = float((seeds["best max"] - seeds["best min"]).max())
        causes.append(f"**Seed.** Across {int(seeds['seeds'].min())} seeds one model's best accuracy moves by up to "
                      f"{spread:.1f} points (notebook 08); the author's runs were one unseeded run each.")
    else:
        causes.append("**Seed.** The author's runs were unseeded, ours seeded; the seed-to-seed spread is measured "
                      "in notebook 08.")
    if (studies / "heads.csv").exists():
        heads = pd.read_csv(studies / "heads.csv").set_index(["model", "head"])["best acc"]
        deltas = [f"{heads[m, 'author'] - heads[m, '10-way']:+.1f} points for {m}"
                  for m in heads.index.get_level_values(0).unique() if (m, "author") in heads and (m, "10-way") in heads]
        causes.append("**Head.** The author's 256-logit head instead of our 10-way head changes the best accuracy "
                      f"by {', '.join(deltas)} (notebook 07).")
    precisions = sorted({r.config.precision for r in runs.values()})
    causes.append(f"**Precision.** These runs were computed in {' and '.join(precisions)}"
                  + (" (bf16 autocast for the forward pass); the fp32 against bf16 parity runs in "
                     "`benchmarks/README.md` differ by about as much as two seeds do." if "bf16" in precisions else
                     ", as the author's were."))
    text = "\n".join(lines) + "\n\nKnown causes of a difference:\n\n" + "\n".join(f"- {c}" for c in causes)
    if spread is not None:
        band = spread + (0 if official else JPEG_COST)
        heads = {name.removesuffix("_author_head"): run for name, run in author_head_runs(results_dir).items()}
        compared = {**runs, **{n: r for n, r in heads.items() if n in runs}}     # like with like where 07 ran
        beyond = [VARIANTS[n] for n, r in compared.items()
                  if abs(r.history[f"{s}_acc"].max() * 100 - AUTHOR.loc[n, "best"]) > band]
        which = ("the author's output where notebook 07 trained it, else ours"
                 if any(n in runs for n in heads) else "our 10-way output")
        text += (f"\n\nThe data copy and the seed together account for differences of up to about {band:.1f} "
                 f"points. Compared with {which}: "
                 + ("every model's best accuracy is within that of the author's." if not beyond else
                    f"beyond that are {', '.join(beyond)}; there the causes above do not explain the whole gap."))
    return text
