"""What changed when the report's conclusions were checked (notebook 09): each correction with its size,
as values for ``report/text/what_changed.md``."""
from __future__ import annotations

import pandas as pd

from ..results import CLAIMED_JPEG_COST
from ..wording import fill
from .final import final_seed_fields, precision_fields
from .jpeg import measured_cost
from .precision import measured_precision
from .ladder import _step_name, hypothesis_fields, step_fact


def what_changed_fields(ladder: pd.DataFrame, seeds: pd.DataFrame) -> dict:
    """The ladder before and after BatchNorm statistics were measured without dropout, the final recipe's
    first run against its seeds, the ladder's changes within noise and bf16 against fp32."""
    by_step = {r["step"]: r for _, r in ladder.iterrows()}
    moved = ladder[ladder["bn refreshed"].astype(bool) & ladder["builds on"].astype(bool)]
    hypothesis = hypothesis_fields(ladder) or {"verdict": "", "verdict_as_trained": ""}
    first = seeds.iloc[0]
    bn = by_step.get("batchnorm")
    fields = {
        "bn_step": _step_name(bn["change"]) if bn is not None else "",
        "bn_as_trained": step_fact(bn, "gain as trained") if bn is not None else float("nan"),
        "bn_now": step_fact(bn, "gain") if bn is not None else float("nan"),
        "moved": "\n".join(f"  - {_step_name(r['change'])}: {step_fact(r, 'gain as trained')} → {step_fact(r, 'gain')}"
                            for _, r in moved.iterrows() if r["step"] != "batchnorm"),
        "verdict": hypothesis["verdict"], "verdict_as_trained": hypothesis["verdict_as_trained"],
        "first_seed": int(seeds.index[0]), "first_acc": first["test acc (%)"], "first_one": first["one view (%)"],
        "noise": int(ladder["within noise"].sum()), "changes": int(ladder["gain"].notna().sum()),
    }
    fields.update({f"seeds_{k}": v for k, v in final_seed_fields(seeds).items()})
    precision = precision_fields(seeds)
    fields["precision"] = precision is not None
    fields.update({f"precision_{k}": v for k, v in (precision or {}).items()})
    return fields


def what_changed(ladder: pd.DataFrame, seeds: pd.DataFrame, results_dir="results") -> str:
    """``what_changed_fields`` in words: one bullet per correction, the paired bf16-fp32 check once two
    pairs have finished (``precision.measured_precision``) and the JPEG copy's cost once notebook 09 has
    estimated it (``jpeg.measured_cost``)."""
    fields = what_changed_fields(ladder, seeds)
    text = fill("what_changed", **fields)
    if fields["precision"]:
        text += "\n" + fill("what_changed_precision", **fields)
    paired = measured_precision(results_dir)
    if paired:
        text += "\n" + fill("what_changed_precision_paired", **paired)
    cost = measured_cost(results_dir)
    if cost:
        text += "\n" + fill("what_changed_jpeg", claimed=CLAIMED_JPEG_COST, **cost)
    return text
