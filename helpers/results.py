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
from .files import cached, digest, project_path, replace_sections, shown_path, weights_digest
from .models import VARIANTS
from .device import runnable_precision
from .config import TrainConfig
from .runs import check_measured_on, load_run, Run, RunDataError
from .facts import Fact, fact
from .wording import fill

# The original report's results (SPEC.md): one unseeded run per model on a Colab GPU.
AUTHOR = pd.DataFrame(
    {"epoch 1": [54.8, 49.0, 47.9], "epoch 10": [76.4, 79.7, 76.9], "best": [77.3, 80.0, 83.0],
     "best epoch": [21, 9, 55], "final": [76.6, 77.2, 82.3], "lowest loss epoch": [5, 8, 95],
     "parameters": [2_190_122, 1_132_842, 1_132_842]},
    index=list(VARIANTS))


def author_fact(name: str, column: str = "best") -> Fact:
    """One of the author's numbers (``AUTHOR``) as the fact ``author.<model>.<column>``."""
    return fact(f"author.{name}.{column.replace(' ', '_')}", float(AUTHOR.loc[name, column]),
                "epochs" if "epoch" in column and "epoch " not in column else "%1")


def run_fact(run: Run, what: str = "best") -> Fact:
    """A run's best or final accuracy on its evaluation split, in percent, as the fact
    ``runs.<folder>.<what>``: stated with one decimal wherever it appears, as the author's are."""
    acc = run.history[f"{_split(run)}_acc"] * 100
    name = run.path.name if run.path else run.config.model + ("_author_head" if run.config.head == "author" else "")
    return fact(f"runs.{name}.{what}", acc.max() if what == "best" else acc.iloc[-1], "%1", [name])


def markdown_table(df: pd.DataFrame, floatfmt: str = "{:,.1f}") -> str:
    """A pandas table as GitHub Markdown (without the optional tabulate dependency); a missing number
    (NaN, such as the gain of a ladder's first step) is an empty cell."""
    cell = lambda v: ("" if v != v else floatfmt.format(v)) if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def write_section(path, name: str, text: str) -> None:
    """Replace the generated region ``name`` of a Markdown file (``files.replace_sections``: refused, with
    nothing written, if its markers are missing or doubled)."""
    replace_sections(path, {name: text})


class ResultsFolderError(ValueError):
    """A results folder that does not exist or holds none of the report's runs."""


def check_results_folder(results_dir="results") -> Path:
    """``results_dir`` as a path, refused (``ResultsFolderError``, the same for every script) when it is not
    a folder or holds no finished run of the report's models: a mistyped name must not empty a report."""
    folder = project_path(results_dir)
    if not folder.is_dir():
        raise ResultsFolderError(f"the results folder {results_dir} does not exist (looked in {folder}). Give the "
                                 "folder the notebooks trained into (--results results, the default).")
    if not any((folder / name / "metrics.json").exists() for name in VARIANTS):
        raise ResultsFolderError(f"the results folder {results_dir} holds none of the report's runs "
                                 f"({', '.join(VARIANTS)}). Run notebooks 03-05 into it first, or give another "
                                 "folder.")
    return folder


def check_run_name(run: Run, name: str, head: str = "linear") -> Run:
    """``run`` if it holds the model its folder ``name`` says (model and head), else a ``RunDataError``: two
    swapped folders would report each model with the other's numbers."""
    if run.config.model != name or run.config.head != head:
        raise RunDataError(f"{shown_path(run.path)} holds a run of {run.config.model} with the {run.config.head} head "
                           f"(metrics.json), not {name} with the {head} head as its folder says. Move each run to "
                           "the folder named after its model (git status shows what moved).")
    return run


def load_runs(results_dir="results", names=tuple(VARIANTS)) -> dict[str, Run]:
    """The finished runs among ``names``, those of the report's models checked against their folder's name;
    missing ones are reported and skipped."""
    runs = {}
    for name in names:
        try:
            run = load_run(Path(project_path(results_dir)) / name)
            runs[name] = check_run_name(run, name) if name in VARIANTS else run
        except FileNotFoundError as exc:
            print(f"skipped {name}: {exc}")
    return runs


def author_head_runs(results_dir="results") -> dict[str, Run]:
    """Notebook 07's runs of models 2 and 3 with the author's 256-logit output, those that have finished."""
    names = [f"{n}_author_head" for n in VARIANTS if n != "fc"]
    return {n: check_run_name(load_run(Path(project_path(results_dir)) / n), n.removesuffix("_author_head"), "author")
            for n in names if (project_path(results_dir) / n / "metrics.json").exists()}


def test_predictions(run: Run, images: torch.Tensor, device=None) -> torch.Tensor:
    """The class ``run``'s final weights predict for each of ``images`` (normalised), with the run's own
    test-time options. Measured once and kept beside the run (``test_predictions.json``, with the
    precision it was computed in), keyed by the images, so a re-render reads it back."""
    check_measured_on(run, images)
    device = torch.device(device) if device is not None else torch.device("cpu")
    def measure():
        precision = runnable_precision(run.config.precision, device)
        logits = predict(run.model.to(device), images, precision=precision, tta_flip=run.config.tta_flip,
                         tta_shift=run.config.tta_shift)
        run.model.cpu()
        return {"predicted": logits.argmax(1).cpu().tolist(), "precision": precision}
    key = {"images": digest(images), "config": run.config.identity(), "weights": weights_digest(run.model)}
    ok = lambda v: isinstance(v, dict) and isinstance(v.get("predicted"), list) and len(v["predicted"]) == len(images)  # noqa: E731
    return torch.tensor(cached(run.path / "test_predictions.json", key, measure, check=ok)["predicted"])


def _split(run: Run) -> str:
    return run.config.eval_split


def run_summary(run: Run) -> str:
    """A short paragraph about one run, every number read from its history and metrics."""
    h, s = run.history, _split(run)
    acc, loss = h[f"{s}_acc"] * 100, h[f"{s}_loss"]
    gap = (h["train_acc"].iloc[-1] - h[f"{s}_acc"].iloc[-1]) * 100
    return fill("results:run", model=VARIANTS.get(run.config.model, run.config.model),
                parameters=run.metrics["parameters"], epochs_text=f"{len(h)} epoch{'s' if len(h) != 1 else ''}",
                precision=run.config.precision, split=s,
                best=run_fact(run), best_epoch=int(h.loc[acc.idxmax(), "epoch"]), final=run_fact(run, "final"),
                low_epoch=int(h.loc[loss.idxmin(), "epoch"]), low=loss.min(), end=loss.iloc[-1],
                train=h["train_acc"].iloc[-1] * 100, gap=abs(gap), gap_direction="above" if gap >= 0 else "below",
                timing=timing(h, run.metrics.get("environment", {})))


def timing(h: pd.DataFrame, env: dict) -> str:
    """Wall time of a run in words; flags epochs slowed by other work on the machine (over 1.5x the median)."""
    median, total = h["seconds"].median(), h["seconds"].sum()
    slow = h["seconds"] > 1.5 * median
    slowed = "" if not slow.any() else fill(
        "results:timing_slowed", slow=int(slow.sum()), epochs=len(h), longest=_duration(h["seconds"].max()),
        undisturbed=len(h) * median / 60)
    return fill("results:timing", minutes=total / 60, device=env.get("device", "?"),
                threads=_threads(env.get("threads", "?")), median=median, slowed=slowed)


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


def epoch_table(runs: dict[str, Run], author_head: dict[str, Run] | None = None) -> pd.DataFrame:
    """When each run peaked and when its loss was lowest, like for like as ``accuracy_table``: the author's
    epochs beside our run with the same output; our 10-way runs of models 2 and 3 in rows of their own."""
    rows = []
    for name, run in runs.items():
        same = (author_head or {}).get(f"{name}_author_head")
        pairs = ([(same, "256 logits (author's)"), (run, "10-way (ours)")] if same else
                 [(run, "10-way" if name == "fc" else "10-way (ours)")])
        for k, (r, output) in enumerate(pairs):
            h, s = r.history, _split(r)
            comparable = k == 0 and (name == "fc" or same is not None)
            rows.append({"model": VARIANTS[name], "output": output,
                         "best epoch": int(h.loc[h[f"{s}_acc"].idxmax(), "epoch"]),
                         "author best epoch": int(AUTHOR.loc[name, "best epoch"]) if comparable else pd.NA,
                         "lowest loss epoch": int(h.loc[h[f"{s}_loss"].idxmin(), "epoch"]),
                         "author lowest loss epoch": int(AUTHOR.loc[name, "lowest loss epoch"]) if comparable else pd.NA,
                         "epochs": len(h)})
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


# Settings that do not change what the author's protocol trains: a run that differs only in these is compared.
NOT_PROTOCOL = {"seed", "precision", "model", "head"}


def protocol_differences(config: TrainConfig) -> dict:
    """{setting: (this run's value, the author's protocol's)} for every setting in which ``config`` departs from
    the author's protocol for its model (seed, precision and the output head aside)."""
    return {k: v for k, v in config.differences(TrainConfig(model=config.model, head=config.head)).items()
            if k not in NOT_PROTOCOL}


def settings_note(config: TrainConfig) -> str:
    """The settings that differ from the author's protocol, in a few words ("" for the protocol itself)."""
    return ", ".join(f"{k} {a}" for k, (a, _) in protocol_differences(config).items())


def expectation(run: Run) -> str:
    """How a report model's run compares with what its notebook expected from the author's run: whether
    the evaluation loss climbs back (the author's lowest-loss epoch in the first half says it should)
    and the best accuracy against the author's (``report/text/expectation.md``). Only a run like the author's
    is compared: one that departs from the protocol names the settings instead, and our 10-way variant of
    models 2 and 3 says that notebook 07 makes the comparison with the author's output."""
    differs = protocol_differences(run.config)
    if differs:
        return fill("expectation_off_protocol", settings=", ".join(
            f"{k} = {a!r} (the protocol's: {b!r})" for k, (a, b) in differs.items()))
    h, s, name = run.history, _split(run), run.config.model
    if name != "fc" and run.config.head != "author":     # our 10-way variant: the author's run is not like it
        acc = h[f"{s}_acc"] * 100
        return fill("expectation_variant", best=run_fact(run), best_epoch=int(h.loc[acc.idxmax(), "epoch"]),
                    low=int(h.loc[h[f"{s}_loss"].idxmin(), "epoch"]), epochs=len(h))
    author = AUTHOR.loc[name]
    loss, acc = h[f"{s}_loss"], h[f"{s}_acc"] * 100
    climbs, expected = overfits(loss, h["epoch"]), author["lowest loss epoch"] <= 50
    shape = fill("expect_climb" if climbs else "expect_steady",
                 verdict="As expected" if climbs == expected else "Unlike what we expected",
                 low=int(h.loc[loss.idxmin(), "epoch"]), epochs=len(h), author_low=int(author["lowest loss epoch"]),
                 ratio=loss.iloc[-1] / loss.min(), excess=(loss.iloc[-1] / loss.min() - 1) * 100,
                 train=h["train_acc"].iloc[-1] * 100)
    gap = acc.max() - author["best"]
    return fill("expectation", shape=shape, author_best=author_fact(name), author_best_epoch=int(author["best epoch"]),
                best=run_fact(run), best_epoch=int(h.loc[acc.idxmax(), "epoch"]), gap=abs(gap),
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

    def add(key, holds, evidence, **claim_fields):
        out.append({"claim": fill(f"findings:{key}", **claim_fields), "holds": bool(holds), "evidence": evidence})

    def said(key, **fields):
        return fill(f"findings:{key}", split=s, **fields)

    best = {n: acc[n].max() for n in acc}
    add("avgpool_accuracy", best["avgpool"] > best["fc"],
        said("avgpool_accuracy_evidence", avg=best["avgpool"], fc=best["fc"], avg_final=acc["avgpool"].iloc[-1],
             fc_final=acc["fc"].iloc[-1]))

    lower = (loss["avgpool"] < loss["fc"]).to_numpy()
    last = int(epochs.iloc[lower.nonzero()[0][-1]]) if lower.any() else None
    share = lower[:last].mean() if last else 0.0
    add("avgpool_loss", last is not None and 20 <= last <= 60 and share >= 0.5,
        said("avgpool_loss_evidence", below=int(lower[:last].sum()), last=last) if last else
        said("avgpool_loss_never"))

    for name in ("fc", "avgpool"):
        add("overfits", overfits(loss[name], epochs),
            said("overfits_evidence", low=loss[name].min(), low_epoch=int(epochs.iloc[loss[name].idxmin()]),
                 end=loss[name].iloc[-1], train=h[name]["train_acc"].iloc[-1] * 100), model=VARIANTS[name])

    d = "avgpool_dropout"
    add("dropout_starts_high", loss[d].iloc[0] > max(loss["fc"].iloc[0], loss["avgpool"].iloc[0]),
        said("dropout_starts_high_evidence", dropout=loss[d].iloc[0], fc=loss["fc"].iloc[0],
             avg=loss["avgpool"].iloc[0]))
    low_ep = int(epochs.iloc[loss[d].idxmin()])
    add("dropout_keeps_falling", low_ep >= n_ep // 2,
        said("dropout_keeps_falling_evidence", low_epoch=low_ep, epochs=n_ep, low=loss[d].min(), end=loss[d].iloc[-1]))
    lowest = (loss[d] < loss["fc"]) & (loss[d] < loss["avgpool"])
    from_ep = _first_epoch_from_which(lowest, epochs)
    add("dropout_lowest", from_ep is not None and from_ep <= 30,
        said("dropout_lowest_evidence", from_epoch=from_ep) if from_ep else
        said("dropout_lowest_not_to_end", lowest=int(lowest.sum()), epochs=n_ep))
    add("dropout_most_accurate", best[d] > max(best["fc"], best["avgpool"]),
        said("dropout_most_accurate_evidence", dropout=best[d], avg=best["avgpool"], fc=best["fc"]))
    return out


def findings_markdown(items: list[dict]) -> str:
    if not items:
        return fill("findings:missing")
    lines = [fill("findings:line", verdict=fill("findings:holds" if f["holds"] else "findings:fails"), claim=f["claim"],
                  evidence=f["evidence"][0].upper() + f["evidence"][1:]) for f in items]
    return "\n".join(lines) + "\n\n" + fill("findings:summary", held=sum(f["holds"] for f in items), n=len(items))


def conclusion(runs: dict[str, Run]) -> str:
    """The closing paragraph: the ranking, the overfitting and what they say about the author's conclusion."""
    if set(runs) != set(VARIANTS):
        return fill("results:conclusion_missing")
    s = _split(runs["fc"])
    best = {n: r.history[f"{s}_acc"].max() * 100 for n, r in runs.items()}
    order = sorted(best, key=best.get)
    rises = {n: runs[n].history[f"{s}_loss"].iloc[-1] / runs[n].history[f"{s}_loss"].min() for n in runs}
    found = findings(runs)
    return fill("results:conclusion", split=s, epochs=len(runs["fc"].history),
                ranking=" < ".join(f"{VARIANTS[n]} ({best[n]:.1f}%)" for n in order),
                order=fill("results:same_order" if order == list(VARIANTS) else "results:other_order"),
                rises=", ".join(fill("results:rise", ratio=rises[n], model=VARIANTS[n]) for n in runs),
                held=sum(f["holds"] for f in found), n=len(found),
                dropout=fill("results:dropout_helps" if rises["avgpool_dropout"] < min(rises["fc"], rises["avgpool"])
                             else "results:dropout_did_not_help"))


CLAIMED_JPEG_COST = 2.0   # points: what the offline copy's maker expects its JPEG pass to cost; used until measured
