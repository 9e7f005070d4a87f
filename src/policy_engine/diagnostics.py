"""Diagnostics: one type for every problem a user can cause, with a stable code.

Codes are grouped by pipeline stage: PE1xx load, PE2xx validate and compile, PE3xx evaluate,
PE4xx facts. A code is never reused for another meaning; each has a page in docs/errors/.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Literal

Severity = Literal["error", "warning", "info"]

#: code -> (severity, short title). The docs page docs/errors/<code>.md explains each one.
CODES: dict[str, tuple[Severity, str]] = {
    "PE100": ("error", "file cannot be read"),
    "PE101": ("error", "YAML syntax error"),
    "PE102": ("error", "file too large"),
    "PE103": ("error", "YAML nested too deeply"),
    "PE104": ("error", "YAML alias expansion limit exceeded"),
    "PE105": ("error", "duplicate key"),
    "PE106": ("error", "unsupported YAML tag or key"),
    "PE201": ("error", "unknown field"),
    "PE202": ("error", "missing required field"),
    "PE203": ("error", "invalid value"),
    "PE210": ("error", "base package not found"),
    "PE211": ("error", "cycle in extends"),
    "PE212": ("error", "unknown source in citation"),
    "PE213": ("error", "name defined twice"),
    "PE220": ("error", "unknown name"),
    "PE221": ("error", "type mismatch"),
    "PE222": ("error", "dependency cycle"),
    "PE223": ("error", "construct not allowed in expressions"),
    "PE224": ("error", "unknown function or wrong arguments"),
    "PE225": ("error", "exponent too large"),
    "PE226": ("error", "expression syntax error"),
    "PE230": ("error", "invalid table cell"),
    "PE231": ("error", "row does not fit the table's columns"),
    "PE232": ("error", "duplicate row id"),
    "PE233": ("error", "hit policy cannot be used here"),
    "PE234": ("error", "output has no definition"),
    "PE240": ("error", "invalid parameter values"),
    "PE241": ("error", "invalid parameter dimension"),
    "PE250": ("warning", "missing legal reference"),
    "PE251": ("warning", "illustrative parameter in force"),
    "PE252": ("error", "invalid version window"),
    "PE260": ("warning", "rows of a unique table overlap"),
    "PE261": ("warning", "table has a gap"),
    "PE262": ("warning", "row can never fire"),
    "PE263": ("warning", "unused input"),
    "PE264": ("warning", "unused parameter"),
    "PE265": ("warning", "decision not covered by any test"),
    "PE301": ("error", "more than one row matched a unique table"),
    "PE302": ("error", "matched rows disagree under hit policy A"),
    "PE303": ("warning", "parameter has no value for a dimension key"),
    "PE401": ("error", "invalid fact"),
    "PE402": ("error", "invalid as_of date"),
    "PE403": ("error", "unknown entity"),
}

_SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}


@dataclass(frozen=True, order=False)
class Diagnostic:
    """A problem found in a policy, a test suite or a facts document."""

    code: str
    message: str
    file: str | None = None
    line: int | None = None
    column: int | None = None
    hint: str | None = None
    cite: str | None = None
    path: str | None = None  # logical path inside the document, e.g. decisions.dibao.table.rows[2]
    severity: Severity = field(default="error")

    def __post_init__(self) -> None:
        if self.code not in CODES:
            raise ValueError(f"unregistered diagnostic code {self.code}")

    @property
    def sort_key(self) -> tuple[str, int, int, int, str, str]:
        return (
            self.file or "",
            self.line or 0,
            self.column or 0,
            _SEVERITY_ORDER[self.severity],
            self.code,
            self.message,
        )

    def location(self) -> str:
        if self.file is None:
            return "<input>"
        if self.line is None:
            return self.file
        return f"{self.file}:{self.line}:{self.column or 1}"

    def gnu(self) -> str:
        """GNU one-line form: ``file:line:col: CODE message``."""
        text = f"{self.location()}: {self.code} {self.message}"
        if self.hint:
            text += f" ({self.hint})"
        return text

    def to_dict(self) -> dict[str, object]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def make(code: str, message: str, **kwargs: object) -> Diagnostic:
    """Build a diagnostic whose severity is the registered one for ``code``."""
    severity, _ = CODES[code]
    return Diagnostic(code=code, message=message, severity=severity, **kwargs)  # type: ignore[arg-type]


def sort_unique(diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    """Deduplicate and sort by location, then severity and code."""
    return sorted(set(diagnostics), key=lambda d: d.sort_key)


def render(diagnostics: list[Diagnostic], fmt: str = "gnu") -> str:
    if fmt == "json":
        return json.dumps([d.to_dict() for d in diagnostics], ensure_ascii=False, indent=2)
    return "\n".join(d.gnu() for d in diagnostics)


class PolicyEngineError(Exception):
    """Base of every exception this library raises on purpose."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = sort_unique(list(diagnostics))
        super().__init__(render(self.diagnostics) or "policy engine error")


class PolicyError(PolicyEngineError):
    """The policy package cannot be loaded, compiled or evaluated as written."""


class FactsError(PolicyEngineError):
    """The facts given to ``decide`` are malformed; each diagnostic names the field path."""

    @property
    def paths(self) -> list[str]:
        return [d.path or "" for d in self.diagnostics]


def did_you_mean(name: str, candidates: object) -> str | None:
    import difflib

    names = sorted(str(c) for c in candidates)  # type: ignore[attr-defined]
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    return f"did you mean `{close[0]}`?" if close else None
