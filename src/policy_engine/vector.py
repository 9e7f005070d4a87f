"""Vectorised evaluation (issue 5): the same IR compiled to polars expressions.

``decide_batch(engine, population, as_of)`` decides every household of a population at once and
returns one row per household with, for every decision, ``<id>.status``, each output
``<id>.<output>`` and ``<id>.fired_rows``. The results are *equal* to the scalar path's
(``Engine.decide``), not close: see docs/population.md for the input layout and the design.

Representation, per IR node and per row:

* numbers (money, decimal, integer) are exact fixed-point integer columns with a scale
  (number of decimal places) chosen statically per node: ``+``/``-`` use the larger scale, ``*``
  the sum of the scales, so they are exact, as the scalar path's 34-digit context is for these
  values. A node whose bounds over the population lie within ±``NARROW`` is ``Int64``, any other
  ``Int128``; an operation runs in ``Int64`` only when its result's bounds prove it cannot wrap.
  Money is rounded to the package's rounding unit whenever the scalar path rounds it. A quotient
  whose consumer rounds it (a money-typed node, ``round``, ``round_money``, ``floor``, ``ceil``)
  is rounded exactly in integer arithmetic; any other is computed with Python ``Decimal`` in the
  scalar path's context and stored at the smallest scale that holds every quotient exactly; a
  quotient that does not fit exactly sends its row to the scalar path;
* unknown facts are a separate boolean mask per node (``None`` when statically known); FEEL null
  is polars null;
* a per-node "fallback" mask marks rows that the vector path cannot decide exactly (a parameter
  not in force or without a value for the row's key, a table whose hit policy is violated, a
  quotient too long to hold): those rows are decided by the scalar path, and the result's
  ``_fallback`` column says so. Parts of the IR that are not supported raise
  ``NotImplementedError`` while compiling a decision; its rows then all go to the scalar path.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from decimal import (
    ROUND_FLOOR,
    Decimal,
    DivisionByZero,
    InvalidOperation,
)
from typing import Any

import polars as pl

from . import ir, kernel
from .diagnostics import Diagnostic, FactsError, PolicyEngineError, PolicyError, make
from .evaluate import CONTEXT, EXACT
from .intake import (
    _SIGNED_MONEY,
    DECIMAL_DIGITS,
    INTEGER_LIMIT,
    NOT_UTF8,
    as_date,
    holds_utf8,
    read_facts,
)
from .kernel import Unsupported  # a construct an evaluator does not compile (one class for both)

I128 = pl.Int128
I64 = pl.Int64
#: the largest scale a fixed-point node may have (values keep 38 - MAX_SCALE integer digits)
MAX_SCALE = 24
#: a number whose bounds over the population lie within ±NARROW is held in Int64 (about 3× faster
#: than Int128 here); anything else, or a number without known bounds, in Int128. Twice a narrow
#: value, and the sum or difference of two, still fit in Int64, so those never wrap.
NARROW = 2 ** 61
#: the largest Int128: a fixed-point value beyond it wraps silently in polars
I128_MAX = 2 ** 127 - 1
STATUS = ("decided", "needs_information", "not_in_force")
#: the scalar path computes in 34 significant digits (FEEL's decimal128) and rounds beyond them,
#: where a fixed-point column is exact: a sum, difference or product that may reach this many
#: units of its scale sends its row to the scalar path (``_beyond_context``), so both agree
CONTEXT_LIMIT = 10 ** CONTEXT.prec

__all__ = ["Split", "decide_batch", "facts_to_population", "unsupported"]


# --- values ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class V:
    """One compiled node in one scope: polars expressions for its value and masks."""

    kind: str  # num bool date str list null
    val: pl.Expr
    unk: pl.Expr | None = None  # True where the value is unknown
    fb: pl.Expr | None = None  # True where the row must go to the scalar path
    scale: int = 0
    div: tuple[V, V] | None = None  # a quotient not yet materialised
    labels: tuple[str, ...] = ()  # kind "mask": the row id of each bit
    #: kind "num": bounds of the fixed-point integer over this population (None: not known).
    #: They only ever choose a cheaper exact formula or drop an overflow check that cannot fire.
    lo: int | None = None
    hi: int | None = None

    @property
    def bounds(self) -> tuple[int, int] | None:
        return (self.lo, self.hi) if self.lo is not None and self.hi is not None else None

    @property
    def narrow(self) -> bool:
        """True when this number is held in Int64 (its bounds are known and within ±NARROW)."""
        return self.kind == "num" and _narrow(self.bounds)


def _narrow(bounds: tuple[int, int] | None) -> bool:
    return bounds is not None and -NARROW <= bounds[0] and bounds[1] <= NARROW


def _int(value: int, narrow: bool) -> pl.Expr:
    """An integer literal in the width of the column it is combined with."""
    return pl.lit(value, dtype=I64 if narrow and -NARROW <= value <= NARROW else I128)


def _wide(v: V) -> pl.Expr:
    """The value in Int128, for arithmetic whose result bounds are not known to be narrow."""
    return v.val.cast(I128) if v.kind == "num" else v.val


def _with_bounds(v: V, bounds: tuple[int, int] | None) -> V:
    """``v`` with these bounds, its column cast to the width they call for (Int64 when narrow)."""
    if v.kind == "num" and v.div is None:
        v = replace(v, val=v.val.cast(I64 if _narrow(bounds) else I128))
    return replace(v, lo=bounds[0], hi=bounds[1]) if bounds is not None else replace(v, lo=None, hi=None)


def _scaled_bounds(v: V, scale: int) -> tuple[int, int] | None:
    b = v.bounds
    if b is None:
        return None
    f = 10 ** (scale - v.scale)
    return b[0] * f, b[1] * f


def _hull(*bounds: tuple[int, int] | None) -> tuple[int, int] | None:
    if not bounds or any(b is None for b in bounds):
        return None
    return min(b[0] for b in bounds if b is not None), max(b[1] for b in bounds if b is not None)


def _column_bounds(series: pl.Series) -> tuple[int, int] | None:
    """(min, max) of a fixed-point column; (0, 0) when every value is null."""
    if series.dtype not in (I128, pl.Int64, pl.Int32, pl.Int16, pl.Int8, pl.UInt8, pl.UInt16, pl.UInt32):
        return None
    lo, hi = series.min(), series.max()
    if lo is None or hi is None:
        return (0, 0)
    return int(lo), int(hi)  # type: ignore[arg-type]


def _beyond_context(val: pl.Expr, bounds: tuple[int, int] | None, limit: int = CONTEXT_LIMIT) -> pl.Expr | None:
    """Where a fixed-point result holds ``limit`` (``CONTEXT_LIMIT``) units of its scale or more, so
    that the scalar path, whose operands' exponents are at least minus this scale, may round it
    (None when its bounds prove it never does, the common case)."""
    if bounds is not None and -limit < bounds[0] and bounds[1] < limit:
        return None
    wide = val.cast(I128)
    return ((wide >= _lit_int(limit)) | (wide <= _lit_int(-limit))).fill_null(False)


def _or(*parts: pl.Expr | None) -> pl.Expr | None:
    present = [p for p in parts if p is not None]
    if not present:
        return None
    out = present[0]
    for p in present[1:]:
        out = out | p
    return out


def _lit_int(value: int) -> pl.Expr:
    return pl.lit(value, dtype=I128)


def _rescale(v: V, scale: int) -> pl.Expr:
    """``v``'s fixed-point integer at a larger ``scale`` (Int64 when the result is narrow)."""
    if scale == v.scale:
        return v.val
    if scale < v.scale:  # pragma: no cover - callers only widen
        raise AssertionError
    factor = 10 ** (scale - v.scale)
    if v.narrow and _narrow(_scaled_bounds(v, scale)) and factor <= NARROW:
        return v.val * _int(factor, True)
    bounds = _scaled_bounds(v, scale)
    if bounds is None or not -I128_MAX <= bounds[0] <= bounds[1] <= I128_MAX:
        # Int128 arithmetic wraps silently: a value that may not fit at this scale is not computed
        # here; its decision is decided by the scalar path (found by a differential fuzz)
        raise Unsupported("a value that may not fit 128 bits at the decimal places it is combined with")
    return _wide(v) * _lit_int(factor)


def _kind(t: str) -> str:
    if t in ir.NUMERIC:
        return "num"
    if t == "boolean":
        return "bool"
    if t == "date":
        return "date"
    if t in ("text", "enum"):
        return "str"
    if t == "list":
        return "list"
    if t == "null":
        return "null"
    return "any"


def _null_of(kind: str) -> pl.Expr:
    dtype = {"num": I128, "bool": pl.Boolean, "date": pl.Date, "str": pl.String}.get(kind)
    return pl.lit(None, dtype=dtype) if dtype is not None else pl.lit(None)


def _null_v(kind: str, unk: pl.Expr | None = None, fb: pl.Expr | None = None) -> V:
    """A value null on every row; a number's bounds are (0, 0), as `_column_bounds` gives an
    all-null column (so that it may be rescaled or combined without a 128-bit check)."""
    v = V(kind, _null_of(kind), unk, fb)
    return _with_bounds(v, (0, 0)) if kind == "num" else v


def _unit_scale(unit: Decimal) -> int:
    exponent = unit.as_tuple().exponent
    if not isinstance(exponent, int) or exponent > 0:
        raise Unsupported(f"rounding to {unit} (only units 1, 0.1, 0.01, ... are vectorised)")
    return -exponent


def _round_fixed(val: pl.Expr, scale: int, k: int, mode: str, bounds: tuple[int, int] | None = None) -> pl.Expr:
    """Round a fixed-point value at ``scale`` to ``k`` decimals (``quantize`` semantics).

    Integer arithmetic only (no branches: a ``when`` chain costs several times more here):
    q = floor(val / d) and the remainder r = val - q·d (0 <= r < d), then q plus one where the
    mode rounds up. With ``bounds`` (of ``val``) inside ±NARROW / 4 the work is done in Int64.
    """
    if k >= scale:
        return val * _lit_int(10 ** (k - scale)) if k > scale else val
    d = 10 ** (scale - k)
    narrow = _narrow(bounds) and bounds is not None and max(abs(bounds[0]), abs(bounds[1]), d) <= NARROW // 4
    dt = I64 if narrow else I128
    dd = _int(d, narrow)
    if not narrow:
        val = val.cast(I128)
    q = val // dd  # floor
    if mode == "floor":
        return q
    # known non-negative (and 2·val + d cannot overflow): one floor division for half up / up
    nonneg = bounds is not None and bounds[0] >= 0 and 2 * bounds[1] + d < 2 ** 126
    if mode == "ceiling":
        return _int(0, narrow) - ((_int(0, narrow) - val) // dd)
    if nonneg and mode in ("down", "up", "half_up"):
        if mode == "down":
            return q
        if mode == "up":
            return (val + _int(d - 1, narrow)) // dd
        return (val * _int(2, narrow) + dd) // _int(2 * d, narrow)
    r = val - q * dd  # 0 <= r < d
    if mode == "down":  # toward zero: floor, plus one for a negative value with a remainder
        bump = (val < 0) & (r != 0)
    elif mode == "up":  # away from zero
        bump = (val > 0) & (r != 0)
    else:
        twice = r * _int(2, narrow)
        if mode == "half_up":  # ties away from zero
            bump = (twice > dd) | ((twice == dd) & (val >= 0))
        elif mode == "half_even":
            bump = (twice > dd) | ((twice == dd) & (q % _int(2, narrow) != 0))
        else:
            raise Unsupported(f"rounding mode {mode}")
    return q + bump.cast(dt)


def _python_date(value: pl.Expr) -> pl.Expr:
    """A date the scalar path can hold: outside years 1..9999 ``date`` overflows, and the scalar
    function returns null."""
    year = value.dt.year()
    return pl.when((year >= 1) & (year <= 9999)).then(value)




def _with(df: pl.DataFrame, columns: list[pl.Expr]) -> pl.DataFrame:
    """``df.with_columns(columns)`` (new names only) through the lazy engine, which computes an
    expression shared by several columns once (eager ``with_columns`` evaluates each occurrence:
    5× slower here). Only the new columns go through the query, then are appended: planning a
    query that carries every column of a wide frame costs more."""
    new = df.lazy().select(columns).collect()
    if new.height != df.height:  # constants only: broadcast as with_columns does
        return df.with_columns(columns)
    return df.hstack(new)


# --- scopes ------------------------------------------------------------------------------------


class Scope:
    """A frame being evaluated: the entity (one row per case) or the members (one row per member)."""

    def __init__(self, name: str, df: pl.DataFrame):
        self.name = name
        self.df = df
        self.done: dict[str, V] = {}
        self.counter = itertools.count()

    def fresh(self, stem: str) -> str:
        return f"_{stem}{next(self.counter)}"

    def put(self, name: str, v: V) -> V:
        """Materialise ``v`` as columns of this frame; return a V reading them."""
        v = self.settle(v)
        cols = {f"v:{name}": v.val.cast(I64 if v.narrow else I128) if v.kind == "num" else v.val}
        if v.unk is not None:
            cols[f"u:{name}"] = v.unk
        if v.fb is not None:
            cols[f"f:{name}"] = v.fb
        self.df = _with(self.df, [e.alias(k) for k, e in cols.items()])
        # a mask that is False on every row of this population is dropped: the nodes built on
        # this one then carry no mask for it (the same results, far fewer columns to compute)
        unk = pl.col(f"u:{name}") if v.unk is not None and self.df[f"u:{name}"].any() else None
        fb = pl.col(f"f:{name}") if v.fb is not None and self.df[f"f:{name}"].any() else None
        # the bounds over this population: those derived from the operands' when they are already
        # narrow (exact enough for every use), else measured on the column (a pass)
        bounds = (v.bounds if v.narrow else _column_bounds(self.df[f"v:{name}"])) if v.kind == "num" else None
        if v.kind == "num" and not v.narrow and _narrow(bounds):  # narrow after all: hold it in Int64
            self.df = self.df.with_columns(pl.col(f"v:{name}").cast(I64))
        return _with_bounds(V(v.kind, pl.col(f"v:{name}"), unk, fb, v.scale), bounds)

    def settle(self, v: V) -> V:
        """Materialise a pending quotient at the smallest scale that holds it exactly."""
        if v.div is None:
            return v
        quotients, unk, fb = self.divide(v)
        scale = 0
        for q in quotients:
            if q is not None:
                exponent = q.as_tuple().exponent
                assert isinstance(exponent, int)
                scale = max(scale, -exponent)
        scale = min(scale, MAX_SCALE)
        raw: list[int | None] = []
        bad: list[bool] = []
        for q in quotients:
            if q is None:
                raw.append(None)
                bad.append(False)
                continue
            scaled = q.scaleb(scale, context=CONTEXT)
            whole = scaled.to_integral_value(rounding=ROUND_FLOOR, context=CONTEXT)
            beyond = abs(whole) >= 10 ** 37  # (its row goes to the scalar path: 0 holds its place in Int128)
            raw.append(0 if beyond else int(whole))
            bad.append(beyond or whole != scaled)
        name = self.fresh("div")
        self.df = self.df.with_columns(pl.Series(f"v:{name}", raw, dtype=I128),
                                       pl.Series(f"f:{name}", bad, dtype=pl.Boolean))
        return V("num", pl.col(f"v:{name}"), unk, _or(fb, pl.col(f"f:{name}")), scale)

    def divide(self, v: V) -> tuple[list[Decimal | None], pl.Expr | None, pl.Expr | None]:
        assert v.div is not None
        a, b = (self.settle(x) for x in v.div)
        frame = self.df.lazy().select(a=a.val, b=b.val).collect()
        out: list[Decimal | None] = []
        for x, y in zip(frame["a"].to_list(), frame["b"].to_list()):
            if x is None or y is None:
                out.append(None)
                continue
            try:
                out.append(CONTEXT.divide(Decimal(x).scaleb(-a.scale, context=EXACT),
                                          Decimal(y).scaleb(-b.scale, context=EXACT)))
            except (DivisionByZero, InvalidOperation):
                out.append(None)  # FEEL: division by zero is null
        return out, _or(a.unk, b.unk), _or(a.fb, b.fb)

    def round_to(self, v: V, k: int, mode: str) -> V:
        """``v`` rounded to ``k`` decimals as the scalar ``quantize`` does (exactly, for quotients).
        A result of more than 34 digits, which ``quantize`` refuses, sends its row to the scalar
        path (where ``decide`` reports it)."""
        if v.div is None:
            limits = v.bounds
            if limits is not None:
                lo, hi = limits
                limits = ((lo // 10 ** (v.scale - k) - 1, hi // 10 ** (v.scale - k) + 1) if v.scale > k
                          else (lo * 10 ** (k - v.scale), hi * 10 ** (k - v.scale)))
            val = _round_fixed(v.val, v.scale, k, mode, v.bounds)
            return _with_bounds(replace(v, val=val, scale=max(k, 0), fb=_or(v.fb, _beyond_context(val, limits))),
                                limits)
        a, b = (self.settle(x) for x in v.div)
        val, fb, bounds = _divide_rounded(a, b, k, mode)  # its fallback covers quotients of 32 digits or more
        return _with_bounds(V("num", val, _or(a.unk, b.unk), _or(a.fb, b.fb, fb), max(k, 0)), bounds)


#: guard digits kept below the rounding position when a quotient is rounded
GUARD = 6


def _divide_rounded(a: V, b: V, k: int, mode: str) -> tuple[pl.Expr, pl.Expr | None, tuple[int, int] | None]:
    """(a / b rounded to ``k`` decimals, rows to send to the scalar path), in Int128 only.

    The scalar path divides in its 34-digit context and then quantizes. Here the exact quotient
    is cut to ``k + GUARD`` decimals (floor), a last "sticky" digit records whether anything
    was cut, and ``_round_fixed`` rounds that: for every mode this is the rounding of the exact
    quotient. It equals the scalar result unless the 34-digit quotient lies on the other side of
    a rounding boundary than the exact one, which can only happen when the cut digits are within
    one unit of a boundary (and something was cut): those rows, and rows whose numbers would not
    fit in Int128, go to the scalar path. Division by zero is null, as in FEEL.

    When the bounds of both operands are known, the divisor is positive and every scaled
    dividend N = a * 10^(b.scale + k - a.scale) has |N| < 10^33, the exact quotient N / D is
    rounded directly: a quotient that is not exactly on a rounding boundary is at least 1 / (2D)
    units away from it, while the 34-digit quotient of the scalar path is within
    |N| / D * 10^-33 / 2 < 1 / (2D) of the exact one, so both round the same way.
    """
    fast = _divide_direct(a, b, k, mode)
    if fast is not None:
        return fast
    shift = b.scale + k + GUARD - a.scale  # q * 10^(k+G) = A * 10^shift / B (or A / (B * 10^-shift))
    num, den = _wide(a), _wide(b)
    limit = _lit_int(10 ** max(36 - max(shift, 0), 1))
    big = ((num.abs() >= limit) | (den.abs() >= _lit_int(10 ** max(36 + min(shift, 0), 1)))).fill_null(False)
    if shift > 0:
        num = num * _lit_int(10 ** shift)
    elif shift < 0:
        den = den * _lit_int(10 ** -shift)
    negative = den < 0
    num = pl.when(negative).then(_lit_int(0) - num).otherwise(num)
    den = pl.when(negative).then(_lit_int(0) - den).otherwise(den)
    zero = den == 0
    safe = pl.when(zero | big).then(_lit_int(1)).otherwise(den)
    t = num // safe  # floor(q * 10^(k+G))
    cut = (num - t * safe) != 0
    sticky = t * _lit_int(10) + cut.cast(I128)
    rounded = _round_fixed(sticky, k + GUARD + 1, k, mode)
    r = t % _lit_int(10 ** GUARD)  # the guard digits, 0 <= r < 10^G
    if mode in ("half_up", "half_even"):
        half = 5 * 10 ** (GUARD - 1)
        near = (r == _lit_int(half - 1)) | (r == _lit_int(half))
    else:
        near = (r == _lit_int(0)) | (r == _lit_int(10 ** GUARD - 1))
    too_long = t.abs() >= _lit_int(10 ** 32)  # more than 34 digits: the scalar quotient is rounded
    fb = (big | (cut & near) | too_long).fill_null(False) & zero.not_().fill_null(True)
    val = pl.when(zero | big).then(pl.lit(None, dtype=I128)).otherwise(rounded)
    return val, fb, None


def _divide_direct(a: V, b: V, k: int, mode: str) -> tuple[pl.Expr, None, tuple[int, int]] | None:
    """a / b rounded to ``k`` places by integer division alone, when the bounds allow (above)."""
    ab, bb = a.bounds, b.bounds
    if ab is None or bb is None or bb[0] < 1:
        return None
    shift = b.scale + k - a.scale
    lo, hi = (ab[0] * 10 ** shift, ab[1] * 10 ** shift) if shift >= 0 else ab
    dmin, dmax = (bb[0] * 10 ** -shift, bb[1] * 10 ** -shift) if shift < 0 else bb
    if max(abs(lo), abs(hi), dmax) >= 10 ** 33:
        return None
    # Int64 when N, D and 2N + 2D stay inside it
    narrow = a.narrow and b.narrow and max(abs(lo), abs(hi), dmax) <= NARROW // 4
    n, d = (a.val, b.val) if narrow else (_wide(a), _wide(b))
    if shift > 0:
        n = n * _int(10 ** shift, narrow)
    elif shift < 0:
        d = d * _int(10 ** -shift, narrow)
    bounds = (min(lo // dmin, lo // dmax) - 1, max(hi // dmin, hi // dmax) + 1)  # N / D over both ranges
    dt = I64 if narrow else I128
    zero, one, two = _int(0, narrow), _int(1, narrow), _int(2, narrow)
    if mode == "floor":
        return n // d, None, bounds
    if mode == "ceiling":
        return zero - ((zero - n) // d), None, bounds
    if mode == "half_even":
        q = n // d
        twice = (n - q * d) * two
        return q + ((twice > d) | ((twice == d) & (q % two != 0))).cast(dt), None, bounds
    if mode not in ("half_up", "down", "up"):
        return None
    if lo >= 0:  # the magnitude is the value
        if mode == "half_up":
            return (n * two + d) // (d * two), None, bounds
        if mode == "down":
            return n // d, None, bounds
        return (n + d - one) // d, None, bounds
    q = n // d  # floor; r = n - q·d in [0, d)
    r = n - q * d
    if mode == "half_up":  # ties away from zero
        bump = (r * two > d) | ((r * two == d) & (n >= 0))
    elif mode == "down":
        bump = (n < 0) & (r != 0)
    else:
        bump = (n > 0) & (r != 0)
    return q + bump.cast(dt), None, bounds


# --- the compiler ------------------------------------------------------------------------------


class Batch:
    """Compile and evaluate one policy over one population as of one date."""

    def __init__(self, engine: Any, entity_df: pl.DataFrame, members_df: pl.DataFrame | None,
                 as_of: dt.date, entity: str, scales: dict[tuple[str, str], int]):
        #: (scope, input name) -> the scale of the input's fixed-point column
        self.scales = scales
        self.engine = engine
        self.policy: ir.CompiledPolicy = engine.policy
        self.as_of = as_of
        self.entity = entity
        #: members per household, in order, when the population says (see ``segments``)
        self.sizes: pl.Series | None = None
        self.h = Scope("entity", entity_df)
        self.m = Scope("member", members_df) if members_df is not None else None
        self.inputs = {n.name: n for n in self.policy.inputs}
        self.params = {p.name: p for p in self.policy.parameters}
        self.derived = {d.name: d for d in self.policy.derived}
        self.decisions = {d.id: d for d in self.policy.decisions}
        self.outputs = {o.name: (d, o) for d in self.policy.decisions for o in d.outputs}
        self.rounding = self.policy.rounding
        try:
            self._money_k: int | None = _unit_scale(self.rounding.unit)
        except Unsupported:  # a unit such as 1E+1: each decision that rounds money is left to the scalar path
            self._money_k = None
        self.results: dict[str, tuple[str, dict[str, V], V | None]] = {}
        self.in_progress: set[str] = set()
        self.partial: dict[str, dict[str, V]] = {}

    @property
    def money_k(self) -> int:
        """The places money is rounded to (Unsupported for a unit that is not 1, 0.1, 0.01...)."""
        if self._money_k is None:
            raise Unsupported(f"rounding to {self.rounding.unit} (only units 1, 0.1, 0.01, ... are vectorised)")
        return self._money_k

    # -- names ------------------------------------------------------------------------------------

    def ref(self, name: str, scope: Scope, member: bool) -> V:
        if member and scope is self.m:
            return self.member_value(name)
        if scope is self.m:  # an entity-level name read inside an aggregate: broadcast it
            param = self.params.get(name)
            if param is not None and not param.by:  # the same on every row: use it as it is
                return self.entity_value(name)
            key = f"h:{name}"
            if key not in scope.done:
                v = self.entity_value(name)
                cols = [v.val.alias(f"v:{key}")]
                if v.unk is not None:
                    cols.append(v.unk.alias(f"u:{key}"))
                if v.fb is not None:
                    cols.append(v.fb.alias(f"f:{key}"))
                picked = self.h.df.lazy().with_columns(cols).select([c.meta.output_name() for c in cols]).collect()
                assert self.m is not None
                index = self.m.df["_hh"]
                self.m.df = self.m.df.with_columns([picked[c].gather(index) for c in picked.columns])
                scope.done[key] = V(v.kind, pl.col(f"v:{key}"), pl.col(f"u:{key}") if v.unk is not None else None,
                                    pl.col(f"f:{key}") if v.fb is not None else None, v.scale, lo=v.lo, hi=v.hi)
            return scope.done[key]
        return self.entity_value(name)

    def entity_value(self, name: str) -> V:
        scope = self.h
        if name in scope.done:
            return scope.done[name]
        if name in self.inputs:
            v = self.input_value(scope, self.inputs[name])
        elif name in self.params:
            v = self.param_value(scope, self.params[name])
            if not self.params[name].by:
                scope.done[name] = v
            return v
        elif name in self.derived:
            v = self.derived_value(scope, self.derived[name])
        elif name in self.outputs:
            decision, output = self.outputs[name]
            partial = self.partial.get(decision.id)
            if decision.id in self.in_progress and partial is not None and output.short in partial:
                return partial[output.short]
            status, values, _ = self.decide(decision)
            if status == "not_in_force":
                return V(_kind(output.type), _null_of(_kind(output.type)), None, pl.lit(True))
            return values[output.short]
        else:  # pragma: no cover - the compiler resolves every name
            raise Unsupported(f"name `{name}`")
        scope.done[name] = v
        return v

    def member_value(self, name: str) -> V:
        scope = self.m
        assert scope is not None
        if name in scope.done:
            return scope.done[name]
        if name in self.inputs:
            v = self.input_value(scope, self.inputs[name])
        elif name in self.derived:
            v = self.derived_value(scope, self.derived[name])
        elif name in self.params:
            return self.param_value(scope, self.params[name])
        else:
            return self.ref(name, scope, False)
        scope.done[name] = v
        return v

    def input_value(self, scope: Scope, node: ir.InputNode) -> V:
        col = f"in:{node.name}"
        kind = _kind(node.type)
        if col not in scope.df.columns:  # the column is absent: unknown everywhere
            return _null_v(kind, pl.lit(True))
        # a column without nulls is known on every row of this population: no mask to carry
        unk = pl.col(col).is_null() if scope.df[col].has_nulls() else None
        v = V(kind, pl.col(col), unk, None, self.scales.get((scope.name, node.name), 0))
        return _with_bounds(v, _column_bounds(scope.df[col])) if kind == "num" else v

    def param_value(self, scope: Scope, node: ir.ParameterNode) -> V:
        kind = _kind(node.type)
        chosen = None
        for value in node.values:
            if value.start <= self.as_of and (value.end is None or self.as_of <= value.end):
                chosen = value
        if chosen is None:
            return _null_v(kind, None, pl.lit(True))
        entries = dict(chosen.entries)
        scale = 0
        if kind == "num":
            for value in entries.values():
                if isinstance(value, Decimal):
                    exponent = value.as_tuple().exponent
                    assert isinstance(exponent, int)
                    scale = max(scale, -exponent)

        def encode(value: Any) -> Any:
            if kind == "num":
                return None if value is None else int(Decimal(value).scaleb(scale, context=EXACT))
            return value

        dtype = {"num": I128, "bool": pl.Boolean, "date": pl.Date, "str": pl.String}.get(kind)
        if dtype is None:
            raise Unsupported(f"parameter `{node.name}` of type {node.type}")
        raws = [encode(v) for v in entries.values() if v is not None] if kind == "num" else []
        bounds = (min(raws), max(raws)) if raws else None
        if not node.by:
            return _with_bounds(V(kind, pl.lit(encode(entries[()]), dtype=dtype), None, None, scale), bounds)
        dims = [self.ref(d, scope, self._is_member(d) and scope is self.m) for d in node.by]
        parts = []
        for dim in dims:
            if dim.kind == "bool":
                parts.append(pl.when(dim.val).then(pl.lit("true")).otherwise(pl.lit("false")))
            elif dim.kind == "str":
                parts.append(dim.val)
            elif dim.kind == "num" and dim.scale == 0 and dim.div is None or dim.kind == "date":
                parts.append(dim.val.cast(pl.String))
            else:
                raise Unsupported(f"parameter `{node.name}` keyed by a {dim.kind} value")
        key = parts[0] if len(parts) == 1 else pl.concat_str(parts, separator="\x1f")
        mapping = {"\x1f".join(k): encode(v) for k, v in entries.items()}
        unk = _or(*(d.unk for d in dims))
        if all(d.kind in ("str", "bool") for d in dims) and len(mapping) <= 16 and all(
                v is not None for v in mapping.values()):
            # a few keys: a chain of equality tests on the dimensions themselves (several times
            # faster than building and replacing strings); a key that is not in the table gives
            # null, i.e. "missing"
            chain: Any = None
            for key_parts, value in entries.items():
                tests = [d.val == (k == "true" if d.kind == "bool" else k) for d, k in zip(dims, key_parts)]
                test = tests[0] if len(tests) == 1 else pl.all_horizontal(tests)
                chain = (pl.when(test) if chain is None else chain.when(test)).then(pl.lit(encode(value), dtype=dtype))
            assert chain is not None
            val = chain.otherwise(pl.lit(None, dtype=dtype))
            missing = val.is_null()
        else:
            val = key.replace_strict(list(mapping), list(mapping.values()), default=None, return_dtype=dtype)
            missing = key.is_in(list(mapping)).not_().fill_null(True)
        if unk is not None:
            missing = missing & unk.not_()
        fb = _or(missing, *(d.fb for d in dims))
        return _with_bounds(V(kind, val, unk, fb, scale), bounds)

    def _is_member(self, name: str) -> bool:
        node = self.inputs.get(name) or self.derived.get(name)
        return node is not None and node.entity == "member"

    def derived_value(self, scope: Scope, node: ir.DerivedNode) -> V:
        if node.table is not None:
            v = self.table(scope, node.table)[0][0]
        elif node.type == "money":
            assert node.expr is not None
            v = self.rounded(node.expr, scope, self.money_k, self.rounding.mode)
        else:
            assert node.expr is not None
            v = self.expr(node.expr, scope)
        if node.type == "money" and v.kind == "num":
            v = scope.round_to(v, self.money_k, self.rounding.mode)
        return scope.put(f"d:{node.name}", v)

    # -- decisions --------------------------------------------------------------------------------

    def decide(self, node: ir.DecisionNode) -> tuple[str, dict[str, V], V | None]:
        """(static status, output values, fired row ids) for one decision."""
        if node.id in self.results:
            return self.results[node.id]
        if node.id in self.in_progress:  # pragma: no cover - decisions are acyclic
            raise Unsupported(f"decision `{node.id}` depends on itself")
        window = node.in_force
        if (window is not None and not window.contains(self.as_of)) or self.policy.version_at(self.as_of) is None:
            self.results[node.id] = ("not_in_force", {}, None)
            return self.results[node.id]
        self.in_progress.add(node.id)
        scope = self.h
        values: dict[str, V] = {}
        self.partial[node.id] = values
        fired = None
        if node.table is not None:
            outs, fired = self.table(scope, node.table, node.id)
            values.update(zip(node.table.outputs, outs))
        for output in node.outputs:
            if output.expr is not None and output.type == "money":
                v = self.rounded(output.expr, scope, self.money_k, self.rounding.mode)
            elif output.expr is not None:
                v = self.expr(output.expr, scope)
            else:
                v = values[output.short]
            if output.type == "money" and v.kind == "num":
                v = scope.round_to(v, self.money_k, self.rounding.mode)
            values[output.short] = scope.put(f"o:{output.name}", v)
        self.in_progress.discard(node.id)
        self.results[node.id] = ("in_force", values, fired)
        return self.results[node.id]

    # -- tables -----------------------------------------------------------------------------------

    def table(self, scope: Scope, table: ir.Table, decision: str | None = None
              ) -> tuple[list[V], V | None]:
        hit = table.hit
        if hit not in ("F", "U", "A", "P", "C#", "C+", "C<", "C>"):
            raise Unsupported(f"hit policy {hit} (table `{table.owner}`)")
        inputs = [self.expr(e, scope) for e in table.inputs]
        inputs = [scope.settle(v) for v in inputs]
        rows = [(i, r) for i, r in enumerate(table.rows) if r.in_force is None or r.in_force.contains(self.as_of)]
        fb_parts: list[pl.Expr | None] = []
        status_cols: list[pl.Expr] = []  # per row: 0 false, 1 true, 2 unknown
        outs: list[list[V]] = []
        stem = scope.fresh("t")
        for i, row in rows:
            false_parts: list[pl.Expr] = []
            unk_parts: list[pl.Expr] = []
            for col, test in enumerate(row.tests):
                if test.kind == "any":
                    continue
                tv, tu, tfb = self.test(test, inputs[col], scope)
                fb_parts.append(tfb)
                if tu is None:
                    false_parts.append(tv.not_())
                else:
                    false_parts.append(tv.not_() & tu.not_())
                    unk_parts.append(tu)
            false = pl.any_horizontal(false_parts) if false_parts else pl.lit(False)
            unknown = pl.any_horizontal(unk_parts) if unk_parts else pl.lit(False)
            # 0 false, else 1 + unknown (arithmetic: cheaper than a when chain)
            status_cols.append((false.not_().cast(pl.Int8) * (unknown.cast(pl.Int8) + pl.lit(1, dtype=pl.Int8)))
                               .alias(f"{stem}s{i}"))
            outs.append([scope.settle(self.expr(e, scope)) for e in row.outputs])
        if status_cols:
            scope.df = _with(scope.df, status_cols)
        st = {i: pl.col(f"{stem}s{i}") for i, _ in rows}
        defaults = [scope.settle(self.expr(d, scope)) if d is not None else None for d in table.defaults]
        n_out = len(table.outputs)
        kinds = [_kind(t) for t in table.output_types]
        ids = [r.id for r in table.rows]
        any_unknown = pl.any_horizontal([s == 2 for s in st.values()]) if st else pl.lit(False)
        n_true = pl.sum_horizontal([(s == 1).cast(pl.Int32) for s in st.values()]) if st else pl.lit(0)
        all_fired = (pl.concat_list([pl.when(s == 1).then(pl.lit(ids[i])).otherwise(pl.lit(None, dtype=pl.String))
                                     for i, s in st.items()]).list.drop_nulls()
                     if st else pl.lit([], dtype=pl.List(pl.String)))
        for v in inputs:
            fb_parts.append(v.fb)
        bits = [ids[i] for i in st]

        def mask_of(fired_if: dict[int, pl.Expr]) -> V | None:
            """The fired rows as a bit mask (bit k: the k-th row in force), decoded into row ids by
            ``_fired_lists`` once per distinct mask: far cheaper than a list per household."""
            if decision is None or not st or len(st) > 63:
                return None
            one, zero = pl.lit(1, dtype=pl.UInt64), pl.lit(0, dtype=pl.UInt64)
            terms = [pl.when(cond).then(one * (1 << k) if k else one).otherwise(zero)
                     for k, cond in enumerate(fired_if.values())]
            return V("mask", pl.when(matched.fill_null(False)).then(pl.sum_horizontal(terms)).otherwise(zero),
                     labels=tuple(bits))

        if hit == "F":
            first = pl.coalesce([pl.when(s != 0).then(pl.lit(i)) for i, s in st.items()]) if st else pl.lit(None, dtype=pl.Int32)
            first_status = pl.coalesce([pl.when(s != 0).then(s) for s in st.values()]) if st else pl.lit(None, dtype=pl.Int8)
            unknown = (first_status == 2).fill_null(False)
            matched = (first_status == 1).fill_null(False)
            if st:  # computed once here rather than inside every output and mask that reads them
                scope.df = _with(scope.df, [first.alias(f"{stem}first"), unknown.alias(f"{stem}unknown"),
                                            matched.alias(f"{stem}matched")])
                first, unknown, matched = (pl.col(f"{stem}first"), pl.col(f"{stem}unknown"),
                                           pl.col(f"{stem}matched"))
            pick = {i: first == i for i in st}
            fired_expr: Any = pl.when(matched).then(pl.concat_list([
                pl.when(first == i).then(pl.lit(ids[i])) for i in st]).list.drop_nulls()) if st else None
        else:
            unknown = any_unknown
            matched = (n_true > 0) & unknown.not_()
            first = pl.coalesce([pl.when(s == 1).then(pl.lit(i)) for i, s in st.items()]) if st else pl.lit(None, dtype=pl.Int32)
            if st:  # computed once here rather than inside every output and mask that reads them
                scope.df = _with(scope.df, [first.alias(f"{stem}first"), unknown.alias(f"{stem}unknown"),
                                            matched.alias(f"{stem}matched"), n_true.alias(f"{stem}n")])
                first, unknown, matched, n_true = (pl.col(f"{stem}first"), pl.col(f"{stem}unknown"),
                                                   pl.col(f"{stem}matched"), pl.col(f"{stem}n"))
            pick = {i: first == i for i in st}
            fired_expr = all_fired
            if hit == "U":
                fb_parts.append(unknown.not_() & (n_true > 1))
            elif hit in ("A", "P"):
                many = unknown.not_() & (n_true > 1)
                for row_outs in outs:
                    for v in row_outs:
                        if v.unk is not None:
                            fb_parts.append(many & v.unk)
                if hit == "A":
                    for j in range(n_out):
                        chosen = self._select([(pick[i], outs[k][j]) for k, i in enumerate(st)], kinds[j])
                        for k, i in enumerate(st):
                            other = self._align(outs[k][j], chosen.scale)
                            fb_parts.append(many & (st[i] == 1) & other.ne_missing(chosen.val))
                else:
                    first = self._priority_first(table, st, outs, kinds)
                    pick = {i: first == i for i in st}
        # only the outputs of the rows that matched (F: the first) are evaluated, as in the scalar path
        for k, i in enumerate(st):
            evaluated = ((first == i).fill_null(False) & matched) if hit == "F" else (st[i] == 1)
            for v in outs[k]:
                if v.fb is not None:
                    fb_parts.append(evaluated & v.fb)
        no_match = matched.not_() & unknown.not_()
        for d in defaults:
            if d is not None and d.fb is not None:
                fb_parts.append(no_match & d.fb)
        if hit in ("C#", "C+", "C<", "C>"):
            values, fired = self._aggregate_hit(scope, table, st, outs, defaults, unknown, matched, n_true,
                                                fired_expr, fb_parts, decision)
            return values, mask_of({i: st[i] == 1 for i in st}) or fired
        results = []
        for j in range(n_out):
            choices = [(pick[i], outs[k][j]) for k, i in enumerate(st)]
            chosen = self._select(choices, kinds[j])
            default = defaults[j]
            if default is not None:
                scale = max(chosen.scale, default.scale) if chosen.kind == "num" else 0
                dval = self._align(default, scale) if default.kind != "null" else _null_of(kinds[j])
            else:
                scale = chosen.scale
                dval = _null_of(kinds[j])
            val = pl.when(unknown).then(_null_of(kinds[j])).when(matched).then(
                self._align(chosen, scale) if chosen.kind == "num" else chosen.val).otherwise(dval)
            unk_parts2 = [unknown]
            for k, i in enumerate(st):
                row_unk = outs[k][j].unk
                if row_unk is not None:
                    unk_parts2.append(matched & pick[i] & row_unk)
            if default is not None and default.unk is not None:
                unk_parts2.append(matched.not_() & unknown.not_() & default.unk)
            kind = kinds[j] if kinds[j] != "any" else chosen.kind
            results.append(V(kind, val, pl.any_horizontal(unk_parts2).fill_null(False), _or(*fb_parts), scale))
        fired = mask_of({i: (first == i).fill_null(False) for i in st} if hit == "F" else
                        {i: st[i] == 1 for i in st})
        if fired is None and decision is not None and fired_expr is not None:
            fired = V("list", pl.when(matched.fill_null(False)).then(fired_expr).otherwise(
                pl.lit([], dtype=pl.List(pl.String))))
        return results, fired

    def _align(self, v: V, scale: int) -> pl.Expr:
        if v.kind == "num":
            return _rescale(v, scale)
        if v.kind == "null":
            return pl.lit(None, dtype=I128)
        return v.val

    def _select(self, choices: list[tuple[pl.Expr, V]], kind: str) -> V:
        if not choices:
            return _null_v(kind)
        nums = [v for _, v in choices if v.kind == "num"]
        scale = max((v.scale for v in nums), default=0)
        real_kind = nums[0].kind if nums else next((v.kind for _, v in choices if v.kind != "null"), kind)
        expr: Any = None
        for cond, v in choices:
            value = self._align(v, scale) if real_kind == "num" else (v.val if v.kind != "null" else _null_of(real_kind))
            expr = pl.when(cond).then(value) if expr is None else expr.when(cond).then(value)
        assert expr is not None
        return V(real_kind, expr.otherwise(_null_of(real_kind)), None, None, scale)

    def _priority_first(self, table: ir.Table, st: dict[int, pl.Expr], outs: list[list[V]],
                        kinds: list[str]) -> pl.Expr:
        base = max((len(p) for p in table.priorities), default=0) + 1
        keys = []
        for k, (i, s) in enumerate(st.items()):
            rank = pl.lit(0, dtype=pl.Int64)
            for j in range(len(table.outputs)):
                prio = table.priorities[j] if j < len(table.priorities) else ()
                v = outs[k][j]
                if v.kind == "num":
                    cases = [(int(Decimal(p).scaleb(v.scale, context=EXACT)), n) for n, p in enumerate(prio)
                             if isinstance(p, (int, Decimal)) and not isinstance(p, bool)]
                elif v.kind in ("str", "bool"):
                    cases = [(p, n) for n, p in enumerate(prio)]
                else:
                    raise Unsupported(f"P table `{table.owner}` ranking {v.kind} outputs")
                r = pl.lit(len(prio), dtype=pl.Int64)
                for value, n in reversed(cases):
                    r = pl.when(v.val == value).then(pl.lit(n, dtype=pl.Int64)).otherwise(r)
                rank = rank * base + r
            keys.append(pl.when(s == 1).then(rank * 10_000 + i))
        best = pl.min_horizontal(keys)
        return best % 10_000

    def _aggregate_hit(self, scope: Scope, table: ir.Table, st: dict[int, pl.Expr], outs: list[list[V]],
                       defaults: list[V | None], unknown: pl.Expr, matched: pl.Expr, n_true: pl.Expr,
                       fired_expr: pl.Expr | None, fb_parts: list[pl.Expr | None],
                       decision: str | None) -> tuple[list[V], V | None]:
        hit = table.hit
        default = defaults[0] if defaults else None
        if hit == "C#":
            value = V("num", n_true.cast(I128), None, None, 0)
        else:
            vs = [outs[k][0] for k in range(len(st))]
            if any(v.kind != "num" and hit == "C+" for v in vs):
                raise Unsupported(f"C+ over non-numbers (table `{table.owner}`)")
            for (i, s), v in zip(st.items(), vs):
                if v.unk is not None:
                    fb_parts.append((s == 1) & v.unk)
            scale = max((v.scale for v in vs), default=0)
            picked = [pl.when(s == 1).then(self._align(v, scale) if v.kind == "num" else v.val)
                      for (i, s), v in zip(st.items(), vs)]
            val: pl.Expr
            if hit == "C+":
                any_value = pl.any_horizontal([p.is_not_null() for p in picked])
                total = pl.sum_horizontal([p.cast(I128) for p in picked])  # narrow values may sum past Int64
                val = pl.when(any_value).then(total)
            elif hit == "C<":
                val = pl.min_horizontal(picked)
            else:
                val = pl.max_horizontal(picked)
            kind = next((v.kind for v in vs if v.kind != "null"), "num")
            value = V(kind, val, None, None, scale)
        scale = value.scale
        if default is not None and value.kind == "num" and default.kind == "num":
            scale = max(scale, default.scale)
        dval = self._align(default, scale) if default is not None and default.kind != "null" else _null_of(value.kind)
        val = pl.when(unknown).then(_null_of(value.kind)).when(matched).then(
            self._align(value, scale) if value.kind == "num" else value.val).otherwise(dval)
        unk = unknown
        if default is not None and default.unk is not None:
            unk = unk | (matched.not_() & default.unk)
        fired = None
        if decision is not None and fired_expr is not None:
            fired = V("list", pl.when(matched.fill_null(False)).then(fired_expr).otherwise(
                pl.lit([], dtype=pl.List(pl.String))))
        return [V(value.kind, val, unk, _or(*fb_parts), scale)], fired

    def test(self, test: ir.Test, v: V, scope: Scope) -> tuple[pl.Expr, pl.Expr | None, pl.Expr | None]:
        """(passes, unknown, fallback) of one unary test against the column value ``v``."""
        kind = test.kind
        if kind == "any":
            return pl.lit(True), None, None
        if kind == "null":
            return v.val.is_null(), v.unk, v.fb
        if kind == "compare":
            assert test.a is not None
            a = scope.settle(self.expr(test.a, scope))
            c = self.compare(test.op or "==", v, a)
            return c.val.fill_null(False), _or(v.unk, a.unk), _or(v.fb, a.fb)
        if kind == "range":
            assert test.a is not None and test.b is not None
            a = scope.settle(self.expr(test.a, scope))
            b = scope.settle(self.expr(test.b, scope))
            lo = self.compare(">=" if test.low_closed else ">", v, a)
            hi = self.compare("<=" if test.high_closed else "<", v, b)
            return (lo.val.fill_null(False) & hi.val.fill_null(False)), _or(v.unk, a.unk, b.unk), _or(v.fb, a.fb, b.fb)
        subs = [self.test(t, v, scope) for t in test.tests]
        passes = pl.any_horizontal([tv if tu is None else tv & tu.not_() for tv, tu, _ in subs]) if subs else pl.lit(False)
        unk_parts = [tu for _, tu, _ in subs if tu is not None]
        unknown = (passes.not_() & pl.any_horizontal(unk_parts)) if unk_parts else None
        if kind == "not":  # FEEL: not(...) of a null value is null, which is not a match, whatever
            # the tests inside would give (their endpoints may be unknown: still no match)
            known_null = v.val.is_null() if v.unk is None else v.val.is_null() & v.unk.fill_null(False).not_()
            return (passes.not_() & known_null.not_(), None if unknown is None else unknown & known_null.not_(),
                    _or(*(f for _, _, f in subs)))
        return passes, unknown, _or(*(f for _, _, f in subs))

    # -- expressions ------------------------------------------------------------------------------

    def expr(self, e: ir.Expr, scope: Scope) -> V:
        if isinstance(e, ir.Const):
            return self.const(e.value)
        if isinstance(e, ir.AsOf):
            return V("date", pl.lit(self.as_of, dtype=pl.Date))
        if isinstance(e, ir.Ref):
            return self.ref(e.name, scope, e.scope == "member")
        if isinstance(e, ir.Unary):
            v = self.expr(e.operand, scope)
            if e.op == "not":
                return replace(v, val=v.val.not_())
            if e.op == "neg":
                v = scope.settle(v)
                negated = None if v.bounds is None else (-v.bounds[1], -v.bounds[0])
                return _with_bounds(replace(v, val=_int(0, v.narrow) - v.val), negated)
            return v
        if isinstance(e, ir.Binary):
            return self.binary(e, scope)
        if isinstance(e, ir.Compare):
            a = scope.settle(self.expr(e.left, scope))
            b = scope.settle(self.expr(e.right, scope))
            return self.compare(e.op, a, b)
        if isinstance(e, ir.BoolOp):
            vs = [self.expr(o, scope) for o in e.operands]
            stop = e.op == "or"
            decides = [(v.val == stop).fill_null(False) if v.unk is None else
                       ((v.val == stop).fill_null(False) & v.unk.not_()) for v in vs]
            hit = pl.any_horizontal(decides)
            unks = [v.unk for v in vs if v.unk is not None]
            unk = (hit.not_() & pl.any_horizontal(unks)) if unks else None
            # polars' | and & are Kleene's, as FEEL's or/and are: with unknown operands read as
            # null, the fold is `stop` where an operand decides, else null where one is null or
            # unknown, else `not stop` (where the result is unknown, its value is not read). A
            # fold keeps the expression linear in the depth of nested conditions.
            known = [v.val if v.unk is None else pl.when(v.unk).then(pl.lit(None, dtype=pl.Boolean)).otherwise(v.val)
                     for v in vs]
            val = known[0]
            for k in known[1:]:
                val = (val | k) if stop else (val & k)
            # operands are evaluated left to right until one decides
            fb_parts: list[pl.Expr | None] = []
            decided: pl.Expr | None = None
            for v, d in zip(vs, decides):
                if v.fb is not None:
                    fb_parts.append(v.fb if decided is None else decided.not_() & v.fb)
                decided = d if decided is None else decided | d
            return V("bool", val, unk, _or(*fb_parts))
        if isinstance(e, ir.IfElse):
            c = self.expr(e.condition, scope)
            return self._ifelse(c, scope.settle(self.expr(e.then, scope)),
                                scope.settle(self.expr(e.otherwise, scope)))
        if isinstance(e, ir.In):
            v = scope.settle(self.expr(e.item, scope))
            opts = [scope.settle(self.expr(o, scope)) for o in e.options]
            eqs = []
            for o in opts:
                c = self.compare("==", v, o)
                eqs.append(c.val.fill_null(False) if o.unk is None else c.val.fill_null(False) & o.unk.not_())
            found = pl.any_horizontal(eqs) if eqs else pl.lit(False)
            ounks = [o.unk for o in opts if o.unk is not None]
            unk = _or(v.unk, (found.not_() & pl.any_horizontal(ounks)) if ounks else None)
            val = pl.when(v.val.is_null()).then(pl.lit(None, dtype=pl.Boolean)).when(found).then(
                pl.lit(not e.negate)).otherwise(pl.lit(e.negate))
            return V("bool", val, unk, _or(v.fb, *(o.fb for o in opts)))
        if isinstance(e, ir.Call):
            return self.call(e, scope)
        if isinstance(e, ir.Aggregate):
            return self.aggregate(e, scope)
        raise Unsupported(f"IR node {type(e).__name__}")

    def _ifelse(self, c: V, t: V, o: V) -> V:
        true = c.val.fill_null(False)
        if c.unk is not None:
            true = true & c.unk.not_()
        kind = t.kind if t.kind != "null" else o.kind
        scale = max(t.scale, o.scale) if kind == "num" else 0
        tv = self._align(t, scale) if kind == "num" else (t.val if t.kind != "null" else _null_of(kind))
        ov = self._align(o, scale) if kind == "num" else (o.val if o.kind != "null" else _null_of(kind))
        unk_parts = [c.unk]
        if t.unk is not None:
            unk_parts.append(true & t.unk)
        if o.unk is not None:
            unk_parts.append(true.not_() & o.unk)
        # only the branch taken is evaluated (none when the condition is unknown)
        known = c.unk.not_() if c.unk is not None else pl.lit(True)
        fb = _or(c.fb, true & t.fb if t.fb is not None else None,
                 known & true.not_() & o.fb if o.fb is not None else None)
        return V(kind, pl.when(true).then(tv).otherwise(ov), _or(*unk_parts), fb, scale)

    def rounded(self, e: ir.Expr, scope: Scope, k: int, mode: str) -> V:
        """``e`` rounded to ``k`` places; the rounding is pushed into the branches of an ``if``
        (round(a if c else b) = round(a) if c else round(b)) so that a quotient in a branch is
        rounded exactly instead of being held at a fixed scale."""
        if isinstance(e, ir.IfElse):
            c = self.expr(e.condition, scope)
            return self._ifelse(c, scope.settle(self.rounded(e.then, scope, k, mode)),
                                scope.settle(self.rounded(e.otherwise, scope, k, mode)))
        v = self.expr(e, scope)
        if v.kind != "num":
            return v
        return scope.round_to(v, k, mode)

    def const(self, value: Any) -> V:
        if value is None:
            return V("null", pl.lit(None))
        if isinstance(value, bool):
            return V("bool", pl.lit(value, dtype=pl.Boolean))
        if isinstance(value, int):
            return _with_bounds(V("num", _lit_int(value), scale=0), (value, value))
        if isinstance(value, Decimal):
            exponent = value.as_tuple().exponent
            assert isinstance(exponent, int)
            scale = max(0, -exponent)
            raw = int(value.scaleb(scale, context=EXACT))
            return _with_bounds(V("num", _lit_int(raw), scale=scale), (raw, raw))
        if isinstance(value, str):
            return V("str", pl.lit(value, dtype=pl.String))
        if isinstance(value, dt.date):
            return V("date", pl.lit(value, dtype=pl.Date))
        raise Unsupported(f"constant {value!r}")

    def compare(self, op: str, a: V, b: V) -> V:
        unk = _or(a.unk, b.unk)
        fb = _or(a.fb, b.fb)
        if a.kind == "null" or b.kind == "null":
            return V("bool", pl.lit(None, dtype=pl.Boolean), unk, fb)
        if a.kind == "num" and b.kind == "num":
            scale = max(a.scale, b.scale)
            x, y = _rescale(a, scale), _rescale(b, scale)
        elif a.kind == b.kind and a.kind in ("date", "str", "bool"):
            x, y = a.val, b.val
            if a.kind == "bool" and op not in ("==", "!="):
                raise Unsupported("ordering booleans")
        elif op in ("==", "!=") and a.kind != b.kind:
            same = pl.lit(op == "!=")
            return V("bool", pl.when(a.val.is_null() | b.val.is_null()).then(pl.lit(None, dtype=pl.Boolean))
                     .otherwise(same), unk, fb)
        else:
            raise Unsupported(f"comparing {a.kind} with {b.kind}")
        out = {"<": x < y, "<=": x <= y, ">": x > y, ">=": x >= y, "==": x == y, "!=": x != y}[op]
        return V("bool", out, unk, fb)

    def binary(self, e: ir.Binary, scope: Scope) -> V:
        a = self.expr(e.left, scope)
        b = self.expr(e.right, scope)
        op = e.op
        unk = _or(a.unk, b.unk)
        fb = _or(a.fb, b.fb)
        if a.kind == "null" or b.kind == "null":
            return V("num", pl.lit(None, dtype=I128), unk, fb)
        if a.kind != "num" or b.kind != "num":
            raise Unsupported(f"`{op}` on {a.kind} and {b.kind}")
        if op == "/":
            return V("num", pl.lit(None, dtype=I128), unk, fb, 0, (a, b))
        a, b = scope.settle(a), scope.settle(b)
        unk, fb = _or(a.unk, b.unk), _or(a.fb, b.fb)
        if op in ("+", "-"):
            scale = max(a.scale, b.scale)
            x, y = _rescale(a, scale), _rescale(b, scale)
            ab, bb = _scaled_bounds(a, scale), _scaled_bounds(b, scale)
            bounds = None if ab is None or bb is None else (
                (ab[0] + bb[0], ab[1] + bb[1]) if op == "+" else (ab[0] - bb[1], ab[1] - bb[0]))
            if not _narrow(bounds):  # x and y may be narrow while their sum is not
                x, y = x.cast(I128), y.cast(I128)
            val = x + y if op == "+" else x - y
            return _with_bounds(V("num", val, unk, _or(fb, _beyond_context(val, bounds)), scale), bounds)
        if op == "*":
            scale = a.scale + b.scale
            if scale > MAX_SCALE:
                raise Unsupported(f"a product with {scale} decimal places")
            ab, bb = a.bounds, b.bounds
            if ab is not None and bb is not None and max(map(abs, ab)) <= 10 ** 18 and max(map(abs, bb)) <= 10 ** 18:
                corners = [x * y for x in ab for y in bb]  # the operands are known to be small enough
                product = (min(corners), max(corners))
                x, y = (a.val, b.val) if _narrow(product) else (_wide(a), _wide(b))
                return _with_bounds(V("num", x * y, unk, _or(fb, _beyond_context(x * y, product)), scale), product)
            # Int128 products wrap silently: a row whose operands are too large goes to the scalar path
            big = _lit_int(10 ** 18)
            x, y = _wide(a), _wide(b)
            huge = ((x > big) | (x < _lit_int(0) - big) | (y > big) | (y < _lit_int(0) - big)).fill_null(False)
            return V("num", x * y, unk, _or(fb, huge, _beyond_context(x * y, None)), scale)
        if op in ("//", "%"):
            scale = max(a.scale, b.scale)
            x, y = _rescale(a, scale).cast(I128), _rescale(b, scale).cast(I128)
            # the scalar path floors its 34-digit quotient: the same floor while both operands stay
            # below 10^33 units (the quotient is then at least 1/|y| from the next whole number)
            near = CONTEXT_LIMIT // 10
            fb = _or(fb, *(_beyond_context(v, bounds, near) for v, bounds in
                           ((x, _scaled_bounds(a, scale)), (y, _scaled_bounds(b, scale)))))
            zero = y == 0
            if op == "//":
                q = x // y  # floor division for integers and decimals alike, as in the scalar path
                return V("num", pl.when(zero).then(pl.lit(None, dtype=I128)).otherwise(q), unk, fb, 0)
            return V("num", pl.when(zero).then(pl.lit(None, dtype=I128)).otherwise(x % y), unk, fb, scale)
        if op == "**":
            if not (isinstance(e.right, ir.Const) and isinstance(e.right.value, int) and 0 <= e.right.value <= 8):
                raise Unsupported("`**` other than a small whole constant power")
            n = e.right.value
            scale = a.scale * n
            if scale > MAX_SCALE:
                raise Unsupported("a power with too many decimal places")
            val = _lit_int(1)
            for _ in range(n):
                val = val * _wide(a)
            if n == 0:  # x ** 0 is 1, but null ** 0 is null, as null in any arithmetic
                val = pl.when(a.val.is_null()).then(pl.lit(None, dtype=I128)).otherwise(val)
            # a base beyond 37 / n digits would wrap Int128 (the scalar power is exact for whole
            # numbers): its row goes to the scalar path, as does a power the scalar path rounds
            wraps = _beyond_context(a.val, a.bounds, 10 ** (37 // n) + 1) if n else None
            return V("num", val, unk, _or(fb, wraps, _beyond_context(val, None)), scale)
        raise Unsupported(f"operator {op}")

    def call(self, e: ir.Call, scope: Scope) -> V:
        fn = e.function
        if fn == "round_money":
            return self.rounded(e.args[0], scope, self.money_k, self.rounding.mode)
        if fn == "round":
            unit = e.args[1]
            if not isinstance(unit, ir.Const):
                raise Unsupported("round() to a computed unit")
            q = unit.value if isinstance(unit.value, Decimal) else Decimal(str(unit.value))
            return self.rounded(e.args[0], scope, _unit_scale(q), "half_up")
        if fn in ("floor", "ceil"):
            v = self.expr(e.args[0], scope)
            if v.kind == "null":
                return v
            return replace(scope.round_to(v, 0, "floor" if fn == "floor" else "ceiling"), scale=0)
        vs = [scope.settle(self.expr(a, scope)) for a in e.args]
        unk = _or(*(v.unk for v in vs))
        fb = _or(*(v.fb for v in vs))
        anynull = pl.any_horizontal([v.val.is_null() for v in vs])
        if any(v.kind == "null" for v in vs):
            return _null_v(_kind(e.type), unk, fb)
        if fn in ("min", "max"):
            kind = vs[0].kind
            if kind == "num":
                scale = max(v.scale for v in vs)
                cols = [_rescale(v, scale) for v in vs]
                hull = _hull(*(_scaled_bounds(v, scale) for v in vs))
            else:
                scale, hull = 0, None
                cols = [v.val for v in vs]
            pick = pl.min_horizontal(cols) if fn == "min" else pl.max_horizontal(cols)
            out = V(kind, pl.when(anynull).then(_null_of(kind)).otherwise(pick), unk, fb, scale)
            return _with_bounds(out, hull) if kind == "num" else out
        if fn == "abs":
            v = vs[0]
            return V("num", pl.when(v.val < 0).then(_lit_int(0) - v.val).otherwise(v.val), unk, fb, v.scale)
        if fn == "age":
            born = vs[0].val
            y, mo, da = self.as_of.year, self.as_of.month, self.as_of.day
            before = (pl.lit(mo) < born.dt.month()) | ((pl.lit(mo) == born.dt.month()) & (pl.lit(da) < born.dt.day()))
            val = pl.lit(y, dtype=pl.Int64) - born.dt.year().cast(pl.Int64) - before.cast(pl.Int64)
            return _with_bounds(V("num", val, unk, fb, 0), (-10_000, 10_000))  # years 1..9999
        if fn == "days_between":
            a, b = vs[0].val, vs[1].val
            return _with_bounds(V("num", (b - a).dt.total_days().cast(I64), unk, fb, 0), (-3_660_000, 3_660_000))
        if fn == "months_between":
            a, b = vs[0].val, vs[1].val
            months = ((b.dt.year().cast(pl.Int64) - a.dt.year().cast(pl.Int64)) * 12
                      + b.dt.month().cast(pl.Int64) - a.dt.month().cast(pl.Int64))
            bd, ad = b.dt.day(), a.dt.day()
            last = b.dt.month_end().dt.day()
            val = (pl.when((months > 0) & (bd < ad) & (bd != last)).then(months - 1)
                   .when((months < 0) & (bd > ad)).then(months + 1).otherwise(months))
            return _with_bounds(V("num", val.cast(I64), unk, fb, 0), (-120_000, 120_000))
        if fn == "add_days":
            d, n = vs[0], vs[1]
            if n.scale != 0:
                raise Unsupported("add_days with a fractional number of days")
            return V("date", _python_date(d.val + pl.duration(days=n.val.cast(pl.Int64))), unk, fb)
        if fn == "add_months":
            d, n = vs[0], vs[1]
            if n.scale != 0:
                raise Unsupported("add_months with a fractional number of months")
            index = d.val.dt.year().cast(pl.Int64) * 12 + d.val.dt.month().cast(pl.Int64) - 1 + n.val.cast(pl.Int64)
            year, month = index // 12, index % 12 + 1
            in_range = (year >= 1) & (year <= 9999)
            safe_year = pl.when(in_range).then(year).otherwise(pl.lit(2000, dtype=pl.Int64))
            last = pl.date(safe_year, month, 1).dt.month_end().dt.day()
            day = pl.min_horizontal(d.val.dt.day(), last)
            return V("date", pl.when(in_range).then(pl.date(safe_year, month, day)), unk, fb)
        raise Unsupported(f"function {fn}()")

    def aggregate(self, e: ir.Aggregate, scope: Scope) -> V:
        if scope is not self.h:
            raise Unsupported("nested aggregate")
        fn = e.function
        kind = _kind(e.type)
        if "members" not in self.h.df.columns or self.m is None:
            return _null_v(kind, pl.lit(True))
        m = self.m
        where = m.settle(self.expr(e.where, m)) if e.where is not None else None
        body = m.settle(self.expr(e.body, m)) if e.body is not None else None
        if fn == "collect" and body is not None and body.kind == "num" and body.scale:
            # the list would hold the fixed-point integers (1250 for 12.50): left to the scalar
            # path (found by a review of the compiled kernel; no shipped policy collects amounts)
            raise Unsupported("collect of decimal values")
        name = m.fresh("agg")
        cols: dict[str, pl.Expr] = {}
        fbs = _or(where.fb if where else None, body.fb if body else None)
        if fn == "sum" and body is not None:
            fbs = _or(fbs, self._partial_sums_beyond_context(body))
        if where is not None:
            wu = where.unk if where.unk is not None else pl.lit(False)
            wtrue = where.val.fill_null(False) & wu.not_()
            wknown_not_true = where.val.fill_null(False).not_() & wu.not_()
        else:
            wu, wtrue, wknown_not_true = pl.lit(False), pl.lit(True), pl.lit(False)
        segmented = fn in ("sum", "count", "any", "all") and self.segments() is not None
        # with running sums, a column that is statically all-false or all-true is left out
        known_where = where is None or where.unk is None
        if fn in ("any", "all"):
            cols["hit"] = wtrue if fn == "any" else wknown_not_true
            if not (segmented and known_where):
                cols["unk"] = wu
        else:
            if not (segmented and where is None):
                cols["sel"] = wtrue
            if not (segmented and known_where and (body is None or body.unk is None)):
                bu = body.unk if body is not None and body.unk is not None else pl.lit(False)
                cols["unk"] = wu | (wtrue & bu)
            if body is not None:
                cols["body"] = body.val
        if fbs is not None:
            cols["fb"] = fbs

        def c(key: str) -> pl.Expr:
            return pl.col(f"{name}{key}")
        if segmented:
            joined = self._segment_aggregate(fn, cols, body)
        else:
            m.df = _with(m.df, [v.alias(f"{name}{k}") for k, v in cols.items()])
            joined = self._group_aggregate(fn, c, fbs is not None)
        no_members = pl.col("members").is_null()
        out = {}
        unk_col = joined["unk"].fill_null(False)
        if fn == "any":
            hit = joined["hit"].fill_null(False)
            out[f"v:{name}"] = hit
            out[f"u:{name}"] = hit.not_() & unk_col
        elif fn == "all":
            miss = joined["hit"].fill_null(False)
            out[f"v:{name}"] = miss.not_()
            out[f"u:{name}"] = miss.not_() & unk_col
        else:
            val = joined["val"]
            if fn in ("count", "sum"):
                val = val.fill_null(0)
            elif fn == "collect":
                val = val.fill_null([]) if val.dtype != pl.Null else val
            out[f"v:{name}"] = val
            out[f"u:{name}"] = unk_col
        if fbs is not None:
            out[f"f:{name}"] = joined["fb"].fill_null(False)
        scale = body.scale if body is not None and fn in ("sum", "min", "max") else 0
        rkind = kind if fn != "collect" else "list"
        bounds = _column_bounds(out[f"v:{name}"]) if rkind == "num" else None
        if rkind == "num":
            out[f"v:{name}"] = out[f"v:{name}"].cast(I64 if _narrow(bounds) else I128)
        self.h.df = self.h.df.with_columns([series.alias(k) for k, series in out.items()])
        fb = pl.col(f"f:{name}") if fbs is not None and out[f"f:{name}"].any() else None
        unk = pl.col(f"u:{name}") if out[f"u:{name}"].any() else None
        if not self.h.df["members"].has_nulls():  # members given for every household
            return _with_bounds(V(rkind, pl.col(f"v:{name}"), unk, fb, scale), bounds)
        result = pl.when(no_members).then(_null_of(rkind)).otherwise(pl.col(f"v:{name}"))
        return _with_bounds(V(rkind, result, _or(unk, no_members), fb, scale), bounds)

    def _partial_sums_beyond_context(self, body: V) -> pl.Expr | None:
        """A member mask whose households' sums the scalar path may round: it adds members one by
        one in 34 digits, so every partial sum must stay below ``CONTEXT_LIMIT``. With at most
        ``k`` members a household, members below ``CONTEXT_LIMIT / k`` guarantee it (None when
        the body's bounds prove every member is)."""
        assert self.m is not None
        b = body.bounds
        everyone = CONTEXT_LIMIT // max(self.m.df.height, 1)  # no household has more members than this
        if b is not None and -everyone < b[0] and b[1] < everyone:
            return None
        segments = self.segments()
        counts = segments[2] if segments is not None else self.m.df["_hh"].unique_counts()
        most = int(counts.max() or 1)  # type: ignore[arg-type]
        limit = CONTEXT_LIMIT // max(most, 1)
        return _beyond_context(body.val, b, limit)

    def segments(self) -> tuple[pl.Series, pl.Series, pl.Series] | None:
        """(start, end, count) of each household's members in the members table, which lists
        them in household order (``_hh`` sorted); None when it does not."""
        if not hasattr(self, "_segments"):
            assert self.m is not None
            owner = self.m.df["_hh"]
            self._segments: tuple[pl.Series, pl.Series, pl.Series] | None = None
            if self.sizes is not None:  # given by the population's builder (read_chunk)
                counts = self.sizes.cast(I64)
                if len(counts) != self.h.df.height or counts.sum() != owner.len() or (counts < 0).any():
                    raise ValueError(f"Split.sizes does not match the members table: {len(counts)} sizes "
                                     f"summing to {counts.sum()} for {self.h.df.height} cases and "
                                     f"{owner.len()} members")
                ends = counts.cum_sum()
                self._segments = (ends - counts, ends, counts)
            elif owner.is_sorted():
                runs = owner.rle()  # one run per household that has members
                counts = pl.repeat(0, self.h.df.height, dtype=I64, eager=True).scatter(
                    runs.struct.field("value"), runs.struct.field("len").cast(I64))
                ends = counts.cum_sum()
                self._segments = (ends - counts, ends, counts)
        return self._segments

    def _segment_aggregate(self, fn: str, cols: dict[str, pl.Expr], body: V | None) -> pl.DataFrame:
        """sum / count / any / all over members, one row per household: one query computes the
        running sum of each needed column over the members table, and each household's total is
        the difference of the running sums at the end of its members and before the first (a
        linear pass; no grouping, no join. Gathering outside the query: twice as fast here)."""
        segments = self.segments()
        assert segments is not None and self.m is not None
        starts, ends, counts = segments
        members = self.m.df.height

        def running(x: pl.Expr, dtype: Any, name: str) -> pl.Expr:
            if not x.meta.root_names():  # a constant: one value per member
                x = pl.repeat(x, members)
            return x.fill_null(False if dtype == pl.Boolean else 0).cast(I64 if dtype == pl.Boolean else dtype) \
                .cum_sum().alias(name)

        exprs = [running(cols[k], pl.Boolean, k) for k in ("unk", "fb", "hit") if k in cols]
        if fn == "count" and "sel" in cols:
            exprs.append(running(cols["sel"], pl.Boolean, "val"))
        elif fn == "sum":
            assert body is not None
            picked = cols["body"] if "sel" not in cols else pl.when(cols["sel"]).then(cols["body"]).otherwise(0)
            # the running sum over the whole chunk must not wrap: Int64 only when it provably fits
            b = body.bounds
            whole = None if b is None else members * max(abs(b[0]), abs(b[1]))
            exprs.append(running(picked, I64 if whole is not None and whole <= NARROW else I128, "val"))
        totals: dict[str, pl.Series] = {}
        if exprs and members:
            sums = self.m.df.lazy().select(exprs).collect()
            # per household: the running sum at its last member minus the one just before its
            # first (none for the first household); 0 without members
            at_end = sums[(ends - 1).clip(0, members - 1)]
            before = sums[(starts - 1).clip(0, members - 1)]
            has, inner = counts > 0, starts > 0
            totals = pl.select([pl.when(has).then(at_end[c] - pl.when(inner).then(before[c]).otherwise(0))
                                .otherwise(0).alias(c) for c in sums.columns]).to_dict()
        elif exprs:  # no members at all
            totals = {e.meta.output_name(): pl.repeat(0, len(counts), dtype=I64, eager=True) for e in exprs}
        out: dict[str, pl.Series] = {k: totals[k] > 0 for k in ("unk", "fb", "hit") if k in totals}
        out.setdefault("unk", pl.repeat(False, self.h.df.height, eager=True))
        if fn in ("count", "sum"):
            out["val"] = totals.get("val", counts)
        return pl.DataFrame(out)

    def _group_aggregate(self, fn: str, c: Any, has_fb: bool) -> pl.DataFrame:
        """Any aggregate over members, one row per household, by grouping on ``_hh`` and a join."""
        assert self.m is not None
        aggs = [c("unk").any().alias("unk")]
        if has_fb:
            aggs.append(c("fb").any().alias("fb"))
        if fn in ("any", "all"):
            aggs.append(c("hit").any().alias("hit"))
        elif fn == "count":
            aggs.append(c("sel").sum().cast(I128).alias("val"))
        elif fn == "collect":
            aggs.append(c("body").filter(c("sel")).alias("val"))
        else:
            picked = c("body").filter(c("sel"))
            if fn == "sum":
                aggs.append(picked.sum().alias("val"))
            elif fn == "min":
                aggs.append(picked.min().alias("val"))
            else:
                aggs.append(picked.max().alias("val"))
        segments = self.segments()
        if segments is None:
            grouped = self.m.df.group_by("_hh", maintain_order=True).agg(aggs)
            return self.h.df.select("_hh").join(grouped, on="_hh", how="left", maintain_order="left")
        # members in household order: grouping on a key flagged sorted is about twice as fast, and
        # the groups are the households with members, in order: placed by position, no join
        grouped = (self.m.df.lazy().with_columns(pl.col("_hh").set_sorted())
                   .group_by("_hh", maintain_order=True).agg(aggs).collect())
        has = segments[2] > 0
        values = grouped.drop("_hh")
        if has.all():  # a group for every household, in order
            return values
        index = pl.select(pl.when(has).then(has.cast(I64).cum_sum() - 1)).to_series()  # null: no members
        return values.select(pl.all().gather(index))


# --- population layout -------------------------------------------------------------------------


def _fits_column(value: Decimal | int, scale: int) -> bool:
    """Whether ``value`` is held exactly by a ``Decimal(38, scale)`` column."""
    v = value if isinstance(value, Decimal) else Decimal(value)
    exponent = v.as_tuple().exponent
    if not isinstance(exponent, int) or -exponent > scale:
        return False
    whole = v.adjusted() + 1 if v else 0  # digits before the point
    return max(whole, 0) + scale <= 38


def _scale_of(values: Sequence[Decimal | None]) -> int:
    scale = 0
    for v in values:
        if v is not None:
            exponent = v.as_tuple().exponent
            if isinstance(exponent, int):
                scale = max(scale, -exponent)
    return scale


def _dtype(node: ir.InputNode, scale: int) -> pl.DataType:
    if node.type in ("money", "decimal"):
        return pl.Decimal(38, scale)
    if node.type == "integer":
        return pl.Int64()
    if node.type == "boolean":
        return pl.Boolean()
    if node.type == "date":
        return pl.Date()
    if node.type == "list":
        return pl.List(pl.String)
    return pl.String()


def facts_to_population(engine: Any, facts: Sequence[Any], entity: str = "household") -> pl.DataFrame:
    """The documented layout (docs/population.md) for a list of facts dicts, checked as ``decide``
    does. A decimal with more digits than a population holds (``intake.fits_digits``), or text
    with a lone surrogate, is left unknown here: ``decide_batch`` decides such a case with the
    scalar path."""
    return _facts_population(engine, facts, entity)[0]


def _facts_population(engine: Any, facts: Sequence[Any], entity: str) -> tuple[pl.DataFrame, list[int]]:
    """``facts_to_population``, and the positions of the cases whose decimals or text it left
    unknown (``decide_batch`` decides them with the scalar path)."""
    from .intake import beyond_digits, beyond_utf8

    policy: ir.CompiledPolicy = engine.policy
    read = []
    bad: list[Diagnostic] = []  # every malformed case, by position
    for i, f in enumerate(facts):
        try:
            read.append(read_facts(policy.inputs, f, entity))
        except FactsError as exc:
            bad.extend(_at(i, exc))
    if bad:
        raise FactsError(bad)
    too_long: list[int] = []
    for i, (values, members) in enumerate(read):
        # decimals beyond the digits a column holds, text with a lone surrogate (which no column holds)
        found = [*beyond_digits(policy.inputs, values, members), *beyond_utf8(policy.inputs, values, members)]
        for node, _, row in found:
            row[node.name] = None
        if found:
            too_long.append(i)
    return read_to_population(policy, read, entity), too_long


def read_to_population(policy: ir.CompiledPolicy, read: Sequence[tuple[dict[str, Any], list[dict[str, Any]] | None]],
                       entity: str = "household") -> pl.DataFrame:
    """The documented layout for facts already read by the intake (``intake.read_facts``:
    (entity values, member values or None) per case)."""
    columns: dict[str, pl.Series] = {}
    for node in policy.inputs:
        if node.entity == entity:
            columns[node.name] = _input_series(node, [r[0].get(node.name) for r in read])
    if entity == "household":
        owner: list[int] = []
        flat: list[dict[str, Any]] = []
        for i, r in enumerate(read):
            for row in r[1] or ():
                owner.append(i)
                flat.append(row)
        fields = {node.name: _input_series(node, [row.get(node.name) for row in flat])
                  for node in policy.inputs if node.entity == "member"}
        if not fields:  # a policy without member inputs still counts members
            fields["_member"] = pl.Series("_member", [True] * len(flat), dtype=pl.Boolean)
        dtype = pl.List(pl.Struct({name: s.dtype for name, s in fields.items()}))
        grouped = (pl.DataFrame([pl.Series("_hh", owner, dtype=pl.Int64), *fields.values()])
                   .select("_hh", pl.struct(list(fields)).alias("members"))
                   .group_by("_hh", maintain_order=True).agg("members"))
        given = pl.Series("given", [r[1] is not None for r in read], dtype=pl.Boolean)
        members = (pl.DataFrame({"_hh": pl.Series(range(len(read)), dtype=pl.Int64), "given": given})
                   .join(grouped, on="_hh", how="left", maintain_order="left")
                   .select(pl.when(pl.col("given") & pl.col("members").is_null())
                           .then(pl.lit([], dtype=dtype)).otherwise(pl.col("members")).alias("members")))
        columns["members"] = members["members"].cast(dtype)
    return pl.DataFrame(columns)


def _input_series(node: ir.InputNode, values: list[Any]) -> pl.Series:
    """Values of one input as read by the intake, as a column of its layout type."""
    if node.type in ("money", "decimal"):
        return _decimal_series(node.name, values)
    if node.type == "list":
        values = [list(v) if v is not None else None for v in values]
    return pl.Series(node.name, values, dtype=_dtype(node, 0))


def _decimal_series(name: str, values: list[Decimal | None]) -> pl.Series:
    """Decimals as an exact ``Decimal(38, s)`` column, ``s`` the most places any of them has.
    Through fixed-notation text, which polars parses about ten times faster than it converts
    ``Decimal`` objects; a value that does not fit takes the direct conversion (and its error)."""
    text = pl.Series(name, [None if v is None else format(v, "f") for v in values], dtype=pl.String)
    point = text.str.find(".", literal=True)
    places = (text.str.len_bytes().cast(pl.Int64) - point.cast(pl.Int64) - 1).max() if point.is_not_null().any() else 0
    scale = int(places or 0)  # type: ignore[arg-type]
    if scale <= MAX_SCALE:
        try:
            return text.cast(pl.Decimal(38, scale))
        except pl.exceptions.PolarsError:
            pass
    return pl.Series(name, values, dtype=pl.Decimal(38, _scale_of(values)))


def _num_column(series: pl.Series) -> tuple[pl.Series, int]:
    """A numeric input column as fixed-point integers and its scale (exact): Int64 when every
    value is within ±NARROW, else Int128."""
    dtype = series.dtype
    if isinstance(dtype, pl.Decimal):
        raw, scale = series.to_physical(), dtype.scale or 0
    elif dtype.is_integer() or dtype == pl.Null:
        raw, scale = series, 0
    else:
        # floats and text: exactly what was typed (a float's shortest repr), as the scalar intake reads it
        values = [None if v is None else Decimal(str(v).strip()) for v in series.to_list()]
        scale = _scale_of(values)
        raw = pl.Series(series.name, [None if v is None else int(v.scaleb(scale, context=EXACT)) for v in values], dtype=I128)
    narrow = raw.cast(I64, strict=False)  # a value outside Int64 becomes null
    if narrow.null_count() == raw.null_count() and _narrow(_column_bounds(narrow)):
        return narrow, scale
    return raw.cast(I128), scale


def _read_checked(series: pl.Series, node: ir.InputNode, rows: pl.Series, member: pl.Series | None,
                  errors: list[Diagnostic]) -> pl.Series:
    """A caller's column read and checked as ``decide`` reads and checks facts (through
    ``batch_intake.read_column``: any dtype, the values ``coerce`` refuses reported); the
    column in the dtype this module reads, refused values null.

    ``rows``: each row's case; ``member``: for a member column, each member's position in its
    household, or (a members table without ``_m``) ``rows`` itself, from which it is counted."""
    from .batch_intake import read_column

    if _plainly_valid(series, node):
        return series
    values, refused = read_column(series, node)
    for i, message in refused[:20]:
        errors.append(_fact_error(rows, member, i, ".".join(node.path), message, node.label.en))
    return values


def _plainly_valid(series: pl.Series, node: ir.InputNode) -> bool:
    """Whether a column already in the dtype this module reads holds only values ``coerce``
    accepts, as its bounds show (the common case, two reductions; else ``read_column`` checks
    it value by value)."""
    dtype = series.dtype
    if node.type in ("money", "decimal") and isinstance(dtype, pl.Decimal):
        raw = series.to_physical()
        lo, hi = raw.min(), raw.max()
        if lo is None or hi is None:
            return True
        limit = 10 ** (DECIMAL_DIGITS + (dtype.scale or 0))
        signed = node.type == "decimal" or node.path[-1] in _SIGNED_MONEY
        return (dtype.scale or 0) <= DECIMAL_DIGITS and -limit < int(lo) and int(hi) < limit and (  # type: ignore[arg-type]
            signed or int(lo) >= 0)  # type: ignore[arg-type]
    if node.type == "integer" and dtype == pl.Int64:
        lo = series.min()
        return lo is None or int(lo) >= -INTEGER_LIMIT  # type: ignore[arg-type]
    if node.type == "date" and dtype == pl.Date:  # from year 1, as Python (and decide) holds dates
        first = series.to_physical().min()
        return first is None or int(first) >= -719162  # type: ignore[arg-type]
    return (node.type == "boolean" and dtype == pl.Boolean) or (node.type == "text" and dtype == pl.String)


def _fact_error(rows: pl.Series, member: pl.Series | None, i: int, path: str, message: str,
                hint: str | None = None) -> Diagnostic:
    position = None if member is None else (
        member[i] if member is not rows else int((rows[:i] == rows[i]).sum()))  # members before it
    where = f"[{rows[i]}]" + (f".members[{position}]" if member is not None else "") + (f".{path}" if path else "")
    return make("PE401", f"{where}: {message}", path=where, hint=hint)


def _quick_num(series: pl.Series, node: ir.InputNode, convert: bool = True) -> tuple[pl.Series | None, int] | None:
    """A decimal column ``_plainly_valid`` accepts, as ``_num_column`` gives it when it is
    narrow, in one pass (``kernel.narrow_decimal``); None: the column takes the general path.
    ``convert=False``: the check alone (the column is None)."""
    if node.type not in ("money", "decimal") or not isinstance(series.dtype, pl.Decimal):
        return None
    found = kernel.narrow_decimal(series, convert)
    if found is None:
        return None
    values, lo, hi = found
    scale = series.dtype.scale or 0
    limit = 10 ** (DECIMAL_DIGITS + scale)
    signed = node.type == "decimal" or node.path[-1] in _SIGNED_MONEY
    if scale > DECIMAL_DIGITS or not (-limit < lo and hi < limit and (signed or lo >= 0)) or not _narrow((lo, hi)):
        return None
    return values, scale


def _check_split(split: Split, fast: bool = False) -> tuple[pl.Series, pl.Series] | None:
    """A caller's ``Split`` (``checked=False``) is consistent, or ``ValueError`` says how not: a
    member's ``_hh`` that names no case (or a negative one, which would be read from the end)
    would give its facts to another household.

    ``fast`` (a large batch with household sizes): the members' owners are left to be checked
    by the kernel as it reads them (``kernel.decide``, else ``kernel.owners_match``); returned:
    (each member's ``_hh``, the sizes). This check, run again, then gives its own error."""
    if split.households.width and split.households.height != split.height:
        raise ValueError(f"Split.height is {split.height} but the households table has {split.households.height} rows")
    mem = split.members
    if mem is None:
        return None
    if "_hh" not in mem.columns or not mem.schema["_hh"].is_integer():
        raise ValueError("Split.members needs an integer `_hh` column: each member's household, 0-based")
    owner = mem["_hh"]
    if fast and split.sizes is not None and len(split.sizes) == split.height:
        return owner, split.sizes
    if owner.has_nulls() or (len(owner) and (int(owner.min()) < 0 or int(owner.max()) >= split.height)):  # type: ignore[arg-type]
        raise ValueError(f"Split.members `_hh` must name a household, 0 to {split.height - 1}, on every member")
    if split.sizes is not None and len(split.sizes) == split.height and int(split.sizes.sum() or 0) == len(owner):
        # members in household order, and each household's first and last member its own: then
        # every member between them is too
        sizes = split.sizes.cast(pl.Int64)
        ends = sizes.cum_sum()
        has = sizes > 0
        households = pl.int_range(split.height, dtype=pl.Int64, eager=True).filter(has)
        owner = owner.cast(pl.Int64)
        if not (owner.is_sorted() and owner.gather((ends - sizes).filter(has)).equals(households, check_names=False)
                and owner.gather((ends - 1).filter(has)).equals(households, check_names=False)):
            raise ValueError("Split.sizes does not match the members table's `_hh` (members in household order)")
    return None


def _members_of(table: pl.DataFrame, rows: pl.Series, errors: list[Diagnostic]) -> pl.Series | None:
    """A caller's ``members`` column as a list of structs, or None when no member can be read
    from it (every row's members are then unknown); each value ``decide`` refuses (members that
    are not a list, a member that is not a mapping) is reported as it reports it."""
    column = table["members"]
    if isinstance(column.dtype, pl.Array):
        column = column.arr.to_list()
    if column.dtype == pl.Null:
        return None
    if not isinstance(column.dtype, pl.List):
        for i in column.is_not_null().arg_true().head(20).to_list():
            errors.append(_fact_error(rows, None, i, "members", "members must be a list"))
        return None
    if isinstance(column.dtype.inner, pl.Struct):
        nulls = column.list.eval(pl.element().is_null())
        odd = nulls.list.arg_max()  # the first null member, if any
        has = nulls.list.any().fill_null(False)
    else:  # a list of numbers, texts or nulls: no member is a mapping
        odd = pl.repeat(0, len(column), dtype=pl.UInt32, eager=True)
        has = (column.list.len() > 0).fill_null(False)
    for i in has.arg_true().head(20).to_list():
        errors.append(_fact_error(rows, None, i, f"members[{odd[i]}]", f"members[{odd[i]}] must be a mapping"))
    return column if isinstance(column.dtype.inner, pl.Struct) and not has.any() else None


@dataclass(frozen=True)
class Split:
    """A population as two tables (docs/population.md, "two tables").

    ``households``: one row per case, a column per household input (by input name), and
    ``members``: null where the household's members are not given (any other value: given).
    ``members``: one row per member, in household order: ``_hh`` the 0-based position of its
    household in ``households``, optionally ``_m`` its position among the household's members
    (counted when absent), a column per member input; None when no household gives members.
    ``height`` is the number of cases. ``checked``: every value was already checked as
    ``decide`` checks it (``batch_intake.read_chunk`` does), so ``decide_batch`` does not check
    again.
    """

    households: pl.DataFrame
    members: pl.DataFrame | None
    height: int
    checked: bool = False
    #: the number of members of each household, when the builder knows it (saves counting)
    sizes: pl.Series | None = None

    def rows(self, index: list[int]) -> list[dict[str, Any]]:
        """The cases at ``index`` as dicts in the one-table layout (members as lists of dicts)."""
        picked = self.households[index].to_dicts() if self.households.width else [{} for _ in index]
        if self.members is None or "members" not in self.households.columns:
            for row in picked:
                row["members"] = None
            return picked
        wanted = pl.Series(index, dtype=pl.Int64)
        found = self.members.filter(pl.col("_hh").is_in(wanted))  # in household order
        by_household: dict[int, list[dict[str, Any]]] = {}
        for m in found.to_dicts():
            hh = m.pop("_hh")
            m.pop("_m", None)
            by_household.setdefault(hh, []).append(m)
        for i, row in zip(index, picked):
            row["members"] = by_household.get(i, []) if row.get("members") is not None else None
        return picked


def _input_column(s: pl.Series, node: ir.InputNode, scope: str, scales: dict[tuple[str, str], int]
                  ) -> pl.Series:
    if node.type in ir.NUMERIC:
        s, scales[(scope, node.name)] = _num_column(s)
    elif node.type == "date" and s.dtype == pl.String:
        s = s.str.to_date()
    elif s.dtype == pl.Null:
        s = s.cast(_dtype(node, 0))
    return s


@dataclass
class Deferred:
    """A decimal input column of a large batch, kept as given (``Decimal``) for the compiled
    kernel, which reads its Arrow buffer and checks each value as it goes; converted and
    checked here (``settle``) only when the polars plan, or a value the kernel flags, needs it."""

    node: ir.InputNode
    series: pl.Series
    rows: pl.Series
    member: pl.Series | None
    checked: bool

    @property
    def scale(self) -> int:
        assert isinstance(self.series.dtype, pl.Decimal)
        return self.series.dtype.scale or 0

    def settle(self, errors: list[Diagnostic]) -> tuple[pl.Series, int]:
        """The column as ``_prepare`` gives it (fixed-point integers) and its scale; its refused
        values reported in ``errors``."""
        quick = _quick_num(self.series, self.node)
        if quick is not None:
            assert quick[0] is not None
            return quick[0], quick[1]
        raw = self.series if self.checked else _read_checked(self.series, self.node, self.rows, self.member, errors)
        scales: dict[tuple[str, str], int] = {}
        column = _input_column(raw, self.node, "deferred", scales)
        return column, scales[("deferred", self.node.name)]


def _deferrable(series: pl.Series, node: ir.InputNode) -> bool:
    """A money or decimal column the kernel can read as it is: decimal128 of at most 18 places."""
    return (node.type in ("money", "decimal") and isinstance(series.dtype, pl.Decimal)
            and (series.dtype.scale or 0) <= DECIMAL_DIGITS and (series.dtype.precision or 38) <= 38)


def _settle(batch: Batch, deferred: dict[tuple[str, str], Deferred], keys: Any, check_only: bool = False) -> None:
    """Convert (and check) the deferred columns ``keys`` into the batch's frames. ``check_only``
    (nothing reads them: the kernel decided every decision): a column whose values all pass,
    as its bounds show, is left as it is; the others are converted, so that their refused
    values are reported."""
    errors: list[Diagnostic] = []
    for key in list(keys):
        later = deferred[key]
        if check_only and (later.checked or _quick_num(later.series, later.node, convert=False) is not None):
            continue
        column, scale = deferred.pop(key).settle(errors)
        scope = batch.h if key[0] == "entity" else batch.m
        assert scope is not None
        if not errors:
            scope.df = scope.df.with_columns(column.alias(f"in:{key[1]}"))
            batch.scales[key] = scale
    if errors:
        raise FactsError(errors)


def _prepare(policy: ir.CompiledPolicy, population: pl.DataFrame | Split, entity: str,
             deferred: dict[tuple[str, str], Deferred] | None = None,
             owners: list[tuple[pl.Series, pl.Series]] | None = None
             ) -> tuple[pl.DataFrame, pl.DataFrame | None, dict[tuple[str, str], int]]:
    """The population's frames for a batch (``_hh`` and ``in:<input>`` columns, checked and
    converted) and the scale of each numeric column. With ``deferred`` (a large batch), decimal
    columns are left as given and listed there (see ``Deferred``), and with ``owners`` the check
    of a ``Split``'s members' owners is left to the kernel (``_check_split``)."""
    scales: dict[tuple[str, str], int] = {}
    errors: list[Diagnostic] = []
    table = population.households if isinstance(population, Split) else population
    checked = isinstance(population, Split) and population.checked
    # a large batch: decimal columns are left for the kernel to read and check (Deferred)
    fast = population.height >= kernel.MIN_ROWS and kernel.available()
    if isinstance(population, Split) and not checked:
        pending = _check_split(population, fast and owners is not None)
        if pending is not None and owners is not None:
            owners.append(pending)
    cols = [pl.Series("_hh", range(population.height), dtype=pl.Int64)]
    for node in policy.inputs:
        if node.entity != entity or node.name not in table.columns:
            continue
        if fast and deferred is not None and _deferrable(table[node.name], node):
            later = deferred[("entity", node.name)] = Deferred(node, table[node.name], cols[0], None, checked)
            cols.append(later.series.alias(f"in:{node.name}"))
            scales[("entity", node.name)] = later.scale
            continue
        raw = table[node.name] if checked else _read_checked(table[node.name], node, cols[0], None, errors)
        cols.append(_input_column(raw, node, "entity", scales).alias(f"in:{node.name}"))
    members_df = None
    listed = None
    if entity == "household" and "members" in table.columns and not isinstance(population, Split):
        listed = _members_of(table, cols[0], errors)
    if entity == "household" and "members" in table.columns:
        cols.append(table["members"] if listed is None else listed)
        if isinstance(population, Split) or listed is None:
            given = population.members if isinstance(population, Split) else None
            mem = given if given is not None else pl.DataFrame(
                {"_hh": pl.Series([], dtype=pl.Int64), "_m": pl.Series([], dtype=pl.Int64)})
            unnested: pl.DataFrame | None = mem
            fields = mem.columns
            owner = mem["_hh"]
            position = mem["_m"] if "_m" in mem.columns else owner  # counted from _hh when needed
        else:
            exploded = (pl.DataFrame([cols[0], listed])
                        .filter(pl.col("members").list.len() > 0)
                        .explode("members")
                        .with_columns(_m=pl.int_range(pl.len()).over("_hh")))
            fields = exploded["members"].struct.fields if exploded.height else [
                f.name for f in table.schema["members"].inner.fields]  # type: ignore[attr-defined]
            unnested = exploded["members"].struct.unnest() if exploded.height else None
            owner, position = exploded["_hh"], exploded["_m"]
        mcols = [owner]
        for node in policy.inputs:
            if node.entity != "member" or node.name not in fields:
                continue
            s = unnested[node.name] if unnested is not None else pl.Series(node.name, [], dtype=pl.Null)
            if fast and deferred is not None and _deferrable(s, node):
                later = deferred[("member", node.name)] = Deferred(node, s, owner, position, checked)
                mcols.append(later.series.alias(f"in:{node.name}"))
                scales[("member", node.name)] = later.scale
                continue
            if not checked:
                s = _read_checked(s, node, owner, position, errors)
            mcols.append(_input_column(s, node, "member", scales).alias(f"in:{node.name}"))
        members_df = pl.DataFrame(mcols)
    if errors:
        if deferred or owners:  # checked here after all: every error, in order, as without them
            return _prepare(policy, population, entity)
        raise FactsError(errors)
    return pl.DataFrame(cols), members_df, scales


# --- the entry point ---------------------------------------------------------------------------


def _to_facts(policy: ir.CompiledPolicy, row: dict[str, Any], entity: str) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    for node in policy.inputs:
        if node.entity == entity and row.get(node.name) is not None:
            _set_path(facts, node.path, row[node.name])
    if entity == "household" and row.get("members") is not None:
        members = []
        for m in row["members"]:
            out: dict[str, Any] = {}
            for node in policy.inputs:
                if node.entity == "member" and m is not None and m.get(node.name) is not None:
                    _set_path(out, node.path, m[node.name])
            members.append(out)
        facts["members"] = members
    return facts


def _set_path(target: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for part in path[:-1]:
        target = target.setdefault(part, {})
    target[path[-1]] = value


def unsupported(engine: Any, as_of: dt.date | str, entity: str = "household") -> dict[str, str]:
    """Decisions the vector path cannot compile on ``as_of`` (their rows go to the scalar path)."""
    day = as_date(as_of)
    population = facts_to_population(engine, [{"members": []}], entity) if entity == "household" \
        else facts_to_population(engine, [{}], entity)
    reasons: dict[str, str] = {}
    _run(engine, population, day, entity, None, reasons)
    return reasons


#: a decision the batch path cannot compute (Unsupported), or errors of polars (or of Python ints
#: too large for it) on values its plan did not foresee: its rows go to the scalar path
#: (polars' PanicException derives from BaseException)
_TO_SCALAR: tuple[type[BaseException], ...] = (Unsupported, pl.exceptions.PolarsError, OverflowError,
                                               pl.exceptions.PanicException)


def decide_batch(engine: Any, population: pl.DataFrame | Split | Sequence[Any], as_of: dt.date | str,
                 decisions: list[str] | None = None, entity: str = "household",
                 errors: list[tuple[int, PolicyEngineError]] | None = None) -> pl.DataFrame:
    """Decide every case of ``population`` at once; equal to ``engine.decide`` case by case.

    ``population`` is a polars DataFrame in the layout of docs/population.md, or a list of facts
    dicts (converted with ``facts_to_population``). The result has one row per case, in order:
    ``<id>.status``, ``<id>.<output>`` for every output, ``<id>.fired_rows`` (the ids of the rows
    that fired in the decision's table), and ``_fallback``: True where the row was decided by the
    scalar path (see ``unsupported`` for decisions that are never vectorised).

    A case ``decide`` refuses although its facts are well formed (a computation beyond 34 digits,
    a whole number beyond 64 bits) raises ``FactsError`` naming its position, and a case the policy
    itself cannot decide (two rows of a U table match it, PE301; rows of an A table disagree,
    PE302) ``PolicyError``, as ``decide`` does; with ``errors``, each such case is appended there
    as (position, error) instead, its row left null, and the other rows are decided.
    """
    day = as_date(as_of)
    facts_list = None
    scalar: list[int] = []
    if not isinstance(population, (pl.DataFrame, Split)):
        facts_list = list(population)
        population, scalar = _facts_population(engine, facts_list, entity)
    refused: list[tuple[int, PolicyEngineError]] = []
    result = _run(engine, population, day, entity, decisions, {}, facts_list, scalar, refused)
    if refused and errors is None:
        found = [d for i, exc in refused for d in _at(i, exc)]
        raise PolicyError(found) if any(isinstance(exc, PolicyError) for _, exc in refused) else FactsError(found)
    if errors is not None:
        errors.extend(refused)
    return result


def _at(i: int, exc: PolicyEngineError) -> list[Diagnostic]:
    """``exc``'s diagnostics as those of case ``i`` of a batch (``[i].path: ...`` as a frame's
    rows are named, path ``[i].path``)."""
    return [make(d.code, f"[{i}].{d.message}" if d.path and d.message.startswith(d.path) else f"[{i}] {d.message}",
                 path=f"[{i}]" + (f".{d.path}" if d.path else ""), hint=d.hint) for d in exc.diagnostics]


def _run(engine: Any, population: pl.DataFrame | Split, day: dt.date, entity: str, decisions: list[str] | None,
         reasons: dict[str, str], facts_list: list[Any] | None = None, scalar: Sequence[int] = (),
         refused: list[tuple[int, PolicyEngineError]] | None = None) -> pl.DataFrame:
    """``decide_batch``; the cases at positions ``scalar`` (whose facts the population could not
    hold: they are in ``facts_list``) are decided by the scalar path."""
    policy: ir.CompiledPolicy = engine.policy
    wanted = engine.select(entity, decisions)
    deferred: dict[tuple[str, str], Deferred] = {}
    owners: list[tuple[pl.Series, pl.Series]] = []  # a Split's members' owners, to be checked
    entity_df, members_df, scales = _prepare(policy, population, entity, deferred, owners)
    batch = Batch(engine, entity_df, members_df, day, entity, scales)
    if isinstance(population, Split) and population.sizes is not None and members_df is not None:
        batch.sizes = population.sizes
    n = population.height
    columns: list[pl.Series] = []
    fallback = pl.repeat(False, n, dtype=pl.Boolean, eager=True).alias("_fallback")
    per_decision: dict[str, pl.Series] = {}
    specs: list[tuple[ir.DecisionNode, list[tuple[str, str, int]]]] = []
    vouched: set[tuple[str, str]] = set()  # deferred columns the kernel read and found valid
    try:
        compiled = _kernel_frames(batch, wanted, n, deferred, vouched, owners)
        if owners and not kernel.owners_match(*owners.pop()):  # not checked by a kernel
            raise kernel.OwnersMismatch
    except kernel.OwnersMismatch:
        if isinstance(population, Split):
            _check_split(population)  # its own error, naming what is wrong
        raise
    # the polars plan reads converted columns; a column no kernel vouched for is checked here
    plan = any(node.id not in compiled and (node.in_force is None or node.in_force.contains(day)) for node in wanted)
    _settle(batch, deferred, list(deferred) if plan else [k for k in deferred if k not in vouched], check_only=not plan)
    for node in wanted:
        if node.id in compiled:
            frame, outs = compiled[node.id]
            columns.extend(frame[c] for c in frame.columns[:-1])
            fallback = fallback | frame["_fb"]
            per_decision[node.id] = frame["_fb"]
            specs.append((node, outs))
            continue
        try:
            status, values, fired = batch.decide(node)
            # not in force: the same on every row, so a row sent to the scalar path for another
            # decision need not decide this one again (unless its facts are there only, `scalar`)
            frame, outs = _decision_frame(batch, node, values, fired) if status != "not_in_force" else \
                _constant_frame(node, n, "not_in_force", to_scalar=False)
        except _TO_SCALAR as exc:
            # a decision this path cannot compute (Unsupported), or one whose computation polars
            # refused on these values: every row of it is decided by the scalar path, the reference
            file, line, _ = policy.location(f"decisions.{node.id}")
            why = str(exc) if isinstance(exc, Unsupported) else \
                f"the batch computation failed ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
            reasons[node.id] = f"{why} ({file}:{line})" if file else why
            # the decision may have been partly compiled: forget its partial state
            batch.results.pop(node.id, None)
            batch.in_progress.discard(node.id)
            frame, outs = _constant_frame(node, n, None, to_scalar=True)
        columns.extend(frame[c] for c in frame.columns[:-1])
        fallback = fallback | frame["_fb"]
        per_decision[node.id] = frame["_fb"]
        specs.append((node, outs))
    if scalar:
        forced = pl.repeat(False, n, dtype=pl.Boolean, eager=True).scatter(list(scalar), True)
        fallback = fallback | forced
        per_decision = {d: flags | forced for d, flags in per_decision.items()}
    result = pl.DataFrame(columns + [fallback.alias("_fallback")]) if columns else pl.DataFrame([fallback])
    if fallback.any():
        result = _fallback(engine, population, day, entity, result, specs, facts_list, per_decision,
                           refused if refused is not None else [])
    return result


def _kernel_frames(batch: Batch, wanted: list[ir.DecisionNode], n: int,
                   deferred: dict[tuple[str, str], Deferred], vouched: set[tuple[str, str]],
                   owners: list[tuple[pl.Series, pl.Series]]
                   ) -> dict[str, tuple[pl.DataFrame, list[tuple[str, str, int]]]]:
    """The decisions of a large batch that a compiled kernel computes (``kernel.py``); the
    others, and every decision of a small batch, are left to the polars plan below. The deferred
    columns the kernel read and found valid are added to ``vouched``; ``owners`` (a pending
    check of a Split's members) is emptied when the kernel checked them."""
    if n < kernel.MIN_ROWS or not kernel.available():
        return {}
    day = batch.as_of
    in_force = [node for node in wanted if (node.in_force is None or node.in_force.contains(day))
                and batch.policy.version_at(day) is not None]
    offsets = None
    if batch.m is not None:
        if batch.sizes is not None and len(batch.sizes) == n and not batch.sizes.has_nulls() \
                and int(batch.sizes.min() or 0) >= 0:  # type: ignore[arg-type]
            offsets = kernel.offsets_of(batch.sizes)  # (one cumulative sum, no checks of segments())
        if offsets is None or offsets[-1] != batch.m.df.height:
            segments = batch.segments()
            if segments is None:  # members not in household order: the polars plan groups them
                return {}
            offsets = kernel.offsets_of(segments[2])
    skipped: dict[str, str] = {}  # (why the kernel wrote no code for a decision: the polars plan says its own)
    raw = {key: (d.node.type == "decimal" or d.node.path[-1] in _SIGNED_MONEY) for key, d in deferred.items()}
    return kernel.decide(batch.policy, day, batch.entity, in_force, batch.h.df,
                         batch.m.df if batch.m is not None else None, batch.scales, offsets, skipped, raw, vouched,
                         owners)


def _constant_frame(node: ir.DecisionNode, n: int, status: str | None, to_scalar: bool
                    ) -> tuple[pl.DataFrame, list[tuple[str, str, int]]]:
    """A decision's columns when they are the same on every row: ``status`` (None: left to the
    scalar path), null outputs, no fired row; ``_fb`` is ``to_scalar``."""
    outs = [(o.short, _out_kind(o), 0) for o in node.outputs]
    frame = pl.DataFrame([
        pl.Series(f"{node.id}.status", [status] * n, dtype=pl.String),
        *(pl.repeat(None, n, dtype=_out_dtype(kind, 0), eager=True).alias(f"{node.id}.{short}") for short, kind, _ in outs),
        pl.Series(f"{node.id}.fired_rows", [[]], dtype=pl.List(pl.String)).new_from_index(0, n),
        pl.repeat(to_scalar, n, dtype=pl.Boolean, eager=True).alias("_fb")])
    return frame, outs


def _decision_frame(batch: Batch, node: ir.DecisionNode, values: dict[str, V], fired: V | None
                    ) -> tuple[pl.DataFrame, list[tuple[str, str, int]]]:
    """A decided (or not decided) decision's columns: status, outputs, fired rows, and ``_fb``
    (the rows the scalar path decides); and its outputs' kinds and scales."""
    exprs = []
    unks = []
    fbs = []
    outs = []
    for output in node.outputs:
        v = values[output.short]
        kind = v.kind if v.kind != "null" else _kind(output.type)
        if kind == "num" and output.type == "integer":  # beyond 64 bits: decide refuses the case
            v = replace(v, fb=_or(v.fb, _beyond_context(v.val, v.bounds, INTEGER_LIMIT * 10 ** v.scale + 1)))
        val = pl.when(v.unk).then(None).otherwise(v.val) if v.unk is not None else v.val
        if v.fb is not None:  # the scalar path decides these rows: their value here may not even fit
            val = pl.when(v.fb.fill_null(True)).then(None).otherwise(val)
        if kind == "num":
            val = val.cast(pl.Decimal(38, 0)) * pl.lit(Decimal(1).scaleb(-v.scale)) if v.scale else val.cast(pl.Decimal(38, 0))
            if output.type == "integer":
                val = val.cast(pl.Int64)
        exprs.append(val.alias(f"{node.id}.{output.short}"))
        if v.unk is not None:
            unks.append(v.unk)
        if v.fb is not None:
            fbs.append(v.fb)
        outs.append((output.short, "int" if output.type == "integer" and kind == "num" else kind, v.scale))
    unknown = pl.any_horizontal(unks).fill_null(False) if unks else pl.lit(False)
    status_expr = pl.when(unknown).then(pl.lit("needs_information")).otherwise(pl.lit("decided"))
    fired_expr = fired.val if fired is not None else pl.lit([], dtype=pl.List(pl.String))
    fb_expr = pl.any_horizontal(fbs).fill_null(True) if fbs else pl.lit(False)
    frame = batch.h.df.lazy().select(status_expr.alias(f"{node.id}.status"), *exprs,
                                      fired_expr.alias(f"{node.id}.fired_rows"), fb_expr.alias("_fb")).collect()
    if fired is not None and fired.kind == "mask":
        frame = frame.with_columns(_fired_lists(frame[f"{node.id}.fired_rows"], fired.labels))
    return frame, outs


def _fired_lists(masks: pl.Series | Any, labels: tuple[str, ...]) -> pl.Series:
    """Row-id lists from fired-row bit masks: each distinct mask is decoded once, then gathered.
    With at most 8 rows the mask is itself the index into a table of all 2^k lists (``masks``
    may then be a numpy array, as the kernel gives it: cast there, where it costs least)."""
    if len(labels) <= 8:
        every = pl.Series([[labels[k] for k in range(len(labels)) if m >> k & 1] for m in range(1 << len(labels))],
                          dtype=pl.List(pl.String))
        if isinstance(masks, pl.Series):
            return every.gather(masks.cast(pl.UInt32)).alias(masks.name)
        import numpy as np

        return every.gather(pl.Series(masks.astype(np.uint32)))
    if not isinstance(masks, pl.Series):
        masks = pl.Series(masks).cast(pl.UInt64)
    distinct = masks.unique().sort().to_list()
    lists = pl.Series([[labels[k] for k in range(len(labels)) if m >> k & 1] for m in distinct],
                      dtype=pl.List(pl.String))
    index = masks.replace_strict(distinct, pl.Series(range(len(distinct)), dtype=pl.UInt32))
    return lists.gather(index).alias(masks.name)


def _out_kind(output: ir.OutputNode) -> str:
    """The result column kind of an output that is not computed here (all null until the scalar
    path fills it): whole numbers are ``Int64``, as where they are computed."""
    kind = _kind(output.type)
    return "int" if kind == "num" and output.type == "integer" else kind


def _out_dtype(kind: str, scale: int) -> pl.DataType:
    return {"num": pl.Decimal(38, scale), "int": pl.Int64(), "bool": pl.Boolean(), "date": pl.Date(),
            "str": pl.String(), "list": pl.List(pl.String)}.get(kind, pl.String())


def _fallback(engine: Any, population: pl.DataFrame | Split, day: dt.date, entity: str, result: pl.DataFrame,
              specs: list[tuple[ir.DecisionNode, list[tuple[str, str, int]]]],
              facts_list: list[Any] | None, per_decision: dict[str, pl.Series],
              refused: list[tuple[int, PolicyEngineError]]) -> pl.DataFrame:
    """Decide the rows marked ``_fallback`` with the scalar path and write them into the result;
    a row ``decide`` refuses is appended to ``refused`` and left null."""
    from .evaluate import Unknown

    index = result["_fallback"].arg_true().to_list()
    rows = (population.rows(index) if isinstance(population, Split) else population[index].to_dicts()) \
        if facts_list is None else None
    updates: dict[str, list[Any]] = {c: [] for c in result.columns if c != "_fallback"}
    existing = result[index].to_dicts()
    flags = {d: f.gather(index).to_list() for d, f in per_decision.items()}
    for k, i in enumerate(index):
        facts = facts_list[i] if facts_list is not None else _to_facts(engine.policy, rows[k], entity)  # type: ignore[index]
        needed = [node.id for node, _ in specs if flags[node.id][k]]
        try:
            decision = engine.decide(facts, day, entity, decisions=needed, trace=False)
            for did in needed:  # text a column cannot hold (a lone surrogate fact, echoed)
                for short, value in decision[did].outputs.items():
                    if not holds_utf8(value):
                        raise FactsError([make("PE401", f"{did}.{short}: {NOT_UTF8}", path=f"{did}.{short}")])
        except (FactsError, PolicyError) as exc:  # decide refuses the case, or the policy cannot decide it
            refused.append((i, exc))
            for values in updates.values():
                values.append(None)
            continue
        for node, outs in specs:
            if node.id not in needed:
                for name in [f"{node.id}.status", f"{node.id}.fired_rows"] + [f"{node.id}.{o[0]}" for o in outs]:
                    updates[name].append(existing[k][name])
                continue
            outcome = decision[node.id]
            updates[f"{node.id}.status"].append(outcome.status)
            updates[f"{node.id}.fired_rows"].append(list(outcome.fired_rows))
            for short, _, _ in outs:
                value = outcome.outputs.get(short)
                if isinstance(value, Unknown):
                    value = None
                if isinstance(value, tuple):
                    value = list(value)
                updates[f"{node.id}.{short}"].append(value)
    # widen decimal columns so that the scalar values fit exactly; a value that a column of 38
    # digits cannot hold beside the places the other rows need is its row's error, not a null
    widened: dict[str, pl.DataType] = {}
    beyond: dict[int, list[str]] = {}  # row -> "name = value" that its column cannot hold
    for name, values in updates.items():
        dtype = result.schema[name]
        if isinstance(dtype, pl.Decimal):
            places = _scale_of([v if isinstance(v, Decimal) else None for v in values])
            scale = min(38, max(dtype.scale or 0, places))
            decided_here = result[name].drop_nulls()  # the batch's values kept (rows not sent back: null)
            if scale > places and any(isinstance(v, (Decimal, int)) and not _fits_column(v, scale) for v in values):
                # the batch plan's scale may exceed what the batch-decided values need: use theirs
                # (exactly: EXACT, as the thread's context would round a long value, and the cast
                # below would then round the batch's own values without a word)
                scale = min(scale, max(places, _scale_of([v.normalize(EXACT) for v in decided_here.to_list()])))
            if scale > (dtype.scale or 0) and decided_here.len():
                # widened, the batch's own values must still fit 38 digits: a scalar value that
                # needs more places than that leaves is its row's error (below)
                largest = Decimal(max(abs(decided_here.min()), abs(decided_here.max())))  # type: ignore[arg-type, call-overload]
                whole = largest.adjusted() + 1 if largest else 0
                scale = max(dtype.scale or 0, min(scale, 38 - max(whole, 0)))
            widened[name] = pl.Decimal(38, scale)
            for k, v in enumerate(values):
                if isinstance(v, (Decimal, int)) and not _fits_column(v, scale):
                    beyond.setdefault(k, []).append(f"{name} = {v} (a column of {scale} decimal places)")
    if beyond:
        for k, found in beyond.items():
            refused.append((index[k], FactsError([make(
                "PE401", f"{'; '.join(found)}: more digits than a batch column holds (38 in all, with the "
                         "decimal places every row of the batch needs); decide this case alone (Engine.decide)",
                path="")])))
            for values in updates.values():
                values[k] = None
    patched = {}
    for name, values in updates.items():
        dtype = widened.get(name, result.schema[name])
        if isinstance(dtype, pl.Decimal):
            result = result.with_columns(pl.col(name).cast(dtype))
        patched[name] = pl.Series(name, values, dtype=dtype, strict=False)
    schema = {name: (patched[name].dtype if result.schema[name] == pl.Null else result.schema[name])
              for name in result.columns if name != "_fallback"}
    fixed = pl.DataFrame([patched[name].cast(dtype) for name, dtype in schema.items()]).with_columns(
        _fallback=pl.lit(True), _i=pl.Series(index, dtype=pl.UInt32))
    kept = result.with_columns([pl.col(n).cast(d) for n, d in schema.items()]).with_row_index("_i").filter(
        pl.col("_fallback").not_())
    return pl.concat([kept, fixed.select(kept.columns)]).sort("_i").drop("_i")
