#!/usr/bin/env python
"""Does bf16 change the results? Same seed, fp32 against bf16, for each variant.

    python benchmarks/precision_parity.py                       # 10 epochs on all 50,000 images
    python benchmarks/precision_parity.py --train-subset 10000  # cheaper, on a class-balanced subset

Runs go through ``helpers.fit`` into build/parity/ (resumable, reused when finished);
the comparison is printed and written to benchmarks/parity.md. The check passes
when the best test accuracy of every variant differs by less than one point.
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
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--models", nargs="*", default=list(H.VARIANTS))
    ap.add_argument("--results", default="build/parity")
    ap.add_argument("--out", type=Path, default=HERE / "parity.md")
    args = ap.parse_args(argv)

    data = H.load_cifar10()
    rows = []
    for name in args.models:
        row = {"model": name}
        for precision in ("fp32", "bf16"):
            config = H.TrainConfig(model=name, epochs=args.epochs, seed=args.seed, precision=precision,
                                   train_subset=args.train_subset)
            run = H.fit(config, data, run_name=f"{name}_{precision}_{args.epochs}ep_{args.train_subset or 'all'}",
                        results_dir=args.results, progress=False)
            row[f"{precision} best %"] = 100 * run.history["test_acc"].max()
            row[f"{precision} final %"] = 100 * run.history["test_acc"].iloc[-1]
            row[f"{precision} s/epoch"] = run.history["seconds"].mean()
        row["best difference (points)"] = row["bf16 best %"] - row["fp32 best %"]
        rows.append(row)
    table = pd.DataFrame(rows)
    passed = bool((table["best difference (points)"].abs() < 1.0).all())
    print(table.round(2).to_string(index=False))
    print("parity:", "PASS" if passed else "FAIL", "(|bf16 - fp32| best accuracy < 1 point for every variant)")
    cols = list(table.columns)
    lines = [f"# Precision parity, {time.strftime('%Y-%m-%d')}", "",
             f"Same seed ({args.seed}), {args.epochs} epochs, "
             f"{args.train_subset or 50_000:,} training images, the full test set; data: {data.source}.", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in r) + " |"
              for r in table.itertuples(index=False)]
    lines += ["", f"Result: **{'PASS' if passed else 'FAIL'}**: the best test accuracy of every variant "
              f"{'differs' if passed else 'does not differ'} by less than one point between fp32 and bf16."]
    args.out.write_text("\n".join(lines) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
