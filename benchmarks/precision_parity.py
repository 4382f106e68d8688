#!/usr/bin/env python
"""Does bf16 change the results? fp32 against bf16, same seeds, for each variant.

    python benchmarks/precision_parity.py                          # 10 epochs on all 50,000 images, seed 0
    python benchmarks/precision_parity.py --train-subset 10000     # cheaper, on a class-balanced subset
    python benchmarks/precision_parity.py --models fc --seeds 0 1 2

Runs go through ``helpers.fit`` into build/parity/ (resumable, reused when finished);
the comparison is printed and written to benchmarks/parity.md. The check passes
when, for every variant, the mean best test accuracy over the seeds differs by
less than one point between fp32 and bf16. With several seeds the table also
shows the spread between seeds within one precision: the noise floor that any
difference between precisions has to be read against.
"""
import argparse
import time
from pathlib import Path

import pandas as pd

import helpers as H

HERE = Path(__file__).resolve().parent


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--train-subset", type=int, default=None)
    ap.add_argument("--seeds", type=int, nargs="*", default=[0])
    ap.add_argument("--models", nargs="*", default=list(H.VARIANTS))
    ap.add_argument("--results", default="build/parity")
    ap.add_argument("--out", type=Path, default=HERE / "parity.md")
    args = ap.parse_args(argv)

    data = H.load_cifar10()
    runs = []
    for name in args.models:
        for seed in args.seeds:
            for precision in ("fp32", "bf16"):
                config = H.TrainConfig(model=name, epochs=args.epochs, seed=seed, precision=precision,
                                       train_subset=args.train_subset)
                run_name = f"{name}_{precision}_{args.epochs}ep_{args.train_subset or 'all'}"
                run = H.fit(config, data, run_name=run_name + (f"_seed{seed}" if seed else ""),
                            results_dir=args.results, progress=False)
                runs.append({"model": name, "seed": seed, "precision": precision,
                             "best": 100 * run.history["test_acc"].max(),
                             "final": 100 * run.history["test_acc"].iloc[-1],
                             "s/epoch": run.history["seconds"].mean()})
    long = pd.DataFrame(runs)
    stats = long.groupby(["model", "precision"], sort=False)["best"].agg(["mean", "std", "min", "max"])
    rows = []
    for name in args.models:
        fp32, bf16 = stats.loc[(name, "fp32")], stats.loc[(name, "bf16")]
        rows.append({"model": name, "seeds": len(args.seeds), "fp32 best % (mean)": fp32["mean"],
                     "bf16 best % (mean)": bf16["mean"], "bf16 - fp32 (points)": bf16["mean"] - fp32["mean"],
                     "seed spread fp32 (max-min)": fp32["max"] - fp32["min"],
                     "seed spread bf16 (max-min)": bf16["max"] - bf16["min"]})
    table = pd.DataFrame(rows)
    passed = bool((table["bf16 - fp32 (points)"].abs() < 1.0).all())
    print(long.round(2).to_string(index=False))
    print(table.round(2).to_string(index=False))
    print("parity:", "PASS" if passed else "FAIL", "(|mean bf16 - mean fp32| best accuracy < 1 point, every variant)")
    verdict = ("the mean best test accuracy of every variant differs by less than one point between fp32 and bf16"
               if passed else "at least one variant's mean best test accuracy differs by one point or more")
    lines = [f"# Precision parity, {time.strftime('%Y-%m-%d')}", "",
             f"Seeds {', '.join(map(str, args.seeds))}; {args.epochs} epochs; "
             f"{args.train_subset or 50_000:,} training images; the full test set; data: {data.source}.", "",
             H.results.markdown_table(table, "{:.2f}"), "", f"Result: **{'PASS' if passed else 'FAIL'}**: {verdict}.",
             "", "Every run:", "", H.results.markdown_table(long, "{:.2f}")]
    H.files.write_text(args.out, "\n".join(lines) + "\n")
    if args.out.resolve().parent == HERE:     # the README shows each recorded table in a section named after its file
        try:
            H.results.write_section(HERE / "README.md", args.out.stem, "\n".join(lines[2:]))
        except H.files.MarkerError as exc:
            print(f"{exc}\n(the table is kept in {args.out}; add the markers to show it in benchmarks/README.md)")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
