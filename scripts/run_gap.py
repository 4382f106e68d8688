#!/usr/bin/env python
"""Train the runs of the gap study (issue 30; ``helpers/studies/gap.py``) in the order given, resumably.

    python scripts/run_gap.py avgpool_author_head:copy:fp32:0 avgpool_author_head:q25:fp32:0
    python scripts/run_gap.py --models fc,avgpool_author_head --data copy,q50,q25 --precisions fp32 --seeds 0,1,2

Each run is MODEL:DATA:PRECISION:SEED, DATA being ``copy`` (the data as loaded) or ``q<quality>`` (one more
JPEG pass). A finished run is read, not retrained; a killed one resumes from its checkpoint. On the
official archive (``CIFAR10_ROOT`` pointing at it, or data/) the same command measures the same table there.
"""
import argparse
import sys

import helpers as H
from helpers.studies import gap


def parse_run(text: str):
    try:
        model, data, precision, seed = text.split(":")
        quality = None if data == "copy" else int(data.removeprefix("q"))
        if data != "copy" and not data.startswith("q"):
            raise ValueError
        if precision not in ("fp32", "bf16"):
            raise ValueError
        return model, quality, precision, int(seed)
    except ValueError:
        raise SystemExit(f"run_gap.py: {text!r} is not MODEL:DATA:PRECISION:SEED (e.g. fc:q50:fp32:0; DATA is "
                         f"copy or q<quality>, PRECISION fp32 or bf16); models: {', '.join(gap.GAP_MODELS)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", help="MODEL:DATA:PRECISION:SEED, trained in this order")
    parser.add_argument("--models", help="comma-separated; with --data, --precisions and --seeds: every combination")
    parser.add_argument("--data", default="copy")
    parser.add_argument("--precisions", default="fp32")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--results", default="results")
    parser.add_argument("--epochs", type=int, default=gap.EPOCHS)
    args = parser.parse_args()
    plan = [parse_run(r) for r in args.runs]
    if args.models:           # seed by seed, so that every seed finished is a complete set
        plan += [parse_run(f"{model}:{data}:{precision}:{seed}") for seed in args.seeds.split(",")
                 for model in args.models.split(",") for data in args.data.split(",")
                 for precision in args.precisions.split(",")]
    if not plan:
        parser.error("name runs, or give --models")
    for model, *_ in plan:
        if model not in gap.GAP_MODELS:
            raise SystemExit(f"run_gap.py: unknown model {model!r}; choose from {', '.join(gap.GAP_MODELS)}")
    try:
        data = H.load_cifar10(verbose=True)
    except H.DataError as exc:
        print(f"CIFAR-10 is not ready: {exc}", file=sys.stderr)
        return 1
    gap.gap_runs(plan, data, results_dir=args.results, epochs=args.epochs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
