"""Paths and files: where the project lies, writes that a kill cannot tear, readable
JSON with clear errors, a lock per results folder, cached measurements, the git state.

Every file the package writes goes through ``atomic_write``: the bytes go to a temporary
file beside the target, are flushed to disk and then renamed over it, so a reader (or a
resumed run) sees either the old file or the new one, never half of one. A failed write
(a full disk, a read-only folder) removes its temporary file and says which file could
not be written and that its previous version is intact.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


class RunBusyError(RuntimeError):
    """Another process is training into the same results folder."""


# ---------------------------------------------------------------- paths

def project_path(path) -> Path:
    """A path as given if absolute, else relative to the repository root (not the working directory,
    which is ``notebooks/`` when a notebook runs)."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


def shown_path(path) -> Path:
    """A path as printed or stored in results: relative to the repository when it lies inside it (so
    outputs written on one machine do not carry that machine's folders), else absolute."""
    path = Path(path).resolve()
    return path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path   # REPO_ROOT is resolved


NOTEBOOK_NAME = re.compile(r"\d\d_[a-z0-9_]+")     # 06_results_analysis; not 06_...-Copy1 or *.running


def numbered_notebooks(folder) -> list[Path]:
    """The report's notebooks in ``folder``, in order: ``NN_name.ipynb`` only, so a Jupyter duplicate
    (``-Copy1``) or a runner's leftover (``.running.ipynb``) is neither run nor listed."""
    return sorted(p for p in Path(folder).glob("*.ipynb") if NOTEBOOK_NAME.fullmatch(p.stem))


# ---------------------------------------------------------------- writing

def atomic_write(path, write) -> None:
    """Call ``write(f)`` on a temporary binary file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:        # torch.save reports a failed write as a RuntimeError
        tmp.unlink(missing_ok=True)
        kept = "its previous version is intact" if path.exists() else "no earlier version existed"
        raise OSError(getattr(exc, "errno", None), f"could not write {shown_path(path)} "
                      f"({getattr(exc, 'strerror', None) or exc}); {kept}. Free some disk space or fix the "
                      "folder's permissions, then run again") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write(path, lambda f: f.write(text.encode()))


class MarkerError(ValueError):
    """A generated region of a hand-written file has a missing, doubled or misplaced marker."""


def replace_sections(pages, sections: dict[str, str] | None = None) -> None:
    """Replace each generated region ``<!-- name:start -->`` ... ``<!-- name:end -->`` of hand-written
    files by its new text: ``replace_sections(path, {name: text})``, or ``replace_sections({path: {name:
    text}})`` for several files. Every marker must appear exactly once, each start before its end,
    regions not nested: otherwise nothing is written, in any of the files, and the error names the marker
    and its lines, since guessing where a region ends could replace hand-written text. Each file is then
    replaced whole (``write_text``)."""
    pages = {pages: sections} if sections is not None else pages
    texts = {Path(path): _with_sections(Path(path), regions) for path, regions in pages.items()}
    for path, text in texts.items():
        write_text(path, text)


def _with_sections(path: Path, sections: dict[str, str]) -> str:
    if not path.exists():
        raise MarkerError(f"{shown_path(path)} does not exist; restore it from git (git checkout -- {path.name})")
    text = path.read_text()
    lines = text.splitlines()

    def where(marker: str) -> list[int]:
        return [i + 1 for i, line in enumerate(lines) if marker in line]
    spans = []
    for name in sections:
        start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
        for marker in (start, end):
            found = where(marker)
            if len(found) != 1:
                problem = "is missing" if not found else f"appears {len(found)} times (lines {', '.join(map(str, found))})"
                raise MarkerError(f"{shown_path(path)}: the marker {marker} {problem}. Nothing was written: put "
                                  f"exactly one {start} and one {end} around the generated region, then run again.")
        a, b = text.index(start), text.index(end)
        if b < a:
            raise MarkerError(f"{shown_path(path)}: {end} (line {where(end)[0]}) comes before {start} (line "
                              f"{where(start)[0]}). Nothing was written: put the start marker first.")
        spans.append((a, b + len(end), name, start, end))
    spans.sort()
    for (_, b1, n1, *_), (a2, _, n2, *_) in zip(spans, spans[1:]):
        if a2 < b1:
            raise MarkerError(f"{shown_path(path)}: the regions {n1} and {n2} overlap. Nothing was written: close "
                              f"each region before the next one starts.")
    out, last = [], 0
    for a, b, name, start, end in spans:
        out += [text[last:a], f"{start}\n{sections[name].strip()}\n{end}"]
        last = b
    out.append(text[last:])
    return "".join(out)


def save_json(obj, path) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=2).encode()))


def read_json(path, what: str = "file"):
    """A JSON file's content, or a ``ValueError`` that names the file and says what to do."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{shown_path(path)} is not readable JSON ({exc}); this {what} was damaged. "
                         "Restore it from git (git checkout -- <file>) or from a backup.") from None


# ---------------------------------------------------------------- the studies' tables, read back

# The columns every reader of a study table relies on (results/studies/<name>.csv); none may be empty.
STUDY_COLUMNS = {
    "seeds": ["model", "seeds", "epochs", "best mean", "best sd", "best min", "best max", "final mean",
              "lowest loss epochs"],
    "heads": ["model", "head", "epochs", "best acc", "best epoch", "final acc"],
    "ladder": ["step", "change", "branch", "val acc", "parameters", "epochs", "val images", "eval only",
               "within noise"],
    "batchnorm_refresh": ["step", "change", "dropout", "gain"],
    "seed_checks": ["claim", "seeds", "held", "evidence"],
}


def read_study_table(results_dir, name: str):
    """``results_dir/studies/<name>.csv`` as a DataFrame, refused with its file named when it does not parse,
    lacks a column its readers use, or has an empty cell there; the ladder's rows must be the ladder's
    finished steps (``results_dir/ladder/<step>/``), so a truncated table cannot pass for a shorter ladder."""
    import pandas as pd
    path = project_path(results_dir) / "studies" / f"{name}.csv"
    again = ("Re-run the notebook that writes it (make report ONLY=...), or restore it from git "
             "(git checkout -- <file>).")
    try:
        table = pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ValueError(f"{shown_path(path)} is not a readable table ({type(exc).__name__}). {again}") from None
    required = STUDY_COLUMNS.get(name, [])
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise ValueError(f"{shown_path(path)} lacks the column(s) {', '.join(missing)}. {again}")
    empty = [c for c in required if table[c].isna().any()]
    if empty or not len(table):
        raise ValueError(f"{shown_path(path)} has " + (f"empty cells in {', '.join(empty)}" if empty else "no rows")
                         + f": it was cut short or edited. {again}")
    if name == "ladder":
        trained = {p.parent.name for p in (project_path(results_dir) / "ladder").glob("*/metrics.json")}
        steps = set(table["step"])
        lost = sorted(trained - steps)
        if lost:
            raise ValueError(f"{shown_path(path)} lacks the finished ladder step(s) {', '.join(lost)}: it was cut "
                             f"short, or those folders are left over from another ladder (move them out of ladder/). "
                             f"{again}")
    return table


# ---------------------------------------------------------------- one writer per folder

class FolderLock:
    """An exclusive lock on a results folder for as long as a run trains into it.

    It is an OS-level lock (``flock``) on ``.lock`` in the folder, so it is released when the process
    ends in any way, a SIGKILL included: a stale lock file blocks nobody. The file names the holder, for
    the message another process gets. Without ``fcntl`` (Windows) the lock is advisory only.
    """

    def __init__(self, folder):
        self.path = Path(folder) / ".lock"
        self.file = None

    def __enter__(self):
        try:
            import fcntl
        except ImportError:          # pragma: no cover - Windows
            return self
        while True:
            f = open(self.path, "a+")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if not isinstance(exc, BlockingIOError):   # a file system without locks (some network shares)
                    f.close()
                    return self
                f.seek(0)
                holder = f.read().strip() or "another process"
                f.close()
                raise RunBusyError(f"{shown_path(self.path.parent)} is being trained by {holder}. Wait for it to "
                                   "finish (a finished run is then loaded), or train into another folder.") from None
            try:   # the holder before us may have removed the file after we opened it: lock the one on disk
                same = os.fstat(f.fileno()).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            f.close()
        f.seek(0)
        f.truncate()
        f.write(f"process {os.getpid()} on {socket.gethostname()}")
        f.flush()
        self.file = f
        return self

    def __exit__(self, *exc):
        if self.file is not None:
            self.path.unlink(missing_ok=True)
            self.file.close()       # closing releases the lock
            self.file = None
        return False


# ---------------------------------------------------------------- measurements kept with their run

def cached(path, key: dict, compute, check=None):
    """``compute()``'s JSON-able result, stored in ``path`` with ``key`` and read back while the key
    matches, so that a measurement made once on a finished run is not repeated at every re-render. A key
    names everything the value depends on (a run's weights by ``weights_digest``, the images by ``digest``),
    so a retrained run is measured again. A stored value that fails ``check`` (wrong shape: a damaged or
    hand-edited file) is measured again, saying so."""
    path = Path(path)
    if path.exists():
        try:
            stored = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            stored = None                       # a damaged cache is measured again
        if isinstance(stored, dict) and stored.get("key") == key:
            if check is None or check(stored.get("value")):
                return stored["value"]
            print(f"{shown_path(path)} does not hold what it should (damaged or edited); measuring again")
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_json({"key": key, "value": value}, path)
    return value


def weights_digest(model) -> str:
    """A SHA-1 of a model's weights and buffers, in the order of its state dict: the part of a cache key
    that changes when a run is trained again."""
    return digest(*(t.float() if t.is_floating_point() else t for t in model.state_dict().values()))


def digest(*tensors) -> str:
    """A SHA-1 of tensors' bytes, for cache keys that must change when the inputs do."""
    h = hashlib.sha1()
    for t in tensors:
        h.update(t.cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------- provenance

def git_state() -> dict | None:
    """The commit of the code that runs and whether its code (``helpers/``, ``scripts/``; not the
    notebooks and results that a re-render rewrites) has uncommitted changes; None outside git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                                timeout=10)
        if commit.returncode:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "helpers", "scripts"],
                               cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        return {"commit": commit.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return None
