"""The numbers the README's first screen and the written report state, gathered from ``results/`` as
values and verdicts (the wording is in ``report/text/`` and ``report/paper.typ``)."""
from __future__ import annotations


from . import calibration, explain, results, studies
from .files import project_path, read_json
from .models import VARIANTS
from .runs import load_run


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


def headline_fields(runs: dict, results_dir="results") -> dict:
    """The reproduction in numbers: each model's best test accuracy beside the author's (like with like),
    ours with the 10-way head, how many of the author's findings hold, and the final recipe over seeds
    (``seeds_*``; absent when no seed has finished). Empty unless all three report runs have finished."""
    if len(runs) != len(VARIANTS):
        return {}
    table = results.accuracy_table(runs, results.author_head_runs(results_dir))
    compared = table.dropna(subset=["author best"]).set_index("model")
    ours = table[table["output"].str.startswith("10-way")].set_index("model")
    found = results.findings(runs)
    gaps = -compared["best - author"]
    fields = {"fc_best": compared.loc[VARIANTS["fc"], "best"], "avg_best": compared.loc[VARIANTS["avgpool"], "best"],
              "drop_best": compared.loc[VARIANTS["avgpool_dropout"], "best"], "gap_lo": gaps.min(),
              "gap_hi": gaps.max(), "avg_ours": ours.loc[VARIANTS["avgpool"], "best"],
              "drop_ours": ours.loc[VARIANTS["avgpool_dropout"], "best"],
              "n_hold": sum(f["holds"] for f in found), "n_findings": len(found)}
    seeds = studies.finished_final_seeds(results_dir)
    if seeds:
        seed_fields = studies.final_seed_fields(studies.final_seed_table(seeds))
        fields.update({f"seeds_{k}": v for k, v in seed_fields.items()})
    return fields
