"""Stage 4, evaluate (scalar backend): one case at a time, exact, with an optional trace.

The backend generates Python closures from the IR once per compiled policy (one set with
tracing, one without, so that tracing costs nothing when it is off). Values are ``Decimal`` /
``int`` / ``bool`` / ``str`` / ``date`` / ``None`` (null), or ``Unknown``: a fact the caller did
not give, which spreads through the computation (three-valued logic) and turns the decisions that
need it into ``needs_information``.
"""

from __future__ import annotations

import calendar
import dataclasses
import datetime as dt
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import (
    ROUND_CEILING,
    ROUND_DOWN,
    ROUND_FLOOR,
    ROUND_HALF_EVEN,
    ROUND_HALF_UP,
    ROUND_UP,
    Context,
    Decimal,
    DivisionByZero,
    InvalidOperation,
)
from typing import Any

from . import ir
from .diagnostics import PolicyError, make

#: generate Python source per derived value, table and output (see `_Gen`); False: closures only
GENERATE = True
_UNSET_BUILD = object()

#: The one arithmetic context: independent of the caller's global decimal context.
CONTEXT = Context(prec=34, rounding=ROUND_HALF_EVEN, traps=[InvalidOperation, DivisionByZero])
ROUNDING_MODES = {
    "half_up": ROUND_HALF_UP, "half_even": ROUND_HALF_EVEN, "down": ROUND_DOWN, "up": ROUND_UP,
    "floor": ROUND_FLOOR, "ceiling": ROUND_CEILING,
}


class Unknown:
    """A value that depends on facts the caller did not give; ``missing`` names them."""

    __slots__ = ("missing",)

    def __init__(self, missing: frozenset[str]):
        self.missing = missing

    def __repr__(self) -> str:
        return f"Unknown({sorted(self.missing)})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Unknown) and other.missing == self.missing

    def __hash__(self) -> int:
        return hash(self.missing)


def _merge(*values: Any) -> Unknown:
    missing: frozenset[str] = frozenset()
    for v in values:
        if type(v) is Unknown:
            missing = missing | v.missing
    return Unknown(missing)


class NotInForce(Exception):
    def __init__(self, reason: str, cites: tuple[ir.Cite, ...] = ()):
        super().__init__(reason)
        self.reason = reason
        self.cites = cites


class Case:
    """The state of one evaluation."""

    __slots__ = ("values", "members", "as_of", "memo", "trace", "outcomes", "fired")

    def __init__(self, values: dict[str, Any], members: list[dict[str, Any]] | None, as_of: dt.date,
                 trace: list[tuple[Any, ...]] | None):
        self.values = values
        self.members = members
        self.as_of = as_of
        self.memo: dict[Any, Any] = {}
        self.trace = trace
        self.outcomes: dict[str, Any] = {}
        #: table owner -> indices of the rows that fired (recorded with or without tracing)
        self.fired: dict[str, tuple[int, ...]] = {}


Fn = Callable[[Case, Any], Any]


def _round(value: Any, rounding: ir.Rounding) -> Any:
    t = type(value)
    if t is Decimal:  # Decimal(value) would only copy it
        return value.quantize(rounding.unit, rounding=ROUNDING_MODES[rounding.mode], context=CONTEXT)
    if t is int:
        return Decimal(value).quantize(rounding.unit, rounding=ROUNDING_MODES[rounding.mode], context=CONTEXT)
    return value


def _cmp(op: str, a: Any, b: Any) -> bool | None:
    if a is None or b is None:
        return None
    try:
        if op == "<":
            return bool(a < b)
        if op == "<=":
            return bool(a <= b)
        if op == ">":
            return bool(a > b)
        if op == ">=":
            return bool(a >= b)
        if op == "==":
            return bool(a == b)
        return bool(a != b)
    except TypeError:
        return None


def _age(born: dt.date, on: dt.date) -> int:
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))


def _months_between(a: dt.date, b: dt.date) -> int:
    months = (b.year - a.year) * 12 + (b.month - a.month)
    if months > 0 and b.day < a.day and b.day != calendar.monthrange(b.year, b.month)[1]:
        months -= 1
    elif months < 0 and b.day > a.day:
        months += 1
    return months


def _add_months(d: dt.date, n: int) -> dt.date:
    month_index = d.year * 12 + (d.month - 1) + n
    year, month = divmod(month_index, 12)
    last = calendar.monthrange(year, month + 1)[1]
    return dt.date(year, month + 1, min(d.day, last))


class Backend:
    """Closures generated from one CompiledPolicy, with or without tracing."""

    def __init__(self, policy: ir.CompiledPolicy, trace: bool):
        self.policy = policy
        self.tracing = trace
        self.getters: dict[str, Fn] = {}
        self.decisions: dict[str, ir.DecisionNode] = {d.id: d for d in policy.decisions}
        self.runners: dict[str, Callable[[Case], None]] = {}
        self._pending: dict[str, ir.DerivedNode] = {}
        self._param_cache: dict[str, dict[dt.date, tuple[Any, tuple[Any, ...]]]] = {}
        names = [n.name for n in policy.inputs] + [p.name for p in policy.parameters]
        names += [d.name for d in policy.derived] + [o.name for d in policy.decisions for o in d.outputs]
        #: every getter name is defined exactly once, so a reference may bind to its getter directly
        self._unique_names = len(names) == len(set(names))
        self._inputs = {n.name: n for n in policy.inputs}
        self._params = {p.name: p for p in policy.parameters}
        self._derived_nodes = {d.name: d for d in policy.derived}
        #: what each name refers to (the last definition wins, as in `getters`)
        self._kinds: dict[str, str] = {}
        for kind, kind_names in (("input", [n.name for n in policy.inputs]),
                                 ("param", [p.name for p in policy.parameters]),
                                 ("derived", [d.name for d in policy.derived]),
                                 ("output", [o.name for d in policy.decisions for o in d.outputs])):
            for n in kind_names:
                self._kinds[n] = kind
        for node in policy.inputs:
            self.getters[node.name] = self._input(node)
        for param in policy.parameters:
            self.getters[param.name] = self._parameter(param)
        #: the generated source (None when the closures are used); see `_Gen`
        self.source: str | None = None
        if GENERATE:
            try:
                _Gen(self).build()
                return
            except (_Unsupported, RecursionError, SyntaxError):  # pragma: no cover - the closures below
                for name in [n for n in self.getters if self._kinds.get(n) in ("derived", "output")]:
                    del self.getters[name]
                self.runners.clear()
                self.source = None
        self._build_closures()

    def _build_closures(self) -> None:
        policy = self.policy
        #: derived values not built yet; a reference builds its target first (see `expr`), so that
        #: references can bind their getters directly whatever the order of `policy.derived`
        self._pending = {d.name: d for d in policy.derived}
        for derived in policy.derived:
            if self._pending.pop(derived.name, None) is not None:
                self.getters[derived.name] = self._derived(derived)
        for decision in policy.decisions:
            self.runners[decision.id] = self._decision(decision)
            for output in decision.outputs:
                self.getters[output.name] = self._output_getter(decision.id, output.name)

    # -- leaves -------------------------------------------------------------------------------

    def _input(self, node: ir.InputNode) -> Fn:
        name = node.name
        tracing = self.tracing
        path = ".".join(node.path)
        if node.entity == "member":
            if not tracing:
                def member_input_plain(c: Case, m: Any) -> Any:
                    members = c.members
                    if members is None:
                        return Unknown(frozenset(("members",)))
                    value = members[m].get(name, _ABSENT)
                    if value is _ABSENT:
                        value = Unknown(frozenset((f"members[{m}].{path}",)))
                    return value
                return member_input_plain

            def member_input(c: Case, m: Any) -> Any:
                members = c.members
                if members is None:
                    return Unknown(frozenset(("members",)))
                value = members[m].get(name, _ABSENT)
                if value is _ABSENT:
                    value = Unknown(frozenset((f"members[{m}].{path}",)))
                if c.trace is not None and ("i", name, m) not in c.memo:
                    c.memo[("i", name, m)] = True
                    c.trace.append(("input", name, m, value))
                return value
            return member_input

        if not tracing:
            def entity_input_plain(c: Case, m: Any) -> Any:
                value = c.values.get(name, _ABSENT)
                if value is _ABSENT:
                    value = Unknown(frozenset((path,)))
                return value
            return entity_input_plain

        def entity_input(c: Case, m: Any) -> Any:
            value = c.values.get(name, _ABSENT)
            if value is _ABSENT:
                value = Unknown(frozenset((path,)))
            if tracing and c.trace is not None and ("i", name) not in c.memo:
                c.memo[("i", name)] = True
                c.trace.append(("input", name, None, value))
            return value
        return entity_input

    def _parameter(self, node: ir.ParameterNode) -> Fn:
        name = node.name
        tracing = self.tracing
        dated = [(v.start, v.end, {k: val for k, val in v.entries}, v) for v in node.values]
        getters = self.getters
        by = node.by

        in_force: dict[dt.date, Any] = {}  # as_of -> (index, dated value) or None

        def parameter(c: Case, m: Any) -> Any:
            try:
                chosen = in_force[c.as_of]
            except KeyError:
                chosen = None
                for start, end, index, value in dated:
                    if start <= c.as_of and (end is None or c.as_of <= end):
                        chosen = (index, value)
                if len(in_force) >= 1024:
                    in_force.clear()
                in_force[c.as_of] = chosen
            if chosen is None:
                first = dated[0][0].isoformat() if dated else "ever"
                raise NotInForce(f"parameter `{name}` has no value in force on {c.as_of.isoformat()} "
                                 f"(values start {first})", node.cites)
            index, dated_value = chosen
            if by:
                parts = []
                for dim in by:
                    v = getters[dim](c, m)
                    if type(v) is Unknown:
                        return v
                    parts.append("true" if v is True else "false" if v is False else str(v))
                key = tuple(parts)
            else:
                key = ()
            if key not in index:
                # a rule for this key is not in force on this date (e.g. a tier introduced later)
                raise NotInForce(f"parameter `{name}` has no value for "
                                 f"{', '.join(f'{d} = {k}' for d, k in zip(by, key))} on {c.as_of.isoformat()}",
                                 node.cites)
            value = index[key]
            if tracing and c.trace is not None:
                c.trace.append(("param", name, key, value, dated_value.start, dated_value.provenance))
            return value
        return parameter

    def _param_in_force(self, node: ir.ParameterNode) -> dict[dt.date, tuple[Any, tuple[Any, ...]]]:
        """For a parameter without dimensions: as_of -> (value, trace event), filled by `_param_fill`."""
        return self._param_cache.setdefault(node.name, {})

    def _param_fill(self, node: ir.ParameterNode) -> Callable[[dt.date], tuple[Any, tuple[Any, ...]]]:
        """The value of a parameter without dimensions on a date, and its trace event; the same
        lookup, errors and event as `_parameter` (which generated code calls instead of it)."""
        name = node.name
        dated = [(v.start, v.end, {k: val for k, val in v.entries}, v) for v in node.values]
        cache = self._param_in_force(node)

        def fill(as_of: dt.date) -> tuple[Any, tuple[Any, ...]]:
            chosen = None
            for start, end, index, value in dated:
                if start <= as_of and (end is None or as_of <= end):
                    chosen = (index, value)
            if chosen is None:
                first = dated[0][0].isoformat() if dated else "ever"
                raise NotInForce(f"parameter `{name}` has no value in force on {as_of.isoformat()} "
                                 f"(values start {first})", node.cites)
            index, dated_value = chosen
            key: tuple[str, ...] = ()
            if key not in index:
                raise NotInForce(f"parameter `{name}` has no value for  on {as_of.isoformat()}", node.cites)
            value = index[key]
            found = (value, ("param", name, key, value, dated_value.start, dated_value.provenance))
            if len(cache) >= 1024:
                cache.clear()
            cache[as_of] = found
            return found
        return fill

    def _derived(self, node: ir.DerivedNode) -> Fn:
        name = node.name
        tracing = self.tracing
        rounding = self.policy.rounding
        money = node.type == "money"
        if node.table is not None:
            table = self._table(node.table)

            def compute(c: Case, m: Any) -> Any:
                return table(c, m)[0]
        else:
            assert node.expr is not None
            compute = self.expr(node.expr)

        if node.entity == "member":
            def member_value(c: Case, m: Any) -> Any:
                key = (name, m)
                memo = c.memo
                if key in memo:
                    return memo[key]
                value = compute(c, m)
                if money:
                    value = _round(value, rounding)
                memo[key] = value
                if tracing and c.trace is not None:
                    c.trace.append(("derived", name, m, value))
                return value
            return member_value

        def entity_value(c: Case, m: Any) -> Any:
            memo = c.memo
            if name in memo:
                return memo[name]
            value = compute(c, None)
            if money:
                value = _round(value, rounding)
            memo[name] = value
            if tracing and c.trace is not None:
                c.trace.append(("derived", name, None, value))
            return value
        return entity_value

    def _output_getter(self, decision_id: str, qualified: str) -> Fn:
        runners = self.runners

        def output(c: Case, m: Any) -> Any:
            memo = c.memo
            if qualified not in memo:
                runners[decision_id](c)
                if qualified not in memo:
                    outcome = c.outcomes.get(decision_id)
                    if outcome is not None and outcome[0] == "not_in_force":
                        raise NotInForce(outcome[2], outcome[3])
            return memo[qualified]
        return output

    # -- decisions ------------------------------------------------------------------------------

    def _not_in_force(self, node: ir.DecisionNode) -> Callable[[Case], None]:
        """Record that the decision is not in force on the case's date (its window excludes it)."""
        window = node.in_force
        assert window is not None
        decision_id, cites, tracing = node.id, node.cites, self.tracing

        def not_in_force(c: Case) -> None:
            reason = (f"not in force on {c.as_of.isoformat()} (in force "
                      f"{window.start.isoformat()} to {window.end.isoformat() if window.end else 'open'})")
            c.outcomes[decision_id] = ("not_in_force", {}, reason, cites)
            if tracing and c.trace is not None:
                c.trace.append(("decision", decision_id, "not_in_force", reason))
        return not_in_force

    def _decision(self, node: ir.DecisionNode, table: Any = _UNSET_BUILD,
                  fns: list[Fn | None] | None = None) -> Callable[[Case], None]:
        if table is _UNSET_BUILD:  # the closures (else: the generated table and output functions)
            table = self._table(node.table) if node.table is not None else None
        table_index = {name: i for i, name in enumerate(node.table.outputs)} if node.table else {}
        steps: list[tuple[str, str, Fn | None, bool]] = []
        for i, output in enumerate(node.outputs):
            if fns is not None:
                fn = fns[i]
            else:
                fn = self.expr(output.expr) if output.expr is not None else None
            steps.append((output.name, output.short, fn, output.type == "money"))
        rounding = self.policy.rounding
        tracing = self.tracing
        window = node.in_force
        decision_id = node.id
        cites = node.cites

        not_in_force = self._not_in_force(node) if window is not None else None

        def run(c: Case) -> None:
            if decision_id in c.outcomes:
                return
            if window is not None and not window.contains(c.as_of):
                assert not_in_force is not None
                not_in_force(c)
                return
            c.outcomes[decision_id] = ("running", {}, None, ())
            values: dict[str, Any] = {}
            try:
                table_values = table(c, None) if table is not None else ()
                # the table's outputs first, so that expressions may name any of them,
                # whatever order the outputs are written in
                for qualified, short, fn, money in steps:
                    if fn is None:
                        value = table_values[table_index[short]]
                        c.memo[qualified] = _round(value, rounding) if money else value
                for qualified, short, fn, money in steps:
                    if fn is None:
                        value = c.memo[qualified]
                    else:
                        value = fn(c, None)
                    if money:
                        value = _round(value, rounding)
                    c.memo[qualified] = value
                    values[short] = value
                    if tracing and c.trace is not None:
                        c.trace.append(("output", decision_id, short, value))
            except NotInForce as stop:
                c.outcomes[decision_id] = ("not_in_force", {}, stop.reason, stop.cites)
                if tracing and c.trace is not None:
                    c.trace.append(("decision", decision_id, "not_in_force", stop.reason))
                return
            unknown = [v for v in values.values() if type(v) is Unknown]
            if unknown:
                missing = tuple(sorted(_merge(*unknown).missing))
                c.outcomes[decision_id] = ("needs_information", values, missing, ())
                if tracing and c.trace is not None:
                    c.trace.append(("decision", decision_id, "needs_information", missing))
            else:
                c.outcomes[decision_id] = ("decided", values, None, ())
                if tracing and c.trace is not None:
                    c.trace.append(("decision", decision_id, "decided", None))
        return run

    # -- tables ---------------------------------------------------------------------------------

    def _table(self, table: ir.Table) -> Callable[[Case, Any], tuple[Any, ...]]:
        inputs = [self.expr(e) for e in table.inputs]
        rows = []
        for index, row in enumerate(table.rows):
            tests = [(i, self._test(t)) for i, t in enumerate(row.tests) if t.kind != "any"]
            outputs = [self.expr(e) for e in row.outputs]
            rows.append((index, row.id, tests, outputs, row.in_force))
        defaults = [self.expr(d) if d is not None else None for d in table.defaults]
        hit = table.hit
        owner = table.owner
        tracing = self.tracing
        n_out = len(table.outputs)
        priorities = [{v: i for i, v in enumerate(p)} for p in table.priorities]
        row_ids = [r.id for r in table.rows]
        policy = self.policy

        def evaluate(c: Case, m: Any) -> tuple[Any, ...]:
            trace = c.trace if tracing else None
            actual: list[Any] = [_UNSET] * len(inputs)
            matched: list[tuple[int, list[Any]]] = []
            unknown_rows: list[Unknown] = []
            for index, _row_id, tests, outputs, in_force in rows:
                if in_force is not None and not in_force.contains(c.as_of):
                    if trace is not None:
                        trace.append(("skip_row", owner, index))
                    continue
                result: Any = True
                if trace is None:  # the same loop, without recording the cells
                    for col, test in tests:
                        value = actual[col]
                        if value is _UNSET:
                            value = actual[col] = inputs[col](c, m)
                        passed = test(c, m, value)[0]
                        if passed is False:
                            result = False
                            break
                        if type(passed) is Unknown:
                            result = passed if result is True else _merge(result, passed)
                else:
                    cells: list[tuple[Any, ...]] = []
                    for col, test in tests:
                        value = actual[col]
                        if value is _UNSET:
                            value = actual[col] = inputs[col](c, m)
                        passed, a, b = test(c, m, value)
                        cells.append((col, value, passed, a, b))
                        if passed is False:
                            result = False
                            break
                        if type(passed) is Unknown:
                            result = passed if result is True else _merge(result, passed)
                    trace.append(("row", owner, index, result, tuple(cells)))
                if result is True:
                    if unknown_rows and hit == "F":
                        break
                    matched.append((index, [f(c, m) for f in outputs]))
                    if hit == "F":
                        break
                elif result is not False:
                    unknown_rows.append(result)
            if unknown_rows:
                u = _merge(*unknown_rows)
                return tuple(u for _ in range(n_out))
            if not matched:
                if trace is not None:
                    trace.append(("nomatch", owner))
                return tuple(d(c, m) if d is not None else None for d in defaults)
            if len(matched) > 1 or hit in ("C+", "C<", "C>"):
                # an unknown output among several matches leaves the combined result unknown
                unknown_outputs = [v for _, outs in matched for v in outs if type(v) is Unknown]
                if unknown_outputs:
                    u = _merge(*unknown_outputs)
                    return tuple(u for _ in range(n_out))
            indices = tuple(i for i, _ in matched)
            if m is None:
                c.fired[owner] = indices
            if trace is not None:
                trace.append(("fired", owner, indices, hit))
            return _apply_hit(hit, matched, n_out, priorities, owner, row_ids, policy)
        return evaluate

    def _test(self, test: ir.Test) -> Callable[[Case, Any, Any], tuple[Any, Any, Any]]:
        kind = test.kind
        if kind == "any":
            return lambda c, m, v: (True, None, None)
        if kind == "null":
            return lambda c, m, v: (v if type(v) is Unknown else v is None, None, None)
        if kind == "compare":
            assert test.a is not None
            endpoint = self.expr(test.a)
            op = test.op or "=="
            if isinstance(test.a, ir.Const):  # a literal cell (`true`, `"north"`, `< 700`): no call
                a_const = test.a.value

                def compare_const(c: Case, m: Any, v: Any) -> tuple[Any, Any, Any]:
                    a = a_const
                    if type(v) is Unknown or type(a) is Unknown:
                        return _merge(v, a), a, None
                    result = _cmp(op, v, a)
                    return (result is True), a, None
                return compare_const

            def compare(c: Case, m: Any, v: Any) -> tuple[Any, Any, Any]:
                a = endpoint(c, m)
                if type(v) is Unknown or type(a) is Unknown:
                    return _merge(v, a), a, None
                result = _cmp(op, v, a)
                return (result is True), a, None
            return compare
        if kind == "range":
            assert test.a is not None and test.b is not None
            low, high = self.expr(test.a), self.expr(test.b)
            low_op = ">=" if test.low_closed else ">"
            high_op = "<=" if test.high_closed else "<"

            def in_range(c: Case, m: Any, v: Any) -> tuple[Any, Any, Any]:
                a, b = low(c, m), high(c, m)
                if type(v) is Unknown or type(a) is Unknown or type(b) is Unknown:
                    return _merge(v, a, b), a, b
                return (_cmp(low_op, v, a) is True and _cmp(high_op, v, b) is True), a, b
            return in_range
        subtests = [self._test(t) for t in test.tests]
        negate = kind == "not"

        def any_of(c: Case, m: Any, v: Any) -> tuple[Any, Any, Any]:
            unknown: list[Any] = []
            for sub in subtests:
                passed, _, _ = sub(c, m, v)
                if passed is True:
                    return (not negate), None, None
                if type(passed) is Unknown:
                    unknown.append(passed)
            if unknown:
                return _merge(*unknown), None, None
            return negate, None, None
        return any_of

    # -- expressions ----------------------------------------------------------------------------

    def expr(self, e: ir.Expr) -> Fn:  # noqa: C901 - one dispatch over the IR's node kinds
        if isinstance(e, ir.Const):
            value = e.value
            return lambda c, m: value
        if isinstance(e, ir.AsOf):
            return lambda c, m: c.as_of
        if isinstance(e, ir.Ref):
            getters = self.getters
            name = e.name
            if self._unique_names and name not in getters and name in self._pending:
                getters[name] = self._derived(self._pending.pop(name))  # build the target first
            if self._unique_names and name in getters:
                return getters[name]  # defined once, never replaced: skip the lookup per call
            return lambda c, m: getters[name](c, m)
        if isinstance(e, ir.Unary):
            f = self.expr(e.operand)
            if e.op == "not":
                def not_(c: Case, m: Any) -> Any:
                    v = f(c, m)
                    if type(v) is Unknown or v is None:
                        return v
                    return not v
                return not_
            if e.op == "neg":
                def neg(c: Case, m: Any) -> Any:
                    v = f(c, m)
                    if type(v) is Unknown or v is None:
                        return v
                    return -v
                return neg
            return f
        if isinstance(e, ir.Binary):
            return self._binary(e)
        if isinstance(e, ir.Compare):
            left, right, op = self.expr(e.left), self.expr(e.right), e.op

            def compare(c: Case, m: Any) -> Any:
                a = left(c, m)
                b = right(c, m)
                if type(a) is Unknown or type(b) is Unknown:
                    return _merge(a, b)
                return _cmp(op, a, b)
            return compare
        if isinstance(e, ir.BoolOp):
            operands = [self.expr(o) for o in e.operands]
            stop = e.op == "or"  # the value that decides: True for or, False for and

            def boolop(c: Case, m: Any) -> Any:
                unknown: list[Any] = []
                null = False
                for f in operands:
                    v = f(c, m)
                    if v is stop:
                        return stop
                    if type(v) is Unknown:
                        unknown.append(v)
                    elif v is None:
                        null = True
                if unknown:
                    return _merge(*unknown)
                return None if null else (not stop)
            return boolop
        if isinstance(e, ir.IfElse):
            cond, then, otherwise = self.expr(e.condition), self.expr(e.then), self.expr(e.otherwise)

            def if_else(c: Case, m: Any) -> Any:
                v = cond(c, m)
                if type(v) is Unknown:
                    return v
                return then(c, m) if v is True else otherwise(c, m)
            return if_else
        if isinstance(e, ir.In):
            item = self.expr(e.item)
            options = [self.expr(o) for o in e.options]
            negate = e.negate

            def in_(c: Case, m: Any) -> Any:
                v = item(c, m)
                if type(v) is Unknown or v is None:
                    return v
                unknown = []
                for f in options:
                    o = f(c, m)
                    if type(o) is Unknown:
                        unknown.append(o)
                    elif o == v:
                        return not negate
                if unknown:
                    return _merge(*unknown)
                return negate
            return in_
        if isinstance(e, ir.Call):
            return self._call(e)
        if isinstance(e, ir.Aggregate):
            return self._aggregate(e)
        raise TypeError(f"unknown IR node {e!r}")  # pragma: no cover - the compiler builds the IR

    def _binary(self, e: ir.Binary) -> Fn:
        left, right = self.expr(e.left), self.expr(e.right)
        raw = _raw_binary(e)

        if isinstance(e.right, ir.Const):  # a constant right operand: no call to fetch it
            b_const = e.right.value

            def binary_const(c: Case, m: Any) -> Any:
                a = left(c, m)
                b = b_const
                if type(a) is Unknown or type(b) is Unknown:
                    return _merge(a, b)
                if a is None or b is None:
                    return None
                try:
                    return raw(a, b)
                except (DivisionByZero, InvalidOperation, ZeroDivisionError):
                    return None  # FEEL: division by zero is null
            return binary_const

        def binary(c: Case, m: Any) -> Any:
            a = left(c, m)
            b = right(c, m)
            if type(a) is Unknown or type(b) is Unknown:
                return _merge(a, b)
            if a is None or b is None:
                return None
            try:
                return raw(a, b)
            except (DivisionByZero, InvalidOperation, ZeroDivisionError):
                return None  # FEEL: division by zero is null
        return binary

    def _call(self, e: ir.Call) -> Fn:
        fn = e.function
        args = [self.expr(a) for a in e.args]
        rounding = self.policy.rounding

        def values(c: Case, m: Any) -> list[Any] | Any:
            vs = [a(c, m) for a in args]
            null = False
            for v in vs:
                if type(v) is Unknown:
                    return _merge(*vs)
                if v is None:
                    null = True
            return None if null else vs

        impl = _call_impl(fn, rounding)

        if fn == "age":
            def age(c: Case, m: Any) -> Any:
                vs = values(c, m)
                if type(vs) is not list:
                    return vs
                return _age(vs[0], c.as_of)
            return age

        def call(c: Case, m: Any) -> Any:
            vs = values(c, m)
            if type(vs) is not list:
                return vs
            try:
                return impl(*vs)
            except (OverflowError, ValueError, InvalidOperation):
                return None
        return call

    def _aggregate(self, e: ir.Aggregate) -> Fn:
        fn = e.function
        body = self.expr(e.body) if e.body is not None else None
        where = self.expr(e.where) if e.where is not None else None
        integer = e.body is not None and e.body.type == "integer"

        if where is None and body is None and fn == "count":
            def count_members(c: Case, m: Any) -> Any:
                members = c.members
                if members is None:
                    return Unknown(frozenset(("members",)))
                return len(members)
            return count_members

        if where is None and body is not None and fn == "sum":
            add = CONTEXT.add

            def sum_members(c: Case, m: Any) -> Any:
                members = c.members
                if members is None:
                    return Unknown(frozenset(("members",)))
                unknown: list[Any] = []
                picked: list[Any] = []
                for i in range(len(members)):
                    v = body(c, i)
                    if type(v) is Unknown:
                        unknown.append(v)
                    elif v is not None:
                        picked.append(v)
                if unknown:
                    return _merge(*unknown)
                total: Any = 0 if integer else Decimal(0)
                for v in picked:
                    total = total + v if integer else add(total, v)
                return total
            return sum_members

        def aggregate(c: Case, m: Any) -> Any:
            members = c.members
            if members is None:
                return Unknown(frozenset(("members",)))
            unknown: list[Any] = []
            picked: list[Any] = []
            for i in range(len(members)):
                if where is not None:
                    ok = where(c, i)
                    if type(ok) is Unknown:
                        if fn in ("any", "all"):
                            unknown.append(ok)
                            continue
                        unknown.append(ok)
                        continue
                    if fn == "any":
                        if ok is True:
                            return True
                        continue
                    if fn == "all":
                        if ok is not True:
                            return False
                        continue
                    if ok is not True:
                        continue
                if body is None:
                    picked.append(1)
                    continue
                v = body(c, i)
                if type(v) is Unknown:
                    unknown.append(v)
                else:
                    picked.append(v)
            if unknown:
                return _merge(*unknown)
            if fn == "count":
                return len(picked)
            if fn == "any":
                return False
            if fn == "all":
                return True
            if fn == "collect":
                return tuple(picked)
            values = [v for v in picked if v is not None]
            if fn == "sum":
                total: Any = 0 if integer else Decimal(0)
                for v in values:
                    total = total + v if integer else CONTEXT.add(total, v)
                return total
            if not values:
                return None
            return min(values) if fn == "min" else max(values)
        return aggregate


def _raw_binary(e: ir.Binary) -> Callable[[Any, Any], Any]:
    """The arithmetic of one binary node (operands known, neither unknown nor null)."""
    op = e.op
    integer = e.type == "integer" and e.left.type == "integer" and e.right.type == "integer"
    if op == "+":
        raw: Callable[[Any, Any], Any] = (lambda a, b: a + b) if integer else CONTEXT.add
    elif op == "-":
        raw = (lambda a, b: a - b) if integer else CONTEXT.subtract
    elif op == "*":
        raw = (lambda a, b: a * b) if integer else CONTEXT.multiply
    elif op == "/":
        raw = CONTEXT.divide
    elif op == "//":
        raw = lambda a, b: a // b if type(a) is int and type(b) is int else int(  # noqa: E731
            CONTEXT.divide(a, b).to_integral_value(rounding=ROUND_FLOOR))  # floor, as for integers
    elif op == "%":
        raw = (lambda a, b: a % b) if integer else lambda a, b: CONTEXT.subtract(a, CONTEXT.multiply(b, (CONTEXT.divide(a, b)).to_integral_value(rounding=ROUND_FLOOR)))  # noqa: E731
    else:
        raw = (lambda a, b: a ** b) if integer else CONTEXT.power
    return raw


def _call_impl(fn: str, rounding: ir.Rounding) -> Callable[..., Any]:
    """The function a call node applies (arguments known, neither unknown nor null); not `age`."""
    impl: Callable[..., Any]
    if fn == "min":
        impl = min
    elif fn == "max":
        impl = max
    elif fn == "abs":
        impl = abs
    elif fn == "floor":
        impl = lambda x: int(Decimal(x).to_integral_value(rounding=ROUND_FLOOR))  # noqa: E731
    elif fn == "ceil":
        impl = lambda x: int(Decimal(x).to_integral_value(rounding=ROUND_CEILING))  # noqa: E731
    elif fn == "round_money":
        impl = lambda x: _round(x, rounding)  # noqa: E731
    elif fn == "round":
        impl = lambda x, q: Decimal(x).quantize(q, rounding=ROUND_HALF_UP, context=CONTEXT)  # noqa: E731
    elif fn == "age":
        def impl(born: dt.date) -> int:
            raise AssertionError  # the callers use _age: needs as_of
    elif fn == "months_between":
        impl = _months_between
    elif fn == "days_between":
        impl = lambda a, b: (b - a).days  # noqa: E731
    elif fn == "add_months":
        impl = _add_months
    elif fn == "add_days":
        impl = lambda d, n: d + dt.timedelta(days=n)  # noqa: E731
    else:  # pragma: no cover - the compiler accepts only the functions above
        raise TypeError(fn)
    return impl


_ABSENT = object()
_UNSET = object()


def _locate(policy: ir.CompiledPolicy | None, owner: str, row: str) -> dict[str, Any]:
    if policy is None:
        return {"path": owner}
    for kind in ("decisions", "derived"):
        file, line, column = policy.location(f"{kind}.{owner}.rows.{row}")
        if file is not None:
            return {"file": file, "line": line, "column": column, "path": f"{kind}.{owner}.table.rows"}
    return {"path": owner}


def _apply_hit(hit: str, matched: list[tuple[int, list[Any]]], n_out: int,
               priorities: list[dict[Any, int]], owner: str, row_ids: list[str],
               policy: ir.CompiledPolicy | None = None) -> tuple[Any, ...]:
    if hit in ("F",) or len(matched) == 1 and hit in ("U", "A", "P"):
        return tuple(matched[0][1])
    if hit == "U":
        ids = ", ".join(f"`{row_ids[i]}`" for i, _ in matched)
        raise PolicyError([make("PE301", f"table `{owner}` has hit policy U but rows {ids} all match this case",
                                hint="make the rows exclusive, or choose another hit policy (F, P, C...)",
                                **_locate(policy, owner, row_ids[matched[1][0]]))])
    if hit == "A":
        first = matched[0][1]
        for index, outputs in matched[1:]:
            if outputs != first:
                raise PolicyError([make("PE302", f"table `{owner}` has hit policy A but rows "
                                         f"`{row_ids[matched[0][0]]}` and `{row_ids[index]}` give different outputs",
                                         hint="rows that overlap under A must agree; use P or F to choose",
                                         **_locate(policy, owner, row_ids[index]))])
        return tuple(first)
    if hit in ("P", "O"):
        def rank(entry: tuple[int, list[Any]]) -> tuple[int, ...]:
            return tuple(priorities[o].get(entry[1][o], len(priorities[o])) for o in range(n_out))
        ordered = sorted(matched, key=rank)  # stable: rule order breaks ties
        if hit == "P":
            return tuple(ordered[0][1])
        return tuple(tuple(outputs[o] for _, outputs in ordered) for o in range(n_out))
    if hit in ("R", "C"):
        return tuple(tuple(outputs[o] for _, outputs in matched) for o in range(n_out))
    if hit == "C#":  # DMN: count(list of outputs), every matched row counts
        return (len(matched),)
    values = [outputs[0] for _, outputs in matched if outputs[0] is not None]
    if not values:
        return (None,)
    if hit == "C+":
        total: Any = 0
        for v in values:
            total = CONTEXT.add(total, v) if not (type(total) is int and type(v) is int) else total + v
        return (total,)
    if hit == "C<":
        return (min(values),)
    return (max(values),)


# -- code generation ----------------------------------------------------------------------------
#
# The backend turns each derived value, each table and each decision output into one
# straight-line Python function (instead of one closure per IR node), compiled once per
# policy and backend. This is an optimisation only: the functions do exactly what the
# closures above do, in the same order (same values, same trace events, same errors), and the
# closures remain the fallback for the rare node kinds that are not generated.
#
# Why executing the generated source is safe: the source is assembled only from the fixed
# templates in this class, from identifiers this class makes up (``_k12``, ``_t3``, ``_d4``...),
# from operator tokens taken from the fixed whitelists below (``_BINARY_OPS``, ``_COMPARE_OPS``)
# and from decimal digits formatted from Python ``int``s this class counts (row indices, table
# columns). No text of the policy (no name, string, number, label or path) is ever pasted into
# the source: every value from the IR, and every helper, is passed in the namespace dict under
# a generated name (the constants table, ``_Gen.const``), and the IR it reads is the compiler's
# type-checked IR, not policy text. A policy therefore cannot inject code whatever its names
# and constants contain.

_COMPARE_OPS = {"<": "<", "<=": "<=", ">": ">", ">=": ">=", "==": "==", "!=": "!="}
_INT_OPS = {"+": "+", "-": "-", "*": "*"}
_DECIMAL_CALLS = {"+": "_add", "-": "_sub", "*": "_mul"}
#: IR type -> the exact Python type of its known values (as the intake and the arithmetic give them)
_TYPE_TESTS = {"money": "_Decimal", "decimal": "_Decimal", "integer": "int", "boolean": "bool",
               "date": "_date", "text": "str", "enum": "str"}
_HELPERS: dict[str, Any] = {}  # filled below, after the helpers are defined


class _Unsupported(Exception):
    """A node kind the generator leaves to the closures (never raised to callers)."""


def _op(table: dict[str, str], op: str | None) -> str:
    if op not in table:
        raise _Unsupported(f"operator {op!r}")
    return table[op]


def _digits(n: int) -> str:
    if type(n) is not int:  # only counted ints are formatted into the source
        raise _Unsupported(f"not an int: {n!r}")
    return str(n)


class _Gen:
    """Generated source for one Backend: functions share one namespace (the constants table)."""

    #: a derived value referenced once is generated inline at its reference (as well as in its own
    #: function); one referenced twice too, but only this deep (the code grows with each copy)
    INLINE_DEPTH = 2

    def __init__(self, backend: Backend):
        self.b = backend
        self.tracing = backend.tracing
        self.ns: dict[str, Any] = dict(_HELPERS)
        self._const_ids: dict[int, str] = {}
        self.chunks: list[str] = []
        self.fallbacks: list[tuple[str, Callable[[], Any]]] = []  # (ns name, build closure later)
        self.fn_names: dict[str, str] = {}  # derived name -> generated function name
        self.counter = 0
        self.refs: dict[str, int] = {}
        self.inline_depth = 0
        # per function being generated
        self.lines: list[str] = []
        self.indent = 1
        self.uses: set[str] = set()
        #: values already computed in an enclosing (dominating) block: key -> local holding it
        self.scopes: list[dict[tuple[Any, ...], Any]] = [{}]
        #: member variable -> local holding ``members[var]`` (inside aggregate loops)
        self.rows: dict[str, str] = {}

    # -- helpers --------------------------------------------------------------------------
    def new(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def const(self, value: Any) -> str:
        """The generated name bound to ``value`` in the namespace (the constants table)."""
        key = id(value)
        name = self._const_ids.get(key)
        if name is None or self.ns.get(name) is not value:
            name = self.new("_k")
            self.ns[name] = value
            self._const_ids[key] = name
        return name

    def fallback(self, build: Callable[[], Any]) -> str:
        """A closure of the old backend, built after every getter exists; called from the code."""
        name = self.new("_x")
        self.fallbacks.append((name, build))
        return name

    def emit(self, line: str) -> None:
        self.lines.append("    " * self.indent + line)

    @contextmanager
    def block(self, header: str | None = None) -> Iterator[None]:
        """A nested block: what is computed inside is not known after it."""
        if header is not None:
            self.emit(header)
        self.indent += 1
        self.scopes.append({})
        try:
            yield
        finally:
            self.scopes.pop()
            self.indent -= 1

    def known(self, key: tuple[Any, ...]) -> Any:
        for scope in reversed(self.scopes):
            if key in scope:
                return scope[key]
        return None

    def use(self, local: str) -> str:
        self.uses.add(local)
        return local

    def start(self) -> None:
        self.lines = []
        self.indent = 1
        self.uses = set()
        self.scopes = [{}]
        self.rows = {}

    def save(self) -> tuple[Any, ...]:
        return (self.lines, self.indent, self.uses, self.scopes, self.rows, self.inline_depth)

    def restore(self, saved: tuple[Any, ...]) -> None:
        self.lines, self.indent, self.uses, self.scopes, self.rows, self.inline_depth = saved

    def finish(self, header: str, prologue_first: list[str] | None = None, defined: tuple[str, ...] = ()) -> None:
        pro = list(prologue_first or [])
        for local, attr in (("memo", "c.memo"), ("trace", "c.trace"), ("as_of", "c.as_of"),
                            ("members", "c.members"), ("values", "c.values")):
            if local in self.uses and local not in defined:
                pro.append(f"    {local} = {attr}")
        self.chunks.append("\n".join([header, *pro, *self.lines]) + "\n")

    def round(self, v: str) -> str:
        """A new local: ``v`` rounded to the policy's money unit (as `_round`)."""
        rounding = self.b.policy.rounding
        unit, mode = self.const(rounding.unit), self.const(ROUNDING_MODES[rounding.mode])
        t = self.new("_t")
        self.emit(f"if type({v}) is _Decimal:")
        self.emit(f"    {t} = {v}.quantize({unit}, rounding={mode}, context=_CONTEXT)")
        self.emit(f"elif type({v}) is int:")
        self.emit(f"    {t} = _Decimal({v}).quantize({unit}, rounding={mode}, context=_CONTEXT)")
        self.emit("else:")
        self.emit(f"    {t} = {v}")
        return t

    def fast(self, operands: list[tuple[ir.Expr, str]]) -> str | None:
        """A test that every operand holds a value of its declared type (so neither unknown nor
        null): the common case, tested first; None when some type has no such test."""
        tests = []
        for e, atom in operands:
            if isinstance(e, ir.Const):
                if e.value is None:
                    return None
                continue  # a constant: known, never unknown
            check = _TYPE_TESTS.get(e.type)
            if check is None:
                return None
            tests.append(f"type({atom}) is {check}")
        return " and ".join(tests) if tests else "True"

    # -- expressions ------------------------------------------------------------------------
    def expr(self, e: ir.Expr, mv: str) -> str:  # noqa: C901 - one dispatch over the node kinds
        """Emit statements computing ``e`` for member variable ``mv``; return the atom holding it.

        The atom is a constant's name, ``as_of`` or a local assigned once (never reassigned)."""
        if isinstance(e, ir.Const):
            return self.const(e.value)
        if isinstance(e, ir.AsOf):
            return self.use("as_of")
        if isinstance(e, ir.Ref):
            return self.ref(e, mv)
        t = self.new("_t")
        if isinstance(e, ir.Unary):
            v = self.expr(e.operand, mv)
            if e.op == "not":
                self.emit(f"{t} = {v} if type({v}) is _Unknown or {v} is None else not {v}")
            elif e.op == "neg":
                self.emit(f"{t} = {v} if type({v}) is _Unknown or {v} is None else -{v}")
            else:
                return v
            return t
        if isinstance(e, ir.Binary):
            a = self.expr(e.left, mv)
            b = self.expr(e.right, mv)
            integer = e.type == "integer" and e.left.type == "integer" and e.right.type == "integer"
            if integer and e.op in _INT_OPS:
                op = f"{a} {_INT_OPS[e.op]} {b}"
            elif not integer and e.op in _DECIMAL_CALLS:
                op = f"{_DECIMAL_CALLS[e.op]}({a}, {b})"
            elif e.op == "/":
                op = f"_div({a}, {b})"
            else:  # //, %, **: the closures' functions
                op = f"{self.const(_raw_binary(e))}({a}, {b})"
            fast = self.fast([(e.left, a), (e.right, b)])
            if fast is not None:  # the same arithmetic, without the tests for unknown and null
                self.emit(f"if {fast}:")
                self.emit("    try:")
                self.emit(f"        {t} = {op}")
                self.emit("    except (_DivisionByZero, _InvalidOperation, ZeroDivisionError):")
                self.emit(f"        {t} = None")
                self.emit(f"elif type({a}) is _Unknown or type({b}) is _Unknown:")
            else:
                self.emit(f"if type({a}) is _Unknown or type({b}) is _Unknown:")
            self.emit(f"    {t} = _merge({a}, {b})")
            self.emit(f"elif {a} is None or {b} is None:")
            self.emit(f"    {t} = None")
            self.emit("else:")
            self.emit("    try:")
            self.emit(f"        {t} = {op}")
            self.emit("    except (_DivisionByZero, _InvalidOperation, ZeroDivisionError):")
            self.emit(f"        {t} = None")
            return t
        if isinstance(e, ir.Compare):
            a = self.expr(e.left, mv)
            b = self.expr(e.right, mv)
            op = _op(_COMPARE_OPS, e.op)
            fast = self.fast([(e.left, a), (e.right, b)])
            if fast is not None:  # the same comparison, without the tests for unknown and null
                self.emit(f"if {fast}:")
                self.emit("    try:")
                self.emit(f"        {t} = bool({a} {op} {b})")
                self.emit("    except TypeError:")
                self.emit(f"        {t} = None")
                self.emit(f"elif type({a}) is _Unknown or type({b}) is _Unknown:")
            else:
                self.emit(f"if type({a}) is _Unknown or type({b}) is _Unknown:")
            self.emit(f"    {t} = _merge({a}, {b})")
            self.emit(f"elif {a} is None or {b} is None:")
            self.emit(f"    {t} = None")
            self.emit("else:")
            self.emit("    try:")
            self.emit(f"        {t} = bool({a} {op} {b})")
            self.emit("    except TypeError:")
            self.emit(f"        {t} = None")
            return t
        if isinstance(e, ir.BoolOp):
            stop_s = "True" if e.op == "or" else "False"
            other_s = "False" if e.op == "or" else "True"
            unk, null = self.new("_u"), self.new("_n")
            self.emit(f"{unk} = []")
            self.emit(f"{null} = False")
            self.emit(f"{t} = _UNSET")
            for operand in e.operands:
                with self.block(f"if {t} is _UNSET:"):
                    v = self.expr(operand, mv)
                    self.emit(f"if {v} is {stop_s}:")
                    self.emit(f"    {t} = {stop_s}")
                    self.emit(f"elif type({v}) is _Unknown:")
                    self.emit(f"    {unk}.append({v})")
                    self.emit(f"elif {v} is None:")
                    self.emit(f"    {null} = True")
            self.emit(f"if {t} is _UNSET:")
            self.emit(f"    {t} = _merge(*{unk}) if {unk} else (None if {null} else {other_s})")
            return t
        if isinstance(e, ir.IfElse):
            cond = self.expr(e.condition, mv)
            self.emit(f"if type({cond}) is _Unknown:")
            self.emit(f"    {t} = {cond}")
            with self.block(f"elif {cond} is True:"):
                v = self.expr(e.then, mv)
                self.emit(f"{t} = {v}")
            with self.block("else:"):
                v = self.expr(e.otherwise, mv)
                self.emit(f"{t} = {v}")
            return t
        if isinstance(e, ir.In):
            item = self.expr(e.item, mv)
            unk = self.new("_u")
            negate = "True" if e.negate else "False"
            self.emit(f"if type({item}) is _Unknown or {item} is None:")
            self.emit(f"    {t} = {item}")
            with self.block("else:"):
                self.emit(f"{unk} = []")
                self.emit(f"{t} = _UNSET")
                for option in e.options:
                    with self.block(f"if {t} is _UNSET:"):
                        o = self.expr(option, mv)
                        self.emit(f"if type({o}) is _Unknown:")
                        self.emit(f"    {unk}.append({o})")
                        self.emit(f"elif {o} == {item}:")
                        self.emit(f"    {t} = not {negate}")
                self.emit(f"if {t} is _UNSET:")
                self.emit(f"    {t} = _merge(*{unk}) if {unk} else {negate}")
            return t
        if isinstance(e, ir.Call):
            return self.call(e, mv, t)
        if isinstance(e, ir.Aggregate):
            return self.aggregate(e, mv, t)
        raise _Unsupported(repr(e))

    def ref(self, e: ir.Ref, mv: str) -> str:  # noqa: C901
        b = self.b
        name = e.name
        if not b._unique_names:  # the closures' lookup per call, whatever the name resolves to
            t = self.new("_t")
            self.emit(f"{t} = {self.const(b.getters)}[{self.const(name)}](c, {mv})")
            return t
        kind = b._kinds.get(name)
        k = self.const(name)
        if kind == "input":
            seen = self.known(("input", name, mv))
            if seen is not None:  # read above, in this block or an enclosing one: same value, traced
                return seen
            t = self.new("_t")
            node = b._inputs[name]
            if node.entity == "member":
                row = self.rows.get(mv)
                if row is not None:  # inside an aggregate loop: members[mv] is known
                    self.emit(f"{t} = {row}.get({k}, _ABSENT)")
                    inner = ""
                else:
                    members = self.use("members")
                    self.emit(f"if {members} is None:")
                    self.emit(f"    {t} = _Unknown(_MEMBERS)")
                    self.emit("else:")
                    self.emit(f"    {t} = {members}[{mv}].get({k}, _ABSENT)")
                    inner = "    "
                path = self.const(".".join(node.path))
                self.emit(f"{inner}if {t} is _ABSENT:")
                self.emit(f"{inner}    {t} = _Unknown(frozenset((f\"members[{{{mv}}}].{{{path}}}\",)))")
                if self.tracing:
                    trace, memo = self.use("trace"), self.use("memo")
                    key = self.new("_q")
                    self.emit(f"{inner}if {trace} is not None:")
                    self.emit(f"{inner}    {key} = (\"i\", {k}, {mv})")
                    self.emit(f"{inner}    if {key} not in {memo}:")
                    self.emit(f"{inner}        {memo}[{key}] = True")
                    self.emit(f"{inner}        {trace}.append((\"input\", {k}, {mv}, {t}))")
            else:
                values = self.use("values")
                self.emit(f"{t} = {values}.get({k}, _ABSENT)")
                self.emit(f"if {t} is _ABSENT:")
                self.emit(f"    {t} = _Unknown(frozenset(({self.const('.'.join(node.path))},)))")
                if self.tracing:
                    trace, memo = self.use("trace"), self.use("memo")
                    key = self.const(("i", name))
                    self.emit(f"if {trace} is not None and {key} not in {memo}:")
                    self.emit(f"    {memo}[{key}] = True")
                    self.emit(f"    {trace}.append((\"input\", {k}, None, {t}))")
            self.scopes[-1][("input", name, mv)] = t
            return t
        if kind == "param":
            param = b._params[name]
            t = self.new("_t")
            if param.by:
                self.emit(f"{t} = {self.const(b.getters[name])}(c, {mv})")
                return t
            seen = self.known(("param", name))
            if seen is not None:  # looked up above: the same value and event; the event again
                t, ev = seen
            else:
                table = self.const(b._param_in_force(param))
                fill = self.const(b._param_fill(param))
                as_of = self.use("as_of")
                ev = self.new("_e")
                self.emit("try:")
                self.emit(f"    {t}, {ev} = {table}[{as_of}]")
                self.emit("except KeyError:")
                self.emit(f"    {t}, {ev} = {fill}({as_of})")
                self.scopes[-1][("param", name)] = (t, ev)
            if self.tracing:
                trace = self.use("trace")
                self.emit(f"if {trace} is not None:")
                self.emit(f"    {trace}.append({ev})")
            return t
        if kind == "derived":
            node = b._derived_nodes[name]
            scope_mv = mv if node.entity == "member" else None
            seen = self.known(("derived", name, scope_mv))
            if seen is not None:  # computed or read above: the memo holds this value now
                return seen
            t = self.new("_t")
            memo = self.use("memo")
            key = f"({k}, {mv})" if node.entity == "member" else k
            self.emit(f"{t} = {memo}.get({key}, _ABSENT)")
            refs = self.refs.get(name, 0)
            inline = node.table is None and (refs <= 1 or refs == 2 and self.inline_depth < self.INLINE_DEPTH)
            with self.block(f"if {t} is _ABSENT:"):
                if inline:  # the body of its function, here (same statements, same memo and events)
                    self.inline_depth += 1
                    v = self.derived_body(node, mv if node.entity == "member" else "None")
                    self.inline_depth -= 1
                    self.emit(f"{t} = {v}")
                else:
                    self.emit(f"{t} = {self.fn_names[name]}(c, {mv})")
            self.scopes[-1][("derived", name, scope_mv)] = t
            return t
        if kind == "output":  # another decision's output: the memo, else its getter runs it
            t = self.new("_t")
            getters = b.getters
            memo = self.use("memo")
            self.emit(f"{t} = {memo}.get({k}, _ABSENT)")
            self.emit(f"if {t} is _ABSENT:")
            self.emit(f"    {t} = {self.fallback(lambda: getters[name])}(c, {mv})")
            return t
        t = self.new("_t")  # a name the generator does not know: the closure, as before
        self.emit(f"{t} = {self.fallback(lambda: b.expr(e))}(c, {mv})")
        return t

    def call(self, e: ir.Call, mv: str, t: str) -> str:
        fn = e.function
        args = [self.expr(a, mv) for a in e.args]
        if not args:
            raise _Unsupported("call without arguments")
        unknown = " or ".join(f"type({a}) is _Unknown" for a in args)
        null = " or ".join(f"{a} is None" for a in args)
        impl = {"min": "_min", "max": "_max", "abs": "_abs"}.get(fn)
        fast = self.fast(list(zip(e.args, args))) if impl is not None else None
        if fast is not None:  # the same call, without the tests for unknown and null
            self.emit(f"if {fast}:")
            self.emit("    try:")
            self.emit(f"        {t} = {impl}({', '.join(args)})")
            self.emit("    except (OverflowError, ValueError, _InvalidOperation):")
            self.emit(f"        {t} = None")
            self.emit(f"elif {unknown}:")
        else:
            self.emit(f"if {unknown}:")
        self.emit(f"    {t} = _merge({', '.join(args)})")
        self.emit(f"elif {null}:")
        self.emit(f"    {t} = None")
        self.emit("else:")
        if fn == "age":
            self.emit(f"    {t} = _age({args[0]}, {self.use('as_of')})")
            return t
        if impl is None:
            impl = self.const(_call_impl(fn, self.b.policy.rounding))
        self.emit("    try:")
        self.emit(f"        {t} = {impl}({', '.join(args)})")
        self.emit("    except (OverflowError, ValueError, _InvalidOperation):")
        self.emit(f"        {t} = None")
        return t

    def aggregate(self, e: ir.Aggregate, mv: str, t: str) -> str:
        fn = e.function
        if fn not in ("sum", "count", "any", "all", "min", "max", "collect"):
            raise _Unsupported(fn)
        members = self.use("members")
        integer = e.body is not None and e.body.type == "integer"
        self.emit(f"if {members} is None:")
        self.emit(f"    {t} = _Unknown(_MEMBERS)")
        if e.where is None and e.body is None and fn == "count":
            self.emit("else:")
            self.emit(f"    {t} = len({members})")
            return t
        i, row, unk, picked = self.new("_i"), self.new("_r"), self.new("_u"), self.new("_p")
        with self.block("else:"):
            self.emit(f"{unk} = []")
            self.emit(f"{picked} = []")
            self.emit(f"{t} = _UNSET")
            with self.block(f"for {i} in range(len({members})):"):
                self.emit(f"{row} = {members}[{i}]")
                self.rows[i] = row
                if e.where is not None:
                    ok = self.expr(e.where, i)
                    self.emit(f"if type({ok}) is _Unknown:")
                    self.emit(f"    {unk}.append({ok})")
                    self.emit("    continue")
                    if fn == "any":
                        self.emit(f"if {ok} is True:")
                        self.emit(f"    {t} = True")
                        self.emit("    break")
                        self.emit("continue")
                    elif fn == "all":
                        self.emit(f"if {ok} is not True:")
                        self.emit(f"    {t} = False")
                        self.emit("    break")
                        self.emit("continue")
                    else:
                        self.emit(f"if {ok} is not True:")
                        self.emit("    continue")
                if fn not in ("any", "all") or e.where is None:
                    if e.body is None:
                        self.emit(f"{picked}.append(1)")
                    else:
                        v = self.expr(e.body, i)
                        self.emit(f"if type({v}) is _Unknown:")
                        self.emit(f"    {unk}.append({v})")
                        if fn == "sum" and e.where is None:  # as the closures' sum loop: nulls left out here
                            self.emit(f"elif {v} is not None:")
                            self.emit(f"    {picked}.append({v})")
                        else:
                            self.emit("else:")
                            self.emit(f"    {picked}.append({v})")
                del self.rows[i]
            self.emit(f"if {t} is _UNSET:")
            self.emit(f"    if {unk}:")
            self.emit(f"        {t} = _merge(*{unk})")
            self.emit("    else:")
            if fn == "count":
                self.emit(f"        {t} = len({picked})")
            elif fn == "any":
                self.emit(f"        {t} = False")
            elif fn == "all":
                self.emit(f"        {t} = True")
            elif fn == "collect":
                self.emit(f"        {t} = tuple({picked})")
            elif fn == "sum":
                self.emit(f"        {t} = {'0' if integer else '_ZERO'}")
                self.emit(f"        for _v in {picked}:")
                if e.where is not None:
                    self.emit("            if _v is None:")
                    self.emit("                continue")
                self.emit(f"            {t} = {t} + _v" if integer else f"            {t} = _add({t}, _v)")
            else:
                vals = self.new("_w")
                self.emit(f"        {vals} = [_v for _v in {picked} if _v is not None]")
                self.emit(f"        {t} = ({'_min' if fn == 'min' else '_max'}({vals}) if {vals} else None)")
        return t

    # -- functions ---------------------------------------------------------------------------
    def derived_body(self, node: ir.DerivedNode, mv: str) -> str:
        """Compute a derived value (memo known not to hold it), store it in the memo, trace it."""
        k = self.const(node.name)
        if node.table is not None:
            table = self.table_fn(node.table)
            v = self.new("_t")
            self.emit(f"{v} = {table}(c, {mv})[0]")
        else:
            assert node.expr is not None
            v = self.expr(node.expr, mv)
        if node.type == "money":
            v = self.round(v)
        memo = self.use("memo")
        self.emit(f"{memo}[{f'({k}, {mv})' if node.entity == 'member' else k}] = {v}")
        if self.tracing:
            trace = self.use("trace")
            self.emit(f"if {trace} is not None:")
            self.emit(f"    {trace}.append((\"derived\", {k}, {mv}, {v}))")
        return v

    def derived(self, node: ir.DerivedNode) -> None:
        fn = self.fn_names[node.name]
        self.start()
        k = self.const(node.name)
        if node.entity == "member":
            first = ["    memo = c.memo", f"    if ({k}, m) in memo:", f"        return memo[({k}, m)]"]
            v = self.derived_body(node, "m")
        else:
            first = ["    memo = c.memo", f"    if {k} in memo:", f"        return memo[{k}]"]
            v = self.derived_body(node, "None")
        self.emit(f"return {v}")
        self.finish(f"def {fn}(c, m):", first, defined=("memo",))

    def table_fn(self, table: ir.Table) -> str:  # noqa: C901 - the closures' table loop, unrolled
        """A function (c, m) -> outputs tuple, generated in its own chunk."""
        saved = self.save()
        fn = self.new("_T")
        self.start()
        self.inline_depth = 0
        tracing = self.tracing
        owner = self.const(table.owner)
        hit = table.hit
        n_out = len(table.outputs)
        cols = [self.new("_a") for _ in table.inputs]
        trace = self.use("trace") if tracing else None
        for a in cols:
            self.emit(f"{a} = _UNSET")
        single = hit == "F"
        if single:
            self.emit("_mi = None")
        else:
            self.emit("_matched = []")
        self.emit("_unknown_rows = []")
        with self.block("while True:  # one pass over the rows; `break` leaves them"):
            for index, row in enumerate(table.rows):
                r = _digits(index)
                body_indent = self.indent
                if row.in_force is not None:
                    self.emit(f"if not {self.const(row.in_force)}.contains({self.use('as_of')}):")
                    if tracing:
                        self.emit(f"    if {trace} is not None:")
                        self.emit(f"        {trace}.append((\"skip_row\", {owner}, {r}))")
                    else:
                        self.emit("    pass")
                    self.emit("else:")
                    self.indent += 1
                    self.scopes.append({})
                self.emit("_result = True")
                if tracing:
                    self.emit("_cells = []")
                first = True
                for col, test in enumerate(row.tests):
                    if test.kind == "any":
                        continue
                    if not first:
                        self.emit("if _result is not False:")
                        self.indent += 1
                        self.scopes.append({})
                    a = cols[col]
                    with self.block(f"if {a} is _UNSET:"):
                        v = self.expr(table.inputs[col], "m")
                        self.emit(f"{a} = {v}")
                    self.test(test, a)
                    if tracing:
                        self.emit(f"if {trace} is not None:")
                        self.emit(f"    _cells.append(({_digits(col)}, {a}, _passed, _ta, _tb))")
                    self.emit("if _passed is False:")
                    self.emit("    _result = False")
                    self.emit("elif type(_passed) is _Unknown:")
                    self.emit("    _result = _passed if _result is True else _merge(_result, _passed)")
                    if not first:
                        self.indent -= 1
                        self.scopes.pop()
                    first = False
                if tracing:
                    self.emit(f"if {trace} is not None:")
                    self.emit(f"    {trace}.append((\"row\", {owner}, {r}, _result, tuple(_cells)))")
                with self.block("if _result is True:"):
                    if single:
                        self.emit("if _unknown_rows:")
                        self.emit("    break")
                    outs = [self.expr(o, "m") for o in row.outputs]
                    if single:
                        self.emit(f"_mi = {r}")
                        self.emit(f"_mo = ({''.join(o + ', ' for o in outs)})")
                        self.emit("break")
                    else:
                        self.emit(f"_matched.append(({r}, [{', '.join(outs)}]))")
                self.emit("elif _result is not False:")
                self.emit("    _unknown_rows.append(_result)")
                if row.in_force is not None:
                    self.scopes.pop()
                self.indent = body_indent
            self.emit("break")
        self.emit("if _unknown_rows:")
        self.emit("    _u = _merge(*_unknown_rows)")
        self.emit(f"    return ({'_u, ' * n_out})")
        with self.block("if _mi is None:" if single else "if not _matched:"):
            if tracing:
                self.emit(f"if {trace} is not None:")
                self.emit(f"    {trace}.append((\"nomatch\", {owner}))")
            defaults = [self.expr(d, "m") if d is not None else "None" for d in table.defaults]
            self.emit(f"return ({''.join(d + ', ' for d in defaults)})")
        if single:
            self.emit("_indices = (_mi,)")
        else:
            self.emit(f"if len(_matched) > 1 or {self.const(hit)} in (\"C+\", \"C<\", \"C>\"):")
            self.emit("    _uo = [_v for _, _outs in _matched for _v in _outs if type(_v) is _Unknown]")
            self.emit("    if _uo:")
            self.emit("        _u = _merge(*_uo)")
            self.emit(f"        return ({'_u, ' * n_out})")
            self.emit("_indices = tuple(_i for _i, _ in _matched)")
        self.emit("if m is None:")
        self.emit(f"    c.fired[{owner}] = _indices")
        if tracing:
            self.emit(f"if {trace} is not None:")
            self.emit(f"    {trace}.append((\"fired\", {owner}, _indices, {self.const(hit)}))")
        if single:
            self.emit("return _mo")
        else:
            priorities = [{v: i for i, v in enumerate(p)} for p in table.priorities]
            self.emit(f"return _apply_hit({self.const(hit)}, _matched, {_digits(n_out)}, "
                      f"{self.const(priorities)}, {owner}, {self.const([r.id for r in table.rows])}, "
                      f"{self.const(self.b.policy)})")
        self.finish(f"def {fn}(c, m):")
        self.restore(saved)
        return fn

    def test(self, test: ir.Test, v: str) -> None:
        """Emit a table cell test of value ``v``: sets ``_passed``, ``_ta``, ``_tb``."""
        if test.kind == "null":
            self.emit(f"_passed = {v} if type({v}) is _Unknown else {v} is None")
            self.emit("_ta = _tb = None")
            return
        if test.kind == "compare" and test.a is not None:
            op = _op(_COMPARE_OPS, test.op or "==")
            a = self.expr(test.a, "m")
            self.emit(f"_ta = {a}")
            self.emit("_tb = None")
            self.emit(f"if type({v}) is _Unknown or type({a}) is _Unknown:")
            self.emit(f"    _passed = _merge({v}, {a})")
            self.emit(f"elif {v} is None or {a} is None:")
            self.emit("    _passed = False")
            self.emit("else:")
            self.emit("    try:")
            self.emit(f"        _passed = bool({v} {op} {a})")
            self.emit("    except TypeError:")
            self.emit("        _passed = False")
            return
        backend = self.b
        closure = self.fallback(lambda: backend._test(test))
        self.emit(f"_passed, _ta, _tb = {closure}(c, m, {v})")

    def runner(self, node: ir.DecisionNode) -> str:
        """The decision's runner (as `Backend._decision`), its output expressions inline."""
        fn = self.new("_R")
        table = self.table_fn(node.table) if node.table is not None else None
        table_index = {name: i for i, name in enumerate(node.table.outputs)} if node.table else {}
        self.start()
        tracing = self.tracing
        d = self.const(node.id)
        trace = self.use("trace") if tracing else None
        memo = self.use("memo")
        self.emit(f"if {d} in c.outcomes:")
        self.emit("    return")
        if node.in_force is not None:
            backend = self.b
            stop = self.fallback(lambda: backend._not_in_force(node))
            self.emit(f"if not {self.const(node.in_force)}.contains(c.as_of):")
            self.emit(f"    {stop}(c)")
            self.emit("    return")
        self.emit(f"c.outcomes[{d}] = (\"running\", {{}}, None, ())")
        self.emit("_values = {}")
        with self.block("try:"):
            if any(o.expr is None for o in node.outputs):
                if table is None:
                    raise _Unsupported("a table output without a table")
                self.emit(f"_tv = {table}(c, None)")
                # the table's outputs first, so that expressions may name any of them
                for o in node.outputs:
                    if o.expr is None:
                        if o.short not in table_index:
                            raise _Unsupported(f"no table output {o.short}")
                        v = self.new("_t")
                        self.emit(f"{v} = _tv[{_digits(table_index[o.short])}]")
                        if o.type == "money":
                            v = self.round(v)
                        self.emit(f"{memo}[{self.const(o.name)}] = {v}")
            elif table is not None:
                self.emit(f"{table}(c, None)")
            for o in node.outputs:
                q = self.const(o.name)
                if o.expr is None:
                    v = self.new("_t")
                    self.emit(f"{v} = {memo}[{q}]")
                else:
                    v = self.expr(o.expr, "None")
                if o.type == "money":
                    v = self.round(v)
                self.emit(f"{memo}[{q}] = {v}")
                self.emit(f"_values[{self.const(o.short)}] = {v}")
                if tracing:
                    self.emit(f"if {trace} is not None:")
                    self.emit(f"    {trace}.append((\"output\", {d}, {self.const(o.short)}, {v}))")
        self.emit("except _NotInForce as _stop:")
        self.emit(f"    c.outcomes[{d}] = (\"not_in_force\", {{}}, _stop.reason, _stop.cites)")
        if tracing:
            self.emit(f"    if {trace} is not None:")
            self.emit(f"        {trace}.append((\"decision\", {d}, \"not_in_force\", _stop.reason))")
        self.emit("    return")
        self.emit("_unknown = None")
        self.emit("for _v in _values.values():")
        self.emit("    if type(_v) is _Unknown:")
        self.emit("        _unknown = [_v for _v in _values.values() if type(_v) is _Unknown]")
        self.emit("        break")
        self.emit("if _unknown:")
        self.emit("    _missing = tuple(sorted(_merge(*_unknown).missing))")
        self.emit(f"    c.outcomes[{d}] = (\"needs_information\", _values, _missing, ())")
        if tracing:
            self.emit(f"    if {trace} is not None:")
            self.emit(f"        {trace}.append((\"decision\", {d}, \"needs_information\", _missing))")
        self.emit("else:")
        self.emit(f"    c.outcomes[{d}] = (\"decided\", _values, None, ())")
        if tracing:
            self.emit(f"    if {trace} is not None:")
            self.emit(f"        {trace}.append((\"decision\", {d}, \"decided\", None))")
        self.finish(f"def {fn}(c):")
        return fn

    # -- the whole backend ---------------------------------------------------------------------
    def count_refs(self) -> None:
        def walk(x: Any) -> None:
            if isinstance(x, ir.Ref):
                self.refs[x.name] = self.refs.get(x.name, 0) + 1
            elif isinstance(x, tuple):
                for y in x:
                    walk(y)
            elif dataclasses.is_dataclass(x) and not isinstance(x, type):
                for f in dataclasses.fields(x):
                    walk(getattr(x, f.name))
        policy = self.b.policy
        walk(policy.derived)
        walk(policy.decisions)

    def build(self) -> None:
        b = self.b
        policy = b.policy
        self.count_refs()
        for d in policy.derived:
            self.fn_names[d.name] = self.new("_d")
        for d in policy.derived:
            self.derived(d)
        runners = [(node, self.runner(node)) for node in policy.decisions]
        source = "\n".join(self.chunks)
        code = compile(source, f"<policy_engine generated: {'traced' if self.tracing else 'plain'}>", "exec")
        exec(code, self.ns)  # noqa: S102 - generated from the type-checked IR only, see above
        for d in policy.derived:
            b.getters[d.name] = self.ns[self.fn_names[d.name]]
        for node, runner in runners:
            b.runners[node.id] = self.ns[runner]
            for output in node.outputs:
                b.getters[output.name] = b._output_getter(node.id, output.name)
        for name, build in self.fallbacks:
            self.ns[name] = build()
        b.source = source


_HELPERS.update({
    "_Unknown": Unknown, "_merge": _merge, "_ABSENT": _ABSENT, "_UNSET": _UNSET,
    "_MEMBERS": frozenset(("members",)), "_DivisionByZero": DivisionByZero,
    "_InvalidOperation": InvalidOperation, "_add": CONTEXT.add, "_sub": CONTEXT.subtract,
    "_mul": CONTEXT.multiply, "_div": CONTEXT.divide, "_min": min, "_max": max, "_abs": abs,
    "_age": _age, "_Decimal": Decimal, "_CONTEXT": CONTEXT, "_ZERO": Decimal(0), "_apply_hit": _apply_hit,
    "_NotInForce": NotInForce, "_date": dt.date,
})
