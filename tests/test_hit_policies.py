"""DMN hit policies against a brute-force oracle written from the DMN 1.3 definitions."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import policy_engine as pe
from tests.helpers import engine_for

PRIORITY = ["high", "mid", "low"]  # output values, highest priority first (DMN)


def cell_strategy() -> st.SearchStrategy[tuple[str, Any]]:
    k = st.integers(-5, 5)
    return st.one_of(
        st.just(("-", lambda x: True)),
        k.map(lambda v: (f"< {v}", lambda x, v=v: x < v)),
        k.map(lambda v: (f">= {v}", lambda x, v=v: x >= v)),
        k.map(lambda v: (f"{v}", lambda x, v=v: x == v)),
        st.tuples(k, k).map(sorted).map(lambda ab: (f"[{ab[0]}..{ab[1]})", lambda x, a=ab[0], b=ab[1]: a <= x < b)),
        st.tuples(k, k).map(sorted).map(lambda ab: (f"]{ab[0]}..{ab[1]}]", lambda x, a=ab[0], b=ab[1]: a < x <= b)),
        k.map(lambda v: (f"not(< {v}), {v - 10}", lambda x, v=v: not x < v or x == v - 10)),
    )


rows_strategy = st.lists(st.tuples(cell_strategy(), st.sampled_from(PRIORITY), st.integers(0, 9)),
                         min_size=1, max_size=6)


def build(hit: str, rows: list[Any]) -> pe.Engine:
    aggregate = hit in ("C+", "C<", "C>", "C#")
    listing = hit in ("C", "R", "O")
    output_type = "list" if listing else ("integer" if aggregate else "enum")
    values = None if aggregate or listing else PRIORITY
    if hit == "O":
        values = PRIORITY
    table_rows = []
    for i, ((cell, _), label, number) in enumerate(rows):
        out = number if aggregate else (f'"{label}"' if listing else label)
        table_rows.append({"id": f"r{i}", "when": [cell], "then": [out], "cite": "s §1"})
    output: dict[str, Any] = {"type": output_type}
    if values:
        output["values"] = values
    module = {
        "inputs": {"x": {"type": "integer"}},
        "decisions": {"d": {"label": {"zh": "d", "en": "d"}, "cite": "s §1", "outputs": {"out": output},
                            "table": {"hit": hit, "inputs": ["x"], "outputs": ["out"], "rows": table_rows}}},
    }
    return engine_for(module)


def oracle(hit: str, rows: list[Any], x: int) -> Any:
    matched = [(i, label, number) for i, ((_, test), label, number) in enumerate(rows) if test(x)]
    if not matched:
        return None
    if hit == "U":
        return "error" if len(matched) > 1 else matched[0][1]
    if hit == "A":
        return matched[0][1] if len({m[1] for m in matched}) == 1 else "error"
    if hit == "F":
        return matched[0][1]
    if hit == "P":
        return min((m[1] for m in matched), key=PRIORITY.index)
    if hit in ("R", "C"):
        return [m[1] for m in matched]
    if hit == "O":
        return [m[1] for m in sorted(matched, key=lambda m: PRIORITY.index(m[1]))]
    numbers = [m[2] for m in matched]
    return {"C+": sum(numbers), "C<": min(numbers), "C>": max(numbers), "C#": len(numbers)}[hit]


@pytest.mark.parametrize("hit", ["U", "A", "P", "F", "R", "O", "C", "C+", "C<", "C>", "C#"])
@settings(max_examples=40, deadline=None)
@given(rows=rows_strategy, x=st.integers(-12, 12))
def test_hit_policy_matches_the_dmn_oracle(hit: str, rows: list[Any], x: int) -> None:
    engine = build(hit, rows)
    expected = oracle(hit, rows, x)
    if expected == "error":
        with pytest.raises(pe.PolicyError) as caught:
            engine.decide({"x": x}, as_of="2023-01-01")
        assert caught.value.diagnostics[0].code in ("PE301", "PE302")
        return
    got = engine.decide({"x": x}, as_of="2023-01-01")["d"].out
    if isinstance(got, tuple):
        got = list(got)
    assert got == expected


def test_no_match_gives_the_default_or_null() -> None:
    module = {
        "inputs": {"x": {"type": "integer"}},
        "decisions": {"d": {"label": {"zh": "d", "en": "d"}, "cite": "s §1",
                            "outputs": {"out": {"type": "integer"}},
                            "table": {"hit": "U", "inputs": ["x"], "outputs": ["out"],
                                      "rows": [{"id": "r", "when": ["> 0"], "then": [1], "cite": "s §1"}]}}},
    }
    assert engine_for(module).decide({"x": -1}, as_of="2023-01-01")["d"].out is None
    module["decisions"]["d"]["table"]["default"] = {"out": 7}
    assert engine_for(module).decide({"x": -1}, as_of="2023-01-01")["d"].out == 7


def test_an_output_expression_may_name_a_table_output_written_after_it() -> None:
    module = {
        "inputs": {"x": {"type": "integer"}},
        "decisions": {"d": {
            "label": {"zh": "d", "en": "d"}, "cite": "s §1",
            "outputs": {"amount": {"type": "integer", "expr": "10 if eligible else 0"}, "eligible": {"type": "boolean"}},
            "table": {"hit": "F", "inputs": ["x"], "outputs": ["eligible"], "rows": [
                {"id": "a", "when": ["> 0"], "then": [True], "cite": "s §1"},
                {"id": "b", "when": ["-"], "then": [False], "cite": "s §1"}]}}},
    }
    engine = engine_for(module)
    assert engine.decide({"x": 1}, as_of="2023-01-01")["d"].amount == 10
    assert engine.decide({"x": 0}, as_of="2023-01-01")["d"].amount == 0


def test_floor_division_floors_for_integers_and_decimals() -> None:
    module = {"inputs": {"a": {"type": "decimal"}, "n": {"type": "integer"}},
              "decisions": {"d": {"label": {"zh": "d", "en": "d"}, "cite": "s §1", "outputs": {
                  "q": {"type": "integer", "expr": "a // 2"}, "r": {"type": "integer", "expr": "n // 2"}}}}}
    outcome = engine_for(module).decide({"a": "-7", "n": -7}, as_of="2023-01-01")["d"]
    assert (outcome.q, outcome.r) == (-4, -4)


def test_an_unknown_output_among_collected_rows_needs_information() -> None:
    module = {"inputs": {"x": {"type": "integer"}, "bonus": {"type": "integer"}},
              "decisions": {"d": {"label": {"zh": "d", "en": "d"}, "cite": "s §1",
                                  "outputs": {"total": {"type": "integer"}},
                                  "table": {"hit": "C+", "inputs": ["x"], "outputs": ["total"], "rows": [
                                      {"id": "a", "when": ["> 0"], "then": ["bonus"], "cite": "s §1"},
                                      {"id": "b", "when": ["> 1"], "then": [5], "cite": "s §1"}]}}}}
    outcome = engine_for(module).decide({"x": 3}, as_of="2023-01-01")["d"]
    assert outcome.status == "needs_information" and outcome.missing == ("bonus",)
    assert engine_for(module).decide({"x": 3, "bonus": 2}, as_of="2023-01-01")["d"].total == 7
