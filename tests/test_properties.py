"""Semantic properties of decisions over generated households (hypothesis)."""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from hypothesis import assume, given, settings
from hypothesis import strategies as st

import policy_engine as pe
from tests.helpers import MANIFEST, write_package

FIXTURE = Path(__file__).parent / "fixtures" / "policies" / "dibao_small"
ENGINE = pe.load(FIXTURE)
COUNTY = pe.load(FIXTURE / "county")

money = st.decimals(min_value=0, max_value=3000, places=2, allow_nan=False, allow_infinity=False)


@st.composite
def households(draw: Any) -> dict[str, Any]:
    size = draw(st.integers(1, 6))
    return {
        "area_type": draw(st.sampled_from(["urban", "rural"])),
        "assets": {"deposits": draw(money) * 20},
        "members": [{"income": {"wages": draw(money)}} for _ in range(size)],
    }


@settings(max_examples=200, deadline=None)
@given(households(), st.integers(0, 5), st.decimals(min_value="0.01", max_value=500, places=2))
def test_more_income_never_makes_an_ineligible_household_eligible(facts: dict[str, Any], who: int,
                                                                   raise_by: Decimal) -> None:
    before = ENGINE.decide(facts, as_of="2023-07-01", trace=False)["dibao"]
    richer = copy.deepcopy(facts)
    member = richer["members"][who % len(richer["members"])]
    member["income"]["wages"] += raise_by
    after = ENGINE.decide(richer, as_of="2023-07-01", trace=False)["dibao"]
    if not before.eligible:
        assert not after.eligible
    if before.eligible and after.eligible:
        assert after.amount <= before.amount


@settings(max_examples=200, deadline=None)
@given(households())
def test_amounts_are_multiples_of_the_declared_unit(facts: dict[str, Any]) -> None:
    amount = ENGINE.decide(facts, as_of="2023-07-01", trace=False)["dibao"].amount
    unit = ENGINE.policy.rounding.unit
    assert isinstance(amount, Decimal)
    assert amount % unit == 0
    assert amount >= 0


@settings(max_examples=100, deadline=None)
@given(households())
def test_identical_inputs_give_an_identical_record(facts: dict[str, Any]) -> None:
    first = json.dumps(ENGINE.decide(facts, as_of="2023-07-01").to_dict(), sort_keys=True, ensure_ascii=False)
    second = json.dumps(pe.load(FIXTURE).decide(copy.deepcopy(facts), as_of="2023-07-01").to_dict(),
                        sort_keys=True, ensure_ascii=False)
    assert first == second


def _without(facts: dict[str, Any], path: str) -> dict[str, Any]:
    out = copy.deepcopy(facts)
    if path.startswith("members["):
        index = int(path[len("members["):path.index("]")])
        del out["members"][index]["income"]["wages"]
    elif path == "assets.deposits":
        del out["assets"]["deposits"]
    else:
        del out[path]
    return out


@settings(max_examples=200, deadline=None)
@given(households(), st.data())
def test_a_decision_made_without_a_fact_holds_whatever_its_value(facts: dict[str, Any], data: Any) -> None:
    """Removing a fact never yields a decided outcome that the fact could have changed."""
    paths = ["area_type", "assets.deposits"] + [f"members[{i}].income.wages" for i in range(len(facts["members"]))]
    path = data.draw(st.sampled_from(paths))
    full = ENGINE.decide(facts, as_of="2023-07-01", trace=False)["dibao"]
    partial = ENGINE.decide(_without(facts, path), as_of="2023-07-01", trace=False)["dibao"]
    if partial.status == "decided":
        assert partial.outputs == full.outputs
    else:
        assert partial.status == "needs_information" and path in partial.missing


@settings(max_examples=100, deadline=None)
@given(households(), st.data())
def test_removing_a_needed_income_never_yields_a_decision(facts: dict[str, Any], data: Any) -> None:
    full = ENGINE.decide(facts, as_of="2023-07-01", trace=False)["dibao"]
    assume(full.eligible)  # the amount of an eligible household depends on every member's wages
    index = data.draw(st.integers(0, len(facts["members"]) - 1))
    partial = ENGINE.decide(_without(facts, f"members[{index}].income.wages"), as_of="2023-07-01")["dibao"]
    assert partial.status == "needs_information"
    assert f"members[{index}].income.wages" in partial.missing
    assert partial.amount is None


@settings(max_examples=30, deadline=None)
@given(st.decimals(min_value=600, max_value=900, places=0), st.sampled_from(["dibao_standard", "deduction_rate"]))
def test_an_overlay_changes_exactly_what_it_names(value: Decimal, name: str) -> None:
    import tempfile

    base = ENGINE.policy
    original = next(p for p in base.parameters if p.name == name)
    new_value = value if name == "dibao_standard" else value / 1000
    entries = {"urban": new_value, "rural": new_value} if original.by else new_value
    module = {"parameters": {name: {
        "type": original.type, "by": list(original.by), "provenance": "illustrative", "note": "t",
        "values": {"2023-01-01": json.loads(json.dumps(entries, default=str))}, "cite": "s §1",
        "label": {"zh": original.label.zh, "en": original.label.en},
    }}}
    manifest = dict(MANIFEST, id="overlay", extends=str(FIXTURE))
    with tempfile.TemporaryDirectory() as tmp:
        overlay = pe.load(write_package(Path(tmp), module, manifest)).policy
    assert overlay.chain == ("demo", "overlay")
    for kind in ("inputs", "derived", "decisions"):
        assert getattr(overlay, kind) == getattr(base, kind)
    before = {p.name: p for p in base.parameters}
    after = {p.name: p for p in overlay.parameters}
    assert before.keys() == after.keys()
    for key, old in before.items():
        if key == name:
            assert after[key] != old
            assert after[key].values[0].entries[0][1] == Decimal(str(new_value))
        else:
            assert after[key] == old
    assert overlay.content_hash != base.content_hash


def test_county_overlay_standard_applies_and_is_flagged_illustrative() -> None:
    facts = {"area_type": "urban", "assets": {"deposits": 0}, "members": [{"income": {"wages": 700}}]}
    base = ENGINE.decide(facts, as_of="2023-07-01")
    county = COUNTY.decide(facts, as_of="2023-07-01")
    assert base["dibao"].amount == Decimal("179.00")  # 739 - (700 - 140)
    assert county["dibao"].amount == Decimal("240.00")  # 800 - 560
    assert "dibao standard" in county.explain("en") and "illustrative" in county.explain("en")
