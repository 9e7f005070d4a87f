"""The compiled policy: one immutable, backend-neutral intermediate representation.

Everything here is plain frozen data (tuples, strings, Decimals, dates): no Python closures,
no callables. Each evaluator (the scalar one in ``evaluate.py``, a columnar one later) generates
its own code from this IR, so the IR is the single source of truth for what a policy means.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

# --- expressions -------------------------------------------------------------------------

#: Types: "money", "decimal", "integer", "boolean", "date", "text", "enum", "list",
#: plus "null" (the literal None) and "any" (a list element of unknown type).
NUMERIC = frozenset({"money", "decimal", "integer"})


@dataclass(frozen=True)
class Const:
    value: Any
    type: str


@dataclass(frozen=True)
class Ref:
    """A named value: input, parameter, derived value or decision output (``dibao.eligible``).

    ``scope`` is "member" for member-level inputs and derived values read inside an aggregate.
    """

    name: str
    type: str
    scope: str = "entity"


@dataclass(frozen=True)
class AsOf:
    type: str = "date"


@dataclass(frozen=True)
class Unary:
    op: str  # "neg" | "pos" | "not"
    operand: Expr
    type: str


@dataclass(frozen=True)
class Binary:
    op: str  # "+" "-" "*" "/" "//" "%" "**"
    left: Expr
    right: Expr
    type: str


@dataclass(frozen=True)
class Compare:
    op: str  # "<" "<=" ">" ">=" "==" "!="
    left: Expr
    right: Expr
    type: str = "boolean"


@dataclass(frozen=True)
class BoolOp:
    op: str  # "and" | "or"
    operands: tuple[Expr, ...]
    type: str = "boolean"


@dataclass(frozen=True)
class IfElse:
    condition: Expr
    then: Expr
    otherwise: Expr
    type: str


@dataclass(frozen=True)
class In:
    item: Expr
    options: tuple[Expr, ...]
    negate: bool
    type: str = "boolean"


@dataclass(frozen=True)
class Call:
    function: str  # min max abs floor ceil round_money round age months_between ...
    args: tuple[Expr, ...]
    type: str


@dataclass(frozen=True)
class Aggregate:
    """An aggregate over the members of a household: sum count any all min max collect."""

    function: str
    body: Expr | None
    where: Expr | None
    type: str


Expr = Const | Ref | AsOf | Unary | Binary | Compare | BoolOp | IfElse | In | Call | Aggregate


# --- tables --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Test:
    """A normalised unary test (one table input cell, or one item of a list of tests).

    kind: "any" (``-``), "null", "compare" (op, a), "range" (a, b, low_closed, high_closed),
    "one_of" (tests: a disjunction), "not" (tests: negated disjunction).
    """

    kind: str
    text: str
    op: str | None = None
    a: Expr | None = None
    b: Expr | None = None
    low_closed: bool = True
    high_closed: bool = True
    tests: tuple[Test, ...] = ()


@dataclass(frozen=True)
class Cite:
    source: str  # the source id, e.g. anhui-2022-46
    number: str  # the document number, e.g. 皖民社救字〔2022〕46号
    clause: str
    text: str | None = None

    def render(self) -> str:
        return f"{self.number} {self.clause}".strip()


@dataclass(frozen=True)
class Window:
    start: dt.date
    end: dt.date | None

    def contains(self, day: dt.date) -> bool:
        return self.start <= day and (self.end is None or day <= self.end)


@dataclass(frozen=True)
class Row:
    id: str
    tests: tuple[Test, ...]
    outputs: tuple[Expr, ...]
    cites: tuple[Cite, ...]
    in_force: Window | None = None
    note: str | None = None


@dataclass(frozen=True)
class Table:
    owner: str  # the derived value or decision that owns the table
    hit: str
    columns: tuple[str, ...]  # display names of the input columns
    inputs: tuple[Expr, ...]
    outputs: tuple[str, ...]
    output_types: tuple[str, ...]
    rows: tuple[Row, ...]
    defaults: tuple[Expr | None, ...]
    #: for P and O: per output, its values in priority order (highest first); () when unused
    priorities: tuple[tuple[Any, ...], ...] = ()


# --- nodes ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Label:
    zh: str
    en: str


@dataclass(frozen=True)
class InputNode:
    name: str
    type: str
    entity: str
    path: tuple[str, ...]
    label: Label
    unit: str | None = None
    values: tuple[str, ...] = ()
    #: display labels of enum values: (value, label) pairs
    value_labels: tuple[tuple[str, Label], ...] = ()


@dataclass(frozen=True)
class DatedValue:
    start: dt.date
    end: dt.date | None
    #: (dimension key tuple, value) pairs; the key is () for a parameter without dimensions
    entries: tuple[tuple[tuple[str, ...], Any], ...]
    provenance: str
    source: str | None = None
    formula: str | None = None
    note: str | None = None
    note_en: str | None = None


@dataclass(frozen=True)
class ParameterNode:
    name: str
    type: str
    label: Label
    unit: str | None
    by: tuple[str, ...]
    values: tuple[DatedValue, ...]  # sorted by start
    provenance: str
    cites: tuple[Cite, ...]
    source: str | None = None
    note: str | None = None
    defined_in: str = ""
    note_en: str | None = None


@dataclass(frozen=True)
class DerivedNode:
    name: str
    type: str
    entity: str
    label: Label
    expr: Expr | None
    table: Table | None
    cites: tuple[Cite, ...]
    unit: str | None = None
    values: tuple[str, ...] = ()
    depends_on: tuple[str, ...] = ()
    #: display labels of enum values: (value, label) pairs
    value_labels: tuple[tuple[str, Label], ...] = ()


@dataclass(frozen=True)
class OutputNode:
    name: str  # qualified: dibao.amount
    short: str  # amount
    type: str
    label: Label
    expr: Expr | None  # None when the decision's table produces it
    unit: str | None = None
    values: tuple[str, ...] = ()
    #: display labels of enum values: (value, label) pairs
    value_labels: tuple[tuple[str, Label], ...] = ()


@dataclass(frozen=True)
class DecisionNode:
    id: str
    entity: str
    label: Label
    cites: tuple[Cite, ...]
    in_force: Window | None
    outputs: tuple[OutputNode, ...]
    table: Table | None
    depends_on: tuple[str, ...] = ()
    defined_in: str = ""


@dataclass(frozen=True)
class Version:
    version: str
    start: dt.date
    end: dt.date | None
    note: str | None = None


@dataclass(frozen=True)
class SourceDoc:
    id: str
    number: str
    title: str
    issuer: str | None
    date: dt.date | None
    in_force: Window | None
    url: str | None = None


@dataclass(frozen=True)
class NotModelled:
    cites: tuple[Cite, ...]
    reason: str
    package: str


@dataclass(frozen=True)
class Rounding:
    unit: Decimal
    mode: str


@dataclass(frozen=True)
class CompiledPolicy:
    id: str
    title: Label
    jurisdiction_code: str
    jurisdiction: Label
    chain: tuple[str, ...]  # package ids, base first
    versions: tuple[Version, ...]
    sources: tuple[SourceDoc, ...]
    rounding: Rounding
    inputs: tuple[InputNode, ...]
    parameters: tuple[ParameterNode, ...]
    derived: tuple[DerivedNode, ...]  # topological order
    decisions: tuple[DecisionNode, ...]  # topological order
    not_modelled: tuple[NotModelled, ...]
    content_hash: str = field(default="")
    #: where each item was written: "parameters.x", "decisions.y", "decisions.y.rows.<id>" ->
    #: (file, line, column). Not part of the content hash (it depends on the working directory).
    locations: tuple[tuple[str, tuple[str, int, int]], ...] = field(default=(), compare=False)

    def location(self, key: str) -> tuple[str | None, int | None, int | None]:
        for k, where in self.locations:
            if k == key:
                return where
        return (None, None, None)

    def version_at(self, day: dt.date) -> Version | None:
        found = None
        for version in self.versions:
            if version.start <= day and (version.end is None or day <= version.end):
                found = version
        return found
