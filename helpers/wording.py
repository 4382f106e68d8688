"""The report's wording, kept out of the code: Markdown templates in ``report/text/`` with named
fields (Python's format syntax, e.g. ``{ece:.1f}``), filled with numbers and verdicts computed in
Python. A writer edits a template without reading code; the code only supplies the values.
"""
from __future__ import annotations

import string

from .files import REPO_ROOT, shown_path

TEXT = REPO_ROOT / "report" / "text"


def fields_of(name: str) -> set[str]:
    """The field names a template uses."""
    return {f for _, f, _, _ in string.Formatter().parse(_template(name)) if f}


def _template(name: str) -> str:
    path = TEXT / f"{name}.md"
    if not path.exists():
        raise FileNotFoundError(f"no template {shown_path(path)}; the templates are in {shown_path(TEXT)}")
    return path.read_text()


def fill(name: str, /, **values) -> str:
    """Template ``report/text/<name>.md`` with its fields filled in; a field without a value is an error
    that names the template and the field. (``name`` is positional-only, so a field may be called name.)"""
    missing = sorted(fields_of(name) - set(values))
    if missing:
        raise KeyError(f"{shown_path(TEXT / (name + '.md'))} uses {', '.join(missing)}, which the code does not "
                       f"supply; supplied: {', '.join(sorted(values))}")
    return _template(name).format(**values).strip()
