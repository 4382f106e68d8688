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

def cached(path, key: dict, compute):
    """``compute()``'s JSON-able result, stored in ``path`` with ``key`` and read back while the key
    matches, so that a measurement made once on a finished run is not repeated at every re-render."""
    path = Path(path)
    if path.exists():
        try:
            stored = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            stored = None                       # a damaged cache is measured again
        if isinstance(stored, dict) and stored.get("key") == key:
            return stored["value"]
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_json({"key": key, "value": value}, path)
    return value


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
