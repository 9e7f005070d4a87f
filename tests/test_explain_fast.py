"""The caches of the explanation renderer (`explain._Plan`): kept per policy and language, they
change no text (the golden files in test_explain.py fix the text itself)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import policy_engine as pe
from policy_engine import explain

FIXTURE = Path(__file__).parent / "fixtures" / "policies" / "dibao_small"

CASES: list[tuple[str, dict[str, Any]]] = [
    ("", {"area_type": "urban", "assets": {"deposits": 1000},
          "members": [{"income": {"wages": 1000}}, {"income": {"wages": 200}}]}),
    ("", {"area_type": "rural", "assets": {"deposits": 20000}, "members": [{"income": {"wages": 100}}]}),
    ("", {"area_type": "urban", "members": [{"income": {"wages": 100}}]}),  # needs information
    ("county", {"area_type": "urban", "assets": {"deposits": 0}, "members": [{"income": {"wages": 700}}]}),
    ("county", {"area_type": "rural", "assets": {"deposits": 5}, "members": [{"income": {"wages": 7}}]}),
]
LEVELS = [(lang, level) for lang in ("zh", "en") for level in ("summary", "fails", "full")]


def _decisions() -> list[pe.Decision]:
    engines = {"": pe.load(FIXTURE), "county": pe.load(FIXTURE / "county")}
    return [engines[sub].decide(facts, as_of="2023-07-01") for sub, facts in CASES]


def _fresh(decision: pe.Decision, lang: str, level: str) -> str:
    explain._PLANS.clear()
    explain._NAMES.clear()
    return explain.render(decision, lang, level)


def test_cached_text_is_the_text_of_a_fresh_render() -> None:
    decisions = _decisions()
    expected = {(i, lang, level): _fresh(d, lang, level)
                for i, d in enumerate(decisions) for lang, level in LEVELS}
    # interleaved across two policies, both languages and all levels, twice, on warm caches
    for _ in range(2):
        for lang, level in LEVELS:
            for i, d in enumerate(decisions):
                assert d.explain(lang, level) == expected[(i, lang, level)]


def test_plans_are_per_policy_and_language() -> None:
    base, county = (d.policy for d in _decisions()[::3])
    assert base is not county
    plans = {(id(p), lang): explain._plan_for(p, lang) for p in (base, county) for lang in ("zh", "en")}
    assert len({id(plan) for plan in plans.values()}) == 4
    assert explain._plan_for(base, "zh") is plans[(id(base), "zh")]


def test_a_parameter_line_is_made_for_the_value_it_shows() -> None:
    # equal Decimals written differently print differently: a line made for one is not reused
    plan = explain._plan_for(pe.load(FIXTURE).policy, "en")
    start = dt.date(2022, 1, 1)
    lines = [plan.param_line(("param", "deduction_rate", (), Decimal(text), start, "illustrative"))
             for text in ("0.2", "0.20", "0.2")]
    assert lines[0].startswith("· parameter ") and "= 0.2 (from 2022-01-01, illustrative)" in lines[0]
    assert "= 0.20 (from" in lines[1]
    assert lines[2] == lines[0]


def test_values_of_every_kind_are_shown_as_before() -> None:
    names = explain._names_for(pe.load(FIXTURE).policy)
    for lang in ("zh", "en"):
        plan = explain._plan_for(names.policy, lang)
        for value, kind in [(Decimal("12.345"), "money"), (Decimal("1.50"), "decimal"), (3, "integer"),
                            (True, "boolean"), (False, "boolean"), (None, ""), ("urban", "enum"),
                            ("other", "text"), (dt.date(2024, 2, 29), "date"),
                            ([Decimal("1.0"), "urban", None], "list"), ((1, 2), "list"),
                            (explain.Unknown(frozenset({"x"})), "money")]:
            for name in (None, "area_type", "dibao_standard"):
                assert plan.show(value, name, kind) == names.show(value, name, kind, lang)


@settings(max_examples=500, deadline=None)
@given(st.decimals(allow_nan=False, allow_infinity=False, places=None),
       st.sampled_from([None, "0.01", "1", "0.1", "10", "0.001"]))
def test_a_number_is_shown_as_format_f_would_show_it(value: Decimal, unit: str | None) -> None:
    """`explain.fixed` (``str`` where it has no exponent, for speed) gives exactly the text of
    ``format(value, "f")``, padded to the unit's places, never rounded."""
    from policy_engine.evaluate import CONTEXT
    from policy_engine.explain import fixed

    shown = fixed(value, Decimal(unit) if unit else None)
    expected = value
    if unit:
        try:
            padded = CONTEXT.quantize(value, Decimal(unit))
        except InvalidOperation:
            padded = value
        expected = padded if padded == value else value
    assert shown == format(expected, "f")
    assert Decimal(shown) == value  # never rounded
