"""Lint: checks beyond validity that policy staff want before publishing.

Compile already warns about rules without a legal reference (PE250). ``lint`` adds the checks
that depend on a date: illustrative parameters in force (PE251).
"""

from __future__ import annotations

import datetime as dt

from . import ir
from .diagnostics import Diagnostic, make, sort_unique


def illustrative_in_force(policy: ir.CompiledPolicy, as_of: dt.date | None) -> list[Diagnostic]:
    """Illustrative parameters in force on ``as_of`` (or, without a date, in their latest value)."""
    out = []
    for p in policy.parameters:
        chosen = p.values[-1] if as_of is None and p.values else None
        for v in p.values if as_of is not None else ():
            if v.start <= as_of and (v.end is None or as_of <= v.end):
                chosen = v
        if chosen is not None and chosen.provenance == "illustrative":
            file, line, column = policy.location(f"parameters.{p.name}")
            out.append(make(
                "PE251",
                f"parameter `{p.name}` ({p.label.zh}) is illustrative"
                f"{' on ' + as_of.isoformat() if as_of else ''}: "
                f"{chosen.note or p.note or 'a placeholder, not a published figure'}",
                path=f"parameters.{p.name}", file=file, line=line, column=column,
                hint="replace it with the published figure and set provenance: sourced",
            ))
    return out


def lint(policy: ir.CompiledPolicy, as_of: dt.date | None, compile_diagnostics: list[Diagnostic] | None = None
         ) -> list[Diagnostic]:
    return sort_unique(list(compile_diagnostics or []) + illustrative_in_force(policy, as_of))
