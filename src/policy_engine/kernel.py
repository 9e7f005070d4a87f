"""Compiled kernels: a policy's decisions as one loop over households, compiled by numba.

The batch path (``vector.py``) builds polars expressions node by node; this module is its fast
lane for large batches (``MIN_ROWS`` households or more). It writes the decisions a batch asks
for as straight-line Python, one household per iteration (its members in inner loops), in the
scalar path's own semantics (``evaluate.py``): every value carries a state (0 known, 1 null,
2 unknown); numbers are fixed-point ``int64`` at a scale known when the code is written, text a
code per constant or enum value, a date its day number. numba compiles the source (cached on
disk, keyed by the source itself), and the loop fills the same columns as
``vector._decision_frame``. See docs/population.md.

Exact, never rounded silently: every operation that could leave ``int64`` (or that the scalar
path would round in its 34 digits) is guarded per household, and a household whose guard trips
is marked ``_fb`` and decided by the scalar path, as the batch path does. What the kernel cannot
write (list hit policies, unrounded quotients, ...) raises ``Unsupported`` when the code is
written, and those decisions are left to the polars plan.

Everything here is evaluated eagerly and without branches: both sides of an ``if``, every
operand of ``and``, every row of a table, chosen by state (``sel``). That is safe because values
have no side effects (a guard tripping in a branch the scalar path would not take only sends the
household to the scalar path, which is exact), and straight-line code keeps numba's compile time
near linear in the size of the policy.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.util
import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl

from . import ir
from .evaluate import EXACT
from .intake import DECIMAL_DIGITS

#: households below which the polars plan is used (compiling a new kernel costs a second for a
#: small policy, about 20 seconds for Huaiyuan's household decisions; then it is cached)
MIN_ROWS = 20_000
#: bound on every fixed-point value the kernel holds: sums and differences of two such values
#: still fit int64
LIMIT = 2**62
#: a number read from a column is at most this (in units of its scale; else its household goes
#: to the scalar path), so that sums and small products of inputs need no guard
INPUT_LIMIT = 2**52
#: 10^33: the scalar path divides in 34 digits; a quotient stays exact below this (``round_to``)
DIGITS_33 = 10**33

_STATUS = pl.Series(["decided", "needs_information"], dtype=pl.String)
#: the comparisons the generated code may hold, each with its mirror (a < b is b > a)
_ORDER = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}
class OwnersMismatch(ValueError):
    """A Split's members are not listed in household order, ``sizes`` per household (the
    caller, ``vector._run``, then runs its own check for the precise error)."""

    def __init__(self) -> None:
        super().__init__("Split.sizes does not match the members table's `_hh` (members in household order)")


class Unsupported(NotImplementedError):
    """A policy construct a batch evaluator does not compile: here, the polars plan then decides
    it; in ``vector.py``, the scalar path."""


#: dates as days since 1970-01-01; the scalar path holds years 1 to 9999
EPOCH = dt.date(1970, 1, 1)
FIRST_DAY = (dt.date(1, 1, 1) - EPOCH).days
LAST_DAY = (dt.date(9999, 12, 31) - EPOCH).days

#: calendar helpers every kernel carries (in its own source, so that its cache key covers them):
#: days since 1970-01-01 to (year, month, day) and back, in the proleptic Gregorian calendar
#: (H. Hinnant's algorithms, with floor division), and the length of a month
HELPERS = '''
@numba.njit(cache=True, nogil=True, error_model="numpy")
def civil(z):
    z = z + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (1 if m <= 2 else 0), m, d


@numba.njit(cache=True, nogil=True, error_model="numpy")
def days(y, m, d):
    y = y - (1 if m <= 2 else 0)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m - 3 if m > 2 else m + 9) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


@numba.njit(cache=True, nogil=True)
def sel(c, a, b):
    return a if c else b


@numba.njit(cache=True, nogil=True, error_model="numpy")
def age_on(born, y, m, d):
    by, bm, bd = civil(born)
    return y - by - (1 if (m < bm or (m == bm and d < bd)) else 0)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def months_between(a, b):
    ay, am, ad = civil(a)
    by, bm, bd = civil(b)
    months = (by - ay) * 12 + (bm - am)
    if months > 0 and bd < ad and bd != month_days(by, bm):
        months -= 1
    elif months < 0 and bd > ad:
        months += 1
    return months


@numba.njit(cache=True, nogil=True, error_model="numpy")
def add_months(d, n):
    y, m, dd = civil(d)
    if abs(n) > 1200000:  # beyond any year the scalar path holds
        return 0, False
    index = y * 12 + m - 1 + n
    year = index // 12
    month = index % 12 + 1
    if year < 1 or year > 9999:
        return 0, False
    return days(year, month, min(dd, month_days(year, month))), True


@numba.njit(cache=True, nogil=True, error_model="numpy")
def month_days(y, m):
    if m == 2:
        return 29 if (y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)) else 28
    if m == 4 or m == 6 or m == 9 or m == 11:
        return 30
    return 31
'''


@dataclass(frozen=True)
class Val:
    """One value in the generated code: its kind, the source of its value and of its state
    (0 known, 1 null, 2 unknown), and for numbers the scale of the fixed-point integer.
    A value whose state is not 0 may hold anything: every use reads the state first, and a
    guard tripped by such a value only sends its household to the scalar path.

    Text is a code (``Writer.code``); ``exact`` says every value it can take has its own code
    (constants, enum values), so that two codes are equal exactly when the texts are. A date is
    its day number. A ``div`` is a quotient written only where it is rounded or compared; a
    ``list`` is a member selection (``sel``: the array it is written to) from ``collect``."""

    kind: str  # num bool str date null div list
    v: str
    s: str
    scale: int = 0
    div: tuple[Val, Val] | None = None
    exact: bool = True
    sel: str | None = None
    of: str | None = None  # the member input a ``list`` collects
    #: the largest magnitude a number can have where it is known (its household not sent to the
    #: scalar path): an operation whose result cannot pass LIMIT needs no guard
    bound: int = LIMIT


def _then(c: Val) -> str:
    """Where the scalar path evaluates the `then` branch of an `if` on ``c``: ``c`` true."""
    return f"({c.s} == 0) & {c.v}"


def _otherwise(c: Val) -> str:
    """Where it evaluates the other branch: ``c`` false or null (not unknown: then neither)."""
    return f"({c.s} != 2) & ((({c.s} == 0) & {c.v}) == False)"


def _magnitude(v: Val, scale: int) -> int:
    """The largest magnitude of ``v``'s integer at ``scale`` (not below its own): a constant's
    own, else its bound, or LIMIT once rescaling it is guarded."""
    factor = int(10 ** (scale - v.scale))
    if v.kind == "null":
        return 0
    if _literal(v.v):
        return abs(int(v.v)) * factor
    return min(v.bound * factor, LIMIT)


def _arg(policy: ir.CompiledPolicy, scope: str, name: str, what: str = "v") -> str:
    """The kernel's argument for an input column: its values (``v``) or states (``s``), named
    by the input's position (the generated source holds no name or text of the policy: only
    identifiers it makes and numbers)."""
    position = next(k for k, node in enumerate(policy.inputs) if node.name == name)
    return f"{what}_{'m' if scope == 'member' else 'h'}{position}"


def _literal(source: str) -> bool:
    """Whether generated source is a constant (a whole number, at most one minus sign, or a
    boolean)."""
    return source.removeprefix("-").isdigit() or source in ("True", "False")


def _kind(t: str) -> str:
    if t in ir.NUMERIC:
        return "num"
    if t == "boolean":
        return "bool"
    if t in ("enum", "text"):
        return "str"
    if t in ("date", "list", "null"):
        return t
    raise Unsupported(f"values of type {t}")


def _any_unknown(values: list[Val]) -> str:
    """Whether any of ``values`` is unknown (state 2), as a branch-free expression."""
    return " | ".join(f"({v.s} == 2)" for v in values) or "False"


def _fold(fn: str, add: str, x: str, total: str, empty: str) -> list[str]:
    """The lines that fold ``x`` into ``total`` where ``add`` holds: a sum (guarded: both within
    LIMIT / 2, so that it cannot wrap) or a min / max (``empty``: nothing taken yet). ``total``
    starts at 0."""
    if fn == "sum":
        return [f"fb = fb | ({add} & ((abs({x}) > {LIMIT // 2}) | (abs({total}) > {LIMIT // 2})))",
                f"{total} = {total} + sel({add}, {x}, 0)"]
    better = "<" if fn == "min" else ">"
    return [f"{total} = sel({add} & ({empty} | ({x} {better} {total})), {x}, {total})"]


def _zero(kind: str) -> str:
    return "False" if kind == "bool" else "0"


def _unit_scale(unit: Decimal) -> int:
    exponent = unit.as_tuple().exponent
    if not isinstance(exponent, int) or exponent > 0:
        raise Unsupported(f"rounding to {unit}")
    return -exponent


def _decimal_scale(value: Decimal) -> int:
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)
    return max(0, -exponent)


@dataclass
class Source:
    """Fresh names for the kernel being written."""

    counter: int = 0

    def fresh(self, stem: str) -> str:
        self.counter += 1
        return f"{stem}{self.counter}"


@dataclass(frozen=True)
class Column:
    """An input column as the kernel reads it: its kind, scale, and for a decimal column read
    as given (its 128-bit words), whether it may be negative. Every column comes with its
    states (nulls or not), so that one kernel serves every chunk of a file."""

    kind: str
    scale: int
    signed: bool | None = None


class Writer:
    """Writes the kernel for some decisions of one policy, as of one day, for one layout of
    columns."""

    def __init__(self, policy: ir.CompiledPolicy, day: dt.date, entity: str,
                 columns: dict[tuple[str, str], Column], members: bool,
                 null_free: frozenset[tuple[str, str]] = frozenset()):
        self.columns = columns  # (scope, input name) -> Column
        #: the columns (and ("entity", "members"): the member lists) this kernel is written for
        #: without nulls: their states are the constant 0, which the compiler folds away
        self.null_free = null_free
        self.policy = policy
        self.day = day
        self.entity = entity
        self.members = members
        self.inputs = {n.name: n for n in policy.inputs}
        self.params = {p.name: p for p in policy.parameters}
        self.derived = {d.name: d for d in policy.derived}
        self.outputs = {o.name: (d, o) for d in policy.decisions for o in d.outputs}
        self.money_k = _unit_scale(policy.rounding.unit)
        self.money_mode = policy.rounding.mode
        self.src = Source()
        self.block: list[str] = []  # the lines being written (the household's, or a member loop's)
        self.entity_block: list[str] = self.block
        self.memo: dict[str, Val] = {}  # entity-level values written so far
        self.member_memo: dict[str, Val] | None = None  # inside a member loop
        self.args: list[str] = []  # arrays the kernel takes, in order
        self.decisions: dict[str, dict[str, Any]] = {}
        self.codes: dict[str, int] = {}  # text -> its code
        self.selections: list[str] = []  # member arrays written by `collect`
        #: check that each member belongs to its household, in the first member loop written
        self.check_owners = False
        self.owner_checked = False
        #: member values computed in a member loop, kept for the later loops of the household:
        #: name -> (row of the scratch arrays `scr`/`scrs`, kind, scale, exact)
        self.scratch: dict[str, tuple[int, str, int, bool]] = {}
        self.guarded: set[str] = set()  # member inputs whose checks a member loop made
        #: the same, of the member loop being written: they count once its loop is placed (a loop
        #: written while this one is, for an entity value it reads, runs before it)
        self.pending: dict[str, tuple[int, str, int, bool]] = {}
        self.pending_guards: set[str] = set()
        self.slots = 0
        #: where the code being written is evaluated by the scalar path (the conditions of the
        #: `if` branches it is in): a parameter key with no value sends the household to the
        #: scalar path only there. Empty while a value kept for other uses is written
        self.taken: list[str] = []

    def copy(self) -> Writer:
        """A writer that goes on from where this one stands (a decision is tried on a copy)."""
        other = Writer(self.policy, self.day, self.entity, self.columns, self.members, self.null_free)
        other.src = Source(self.src.counter)
        other.block = other.entity_block = list(self.entity_block)
        other.memo = dict(self.memo)
        other.args = list(self.args)
        other.decisions = {k: dict(v) for k, v in self.decisions.items()}
        other.codes = dict(self.codes)
        other.selections = list(self.selections)
        other.check_owners, other.owner_checked = self.check_owners, self.owner_checked
        other.scratch, other.guarded = dict(self.scratch), set(self.guarded)
        other.slots = self.slots
        other.taken = list(self.taken)
        return other

    # -- writing ------------------------------------------------------------------------------

    def emit(self, line: str) -> None:
        self.block.append(line)

    def bind(self, kind: str, v: str, s: str, scale: int = 0, exact: bool = True, bound: int = LIMIT) -> Val:
        """``v`` and its state ``s`` held in fresh variables. (A value whose state is not 0 may
        hold anything: every use of a value reads its state first.)"""
        if _literal(v) and s.isdigit():  # a constant: written where it is used
            return Val(kind, v if s == "0" else _zero(kind), s, scale, exact=exact)
        name = self.src.fresh("x")
        self.emit(f"{name}_s = {s}")
        self.emit(f"{name} = {v}")
        return Val(kind, name, f"{name}_s", scale, exact=exact, bound=bound)

    def guard(self, condition: str, lazy: bool = False) -> None:
        """Send the household to the scalar path where ``condition`` holds (``lazy``: and the
        scalar path evaluates the code being written, see ``taken``)."""
        if lazy and self.taken:
            condition = " & ".join(f"({c})" for c in [*self.taken, condition])
        self.emit(f"fb = fb | ({condition})")

    @contextmanager
    def branch(self, condition: str | None) -> Iterator[None]:
        """Code written here is evaluated by the scalar path where ``condition`` holds (None:
        wherever the code around it is; a value kept for other uses)."""
        saved = self.taken
        self.taken = [*saved, condition] if condition is not None else []
        try:
            yield
        finally:
            self.taken = saved

    def code(self, text: str) -> int:
        """The code of a text (codes are given in the order texts are met)."""
        if text not in self.codes:
            self.codes[text] = len(self.codes)
        return self.codes[text]

    def settle(self, v: Val) -> Val:
        """A value held in variables (not an expression written again at each use)."""
        if v.kind == "div":
            raise Unsupported("a quotient kept unrounded")
        if (v.v.isidentifier() or _literal(v.v)) and (v.s.isidentifier() or v.s.isdigit()):
            return v
        return self.bind(v.kind, v.v, v.s, v.scale, v.exact, v.bound)

    def null(self, kind: str) -> Val:
        return Val(kind, _zero(kind), "1")

    # -- names --------------------------------------------------------------------------------

    def _is_member(self, name: str) -> bool:
        node = self.inputs.get(name) or self.derived.get(name)
        return node is not None and node.entity == "member"

    def ref(self, name: str, member: bool) -> Val:
        if self.member_memo is not None and (member or self._is_member(name)) and self._is_member(name):
            if name in self.member_memo:
                return self.member_memo[name]
            if name in self.scratch:  # computed in an earlier member loop of this household
                slot, kind, scale, exact = self.scratch[name]
                v = self.bind(kind, f"scr[{slot}, jj]" + (" != 0" if kind == "bool" else ""), f"scrs[{slot}, jj]",
                              scale, exact)
            elif name in self.inputs:
                with self.branch(None):
                    v = self.input_value(self.inputs[name], "member")
            else:
                with self.branch(None):
                    v = self.derived_value(self.derived[name])
                if v.kind in ("num", "bool", "str", "date"):  # kept for the member loops after this one
                    slot = self.slots
                    self.slots += 1
                    self.pending[name] = (slot, v.kind, v.scale, v.exact)
                    self.emit(f"scr[{slot}, jj] = {v.v}")
                    self.emit(f"scrs[{slot}, jj] = {v.s}")
            self.member_memo[name] = v
            return v
        param = self.params.get(name)
        if param is not None and param.by:  # keyed: looked up where it is read (its keys may be a member's)
            return self.param_value(param)
        return self.entity_value(name)

    def entity_value(self, name: str) -> Val:
        if name in self.memo:
            return self.memo[name]
        if self._is_member(name):
            raise Unsupported(f"member value `{name}` read outside an aggregate")
        # an entity-level value is written with the household's lines, even when a member loop
        # asks for it (it is then computed before that loop)
        saved = self.block, self.member_memo, self.taken
        self.block, self.member_memo, self.taken = self.entity_block, None, []
        try:
            if name in self.inputs:
                v = self.input_value(self.inputs[name], "entity")
            elif name in self.params:
                v = self.param_value(self.params[name])
            elif name in self.derived:
                v = self.derived_value(self.derived[name])
            elif name in self.outputs:
                decision, output = self.outputs[name]
                record = self.decisions.get(decision.id)
                if record is not None and record["running"]:  # its own output, from its table
                    if output.short not in record["values"]:
                        raise Unsupported(f"decision `{decision.id}` reads its output {output.short} first")
                    v = record["values"][output.short]
                else:
                    v = self.decide(decision)["values"][output.short]
            else:  # pragma: no cover - the compiler resolves every name
                raise Unsupported(f"name `{name}`")
        finally:
            self.block, self.member_memo, self.taken = saved
        self.memo[name] = v
        return v

    def input_value(self, node: ir.InputNode, scope: str) -> Val:
        kind = _kind(node.type)
        if kind not in ("num", "bool", "str", "date"):
            raise Unsupported(f"input `{node.name}` of type {node.type}")
        given = self.columns.get((scope, node.name))
        if given is None:  # the column is absent: unknown everywhere
            return Val(kind, _zero(kind), "2")
        if given.kind != kind:  # pragma: no cover - the columns are made from the same IR
            raise Unsupported(f"input `{node.name}` given as {given.kind}")
        arg, states = _arg(self.policy, scope, node.name), _arg(self.policy, scope, node.name, "s")
        index = "j" if scope == "member" else "i"
        if arg not in self.args:
            self.args.append(arg)
        if (scope, node.name) in self.null_free:
            state = "0"
        else:
            if states not in self.args:  # (collect may have asked for the states alone)
                self.args.append(states)
            state = f"{states}[{index}]"
        if scope == "member" and node.name in self.guarded:  # checked in an earlier member loop
            word = f"{arg}[{index}, 0]" if given.signed is not None else f"{arg}[{index}]"
            return self.bind(kind, word, state, given.scale, exact=node.type != "text",
                             bound=INPUT_LIMIT if kind == "num" else LIMIT)
        if scope == "member":
            self.pending_guards.add(node.name)
        if node.type == "enum":
            for value in node.values:  # every value an enum column holds has its code
                self.code(value)
        if given.signed is None:
            v = self.bind(kind, f"{arg}[{index}]", state, given.scale, exact=node.type != "text")
        else:  # a decimal column as given: (low, high) 64-bit words
            v = self.bind(kind, f"{arg}[{index}, 0]", state, given.scale)
            self.guard(f"({v.s} == 0) & ({arg}[{index}, 1] != ({v.v} >> 63))")  # beyond int64
            # checked as `vector._plainly_valid` checks: a failure is reported by the caller (a
            # value beyond int64 is checked there too: it may be beyond 10^(18 + scale))
            bad = [f"({arg}[{index}, 1] != ({v.v} >> 63))"] + ([] if given.signed else [f"({arg}[{index}, 1] < 0)"])
            if 10 ** (DECIMAL_DIGITS + given.scale) <= 2**63 - 1:
                bad.append(f"(abs({v.v}) >= {10 ** (DECIMAL_DIGITS + given.scale)})")
            if bad:
                self.emit(f"bad = bad | (({v.s} == 0) & ({' | '.join(bad)}))")
        if kind == "num":  # every number read is within INPUT_LIMIT
            # (not abs(): it wraps for -2^63, a value an int64 column can hold)
            self.guard(f"({v.v} > {INPUT_LIMIT}) | ({v.v} < {-INPUT_LIMIT})")
            v = replace(v, bound=INPUT_LIMIT)
        elif kind == "date":  # years 1 to 9999, as the scalar path holds dates
            self.guard(f"({v.v} < {FIRST_DAY}) | ({v.v} > {LAST_DAY})")
        return v

    def input_state(self, node: ir.InputNode) -> Val:
        """A member input's state alone (``collect`` takes the values from the column itself)."""
        if ("member", node.name) not in self.columns:
            raise Unsupported(f"collect of `{node.name}`, a column not given")
        if ("member", node.name) in self.null_free:
            return self.bind("bool", "False", "0")
        states = _arg(self.policy, "member", node.name, "s")
        if states not in self.args:
            self.args.append(states)
        return self.bind("bool", "False", f"{states}[j]")

    def param_value(self, node: ir.ParameterNode) -> Val:
        kind = _kind(node.type)
        if kind not in ("num", "bool", "str", "date"):
            raise Unsupported(f"parameter `{node.name}` of type {node.type}")
        chosen = None
        for dated in node.values:
            if dated.start <= self.day and (dated.end is None or self.day <= dated.end):
                chosen = dated
        if chosen is None:
            raise Unsupported(f"parameter `{node.name}` has no value on {self.day}")
        entries = dict(chosen.entries)
        if not node.by:
            return self.const(entries[()])
        values = {key: self.const(value) for key, value in entries.items()}
        if any(v.kind not in (kind, "null") for v in values.values()):
            raise Unsupported(f"parameter `{node.name}` of type {node.type} with other values")
        scale = max((v.scale for v in values.values() if v.kind == "num"), default=0)
        dims: list[Val] = []
        for dim in node.by:
            v = self.settle(self.ref(dim, self._is_member(dim)))
            typed = self.inputs.get(dim) or self.derived.get(dim)
            if v.kind == "num" and (typed is None or typed.type != "integer" or v.scale):
                raise Unsupported(f"parameter `{node.name}` keyed by a {v.kind} value")
            if v.kind not in ("num", "bool", "str", "date"):
                raise Unsupported(f"parameter `{node.name}` keyed by a {v.kind} value")
            dims.append(v)
        name = self.src.fresh("p")
        unknown = _any_unknown(dims)
        self.emit(f"{name}_s = sel({unknown}, 2, 0)")
        self.emit(f"{name} = {_zero(kind)}")
        self.emit(f"{name}_h = {name}_s != 0")  # found (or unknown: no lookup)
        for key, entry in values.items():
            tests = []
            for d, part in zip(dims, key):
                test = self._key_test(d, part)
                if test is None:
                    break
                tests.append(test)
            else:
                hit = self.src.fresh("k")
                self.emit(f"{hit} = ({name}_h == False) & {' & '.join(tests)}")
                self.emit(f"{name}_h = {name}_h | {hit}")
                self.emit(f"{name}_s = sel({hit}, {entry.s}, {name}_s)")
                self.emit(f"{name} = sel({hit}, {self.rescale(entry, scale) if kind == 'num' else entry.v}, {name})")
        # a key with no value on this date: the scalar path says the decision is not in force
        # (where it looks the parameter up: not in an `if` branch it does not take)
        self.guard(f"{name}_h == False", lazy=True)
        bound = max((_magnitude(v, scale) for v in values.values() if v.kind == "num"), default=0)
        return Val(kind, name, f"{name}_s", scale, bound=bound if kind == "num" else LIMIT)

    def _key_test(self, d: Val, part: str) -> str | None:
        """The test that dimension value ``d`` is the key ``part`` (as the scalar path spells a
        key: ``str`` of the value, ``true``/``false``); None when no value is."""
        known = f"({d.s} == 0)"
        if d.kind == "bool":
            return f"({known} & ({d.v} == {part == 'true'}))" if part in ("true", "false") else None
        if d.kind == "str":
            return f"({known} & ({d.v} == {self.code(part)}))"
        if d.kind == "num":
            try:
                whole = int(part)
            except ValueError:
                return None
            return f"({known} & ({d.v} == {whole}))" if str(whole) == part and abs(whole) <= LIMIT else None
        try:
            day = dt.date.fromisoformat(part)
        except ValueError:
            return None
        return f"({known} & ({d.v} == {(day - EPOCH).days}))" if day.isoformat() == part else None

    def derived_value(self, node: ir.DerivedNode) -> Val:
        if node.table is not None:
            v = self.table(node.table, None)[0][0]
        elif node.type == "money":
            assert node.expr is not None
            v = self.rounded(node.expr, self.money_k, self.money_mode)
        else:
            assert node.expr is not None
            v = self.expr(node.expr)
        if v.kind == "div":
            raise Unsupported(f"a quotient kept unrounded (`{node.name}`)")
        if node.type == "money" and v.kind == "num":
            v = self.round_to(v, self.money_k, self.money_mode)
        return self.settle(v) if v.kind != "list" else v

    # -- decisions ----------------------------------------------------------------------------

    def decide(self, node: ir.DecisionNode) -> dict[str, Any]:
        if node.id in self.decisions:
            found = self.decisions[node.id]
            if found["running"]:  # pragma: no cover - the compiler refuses cycles
                raise Unsupported(f"decision `{node.id}` depends on itself")
            return found
        window = node.in_force
        if (window is not None and not window.contains(self.day)) or self.policy.version_at(self.day) is None:
            raise Unsupported(f"decision `{node.id}` is not in force")
        if node.entity != self.entity:
            raise Unsupported(f"decision `{node.id}` of entity {node.entity}")
        record: dict[str, Any] = {"running": True, "values": {}}
        self.decisions[node.id] = record
        values: dict[str, Val] = record["values"]
        fired = None
        types = {o.short: o.type for o in node.outputs}
        if node.table is not None:
            outs, fired = self.table(node.table, node.id)
            for short, v in zip(node.table.outputs, outs):
                # the table's outputs first (money rounded), so that expressions may name them
                if types.get(short) == "money" and v.kind == "num":
                    v = self.settle(self.round_to(v, self.money_k, self.money_mode))
                values[short] = v
        for output in node.outputs:
            kind = _kind(output.type)
            if output.expr is not None and output.type == "money":
                v = self.rounded(output.expr, self.money_k, self.money_mode)
            elif output.expr is not None:
                v = self.expr(output.expr)
            else:
                v = values[output.short]
            if v.kind == "div":
                raise Unsupported(f"a quotient kept unrounded (`{output.name}`)")
            if output.type == "money" and v.kind == "num":
                v = self.round_to(v, self.money_k, self.money_mode)
            if v.kind == "null":
                v = self.null(kind)
            if v.kind != kind:
                raise Unsupported(f"output `{output.name}` of type {output.type} computed as {v.kind}")
            if kind == "str" and not v.exact:
                raise Unsupported(f"output `{output.name}`: a text the kernel does not know")
            values[output.short] = self.settle(v) if kind != "list" else v
        record.update(running=False, fired=fired)
        return record

    # -- tables -------------------------------------------------------------------------------

    def table(self, table: ir.Table, decision: str | None) -> tuple[list[Val], tuple[str, tuple[str, ...]] | None]:
        hit = table.hit
        if hit not in ("F", "U", "A", "P", "C+", "C<", "C>", "C#"):
            raise Unsupported(f"hit policy {hit} (table `{table.owner}`)")
        inputs = [self.settle(self.expr(e)) for e in table.inputs]
        rows = [(i, r) for i, r in enumerate(table.rows) if r.in_force is None or r.in_force.contains(self.day)]
        if len(rows) > 62:
            raise Unsupported(f"table `{table.owner}` with more than 62 rows in force")
        n_out = len(table.outputs)
        kinds = [_kind(t) for t in table.output_types]
        if any(k not in ("num", "bool", "str", "date") for k in kinds):
            raise Unsupported(f"table `{table.owner}` with outputs of type {', '.join(table.output_types)}")
        status: list[str] = []  # per row in force: a variable, 0 false, 1 true, 2 unknown
        outs: list[list[Val]] = []
        for _, row in rows:
            false_parts: list[str] = []
            unknown_parts: list[str] = []
            for col, test in enumerate(row.tests):
                if test.kind == "any":
                    continue
                passed, unknown = self.test(test, inputs[col])
                false_parts.append(f"((({passed}) == False) & (({unknown}) == False))")
                unknown_parts.append(f"({unknown})")
            name = self.src.fresh("row")
            false = " | ".join(false_parts) or "False"
            unknown = " | ".join(unknown_parts) or "False"
            self.emit(f"{name} = sel({false}, 0, sel({unknown}, 2, 1))")
            status.append(name)
            outs.append([self._cell(self.expr(e), kinds[j], table) for j, e in enumerate(row.outputs)])
        defaults = [self._cell(self.expr(d), kinds[j], table) if d is not None else None
                    for j, d in enumerate(table.defaults)]
        pick, unknown, mask = self.src.fresh("pick"), self.src.fresh("tunk"), self.src.fresh("mask")
        self.emit(f"{pick} = -1")  # the row whose outputs are taken (-1 none: the default)
        self.emit(f"{unknown} = False")
        if hit == "F":  # rows in order: an unknown row before the first true one leaves it unknown
            for k, name in enumerate(status):
                live = self.src.fresh("lv")
                self.emit(f"{live} = ({pick} == -1) & ({unknown} == False)")
                self.emit(f"{unknown} = {unknown} | ({live} & ({name} == 2))")
                self.emit(f"{pick} = sel({live} & ({name} == 1), {k}, {pick})")
            self.emit(f"{mask} = sel({pick} >= 0, 1 << max({pick}, 0), 0)")  # the rows that fired, a bit each
        else:  # every row is tried; an unknown row leaves the table unknown
            count = self.src.fresh("n")
            self.emit(f"{count} = 0")
            self.emit(f"{mask} = 0")
            for k, name in enumerate(status):
                self.emit(f"{unknown} = {unknown} | ({name} == 2)")
                self.emit(f"{count} += sel({name} == 1, 1, 0)")
                self.emit(f"{mask} = {mask} | sel({name} == 1, {1 << k}, 0)")
                self.emit(f"{pick} = sel(({pick} == -1) & ({name} == 1), {k}, {pick})")
            # an unknown output of a matched row leaves the result unknown when rows are combined
            several = 1 if hit in ("C+", "C<", "C>") else 2
            out_unknown = " | ".join(f"(({name} == 1) & ({v.s} == 2))" for name, row_outs in zip(status, outs)
                                     for v in row_outs) or "False"
            self.emit(f"{unknown} = {unknown} | (({count} >= {several}) & ({out_unknown}))")
            if hit == "U":  # two true rows: the scalar path's error (PE301)
                self.guard(f"({unknown} == False) & ({count} > 1)")
            elif hit == "A":  # rows that disagree: the scalar path's error (PE302)
                for k, name in enumerate(status):
                    for j in range(n_out):
                        differ = self._differ(outs[k][j], [(f"({pick} == {q})", outs[q][j]) for q in range(len(status))])
                        self.guard(f"({unknown} == False) & ({name} == 1) & ({differ})")
            elif hit == "P":
                self._priority(table, status, outs, pick)
        self.emit(f"{pick} = sel({unknown}, -2, {pick})")
        self.emit(f"{mask} = sel({unknown}, 0, {mask})")
        if hit in ("C+", "C<", "C>", "C#"):
            results = [self._collect_hit(hit, status, outs, defaults[0] if defaults else None, pick,
                                         kinds[0], table)]
        else:
            results = []
            for j in range(n_out):
                results.append(self._choose([row_outs[j] for row_outs in outs], defaults[j], pick, kinds[j]))
        labels = tuple(table.rows[i].id for i, _ in rows)
        return results, ((mask, labels) if decision is not None else None)

    def _cell(self, v: Val, kind: str, table: ir.Table) -> Val:
        """A row's (or the default's) output value, of the column's kind."""
        if v.kind == "null":
            return self.null(kind)
        if v.kind == "div":
            raise Unsupported(f"a quotient kept unrounded (table `{table.owner}`)")
        if v.kind != kind:
            raise Unsupported(f"table `{table.owner}`: an output of {kind} computed as {v.kind}")
        return self.settle(v)

    def _choose(self, choices: list[Val], default: Val | None, pick: str, kind: str) -> Val:
        """The output of the row ``pick`` (-1: the default, -2: unknown)."""
        scale = max([v.scale for v in choices] + ([default.scale] if default is not None else []), default=0)
        name = self.src.fresh("t")
        self.emit(f"{name}_s = 2")
        self.emit(f"{name} = {_zero(kind)}")
        for k, v in enumerate(choices):
            self.emit(f"{name}_s = sel({pick} == {k}, {v.s}, {name}_s)")
            self.emit(f"{name} = sel({pick} == {k}, {self.rescale(v, scale) if kind == 'num' else v.v}, {name})")
        if default is None:
            self.emit(f"{name}_s = sel({pick} == -1, 1, {name}_s)")
        else:
            self.emit(f"{name}_s = sel({pick} == -1, {default.s}, {name}_s)")
            self.emit(f"{name} = sel({pick} == -1, {self.rescale(default, scale) if kind == 'num' else default.v}, {name})")
        exact = all(v.exact for v in choices) and (default is None or default.exact)
        return Val(kind, name, f"{name}_s", scale, exact=exact)

    def _differ(self, v: Val, firsts: list[tuple[str, Val]]) -> str:
        """Whether ``v`` differs from the output of the row picked (as ``!=`` of Python values:
        null equals only null)."""
        parts = []
        for when, w in firsts:
            if v.kind == "str" and not (v.exact and w.exact):
                raise Unsupported("comparing texts the kernel does not know")
            scale = max(v.scale, w.scale)
            x = self.rescale(v, scale) if v.kind == "num" else v.v
            y = self.rescale(w, scale) if w.kind == "num" else w.v
            parts.append(f"({when} & (({v.s} != {w.s}) | (({v.s} == 0) & ({x} != {y}))))")
        return " | ".join(parts) or "False"

    def _priority(self, table: ir.Table, status: list[str], outs: list[list[Val]], pick: str) -> None:
        """Hit policy P: the true row whose outputs come first in the outputs' priority lists
        (rule order between equals)."""
        best = self.src.fresh("best")
        self.emit(f"{best} = -1")
        base = max((len(p) for p in table.priorities), default=0) + 1
        if base ** max(len(table.outputs), 1) * 64 > LIMIT:
            raise Unsupported(f"P table `{table.owner}` with too many outputs to rank")
        for k, name in enumerate(status):
            rank = self.src.fresh("rank")
            self.emit(f"{rank} = 0")
            for j, v in enumerate(outs[k]):
                prio = table.priorities[j] if j < len(table.priorities) else ()
                r = self.src.fresh("r")
                self.emit(f"{r} = {len(prio)}")
                for n, p in reversed(list(enumerate(prio))):  # the first listed wins
                    c = self.const(p)
                    if c.kind == "null":  # a null output ranks where null is listed
                        self.emit(f"{r} = sel({v.s} == 1, {n}, {r})")
                        continue
                    if c.kind != v.kind:
                        continue
                    scale = max(v.scale, c.scale)
                    x = self.rescale(v, scale) if v.kind == "num" else v.v
                    y = self.rescale(c, scale) if c.kind == "num" else c.v
                    self.emit(f"{r} = sel(({v.s} == 0) & ({x} == {y}), {n}, {r})")
                self.emit(f"{rank} = {rank} * {base} + {r}")
            better = self.src.fresh("bt")
            self.emit(f"{better} = ({name} == 1) & (({best} == -1) | ({rank} < {best}))")
            self.emit(f"{best} = sel({better}, {rank}, {best})")
            self.emit(f"{pick} = sel({better}, {k}, {pick})")

    def _collect_hit(self, hit: str, status: list[str], outs: list[list[Val]], default: Val | None, pick: str,
                     kind: str, table: ir.Table) -> Val:
        """Hit policies C+ C< C> C#: the matched rows' (first) outputs combined."""
        name = self.src.fresh("c")
        if hit == "C#":
            self.emit(f"{name} = 0")
            for st in status:
                self.emit(f"{name} += sel({st} == 1, 1, 0)")
            value = Val("num", name, "0", 0)
        else:
            if kind not in ("num", "date") or (hit == "C+" and kind != "num"):
                raise Unsupported(f"{hit} over {kind} (table `{table.owner}`)")
            vs = [row_outs[0] for row_outs in outs]
            scale = max((v.scale for v in vs), default=0)
            self.emit(f"{name}_s = 1")  # no value yet: null
            self.emit(f"{name} = 0")
            fn = {"C+": "sum", "C<": "min", "C>": "max"}[hit]
            for st, v in zip(status, vs):
                x = self.rescale(v, scale) if kind == "num" else v.v
                add = self.src.fresh("ad")
                self.emit(f"{add} = ({st} == 1) & ({v.s} == 0)")
                for line in _fold(fn, add, x, name, f"({name}_s != 0)"):
                    self.emit(line)
                self.emit(f"{name}_s = sel({add}, 0, {name}_s)")
            value = Val(kind, name, f"{name}_s", scale)
        # as _choose, between the combined value (taken as row 0 when a row matched) and the default
        return self._choose([value], default, f"sel({pick} >= 0, 0, {pick})", kind if hit != "C#" else "num")

    def test(self, test: ir.Test, v: Val) -> tuple[str, str]:
        """(passes, unknown) of one cell, as branch-free expressions of booleans."""
        kind = test.kind
        if kind == "null":
            return f"({v.s} == 1)", f"({v.s} == 2)"
        if kind == "compare":
            assert test.a is not None
            a = self.settle(self.expr(test.a))
            c = self.compare(test.op or "==", v, a)
            return f"(({c.s} == 0) & {c.v})", f"(({v.s} == 2) | ({a.s} == 2))"
        if kind == "range":
            assert test.a is not None and test.b is not None
            a = self.settle(self.expr(test.a))
            b = self.settle(self.expr(test.b))
            lo = self.compare(">=" if test.low_closed else ">", v, a)
            hi = self.compare("<=" if test.high_closed else "<", v, b)
            return (f"(({lo.s} == 0) & {lo.v} & ({hi.s} == 0) & {hi.v})",
                    f"(({v.s} == 2) | ({a.s} == 2) | ({b.s} == 2))")
        if kind in ("one_of", "not"):
            subs = [self.test(t, v) for t in test.tests]
            passes = " | ".join(f"({p} & ({u} == False))" for p, u in subs) or "False"
            unknown = " | ".join(u for _, u in subs) or "False"
            p, u = self.src.fresh("ap"), self.src.fresh("au")
            self.emit(f"{p} = {passes}")
            self.emit(f"{u} = ({p} == False) & ({unknown})")
            if kind == "not":  # not(...) of a null value is null: no match
                return f"(({v.s} != 1) & ({p} == False) & ({u} == False))", f"(({v.s} != 1) & {u})"
            return p, u
        raise Unsupported(f"test {kind}")  # pragma: no cover - "any" is skipped by the caller

    def const(self, value: Any) -> Val:
        if value is None:
            return Val("null", "0", "1")
        if isinstance(value, bool):
            return Val("bool", repr(value), "0")
        if isinstance(value, int):
            if abs(value) > LIMIT:
                raise Unsupported("a constant beyond 62 bits")
            return Val("num", repr(value), "0", 0)
        if isinstance(value, Decimal):
            if not value.is_finite():
                raise Unsupported(f"constant {value}")
            scale = _decimal_scale(value)
            raw = int(value.scaleb(scale, context=EXACT))
            if abs(raw) > LIMIT:
                raise Unsupported("a constant beyond 62 bits")
            return Val("num", repr(raw), "0", scale)
        if isinstance(value, str):
            return Val("str", repr(self.code(value)), "0")
        if isinstance(value, dt.date):
            return Val("date", repr((value - EPOCH).days), "0")
        raise Unsupported(f"constant {value!r}")

    def expr(self, e: ir.Expr) -> Val:
        if isinstance(e, ir.Const):
            return self.const(e.value)
        if isinstance(e, ir.AsOf):  # an argument: one kernel serves every date with the same rules
            return Val("date", "asof", "0")
        if isinstance(e, ir.Ref):
            return self.ref(e.name, e.scope == "member")
        if isinstance(e, ir.Unary):
            v = self.settle(self.expr(e.operand))
            if e.op == "not":
                if v.kind not in ("bool", "null"):
                    raise Unsupported(f"not of {v.kind}")
                return self.bind("bool", f"not {v.v}", v.s)
            if e.op == "neg":
                if v.kind == "null":
                    return v
                if v.kind != "num":
                    raise Unsupported(f"- of {v.kind}")
                if _literal(v.v):  # a constant: its negation, written as a number
                    return Val("num", repr(-int(v.v)), v.s, v.scale)
                return self.bind("num", f"-{v.v}", v.s, v.scale)
            return v
        if isinstance(e, ir.Binary):
            return self.binary(e)
        if isinstance(e, ir.Compare):
            a = self.expr(e.left)
            b = self.expr(e.right)
            if a.kind == "div" or b.kind == "div":
                return self._compare_div(e.op, a, b)
            return self.compare(e.op, self.settle(a), self.settle(b))
        if isinstance(e, ir.BoolOp):
            vs = [self.settle(self.expr(o)) for o in e.operands]
            if any(v.kind not in ("bool", "null") for v in vs):
                raise Unsupported("and/or of non-booleans")
            stop = e.op == "or"
            decides = " | ".join(f"(({v.s} == 0) & ({v.v} == {stop}))" for v in vs)
            unknown = _any_unknown(vs)
            null = " | ".join(f"({v.s} == 1)" for v in vs)
            # an operand that decides wins; else unknown, else null, else the other value
            return self._settled_by("b", "d", decides, f"sel({{f}}, 0, sel({unknown}, 2, sel({null}, 1, 0)))",
                                    f"sel({{f}}, {stop}, {not stop})")
        if isinstance(e, ir.IfElse):
            c = self.settle(self.expr(e.condition))
            with self.branch(_then(c)):
                t = self.settle(self.expr(e.then))
            with self.branch(_otherwise(c)):
                o = self.settle(self.expr(e.otherwise))
            return self._ifelse(c, t, o)
        if isinstance(e, ir.In):
            v = self.settle(self.expr(e.item))
            opts = [self.settle(self.expr(o)) for o in e.options]
            eqs = []
            for o in opts:
                c = self.compare("==", v, o)
                eqs.append(f"(({c.s} == 0) & {c.v})")
            found = " | ".join(eqs) or "False"
            unknown = _any_unknown(opts)
            return self._settled_by("in", "f", found, f"sel({v.s} != 0, {v.s}, sel({{f}}, 0, sel({unknown}, 2, 0)))",
                                    f"sel({{f}}, {not e.negate}, {e.negate})")
        if isinstance(e, ir.Call):
            return self.call(e)
        if isinstance(e, ir.Aggregate):
            return self.aggregate(e)
        raise Unsupported(f"IR node {type(e).__name__}")

    def _settled_by(self, stem: str, mark: str, case: str, state: str, value: str) -> Val:
        """A yes/no in three lines: whether ``case`` holds (the case that settles it), then its
        state and value, in which ``{f}`` names that first line's variable."""
        name = self.src.fresh(stem)
        flag = f"{name}_{mark}"
        self.emit(f"{flag} = {case}")
        self.emit(f"{name}_s = {state.format(f=flag)}")
        self.emit(f"{name} = {value.format(f=flag)}")
        return Val("bool", name, f"{name}_s")

    def _ifelse(self, c: Val, t: Val, o: Val) -> Val:
        if c.kind not in ("bool", "null"):
            raise Unsupported("if on a non-boolean")
        kind = t.kind if t.kind != "null" else o.kind
        if kind == "null":
            return self.null("num")
        if t.kind not in (kind, "null") or o.kind not in (kind, "null") or kind == "list":
            raise Unsupported(f"if with branches of {t.kind} and {o.kind}")
        if kind == "num":
            scale = max(t.scale if t.kind == "num" else 0, o.scale if o.kind == "num" else 0)
            tv, ov = self.rescale(t, scale), self.rescale(o, scale)
        else:
            scale, tv, ov = 0, t.v, o.v
        true = self.src.fresh("if")
        self.emit(f"{true} = ({c.s} == 0) & {c.v}")
        return self.bind(kind, f"sel({true}, {tv}, {ov})", f"sel({c.s} == 2, 2, sel({true}, {t.s}, {o.s}))",
                         scale, exact=t.exact and o.exact)

    def rescale(self, v: Val, scale: int) -> str:
        """``v``'s integer at a larger scale, guarded."""
        if v.kind == "null":
            return "0"
        if scale == v.scale or v.kind != "num":
            return v.v
        factor = 10 ** (scale - v.scale)
        if factor > LIMIT:
            raise Unsupported("a rescale beyond 62 bits")
        if _literal(v.v):  # a constant
            value = int(v.v) * factor
            if abs(value) > LIMIT:
                raise Unsupported("a constant beyond 62 bits")
            return repr(value)
        if v.bound * factor > LIMIT:
            self.guard(f"abs({v.v}) > {LIMIT // factor}")
        return f"({v.v} * {factor})"

    def compare(self, op: str, a: Val, b: Val) -> Val:
        if a.kind == "null" or b.kind == "null":
            return self.bind("bool", "False", f"sel(({a.s} == 2) | ({b.s} == 2), 2, 1)")
        if a.kind == "num" and b.kind == "num":
            scale = max(a.scale, b.scale)
            x, y = self.rescale(a, scale), self.rescale(b, scale)
        elif a.kind == b.kind and a.kind in ("bool", "str", "date"):
            if a.kind in ("bool", "str") and op not in ("==", "!="):
                raise Unsupported(f"ordering {a.kind} values")
            if a.kind == "str" and not ((a.exact and b.exact) or _literal(a.v) or _literal(b.v)):
                raise Unsupported("comparing texts the kernel does not know")
            x, y = a.v, b.v
        else:
            raise Unsupported(f"comparing {a.kind} with {b.kind}")
        if op not in _ORDER:  # pragma: no cover - the compiler allows no other operator
            raise Unsupported(f"comparison {op!r}")
        return self.bind("bool", f"{x} {op} {y}", f"max({a.s}, {b.s})")

    def _compare_div(self, op: str, a: Val, b: Val) -> Val:
        """A comparison with a quotient, by cross-multiplying (exact: both sides are whole
        numbers times powers of ten, and the scalar path's 34 digits hold the quotient exactly
        enough to be ordered the same way while |numerator| < 10^19)."""
        if a.kind == "div" and b.kind == "div":
            raise Unsupported("comparing two quotients")
        swapped = a.kind != "div"
        q, c = (b, a) if swapped else (a, b)
        if c.kind == "null":
            return self.bind("bool", "False", f"sel(({q.s} == 2) | ({c.s} == 2), 2, 1)")
        c = self.settle(c)
        if c.kind != "num":
            raise Unsupported(f"comparing a quotient with {c.kind}")
        assert q.div is not None
        num, den = q.div
        # num / den (op) c  <=>  num · 10^(den.scale + c.scale) (op') c · den · 10^(num.scale)
        left = self.rescale(num, num.scale + den.scale + c.scale)
        right = self.rescale(self._multiply(c, den, "0"), num.scale + den.scale + c.scale)
        flipped = _ORDER
        if op not in flipped:  # pragma: no cover - the compiler allows no other operator
            raise Unsupported(f"comparison {op!r}")
        if swapped:  # c (op) q  <=>  q (flipped op) c
            op = flipped[op]
        name = self.src.fresh("qc")
        state = f"max({q.s}, {c.s})"
        # a zero divisor gives a null quotient; a negative one turns the inequality
        self.emit(f"{name}_s = sel(({state} == 0) & ({den.v} == 0), 1, {state})")
        self.emit(f"{name} = sel({den.v} > 0, {left} {op} {right}, {left} {flipped[op]} {right})")
        return Val("bool", name, f"{name}_s")

    def binary(self, e: ir.Binary) -> Val:
        a = self.expr(e.left)
        b = self.expr(e.right)
        op = e.op
        if a.kind == "div" or b.kind == "div":
            raise Unsupported("arithmetic on an unrounded quotient")
        if a.kind == "null" or b.kind == "null":
            return self.bind("num", "0", f"sel(({a.s} == 2) | ({b.s} == 2), 2, 1)")
        if a.kind != "num" or b.kind != "num":
            raise Unsupported(f"`{op}` on {a.kind} and {b.kind}")
        a, b = self.settle(a), self.settle(b)
        state = f"max({a.s}, {b.s})"
        if op == "/":
            return Val("div", "0", state, 0, (a, b))
        if op in ("+", "-"):
            scale = max(a.scale, b.scale)
            x, y = self.rescale(a, scale), self.rescale(b, scale)
            bound = _magnitude(a, scale) + _magnitude(b, scale)
            if bound > LIMIT:
                self.guard(f"(abs({x}) > {LIMIT // 2}) | (abs({y}) > {LIMIT // 2})")
                bound = LIMIT
            return self.bind("num", f"{x} {op} {y}", state, scale, bound=bound)
        if op == "*":
            return self._multiply(a, b, state)
        if op in ("//", "%"):
            if not (e.type == "integer" and e.left.type == "integer" and e.right.type == "integer"):
                raise Unsupported(f"`{op}` on decimals")
            name = self.src.fresh("q")
            self.emit(f"{name}_s = sel(({state} == 0) & ({b.v} == 0), 1, {state})")
            self.emit(f"{name} = {a.v} {op} sel({b.v} != 0, {b.v}, 1)")
            return Val("num", name, f"{name}_s", 0)
        if op == "**":
            if not (isinstance(e.right, ir.Const) and isinstance(e.right.value, int)
                    and not isinstance(e.right.value, bool) and 0 <= e.right.value <= 8):
                raise Unsupported("`**` other than a small whole constant power")
            n = e.right.value
            if n == 0:  # x ** 0 is 1 (0 ** 0 too); null ** 0 is null
                return self.bind("num", "1", a.s, 0) if not _literal(a.s) else Val("num", "1", a.s, 0)
            power = a
            for _ in range(n - 1):
                power = self._multiply(power, a, f"max({power.s}, {a.s})")
            return power
        raise Unsupported(f"operator {op}")

    def _multiply(self, a: Val, b: Val, state: str) -> Val:
        scale = a.scale + b.scale
        if scale > 24:
            raise Unsupported(f"a product with {scale} decimal places")
        # |a·b| <= LIMIT
        bound = _magnitude(a, a.scale) * _magnitude(b, b.scale)
        if bound > LIMIT:
            bound = LIMIT
            if _literal(a.v) or _literal(b.v):
                c, x = (a.v, b.v) if _literal(a.v) else (b.v, a.v)
                if int(c) != 0 and not _literal(x):
                    self.guard(f"abs({x}) > {LIMIT // abs(int(c))}")
                elif _literal(x) and abs(int(c) * int(x)) > LIMIT:
                    raise Unsupported("a constant beyond 62 bits")
            else:  # in floating point, with a margin of 2 (its rounding errs by 1 part in 2^53)
                self.guard(f"abs(float({a.v}) * float({b.v})) > {float(LIMIT // 2)!r}")
        return self.bind("num", f"{a.v} * {b.v}", state, scale, bound=bound)

    def rounded(self, e: ir.Expr, k: int, mode: str) -> Val:
        """``e`` rounded to ``k`` places, the rounding pushed into the branches of an ``if`` (as
        the batch path does: the same values, as rounding commutes with choosing)."""
        if isinstance(e, ir.IfElse):
            c = self.settle(self.expr(e.condition))
            with self.branch(_then(c)):
                t = self.settle(self.rounded(e.then, k, mode))
            with self.branch(_otherwise(c)):
                o = self.settle(self.rounded(e.otherwise, k, mode))
            return self._ifelse(c, t, o)
        v = self.expr(e)
        if v.kind not in ("num", "div"):
            return v
        return self.round_to(v, k, mode)

    def round_to(self, v: Val, k: int, mode: str) -> Val:
        """``v`` rounded to ``k`` decimals as ``quantize`` does (a quotient exactly)."""
        if v.div is not None:
            a, b = v.div
            # value = (A / B) · 10^(b.scale - a.scale); at scale k: A · 10^e / B
            e = k + b.scale - a.scale
            # the scalar path rounds the quotient to 34 digits first; while |A| · 10^(k +
            # max(b.scale - a.scale, 0)) < 10^33 that never changes the rounded result
            if 10 ** 19 * 10 ** (k + max(b.scale - a.scale, 0)) >= DIGITS_33:
                raise Unsupported("a quotient the scalar path may round in 34 digits")
            num = self.rescale(a, a.scale + e) if e > 0 else a.v
            den = self.rescale(b, b.scale - e) if e < 0 else b.v
            return self._divide(num, den, v.s, k, mode, bound=_magnitude(a, a.scale + max(e, 0)))
        if k >= v.scale:
            return Val("num", self.rescale(v, k), v.s, k, bound=_magnitude(v, k)) if k > v.scale else v
        if 10 ** (v.scale - k) > LIMIT:
            raise Unsupported(f"rounding a value of {v.scale} places to {k}")
        return self._divide(v.v, repr(10 ** (v.scale - k)), v.s, k, mode, known_divisor=True,
                            bound=_magnitude(v, v.scale))

    def _divide(self, num: str, den: str, state: str, k: int, mode: str, known_divisor: bool = False,
                bound: int = LIMIT) -> Val:
        """num / den rounded to a whole number by ``mode``: the value at scale ``k``. A zero
        divisor gives null. ``bound``: the numerator's largest magnitude; the quotient's is no
        larger (a whole divisor of 1 leaves it as it is, one of 2 or more at most halves it and
        rounding adds 1), or, dividing by a known power of ten, that divided by it, plus 1."""
        n, d, q, r, out = (self.src.fresh(s) for s in ("nm", "dn", "qt", "rm", "rd"))
        self.emit(f"{n} = {num}")
        self.emit(f"{d} = {den}")
        if known_divisor:
            self.emit(f"{out}_s = {state}")
        else:
            self.emit(f"{out}_s = sel(({state} == 0) & ({d} == 0), 1, {state})")
            self.emit(f"{n} = sel({d} < 0, -{n}, {n})")
            self.emit(f"{d} = sel({d} < 0, -{d}, sel({d} == 0, 1, {d}))")
        self.emit(f"{q} = {n} // {d}")
        self.emit(f"{r} = {n} - {q} * {d}")  # 0 <= r < d
        if mode == "floor":
            bump = "False"
        elif mode == "ceiling":
            bump = f"{r} != 0"
        elif mode == "down":
            bump = f"({n} < 0) & ({r} != 0)"
        elif mode == "up":
            bump = f"({n} > 0) & ({r} != 0)"
        elif mode == "half_up":
            bump = f"({r} > {d} - {r}) | (({r} == {d} - {r}) & ({n} >= 0))"
        elif mode == "half_even":
            bump = f"({r} > {d} - {r}) | (({r} == {d} - {r}) & ({q} % 2 != 0))"
        else:
            raise Unsupported(f"rounding mode {mode}")
        self.emit(f"{out} = {q} + sel({bump}, 1, 0)")
        bound = min(bound, LIMIT)
        bound = bound // int(den) + 1 if known_divisor else max(bound, 1)
        return Val("num", out, f"{out}_s", max(k, 0), bound=bound)

    def call(self, e: ir.Call) -> Val:
        fn = e.function
        if fn == "round_money":
            return self.rounded(e.args[0], self.money_k, self.money_mode)
        if fn == "round":
            unit = e.args[1]
            if not isinstance(unit, ir.Const):
                raise Unsupported("round() to a computed unit")
            q = unit.value if isinstance(unit.value, Decimal) else Decimal(str(unit.value))
            return self.rounded(e.args[0], _unit_scale(q), "half_up")
        if fn in ("floor", "ceil"):
            v = self.expr(e.args[0])
            if v.kind == "null":
                return v
            if v.kind not in ("num", "div"):
                raise Unsupported(f"{fn} of {v.kind}")
            return self.round_to(v, 0, "floor" if fn == "floor" else "ceiling")
        vs = [self.settle(self.expr(a)) for a in e.args]
        state = f"max({', '.join(v.s for v in vs)})" if len(vs) > 1 else vs[0].s
        if any(v.kind == "null" for v in vs):
            unknown = _any_unknown(vs)
            return self.bind(_kind(e.type), _zero(_kind(e.type)), f"sel({unknown}, 2, 1)")
        if fn in ("min", "max"):
            kind = vs[0].kind
            if kind not in ("num", "date") or any(v.kind != kind for v in vs):
                raise Unsupported(f"{fn} of {', '.join(v.kind for v in vs)}")
            scale = max(v.scale for v in vs)
            cols = [self.rescale(v, scale) for v in vs]
            bound = max(_magnitude(v, scale) for v in vs) if kind == "num" else LIMIT
            return self.bind(kind, f"{fn}({', '.join(cols)})", state, scale, bound=bound)
        if fn == "abs" and vs[0].kind == "num":
            return self.bind("num", f"abs({vs[0].v})", vs[0].s, vs[0].scale, bound=_magnitude(vs[0], vs[0].scale))
        if fn == "age" and vs[0].kind == "date":
            return self.bind("num", f"age_on({vs[0].v}, asof_y, asof_m, asof_d)", vs[0].s, 0)
        if fn == "days_between" and all(v.kind == "date" for v in vs):
            return self.bind("num", f"{vs[1].v} - {vs[0].v}", state, 0)
        if fn == "months_between" and all(v.kind == "date" for v in vs):
            return self.bind("num", f"months_between({vs[0].v}, {vs[1].v})", state, 0)
        whole = len(e.args) > 1 and e.args[1].type == "integer" and vs[1].kind == "num" and vs[1].scale == 0
        if fn == "add_days" and vs[0].kind == "date" and whole:
            name = self.src.fresh("ad")
            self.emit(f"{name} = {vs[0].v} + {vs[1].v}")  # |n| <= LIMIT: no overflow
            # beyond year 9999 (or before year 1) the scalar path's date overflows: null
            return self.bind("date", name, f"sel(({state} != 0) | (({name} >= {FIRST_DAY}) & ({name} <= {LAST_DAY})), "
                                           f"{state}, 1)")
        if fn == "add_months" and vs[0].kind == "date" and whole:
            name = self.src.fresh("am")
            self.emit(f"{name}, {name}_ok = add_months({vs[0].v}, {vs[1].v})")
            return self.bind("date", name, f"sel(({state} != 0) | {name}_ok, {state}, 1)")
        raise Unsupported(f"function {fn}() of {', '.join(v.kind for v in vs)}")

    def aggregate(self, e: ir.Aggregate) -> Val:
        with self.branch(None):  # its member loops keep values for the loops after them
            return self._aggregate(e)

    def _aggregate(self, e: ir.Aggregate) -> Val:
        if self.member_memo is not None:
            raise Unsupported("nested aggregate")
        fn = e.function
        if fn not in ("sum", "count", "any", "all", "min", "max", "collect"):
            raise Unsupported(f"aggregate {fn}")
        kind = _kind(e.type)
        members_unknown = "s_members[i]" if self.members and ("entity", "members") not in self.null_free else "False"
        if members_unknown != "False" and "s_members" not in self.args:
            self.args.append("s_members")
        if not self.members:
            if fn == "collect":
                raise Unsupported("collect without members")
            return Val(kind, _zero(kind), "2")
        if fn == "count" and e.where is None and e.body is None:  # the household's size
            return self.bind("num", "off[i + 1] - off[i]", f"sel({members_unknown}, 2, 0)", 0)
        # the member loop's lines are written apart, then placed after the household's lines so far
        outer, outer_pending = self.block, (self.pending, self.pending_guards)
        self.block, self.member_memo = [], {}
        self.pending, self.pending_guards = {}, set()
        try:
            where = self.settle(self.expr(e.where)) if e.where is not None else None
            body: Val | None
            if fn == "collect":
                if not (isinstance(e.body, ir.Ref) and e.body.name in self.inputs
                        and self.inputs[e.body.name].entity == "member"):
                    raise Unsupported("collect of anything but a member input")
                # the values are the column's own (taken after the loop): only their states here
                column = self.columns.get(("member", e.body.name))
                if column is not None and column.kind == "num" and column.signed is None and column.scale:
                    raise Unsupported("collect of amounts held as fixed-point integers")
                body = self.input_state(self.inputs[e.body.name])
            else:
                body = self.expr(e.body) if e.body is not None else None
                if body is not None:
                    if body.kind == "div":
                        raise Unsupported("an unrounded quotient aggregated")
                    body = self.settle(body)
            inner = self.block
            kept, checked = self.pending, self.pending_guards
        finally:
            self.block, self.member_memo = outer, None
            self.pending, self.pending_guards = outer_pending
        if where is not None and where.kind not in ("bool", "null"):
            raise Unsupported("a where that is not a boolean")
        if fn in ("any", "all") and where is None:
            raise Unsupported(f"{fn} without a condition")
        if body is not None and fn in ("sum", "min", "max") and body.kind not in ("num", "null", "date"):
            raise Unsupported(f"{fn} of {body.kind}")
        if fn == "sum" and body is not None and body.kind == "date":
            raise Unsupported("sum of dates")
        name = self.src.fresh("ag")
        unknown, hit, total, count, take = (name + s for s in ("_u", "_h", "_t", "_c", "_w"))
        self.emit(f"{unknown} = False")
        self.emit(f"{hit} = False")
        self.emit(f"{total} = 0")
        self.emit(f"{count} = 0")
        sel = None
        if fn == "collect":
            sel = f"o_sel{len(self.selections)}"
            self.selections.append(sel)
            self.args.append(sel)
        lines = list(inner)
        if where is not None:  # a member is taken where its condition is true
            lines.append(f"{unknown} = {unknown} | ({where.s} == 2)")
            lines.append(f"{take} = ({where.s} == 0) & {where.v}")
            if fn == "any":
                lines.append(f"{hit} = {hit} | {take}")
            elif fn == "all":
                lines.append(f"{hit} = {hit} | (({where.s} != 2) & ({take} == False))")
        else:
            lines.append(f"{take} = True")
        if fn == "count":
            lines.append(f"{count} += sel({take}, 1, 0)")
        elif fn == "collect":  # its value is the member's own: only whether it is known matters here
            assert body is not None and sel is not None
            lines.append(f"{unknown} = {unknown} | ({take} & ({body.s} == 2))")
            lines.append(f"{sel}[j] = {take} & ({body.s} != 2)")
            lines.append(f"{count} += sel({take} & ({body.s} != 2), 1, 0)")
        elif fn in ("sum", "min", "max") and body is not None and body.kind != "null":
            add = name + "_a"
            lines.append(f"{unknown} = {unknown} | ({take} & ({body.s} == 2))")
            lines.append(f"{add} = {take} & ({body.s} == 0)")
            lines.extend(_fold(fn, add, body.v, total, f"({count} == 0)"))
            if fn != "sum":
                lines.append(f"{count} += sel({add}, 1, 0)")
        if self.check_owners and not self.owner_checked:  # each member its household's own
            self.owner_checked = True
            self.args.append("owner")
            self.entity_block.insert(0, "owner_bad = False")
            lines.insert(0, "owner_bad = owner_bad | (owner[j] != i)")
        self.emit("for j in range(off[i], off[i + 1]):")
        self.emit("    jj = j - off[i]")  # the member's place in its household (scratch arrays)
        self.block.extend("    " + line for line in lines)
        for key, value in kept.items():  # the loops written from now on run after this one
            self.scratch.setdefault(key, value)
        self.guarded |= checked
        if fn == "any":
            return self.bind("bool", hit, f"sel({members_unknown}, 2, sel({hit}, 0, sel({unknown}, 2, 0)))")
        if fn == "all":
            return self.bind("bool", f"not {hit}", f"sel({members_unknown}, 2, sel({hit}, 0, sel({unknown}, 2, 0)))")
        state = f"sel({members_unknown} | {unknown}, 2, 0)"
        if fn == "count":
            return self.bind("num", count, state, 0)
        if fn == "collect":
            flag = self.src.fresh("cl")
            self.emit(f"{flag} = {state}")
            assert isinstance(e.body, ir.Ref)
            return Val("list", count, flag, sel=sel, of=e.body.name)
        assert body is not None
        scale = body.scale if body.kind == "num" else 0
        rkind = "num" if body.kind in ("num", "null") else body.kind
        if fn == "sum":
            return self.bind("num", total, state, scale)
        return self.bind(rkind, total, f"sel({members_unknown} | {unknown}, 2, sel({count} > 0, 0, 1))", scale)


# --- compiling and running ---------------------------------------------------------------------


@dataclass
class Written:
    """A kernel's source and what it computes."""

    source: str
    args: list[str]
    #: decision id -> {"outs": [(short, kind, scale, output type, slot, selection)], "status": slot,
    #: "fired": slot or None, "labels": fired-row labels}; "_fb" and "_bad": slots; "_rows": count
    layout: dict[str, Any]
    codes: dict[str, int]
    reasons: dict[str, str]


def write(policy: ir.CompiledPolicy, day: dt.date, entity: str, wanted: list[ir.DecisionNode],
          columns: dict[tuple[str, str], Column], members: bool,
          check_owners: bool = False, null_free: frozenset[tuple[str, str]] = frozenset()) -> Written:
    """The kernel for the decisions of ``wanted`` it can write (each is tried on a copy of the
    writer that holds the ones written so far), and the reasons for those it cannot."""
    reasons: dict[str, str] = {}
    written: dict[str, dict[str, Any]] = {}
    try:
        writer = Writer(policy, day, entity, columns, members, null_free)
    except Unsupported as exc:  # the package's rounding unit (10, say): nothing is written
        return Written("", [], {}, {}, {node.id: str(exc) for node in wanted})
    writer.check_owners = check_owners
    for node in wanted:
        trial = writer.copy()
        try:
            record = trial.decide(node)
        except Unsupported as exc:
            reasons[node.id] = str(exc)
            continue
        writer = trial
        written[node.id] = record
    if not written:
        return Written("", [], {}, {}, reasons)
    lines = ["def kernel(start, end, off, maxm, asof, asof_y, asof_m, asof_d, "
             + "".join(f"{a}, " for a in writer.args) + "out, wide, flags):",
             # member values kept between the member loops of a household (one set a call: a thread)
             f"    scr = np.empty(({max(writer.slots, 1)}, maxm), dtype=np.int64)",
             f"    scrs = np.empty(({max(writer.slots, 1)}, maxm), dtype=np.int8)",
             "    for i in range(start, end):",
             "        fb = False",
             "        bad = False"]
    lines += ["        " + line for line in writer.entity_block]
    # each output as its column is made of it (written after every value, so `fb` is final): an
    # amount as the two 64-bit words of an Arrow decimal128 in `wide`, a yes/no as a byte in
    # `flags`, the others (whole numbers, text codes, dates, list lengths, fired-row masks) in
    # `out`; before each, in `flags`, whether it is valid (known, and not left to the scalar path)
    slot = flag = pair = 0
    layout: dict[str, Any] = {}
    for node in wanted:
        found = written.get(node.id)
        if found is None:
            continue
        record = found
        values: dict[str, Val] = record["values"]
        outs = []
        states = []
        for output in node.outputs:
            v = values[output.short]
            states.append(v.s)
            shown = "int" if output.type == "integer" and v.kind == "num" else v.kind
            valid = flag
            lines.append(f"        flags[{valid}, i] = sel(({v.s} == 0) & (fb == False), 1, 0)")
            flag += 1
            where: tuple[str, int]
            if shown == "num":
                lines.append(f"        wide[{pair}, i, 0] = {v.v}")
                lines.append(f"        wide[{pair}, i, 1] = {v.v} >> 63")
                where, pair = ("wide", pair), pair + 1
            elif shown == "bool":
                lines.append(f"        flags[{flag}, i] = sel({v.v}, 1, 0)")
                where, flag = ("flags", flag), flag + 1
            else:  # (a text's code is 0 where it is not valid: its column gathers the labels)
                lines.append(f"        out[{slot}, i] = " + (f"sel(flags[{valid}, i] != 0, {v.v}, 0)"
                                                           if shown == "str" else v.v))
                where, slot = ("out", slot), slot + 1
            outs.append((output.short, shown, v.scale, where, valid, (v.sel, v.of) if v.sel else None))
        lines.append(f"        flags[{flag}, i] = sel({' | '.join(f'({s} == 2)' for s in states) or 'False'}, 1, 0)")
        fired = record.get("fired")
        if fired is not None:
            lines.append(f"        out[{slot}, i] = {fired[0]}")
        layout[node.id] = {"outs": outs, "status": flag, "fired": slot if fired is not None else None,
                           "labels": fired[1] if fired is not None else None}
        slot, flag = slot + (fired is not None), flag + 1
    lines.append(f"        flags[{flag}, i] = fb")
    lines.append(f"        flags[{flag + 1}, i] = bad")
    lines.append(f"        flags[{flag + 2}, i] = owner_bad" if writer.owner_checked else
                 f"        flags[{flag + 2}, i] = 0")
    layout["_fb"], layout["_bad"], layout["_owners"] = flag, flag + 1, flag + 2
    layout["_out"], layout["_wide"], layout["_flags"] = max(slot, 1), max(pair, 1), flag + 3
    layout["_owners_checked"] = writer.owner_checked
    return Written("\n".join(lines) + "\n", writer.args, layout, writer.codes, reasons)


_KERNELS: dict[str, Any] = {}
#: one compilation at a time (screen's workers may ask for the same kernel at once)
_COMPILING = threading.Lock()
_WRITTEN: dict[tuple[Any, ...], Written] = {}
#: each layout's columns without nulls in its first batch (see ``decide``)
_NULL_FREE: dict[tuple[Any, ...], frozenset[tuple[str, str]]] = {}


def _cache_dir() -> Path | None:
    """Where compiled kernels are kept between processes (``POLICY_ENGINE_CACHE``, else the
    user's cache directory); None when it cannot be written."""
    root = os.environ.get("POLICY_ENGINE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "policy_engine")
    path = Path(root) / "kernels"
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path):
            pass
    except OSError:
        return None
    return path


def compile_source(source: str) -> Any:
    """The numba-compiled ``kernel`` of ``source``: from this process's memo, from the disk
    cache, or compiled now (a second for a small policy, about 20 s for Huaiyuan's six
    decisions). The source is written to a file and imported (numba caches what it compiles
    beside it); without a writable cache directory, to a temporary one."""
    import numba

    text = (f"# numba {numba.__version__}\nimport numba\nimport numpy as np\n\n"
            + HELPERS + "\n\n@numba.njit(cache=True, nogil=True, error_model=\"numpy\")\n" + source)
    # keyed by the whole file (the helpers too): an upgrade that changes them never loads an old one
    key = hashlib.sha256(text.encode()).hexdigest()[:24]
    with _COMPILING:
        found = _KERNELS.get(key)
        if found is None:
            found = _KERNELS[key] = _load(key, text)
    return found


def _load(key: str, text: str) -> Any:
    """The kernel of file ``text``, written (if it is not there yet) and imported."""
    where = _cache_dir() or Path(tempfile.mkdtemp(prefix="policy_engine-kernels-"))
    path = where / f"k{key}.py"
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    spec = importlib.util.spec_from_file_location(f"policy_engine_kernel_{key}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.kernel


def _compile_for(function: Any, off: Any, maxm: int, when: tuple[int, int, int, int], given: list[Any], out: Any,
                 wide: Any, flags: Any) -> None:
    """Compile ``function`` for these arrays' types (or load it from the cache), here, before
    the threads call it: numba's analysis of a long kernel recurses deeply (one level for each
    of thousands of guards), beyond Python's default limit of 1000."""
    with _COMPILING:
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(max(limit, 50_000))
        try:
            function(0, 0, off, maxm, *when, *given, out, wide, flags)  # no household: only the compilation
        finally:
            sys.setrecursionlimit(limit)


def _values(series: pl.Series, column: Column, codes: dict[str, int]) -> Any:
    """An input column's values as the kernel reads them (a null as 0, or a text's as it comes:
    its state says it is not there)."""
    import numpy as np

    if column.kind == "str":
        return _text_codes(series, codes)
    if column.kind == "date":
        series = series.cast(pl.Date).to_physical().cast(pl.Int64)
    elif column.kind == "num" and series.dtype != pl.Int64:
        # Int128 (or a narrower integer): a value beyond int64 becomes one the kernel's guard sends
        # to the scalar path
        narrow = series.cast(pl.Int64, strict=False)
        beyond = narrow.is_null() & series.is_not_null()
        series = narrow.set(beyond, 2**63 - 1) if beyond.any() else narrow
    if series.has_nulls():
        series = series.fill_null(False if column.kind == "bool" else 0)
    return np.ascontiguousarray(series.to_numpy())


def _one_array(series: pl.Series, newest: bool = False) -> Any:
    """``series`` as one Arrow array (its chunks combined), to read its buffers; ``newest``:
    in polars' newest Arrow types (text as string views)."""
    import pyarrow as pa  # type: ignore[import-untyped]

    array = series.to_arrow(compat_level=pl.CompatLevel.newest()) if newest else series.to_arrow()
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


def _text_codes(series: pl.Series, codes: dict[str, int]) -> Any:
    """A text column's codes (-1 for a text without one), read from its Arrow string views: a
    text of 12 bytes or fewer is held in its view, so it is looked up without hashing the
    string; a longer one is compared with the policy's longer texts (by polars, when the array
    has more than one data buffer). A null's code is left as it comes: its state says it is not
    there."""
    import numpy as np

    from . import _jit

    array = _one_array(series.cast(pl.String), newest=True)
    if len(array) == 0 or array.buffers()[1] is None:
        return np.zeros(len(array), dtype=np.int64)
    views = np.frombuffer(array.buffers()[1], dtype=np.uint64, count=2 * len(array),
                          offset=array.offset * 16).reshape(-1, 2)
    out = np.empty(len(array), dtype=np.int64)
    keys, slots, starts, texts, long_codes = _jit.text_table(tuple(codes.items()))
    buffers = array.buffers()  # validity, views, then the data buffers of the longer texts
    data = np.frombuffer(buffers[2], dtype=np.uint8) if len(buffers) == 3 else np.empty(0, np.uint8)
    _jit.view_codes(views, keys, slots, data, starts, texts, long_codes, out)
    longer = np.flatnonzero(out == -2)
    if len(longer):
        out[longer] = series.cast(pl.String).gather(longer).replace_strict(
            list(codes), list(codes.values()), default=-1, return_dtype=pl.Int64).fill_null(-1).to_numpy()
    return out


def _read_only(array: Any) -> Any:
    """``array`` (a view of it) marked read-only."""
    if array.flags.writeable:
        array = array.view()
        array.setflags(write=False)
    return array


def _states(series: pl.Series) -> Any:
    """2 (unknown: a fact not given) where the column is null, else 0."""
    import numpy as np

    if not series.has_nulls():
        return np.zeros(len(series), dtype=np.int8)
    return (series.is_null().cast(pl.Int8) * 2).to_numpy()


def _column(values: Any, valid: Any, kind: str, scale: int, name: str, labels: list[str] | None = None) -> pl.Series:
    """An output column from the kernel's values (for an amount, the (n, 2) words of its
    decimal128 column) and its validity (1 where the value is known and not left to the scalar
    path; null elsewhere)."""
    import numpy as np
    import pyarrow as pa

    n = len(values)
    bitmap = pa.py_buffer(np.packbits(valid.view(np.bool_), bitorder="little"))
    if kind == "bool":
        data = pa.py_buffer(np.packbits(values.view(np.bool_), bitorder="little"))
        return pl.Series(name, pa.Array.from_buffers(pa.bool_(), n, [bitmap, data]))
    if kind == "int":
        return pl.Series(name, pa.Array.from_buffers(pa.int64(), n, [bitmap, pa.py_buffer(values)]))
    if kind == "date":  # (a value that is not valid is not read: it may be anything)
        days32 = values.astype(np.int32)
        return pl.Series(name, pa.Array.from_buffers(pa.date32(), n, [bitmap, pa.py_buffer(days32)]))
    if kind == "str":  # (the code of a value that is not valid is 0)
        assert labels is not None
        index = pl.Series(pa.Array.from_buffers(pa.uint32(), n, [bitmap, pa.py_buffer(values.astype(np.uint32))]))
        texts = pl.Series(labels, dtype=pl.String) if labels else pl.Series([None], dtype=pl.String)
        return texts.gather(index).alias(name)
    return pl.Series(name, pa.Array.from_buffers(pa.decimal128(38, scale), n, [bitmap, pa.py_buffer(values)]))


def _list_column(member_values: pl.Series, selected: Any, off: Any, counts: Any, valid: Any, name: str) -> pl.Series:
    """A ``collect`` output: each household's selected members' values, in member order (null
    where unknown, or where the scalar path decides the household)."""
    import numpy as np
    import pyarrow as pa

    valid = valid.view(np.bool_)
    keep = selected != 0
    if not valid.all():  # the members of a household left null are not taken
        keep &= np.repeat(valid, np.diff(off))
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(np.where(valid, counts, 0), out=offsets[1:])
    values = member_values.filter(pl.Series(keep))  # in the column's own type, as decide lists them
    array = pa.LargeListArray.from_arrays(pa.array(offsets), values.to_arrow(), mask=pa.array(~valid))
    return pl.Series(name, array).cast(pl.List(values.dtype))


#: households below which a batch is not split between threads
PART_ROWS = 50_000
_POOL: Any = None


def threads() -> int:
    """Threads a large batch is decided on: one per usable core, at most 4."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 4))


def _parts(n: int) -> list[tuple[int, int]]:
    k = max(1, min(threads(), n // PART_ROWS))
    bounds = [n * p // k for p in range(k + 1)]
    return [(bounds[p], bounds[p + 1]) for p in range(k)]


def _pool() -> Any:
    global _POOL
    if _POOL is None:
        from concurrent.futures import ThreadPoolExecutor

        _POOL = ThreadPoolExecutor(max_workers=threads(), thread_name_prefix="policy_engine-kernel")
    return _POOL


def _run_parts(fn: Any, n: int) -> list[Any]:
    """``fn((start, end))`` over the parts of ``range(n)``, one a thread (``fn`` releases the GIL)."""
    parts = _parts(n)
    if len(parts) == 1:
        return [fn(parts[0])]
    return list(_pool().map(fn, parts))


def available() -> bool:
    """Whether numba can be imported here."""
    try:
        import numba  # noqa: F401
    except ImportError:  # pragma: no cover - numba is a dependency; a broken install still decides
        return False
    return True


def decide(policy: ir.CompiledPolicy, day: dt.date, entity: str, wanted: list[ir.DecisionNode],
           entity_df: pl.DataFrame, members_df: pl.DataFrame | None, scales: dict[tuple[str, str], int],
           offsets: Any, reasons: dict[str, str], raw: dict[tuple[str, str], bool] | None = None,
           vouched: set[tuple[str, str]] | None = None, owners: list[tuple[pl.Series, pl.Series]] | None = None
           ) -> dict[str, tuple[pl.DataFrame, list[tuple[str, str, int]]]]:
    """The decisions of ``wanted`` the kernel can compute, each as ``vector._decision_frame``
    gives it: (its columns and ``_fb``, its outputs' kinds and scales). The others are left out,
    their reasons in ``reasons``.

    ``raw``: the decimal columns left as given (key -> whether negative values are allowed):
    the kernel reads their 128-bit words, sends a value beyond int64 to the scalar path, and
    checks each value as ``vector._plainly_valid`` does; when every value it read passes, their
    keys are added to ``vouched`` (else the caller checks them the long way, and reports).

    ``owners``: [(each member's ``_hh``, household sizes)] of a caller's ``Split`` not yet
    checked: the kernel's first member loop checks that each member belongs to its household,
    and ``OwnersMismatch`` says when not; the check is then taken off the list
    (a kernel without member loops leaves it there, for the caller)."""
    import numpy as np

    from . import _jit
    from .vector import _fired_lists

    raw = raw or {}
    columns: dict[tuple[str, str], Column] = {}
    series_of: dict[str, pl.Series] = {}
    keys: dict[str, tuple[str, str]] = {}  # argument -> (scope, input name)
    types = {node.name: node.type for node in policy.inputs}
    for scope, frame in (("entity", entity_df), ("member", members_df)):
        if frame is None:
            continue
        for col in frame.columns:
            name = col[3:]
            if not col.startswith("in:") or name not in types:
                continue
            key = (scope, name)
            series = frame[col]
            try:
                kind = _kind(types[name])
            except Unsupported:
                continue
            columns[key] = Column(kind, scales.get(key, 0), raw.get(key))
            series_of[_arg(policy, scope, name)] = series
            keys[_arg(policy, scope, name)] = key
    members = members_df is not None and offsets is not None and "members" in entity_df.columns
    check_owners = bool(owners) and members
    layout_key = (policy.content_hash, entity, tuple(node.id for node in wanted), tuple(sorted(columns.items())),
                  members, check_owners)
    # the columns without nulls: the first batch of a layout fixes the set its kernel is written
    # for; a later batch with a null in one of them takes the kernel written for none (so a
    # layout has at most two kernels, whatever its batches hold)
    free = {key for key, series in ((keys[a], s) for a, s in series_of.items()) if not series.has_nulls()}
    if members and not entity_df["members"].has_nulls():
        free.add(("entity", "members"))
    if len(_NULL_FREE) >= 256:  # (as _WRITTEN below)
        _NULL_FREE.clear()
    fixed = _NULL_FREE.setdefault(layout_key, frozenset(free)) if policy.content_hash else frozenset()
    null_free = fixed if fixed <= free else frozenset()
    memo_key = (day, null_free) + layout_key
    written = _WRITTEN.get(memo_key) if policy.content_hash else None
    if written is None:
        written = write(policy, day, entity, wanted, columns, members, check_owners, null_free)
        if policy.content_hash:
            if len(_WRITTEN) >= 256:  # (a process deciding many dates and policies)
                _WRITTEN.clear()
            _WRITTEN[memo_key] = written
    reasons.update(written.reasons)
    if not written.source:
        return {}
    function = compile_source(written.source)
    n = entity_df.height
    m = members_df.height if members_df is not None else 0
    off = offsets if members and offsets is not None else np.zeros(n + 1, dtype=np.int64)
    selections: dict[str, Any] = {arg: np.zeros(m, dtype=np.int8) for arg in written.args if arg.startswith("o_sel")}

    def argument(arg: str) -> Any:
        """The array the kernel takes as ``arg``."""
        if arg == "s_members":
            return entity_df["members"].is_null().to_numpy()
        if arg == "owner":
            assert owners
            return owners[0][0].cast(pl.Int64).to_numpy()
        if arg.startswith("o_sel"):
            return selections[arg]
        if arg.startswith("s_"):
            return _states(series_of["v" + arg[1:]])
        series, key = series_of[arg], keys[arg]
        if key in raw:
            return _jit.decimal_words(_one_array(series))
        return _values(series, columns[key], written.codes)

    # made in the threads when there is work in it (text columns to code, nulls to find)
    costly = any(a.startswith("s_") or (a in keys and columns[keys[a]].kind in ("str", "bool")) for a in written.args)
    given = list(_pool().map(argument, written.args)) if costly and len(_parts(n)) > 1 else \
        [argument(a) for a in written.args]
    # every input array read-only: numba compiles a function for each signature, and a column
    # polars hands over without a copy is read-only while one it copies is not
    given = [a if arg.startswith("o_sel") else _read_only(a) for arg, a in zip(written.args, given)]
    off = _read_only(off)
    layout = written.layout
    # the kernel writes every slot of every household
    out = np.empty((layout["_out"], n), dtype=np.int64)
    wide = np.empty((layout["_wide"], n, 2), dtype=np.int64)
    flags = np.empty((layout["_flags"], n), dtype=np.int8)
    maxm = int(_jit.widest(off))  # the most members a household has
    # the date as arguments (its day number, year, month, day), not in the source
    when = ((day - EPOCH).days, day.year, day.month, day.day)
    _compile_for(function, off, maxm, when, given, out, wide, flags)
    # households in contiguous parts, one a thread (the kernel releases the GIL)
    _run_parts(lambda part: function(part[0], part[1], off, maxm, *when, *given, out, wide, flags), n)
    if owners and layout["_owners_checked"]:  # checked by the kernel's first member loop
        if flags[layout["_owners"]].any():
            raise OwnersMismatch
        owners.clear()
    fb = flags[layout["_fb"]] != 0
    fb_series = pl.Series("_fb", fb)
    if vouched is not None and not flags[layout["_bad"]].any():  # every value it read passed its check
        vouched.update(key for key in raw if _arg(policy, *key) in written.args)
    labels = sorted(written.codes, key=written.codes.__getitem__)
    # the columns are made from the kernel's arrays in the threads too (polars and numpy release
    # the GIL): each job gives one column
    jobs: list[Any] = []
    specs: list[tuple[ir.DecisionNode, list[tuple[str, str, int]], int, int]] = []
    for node in wanted:
        spec = layout.get(node.id)
        if spec is None:
            continue
        first = len(jobs)
        jobs.append(lambda status=spec["status"], name=f"{node.id}.status":
                    _STATUS.gather(pl.Series(flags[status].astype(np.uint32))).alias(name))
        outs = []
        for short, kind, scale, (where, row), valid, sel in spec["outs"]:
            name = f"{node.id}.{short}"
            held = {"out": out, "wide": wide, "flags": flags}[where][row]
            if kind == "list":  # sel: the selection array and the member input collected
                assert members_df is not None and sel is not None
                array, of = sel
                jobs.append(lambda values=members_df[f"in:{of}"], chosen=selections[array], counts=held, valid=valid,
                            name=name: _list_column(values, chosen, off, counts, flags[valid], name))
                outs.append((short, "list", 0))
                continue
            jobs.append(lambda held=held, valid=valid, kind=kind, scale=scale, name=name:
                        _column(held, flags[valid], kind, scale, name, labels))
            outs.append((short, kind, scale))
        if spec["fired"] is not None:
            jobs.append(lambda fired=spec["fired"], ids=spec["labels"], name=f"{node.id}.fired_rows":
                        _fired_lists(out[fired], ids).alias(name))
        else:
            jobs.append(lambda name=f"{node.id}.fired_rows":
                        pl.Series(name, [[]], dtype=pl.List(pl.String)).new_from_index(0, n))
        specs.append((node, outs, first, len(jobs)))
    made = list(_pool().map(lambda job: job(), jobs)) if len(_parts(n)) > 1 else [job() for job in jobs]
    return {node.id: (pl.DataFrame(made[first:last] + [fb_series]), outs) for node, outs, first, last in specs}


def narrow_decimal(series: pl.Series, convert: bool = True) -> tuple[pl.Series | None, int, int] | None:
    """A Decimal column's fixed-point integers as Int64, with their min and max, in one pass over
    its Arrow buffer (in parts, one a thread); None when a value does not fit int64 (or the
    column is not decimal128). ``convert=False``: the bounds alone (the column is None)."""
    import numpy as np
    import pyarrow as pa

    from . import _jit

    if not isinstance(series.dtype, pl.Decimal):
        return None
    array = _one_array(series)
    if not pa.types.is_decimal128(array.type):
        return None
    nulls = series.is_null()
    has_nulls = nulls.any()
    out = np.empty(len(array) if convert else 0, dtype=np.int64)
    words = _jit.decimal_words(array)
    flags = nulls.to_numpy() if has_nulls else None
    empty = np.empty(0, np.bool_)

    def part(bounds: tuple[int, int]) -> tuple[bool, int, int, bool]:
        a, b = bounds
        given = flags[a:b] if flags is not None else empty
        fits, lo, hi = _jit.narrow(words[a:b], given, out[a:b] if convert else out)
        return fits, lo, hi, bool(b > a and (flags is None or not given.all()))

    found = [r for r in _run_parts(part, len(array)) if r[3]]  # parts with a value
    if not all(r[0] for r in found):
        return None
    lo = min((r[1] for r in found), default=0)
    hi = max((r[2] for r in found), default=0)
    if not convert:
        return None, int(lo), int(hi)
    values = pl.Series(series.name, out)
    if has_nulls:
        values = values.scatter(nulls.arg_true(), None)
    return values, int(lo), int(hi)


def offsets_of(sizes: pl.Series) -> Any:
    """Each household's first member (and, last, the number of members): the cumulative sum of
    ``sizes``, from 0."""
    import numpy as np

    counts = sizes.cast(pl.Int64).to_numpy()
    off = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=off[1:])
    return off


def owners_match(owner: pl.Series, sizes: pl.Series) -> bool:
    """Whether a members table lists its members in household order, ``sizes`` per household."""
    from . import _jit

    if owner.has_nulls() or sizes.has_nulls() or (sizes < 0).any():
        return False
    off = offsets_of(sizes)
    if off[-1] != len(owner):
        return False
    owners = owner.cast(pl.Int64).to_numpy()
    return all(_run_parts(lambda b: _jit.owners_match(owners, off, b[0], b[1]), len(sizes)))
