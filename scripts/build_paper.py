#!/usr/bin/env python
"""Build the written report, report/report.pdf, from the results (and export its tables to report/tables/).

    python scripts/build_paper.py [--results results] [--output report/report.pdf]

Every number and table comes from the results files; the prose is report/paper.typ. `make paper` runs this,
and `make report` ends with it.
"""
import argparse
import sys
import time

import helpers as H


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default="results")
    ap.add_argument("--output", default=None, help="the PDF (default report/report.pdf)")
    ap.add_argument("--tables", default=str(H.paper.TABLES), help="where the tables and facts.json go")
    ap.add_argument("--figures", default="figures", help="the folder of figures the paper shows")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    try:
        pdf = H.paper.build(args.results, args.output, tables_dir=args.tables, figures_dir=args.figures)
    except KeyError as exc:
        sys.exit(f"cannot build the paper: {exc.args[0]}")
    except (ValueError, RuntimeError, OSError) as exc:
        sys.exit(f"cannot build the paper: {exc}")
    pages = len(H.paper.page_images(tables_dir=args.tables, figures_dir=args.figures, ppi=10))
    print(f"{H.files.shown_path(pdf)}: {pages} pages, built in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
