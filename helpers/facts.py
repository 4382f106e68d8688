"""The report's facts and their one formatter: a number a text states is a ``Fact``, a float that carries
its name, unit, decimals, whether it is a signed difference, its standard error or interval and the runs
it comes from, and that always renders the same way.

One rule for every text (README, notebooks' prose, paper): ``digits`` decimals, a thousands separator for
counts, a true minus sign (U+2212), a sign on a difference (``signed``), "–" for a value that was not
measured. A template names a fact without a format (``{gap}``); a format that disagrees with the fact's
own (``{gap:.2f}`` for a fact stated with one decimal) is an error, so a number cannot be stated two ways.

Every rendering is logged by fact name (``rendered``), so a test can collect each fact's forms across the
README, the paper's fields and the notebooks' generated text (``say`` stores the facts a notebook cell
stated in that cell's output metadata) and check that there is one.
"""
from __future__ import annotations

import math

MINUS = "\u2212"
DIGITS = {"%": 1, "points": 1, "dB": 1, "sd": 2, "count": 0, "epochs": 0, "minutes": 0, "ratio": 1, "": 2}

_log: dict[str, set[str]] = {}          # fact name -> the forms it was rendered in, since the last ``take``


def render(value: float, digits: int = 1, signed: bool = False, thousands: bool = False) -> str:
    """The one number format: ``digits`` decimals, "+" before a positive difference when ``signed``, a true
    minus sign before a negative number, a thousands separator when ``thousands``, "–" for NaN or None."""
    if value is None or value != value:
        return "–"
    if math.isinf(value):
        return ("−" if value < 0 else "") + "∞"
    text = f"{float(value):{'+' if signed else ''}{',' if thousands else ''}.{digits}f}"
    if text.lstrip("+-").strip("0.,") == "":            # -0.0 and +0.0 both read as 0.0
        text = text.lstrip("+-")
    return text.replace("-", MINUS)


class Fact(float):
    """A number as the report states it. Arithmetic on a fact gives a plain float (a derived number is a
    new fact, with a name of its own)."""

    def __new__(cls, name: str, value, unit: str = "", digits: int | None = None, signed: bool = False,
                se: float | None = None, interval: tuple[float, float] | None = None, sources=()):
        self = super().__new__(cls, math.nan if value is None else value)
        self.name, self.unit, self.signed = name, unit, signed
        self.digits = DIGITS.get(unit, 2) if digits is None else digits
        self.se, self.interval, self.sources = se, interval, tuple(sources)
        return self

    @property
    def spec(self) -> str:
        """The format spec this fact renders with, in Python's notation."""
        return f"{'+' if self.signed else ''}{',' if self.unit == 'count' else ''}.{self.digits}f"

    def __format__(self, spec: str) -> str:
        same = spec.replace(",", "") in ("", self.spec.replace(",", "")) or (spec in ("g", "d") and self.digits == 0)
        if not same:
            raise ValueError(f"the fact {self.name} is stated as {self.spec!r} everywhere, but a text formats it "
                             f"as {spec!r}; write it without a format ({{{self.name.rsplit('.', 1)[-1]}}})")
        text = render(float(self), self.digits, self.signed, self.unit == "count")
        _log.setdefault(self.name, set()).add(text)
        return text

    def __str__(self) -> str:
        return self.__format__("")

    def __repr__(self) -> str:
        return f"Fact({self.name}={self.__format__('')}{' ' + self.unit if self.unit else ''})"

    def __reduce__(self):                   # pickles (and deep-copies) with its name and format
        return (Fact, (self.name, float(self), self.unit, self.digits, self.signed, self.se, self.interval,
                       self.sources))

    def record(self) -> dict:
        """The fact as ``report/tables/facts.json`` stores it: the value (None where not measured), its unit,
        uncertainty and sources, and the text every report states it as."""
        value = float(self)
        out = {"fact": self.name, "value": None if value != value else value, "unit": self.unit,
               "digits": self.digits, "signed": self.signed,
               "text": render(value, self.digits, self.signed, self.unit == "count")}
        if self.se is not None:
            out["se"] = self.se
        if self.interval is not None:
            out["interval"] = list(self.interval)
        if self.sources:
            out["sources"] = list(self.sources)
        return out


def fact(name: str, value, short: str = "", sources=(), **options) -> Fact:
    """The fact ``name`` with its format in short (``form``); a value that is already a fact keeps its own
    name and format."""
    return value if isinstance(value, Fact) else Fact(name, value, sources=sources, **form(short), **options)


def form(text: str) -> dict:
    """A fact's format in short: an optional "+" (a signed difference), the unit, optional decimals:
    "%2" is a percentage with two decimals, "+points1" a difference in points with one, "count" a count."""
    signed = text.startswith("+")
    unit = text.lstrip("+").rstrip("0123456789")
    digits = text[len(text.rstrip("0123456789")):]
    return {"unit": unit, "signed": signed, "digits": int(digits) if digits else None}


def facts(prefix: str, values: dict, forms: dict[str, str], sources=()) -> dict:
    """``values`` with each key named in ``forms`` (key -> ``form``) made the fact ``prefix.key``; other
    values (words, verdicts) pass through unchanged, and so does a key ``forms`` names that is absent."""
    out = dict(values)
    for key, short in forms.items():
        value = out.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = fact(f"{prefix}.{key}", value, short, sources)
    return out


def take() -> dict[str, list[str]]:
    """The facts rendered since the last call, each with its forms; the log is emptied."""
    found = {name: sorted(forms) for name, forms in _log.items()}
    _log.clear()
    return found


def say(text: str) -> None:
    """Show ``text`` as Markdown in a notebook, with the facts it states (``take``) in the output's metadata,
    where ``tests/test_facts.py`` collects them."""
    from IPython.display import Markdown, display
    display(Markdown(text), metadata={"facts": take()})


def conflicts(*sources: dict[str, list[str]]) -> dict[str, list[str]]:
    """The facts stated in more than one form across ``sources`` (each a name -> forms mapping)."""
    seen: dict[str, set[str]] = {}
    for source in sources:
        for name, forms in source.items():
            seen.setdefault(name, set()).update(forms)
    return {name: sorted(forms) for name, forms in seen.items() if len(forms) > 1}
