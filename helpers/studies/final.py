"""The final model (notebook 09): chosen on validation within a time budget, trained once on all
training images, then the same recipe over further seeds (their accuracy with and without test-time
augmentation, and their minutes)."""
from __future__ import annotations

import dataclasses
import math

import pandas as pd
import torch

from .. import data as D
from ..evaluation import evaluate
from ..files import cached, digest, project_path, read_json, save_json, weights_digest
from ..device import runnable_precision
from ..config import TrainConfig
from ..runs import check_measured_on, load_run, Run
from ..training import fit
from ..facts import facts
from ..wording import fill, pieces, unwrap
from .common import _studies_folder


def choose_final(table: pd.DataFrame, configs: dict[str, TrainConfig], epochs: int, budget_minutes: float,
                 train_images: int, **overrides) -> tuple[str, TrainConfig, str]:
    """The most accurate step on validation whose training, projected from its median training
    throughput (images per second, without the ladder's per-epoch validation) to ``epochs`` epochs on
    ``train_images`` images, fits the budget; its configuration for the final run (all training images,
    the test set read once, after the last epoch; ``overrides`` such as a quick run's test_subset) and
    the reason in words."""
    t = table.copy()
    t["projected minutes"] = epochs * train_images / t["images/s"] / 60
    fits = t[t["projected minutes"] <= budget_minutes]
    if fits.empty:
        raise ValueError(f"no step fits {budget_minutes} minutes at {epochs} epochs; lower final_epochs")
    pick = fits.loc[fits["val acc"].idxmax()]
    config = dataclasses.replace(configs[pick["step"]], validation=0, epochs=epochs, eval_each_epoch=False,
                                 **overrides)
    reason = fill("final:reason", step=pick["step"], change=pick["change"], acc=pick["val acc"], budget=budget_minutes,
                  epochs=epochs, images=train_images, projected=pick["projected minutes"], speed=pick["images/s"])
    return pick["step"], config, reason


def save_final(run: Run, step: str, reason: str, results_dir="results") -> dict:
    """What the final model did, beside its run: step, reason, test accuracy, minutes."""
    info = {"step": step, "reason": reason, "test_acc": run.metrics["final_test_acc"],
            "test_loss": float(run.history["test_loss"].iloc[-1]), "minutes": run.metrics["train_seconds"] / 60,
            "parameters": run.metrics["parameters"], "epochs": run.config.epochs, "data": run.metrics["data"],
            "official_data": run.metrics["official_data"]}
    save_json(info, _studies_folder(results_dir) / "final.json")
    return info


def final_summary(info: dict, budget_minutes: float, goal: float = 90.0) -> str:
    """The answer in one paragraph: the final model's test accuracy and time against the goal."""
    acc, minutes = 100 * info["test_acc"], info["minutes"]
    met = acc >= goal and minutes <= budget_minutes
    verdict = (fill("final:met", goal=goal, budget=budget_minutes) if met else
               fill("final:missed", goal=goal, budget=budget_minutes, short="accuracy" if acc < goal else "time"))
    return fill("final:summary", step=info["step"], parameters=info["parameters"], epochs=info["epochs"], acc=acc,
                data=fill("final:official" if info["official_data"] else "final:offline"), minutes=minutes,
                verdict=verdict)


def recipe_table(config: TrainConfig, base: TrainConfig, base_label: str = "model 3, report's protocol") -> pd.DataFrame:
    """Every setting of the recipe in which ``config`` differs from ``base`` (the report's model 3 with its
    protocol), with both values and what the setting does (``report/text/settings.md``), in ``TrainConfig``'s
    order. Seed, precision and subsets say how a run is executed, not what the recipe is, and are left out."""
    described = pieces("settings")
    def shown(value) -> str:
        return f"{value:g}" if isinstance(value, float) else str(value)
    return pd.DataFrame([{"setting": name, base_label: shown(old), "final model": shown(new),
                          "what it sets": unwrap(described.get(name, ""))}
                         for name, (new, old) in config.differences(base).items()
                         if name not in ("seed", "precision", "train_subset", "test_subset")]).set_index("setting")


def final_run_name(seed: int) -> str:
    """Where the final recipe's run with ``seed`` lives: seed 0 is the notebook's ``final`` run."""
    return "final" if seed == 0 else f"final_seeds/seed{seed}"


def final_seed_runs(config: TrainConfig, seeds, data: D.CIFAR10, results_dir="results", device=None) -> dict[int, Run]:
    """The final configuration trained (or loaded) once per seed, each into its own folder."""
    return {seed: fit(dataclasses.replace(config, seed=seed), data, run_name=final_run_name(seed),
                      results_dir=results_dir, device=device, replay=False)
            for seed in seeds}


def finished_final_seeds(results_dir="results") -> dict[int, Run]:
    """The final recipe's finished runs by seed (seed 0 is ``final``), read without training anything; a
    folder whose configuration differs from seed 0's in anything but the seed and the precision is skipped."""
    root = project_path(results_dir)
    found: dict[int, Run] = {}
    if not (root / "final" / "metrics.json").exists():
        return found
    first = load_run(root / "final")
    found[first.config.seed] = first
    for path in sorted((root / "final_seeds").glob("seed*")):
        if (path / "metrics.json").exists():
            run = load_run(path)
            if set(run.config.differences(first.config)) <= {"seed"}:
                found[run.config.seed] = run
    return dict(sorted(found.items()))


def one_view_accuracy(run: Run, images: torch.Tensor | None, labels: torch.Tensor | None, device=None) -> float:
    """Test accuracy (percent) of a run's final weights on one view per image, without its test-time
    augmentation; measured once and kept in ``<run>/one_view.json``. Without images, the kept value
    (NaN if none was measured)."""
    if images is None:
        path = run.path / "one_view.json"
        return read_json(path)["value"]["accuracy"] if path.exists() else math.nan
    check_measured_on(run, images)
    device = torch.device(device) if device is not None else torch.device("cpu")

    def measure():
        precision = runnable_precision(run.config.precision, device)
        accuracy = evaluate(run.model.to(device), images, labels.to(device), precision=precision)["accuracy"]
        run.model.cpu()
        return {"accuracy": accuracy * 100, "precision": precision}
    key = {"images": digest(images, labels), "config": run.config.identity(), "weights": weights_digest(run.model)}
    return cached(run.path / "one_view.json", key, measure)["accuracy"]


def final_seed_table(runs: dict[int, Run], images: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                     device=None) -> pd.DataFrame:
    """Per seed of the final recipe: test accuracy with its test-time views and on one view, training
    minutes, and where and in which precision it trained."""
    rows = []
    for seed, run in runs.items():
        env = run.metrics.get("environment", {})
        rows.append({"seed": seed, "test acc (%)": run.metrics["final_test_acc"] * 100,
                     "one view (%)": one_view_accuracy(run, images, labels, device),
                     "minutes": run.metrics["train_seconds"] / 60, "precision": run.config.precision,
                     "device": f"{env.get('device', '?')}, {env.get('threads', '?')} threads"})
    columns = ["seed", "test acc (%)", "one view (%)", "minutes", "precision", "device"]
    return pd.DataFrame(rows, columns=columns).set_index("seed")


def final_seed_fields(table: pd.DataFrame, planned: int = 5) -> dict:
    """Mean, standard deviation and minimum of the final recipe's accuracies over seeds, for the text."""
    acc, one = table["test acc (%)"], table["one view (%)"]
    sources = [final_run_name(s) for s in table.index]
    f = facts("final_seeds", {
        "n": len(table), "mean": acc.mean(), "sd": acc.std() if len(table) > 1 else math.nan, "low": acc.min(),
        "high": acc.max(), "one_mean": one.mean(), "one_low": one.min(), "minutes_low": table["minutes"].min(),
        "minutes_high": table["minutes"].max()}, SEED_FORMS, sources)
    return {**f, "n_seeds": f"{len(table)} seed{'s' if len(table) != 1 else ''}", "planned": planned,
            "spread": "" if f["sd"] != f["sd"] else f" (standard deviation {f['sd']} points)",
            "precisions": ", ".join(f"seed {s}: {p}" for s, p in table["precision"].items())}


SEED_FORMS = {**{k: "%2" for k in ("mean", "low", "high", "one_mean", "one_low")}, "sd": "sd",
              "minutes_low": "minutes", "minutes_high": "minutes", "n": "count"}


def precision_fields(table: pd.DataFrame) -> dict | None:
    """bf16 against fp32 over the final recipe's seeds (``final_seed_table``): per precision the number of
    seeds, mean and standard deviation of the test accuracy (six views and one view), the difference of the
    means with its standard error and whether it is within two standard errors of zero. The standard error
    pools the seed-to-seed variance of both groups (the same recipe; a group of two or three seeds says little
    about its own spread): s_p * sqrt(1/n1 + 1/n2). None unless both precisions have at least two seeds."""
    from .precision import _T95
    groups = {p: g for p, g in table.groupby("precision")}
    if set(groups) != {"bf16", "fp32"} or min(len(g) for g in groups.values()) < 2:
        return None
    fields = {}
    for column, key in (("test acc (%)", ""), ("one view (%)", "one_")):
        stats = {p: (len(g), g[column].mean(), g[column].std()) for p, g in groups.items()}
        diff = stats["bf16"][1] - stats["fp32"][1]
        (n1, _, s1), (n2, _, s2) = stats["bf16"], stats["fp32"]
        pooled = math.sqrt(((n1 - 1) * s1 ** 2 + (n2 - 1) * s2 ** 2) / (n1 + n2 - 2))
        se = pooled * math.sqrt(1 / n1 + 1 / n2)
        df = n1 + n2 - 2                    # Student's two-sample t test, pooled variance
        fields.update({f"{key}bf16_mean": stats["bf16"][1], f"{key}fp32_mean": stats["fp32"][1],
                       f"{key}bf16_sd": stats["bf16"][2], f"{key}fp32_sd": stats["fp32"][2],
                       f"{key}diff": diff, f"{key}se": se, f"{key}t": diff / se if se else math.inf,
                       f"{key}df": df, f"{key}within": abs(diff) < _T95.get(df, 1.96) * se})
    minutes = {p: g["minutes"].mean() for p, g in groups.items()}
    fields.update({"bf16_n": len(groups["bf16"]), "fp32_n": len(groups["fp32"]),
                   "bf16_seeds": ", ".join(str(s) for s in groups["bf16"].index),
                   "fp32_seeds": ", ".join(str(s) for s in groups["fp32"].index),
                   "bf16_minutes": minutes["bf16"], "fp32_minutes": minutes["fp32"],
                   "verdict": "within the noise" if fields["within"] else "larger than the noise",
                   "one_verdict": "within the noise" if fields["one_within"] else "larger than the noise",
                   "t95": _T95.get(fields["df"], 1.96)})
    forms = {"mean": "%2", "sd": "sd", "diff": "+points2", "se": "points2", "t": "t2", "t95": "t2", "minutes": "minutes"}
    return facts("precision_unpaired", fields, {k: short for k in fields for end, short in forms.items()
                                                if k.endswith(end) and not k.endswith("_n")},
                 [final_run_name(s) for s in table.index])


def found_fields(seeds: pd.DataFrame, info: dict, budget_minutes: float, goal: float = 90.0) -> dict:
    """Notebook 09's answer over seeds: the recipe's mean accuracy against ``goal`` and its training
    minutes against ``budget_minutes``, per precision (bf16 where the machine computes it natively). The
    budget is judged on the fastest run, with the median and slowest of its precision beside it (a run
    beside other work on the same CPU takes longer; the runs do not record whether they had company)."""
    fields = final_seed_fields(seeds)
    minutes = seeds.groupby("precision")["minutes"]
    fastest_seed = seeds["minutes"].idxmin()
    fastest = seeds.loc[fastest_seed]
    same = seeds[seeds["precision"] == fastest["precision"]]["minutes"]
    met = "within" if fastest["minutes"] <= budget_minutes else "over"
    return {**fields, "step": info["step"], "parameters": info["parameters"], "epochs": info["epochs"],
            "goal": goal, "budget": budget_minutes, "goal_met": "meets" if fields["mean"] >= goal else "misses",
            "above": "all" if (seeds["test acc (%)"] >= goal).all() else str(int((seeds["test acc (%)"] >= goal).sum())),
            "minutes": " and ".join((f"{m.min():.0f} to {m.max():.0f} minutes" if len(m) > 1 else f"{m.min():.0f} minutes")
                                    + f" in {p} ({len(m)} run{'s' if len(m) > 1 else ''})" for p, m in minutes),
            "fastest": fastest["minutes"], "fastest_seed": int(fastest_seed), "fastest_precision": fastest["precision"],
            "median_same": same.median(), "slowest_same": same.max(), "budget_met": met,
            "budget_line": fill(f"budget:{'over' if met == 'over' else 'within_' + fastest['precision']}",
                                fastest_seed=int(fastest_seed), fastest=fastest["minutes"], budget=budget_minutes,
                                fastest_precision=fastest["precision"], median_same=same.median(),
                                slowest_same=same.max())}
