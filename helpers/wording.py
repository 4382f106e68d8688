"""The report's wording, kept out of the code: Markdown templates in ``report/text/`` with named
fields (Python's format syntax, e.g. ``{ece:.1f}``), filled with numbers and verdicts computed in
Python. A writer edits a template without reading code; the code only supplies the values.

``fill("calibration", ...)`` reads ``report/text/calibration.md``. Short related pieces share a file,
each after a marker line ``<!-- piece -->``: ``fill("findings:overfits", ...)`` reads the piece
``overfits`` of ``report/text/findings.md``.

Numbers follow one rule (``helpers/facts.py``): a fact formats itself, so a template names it without a
format (``{gap}``); any other number takes the template's format, with a true minus sign.

Templates are wrapped for the writer; ``fill`` joins the lines of each paragraph and list item, so the
filled text has one line per paragraph whatever the wrapping (Markdown renders both the same).
"""
from __future__ import annotations

import re
import string

from .facts import MINUS, Fact
from .files import REPO_ROOT, shown_path

TEXT = REPO_ROOT / "report" / "text"
_MARKER = re.compile(r"^<!-- ([\w-]+) -->[ \t]*$", re.M)
_BLOCK_START = re.compile(r"\s*([-*+] |\d+\. |\||#|>)")      # a line that starts its own Markdown block


def unwrap(text: str) -> str:
    """``text`` with each paragraph and list item on one line: a line joins the one before unless either
    is blank, it starts a list item, table row, heading or quote, or the one before is a table row or heading."""
    out: list[str] = []
    for line in text.split("\n"):
        before = out[-1].lstrip() if out else ""
        if before and line.strip() and not _BLOCK_START.match(line) and not before.startswith(("|", "#")):
            out[-1] = out[-1].rstrip() + " " + line.strip()
        else:
            out.append(line)
    return "\n".join(out)


def fields_of(name: str) -> set[str]:
    """The field names a template uses."""
    return {f for _, f, _, _ in string.Formatter().parse(_template(name)) if f}


def _path(name: str):
    return TEXT / f"{name.split(':')[0]}.md"


def pieces(file: str) -> dict[str, str]:
    """The pieces of ``report/text/<file>.md`` by name (text between one marker line and the next)."""
    text = _read(_path(file))
    parts = _MARKER.split(text)
    return {parts[i]: parts[i + 1].strip("\n") for i in range(1, len(parts) - 1, 2)}


def _read(path) -> str:
    if not path.exists():
        raise FileNotFoundError(f"no template {shown_path(path)}; the templates are in {shown_path(TEXT)}")
    return path.read_text()


def _template(name: str) -> str:
    if ":" not in name:
        return _read(_path(name))
    file, piece = name.split(":", 1)
    found = pieces(file)
    if piece not in found:
        raise KeyError(f"{shown_path(_path(name))} has no piece '<!-- {piece} -->'; it has {', '.join(found) or 'none'}")
    return found[piece]


def fill(name: str, /, **values) -> str:
    """Template ``name`` with its fields filled in; a field without a value is an error that names the
    template and the field. (``name`` is positional-only, so a field may be called name.)"""
    missing = sorted(fields_of(name) - set(values))
    if missing:
        raise KeyError(f"{shown_path(_path(name))}{'' if ':' not in name else ' (' + name.split(':')[1] + ')'} uses "
                       f"{', '.join(missing)}, which the code does not supply; supplied: {', '.join(sorted(values))}")
    try:
        text = _FORMATTER.format(_template(name), **values)
    except ValueError as exc:          # a fact formatted against its own format, or a bad format
        raise ValueError(f"{shown_path(_path(name))}{'' if ':' not in name else ' (' + name.split(':')[1] + ')'}: "
                         f"{exc}") from None
    return unwrap(text.strip())


class _Numbers(string.Formatter):
    """Python's format, with the report's rule for a negative number: a true minus sign. A fact
    (``helpers/facts.py``) formats itself."""

    def format_field(self, value, format_spec):
        if isinstance(value, float) and not isinstance(value, Fact) and not format_spec:
            raise ValueError(f"a number ({value!r}) without a format: pass a fact (helpers/facts.py) or give the "
                             "field a format in the template")
        text = format(value, format_spec)
        if isinstance(value, (int, float)) and not isinstance(value, (bool, Fact)):
            text = text.replace("-", MINUS, 1) if text.lstrip().startswith("-") else text
        return text


_FORMATTER = _Numbers()
