"""The report read as a whole: the numbers the README's first screen and the written report state, and
notebook 06's comparison with the author with the causes the studies measured (``differences``), gathered
from ``results/`` and the studies' files. It sits above both ``results`` (one run at a time) and
``studies`` (which build on it), so neither imports the other's reader. The wording is in ``report/text/``
and ``report/paper.typ``."""
from __future__ import annotations

import json

from . import calibration, explain, results, studies
from .facts import fact
from .files import REPO_ROOT, numbered_notebooks, project_path, read_json, read_study_table
from .wording import fill
from .models import VARIANTS
from .recipe import REFRESH_IMAGES
from .runs import load_run, Run


def learned_fields(results_dir="results") -> dict:
    """The numbers and verdicts of notebook 10, from what it saved (empty if it has not run)."""
    names = [*VARIANTS, "final"]
    folder = project_path(results_dir)
    stats_file = folder / "studies" / "cam_statistics.json"
    if not stats_file.exists() or not all((folder / n / "calibration.json").exists() for n in names):
        return {}
    runs = {n: load_run(folder / n, weights=False) for n in names}
    measured = {n: read_json(folder / n / "calibration.json", "cached measurement")["value"] for n in names}
    rises = {n: calibration.loss_rise(runs[n], m) for n, m in measured.items()}
    fields = calibration.report_fields(measured, rises, runs, {n: n for n in names})
    fields.update(explain.cam_fields(read_json(stats_file, "cached measurement")["value"]))
    return fields


def gap_fact(run: Run, value: float, what: str = "best"):
    """A run's accuracy less the author's (points) as the fact ``vs_author.<run folder>.<what>``."""
    name = results.run_fact(run).sources[0]
    return fact(f"vs_author.{name}.{what}", value, "+points1", [name])


def headline_fields(runs: dict, results_dir="results") -> dict:
    """The reproduction in numbers: each model's best test accuracy beside the author's (like with like),
    ours with the 10-way head, how many of the author's findings hold, and the final recipe over seeds
    (``seeds_*``; absent when no seed has finished). Empty unless all three report runs have finished."""
    if len(runs) != len(VARIANTS):
        return {}
    heads = results.author_head_runs(results_dir)
    like = {n: heads.get(f"{n}_author_head", run) for n, run in runs.items()}     # like for like
    gaps = [float(results.author_fact(n)) - float(results.run_fact(r)) for n, r in like.items()]
    found = results.findings(runs)
    sources = [r.path.name for r in like.values()]
    fields = {"fc_best": results.run_fact(like["fc"]), "avg_best": results.run_fact(like["avgpool"]),
              "drop_best": results.run_fact(like["avgpool_dropout"]),
              "avg_ours": results.run_fact(runs["avgpool"]), "drop_ours": results.run_fact(runs["avgpool_dropout"]),
              "gap_lo": fact("headline.gap_lo", min(gaps), "points1", sources),
              "gap_hi": fact("headline.gap_hi", max(gaps), "points1", sources),
              "n_hold": fact("headline.findings_held", sum(f["holds"] for f in found), "count", [*runs]),
              "n_findings": fact("headline.findings", len(found), "count", [*runs])}
    seeds = studies.finished_final_seeds(results_dir)
    if seeds:
        seed_fields = studies.final_seed_fields(studies.final_seed_table(seeds))
        fields.update({f"seeds_{k}": v for k, v in seed_fields.items()})
    return fields


def differences(runs: dict[str, Run], results_dir="results") -> str:
    """Our runs against the author's, model by model, and the known causes of a difference with their
    size where this project measured it (the head and seed studies of notebooks 07 and 08, the JPEG and
    precision comparisons of notebook 09, when they exist)."""
    if not runs:
        return fill("results:no_runs")
    s = results._split(next(iter(runs.values())))
    lines = []
    heads = results.author_head_runs(results_dir)
    for name, run in runs.items():
        same = heads.get(f"{name}_author_head")       # like for like: the author's output, where notebook 07 ran
        like = same if same is not None else run if name == "fc" else None
        if like is not None:
            h, a = like.history, results.AUTHOR.loc[name]
            acc = h[f"{s}_acc"] * 100
            best, final = results.run_fact(like), results.run_fact(like, "final")
            lines.append(fill("results:difference", model=VARIANTS[name] + (", author's output" if same else ""),
                              best=best, author_best=results.author_fact(name), best_gap=gap_fact(like, acc.max() - a["best"]),
                              best_epoch=int(h.loc[acc.idxmax(), "epoch"]), author_best_epoch=int(a["best epoch"]),
                              final=final, author_final=results.author_fact(name, "final"),
                              final_gap=gap_fact(like, acc.iloc[-1] - a["final"], "final")))
        if name != "fc":                               # our 10-way variant: no author's run is like it
            acc = run.history[f"{s}_acc"] * 100
            lines.append(fill("results:variant", model=VARIANTS[name], best=results.run_fact(run),
                              final=results.run_fact(run, "final"),
                              best_epoch=int(run.history.loc[acc.idxmax(), "epoch"])))
    official = all(r.metrics.get("official_data") for r in runs.values())
    causes = []
    jpeg_cost = 0.0
    if not official:
        measured = studies.jpeg.measured_cost(results_dir)
        if measured:        # notebook 09's estimate; its upper end (plus two standard errors) bounds the band below
            jpeg_cost = measured["high"] + 2 * measured["high_se"]
            causes.append(fill("results:cause_data_measured", upper=jpeg_cost, **measured))
            models = studies.gap.jpeg_cost_list(studies.gap.jpeg_table(results_dir))
            if models:
                causes[-1] += " " + fill("results:cause_data_models", models=models)
        else:
            jpeg_cost = results.CLAIMED_JPEG_COST
            causes.append(fill("results:cause_data", jpeg_cost=jpeg_cost))
    study_dir = project_path(results_dir) / "studies"
    spread = None
    if (study_dir / "seeds.csv").exists():
        found = studies.spread_facts(read_study_table(results_dir, "seeds").set_index("model"))
        spread = float(found["spread"])
        causes.append(fill("results:cause_seed", seeds=found["seeds"], spread=found["spread"]))
    else:
        causes.append(fill("results:cause_seed_unmeasured"))
    if (study_dir / "heads.csv").exists():
        heads = read_study_table(results_dir, "heads").set_index(["model", "head"])["best acc"]
        deltas = [fill("results:head_delta", delta=heads[m, "author"] - heads[m, "10-way"], model=m)
                  for m in heads.index.get_level_values(0).unique() if (m, "author") in heads and (m, "10-way") in heads]
        causes.append(fill("results:cause_head", deltas=", ".join(deltas)))
    precisions = sorted({r.config.precision for r in runs.values()})
    both = studies.precision_fields(studies.final_seed_table(studies.finished_final_seeds(results_dir)))    # notebook 09, where it ran
    if "bf16" not in precisions:
        piece, both = "cause_precision_fp32", {}
    else:
        piece, both = ("cause_precision_measured", both) if both else ("cause_precision_bf16", {})
    causes.append(fill(f"results:{piece}", precisions=" and ".join(precisions), **both))
    paired = studies.precision.measured_precision(results_dir) if "bf16" in precisions else None
    if paired:      # the same seeds in both precisions, on model 1 with the report's protocol
        causes[-1] += " " + fill("results:cause_precision_paired", **paired)
    text = "\n".join(lines) + "\n\n" + fill("results:causes") + "\n\n" + "\n".join(f"- {c}" for c in causes)
    if spread is not None:
        band = spread + jpeg_cost
        heads = {name.removesuffix("_author_head"): run for name, run in results.author_head_runs(results_dir).items()}
        compared = {**runs, **{n: r for n, r in heads.items() if n in runs}}     # like with like where 07 ran
        beyond = [VARIANTS[n] for n, r in compared.items()
                  if abs(r.history[f"{s}_acc"].max() * 100 - results.AUTHOR.loc[n, "best"]) > band]
        text += "\n\n" + fill(
            "results:band", band=band,
            compared=fill("results:band_compared_author" if any(n in runs for n in heads) else "results:band_compared_ours"),
            verdict=fill("results:band_beyond", beyond=", ".join(beyond)) if beyond else fill("results:band_within"))
    return text


def report_facts(results_dir="results", notebooks_dir=REPO_ROOT / "notebooks") -> dict:
    """Every number and phrase the written report states, gathered once from ``results/``: numbers as facts
    (``helpers/facts.py``; the same objects the README and the notebooks state), settings and verdicts as
    words. The paper reads them from ``report/tables/facts.json``."""
    folder = project_path(results_dir)
    runs = results.load_runs(folder)
    head = headline_fields(runs, folder)
    d: dict = {}
    if head:
        d.update({k: head[k] for k in ("fc_best", "avg_best", "drop_best", "gap_lo", "gap_hi", "n_hold", "n_findings")})
        first = runs["fc"]
        d.update(epochs=str(first.config.epochs), batch=str(first.config.batch_size), lr=f"{first.config.lr:g}",
                 weight_decay=f"{first.config.weight_decay:g}",
                 precision=" and ".join(sorted({r.config.precision for r in runs.values()})),
                 data="the official CIFAR-10 archive" if first.metrics["official_data"] else
                 "an offline copy of CIFAR-10 re-encoded as JPEG at quality 75 (not the official archive)")
        # differences of the numbers as Table 2 prints them, so that a reader's subtraction agrees with the text
        for key, ours, theirs in (("avg", "avg_ours", "avg_best"), ("drop", "drop_ours", "drop_best")):
            d[f"head_gain_{key}"] = fact(f"headline.head_gain_{key}", round(head[ours], 1) - round(head[theirs], 1),
                                         "+points1", head[ours].sources + head[theirs].sources)
        d["findings_failed"] = "; ".join(f"“{f['claim'].rstrip('.')}”" for f in results.findings(runs)
                                         if not f["holds"]) or "none"
        d.update({f"author_{k}": results.author_fact(n) for k, n in (("fc", "fc"), ("avg", "avgpool"),
                                                                     ("drop", "avgpool_dropout"))})
    seeds = {k.removeprefix("seeds_"): v for k, v in head.items() if k.startswith("seeds_")}
    if seeds:
        table = studies.final_seed_table(studies.finished_final_seeds(folder))
        d["final_precisions"] = " and ".join(f"{p} (seed{'s' if len(g) > 1 else ''} {', '.join(map(str, g.index))})"
                                             for p, g in table.groupby("precision"))
        d.update(final_n=seeds["n"], final_mean=seeds["mean"], final_low=seeds["low"], final_one=seeds["one_mean"])
    if (folder / "studies" / "seeds.csv").exists():
        s = read_study_table(folder, "seeds")
        spread = studies.spread_facts(s.set_index("model"))
        d.update(seed_count=str(spread["seeds"]), seed_epochs=str(int(s["epochs"].max())),
                 seed_spread=spread["spread"], seed_sd=spread["sd"])
    if (folder / "studies" / "ladder.csv").exists():
        ladder = read_study_table(folder, "ladder")
        rows = {r["step"]: r for _, r in ladder.iterrows()}
        hyp = studies.hypothesis_fields(ladder) or {}
        d.update(ladder_images=f"{int(ladder['val images'].iloc[0]):,}",
                 ladder_noise=str(int(ladder["within noise"].sum())),
                 ladder_changes=str(int(ladder["gain"].notna().sum())), hypothesis_verdict=hyp.get("verdict", ""),
                 ladder_first=studies.ladder.step_fact(ladder.iloc[0], "val acc"),
                 ladder_last=hyp.get("last_acc", ""), ladder_ratio=hyp.get("ratio", ""))
        if "batchnorm" in rows:
            d.update(bn_gain=studies.ladder.step_fact(rows["batchnorm"], "gain"),
                     bn_gain_as_trained=studies.ladder.step_fact(rows["batchnorm"], "gain as trained"))
        d["ladder_epochs"] = str(int(ladder["epochs"].max()))
        cuts = [r for _, r in ladder[ladder["branch"].astype(bool)].iterrows()
                if r["parameters"] < rows[r["builds on"]]["parameters"]]
        d["cuts"] = "; ".join(f"{r['change']} {studies.ladder.step_fact(r, 'gain')} points" for r in cuts)
        d["cuts_as_trained"] = "; ".join(f"{r['change']} {studies.ladder.step_fact(r, 'gain as trained')}"
                                         for r in cuts)
    if (folder / "studies" / "final.json").exists():
        info = read_json(folder / "studies" / "final.json", "study's summary")
        d.update(final_parameters=f"{info['parameters']:,}", final_epochs=str(info["epochs"]))
        final_run = load_run(folder / "final", weights=False)
        d.update(final_images=f"{final_run.metrics['train_images']:,}", final_shift=str(final_run.config.tta_shift),
                 refresh_images=f"{REFRESH_IMAGES:,}")
        if (folder / "studies" / "ladder.csv").exists():
            label = read_study_table(folder, "ladder").set_index("step").loc[info["step"], "change"]
            d["final_change"] = label[2:] if label.startswith("+ ") else label
    d["gap_jpeg"] = studies.gap.jpeg_cost_list(studies.gap.jpeg_table(folder)) or "none"
    cost = studies.jpeg.measured_cost(folder)            # the paper says "not measured yet" until it is
    d["jpeg_measured"] = "yes" if cost else "no"
    d.update({f"jpeg_{k}": cost[k] if cost else "–" for k in JPEG_STATED})
    d["jpeg_curved_measured"] = "yes" if cost and cost["tangent"] == cost["tangent"] else "no"
    paired = studies.precision.measured_precision(folder)     # the paired bf16-fp32 check, once two pairs finished
    d["paired_measured"] = "yes" if paired else "no"
    d.update({f"paired_{k}": paired[k] if paired else "–" for k in PAIRED_STATED})
    learned = learned_fields(folder)
    if learned:
        d.update({k: learned[k] for k in ("ece_fc", "ece_fc_after", "ece_avgpool", "ece_avgpool_after", "ece_final",
                                          "ece_final_after", "removed_fc", "removed_avgpool", "share_fc",
                                          "share_avgpool", "share_dropout", "acc_lost_fc", "acc_lost_avgpool",
                                          "t_final", "t_dropout", "final_direction", "agree_verdict", "r_max")
                  if k in learned})
    times = []
    for nb in numbered_notebooks(project_path(notebooks_dir)):
        meta = json.loads(nb.read_text()).get("metadata", {}).get("papermill", {})
        if meta.get("duration"):
            times.append(meta["duration"])
    minutes = round(sum(times) / 60)
    d["report_time"] = ("–" if not times else "under a minute" if minutes < 1
                        else f"about {minutes} minute{'s' if minutes != 1 else ''}")
    return d


# The JPEG study's and the paired precision study's fields the paper states (as ``jpeg_<key>``, ``paired_<key>``).
JPEG_STATED = ("qualities", "seeds", "slope", "estimate", "estimate_se", "reference_psnr", "aligned_psnr",
               "reference_quality", "reference_shift", "tangent", "tangent_se", "curve_a", "range", "bend",
               "bend_quality")
PAIRED_STATED = ("pairs", "model_name", "epochs", "diff", "se", "ci_low", "ci_high", "within_sd", "verdict",
                 "train_images")
