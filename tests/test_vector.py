"""The vectorised evaluator (policy_engine.vector) against the scalar path: results must be equal."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import policy_engine as pe
from policy_engine import ir
from policy_engine.diagnostics import FactsError, PolicyError
from policy_engine.evaluate import CONTEXT, ROUNDING_MODES
from policy_engine.vector import (
    GUARD,
    Split,
    V,
    _divide_rounded,
    decide_batch,
    facts_to_population,
    unsupported,
)
from tests.helpers import same_value
from tests.test_hit_policies import build as build_hit_table
from tests.test_hit_policies import rows_strategy as hit_rows

ROOT = Path(__file__).parent.parent
SMALL = pe.load(Path(__file__).parent / "fixtures" / "policies" / "dibao_small")
COUNTY = pe.load(Path(__file__).parent / "fixtures" / "policies" / "dibao_small" / "county")
HUAIYUAN = pe.load(ROOT / "policies" / "anhui" / "bengbu" / "huaiyuan")

#: (engine, as_of) pairs checked; other provinces are checked where their packages load
CASES: list[tuple[str, Any, str]] = [
    ("dibao_small", SMALL, "2023-07-01"),
    ("dibao_small-2021", SMALL, "2021-07-01"),  # before the standard's first value: not in force
    ("county", COUNTY, "2023-07-01"),
    ("huaiyuan-2022", HUAIYUAN, "2022-12-01"),
    ("huaiyuan-2024", HUAIYUAN, "2024-07-01"),
]
for _path, _day in [("policies/hunan/yueyang", "2024-07-01"), ("policies/shaanxi/hanzhong", "2024-07-01"),
                    ("policies/hebei/chengde", "2024-07-01"), ("policies/national", "2024-07-01")]:
    _dirs = [p for p in (ROOT / _path).glob("*") if (p / "package.yaml").exists()] + [ROOT / _path]
    for _dir in _dirs:
        if (_dir / "package.yaml").exists():
            CASES.append((_dir.name, pe.load(_dir), _day))


# --- households concentrated around the thresholds of a policy -----------------------------------


class Landmarks:
    """Values a policy compares against on a date: money standards, integer limits."""

    def __init__(self, engine: Any, as_of: dt.date):
        self.money: list[Decimal] = []
        self.integers: list[int] = []
        for param in engine.policy.parameters:
            for value in param.values:
                if value.start <= as_of and (value.end is None or as_of <= value.end):
                    for _, v in value.entries:
                        if param.type == "money" and isinstance(v, (int, Decimal)):
                            self.money.append(Decimal(v))
                        elif param.type == "integer" and isinstance(v, int) and 0 <= v <= 120:
                            self.integers.append(v)
        self.money = self.money or [Decimal(700)]
        self.integers = sorted(set(self.integers + [16, 18, 60]))


_INCOME_FIELDS = ("wages", "transfer_net", "basic_pension_central", "business_gross")


def _money(r: random.Random, marks: Landmarks, signed: bool = False) -> Decimal:
    roll = r.random()
    if roll < 0.15:
        value = Decimal(0)
    elif roll < 0.6:
        base = r.choice(marks.money) * r.choice((1, 1, 2, 3, 6, 12, 24, 36))
        value = base + Decimal(r.randint(-300, 300)) / 100
    elif roll < 0.7:  # more places than a fen: exercises rounding of derived money
        value = Decimal(r.randint(0, 3_000_000)) / 1000
    else:
        value = Decimal(r.randint(0, 500_000)) / 100
    if signed and r.random() < 0.2:
        value = -value
    return max(value, Decimal(0)) if not signed else value


def _date(r: random.Random, marks: Landmarks, as_of: dt.date) -> dt.date:
    if r.random() < 0.7:
        years = r.choice(marks.integers)
        try:
            base = as_of.replace(year=as_of.year - years)
        except ValueError:  # 29 February
            base = as_of.replace(year=as_of.year - years, day=28)
        return base + dt.timedelta(days=r.randint(-3, 3))
    return as_of - dt.timedelta(days=r.randint(0, 90 * 365))


def _value(node: ir.InputNode, r: random.Random, marks: Landmarks, as_of: dt.date) -> Any:
    if node.type == "money":
        return _money(r, marks, signed=node.path[-1] in ("property_net", "transfer_net"))
    if node.type == "decimal":
        return Decimal(r.randint(0, 3000)) / 100
    if node.type == "integer":
        return r.choice(marks.integers) + r.randint(-1, 1) if r.random() < 0.3 else r.randint(0, 6)
    if node.type == "boolean":
        return r.random() < 0.5
    if node.type == "enum":
        return r.choice(node.values)
    if node.type == "date":
        return _date(r, marks, as_of)
    if node.type == "text":
        return f"m{r.randint(0, 99)}"
    return None


def _put(target: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for part in path[:-1]:
        target = target.setdefault(part, {})
    target[path[-1]] = value


def household(engine: Any, as_of: str, r: random.Random, p_missing: float = 0.05) -> dict[str, Any]:
    """A random household, mostly near the policy's thresholds; a few facts left out."""
    day = dt.date.fromisoformat(as_of)
    marks = Landmarks(engine, day)
    facts: dict[str, Any] = {}
    for node in engine.policy.inputs:
        if node.entity == "household" and r.random() >= p_missing:
            _put(facts, node.path, _value(node, r, marks, day))
    if r.random() < 0.02:
        return facts  # members not given
    size = r.choice((0, 1, 1, 2, 2, 3, 3, 4, 5, 6)) if r.random() < 0.98 else 0
    members = []
    for _ in range(size):
        member: dict[str, Any] = {}
        for node in engine.policy.inputs:
            if node.entity == "member" and r.random() >= p_missing:
                _put(member, node.path, _value(node, r, marks, day))
        members.append(member)
    if members and r.random() < 0.5:  # per-capita income within a few fen of a standard
        target = r.choice(marks.money) + Decimal(r.randint(-3, 3)) / 100
        for member in members:
            for name in _INCOME_FIELDS:
                if name in member.get("income", {}):
                    member["income"][name] = Decimal(0)
        members[0].setdefault("income", {})["wages"] = max(Decimal(0), target * size + Decimal(r.randint(-2, 2)) / 100)
    facts["members"] = members
    return facts


# --- comparing --------------------------------------------------------------------------------------


def assert_equal(engine: Any, facts: list[dict[str, Any]], as_of: str) -> pl.DataFrame:
    result = decide_batch(engine, facts, as_of)
    ids = engine.decision_ids("household")
    rows = result.to_dicts()
    assert len(rows) == len(facts)
    for i, case in enumerate(facts):
        decision = engine.decide(case, as_of, trace=False)
        row = rows[i]
        for did in ids:
            outcome = decision[did]
            assert row[f"{did}.status"] == outcome.status, (did, i, case)
            assert tuple(row[f"{did}.fired_rows"]) == outcome.fired_rows, (did, i, case)
            for name, want in outcome.outputs.items():
                assert same_value(row[f"{did}.{name}"], want), (did, name, row[f"{did}.{name}"], want, case)
            if outcome.status == "not_in_force":
                node = next(d for d in engine.policy.decisions if d.id == did)
                assert all(row[f"{did}.{o.short}"] is None for o in node.outputs)
    return result


# --- tests ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,engine,as_of", CASES, ids=[c[0] for c in CASES])
def test_every_decision_compiles_to_the_vector_path(name: str, engine: Any, as_of: str) -> None:
    assert unsupported(engine, as_of) == {}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**64), st.sampled_from(range(len(CASES))), st.sampled_from((0.0, 0.05, 0.3)))
def test_batch_equals_scalar_near_thresholds(seed: int, which: int, p_missing: float) -> None:
    _, engine, as_of = CASES[which]
    r = random.Random(seed)
    facts = [household(engine, as_of, r, p_missing=p_missing) for _ in range(25)]
    assert_equal(engine, facts, as_of)


@settings(max_examples=60, deadline=None)
@given(size=st.integers(0, 6), per_capita_fen=st.integers(-300, 300), area=st.sampled_from(["urban", "rural"]),
       deposits_fen=st.integers(-300, 300), spread=st.integers(0, 99))
def test_dibao_small_at_the_standard_and_asset_limit(size: int, per_capita_fen: int, area: str,
                                                     deposits_fen: int, spread: int) -> None:
    standard = Decimal(800 if area == "urban" else 760)
    total = (standard + Decimal(per_capita_fen) / 100) * size
    wages = [total / size + Decimal(spread - 50) / 100 * (1 if i % 2 else -1) for i in range(size)] if size else []
    wages = [max(w, Decimal(0)) for w in wages]
    facts = {"area_type": area, "assets": {"deposits": max(Decimal(0), 24 * standard * size
                                                         + Decimal(deposits_fen) / 100)},
             "members": [{"income": {"wages": w}} for w in wages]}
    assert_equal(COUNTY, [facts], "2023-07-01")


def test_twenty_thousand_random_households() -> None:
    r = random.Random(20260501)
    small = [household(SMALL, "2023-07-01", r) for _ in range(12_000)]
    assert_equal(SMALL, small, "2023-07-01")
    huaiyuan = [household(HUAIYUAN, "2024-07-01", r) for _ in range(8_000)]
    result = assert_equal(HUAIYUAN, huaiyuan, "2024-07-01")
    assert result["_fallback"].sum() < len(huaiyuan)


def test_dataframe_layout_and_fallback_rows() -> None:
    facts = [household(SMALL, "2023-07-01", random.Random(i)) for i in range(50)]
    population = facts_to_population(SMALL, facts)
    assert population.schema["members"] == pl.List(pl.Struct({"wages": pl.Decimal(38, 3)})) or \
        isinstance(population.schema["members"], pl.List)
    from_frame = decide_batch(SMALL, population, "2023-07-01")
    from_facts = decide_batch(SMALL, facts, "2023-07-01")
    assert from_frame.equals(from_facts)
    assert not from_frame["_fallback"].any()
    # a value the scalar intake refuses is refused here too, with its row
    frame = pl.DataFrame({"area_type": ["urban", "mountain"], "deposits": [Decimal("10.00"), Decimal("5.00")],
                          "members": [[{"wages": Decimal("100.00")}], [{"wages": Decimal("-1.00")}]]})
    with pytest.raises(FactsError) as info:
        decide_batch(SMALL, frame, "2023-07-01")
    paths = [d.path for d in info.value.diagnostics]
    assert paths == ["[1].area_type", "[1].members[0].income.wages"]


def test_rows_the_vector_path_cannot_decide_go_to_the_scalar_path() -> None:
    # huaiyuan's tekun care standard has no value for some care settings: the scalar path raises
    # NotInForce for those rows, so they are marked and decided by it
    r = random.Random(7)
    facts = [household(HUAIYUAN, "2024-07-01", r) for _ in range(400)]
    result = assert_equal(HUAIYUAN, facts, "2024-07-01")
    assert 0 < result["_fallback"].sum() < len(facts)
    frame = facts_to_population(HUAIYUAN, facts)
    assert decide_batch(HUAIYUAN, frame, "2024-07-01").equals(result)


def test_numbers_as_text_and_floats_are_read_as_typed() -> None:
    frame = pl.DataFrame({"area_type": ["urban"], "deposits": ["10.10"],
                          "members": [[{"wages": 820.5}, {"wages": 0.1}]]})
    out = decide_batch(SMALL, frame, "2023-07-01")
    want = SMALL.decide({"area_type": "urban", "assets": {"deposits": "10.10"},
                         "members": [{"income": {"wages": 820.5}}, {"income": {"wages": 0.1}}]}, "2023-07-01")
    assert out["dibao.amount"][0] == want["dibao"].amount
    assert out["dibao.eligible"][0] == want["dibao"].eligible


@pytest.mark.parametrize("hit", ["U", "A", "P", "F", "R", "O", "C", "C+", "C<", "C>", "C#"])
@settings(max_examples=30, deadline=None)
@given(rows=hit_rows, xs=st.lists(st.one_of(st.none(), st.integers(-12, 12)), min_size=1, max_size=12))
def test_every_hit_policy_equals_the_scalar_path(hit: str, rows: list[Any], xs: list[int | None]) -> None:
    engine = build_hit_table(hit, rows)
    facts = [{} if x is None else {"x": x} for x in xs]
    try:
        want = [engine.decide(f, "2024-01-01", trace=False)["d"] for f in facts]
    except PolicyError:  # a U or A violation: the batch raises it too (from the scalar path)
        with pytest.raises(PolicyError):
            decide_batch(engine, facts, "2024-01-01")
        return
    got = decide_batch(engine, facts, "2024-01-01").to_dicts()
    for outcome, row in zip(want, got):
        assert row["d.status"] == outcome.status
        assert tuple(row["d.fired_rows"]) == outcome.fired_rows
        assert same_value(row["d.out"], outcome.outputs.get("out"))
    # lists (R, O, C) are not vectorised yet: those rows are decided by the scalar path
    if hit in ("R", "O", "C"):
        assert "d" in unsupported(engine, "2024-01-01")
    else:
        assert unsupported(engine, "2024-01-01") == {}


@pytest.mark.parametrize("wages", [
    ["0.025"],  # deduction 0.005: a half fen, rounded up
    ["0.01", "0"],  # per-capita 0.005
    ["1000.01", "0", "0"],  # per-capita 266.6693...: a long quotient, rounded once
    ["2216.97", "0", "0"],  # huaiyuan's suite case: 738.99
    ["820.123456", "0.000001"],
])
def test_money_is_rounded_half_up_where_the_scalar_path_rounds_it(wages: list[str]) -> None:
    facts = [{"area_type": area, "assets": {"deposits": "0"}, "members": [{"income": {"wages": w}} for w in wages]}
             for area in ("urban", "rural")]
    assert_equal(COUNTY, facts, "2023-07-01")
    assert_equal(SMALL, facts, "2023-07-01")


def test_decisions_can_be_chosen_and_unknown_ones_are_refused() -> None:
    facts = [household(HUAIYUAN, "2024-07-01", random.Random(3)) for _ in range(5)]
    out = decide_batch(HUAIYUAN, facts, "2024-07-01", decisions=["dibao"])
    dibao = next(d for d in HUAIYUAN.policy.decisions if d.id == "dibao")
    assert out.columns == ["dibao.status", *(f"dibao.{o.short}" for o in dibao.outputs), "dibao.fired_rows",
                           "_fallback"]
    with pytest.raises(FactsError):
        decide_batch(HUAIYUAN, facts, "2024-07-01", decisions=["dibaoo"])


def test_engine_decide_batch_is_the_vector_evaluator() -> None:
    import policy_engine as pe

    engine = pe.load("tests/fixtures/policies/dibao_small")
    facts = [{"area_type": "urban", "assets": {"deposits": "10"}, "members": [{"income": {"wages": "-0"}}]},
             {"area_type": "rural", "assets": {"deposits": "10"}, "members": [{"income": {"wages": "720"}}]}]
    table = engine.decide_batch(facts, "2023-07-01")
    for row, one in zip(table.iter_rows(named=True), facts):
        assert row["dibao.amount"] == engine.decide(one, "2023-07-01")["dibao"].amount


# --- quotients rounded in Int128 -----------------------------------------------------------------


def _fixed(value: Decimal) -> tuple[int, int]:
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)
    scale = max(0, -exponent)
    return int(value.scaleb(scale)), scale


@st.composite
def _quotients(draw: Any) -> tuple[Decimal, Decimal, int, str]:
    k = draw(st.integers(0, 3))
    divisor = Decimal(draw(st.sampled_from([1, 2, 3, 4, 6, 7, 8, 12, 16, 3000, 9999]))) * draw(
        st.sampled_from([1, -1])) / Decimal(10) ** draw(st.integers(0, 3))
    if draw(st.booleans()):  # right at a tie or a boundary of the rounding unit, or one unit off
        unit = Decimal(1).scaleb(-k)
        target = Decimal(draw(st.integers(-10**6, 10**6))) * unit + draw(
            st.sampled_from([Decimal(0), unit / 2])) + draw(st.sampled_from([0, 1, -1])) * Decimal("1e-8")
        dividend = target * divisor
    else:
        dividend = Decimal(draw(st.integers(-10**12, 10**12))).scaleb(-draw(st.integers(0, 4)))
    mode = draw(st.sampled_from(sorted(ROUNDING_MODES)))
    return dividend, divisor, k, mode


@settings(max_examples=400, deadline=None)
@given(_quotients())
def test_a_rounded_quotient_equals_the_scalar_divide_then_quantize(case: tuple[Decimal, Decimal, int, str]) -> None:
    """The Int128 division with guard digits gives the scalar path's result (34-digit quotient,
    then quantize) for every rounding mode, or sends the row to the scalar path."""
    dividend, divisor, k, mode = case
    (a, sa), (b, sb) = _fixed(dividend), _fixed(divisor)
    frame = pl.DataFrame({"a": pl.Series([a], dtype=pl.Int128), "b": pl.Series([b], dtype=pl.Int128)})
    expected = CONTEXT.divide(dividend, divisor).quantize(Decimal(1).scaleb(-k), rounding=ROUNDING_MODES[mode],
                                                          context=CONTEXT)
    # without bounds: guard digits; with the bounds of this population: direct integer rounding
    # (taken when the divisor is positive)
    for bounded in (False, True):
        ba = {"lo": a, "hi": a} if bounded else {}
        bb = {"lo": b, "hi": b} if bounded else {}
        val, fb, _ = _divide_rounded(V("num", pl.col("a"), scale=sa, **ba), V("num", pl.col("b"), scale=sb, **bb),
                                     k, mode)
        got, fallback = frame.select(val.alias("v"), (fb if fb is not None else pl.lit(False)).alias("f")).row(0)
        if fallback:  # only a quotient within one guard unit of a rounding boundary may fall back
            q = Fraction(dividend) / Fraction(divisor)
            step = Fraction(1, 10 ** k) / (2 if mode.startswith("half") else 1)
            assert abs(q - round(q / step) * step) <= Fraction(1, 10 ** (k + GUARD))
            continue
        assert Decimal(got).scaleb(-k) == expected, bounded


def test_quotients_by_zero_are_null_and_few_rows_fall_back() -> None:
    frame = pl.DataFrame({"a": pl.Series([100, 5, 10**30], dtype=pl.Int128),
                          "b": pl.Series([0, 3, 7], dtype=pl.Int128)})
    val, fb, _ = _divide_rounded(V("num", pl.col("a")), V("num", pl.col("b")), 2, "half_up")
    assert fb is not None
    out = frame.select(val.alias("v"), fb.alias("f"))
    assert out["v"].to_list()[:2] == [None, 167]  # 5 / 3 = 1.67; by zero: null
    assert out["f"].to_list() == [False, False, True]  # 10^30 * 10^8 would not fit: scalar path


_SIGNED_MODULE = {
    "inputs": {
        "x": {"path": "x", "type": "decimal", "label": {"zh": "x", "en": "x"}},
        "n": {"path": "n", "type": "integer", "label": {"zh": "n", "en": "n"}},
    },
    "derived": {
        "share": {"type": "money", "unit": "yuan", "label": {"zh": "份额", "en": "share"},
                  "expr": "(-x) / n", "cite": "s"},
        "shifted": {"type": "money", "unit": "yuan", "label": {"zh": "移", "en": "shifted"},
                    "expr": "(x - 7) / n", "cite": "s"},
    },
    "decisions": {
        "d": {"label": {"zh": "决定", "en": "decision"}, "cite": "s",
              "outputs": {"share": {"type": "money", "unit": "yuan", "label": {"zh": "a", "en": "a"}, "expr": "share"},
                          "shifted": {"type": "money", "unit": "yuan", "label": {"zh": "b", "en": "b"},
                                      "expr": "shifted"}}},
    },
}


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 10**7), st.integers(0, 3), st.integers(1, 9)), min_size=1, max_size=40))
def test_bounds_follow_negation_and_subtraction(rows: list[tuple[int, int, int]]) -> None:
    """Dividends known (from the population's bounds) to be positive become negative by `-x`
    and `x - 7`: the direct rounding must handle their sign as the scalar path does."""
    from tests.helpers import engine_for

    engine = engine_for(_SIGNED_MODULE)
    facts = [{"x": str(Decimal(v).scaleb(-places)), "n": n} for v, places, n in rows]
    batch = decide_batch(engine, facts, "2023-07-01")
    for row, f in zip(batch.iter_rows(named=True), facts):
        outcome = engine.decide(f, "2023-07-01")["d"]
        assert (row["d.share"], row["d.shifted"]) == (outcome.share, outcome.shifted), f


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(-10**9, 10**9), st.integers(1, 5000)), min_size=1, max_size=30),
       st.integers(0, 3), st.integers(0, 2), st.sampled_from(sorted(ROUNDING_MODES)))
def test_the_bounds_of_a_direct_quotient_hold_every_row(rows: list[tuple[int, int]], sa: int, k: int, mode: str) -> None:
    a = pl.Series([x for x, _ in rows], dtype=pl.Int128)
    b = pl.Series([y for _, y in rows], dtype=pl.Int128)
    va = V("num", pl.col("a"), scale=sa, lo=int(a.min()), hi=int(a.max()))  # type: ignore[arg-type]
    vb = V("num", pl.col("b"), scale=0, lo=int(b.min()), hi=int(b.max()))  # type: ignore[arg-type]
    val, fb, bounds = _divide_rounded(va, vb, k, mode)
    assert fb is None and bounds is not None  # the direct path: a positive divisor, small numbers
    got = pl.DataFrame({"a": a, "b": b}).select(val.alias("v"))["v"]
    assert bounds[0] <= got.min() and got.max() <= bounds[1]  # type: ignore[operator]
    for (x, y), value in zip(rows, got.to_list()):
        expected = CONTEXT.divide(Decimal(x).scaleb(-sa), Decimal(y)).quantize(
            Decimal(1).scaleb(-k), rounding=ROUNDING_MODES[mode], context=CONTEXT)
        assert Decimal(value).scaleb(-k) == expected


# --- magnitudes beyond the scalar path's 34 digits ------------------------------------------------

_L = {"zh": "x", "en": "x"}
_WIDE = {
    "inputs": {"a": {"path": "a", "type": "money", "label": _L}, "b": {"path": "b", "type": "decimal", "label": _L},
               "n": {"path": "n", "type": "integer", "label": _L}},
    "derived": {"p": {"type": "money", "label": _L, "expr": "a * b"},
                "q": {"type": "decimal", "label": _L, "expr": "a + b"},
                "w": {"type": "integer", "label": _L, "expr": "n ** 3"}},
    "decisions": {"d": {"label": _L, "cite": "s §1", "outputs": {
        "p": {"type": "money", "label": _L, "expr": "p"}, "q": {"type": "decimal", "label": _L, "expr": "q"},
        "w": {"type": "integer", "label": _L, "expr": "w"}}}},
}
_BIG = "999999999999999999.999999999999999999"  # 36 digits: a fact may have 18 on either side


def test_sums_the_scalar_path_rounds_to_34_digits_are_decided_by_it() -> None:
    """The scalar path adds, multiplies and sums in 34 digits (FEEL's decimal128), where a
    fixed-point column is exact: a row where they could differ is decided by the scalar path."""
    from tests.helpers import engine_for

    engine = engine_for(_WIDE)
    cases = [{"a": "1", "b": "2", "n": 3}, {"a": _BIG, "b": "0.000000000000000001", "n": 2},
             {"a": "123456789012345678.12", "b": "0.123456789012345678", "n": 2}]
    fallback = []
    for facts in cases:  # one at a time: the columns' scales are each case's own
        row = decide_batch(engine, [facts], "2023-07-01").row(0, named=True)
        want = engine.decide(facts, "2023-07-01")["d"]
        assert (row["d.p"], row["d.q"], row["d.w"]) == (want.p, want.q, want.w), facts
        assert type(row["d.w"]) is int
        fallback.append(row["_fallback"])
    assert fallback == [False, True, True]
    # members' sums: the scalar path adds member by member (the issue-5 hunt's household)
    zero = dict.fromkeys(["wages", "business_gross", "business_costs", "productive_asset_depreciation",
                          "property_net", "transfer_net", "other_counted", "income_tax_paid",
                          "social_insurance_contributions"], "0")
    facts = {"area_type": "rural", "assets": {"cash": "0", "deposits": "0", "securities": "0", "vehicle_count": 0},
             "members": [{"income": {**zero, "transfer_net": _BIG}},
                         {"income": {**zero, "transfer_net": "1213.945", "social_insurance_contributions": _BIG}}]}
    row = decide_batch(HUAIYUAN, [facts], "2023-07-01").row(0, named=True)
    assert row["dibao.amount"] == HUAIYUAN.decide(facts, "2023-07-01")["dibao"].amount


def test_cases_decide_refuses_are_named_by_position_or_collected() -> None:
    """A product whose rounding needs more than 34 digits, a whole number beyond 64 bits: decide
    refuses the case; decide_batch names it (or, given ``errors``, collects it and goes on)."""
    from tests.helpers import engine_for

    engine = engine_for(_WIDE)
    cases = [{"a": "1", "b": "2", "n": 3}, {"a": "99999999999999999", "b": "99999999999999999", "n": 1},
             {"a": "1", "b": "1", "n": 10 ** 13}]
    for facts, message in zip(cases[1:], ["needs more than 34 digits", "d.w is a whole number beyond"]):
        with pytest.raises(FactsError, match=message):
            engine.decide(facts, "2023-07-01")
    with pytest.raises(FactsError) as caught:
        decide_batch(engine, cases, "2023-07-01")
    assert [d.path for d in caught.value.diagnostics] == ["[1]", "[2]"]
    errors: list[tuple[int, FactsError]] = []
    batch = decide_batch(engine, cases, "2023-07-01", errors=errors)
    assert [i for i, _ in errors] == [1, 2]
    assert batch["d.status"].to_list() == ["decided", None, None] and batch["d.w"].to_list() == [27, None, None]


def test_screen_reports_a_case_decide_refuses_and_decides_the_rest(tmp_path: Path) -> None:
    import json

    from policy_engine import population as P
    from tests.helpers import engine_for

    engine = engine_for(_WIDE)
    rows = [{"household_id": "A", "a": "1", "b": "2", "n": 3},
            {"household_id": "B", "a": "99999999999999999", "b": "99999999999999999", "n": 1},
            {"household_id": "C", "a": "2", "b": "2", "n": 2}]
    (tmp_path / "h.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    result = P.screen(engine, tmp_path / "h.jsonl", tmp_path / "o.parquet", "2023-07-01")
    assert [(e.row, e.household_id) for e in result.errors] == [(2, "B")]
    assert "needs more than 34 digits" in result.errors[0].message
    assert result.households == 2
    assert pl.read_parquet(tmp_path / "o.parquet")["household_id"].to_list() == ["A", "C"]


def test_batch_computed_whole_numbers_floors_and_echoed_text_follow_decide() -> None:
    """Found by review: a whole-number output the batch path computes beyond 64 bits, a decimal
    ``//`` or ``%`` whose 34-digit quotient floors differently, a text output echoing a lone
    surrogate fact: each row is decided (or refused) as ``decide`` does, not crashed on."""
    from tests.helpers import engine_for

    engine = engine_for({
        "inputs": {"i": {"path": "i", "type": "integer", "label": _L}, "a": {"path": "a", "type": "decimal", "label": _L},
                   "b": {"path": "b", "type": "decimal", "label": _L}, "t": {"path": "t", "type": "text", "label": _L}},
        "decisions": {"d": {"label": _L, "cite": "s §1", "outputs": {
            "w": {"type": "integer", "label": _L, "expr": "i * i"},
            "f": {"type": "decimal", "label": _L, "expr": "a // b"},
            "r": {"type": "decimal", "label": _L, "expr": "a % b"},
            "t": {"type": "text", "label": _L, "expr": "t"}}}},
    })
    fine = {"i": 3, "a": "7.5", "b": "2", "t": "x"}
    cases = [fine, {**fine, "i": 9999999999},  # i * i beyond 2^63 - 1: decide refuses
             {**fine, "a": "999999999999999998.999999999999999999", "b": "999999999999999999"},
             {**fine, "a": _BIG, "b": "0.000000000000000001"},
             {**fine, "t": "m\udc80"}]
    errors: list[tuple[int, FactsError]] = []
    batch = decide_batch(engine, cases, "2023-07-01", errors=errors)
    assert [i for i, _ in errors] == [1, 4]
    assert "beyond ±9,223,372,036,854,775,807" in str(errors[0][1]) and "not UTF-8" in str(errors[1][1])
    with pytest.raises(FactsError, match=r"beyond ±9,223,372,036,854,775,807"):
        engine.decide(cases[1], "2023-07-01")
    for k in (0, 2, 3):
        want = engine.decide(cases[k], "2023-07-01")["d"]
        row = batch.row(k, named=True)
        assert (row["d.w"], row["d.f"], row["d.r"], row["d.t"]) == (want.w, want.f, want.r, want.t), k
    assert batch["_fallback"].to_list()[:4] == [False, True, True, True]
    # a malformed case of a list is named by its position, as a row of a frame is
    with pytest.raises(FactsError) as caught:
        decide_batch(engine, [fine, {**fine, "i": "x"}, {**fine, "a": "y"}], "2023-07-01")
    assert [d.path for d in caught.value.diagnostics] == ["[1].i", "[2].a"]


# --- a caller's frame or Split is checked as decide checks facts (the second hostile-input hunt) ---

_SD = pe.load(ROOT / "benchmarks" / "policies" / "shared_dibao")


@pytest.mark.parametrize(("column", "values", "dtype", "path", "message"), [
    ("deposits", ["abc"], pl.String, "[0].assets.deposits", "expected a number, not 'abc'"),
    ("deposits", [float("nan")], pl.Float64, "[0].assets.deposits", "expected a finite number"),
    ("deposits", [float("inf")], pl.Float64, "[0].assets.deposits", "expected a finite number"),
    ("deposits", [True], pl.Boolean, "[0].assets.deposits", "expected a number, not a boolean"),
    ("deposits", ["-5"], pl.String, "[0].assets.deposits", "money cannot be negative"),
    ("deposits", ["1" * 40], pl.String, "[0].assets.deposits", "too many digits"),
    ("members", ["abc"], pl.String, "[0].members", "members must be a list"),
    ("members", [[1]], pl.List(pl.Int64), "[0].members[0]", "members[0] must be a mapping"),
    ("members", [[{"wages": Decimal(1), "other_income": Decimal(0)}, None]], None, "[0].members[1]",
     "members[1] must be a mapping"),
    ("members", [[{"wages": "x", "other_income": "0"}]], None, "[0].members[0].income.wages",
     "expected a number, not 'x'"),
])
def test_a_callers_frame_is_checked_as_decide_checks_facts(column: str, values: list[Any], dtype: Any,
                                                            path: str, message: str) -> None:
    frame = pl.DataFrame({column: pl.Series(values, dtype=dtype) if dtype is not None else values})
    with pytest.raises(FactsError) as caught:
        decide_batch(_SD, frame, "2023-07-01")
    assert [d.path for d in caught.value.diagnostics] == [path]
    assert message in caught.value.diagnostics[0].message


def test_a_callers_huaiyuan_frame_refuses_what_decide_refuses() -> None:
    base = {"area_type": ["rural"], "receiving_dibao": [True], "income_rose_from_employment": [True],
            "months_since_income_exceeded": [2]}
    assert decide_batch(HUAIYUAN, pl.DataFrame(base), "2023-07-01")["graduated_exit.status"].to_list() != [None]
    for name, value, dtype in [("receiving_dibao", "false", pl.String), ("receiving_dibao", 0, pl.Int64),
                               ("months_since_income_exceeded", 2.5, pl.Float64),
                               ("months_since_income_exceeded", 10 ** 30, pl.Int128),
                               ("area_type", "suburb", pl.Categorical)]:
        with pytest.raises(FactsError):
            decide_batch(HUAIYUAN, pl.DataFrame({**base, name: pl.Series([value], dtype=dtype)}), "2023-07-01")
    # a date before year 1 (polars holds it, Python does not): refused, in a frame and in a file
    member = {"member_id": "m1", "birth_date": dt.date(1980, 1, 1)}
    frame = pl.DataFrame({**base, "members": [[member]]})
    decide_batch(HUAIYUAN, frame, "2023-07-01")
    early = frame.with_columns(pl.col("members").list.eval(pl.element().struct.with_fields(
        birth_date=pl.lit(-800000).cast(pl.Date))))
    with pytest.raises(FactsError, match=r"\[0\]\.members\[0\]\.birth_date"):
        decide_batch(HUAIYUAN, early, "2023-07-01")
    # members all null (dtype Null): not given, as a null `members` means
    out = decide_batch(_SD, pl.DataFrame({"deposits": [Decimal(1), Decimal(2)], "members": [None, None]}), "2023-07-01")
    assert out["dibao.status"].to_list() == ["needs_information"] * 2


def test_a_callers_split_that_misplaces_members_is_refused() -> None:
    households = pl.DataFrame({"deposits": [Decimal(0)] * 3, "members": [True] * 3})
    members = pl.DataFrame({"_hh": [0, 1, 2], "wages": [Decimal(100), Decimal(200), Decimal(300)],
                            "other_income": [Decimal(0)] * 3})
    good = decide_batch(_SD, Split(households, members, 3), "2023-07-01")["dibao.amount"].to_list()
    assert good == [Decimal("620.00"), Decimal("540.00"), Decimal("460.00")]
    for hh, height, sizes, message in [([-1, 0, 1], 3, None, "must name a household"),
                                       ([0, 1, 3], 3, None, "must name a household"),
                                       ([0, 1, 2], 5, None, "Split.height is 5"),
                                       ([0, 1, 2], 3, [2, 0, 1], "Split.sizes does not match")]:
        split = Split(households, members.with_columns(_hh=pl.Series(hh)), height,
                      sizes=pl.Series(sizes) if sizes is not None else None)
        with pytest.raises(ValueError, match=message):
            decide_batch(_SD, split, "2023-07-01")


def test_the_calling_threads_decimal_context_changes_nothing() -> None:
    """The batch path and the explanation compute in the evaluator's own contexts: an
    application that set 6 digits (or a worker thread with Python's default of 28) gets the
    numbers and the text that the default gives (found by review: a quotient's operands, and the
    explanation's rounding and margins, used the calling thread's context)."""
    import decimal

    from tests.helpers import engine_for

    policy = {
        "inputs": {"a": {"path": "a", "type": "decimal", "label": _L}, "b": {"path": "b", "type": "decimal", "label": _L},
                   "m": {"path": "m", "type": "money", "label": _L}},
        "derived": {"r": {"type": "decimal", "label": _L, "expr": "a / b"}},
        "decisions": {"d": {"label": _L, "cite": "s §1", "outputs": {
            "r": {"type": "decimal", "label": _L, "expr": "r"},
            "low": {"type": "boolean", "label": _L, "expr": "m < 700"}}}},
    }
    engine = engine_for(policy)
    cases = [{"a": "123456789012345678.123456789012345678", "b": "3", "m": "1234567890123456789012345678.12"},
             {"a": "2", "b": "3", "m": "820.5"}]
    outside = ([decide_batch(engine, [c], "2023-07-01").row(0, named=True) for c in cases],
               [engine.decide(c, "2023-07-01").explain("en", "full") for c in cases])
    with decimal.localcontext() as ctx:
        ctx.prec, ctx.rounding = 6, decimal.ROUND_DOWN
        inside = ([decide_batch(engine, [c], "2023-07-01").row(0, named=True) for c in cases],
                  [engine.decide(c, "2023-07-01").explain("en", "full") for c in cases])
    assert inside == outside
    assert outside[0][0]["d.r"] == engine.decide(cases[0], "2023-07-01")["d"].r
    assert "1234567890123456789012345678.12" in outside[1][0]  # shown, not refused


def test_a_decision_not_in_force_beside_rows_the_scalar_path_decides() -> None:
    """Found by review: on a date where one decision is not in force, a row sent to the scalar
    path for another decision raised KeyError instead of being decided."""
    from policy_engine.population import synth_households

    facts = list(synth_households(3, "anhui", seed=7))
    facts[0]["members"][0]["income"]["wages"] = "999999999999999999.999999999999999999"  # beyond 34 digits when summed
    for day in ("2022-01-01", "2023-07-01"):
        table = decide_batch(HUAIYUAN, facts, day)
        statuses = set()
        for i, case in enumerate(facts):
            row = table.row(i, named=True)
            for did, outcome in HUAIYUAN.decide(case, day).items():
                assert row[f"{did}.status"] == outcome.status, (day, i, did)
                assert row[f"{did}.fired_rows"] == list(outcome.fired_rows)
                statuses.add(outcome.status)
        assert table["_fallback"].any()
        if day == "2022-01-01":
            assert "not_in_force" in statuses


def test_a_fallback_value_a_column_cannot_hold_beside_the_others_is_an_error_not_a_null() -> None:
    """Found by a differential fuzz: a row decided by the scalar path came back ``decided`` with
    a null value when another row of the batch needed so many decimal places that its value no
    longer fitted the column's 38 digits. It is now that row's error; the others are decided."""
    from tests.helpers import engine_for

    engine = engine_for({
        "inputs": {"b": {"path": "b", "type": "decimal", "label": _L}},
        "decisions": {"q": {"label": _L, "cite": "s §1", "value": "b / 0.3333", "type": "decimal"}}})
    cases = [{"b": "166591567"}, {"b": "0.000115483242"}, {"b": "3"}]
    alone = [decide_batch(engine, [c], "2023-07-01")["q.value"][0] for c in cases]
    assert alone == [engine.decide(c, "2023-07-01")["q"].value for c in cases]
    errors: list[tuple[int, FactsError]] = []
    together = decide_batch(engine, cases, "2023-07-01", errors=errors)
    assert [i for i, _ in errors] == [0] and "more digits than a batch column holds" in str(errors[0][1])
    assert together["q.value"].to_list()[1:] == alone[1:] and together["q.status"][0] is None
    with pytest.raises(FactsError, match=r"\[0\]"):
        decide_batch(engine, cases, "2023-07-01")


_INPUTS = {"n": {"path": "n", "type": "integer", "label": _L}, "s": {"path": "transfer_net", "type": "money", "label": _L},
           "k": {"entity": "member", "path": "k", "type": "integer", "label": _L},
           "r": {"entity": "member", "path": "r", "type": "decimal", "label": _L}}


def _table(hit: str) -> dict[str, Any]:
    return {"d": {"label": _L, "cite": "s §1", "outputs": {"o": {"type": "integer", "label": _L}},
                  "table": {"hit": hit, "inputs": ["n"], "outputs": ["o"], "rows": [
                      {"id": "r0", "when": ["-"], "then": [1], "cite": "s §1", "in_force": {"from": "2024-01-01"}}]}}}


@pytest.mark.parametrize(("decisions", "facts"), [
    (_table("C+"), {"n": 1}),  # no row in force: polars "cannot return empty fold"
    (_table("C<"), {"n": 1}),
    ({"d0": {"label": _L, "cite": "s §1",
             "outputs": {"o0": {"type": "decimal", "label": _L}, "o1": {"type": "decimal", "label": _L},
                         "x": {"type": "decimal", "label": _L, "expr": "o0 * (1 / n)"}},
             "table": {"hit": "F", "inputs": [], "outputs": ["o0", "o1"],
                       "rows": [{"id": "r0", "when": [], "then": ["0.3333", "1"], "cite": "s §1"}]}},
      "d1": {"label": _L, "cite": "s §1", "value": "d0.o1", "type": "decimal"}}, {"n": 3}),  # DuplicateError
    ({"d": {"label": _L, "cite": "s §1", "value": "min(members, 2 / 3)", "type": "decimal"}}, {}),  # no member rows
    ({"d": {"label": _L, "cite": "s §1", "value": "any(members, k >= s / r)", "type": "boolean"}},
     {"transfer_net": "-14372968373.3", "members": [{"r": "29.89"}, {"r": "0.0000420221693"}]}),  # OverflowError
])
def test_a_decision_polars_cannot_compute_on_these_values_is_decided_by_the_scalar_path(
        decisions: dict[str, Any], facts: dict[str, Any]) -> None:
    """Found by a differential fuzz: each of these crashed ``decide_batch`` (a polars error, or a
    Python int too large for polars) where ``decide`` answers. Such a decision's rows now go to
    the scalar path, the reference."""
    from tests.helpers import engine_for

    engine = engine_for({"inputs": _INPUTS, "decisions": decisions})
    table = decide_batch(engine, [facts], "2023-07-01")
    decision = engine.decide(facts, "2023-07-01")
    for did, outcome in decision.items():
        assert table[f"{did}.status"][0] == outcome.status
        for name, value in outcome.outputs.items():
            assert table[f"{did}.{name}"][0] == (None if type(value).__name__ == "Unknown" else value), (did, name)
    assert table["_fallback"][0]


@pytest.mark.parametrize("cell", ["not(< 3)", "not(null)", "not(1, 2)", "< 3", "null", "-"])
def test_a_null_value_matches_only_dash_and_null(cell: str) -> None:
    """FEEL (docs/semantics.md): a comparison with null is null, not(null) is null, and a null
    test result is not a match; only ``-`` and ``null`` match a null. Found by a differential
    fuzz: ``not(< 3)`` matched a null on both paths."""
    from tests.helpers import engine_for

    engine = engine_for({
        "inputs": {"a": {"path": "a", "type": "decimal", "label": _L}, "b": {"path": "b", "type": "decimal", "label": _L}},
        "decisions": {"d": {"label": _L, "cite": "s §1", "outputs": {"o": {"type": "integer", "label": _L}},
                            "table": {"hit": "F", "inputs": ["a / b"], "outputs": ["o"], "rows": [
                                {"id": "asked", "when": [cell], "then": [1]},
                                {"id": "other", "when": ["-"], "then": [2]}]}}}})
    cases = [{"a": "1", "b": "0"}, {"a": "6", "b": "1"}, {"a": "1", "b": "1"}]  # null, 6, 1
    want = {"not(< 3)": [2, 1, 2], "not(null)": [2, 1, 1], "not(1, 2)": [2, 1, 2], "< 3": [2, 2, 1],
            "null": [1, 2, 2], "-": [1, 1, 1]}[cell]
    assert [engine.decide(c, "2023-07-01")["d"].o for c in cases] == want
    assert decide_batch(engine, cases, "2023-07-01")["d.o"].to_list() == want


def test_not_of_a_null_value_is_no_match_even_against_an_unknown_endpoint() -> None:
    """``not(< c)`` on a null value is no match whatever ``c`` is, so an unknown ``c`` does not
    make the row unknown there (found by re-running the differential fuzz after the fix above)."""
    from tests.helpers import engine_for

    engine = engine_for({
        "inputs": {"a": {"path": "a", "type": "decimal", "label": _L}, "b": {"path": "b", "type": "decimal", "label": _L},
                   "c": {"path": "c", "type": "decimal", "label": _L}},
        "decisions": {"d": {"label": _L, "cite": "s §1", "outputs": {"o": {"type": "integer", "label": _L}},
                            "table": {"hit": "F", "inputs": ["a / b"], "outputs": ["o"], "rows": [
                                {"id": "asked", "when": ["not(< c)"], "then": [1]},
                                {"id": "other", "when": ["-"], "then": [2]}]}}}})
    cases = [{"a": "1", "b": "0"}, {"a": "6", "b": "1"}, {"a": "6", "b": "1", "c": "5"}]  # null; 6 vs unknown; 6 vs 5
    scalar = [engine.decide(c, "2023-07-01")["d"] for c in cases]
    assert [(o.status, o.outputs.get("o")) for o in scalar][::2] == [("decided", 2), ("decided", 1)]
    assert scalar[1].status == "needs_information"
    batch = decide_batch(engine, cases, "2023-07-01")
    assert batch["d.status"].to_list() == [o.status for o in scalar]
    assert batch["d.o"].to_list() == [2, None, 1]


def test_a_fallback_value_uses_the_places_the_batch_values_need_not_their_plans() -> None:
    """The batch plan may give a column more decimal places than its values need (a cube of a
    6-place amount: 18); a scalar value with many digits before the point (rounded to 34 digits
    by the scalar path: 27 before the point, 7 after) must not be refused for the plan's sake
    (found by re-running the differential fuzz)."""
    from tests.helpers import engine_for

    engine = engine_for({
        "inputs": {"a": {"path": "a", "type": "decimal", "label": _L}, "n": {"path": "n", "type": "integer", "label": _L}},
        "decisions": {"x": {"label": _L, "cite": "s §1", "value": "(a % n) ** 3", "type": "decimal"}}})
    cases = [{"a": "783006.307526", "n": -886581340}, {"a": "1.5", "n": 2}]
    want = [engine.decide(c, "2023-07-01")["x"].value for c in cases]
    assert len(want[0].as_tuple().digits) == 34  # the scalar path rounded it
    table = decide_batch(engine, cases, "2023-07-01")
    assert table["x.value"].to_list() == want and table["_fallback"].to_list() == [True, False]


def test_a_large_amount_beside_a_quotient_is_not_wrapped_in_128_bits() -> None:
    """Found by a differential fuzz: ``(a / b) if f else s`` holds both branches at the
    quotient's decimal places; a large ``s`` times 10^places passed 128 bits and wrapped silently
    (-26189907893195 for 681219108667825609). Such a decision is now decided by the scalar path."""
    from tests.helpers import engine_for

    engine = engine_for({
        "inputs": {"a": {"path": "a", "type": "decimal", "label": _L}, "b": {"path": "b", "type": "decimal", "label": _L},
                   "s": {"path": "transfer_net", "type": "money", "label": _L},
                   "f": {"path": "f", "type": "boolean", "label": _L}},
        "decisions": {"d": {"label": _L, "cite": "s §1", "value": "floor((a / b) if f else s)", "type": "integer"}}})
    cases = [{"a": "1", "b": "3", "f": False, "transfer_net": "681219108667825609"},
             {"a": "1", "b": "3", "f": True, "transfer_net": "5"}]
    want = [engine.decide(c, "2023-07-01")["d"].value for c in cases]
    assert want[0] == 681219108667825609
    assert decide_batch(engine, cases, "2023-07-01")["d.value"].to_list() == want


@pytest.mark.parametrize("precision", [28, 3])
def test_the_places_kept_for_a_fallback_value_never_round_the_batch_values(precision: int) -> None:
    """Found by review: the places the batch values need were found with ``normalize()`` in the
    calling thread's context (28 digits), so a 32-digit batch value was cast to too few places
    and rounded without a word, beside a row the batch refused."""
    import decimal

    from tests.helpers import engine_for

    engine = engine_for({
        "inputs": {"a": {"path": "a", "type": "decimal", "label": _L}, "b": {"path": "b", "type": "decimal", "label": _L}},
        "decisions": {"d": {"label": _L, "cite": "s §1", "value": "a * b", "type": "decimal"}}})
    cases = [{"a": "12345678901234.5678", "b": "1234567890.12347"},
             {"a": "99999999999999999.9", "b": "99999999999999999.9"}]  # the scalar path's row, refused
    want = engine.decide(cases[0], "2023-07-01")["d"].value
    with decimal.localcontext() as ctx:
        ctx.prec = precision
        errors: list[tuple[int, FactsError]] = []
        table = decide_batch(engine, cases, "2023-07-01", errors=errors)
    assert table["d.value"][0] == want == Decimal("15241578753238999737843.374086266")
    assert [i for i, _ in errors] == [1]
