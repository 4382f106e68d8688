"""The seed study (notebook 08): every model with several seeds on a shorter schedule, the spread of
its accuracy, and the report's conclusions checked seed by seed."""
from __future__ import annotations

import dataclasses
import math

import pandas as pd

from .. import data as D
from ..models import VARIANTS
from ..results import overfits
from ..device import pick_device, resolve_precision
from ..files import project_path, shown_path
from ..config import TrainConfig
from ..runs import load_run, Run
from ..training import fit
from ..facts import fact
from ..wording import fill
from .common import SHORT_NAMES


def history_prefix(longer: Run, config: TrainConfig) -> pd.DataFrame | None:
    """The first ``config.epochs`` epochs of ``longer`` when they *are* a run of ``config``, else None.

    That holds when the two configurations differ only in the number of epochs, the learning rate is
    constant and the model is evaluated every epoch: then nothing in the first N epochs depends on the
    total, and a shorter run repeats them bit for bit (tests/test_studies.py checks this).
    """
    same = set(longer.config.differences(config)) <= {"epochs"}   # precision aside: it says how, not what
    if not same or config.schedule != "constant" or not config.eval_each_epoch or len(longer.history) < config.epochs:
        return None
    return longer.history.iloc[:config.epochs].reset_index(drop=True)


def seed_study(data: D.CIFAR10, seeds, epochs: int, results_dir="results", reuse_from="results",
               device=None, **options) -> tuple[dict, pd.DataFrame]:
    """Train every variant with each seed for ``epochs`` epochs (report protocol otherwise).

    A run already in ``reuse_from/<variant>`` (the report's 100-epoch runs) stands in for its seed when
    ``history_prefix`` says its first epochs are exactly the shorter run. Returns
    ``{(variant, seed): history}`` and a table saying where each history came from.
    """
    histories, sources = {}, []
    for variant in VARIANTS:
        for seed in seeds:
            config = TrainConfig(model=variant, seed=seed, epochs=epochs, **options)
            config = dataclasses.replace(config, precision=resolve_precision(config.precision, pick_device(device)))
            longer = project_path(reuse_from) / config.default_name()
            hist = None
            if (longer / "metrics.json").exists():
                hist = history_prefix(load_run(longer), config)
            if hist is not None:
                source = f"first {epochs} epochs of {shown_path(longer)}"
            else:
                name = f"seeds/{config.default_name()}_{epochs}ep"
                run = fit(config, data, run_name=name, results_dir=results_dir, device=device,
                          verbose=not (project_path(results_dir) / name / "metrics.json").exists())
                hist, source = run.history, str(shown_path(run.path))
            histories[variant, seed] = hist
            sources.append({"model": VARIANTS[variant], "seed": seed, "history from": source})
            print(f"{variant} seed {seed}: best test accuracy {hist['test_acc'].max():.2%}, "
                  f"final {hist['test_acc'].iloc[-1]:.2%} ({source})", flush=True)
    return histories, pd.DataFrame(sources)


def seed_table(histories: dict) -> pd.DataFrame:
    """Per variant: mean, standard deviation and range over seeds of best and final test accuracy (%),
    and the epochs of the lowest test loss."""
    rows = {}
    for variant in VARIANTS:
        hs = [h for (v, _), h in histories.items() if v == variant]
        if not hs:
            continue
        best = pd.Series([h["test_acc"].max() * 100 for h in hs])
        final = pd.Series([h["test_acc"].iloc[-1] * 100 for h in hs])
        rows[VARIANTS[variant]] = {
            "seeds": len(hs), "epochs": max(len(h) for h in hs),
            "best mean": best.mean(), "best sd": best.std(ddof=1) if len(hs) > 1 else math.nan,
            "best min": best.min(), "best max": best.max(), "final mean": final.mean(),
            "final sd": final.std(ddof=1) if len(hs) > 1 else math.nan,
            "lowest loss epochs": ", ".join(str(int(h.loc[h["test_loss"].idxmin(), "epoch"])) for h in hs),
            "final/lowest loss": pd.Series([h["test_loss"].iloc[-1] / h["test_loss"].min() for h in hs]).mean()}
    return pd.DataFrame(rows).T.infer_objects()


def seed_checks(histories: dict) -> list[dict]:
    """The report's conclusions, each checked seed by seed: {claim, seeds, held, evidence}."""
    seeds = sorted({s for (_, s) in histories})
    if any((v, s) not in histories for v in VARIANTS for s in seeds):
        return []
    per_seed = {s: {v: histories[v, s] for v in VARIANTS} for s in seeds}
    best = {s: {v: h["test_acc"].max() * 100 for v, h in hs.items()} for s, hs in per_seed.items()}
    final_loss = {s: {v: h["test_loss"].iloc[-1] for v, h in hs.items()} for s, hs in per_seed.items()}
    checks = [
        (fill("seeds:ranking"),
         {s: b["fc"] < b["avgpool"] < b["avgpool_dropout"] for s, b in best.items()},
         {s: " < ".join(f"{b[v]:.1f}" for v in VARIANTS) for s, b in best.items()}),
        (fill("seeds:fc_overfits"),
         {s: overfits(hs["fc"]["test_loss"], hs["fc"]["epoch"]) for s, hs in per_seed.items()},
         {s: _loss_story(hs["fc"]) for s, hs in per_seed.items()}),
        (fill("seeds:avgpool_overfits"),
         {s: overfits(hs["avgpool"]["test_loss"], hs["avgpool"]["epoch"]) for s, hs in per_seed.items()},
         {s: _loss_story(hs["avgpool"]) for s, hs in per_seed.items()}),
        (fill("seeds:dropout_lowest_loss"),
         {s: min(fl, key=fl.get) == "avgpool_dropout" for s, fl in final_loss.items()},
         {s: ", ".join(f"{SHORT_NAMES[v]} {fl[v]:.2f}" for v in VARIANTS) for s, fl in final_loss.items()}),
    ]
    return [{"claim": claim, "seeds": len(seeds), "held": sum(holds.values()),
             "evidence": " ".join(f"Seed {s}: {ev[s]}." for s in seeds)} for claim, holds, ev in checks]


def _loss_story(h: pd.DataFrame) -> str:
    loss = h["test_loss"]
    return fill("seeds:loss_story", low=loss.min(), low_epoch=int(h.loc[loss.idxmin(), "epoch"]), end=loss.iloc[-1])


def seed_checks_markdown(checks: list[dict]) -> str:
    if not checks:
        return fill("seeds:checks_missing")
    lines = [fill("seeds:check", **c) for c in checks]
    solid = [c for c in checks if c["held"] == c["seeds"]]
    return "\n".join(lines) + "\n\n" + fill("seeds:checks_summary", solid=len(solid), n=len(checks))


def welch(a: pd.Series, b: pd.Series) -> dict:
    """Welch's t for the difference of two models' mean best accuracies over their seeds (unpaired: other
    models, other runs), its Welch-Satterthwaite degrees of freedom, and whether it passes the two-sided
    95% point of Student's t (taken at the whole degrees of freedom below, the cautious side)."""
    from .precision import _T95
    va, vb = a["best sd"] ** 2 / a["seeds"], b["best sd"] ** 2 / b["seeds"]
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (a["seeds"] - 1) + vb ** 2 / (b["seeds"] - 1))
    t = (a["best mean"] - b["best mean"]) / se
    beyond = abs(t) > _T95.get(max(1, math.floor(df)), 1.96)
    return {"t": t, "df": df, "verdict": "beyond the seed noise" if beyond else "within the seed noise"}


def seed_spread(table: pd.DataFrame) -> str:
    """How the seed-to-seed spread compares with the gaps between the models, in one paragraph."""
    if len(table) < 2:
        return ""
    spread = table["best max"] - table["best min"]
    order = table["best mean"].sort_values()
    gaps = "\n".join(fill("seeds:gap", upper=upper, lower=lower, gap=table.loc[upper, "best mean"] -
                          table.loc[lower, "best mean"], **welch(table.loc[upper], table.loc[lower]))
                     for lower, upper in zip(order.index[:-1], order.index[1:]))
    return fill("seeds:spread", **spread_facts(table), widest=spread.idxmax(), gaps=gaps)


def spread_facts(table: pd.DataFrame) -> dict:
    """The seed study in two numbers, for notebook 08, the paper and notebook 06: the widest range of one
    model's best accuracy over its seeds and the largest standard deviation, with the fewest seeds run."""
    sources = ["seeds"]
    return {"seeds": int(table["seeds"].min()),
            "spread": fact("seeds.widest_range", (table["best max"] - table["best min"]).max(), "points1", sources),
            "sd": fact("seeds.largest_sd", table["best sd"].max(), "sd", sources)}
