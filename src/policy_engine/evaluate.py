"""Stage 4, evaluate (scalar backend): one case at a time, exact, with an optional trace.

The backend generates Python closures from the IR once per compiled policy (one set with
tracing, one without, so that tracing costs nothing when it is off). Values are ``Decimal`` /
``int`` / ``bool`` / ``str`` / ``date`` / ``None`` (null), or ``Unknown``: a fact the caller did
not give, which spreads through the computation (three-valued logic) and turns the decisions that
need it into ``needs_information``.
"""

from __future__ import annotations

import calendar
import datetime as dt
import operator
from collections.abc import Callable
from decimal import (
    MAX_EMAX,
    MAX_PREC,
    MIN_EMIN,
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

#: The one arithmetic context: independent of the caller's global decimal context.
CONTEXT = Context(prec=34, rounding=ROUND_HALF_EVEN, traps=[InvalidOperation, DivisionByZero])
#: Moving a decimal point or adding places exactly (``scaleb``, ``quantize`` to more places),
#: whatever the digits: the calling thread's context (28 digits by default, or what the
#: application set) would round a long coefficient, or refuse it.
EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN, rounding=ROUND_HALF_EVEN, traps=[InvalidOperation])
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
    missing: frozenset[str] | None = None
    for v in values:
        if type(v) is Unknown:
            # the first unknown's set as it is (frozen), a union only from the second on
            missing = v.missing if missing is None else missing | v.missing
    return Unknown(frozenset() if missing is None else missing)


class NotInForce(Exception):
    def __init__(self, reason: str, cites: tuple[ir.Cite, ...] = ()):
        super().__init__(reason)
        self.reason = reason
        self.cites = cites


class Case:
    """The state of one evaluation."""

    __slots__ = ("as_of", "fired", "members", "memo", "outcomes", "trace", "values")

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


# Note: Decimal methods are called with positional arguments (rounding, context): the same call,
# but keyword arguments make `quantize` about three times slower in CPython's _decimal.

def _round(value: Any, rounding: ir.Rounding) -> Any:
    t = type(value)
    if t is Decimal:  # Decimal(value) would only copy it
        return value.quantize(rounding.unit, ROUNDING_MODES[rounding.mode], CONTEXT)
    if t is int:
        return Decimal(value).quantize(rounding.unit, ROUNDING_MODES[rounding.mode], CONTEXT)
    return value


def _comparison(op: Callable[[Any, Any], Any]) -> Callable[[Any, Any], bool | None]:
    """A comparison operator as FEEL has it (chosen when a closure is built, not per call): null
    on either side gives null, and values that cannot be ordered (TypeError) give null."""
    def compare(a: Any, b: Any) -> bool | None:
        if a is None or b is None:
            return None
        try:
            return bool(op(a, b))
        except TypeError:
            return None
    return compare


_COMPARE: dict[str, Callable[[Any, Any], bool | None]] = {
    symbol: _comparison(op) for symbol, op in (("<", operator.lt), ("<=", operator.le), (">", operator.gt),
                                               (">=", operator.ge), ("==", operator.eq), ("!=", operator.ne))
}
_lt, _le, _gt, _ge, _ne = _COMPARE["<"], _COMPARE["<="], _COMPARE[">"], _COMPARE[">="], _COMPARE["!="]


def _rounder(rounding: ir.Rounding) -> Callable[[Any], Any]:
    """``_round`` with the unit and mode bound: ``lambda v: _round(v, rounding)``, fewer lookups."""
    unit = rounding.unit
    mode = ROUNDING_MODES[rounding.mode]
    quantize = Decimal.quantize

    def round_money(value: Any) -> Any:
        t = type(value)
        if t is Decimal:
            return quantize(value, unit, mode, CONTEXT)
        if t is int:
            return quantize(Decimal(value), unit, mode, CONTEXT)
        return value
    return round_money


#: members whose per-member memo keys are built in advance (a larger household builds its keys
#: per call: the same tuples, only allocated)
_MEMBER_KEYS = 32


def _outputs(fns: list[Fn]) -> Callable[[Case, Any], tuple[Any, ...]]:
    """A table row's output cells as one function giving their tuple, evaluated in order."""
    if len(fns) == 1:
        only = fns[0]
        return lambda c, m: (only(c, m),)
    return lambda c, m: tuple([f(c, m) for f in fns])


def _literal(test: ir.Test) -> Any:
    """For a cell ``== literal`` (``true``, ``"north"``, ``3``): the literal, which the table
    loop then tests inline; ``_NO_LITERAL`` for any other cell.

    Inline, for a value that is not Unknown, the cell passes when ``value == literal``, which
    is what ``_test``'s ``compare_const`` computes: ``==`` gives null (no pass) for a null
    value, and ``None == literal`` is False too; ``==`` between the engine's value types never
    raises and gives a bool. A literal of another type than bool, str, int or Decimal (or null)
    is left to ``_test``."""
    if (test.kind == "compare" and (test.op or "==") == "==" and isinstance(test.a, ir.Const)
            and type(test.a.value) in (bool, str, int, Decimal)):
        return test.a.value
    return _NO_LITERAL


def _binary_checked(raw: Callable[[Any, Any], Any], a: Any, b: Any) -> Any:
    """An arithmetic node's value, checking its operands first: unknown spreads, null gives
    null, division by zero gives null. (The node's closure tries ``raw`` directly first.)"""
    if type(a) is Unknown or type(b) is Unknown:
        return _merge(a, b)
    if a is None or b is None:
        return None
    try:
        return raw(a, b)
    except (DivisionByZero, InvalidOperation, ZeroDivisionError):
        return None  # FEEL: division by zero is null


def _call2_checked(impl: Callable[[Any, Any], Any], a: Any, b: Any) -> Any:
    """A two-argument function on evaluated arguments: unknown spreads, null gives null."""
    if type(a) is Unknown or type(b) is Unknown:
        return _merge(a, b)
    if a is None or b is None:
        return None
    try:
        return impl(a, b)
    except (OverflowError, ValueError, InvalidOperation):
        return None


def _sum_rest(c: Case, body: Fn, plus: Callable[[Any, Any], Any], total: Any, value: Any,
              start: int, n: int) -> Any:
    """``sum(members, body)`` from the first value its fast loop could not add (``value``, of
    member ``start - 1``; ``total`` is the sum before it): the remaining members are evaluated,
    then, as in the checked sum, unknown spreads, null values are left out, and the rest is
    added in member order (so a bad value raises after every member was evaluated, as before)."""
    values = [value]
    for i in range(start, n):
        values.append(body(c, i))
    unknown = [v for v in values if type(v) is Unknown]
    if unknown:
        return _merge(*unknown)
    for v in values:
        if v is not None:
            total = plus(total, v)
    return total


def _age(born: dt.date, on: dt.date) -> int:
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))


def _months_between(a: dt.date, b: dt.date) -> int:
    months = (b.year - a.year) * 12 + (b.month - a.month)
    if months > 0 and b.day < a.day and b.day != calendar.monthrange(b.year, b.month)[1]:
        months -= 1
    elif months < 0 and b.day > a.day:
        months += 1
    return months


def _decimal_power(a: Any, b: Any) -> Decimal:
    """``a ** b`` for a decimal (or a whole number to a negative power), exact to 34 digits:
    ``0 ** 0`` is 1 as for whole numbers, and ``0`` to a negative power is a division by zero
    (null). Like the other operators, an unknown or null operand raises TypeError."""
    try:
        result = CONTEXT.power(a, b)
    except InvalidOperation:
        if b == 0 and a == 0:  # numbers here: the conversion of anything else raised TypeError
            return Decimal(1)
        raise
    if not result.is_finite():  # 0 to a negative power: infinity, not signalled
        raise DivisionByZero
    return result


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
        self._keys_used = 0  # see `_member_keys`
        names = [n.name for n in policy.inputs] + [p.name for p in policy.parameters]
        names += [d.name for d in policy.derived] + [o.name for d in policy.decisions for o in d.outputs]
        #: every getter name is defined exactly once, so a reference may bind to its getter directly
        self._unique_names = len(names) == len(set(names))
        for node in policy.inputs:
            self.getters[node.name] = self._input(node)
        for param in policy.parameters:
            self.getters[param.name] = self._parameter(param)
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

    def _member_keys(self) -> list[int]:
        """Memo keys for one member-level value, members 0 to ``_MEMBER_KEYS - 1``: small ints,
        unique in this backend, so cheaper to hash than a (name, member) tuple. Other memo keys
        are names (str) or tuples, and members beyond these use a tuple, so keys never clash."""
        base = self._keys_used
        self._keys_used += _MEMBER_KEYS
        return list(range(base, base + _MEMBER_KEYS))

    # -- leaves -------------------------------------------------------------------------------

    def _input(self, node: ir.InputNode) -> Fn:
        name = node.name
        tracing = self.tracing
        path = ".".join(node.path)
        if node.entity == "member":
            # A member's row is read directly; the rare cases are the exceptions: the fact is
            # absent (KeyError), the household has no member list (TypeError: None[m]), or the case
            # is a member itself (entity "member": no member list, m is None; its own facts)
            def own(c: Case) -> Any:
                value = c.values.get(name, _ABSENT)
                return Unknown(frozenset((path,))) if value is _ABSENT else value

            if not tracing:
                def member_input_plain(c: Case, m: Any) -> Any:
                    try:
                        return c.members[m][name]  # type: ignore[index]
                    except KeyError:
                        return Unknown(frozenset((f"members[{m}].{path}",)))
                    except TypeError:
                        if c.members is not None:
                            raise
                        return own(c) if m is None else Unknown(frozenset(("members",)))
                return member_input_plain

            # the memo key of "input `name` of member m already traced", built in advance
            keys = self._member_keys()

            def member_input(c: Case, m: Any) -> Any:
                try:
                    value = c.members[m][name]  # type: ignore[index]
                except KeyError:
                    value = Unknown(frozenset((f"members[{m}].{path}",)))
                except TypeError:
                    if c.members is not None:
                        raise
                    if m is not None:
                        return Unknown(frozenset(("members",)))
                    value = own(c)
                try:
                    key = keys[m]
                except (IndexError, TypeError):  # a member beyond the prepared keys, or the case itself
                    key = ("i", name, m)
                memo = c.memo
                if key not in memo:  # the first read of this fact of this member: traced
                    memo[key] = True
                    trace = c.trace
                    if trace is not None:
                        trace.append(("input", name, m, value))
                return value
            return member_input

        if not tracing:
            def entity_input_plain(c: Case, m: Any) -> Any:
                value = c.values.get(name, _ABSENT)
                if value is _ABSENT:
                    value = Unknown(frozenset((path,)))
                return value
            return entity_input_plain

        seen = ("i", name)  # memo key: this input already traced

        def entity_input(c: Case, m: Any) -> Any:
            value = c.values.get(name, _ABSENT)
            if value is _ABSENT:
                value = Unknown(frozenset((path,)))
            if c.trace is not None and seen not in c.memo:
                c.memo[seen] = True
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

        if not by:
            # without dimensions the value and its trace event depend only on the date: found once
            # per date (by `parameter` below, the same lookup, errors and event) and kept
            found: dict[dt.date, tuple[Any, tuple[Any, ...]]] = {}

            def fill(c: Case) -> tuple[Any, tuple[Any, ...]]:
                value = parameter(c, _FILL)  # raises NotInForce as before (nothing kept then); no event
                # in force on that date (kept by `parameter`, unless another thread cleared the cache)
                _, dated_value = in_force.get(c.as_of) or find(c.as_of)
                entry = (value, ("param", name, (), value, dated_value.start, dated_value.provenance))
                if len(found) >= 1024:
                    found.clear()
                found[c.as_of] = entry
                return entry

            if tracing:
                def parameter_traced(c: Case, m: Any) -> Any:
                    try:
                        value, event = found[c.as_of]
                    except KeyError:
                        value, event = fill(c)
                    if c.trace is not None:
                        c.trace.append(event)
                    return value
                result: Fn = parameter_traced
            else:
                def parameter_plain(c: Case, m: Any) -> Any:
                    try:
                        return found[c.as_of][0]
                    except KeyError:
                        return fill(c)[0]
                result = parameter_plain

        def find(day: dt.date) -> Any:
            """(index, dated value) in force on ``day`` (the last that covers it), or None."""
            chosen = None
            for start, end, index, value in dated:
                if start <= day and (end is None or day <= end):
                    chosen = (index, value)
            return chosen

        def parameter(c: Case, m: Any) -> Any:
            try:
                chosen = in_force[c.as_of]
            except KeyError:
                chosen = find(c.as_of)
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
            if tracing and c.trace is not None and m is not _FILL:
                c.trace.append(("param", name, key, value, dated_value.start, dated_value.provenance))
            return value
        return parameter if by else result

    def _derived(self, node: ir.DerivedNode) -> Fn:
        name = node.name
        tracing = self.tracing
        round_money = _rounder(self.policy.rounding)
        unit = self.policy.rounding.unit
        mode = ROUNDING_MODES[self.policy.rounding.mode]
        money = node.type == "money"
        compute: Fn
        if node.table is not None:
            table = self._table(node.table)

            def compute(c: Case, m: Any) -> Any:
                return table(c, m)[0]
        else:
            assert node.expr is not None
            compute = self.expr(node.expr)

        if node.entity == "member":
            keys = self._member_keys()  # memo keys, built in advance

            def member_value(c: Case, m: Any) -> Any:
                try:
                    key = keys[m]
                except (IndexError, TypeError):
                    key = (name, m)
                memo = c.memo
                if key in memo:
                    return memo[key]
                value = compute(c, m)
                if money:  # `round_money(value)`, inline for the usual Decimal
                    value = (value.quantize(unit, mode, CONTEXT) if type(value) is Decimal
                             else round_money(value))
                memo[key] = value
                if tracing:
                    trace = c.trace
                    if trace is not None:
                        trace.append(("derived", name, m, value))
                return value
            return member_value

        def entity_value(c: Case, m: Any) -> Any:
            memo = c.memo
            if name in memo:
                return memo[name]
            value = compute(c, None)
            if money:  # `round_money(value)`, inline for the usual Decimal
                value = (value.quantize(unit, mode, CONTEXT) if type(value) is Decimal
                         else round_money(value))
            memo[name] = value
            if tracing:
                trace = c.trace
                if trace is not None:
                    trace.append(("derived", name, None, value))
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

    def _decision(self, node: ir.DecisionNode) -> Callable[[Case], None]:
        table = self._table(node.table) if node.table is not None else None
        table_index = {name: i for i, name in enumerate(node.table.outputs)} if node.table else {}
        round_money = _rounder(self.policy.rounding)
        #: outputs that come from the table: (qualified name, table column, money?)
        from_table: list[tuple[str, int, bool]] = []
        steps: list[tuple[str, str, Fn | None, bool]] = []
        for output in node.outputs:
            fn = self.expr(output.expr) if output.expr is not None else None
            money = output.type == "money"
            steps.append((output.name, output.short, fn, money))
            if fn is None:
                from_table.append((output.name, table_index[output.short], money))
        tracing = self.tracing
        window = node.in_force
        decision_id = node.id
        cites = node.cites
        decided_event = ("decision", decision_id, "decided", None)  # immutable: one tuple for every case

        def run(c: Case) -> None:
            outcomes = c.outcomes
            if decision_id in outcomes:
                return
            if window is not None and not window.contains(c.as_of):
                reason = (f"not in force on {c.as_of.isoformat()} (in force "
                          f"{window.start.isoformat()} to {window.end.isoformat() if window.end else 'open'})")
                outcomes[decision_id] = ("not_in_force", {}, reason, cites)
                if tracing and c.trace is not None:
                    c.trace.append(("decision", decision_id, "not_in_force", reason))
                return
            outcomes[decision_id] = _RUNNING
            trace = c.trace if tracing else None
            memo = c.memo
            values: dict[str, Any] = {}
            unknown = False
            try:
                if table is not None:
                    table_values = table(c, None)
                    # the table's outputs first, so that expressions may name any of them,
                    # whatever order the outputs are written in
                    for qualified, column, money in from_table:
                        value = table_values[column]
                        memo[qualified] = round_money(value) if money else value
                for qualified, short, fn, money in steps:
                    if fn is None:
                        value = memo[qualified]  # rounded above (rounding again changes nothing)
                    else:
                        value = fn(c, None)
                        if money:
                            value = round_money(value)
                        memo[qualified] = value
                    values[short] = value
                    if type(value) is Unknown:
                        unknown = True
                    if trace is not None:
                        trace.append(("output", decision_id, short, value))
            except NotInForce as stop:
                outcomes[decision_id] = ("not_in_force", {}, stop.reason, stop.cites)
                if trace is not None:
                    trace.append(("decision", decision_id, "not_in_force", stop.reason))
                return
            if unknown:
                missing = tuple(sorted(_merge(*values.values()).missing))  # (_merge skips the known)
                outcomes[decision_id] = ("needs_information", values, missing, ())
                if trace is not None:
                    trace.append(("decision", decision_id, "needs_information", missing))
            else:
                outcomes[decision_id] = ("decided", values, None, ())
                if trace is not None:
                    trace.append(decided_event)
        return run

    # -- tables ---------------------------------------------------------------------------------

    def _table(self, table: ir.Table) -> Callable[[Case, Any], tuple[Any, ...]]:
        """The table as a closure: rows tried in order, each input column evaluated when a row
        first needs it. Hit policy F returns as soon as a row fires; the other hit policies
        collect the rows that match and combine them (``_apply_hit``)."""
        inputs = [self.expr(e) for e in table.inputs]
        hit = table.hit
        owner = table.owner
        #: per row: index, tests (column, test), outputs, window, and, for when it fires alone,
        #: its fired-row indices and its trace event (immutable tuples, shared by every case)
        rows = []
        for index, row in enumerate(table.rows):
            tests = [(i, self._test(t), _literal(t)) for i, t in enumerate(row.tests) if t.kind != "any"]
            outputs = _outputs([self.expr(e) for e in row.outputs])
            rows.append((index, tests, outputs, row.in_force, (index,), ("fired", owner, (index,), hit)))
        defaults = [self.expr(d) if d is not None else None for d in table.defaults]
        first = hit == "F"
        n_in = len(inputs)
        n_out = len(table.outputs)
        priorities = [{v: i for i, v in enumerate(p)} for p in table.priorities]
        row_ids = [r.id for r in table.rows]
        policy = self.policy

        def finish(c: Case, m: Any, trace: list[tuple[Any, ...]] | None,
                   matched: list[tuple[int, list[Any]]], unknown_rows: list[Unknown] | tuple[()]
                   ) -> tuple[Any, ...]:
            """The table's outputs once its rows are tried (unless hit F returned on a row)."""
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

        def evaluate_plain(c: Case, m: Any) -> tuple[Any, ...]:
            actual: list[Any] = [_UNSET] * n_in
            matched: list[tuple[int, list[Any]]] = []
            unknown_rows: list[Unknown] | tuple[()] = ()  # a list from the first unknown row on
            for index, tests, outputs, in_force, fired, _event in rows:
                if in_force is not None and not in_force.contains(c.as_of):
                    continue
                result: Any = True
                for col, test, literal in tests:
                    value = actual[col]
                    if value is _UNSET:
                        value = actual[col] = inputs[col](c, m)
                    if literal is not _NO_LITERAL and type(value) is not Unknown:
                        if value != literal:  # `test`, inline (see `_literal`)
                            result = False
                            break
                        continue
                    passed = test(c, m, value)[0]
                    if passed is False:
                        result = False
                        break
                    if type(passed) is Unknown:
                        result = passed if result is True else _merge(result, passed)
                if result is True:
                    if unknown_rows and first:
                        break
                    if first:  # hit F: this row alone decides
                        values = outputs(c, m)
                        if m is None:
                            c.fired[owner] = fired
                        return values
                    matched.append((index, list(outputs(c, m))))
                elif result is not False:
                    if unknown_rows:
                        unknown_rows.append(result)
                    else:
                        unknown_rows = [result]
            return finish(c, m, None, matched, unknown_rows)

        if not self.tracing:
            return evaluate_plain

        def evaluate_traced(c: Case, m: Any) -> tuple[Any, ...]:
            trace = c.trace
            if trace is None:  # pragma: no cover - a traced backend is given a trace
                return evaluate_plain(c, m)
            actual: list[Any] = [_UNSET] * n_in
            matched: list[tuple[int, list[Any]]] = []
            unknown_rows: list[Unknown] | tuple[()] = ()  # a list from the first unknown row on
            for index, tests, outputs, in_force, fired, fired_event in rows:
                if in_force is not None and not in_force.contains(c.as_of):
                    trace.append(("skip_row", owner, index))
                    continue
                result: Any = True
                cells: list[tuple[Any, ...]] = []
                for col, test, literal in tests:
                    value = actual[col]
                    if value is _UNSET:
                        value = actual[col] = inputs[col](c, m)
                    if literal is not _NO_LITERAL and type(value) is not Unknown:
                        # `test`, inline (see `_literal`): the same cell
                        if value != literal:
                            cells.append((col, value, False, literal, None))
                            result = False
                            break
                        cells.append((col, value, True, literal, None))
                        continue
                    passed, a, b = test(c, m, value)
                    cells.append((col, value, passed, a, b))
                    if passed is False:
                        result = False
                        break
                    if type(passed) is Unknown:
                        result = passed if result is True else _merge(result, passed)
                trace.append(("row", owner, index, result, tuple(cells)))
                if result is True:
                    if unknown_rows and first:
                        break
                    if first:  # hit F: this row alone decides
                        values = outputs(c, m)
                        if m is None:
                            c.fired[owner] = fired
                        trace.append(fired_event)
                        return values
                    matched.append((index, list(outputs(c, m))))
                elif result is not False:
                    if unknown_rows:
                        unknown_rows.append(result)
                    else:
                        unknown_rows = [result]
            return finish(c, m, trace, matched, unknown_rows)
        return evaluate_traced

    def _test(self, test: ir.Test) -> Callable[[Case, Any, Any], tuple[Any, Any, Any]]:
        kind = test.kind
        if kind == "any":
            return lambda c, m, v: (True, None, None)
        if kind == "null":
            return lambda c, m, v: (v if type(v) is Unknown else v is None, None, None)
        if kind == "compare":
            assert test.a is not None
            endpoint = self.expr(test.a)
            cmp = _COMPARE.get(test.op or "==", _ne)
            if isinstance(test.a, ir.Const):  # a literal cell (`true`, `"north"`, `< 700`): no call
                a_const = test.a.value

                def compare_const(c: Case, m: Any, v: Any) -> tuple[Any, Any, Any]:
                    a = a_const
                    if type(v) is Unknown or type(a) is Unknown:
                        return _merge(v, a), a, None
                    return (cmp(v, a) is True), a, None
                return compare_const

            def compare(c: Case, m: Any, v: Any) -> tuple[Any, Any, Any]:
                a = endpoint(c, m)
                if type(v) is Unknown or type(a) is Unknown:
                    return _merge(v, a), a, None
                return (cmp(v, a) is True), a, None
            return compare
        if kind == "range":
            assert test.a is not None and test.b is not None
            low, high = self.expr(test.a), self.expr(test.b)
            low_cmp = _ge if test.low_closed else _gt
            high_cmp = _le if test.high_closed else _lt

            def in_range(c: Case, m: Any, v: Any) -> tuple[Any, Any, Any]:
                a, b = low(c, m), high(c, m)
                if type(v) is Unknown or type(a) is Unknown or type(b) is Unknown:
                    return _merge(v, a, b), a, b
                return (low_cmp(v, a) is True and high_cmp(v, b) is True), a, b
            return in_range
        subtests = [self._test(t) for t in test.tests]
        negate = kind == "not"

        def any_of(c: Case, m: Any, v: Any) -> tuple[Any, Any, Any]:
            if negate and v is None:  # FEEL: not(...) of a null value is null, which is not a match
                return False, None, None
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

    def expr(self, e: ir.Expr) -> Fn:
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
            left, right, cmp = self.expr(e.left), self.expr(e.right), _COMPARE.get(e.op, _ne)

            def compare(c: Case, m: Any) -> Any:
                a = left(c, m)
                b = right(c, m)
                if type(a) is Unknown or type(b) is Unknown:
                    return _merge(a, b)
                return cmp(a, b)
            return compare
        if isinstance(e, ir.BoolOp):
            operands = [self.expr(o) for o in e.operands]
            stop = e.op == "or"  # the value that decides: True for or, False for and

            def boolop(c: Case, m: Any) -> Any:
                unknown: list[Any] | None = None  # made on the first unknown operand
                null = False
                for f in operands:
                    v = f(c, m)
                    if v is stop:
                        return stop
                    if type(v) is Unknown:
                        if unknown is None:
                            unknown = [v]
                        else:
                            unknown.append(v)
                    elif v is None:
                        null = True
                if unknown is not None:
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
            raw = lambda a, b: a // b if type(a) is int and type(b) is int else int(
                CONTEXT.divide(a, b).to_integral_value(ROUND_FLOOR))  # floor, as for integers
        elif op == "%":
            raw = (lambda a, b: a % b) if integer else lambda a, b: CONTEXT.subtract(a, CONTEXT.multiply(b, (CONTEXT.divide(a, b)).to_integral_value(ROUND_FLOOR)))
        else:
            raw = (lambda a, b: a ** b) if integer else _decimal_power

        # Optimistic: `raw` is tried first. Every `raw` above raises TypeError when an operand is
        # Unknown or None (neither converts to a number; tests/test_evaluate_fast.py checks this),
        # so the checks of `_binary_checked` are only made when the fast try fails: same result.
        if isinstance(e.right, ir.Const):  # a constant right operand: no call to fetch it
            b_const = e.right.value

            def binary_const(c: Case, m: Any) -> Any:
                a = left(c, m)
                try:
                    return raw(a, b_const)
                except TypeError:
                    return _binary_checked(raw, a, b_const)
                except (DivisionByZero, InvalidOperation, ZeroDivisionError):
                    return None  # FEEL: division by zero is null
            return binary_const

        def binary(c: Case, m: Any) -> Any:
            a = left(c, m)
            b = right(c, m)
            try:
                return raw(a, b)
            except TypeError:
                return _binary_checked(raw, a, b)
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

        impl: Callable[..., Any]
        if fn == "min":
            impl = min
        elif fn == "max":
            impl = max
        elif fn == "abs":
            impl = abs
        elif fn == "floor":
            impl = lambda x: int(Decimal(x).to_integral_value(ROUND_FLOOR))
        elif fn == "ceil":
            impl = lambda x: int(Decimal(x).to_integral_value(ROUND_CEILING))
        elif fn == "round_money":
            impl = _rounder(rounding)
        elif fn == "round":
            impl = lambda x, q: Decimal(x).quantize(q, ROUND_HALF_UP, CONTEXT)
        elif fn == "age":
            def impl(born: dt.date) -> int:
                raise AssertionError  # replaced below: needs as_of
        elif fn == "months_between":
            impl = _months_between
        elif fn == "days_between":
            impl = lambda a, b: (b - a).days
        elif fn == "add_months":
            impl = _add_months
        elif fn == "add_days":
            impl = lambda d, n: d + dt.timedelta(days=n)
        else:  # pragma: no cover - the compiler accepts only the functions above
            raise TypeError(fn)

        if fn != "age" and len(args) == 1:
            return self._call1(impl, args[0])
        if fn in ("min", "max") and len(args) == 2:
            return self._min_max2(impl, args[0], args[1])
        if fn != "age" and len(args) == 2:
            return self._call2(impl, args[0], args[1])

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

    @staticmethod
    def _call1(impl: Callable[..., Any], arg: Fn) -> Fn:
        """A call with one argument: ``call`` below without building the argument list."""
        def call1(c: Case, m: Any) -> Any:
            a = arg(c, m)
            if type(a) is Unknown:
                return _merge(a)
            if a is None:
                return None
            try:
                return impl(a)
            except (OverflowError, ValueError, InvalidOperation):
                return None
        return call1

    @staticmethod
    def _call2(impl: Callable[..., Any], arg0: Fn, arg1: Fn) -> Fn:
        """A call with two arguments (``min(a, b)``...): both evaluated, then as ``call``."""
        def call2(c: Case, m: Any) -> Any:
            return _call2_checked(impl, arg0(c, m), arg1(c, m))
        return call2

    @staticmethod
    def _min_max2(impl: Callable[..., Any], arg0: Fn, arg1: Fn) -> Fn:
        """``min(a, b)`` / ``max(a, b)``, optimistic like arithmetic: an Unknown or None argument
        makes the comparison raise TypeError, and only then are the arguments checked (``call2``)."""
        def min_max2(c: Case, m: Any) -> Any:
            a = arg0(c, m)
            b = arg1(c, m)
            try:
                return impl(a, b)
            except TypeError:
                return _call2_checked(impl, a, b)
            except (OverflowError, ValueError, InvalidOperation):
                return None
        return min_max2

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
            plus: Callable[[Any, Any], Any] = (lambda a, b: a + b) if integer else CONTEXT.add
            zero: Any = 0 if integer else Decimal(0)

            def sum_members(c: Case, m: Any) -> Any:
                members = c.members
                if members is None:
                    return Unknown(frozenset(("members",)))
                total = zero
                n = len(members)
                for i in range(n):
                    v = body(c, i)
                    try:  # optimistic: an Unknown or None value cannot be added (TypeError)
                        total = plus(total, v)
                    except (TypeError, ArithmeticError):
                        return _sum_rest(c, body, plus, total, v, i + 1, n)
                return total
            return sum_members

        is_any, is_all = fn == "any", fn == "all"

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
                        unknown.append(ok)
                        continue
                    if is_any:
                        if ok is True:
                            return True
                        continue
                    if is_all:
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


_ABSENT = object()
_UNSET = object()
_NO_LITERAL = object()
#: the outcome of a decision while it runs (a decision that names its own output sees it)
_RUNNING: tuple[str, dict[str, Any], None, tuple[()]] = ("running", {}, None, ())
#: passed as the member to a parameter's lookup when only its value is wanted (no trace event)
_FILL = object()


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
