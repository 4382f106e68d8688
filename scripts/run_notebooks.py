#!/usr/bin/env python
"""Execute the report's notebooks in order with papermill.

    python scripts/run_notebooks.py --in-place                  # the full report
    python scripts/run_notebooks.py --output build/quick -p epochs 3 -p train_subset 5000
    python scripts/run_notebooks.py --output /tmp/x --only 01 06

Notebooks 03-05 have one source, ``notebooks/templates/train_model.ipynb``: each is that template
with its own text (``report/text/notebooks/NAME.md``: the introduction, then ``<!-- next -->`` and
the closing link) and its own ``model`` default, rendered to ``notebooks/NAME.ipynb``.

Parameters given with -p go to every notebook that declares them in its
``parameters`` cell with another value; the others ignore them (so a re-run with the
defaults leaves the notebooks' sources as they are). Prints how long each notebook took.
A notebook that fails prints its error as one message, not a traceback.
A notebook is executed into NAME.running.ipynb and renamed over its target only
when it succeeds, so an interrupted or failed run never leaves a half-executed
notebook in place (the partial copy stays beside it for inspection).
"""
import argparse
import ast
import atexit
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import papermill as pm

from nbclient.exceptions import DeadKernelError

from helpers.files import numbered_notebooks, shown_path

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
TEXT = NOTEBOOKS.parent / "report" / "text" / "notebooks"
# Numbered notebooks rendered from a shared template: name -> (template, its parameters' defaults there).
RENDERED = {f"{stem}": ("train_model.ipynb", {"model": model})
            for stem, model in [("03_train_fc", "fc"), ("04_train_avgpool", "avgpool"),
                                ("05_train_avgpool_dropout", "avgpool_dropout")]}
PLACEHOLDER = "<!-- filled from report/text/notebooks/"


def source(name: str):
    """What to execute for the numbered notebook ``name``: the committed notebook itself, or, for one
    rendered from a template, the template with this notebook's text, defaults and cell ids."""
    if name not in RENDERED:
        return NOTEBOOKS / f"{name}.ipynb"
    template, defaults = RENDERED[name]
    nb = nbformat.read(NOTEBOOKS / "templates" / template, as_version=4)
    intro, _, closing = (TEXT / f"{name}.md").read_text().partition("<!-- next -->")
    texts = iter([intro.strip(), closing.strip()])
    for i, cell in enumerate(nb.cells):
        cell.id = f"{name.replace('_', '-')}-{i:02d}"
        if cell.cell_type == "markdown" and cell.source.startswith(PLACEHOLDER):
            cell.source = next(texts)
        if "parameters" in cell.metadata.get("tags", []):
            lines = cell.source.splitlines()
            for key, value in defaults.items():
                lines = [f"{key} = {json.dumps(value)}" if ln.split("=")[0].strip() == key else ln for ln in lines]
            cell.source = "\n".join(lines)
    return nb


def declared_parameters(path) -> dict:
    """The names and default values of a notebook's (path or notebook node) ``parameters`` cell."""
    nb = nbformat.read(path, as_version=4) if isinstance(path, (str, Path)) else path
    for cell in nb.cells:
        if "parameters" in cell.metadata.get("tags", []):
            tree = ast.parse(cell.source)
            found = {}
            for node in tree.body:
                if isinstance(node, ast.Assign):
                    for t in node.targets:
                        if isinstance(t, ast.Name):
                            try:
                                found[t.id] = ast.literal_eval(node.value)
                            except ValueError:
                                found[t.id] = None
            return found
    return {}


_SOCKETS = None


def kernel_config():
    """Local kernels talk over IPC sockets where the OS has them: nothing is sent over TCP, and the kernel
    does not warn about unencrypted TCP at every start."""
    from traitlets.config import Config
    if os.name != "posix":
        return Config()
    # the sockets live in a private temporary folder, not in notebooks/ (the kernel's working folder), so a
    # killed run leaves nothing there
    global _SOCKETS
    if _SOCKETS is None:                 # one private folder per runner, made fresh (mkdtemp: never reused)
        _SOCKETS = Path(tempfile.mkdtemp(prefix="cifar10-report-kernel-"))
        atexit.register(shutil.rmtree, _SOCKETS, ignore_errors=True)
    sockets = _SOCKETS
    return Config({"KernelManager": {"transport": "ipc", "ip": str(sockets / "kernel-ipc")}})


def tidy_metadata(executed: Path, source: Path, target: Path) -> None:
    """Papermill stores absolute paths, and the temporary output name, in the notebook's metadata: store
    the paths relative to the project and the final name instead. Each cell's start and end times (papermill
    and the kernel record them) are dropped, so that a re-run with the same results changes only the
    notebook's own timing, not every cell."""
    nb = nbformat.read(executed, as_version=4)
    nb.metadata.get("papermill", {}).update(input_path=str(shown_path(source)), output_path=str(shown_path(target)))
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        cell.metadata.pop("papermill", None)
    nbformat.write(nb, executed)


def parse_value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def select(only, names: list[str]) -> list[str]:
    """The notebooks ``--only`` names (``03`` or ``3``), in order; an unknown number is an error that lists
    the notebooks."""
    if not only:
        return names
    wanted = {str(x).zfill(2) for x in only}
    unknown = sorted(wanted - {name[:2] for name in names})
    if unknown:
        raise SystemExit(f"run_notebooks.py: no notebook numbered {', '.join(unknown)}; the notebooks are:\n  "
                         + "\n  ".join(names))
    return [name for name in names if name[:2] in wanted]


# Where a run reads and writes: passed to every notebook (by make report and make quick); a notebook that does not
# declare one has no use for it.
RUN_WIDE = {"results_dir", "figures_dir", "data_root"}


def check_parameters(params: dict, names: list[str], everything: list[str]) -> None:
    """Refuse a -p name that no notebook declares (a typo, or a setting the notebooks do not have), listing the
    declared ones; name those that only notebooks outside ``names`` declare (``RUN_WIDE`` aside), so that no
    parameter is dropped without a word."""
    declared = {name: set(declared_parameters(source(name))) for name in everything}
    known = set(RUN_WIDE).union(*declared.values())
    unknown = sorted(set(params) - known)
    if unknown:
        raise SystemExit(f"run_notebooks.py: no notebook declares the parameter(s) {', '.join(unknown)}; the "
                         f"declared ones are: {', '.join(sorted(known))}")
    unused = sorted(set(params) - RUN_WIDE - set().union(*(declared[n] for n in names)))
    if unused:
        print(f"note: {', '.join(unused)} {'is' if len(unused) == 1 else 'are'} not used by the notebooks run "
              f"({', '.join(n[:2] for n in names)})", flush=True)


def tidy_sockets() -> None:
    """Remove IPC socket files that runs killed before this version (which kept them in notebooks/) left there."""
    for path in NOTEBOOKS.glob("kernel-ipc-*"):
        if path.is_socket() or (path.is_file() and not path.stat().st_size):
            path.unlink(missing_ok=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--in-place", action="store_true", help="overwrite notebooks/ with the executed copies")
    where.add_argument("--output", type=Path, help="write executed copies to this folder")
    ap.add_argument("-p", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    ap.add_argument("--only", nargs="*", help="notebook numbers to run, e.g. 01 06")
    args = ap.parse_args(argv)
    params = {k: parse_value(v) for k, v in args.p}
    everything = sorted({p.stem for p in numbered_notebooks(NOTEBOOKS)} | set(RENDERED))
    names = select(args.only, everything)
    check_parameters(params, names, everything)
    if args.output:
        args.output.mkdir(parents=True, exist_ok=True)
    tidy_sockets()
    try:
        for name in names:
            if run_one(NOTEBOOKS / f"{name}.ipynb", params, args):
                return 1
    except KeyboardInterrupt:
        print("\nstopped (Ctrl-C). Every finished notebook is in place; the interrupted one is unchanged, and a "
              "training run in it resumes from its last checkpoint when you run again.", file=sys.stderr)
        return 130
    return 0


def run_one(nb: Path, params: dict, args) -> bool:
    """Execute one notebook into NAME.running.ipynb and rename it over its target on success; True if it failed."""
    out = nb if args.in_place else args.output / nb.name
    running = out.with_name(out.stem + ".running.ipynb")   # renamed over `out` only on success
    src = source(nb.stem)
    declared = declared_parameters(src)
    own = {k: v for k, v in params.items() if k in declared and declared[k] != v}
    start = time.perf_counter()
    print(f"{nb.name}: running with {own or 'its defaults'}", flush=True)
    kept = f"(the partial notebook is {shown_path(running)}; {shown_path(out)} is unchanged)"
    try:
        pm.execute_notebook(src if not isinstance(src, Path) else str(src), str(running), parameters=own,
                            cwd=str(NOTEBOOKS), progress_bar=False, kernel_name="python3", config=kernel_config())
    except pm.PapermillExecutionError as exc:
        print(f"{nb.name} stopped: {exc.ename}: {exc.evalue}\n{kept}", file=sys.stderr)
        return True
    except DeadKernelError:
        print(f"{nb.name} stopped: its Python kernel died (out of memory, or killed). {kept} A training run "
              "resumes from its last checkpoint; with too little memory, close other programs or use a smaller "
              "batch.", file=sys.stderr)
        return True
    tidy_metadata(running, source=src if isinstance(src, Path) else NOTEBOOKS / "templates" / RENDERED[nb.stem][0],
                  target=out)
    os.replace(running, out)
    print(f"{nb.name}: done in {time.perf_counter() - start:.0f} s -> {shown_path(out)}", flush=True)
    return False


if __name__ == "__main__":
    sys.exit(main())
