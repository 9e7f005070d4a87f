"""The fast paths of the scalar evaluator and of the facts intake give what the checked paths give.

Each fast path (optimistic arithmetic, ``min``/``max`` and member sums, literal table cells tested
inline, member memo keys, the facts reader's inline money conversion, the decision's event list
made a tuple on first read) is compared here with a reference written from the checked semantics.
"""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal, DivisionByZero, InvalidOperation
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import policy_engine as pe
from policy_engine import evaluate as ev
from policy_engine import ir
from policy_engine.diagnostics import FactsError
from policy_engine.evaluate import CONTEXT, Case, Unknown
from policy_engine.intake import coerce, read_facts
from tests.helpers import engine_for

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT / "benchmarks" / "policies" / "shared_dibao"
DAY = dt.date(2023, 7, 1)
U_A = Unknown(frozenset({"a"}))
U_B = Unknown(frozenset({"b"}))
VALUES: list[Any] = [Decimal("7.5"), Decimal(-2), Decimal(0), 3, 0, -4, True, None, U_A, U_B]


def outcome(fn: Any, *args: Any) -> tuple[str, str]:
    """What a call gives, comparable across fast and reference paths: value type and repr, or the error."""
    try:
        value = fn(*args)
    except Exception as exc:  # noqa: BLE001 - the error itself is compared
        return ("error", f"{type(exc).__name__}: {exc}")
    return (type(value).__name__, repr(value))


def reference_binary(raw: Any, a: Any, b: Any) -> Any:
    """An arithmetic node as the checked evaluator defines it."""
    if isinstance(a, Unknown) or isinstance(b, Unknown):
        return Unknown(frozenset().union(*(v.missing for v in (a, b) if isinstance(v, Unknown))))
    if a is None or b is None:
        return None
    try:
        return raw(a, b)
    except (DivisionByZero, InvalidOperation, ZeroDivisionError):
        return None


@pytest.fixture(scope="module")
def backend() -> ev.Backend:
    return ev.Backend(pe.load(SHARED).policy, trace=False)


def closure_for(backend: ev.Backend, node: ir.Expr, a: Any, b: Any) -> Any:
    backend.getters["left_value"] = lambda c, m: a
    backend.getters["right_value"] = lambda c, m: b
    fn = backend.expr(node)
    return lambda: fn(Case({}, [], DAY, None), None)


@pytest.mark.parametrize("op", ["+", "-", "*", "/", "//", "%", "**"])
@pytest.mark.parametrize("integer", [True, False])
def test_optimistic_arithmetic_is_the_checked_arithmetic(backend: ev.Backend, op: str, integer: bool) -> None:
    kind = "integer" if integer else "decimal"
    left = ir.Ref("left_value", kind)
    checked = 0
    for a, b in itertools.product(VALUES, VALUES):
        if op == "**" and isinstance(b, Decimal) and b != b.to_integral_value():
            continue  # fractional powers of negative numbers: not what this test is about
        node = ir.Binary(op, left, ir.Ref("right_value", kind), kind)
        const = ir.Binary(op, left, ir.Const(b, kind), kind)
        raw = _raw(backend, node)
        expected = outcome(reference_binary, raw, a, b)
        assert outcome(closure_for(backend, node, a, b)) == expected, (op, a, b)
        assert outcome(closure_for(backend, const, a, b)) == expected, (op, a, b, "const")
        checked += 1
    assert checked >= 90


def _raw(backend: ev.Backend, node: ir.Binary) -> Any:
    """The operation `_binary` applies, found from the closure's own cells (the reference uses it)."""
    fn = backend.expr(node)
    cells = dict(zip(fn.__code__.co_freevars, (c.cell_contents for c in fn.__closure__ or ())))
    return cells["raw"]


@pytest.mark.parametrize("raw", [CONTEXT.add, CONTEXT.subtract, CONTEXT.multiply, CONTEXT.divide, CONTEXT.power,
                                 lambda a, b: a + b, lambda a, b: a * b, lambda a, b: a // b, lambda a, b: a % b,
                                 min, max])
def test_unknown_and_null_operands_raise_type_error(raw: Any) -> None:
    # the premise of the optimistic paths: such operands are never silently computed with
    for a, b in [(U_A, Decimal(1)), (Decimal(1), U_A), (None, 2), (2, None), (U_A, U_B), (None, U_A)]:
        with pytest.raises(TypeError):
            raw(a, b)


@pytest.mark.parametrize("function", ["min", "max"])
def test_optimistic_min_max_is_the_checked_call(backend: ev.Backend, function: str) -> None:
    impl = min if function == "min" else max
    for a, b in itertools.product(VALUES + [dt.date(2020, 1, 1), "x"], repeat=2):
        node = ir.Call(function, (ir.Ref("left_value", "decimal"), ir.Ref("right_value", "decimal")), "decimal")
        assert outcome(closure_for(backend, node, a, b)) == outcome(ev._call2_checked, impl, a, b), (a, b)
    assert outcome(ev._call2_checked, min, U_A, None) == ("Unknown", repr(U_A))
    assert outcome(ev._call2_checked, min, None, 3) == ("NoneType", "None")


# -- member sums ------------------------------------------------------------------------------


def sum_policy() -> pe.Engine:
    return engine_for({
        "inputs": {
            "wages": {"entity": "member", "path": "income.wages", "type": "money", "label": {"zh": "工资", "en": "wages"}},
            "days": {"entity": "member", "path": "days", "type": "integer", "label": {"zh": "天数", "en": "days"}},
        },
        "derived": {
            "total": {"type": "money", "label": {"zh": "合计", "en": "total"}, "expr": "sum(members, wages)"},
            "total_days": {"type": "integer", "label": {"zh": "天", "en": "days"}, "expr": "sum(members, days)"},
        },
        "decisions": {"d": {"label": {"zh": "d", "en": "d"}, "cite": "s §1",
                            "outputs": {"total": {"type": "money", "label": {"zh": "t", "en": "t"}, "expr": "total"},
                                        "days": {"type": "integer", "label": {"zh": "d", "en": "d"},
                                                 "expr": "total_days"}}}},
    })


@pytest.mark.parametrize("pattern", list(itertools.product(["5.25", None, "absent"], repeat=3)))
def test_member_sum_with_unknown_or_null_members(pattern: tuple[Any, ...]) -> None:
    engine = sum_policy()
    members = []
    for i, w in enumerate(pattern):
        member: dict[str, Any] = {"days": i + 1}
        if w != "absent":
            member["income"] = {"wages": w}
        members.append(member)
    decision = engine.decide({"members": members}, DAY)
    absent = [i for i, w in enumerate(pattern) if w in (None, "absent")]
    # every member is read, whatever comes first (the fast loop stops adding, not reading)
    reads = [e[2] for e in decision.events if e[0] == "input" and e[1] == "wages"]
    assert reads == [0, 1, 2]
    if absent:
        assert decision["d"].status == "needs_information"
        assert decision["d"].missing == tuple(f"members[{i}].income.wages" for i in absent)
    else:
        assert decision["d"].total == Decimal("15.75")
    assert decision["d"].days == 6


def test_sum_rest_adds_in_member_order_after_every_member_is_read() -> None:
    read: list[int] = []

    def body(c: Any, i: int) -> Any:
        read.append(i)
        return [Decimal(1), None, Decimal(2), Decimal(3)][i]

    total = ev._sum_rest(Case({}, [], DAY, None), body, CONTEXT.add, Decimal(1), None, 2, 4)
    assert (total, read) == (Decimal(6), [2, 3])
    unknown = ev._sum_rest(Case({}, [], DAY, None), lambda c, i: U_B, CONTEXT.add, Decimal(0), U_A, 1, 3)
    assert unknown == Unknown(frozenset({"a", "b"}))
    with pytest.raises(TypeError):  # a value that is not a number still fails, after the reads
        ev._sum_rest(Case({}, [], DAY, None), body, CONTEXT.add, Decimal(0), dt.date(2020, 1, 1), 2, 4)


def test_merge_keeps_every_missing_fact() -> None:
    assert ev._merge(Decimal(1), None) == Unknown(frozenset())
    assert ev._merge(U_A, 3, U_B, U_A).missing == frozenset({"a", "b"})
    assert ev._merge(U_A).missing is U_A.missing  # frozen: shared, not copied


def test_large_households_trace_each_member_fact_once() -> None:
    engine = pe.load(SHARED)
    n = ev._MEMBER_KEYS + 8  # members beyond the precomputed memo keys
    members = [{"income": {"wages": f"{100 + i}.00", "other_counted": "0"}} for i in range(n)]
    decision = engine.decide({"members": members, "assets": {"deposits": "10"}}, DAY)
    reads = [(e[1], e[2]) for e in decision.events if e[0] == "input" and e[2] is not None]
    assert sorted(reads) == sorted((name, i) for i in range(n) for name in ("wages", "other_income"))
    deductions = [e for e in decision.events if e[0] == "derived" and e[1] == "employment_cost_deduction"]
    assert [e[2] for e in deductions] == list(range(n))
    assert deductions[-1][3] == Decimal("0.2") * (100 + n - 1)  # min(0.2 × wages, 300)


# -- literal table cells ----------------------------------------------------------------------


def literal_policy(literal: str, kind: str, values: list[str] | None = None) -> pe.Engine:
    x: dict[str, Any] = {"type": kind, "label": {"zh": "x", "en": "x"}}
    if values:
        x["values"] = values
    return engine_for({
        "inputs": {"x": x},
        "decisions": {"d": {"label": {"zh": "d", "en": "d"}, "cite": "s §1",
                            "outputs": {"ok": {"type": "boolean", "label": {"zh": "o", "en": "o"}}},
                            "table": {"hit": "F", "inputs": ["x"], "outputs": ["ok"], "rows": [
                                {"id": "match", "when": [literal], "then": ["true"], "cite": "s §1"},
                                {"id": "other", "when": ["-"], "then": ["false"], "cite": "s §1"}]}}},
    })


@pytest.mark.parametrize(("literal", "kind", "values", "facts", "passes"), [
    ("true", "boolean", None, [True, False], [True, False]),
    ("false", "boolean", None, [True, False], [False, True]),
    ('"north"', "enum", ["north", "south"], ["north", "south"], [True, False]),
    ("3", "integer", None, [3, 4, -3], [True, False, False]),
    ("3", "decimal", None, ["3", "3.00", "3.01"], [True, True, False]),
])
def test_literal_cells_tested_inline_record_the_same_cells(literal: str, kind: str, values: list[str] | None,
                                                           facts: list[Any], passes: list[bool]) -> None:
    engine = literal_policy(literal, kind, values)
    test = ir.Test("compare", literal, "==", ir.Const(engine.policy.decisions[0].table.rows[0].tests[0].a.value, kind))
    assert ev._literal(test) is not ev._NO_LITERAL
    reference = ev.Backend(engine.policy, trace=True)._test(test)
    for fact, passed in zip(facts, passes):
        decision = engine.decide({"x": fact}, DAY)
        row = next(e for e in decision.events if e[0] == "row" and e[2] == 0)
        value = decision.events[0][3]
        cell = (0, value, passed, test.a.value, None)  # type: ignore[union-attr]
        assert repr(row[4]) == repr((cell,))  # repr: True and 1 are equal, but not the same cell
        assert repr(row[4][0][2:]) == repr(reference(None, None, value))
        assert decision["d"].ok is passed
    absent = engine.decide({}, DAY)  # an unknown value goes to the cell's own test
    assert absent["d"].status == "needs_information"
    assert next(e for e in absent.events if e[0] == "row")[3] == Unknown(frozenset({"x"}))


def test_only_equality_with_a_plain_literal_is_inlined() -> None:
    assert ev._literal(ir.Test("compare", "< 3", "<", ir.Const(3, "integer"))) is ev._NO_LITERAL
    assert ev._literal(ir.Test("compare", "y", "==", ir.Ref("y", "integer"))) is ev._NO_LITERAL
    assert ev._literal(ir.Test("compare", "null", "==", ir.Const(None, "null"))) is ev._NO_LITERAL
    assert ev._literal(ir.Test("any", "-")) is ev._NO_LITERAL
    assert ev._literal(ir.Test("compare", "true", None, ir.Const(True, "boolean"))) is True


# -- the decision --------------------------------------------------------------------------------


def test_events_are_one_tuple_made_on_first_read() -> None:
    engine = pe.load(SHARED)
    facts = {"members": [{"income": {"wages": "1000", "other_counted": "5"}}], "assets": {"deposits": "10"}}
    decision = engine.decide(facts, DAY)
    events = decision.events
    assert type(events) is tuple and decision.events is events
    assert events == engine.decide(facts, DAY, trace=False).events
    assert events[-1] == ("decision", "dibao", "decided", None)
    assert decision.to_dict()["events"][0] == {"event": "input_read", "name": "wages", "member": 0,
                                               "value": "1000"}


# -- facts intake -------------------------------------------------------------------------------

MONEY_TEXTS = ["0", "0.00", "0.0", " 12.50 ", "12.5\n", "1_000", "-0", "-0.00", "-3", "+4", "1e3", "NaN", "-Infinity",
               "abc", "", " ", "٣", "0.000", "00"]
RAW_VALUES: list[Any] = [*MONEY_TEXTS, 5, -5, Decimal("2.50"), Decimal(-1), 1.5, 0.1, 1e16, 1e-7, 2.5e-310, -0.0, -1.5,
                         float("nan"), float("inf"), float("-inf"), True, [], {}]


@pytest.mark.parametrize("raw", RAW_VALUES, ids=repr)
def test_the_fast_money_reader_is_coerce(raw: Any) -> None:
    engine = pe.load(SHARED)
    wages = next(n for n in engine.policy.inputs if n.name == "wages")
    deposits = next(n for n in engine.policy.inputs if n.name == "deposits")
    facts = {"members": [{"income": {"wages": raw}}], "assets": {"deposits": raw}}
    try:
        expected_wages = coerce(raw, wages)
        expected = None
    except ValueError as exc:
        expected = str(exc)
    try:
        values, members = read_facts(engine.policy.inputs, facts, "household")
    except FactsError as exc:
        messages = [d.message for d in exc.diagnostics]
        assert messages == [f"assets.deposits: {expected}", f"members[0].income.wages: {expected}"]
        return
    assert expected is None, expected
    assert members is not None
    got = members[0]["wages"]
    assert (type(got), str(got)) == (type(expected_wages), str(expected_wages))
    assert str(values["deposits"]) == str(coerce(raw, deposits))


@pytest.mark.parametrize("income", [None, {"other": 1}, {"wages": None}])
def test_member_containers_that_are_null_or_hold_no_read_fact_are_absent_facts(income: Any) -> None:
    engine = pe.load(SHARED)
    _, members = read_facts(engine.policy.inputs, {"members": [{"income": income}]}, "household")
    assert members == [{}]


@pytest.mark.parametrize("income", [[], "x", 0, False])
def test_member_containers_that_are_values_are_refused(income: Any) -> None:
    engine = pe.load(SHARED)
    with pytest.raises(FactsError) as caught:
        read_facts(engine.policy.inputs, {"members": [{"income": income}, {"income": income}]}, "household")
    assert caught.value.paths == ["members[0].income", "members[1].income"]


def test_paths_of_other_lengths_and_mapping_subclasses() -> None:
    class Facts(dict):  # type: ignore[type-arg]
        pass

    engine = engine_for({
        "inputs": {
            "a": {"path": "a", "type": "integer", "label": {"zh": "a", "en": "a"}},
            "b": {"path": "x.y.b", "type": "money", "label": {"zh": "b", "en": "b"}},
            "c": {"path": "x.c", "type": "money", "label": {"zh": "c", "en": "c"}},
        },
        "derived": {"s": {"type": "money", "label": {"zh": "s", "en": "s"}, "expr": "b + c + a"}},
        "decisions": {"d": {"label": {"zh": "d", "en": "d"}, "cite": "s §1",
                            "outputs": {"s": {"type": "money", "label": {"zh": "s", "en": "s"}, "expr": "s"}}}},
    })
    facts = {"a": 1, "x": Facts({"y": {"b": "2.5"}, "c": "0"})}
    values, _ = read_facts(engine.policy.inputs, facts, "household")
    assert values == {"a": 1, "b": Decimal("2.5"), "c": Decimal(0)}
    assert engine.decide(facts, DAY)["d"].s == Decimal("3.50")
    with pytest.raises(FactsError) as caught:
        read_facts(engine.policy.inputs, {"a": "x", "x": {"y": {"b": "-1"}, "c": "z"}}, "household")
    expected = {"a": "a: expected a whole number, not 'x'", "b": "x.y.b: money cannot be negative (-1)",
                "c": "x.c: expected a number, not 'z'"}
    assert [d.message for d in caught.value.diagnostics] == sorted(expected.values())  # every bad fact


@settings(max_examples=300, deadline=None)
@given(st.floats(allow_nan=True, allow_infinity=True) | st.decimals(allow_nan=True) | st.integers())
def test_the_fast_money_reader_is_coerce_for_any_number(raw: Any) -> None:
    """Any JSON or Python number: the reading plan's money reader gives what ``coerce`` gives, or
    the same error."""
    test_the_fast_money_reader_is_coerce(raw)


@pytest.mark.parametrize(("expr", "facts", "want"), [
    ("n ** -1", {"n": 3}, CONTEXT.divide(Decimal(1), Decimal(3))),
    ("n ** -2", {"n": -2}, Decimal("0.25")),
    ("n ** -1", {"n": 0}, None),  # as 1 / 0
    ("a ** -1", {"a": "0"}, None),
    ("a ** 0", {"a": "0"}, Decimal(1)),
    ("n ** 0", {"n": 0}, 1),
    ("a ** 2", {"a": "1.5"}, Decimal("2.25")),
])
def test_powers_are_exact_decimals(expr: str, facts: dict[str, Any], want: Any) -> None:
    """Found by a differential fuzz: a whole number to a negative power gave a Python float
    (0.3333333333333333, never rounded); 0 to a negative power gave Infinity; decimal 0 ** 0
    gave null where whole-number 0 ** 0 gives 1. Both paths now agree on exact values."""
    from policy_engine.vector import decide_batch

    label = {"zh": "x", "en": "x"}
    engine = engine_for({"inputs": {"n": {"path": "n", "type": "integer", "label": label},
                                    "a": {"path": "a", "type": "decimal", "label": label}},
                         "decisions": {"d": {"label": label, "cite": "s §1", "value": expr, "type": "decimal"
                                             if "-" in expr or "a" in expr else "integer"}}})
    got = engine.decide(facts, DAY)["d"].value
    assert got == want and type(got) is type(want), got
    assert decide_batch(engine, [facts], DAY)["d.value"][0] == want
