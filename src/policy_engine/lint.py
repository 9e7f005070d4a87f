"""Lint: checks beyond validity that policy staff want before publishing.

Compile already warns about rules without a legal reference (PE250). ``lint`` adds:

- PE251 illustrative parameters in force on the lint date;
- PE260 rows of a U (unique) table that can both match;
- PE261 gaps: values of the table's inputs that no row matches, in a table without a default;
- PE262 rows of an F (first) table that can never fire because earlier rows cover them;
- PE263 inputs and PE264 parameters that nothing in the layered policy references;
- PE265 decisions that no test case of the package's suites names in its ``expect``.

Table checks use interval analysis over each column. A column is analysed when its type is
numeric, a date, boolean, enum (with its declared values) or text, and its cells' endpoints are
constants — or all the very same named value (``< dibao_standard`` against
``>= dibao_standard``: a name is compared with itself only). Anything else (mixed constants and
names, two different names) is *opaque*: the checks then only conclude what holds whatever the
names' values are, so they never report a problem they cannot prove.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from . import ir
from .diagnostics import Diagnostic, make, sort_unique
from .expressions import refs_of, table_refs

#: the hit policies for which a no-match is a gap (multiple-hit tables may match nothing on purpose)
SINGLE_HIT = frozenset({"U", "A", "P", "F"})
#: above this many elementary combinations the gap search gives up (keeps lint fast)
MAX_GAP_STEPS = 20000


def illustrative_in_force(policy: ir.CompiledPolicy, as_of: dt.date | None) -> list[Diagnostic]:
    """Illustrative parameters in force on ``as_of`` (or, without a date, in their latest value)."""
    out = []
    for p in policy.parameters:
        chosen = p.values[-1] if as_of is None and p.values else None
        for v in p.values if as_of is not None else ():
            if as_of is not None and v.start <= as_of and (v.end is None or as_of <= v.end):
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


# --- one column: elementary cells ----------------------------------------------------------

_OPS = {"<", "<=", ">", ">=", "==", "!="}


@dataclass(frozen=True)
class _Cell:
    """An elementary piece of a column's domain: every value in it passes or fails each test alike.

    kind "point" (value v), "open" (lo < x < hi, None = unbounded), "value" (an enum/boolean/text
    value v) or "other" (a text value no cell names).
    """

    kind: str
    v: Any = None
    lo: Any = None
    hi: Any = None

    def show(self, symbol: str | None, date: bool = False) -> str:
        def s(x: Any) -> str:
            if symbol is not None:
                return symbol
            if date:
                return dt.date.fromordinal(int(x)).isoformat()
            if isinstance(x, bool):
                return "true" if x else "false"
            return str(x)

        if self.kind in ("point", "value"):
            return f"= {s(self.v)}"
        if self.kind == "other":
            return "another value"
        if self.lo is None and self.hi is None:
            return "any value"
        if self.lo is None:
            return f"< {s(self.hi)}"
        if self.hi is None:
            return f"> {s(self.lo)}"
        return f"in ({s(self.lo)}..{s(self.hi)})"


class _Opaque(Exception):
    """A test whose endpoints cannot be compared with the others'."""


def _const(e: ir.Expr | None) -> tuple[bool, Any]:
    """(True, value) when ``e`` is a constant (folding a sign), else (False, None)."""
    if isinstance(e, ir.Const):
        return True, e.value
    if isinstance(e, ir.Unary) and e.op in ("neg", "pos") and isinstance(e.operand, ir.Const):
        v = e.operand.value
        if isinstance(v, (int, Decimal)) and not isinstance(v, bool):
            return True, -v if e.op == "neg" else v
    return False, None


def _endpoints(t: ir.Test) -> list[ir.Expr]:
    out = [x for x in (t.a, t.b) if x is not None]
    for sub in t.tests:
        out.extend(_endpoints(sub))
    return out


@dataclass
class _Column:
    """How one table column is analysed for a given set of tests."""

    kind: str  # "ordered" | "finite" | "text" | "opaque"
    cells: tuple[_Cell, ...] = ()
    symbol: ir.Expr | None = None  # the one named endpoint of an ordered column, if any
    date: bool = False  # an ordered column of dates (cells hold day ordinals)

    def key(self, e: ir.Expr | None) -> Any:
        if self.symbol is not None:
            if e != self.symbol:
                raise _Opaque()
            return 0
        ok, v = _const(e)
        if not ok:
            raise _Opaque()
        return v.toordinal() if isinstance(v, dt.date) else v


def _column(expr: ir.Expr, values: tuple[str, ...], tests: Iterable[ir.Test]) -> _Column:
    tests = list(tests)
    ends = [e for t in tests for e in _endpoints(t)]
    kind = expr.type
    if kind == "boolean":
        return _Column("finite", tuple(_Cell("value", v) for v in (True, False)))
    if kind == "enum" and values:
        if all(_const(e)[0] for e in ends):
            return _Column("finite", tuple(_Cell("value", v) for v in values))
        return _Column("opaque")
    if kind in ("text", "enum"):
        consts = []
        for e in ends:
            ok, v = _const(e)
            if not ok or not isinstance(v, str):
                return _Column("opaque")
            consts.append(v)
        return _Column("text", tuple(_Cell("value", v) for v in sorted(set(consts))) + (_Cell("other"),))
    if kind in ir.NUMERIC or kind == "date":
        symbols = {e for e in ends if not _const(e)[0]}
        if symbols:
            if len(symbols) > 1 or any(_const(e)[0] for e in ends):
                return _Column("opaque")
            (symbol,) = symbols
            return _Column("ordered", (_Cell("open", hi=0), _Cell("point", 0), _Cell("open", lo=0)), symbol)
        points: set[Any] = set()
        for e in ends:
            v = _const(e)[1]
            if isinstance(v, bool) or not isinstance(v, (int, Decimal, dt.date)):
                return _Column("opaque")
            points.add(v.toordinal() if isinstance(v, dt.date) else v)
        cells: list[_Cell] = []
        previous = None
        for p in sorted(points):
            cells += [_Cell("open", lo=previous, hi=p), _Cell("point", p)]
            previous = p
        cells.append(_Cell("open", lo=previous))
        if kind in ("integer", "date"):  # whole numbers (days) only
            cells = [c for c in cells if (c.kind == "point" and c.v == int(c.v)) or (c.kind == "open" and (
                c.lo is None or c.hi is None or math.floor(c.lo) + 1 < c.hi))]
        return _Column("ordered", tuple(cells), date=kind == "date")
    return _Column("opaque")


def _sign(cell: _Cell, a: Any) -> int:
    """-1, 0 or 1: how every value of an ordered cell compares with the endpoint ``a``."""
    if cell.kind == "point":
        return int(cell.v > a) - int(cell.v < a)
    return -1 if cell.hi is not None and cell.hi <= a else 1


def _passes(col: _Column, cell: _Cell, t: ir.Test) -> bool:
    """Whether every value of ``cell`` passes the unary test ``t`` (raises _Opaque if unknown)."""
    if t.kind == "any":
        return True
    if t.kind == "null":
        return False
    if t.kind == "one_of":
        return any(_passes(col, cell, s) for s in t.tests)
    if t.kind == "not":
        return not any(_passes(col, cell, s) for s in t.tests)
    if col.kind == "opaque":
        raise _Opaque()
    if col.kind in ("finite", "text"):
        if t.kind != "compare" or t.op not in ("==", "!="):
            raise _Opaque()
        ok, v = _const(t.a)
        if not ok:
            raise _Opaque()
        same = cell.kind == "value" and cell.v == v and isinstance(cell.v, bool) == isinstance(v, bool)
        return same if t.op == "==" else not same
    if t.kind == "compare":
        if t.op not in _OPS:
            raise _Opaque()
        s = _sign(cell, col.key(t.a))
        return {"<": s < 0, "<=": s <= 0, ">": s > 0, ">=": s >= 0, "==": s == 0, "!=": s != 0}[t.op]
    if t.kind == "range":
        lo, hi = _sign(cell, col.key(t.a)), _sign(cell, col.key(t.b))
        return (lo > 0 or (lo == 0 and t.low_closed)) and (hi < 0 or (hi == 0 and t.high_closed))
    raise _Opaque()


def _region(col: _Column, t: ir.Test) -> frozenset[int] | None:
    """The indexes of the cells a test matches, or None when it cannot be known."""
    if t.kind == "any":
        return frozenset(range(len(col.cells))) if col.kind != "opaque" else None
    if col.kind == "opaque":
        return None
    try:
        return frozenset(i for i, c in enumerate(col.cells) if _passes(col, c, t))
    except _Opaque:
        return None


# --- tables --------------------------------------------------------------------------------


def _column_values(policy: ir.CompiledPolicy, expr: ir.Expr) -> tuple[str, ...]:
    if not isinstance(expr, ir.Ref) or expr.type != "enum":
        return ()
    for node in policy.inputs:
        if node.name == expr.name:
            return node.values
    for derived in policy.derived:
        if derived.name == expr.name:
            return derived.values
    if "." in expr.name:
        decision, output = expr.name.split(".", 1)
        for d in policy.decisions:
            if d.id == decision:
                for o in d.outputs:
                    if o.short == output:
                        return o.values
    return ()


def _tables(policy: ir.CompiledPolicy) -> list[tuple[str, ir.Table]]:
    out = [(f"derived.{d.name}", d.table) for d in policy.derived if d.table is not None]
    out += [(f"decisions.{d.id}", d.table) for d in policy.decisions if d.table is not None]
    return out


def _windows_meet(a: ir.Window | None, b: ir.Window | None) -> bool:
    if a is None or b is None:
        return True
    return (a.end is None or b.start <= a.end) and (b.end is None or a.start <= b.end)


def _window_covers(outer: ir.Window | None, inner: ir.Window | None) -> bool:
    if outer is None:
        return True
    if inner is None:
        return False
    return outer.start <= inner.start and (outer.end is None or (inner.end is not None and inner.end <= outer.end))


def _in_force(row: ir.Row, as_of: dt.date | None) -> bool:
    return as_of is None or row.in_force is None or row.in_force.contains(as_of)


def _witness(table: ir.Table, cols: list[_Column], cells: Sequence[int | None]) -> str:
    parts = []
    for name, col, c in zip(table.columns, cols, cells):
        if c is None or c < 0 or col.kind == "opaque":
            continue
        if len(col.cells) == 1 and col.cells[0].kind == "open":
            continue
        symbol = None
        if col.symbol is not None:
            symbol = col.symbol.name if isinstance(col.symbol, ir.Ref) else "the named value"
        parts.append(f"{name} {col.cells[c].show(symbol, col.date)}")
    return ", ".join(parts) if parts else "any input"


def _diag(policy: ir.CompiledPolicy, code: str, key: str, message: str, hint: str | None = None,
          cite: ir.Cite | None = None) -> Diagnostic:
    file, line, column = policy.location(key)
    if file is None and ".rows." in key:
        file, line, column = policy.location(key.split(".rows.")[0])
    return make(code, message, path=key, file=file, line=line, column=column, hint=hint,
                cite=cite.render() if cite else None)


def overlapping_rows(policy: ir.CompiledPolicy, as_of: dt.date | None = None) -> list[Diagnostic]:
    """PE260: two rows of a U table that both match some input (proved, never guessed)."""
    out = []
    for owner, table in _tables(policy):
        if table.hit != "U":
            continue
        rows = [r for r in table.rows if _in_force(r, as_of)]
        values = [_column_values(policy, e) for e in table.inputs]
        for j, second in enumerate(rows):
            for first in rows[:j]:
                if not _windows_meet(first.in_force, second.in_force):
                    continue
                witness: list[int | None] = []
                cols = []
                for k, expr in enumerate(table.inputs):
                    ta, tb = first.tests[k], second.tests[k]
                    col = _column(expr, values[k], (ta, tb))
                    cols.append(col)
                    ra, rb = _region(col, ta), _region(col, tb)
                    if ra is None or rb is None:
                        # unknown extent: overlapping for sure only if one is `-` or both are equal
                        if ta.kind == "any" or tb.kind == "any" or ta == tb:
                            if ta.kind == "null" or tb.kind == "null":
                                break
                            witness.append(None)
                            continue
                        break
                    both = ra & rb
                    if not both:
                        break
                    witness.append(min(both))
                else:
                    out.append(_diag(
                        policy, "PE260", f"{owner}.rows.{second.id}",
                        f"rows `{first.id}` and `{second.id}` of `{owner.split('.', 1)[1]}` (hit policy U) "
                        f"can both match, e.g. {_witness(table, cols, witness)}",
                        hint="make the rows exclusive, or use hit policy F (first) or A (any) if that is meant",
                    ))
    return out


def _holes(cols: list[_Column], regions: list[list[frozenset[int]]], target: list[frozenset[int]],
           budget: list[int]) -> Iterator[list[int]]:
    """Combinations of cells inside ``target`` that no row region covers (one per uncovered block).

    ``regions[r][k]`` is the cells row r matches in column k. Raises _Opaque when over budget.
    """
    def walk(k: int, live: list[int], chosen: list[int]) -> Iterator[list[int]]:
        if not live:  # nothing matches whatever the remaining columns hold
            yield chosen + [-1] * (len(cols) - k)
            return
        if k == len(cols):
            return
        # a live row matching every remaining target cell covers the rest
        if any(all(target[m] <= regions[r][m] for m in range(k, len(cols))) for r in live):
            return
        for c in sorted(target[k]):
            budget[0] -= 1
            if budget[0] < 0:
                raise _Opaque()
            yield from walk(k + 1, [r for r in live if c in regions[r][k]], chosen + [c])

    if all(target):
        yield from walk(0, list(range(len(regions))), [])


def _uncovered(cols: list[_Column], regions: list[list[frozenset[int]]], target: list[frozenset[int]],
               budget: list[int]) -> list[int] | None:
    return next(_holes(cols, regions, target, budget), None)


def gaps(policy: ir.CompiledPolicy, as_of: dt.date | None = None) -> list[Diagnostic]:
    """PE261: inputs no row matches in a single-hit table without a default."""
    out = []
    for owner, table in _tables(policy):
        if table.hit not in SINGLE_HIT or any(d is not None for d in table.defaults) or not table.rows:
            continue
        rows = [r for r in table.rows if _in_force(r, as_of)]
        values = [_column_values(policy, e) for e in table.inputs]
        cols = [_column(e, values[k], (r.tests[k] for r in rows)) for k, e in enumerate(table.inputs)]
        regions: list[list[frozenset[int]]] = []
        unknown = False
        for r in rows:
            region = []
            for k, col in enumerate(cols):
                got = _region(col, r.tests[k])
                if got is None:
                    unknown = True
                    break
                region.append(got)
            if unknown:
                break
            regions.append(region)
        if unknown:
            continue
        target = [frozenset(range(len(c.cells))) for c in cols]
        holes: list[list[int]] = []
        try:
            for hole in _holes(cols, regions, target, [MAX_GAP_STEPS]):
                holes.append(hole)
                if len(holes) > 3:
                    break
        except _Opaque:
            continue
        if holes:
            name = owner.split(".", 1)[1]
            shown = "; ".join(_witness(table, cols, h) for h in holes[:3]) + ("; ..." if len(holes) > 3 else "")
            out.append(_diag(
                policy, "PE261", owner,
                f"no row of `{name}` (hit policy {table.hit}) matches {shown}"
                f"{' (rows in force on ' + as_of.isoformat() + ')' if as_of else ''}; the table has no default",
                hint="add a row for these values, a catch-all row (`when: {}`) or a `default`",
            ))
    return out


def unreachable_rows(policy: ir.CompiledPolicy, as_of: dt.date | None = None) -> list[Diagnostic]:
    """PE262: rows of an F table that earlier rows always pre-empt."""
    out = []
    for owner, table in _tables(policy):
        if table.hit != "F":
            continue
        rows = [r for r in table.rows if _in_force(r, as_of)]
        values = [_column_values(policy, e) for e in table.inputs]
        for j, row in enumerate(rows):
            earlier = [r for r in rows[:j] if _window_covers(r.in_force, row.in_force)]
            if not earlier:
                continue
            cols = [_column(e, values[k], (r.tests[k] for r in (*earlier, row))) for k, e in enumerate(table.inputs)]
            target: list[frozenset[int]] = []
            regions: list[list[frozenset[int]]] = [[] for _ in earlier]
            for k, col in enumerate(cols):
                mine = _region(col, row.tests[k])
                if mine is None:  # opaque: one cell standing for this row's test
                    target.append(frozenset({0}))
                    for i, r in enumerate(earlier):
                        t = r.tests[k]
                        regions[i].append(frozenset({0}) if t.kind == "any" or t == row.tests[k] else frozenset())
                    continue
                target.append(mine)
                for i, r in enumerate(earlier):
                    got = _region(col, r.tests[k])
                    regions[i].append(got if got is not None else frozenset())
            if any(not t for t in target):
                continue  # the row matches nothing at all; not this check's business
            try:
                hole = _uncovered(cols, regions, target, [MAX_GAP_STEPS])
            except _Opaque:
                continue
            if hole is None:
                covering = [r.id for r, reg in zip(earlier, regions)
                            if any(reg[k] & target[k] for k in range(len(cols))) and all(reg[k] & target[k] for k in range(len(cols)))]
                out.append(_diag(
                    policy, "PE262", f"{owner}.rows.{row.id}",
                    f"row `{row.id}` of `{owner.split('.', 1)[1]}` (hit policy F) can never fire: "
                    f"earlier row{'s' if len(covering) > 1 else ''} {', '.join(f'`{c}`' for c in covering)} "
                    f"match{'' if len(covering) > 1 else 'es'} everything it matches",
                    hint="move the row up, narrow the earlier rows, or remove it",
                    cite=row.cites[0] if row.cites else None,
                ))
    return out


# --- names ---------------------------------------------------------------------------------


def _table_refs(table: ir.Table | None) -> set[str]:
    return table_refs(table)


def referenced_names(policy: ir.CompiledPolicy) -> set[str]:
    """Every name an expression, a table or a parameter dimension of the layered policy names."""
    used: set[str] = set()
    for p in policy.parameters:
        used.update(p.by)
    for d in policy.derived:
        used |= refs_of(d.expr) | _table_refs(d.table)
    for dec in policy.decisions:
        used |= _table_refs(dec.table)
        for o in dec.outputs:
            used |= refs_of(o.expr)
    return used


def unused_names(policy: ir.CompiledPolicy) -> list[Diagnostic]:
    """PE263 unused inputs and PE264 unused parameters."""
    used = referenced_names(policy)
    out = []
    for i in policy.inputs:
        if i.name not in used:
            out.append(_diag(policy, "PE263", f"inputs.{i.name}",
                             f"input `{i.name}` ({i.label.zh}) is declared but nothing in `{policy.id}` reads it",
                             hint="remove it, or use it in the rule that needs it"))
    for p in policy.parameters:
        if p.name not in used:
            out.append(_diag(policy, "PE264", f"parameters.{p.name}",
                             f"parameter `{p.name}` ({p.label.zh}) is declared but nothing in `{policy.id}` uses it",
                             hint="remove it, or use it in the rule that needs it",
                             cite=p.cites[0] if p.cites else None))
    return out


# --- tests ---------------------------------------------------------------------------------


def tested_decisions(suites: Iterable[str | Path]) -> set[str]:
    """The decision ids named in the ``expect`` of any (not ``todo``) case of the suites."""
    from .load import load_file

    found: set[str] = set()
    for path in suites:
        loaded, _ = load_file(path)
        if loaded is None:
            continue
        data = loaded.data
        cases = data.get("tests", []) if isinstance(data, dict) else data
        for case in cases if isinstance(cases, list) else ():
            if isinstance(case, dict) and not case.get("todo") and isinstance(case.get("expect"), dict):
                found.update(str(k) for k in case["expect"])
    return found


def suites_for(package: str | Path) -> list[Path]:
    """The suites under a package folder that test that package (not a sub-package)."""
    from .load import load_file
    from .testing import find_suites, package_of

    root = Path(package).resolve()
    out = []
    for suite in find_suites([package]):
        target: Path | None
        try:
            loaded, _ = load_file(suite)
            data = loaded.data if loaded is not None else None
            policy = data.get("policy") if isinstance(data, dict) else None
            target = (suite.parent / policy).resolve() if isinstance(policy, str) else package_of(suite)
        except (FileNotFoundError, OSError):
            target = None
        if target == root:
            out.append(suite)
    return out


def untested_decisions(policy: ir.CompiledPolicy, suites: Iterable[str | Path]) -> list[Diagnostic]:
    """PE265: decisions that no test case expects anything of."""
    suites = list(suites)
    tested = tested_decisions(suites)
    where = (f"it is in no `expect` of the {len(suites)} suite{'s' if len(suites) != 1 else ''} of `{policy.id}`"
             if suites else f"package `{policy.id}` has no test suite (*_test.yaml)")
    return [_diag(policy, "PE265", f"decisions.{d.id}", f"no test covers decision `{d.id}` ({d.label.zh}): {where}",
                  hint="add a test case whose expect names it",
                  cite=d.cites[0] if d.cites else None)
            for d in policy.decisions if d.id not in tested]


def lint(policy: ir.CompiledPolicy, as_of: dt.date | None, compile_diagnostics: list[Diagnostic] | None = None,
         suites: Iterable[str | Path] | None = None) -> list[Diagnostic]:
    """Every lint diagnostic of a compiled policy (with the compile warnings given).

    ``as_of`` limits table checks to rows in force that day and picks the parameter values checked
    for PE251; ``suites`` (test suite files) enables PE265, untested decisions.
    """
    found = list(compile_diagnostics or [])
    found += illustrative_in_force(policy, as_of)
    found += overlapping_rows(policy, as_of)
    found += gaps(policy, as_of)
    found += unreachable_rows(policy, as_of)
    found += unused_names(policy)
    if suites is not None:
        found += untested_decisions(policy, suites)
    return sort_unique(found)
