#!/usr/bin/env python
"""Write the README's headline and the notebook times of docs/using.md from results/ and the executed
notebooks.

    python scripts/update_readme.py [--results results]

The headline table (ours beside the author's, like for like) and its findings come from the finished
runs, the time of each notebook from papermill's record in the executed notebook, so neither page carries
a number typed by hand. Only the regions between the pages' markers are written. `make report` runs this
last.
"""
import argparse
import sys
from pathlib import Path

import nbformat
import pandas as pd

import helpers as H

REPO = Path(__file__).resolve().parent.parent


def say(piece: str, **fields) -> str:
    """A piece of the README's wording, from ``report/text/readme.md``."""
    return H.wording.fill(f"readme:{piece}", **fields)


# The runs each follow-up notebook trains, as patterns under the results folder.
STUDY_RUNS = {"07_authors_head": ["*_author_head"], "08_seeds": ["seeds/*"], "09_beyond_90": ["ladder/*", "final"]}


def undisturbed(history: Path) -> tuple[int, float]:
    """A run's epochs, and their number times its median epoch in minutes: its time without the epochs
    slowed by other work."""
    seconds = pd.read_csv(history)["seconds"]
    return len(seconds), (len(seconds) * seconds.median() / 60 if len(seconds) else 0.0)


def notebook_times(results: Path) -> str:
    """Wall time of each notebook's last execution and the time its training runs take undisturbed
    (epochs x median epoch): a notebook that loads finished runs takes seconds or minutes."""
    rows = []
    for nb_path in H.files.numbered_notebooks(REPO / "notebooks"):
        meta = nbformat.read(nb_path, as_version=4).metadata.get("papermill", {})
        if not meta.get("duration"):
            continue
        training = ""
        if "_train_" in nb_path.stem:
            history = REPO / results / nb_path.stem.partition("_train_")[2] / "history.csv"
            if history.exists():
                epochs, minutes = undisturbed(history)
                training = f"{minutes:.0f} min ({epochs} epochs)"
        elif nb_path.stem in STUDY_RUNS:
            histories = sorted(h for pattern in STUDY_RUNS[nb_path.stem]
                               for h in (REPO / results).glob(f"{pattern}/history.csv"))
            if histories:
                minutes = sum(undisturbed(h)[1] for h in histories)
                training = (f"{minutes / 60:.1f} h" if minutes >= 90 else f"{minutes:.0f} min") + \
                    f" ({len(histories)} runs)"
        rows.append(f"| `{nb_path.stem}` | {meta['duration'] / 60:.1f} min | {training} | "
                    f"{meta.get('end_time', '')[:10]} |")
    if not rows:
        return say("times_missing")
    return "\n".join([say("times_header"), *rows])


def headline_table(runs: dict, results: Path) -> str:
    """Best test accuracy, ours beside the author's, like for like (the author's 256-logit output for models 2
    and 3); our 10-way variant of models 2 and 3 in rows of its own, without an author's number."""
    heads = H.results.author_head_runs(results)
    rows = []
    for name, run in runs.items():           # the same facts the notebooks and the paper state
        like = heads.get(f"{name}_author_head", run if name == "fc" else None)
        if like is not None:
            best = H.results.run_fact(like)
            rows.append({"model": H.VARIANTS[name], "output": "10-way" if like is run else "256 logits (author's)",
                         "ours (%)": f"{best}", "author (%)": f"{H.results.author_fact(name)}",
                         "difference": f"{H.summary.gap_fact(like, float(best) - H.results.AUTHOR.loc[name, 'best'])}"})
        if name != "fc":
            rows.append({"model": H.VARIANTS[name], "output": "10-way (ours)",
                         "ours (%)": f"{H.results.run_fact(run)}", "author (%)": "", "difference": ""})
    return H.results.markdown_table(pd.DataFrame(rows))


def headline(runs: dict, results: Path) -> str:
    """The first screen: the like-for-like table, the figure, and the findings in one sentence each."""
    fields = H.summary.headline_fields(runs, results)
    if not fields:
        return say("runs_missing", finished=", ".join(runs) or "none", all=", ".join(H.VARIANTS))
    final_line = ""
    if "seeds_n" in fields:
        seeds = {k.removeprefix("seeds_"): v for k, v in fields.items() if k.startswith("seeds_")}
        seeds["spread_short"] = "" if seeds["sd"] != seeds["sd"] else f" (sd {seeds['sd']:.2f}, lowest {seeds['low']:.2f}%)"
        final_line = H.wording.fill("readme_final_line", **seeds)
    calibration = H.summary.learned_fields(results)
    calibration_line = ("" if not calibration or calibration["removed_fc"] != calibration["removed_fc"]
                        else H.wording.fill("readme_calibration_line", **calibration))
    cost = H.studies.jpeg.measured_cost(results)
    models = H.studies.gap.jpeg_table(results)
    jpeg_line = "" if not cost else H.wording.fill("readme:jpeg_line", **cost) if not len(models) else H.wording.fill(
        "readme:jpeg_line_models", **cost, gap_lo=fields["gap_lo"], gap_hi=fields["gap_hi"],
        size="small against" if models["line reading"].max() < fields["gap_lo"] / 2 else "comparable with",
        models=H.studies.gap.jpeg_cost_list(models))
    spread = H.studies.gap.seed_spread(results)
    gap_line = H.wording.fill("readme:gap_line", **spread) if spread else ""
    first = runs["fc"]
    text = H.wording.fill("readme_headline", **fields, table=headline_table(runs, results), final_line=final_line,
                          calibration_line=calibration_line, jpeg_line=jpeg_line, gap_line=gap_line, epochs=len(first.history),
                          data="the official archive" if first.metrics["official_data"] else "a JPEG copy of CIFAR-10")
    return "\n".join(line for line in text.splitlines() if line.strip() != "-")    # drop empty bullets


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--results", default="results")
    args = ap.parse_args(argv)
    results = Path(args.results)
    try:     # everything is checked and built in memory first; each page is then replaced in one write
        H.results.check_results_folder(results)
        runs = H.results.load_runs(results)
        front = {"headline": headline(runs, results)}
        times = {"times": "\n".join([say("times_intro"), "", notebook_times(results)])}
        H.files.replace_sections({REPO / "README.md": front, REPO / "docs" / "using.md": times})
    except (ValueError, OSError, RuntimeError, KeyError) as exc:
        sys.exit(f"README.md was not changed: {exc}")
    print("README.md headline and docs/using.md notebook times updated")


if __name__ == "__main__":
    main()
