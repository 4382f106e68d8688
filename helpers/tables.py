"""How the report shows a table, or a piece of its own code: one format for numbers, missing values and ids.

``show(df)`` returns an HTML table for a notebook: whole numbers with thousands separators,
other numbers with one decimal unless a column's format is given, "-" for a missing value. Its
HTML id is derived from the table's content, so re-running a notebook with the same results
writes the same bytes (pandas' own Styler draws a random id, and its plain-text form carries a
memory address). ``show_code(obj)`` shows the source of a class or function of ``helpers/``, read from
the file that runs, so a notebook never carries a second copy of it.
"""
from __future__ import annotations

import hashlib
import inspect

import pandas as pd

MISSING = "-"


def _default_format(series: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(series) or not pd.api.types.is_numeric_dtype(series):
        return "{}"
    values = series.dropna()
    if pd.api.types.is_integer_dtype(series) or (len(values) and (values == values.round()).all()
                                                  and values.abs().max() >= 100):
        return "{:,.0f}"
    return "{:,.1f}"


def styled(df: pd.DataFrame, formats: dict | None = None, index: bool = True):
    """A pandas Styler with the report's number formats and a stable id."""
    formats = formats or {}
    fmt = {c: formats.get(c, _default_format(df[c])) for c in df.columns}
    uuid = hashlib.sha1(df.to_csv().encode()).hexdigest()[:8]
    styler = df.style.format(fmt, na_rep=MISSING).set_uuid(uuid)
    return styler if index else styler.hide(axis="index")


def show(df: pd.DataFrame, formats: dict | None = None, index: bool = True):
    """The table as an HTML display object for a notebook cell (see ``styled``)."""
    from IPython.display import HTML
    return HTML(styled(df, formats, index).to_html())


def show_code(*objects):
    """The source of ``objects`` (classes or functions), one after another, as a highlighted code block."""
    from IPython.display import Markdown
    code = "\n\n".join(inspect.getsource(obj).rstrip() for obj in objects)
    return Markdown(f"```python\n{code}\n```")
