#!/usr/bin/env python
"""Write the README's results section from results/ and the executed notebooks.

    python scripts/update_readme.py [--results results]

The headline table (ours beside the author's) comes from the finished runs, the
time of each notebook from papermill's record in the executed notebook, so the
README never carries a number typed by hand. `make report` runs this last.
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


def follow_up(results: Path) -> str:
    """The follow-up studies (notebooks 07 to 09) in a few lines, from results/studies/."""
    studies = REPO / results / "studies"
    parts = []
    if (studies / "final.json").exists() or (studies / "ladder.csv").exists():
        parts += [say("past_90"), ""]
    if (studies / "final.json").exists():
        info = H.files.read_json(studies / "final.json", "study's summary")
        parts += [H.studies.final_summary(info, budget_minutes=20), ""]
        seed_table = H.studies.final_seed_table(H.studies.finished_final_seeds(results))
        if len(seed_table) > 1:         # one run is an anecdote: the recipe over its seeds, beside it
            parts += [H.wording.fill("final_seeds", **H.studies.final_seed_fields(seed_table)), ""]
    if (studies / "ladder.csv").exists():
        ladder = H.files.read_study_table(results, "ladder")
        refresh = (H.files.read_study_table(results, "batchnorm_refresh")
                   if (studies / "batchnorm_refresh.csv").exists() else None)
        first = H.files.read_json(REPO / results / "ladder" / ladder["step"].iloc[0] / "config.json", "run's configuration")
        parts += [say("ladder_intro", validation=first["validation"]), "",
                  H.results.markdown_table(ladder.assign(
                      change=["&nbsp;&nbsp;&nbsp;&nbsp;" * b + c for b, c in zip(ladder["branch"], ladder["change"])],
                      parameters=ladder["parameters"].map("{:,}".format),
                      noise=ladder["within noise"].map({True: "yes", False: ""}))[
                      ["change", "val acc", "gain", "noise", "val acc as trained", "parameters", "minutes", "epochs"]].rename(
                      columns={"noise": "within noise"})), "",
                  say("ladder_refreshed"), "",
                  H.studies.hypothesis_verdict(ladder), "",
                  "" if refresh is None else say("refresh", findings=H.studies.batchnorm_refresh_findings(refresh)),
                  "", "![Ablation ladder](figures/ladder.png)", ""]
        seeds = H.studies.final_seed_table(H.studies.finished_final_seeds(results))
        if len(seeds):
            parts += [say("what_changed"), "", H.studies.what_changed(ladder, seeds, results), ""]
    if (studies / "seeds.csv").exists():
        seeds = H.files.read_study_table(results, "seeds")
        parts += [say("seeds", seeds=int(seeds["seeds"].min()), epochs=int(seeds["epochs"].max())), "",
                  H.results.markdown_table(seeds[["model", "best mean", "best sd", "best min", "best max",
                                                  "final mean", "lowest loss epochs"]], "{:.2f}"), "",
                  H.studies.seed_spread(seeds.set_index("model")), ""]
        if (studies / "seed_checks.csv").exists():
            checks = H.files.read_study_table(results, "seed_checks").to_dict("records")
            parts += [H.studies.seed_checks_markdown(checks), ""]
        parts += ["![Seeds](figures/seeds.png)", ""]
    if (studies / "heads.csv").exists():
        heads = H.files.read_study_table(results, "heads")
        parts += [say("heads", epochs=int(heads["epochs"].max())), "", H.studies.head_findings(heads), "",
                  "![The author's head](figures/author_head.png)", ""]
    parts += [learned(results)]
    return "\n".join(parts).strip() or say("follow_up_missing")


def learned(results: Path) -> str:
    """Notebook 10's calibration and class-activation-map findings in a paragraph."""
    fields = H.summary.learned_fields(results)
    if not fields:
        return ""
    removed = [fields["removed_fc"], fields["removed_avgpool"]]
    fields["climb_sentence"] = "" if any(r != r for r in removed) else H.wording.fill(
        "readme_climb", removed_fc=removed[0], removed_avgpool=removed[1], acc_lost_fc=fields["acc_lost_fc"],
        acc_lost_avgpool=fields["acc_lost_avgpool"]) + " "
    return H.wording.fill("readme_learned", **fields)


def results_section(runs: dict, results: Path) -> str:
    """The reproduction: ours beside the author's (like with like), when the runs peaked, the findings."""
    if len(runs) != len(H.VARIANTS):
        return say("runs_missing", finished=", ".join(runs) or "none", all=", ".join(H.VARIANTS))
    first = runs["fc"]
    author_head = H.results.author_head_runs(results)
    intro = H.wording.fill("readme_results", precision=first.config.precision,
                           device=first.metrics["environment"]["device"], epochs=len(first.history),
                           data="the official archive" if first.metrics["official_data"] else "the offline JPEG copy")
    return "\n".join([intro, "", H.results.markdown_table(H.results.accuracy_table(runs, author_head)), "",
                      say("peaks"), "",
                      H.results.markdown_table(H.results.epoch_table(runs)), "",
                      H.results.findings_markdown(H.results.findings(runs)), "",
                      "![Test loss](figures/test_loss.png)"])


def headline(runs: dict, results: Path) -> str:
    """The first screen: the reproduction, the follow-up and notebook 10 in three lines."""
    fields = H.summary.headline_fields(runs, results)
    if not fields:
        return ""
    final_line = ""
    if "seeds_n" in fields:
        seeds = {k.removeprefix("seeds_"): v for k, v in fields.items() if k.startswith("seeds_")}
        seeds["spread_short"] = "" if seeds["sd"] != seeds["sd"] else f" (sd {seeds['sd']:.2f}, lowest {seeds['low']:.2f}%)"
        final_line = H.wording.fill("readme_final_line", **seeds)
    calibration = H.summary.learned_fields(results)
    calibration_line = ("" if not calibration or calibration["removed_fc"] != calibration["removed_fc"]
                        else H.wording.fill("readme_calibration_line", **calibration))
    cost = H.studies.jpeg.measured_cost(results)
    jpeg_note = H.wording.fill("readme:jpeg_note", **cost) if cost else ""
    text = H.wording.fill("readme_headline", **fields, final_line=final_line, calibration_line=calibration_line,
                          jpeg_note=jpeg_note)
    return "\n".join(line for line in text.splitlines() if line.strip() != "-")    # drop empty bullets


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--results", default="results")
    args = ap.parse_args(argv)
    results = Path(args.results)
    try:     # everything is checked and built in memory first; the README is then replaced in one write
        H.results.check_results_folder(results)
        runs = H.results.load_runs(results)
        parts = [results_section(runs, results), "", say("times_intro"), "", notebook_times(results)]
        sections = {"headline": headline(runs, results), "results": "\n".join(parts),
                    "follow-up": follow_up(results)}
        H.files.replace_sections(REPO / "README.md", sections)
    except (ValueError, OSError, RuntimeError, KeyError) as exc:
        sys.exit(f"README.md was not changed: {exc}")
    print("README.md results sections updated")


if __name__ == "__main__":
    main()
