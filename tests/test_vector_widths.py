"""The batch path's cheaper representations give the scalar path's results exactly:

* numbers held in Int64 where the population's bounds prove they fit, Int128 elsewhere
  (``vector.NARROW``), with the switch taken per node;
* branch-free rounding of fixed-point values (``_round_fixed``) in every mode;
* member aggregates from running sums over household segments (members in household order),
  and from grouping when the members table is not in that order.
"""

from __future__ import annotations

import random
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import policy_engine as pe
from policy_engine.batch_intake import read_chunk
from policy_engine.evaluate import CONTEXT, ROUNDING_MODES
from policy_engine.population import synth_households, write_synth
from policy_engine.vector import NARROW, Split, V, _divide_rounded, _round_fixed, decide_batch
from tests.helpers import engine_for

ROOT = Path(__file__).parent.parent
HUAIYUAN = pe.load(ROOT / "policies" / "anhui" / "bengbu" / "huaiyuan")


# --- rounding ------------------------------------------------------------------------------------


@st.composite
def _fixed_values(draw: Any) -> tuple[int, int, int, str]:
    scale = draw(st.integers(1, 6))
    k = draw(st.integers(0, scale - 1))
    d = 10 ** (scale - k)
    if draw(st.booleans()):  # at a tie or a boundary of the rounding unit, or one unit off
        raw = draw(st.integers(-10**9, 10**9)) * d + draw(st.sampled_from([0, d // 2])) + draw(st.sampled_from([0, 1, -1]))
    else:
        raw = draw(st.integers(-10**15, 10**15))
    return raw, scale, k, draw(st.sampled_from(sorted(ROUNDING_MODES)))


@settings(max_examples=400, deadline=None)
@given(_fixed_values())
def test_fixed_point_rounding_equals_quantize_in_int64_and_int128(case: tuple[int, int, int, str]) -> None:
    raw, scale, k, mode = case
    expected = Decimal(raw).scaleb(-scale).quantize(Decimal(1).scaleb(-k), rounding=ROUNDING_MODES[mode],
                                                    context=CONTEXT)
    for dtype, bounds in ((pl.Int128, None), (pl.Int64, (raw, raw)), (pl.Int64, (min(raw, 0), max(raw, 0) + 1))):
        frame = pl.DataFrame({"v": pl.Series([raw], dtype=dtype)})
        got = frame.select(_round_fixed(pl.col("v"), scale, k, mode, bounds).alias("r"))["r"]
        assert got.dtype == (pl.Int64 if bounds is not None else pl.Int128)
        assert Decimal(got[0]).scaleb(-k) == expected, (dtype, bounds)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(-10**12, 10**12), st.integers(1, 5000)), min_size=1, max_size=30),
       st.integers(0, 3), st.integers(0, 2), st.sampled_from(sorted(ROUNDING_MODES)))
def test_a_direct_quotient_of_int64_columns_equals_the_scalar_path(rows: list[tuple[int, int]], sa: int, k: int,
                                                                  mode: str) -> None:
    a = pl.Series([x for x, _ in rows], dtype=pl.Int64)
    b = pl.Series([y for _, y in rows], dtype=pl.Int64)
    va = V("num", pl.col("a"), scale=sa, lo=int(a.min()), hi=int(a.max()))  # type: ignore[arg-type]
    vb = V("num", pl.col("b"), scale=0, lo=int(b.min()), hi=int(b.max()))  # type: ignore[arg-type]
    assert va.narrow and vb.narrow
    val, fb, _ = _divide_rounded(va, vb, k, mode)
    assert fb is None
    got = pl.DataFrame({"a": a, "b": b}).select(val.alias("v"))["v"]
    assert got.dtype == pl.Int64
    for (x, y), value in zip(rows, got.to_list()):
        expected = CONTEXT.divide(Decimal(x).scaleb(-sa), Decimal(y)).quantize(
            Decimal(1).scaleb(-k), rounding=ROUNDING_MODES[mode], context=CONTEXT)
        assert Decimal(value).scaleb(-k) == expected


# --- Int64 / Int128 switching at the bound ---------------------------------------------------------

_WIDE_MODULE = {
    "inputs": {
        "x": {"path": "x", "type": "decimal", "label": {"zh": "x", "en": "x"}},
        "y": {"path": "y", "type": "integer", "label": {"zh": "y", "en": "y"}},
        "z": {"path": "z", "type": "integer", "label": {"zh": "z", "en": "z"}},
        "w": {"entity": "member", "path": "w", "type": "money", "label": {"zh": "w", "en": "w"}},
    },
    "derived": {
        "total": {"type": "money", "unit": "yuan", "label": {"zh": "合计", "en": "total"},
                  "expr": "sum(members, w)", "cite": "s"},
    },
    "decisions": {
        "d": {"label": {"zh": "决定", "en": "decision"}, "cite": "s",
              "outputs": {
                  "sum": {"type": "decimal", "label": {"zh": "和", "en": "sum"}, "expr": "x + x + y"},
                  "product": {"type": "decimal", "label": {"zh": "积", "en": "product"}, "expr": "x * z + y * z"},
                  "negated": {"type": "decimal", "label": {"zh": "负", "en": "negated"}, "expr": "-x - y"},
                  "rounded": {"type": "money", "unit": "yuan", "label": {"zh": "整", "en": "rounded"},
                              "expr": "x * 3 / 7"},
                  "total": {"type": "money", "unit": "yuan", "label": {"zh": "总", "en": "total"},
                            "expr": "total + y"},
                  "large": {"type": "boolean", "label": {"zh": "大", "en": "large"}, "expr": "x > y * 1000"},
              }},
        # C+ adds every matching row's value: four narrow values may sum past Int64
        "c": {"label": {"zh": "合计", "en": "collect sum"}, "cite": "s",
              "outputs": {"total": {"type": "decimal", "label": {"zh": "和", "en": "total"}}},
              "table": {"hit": "C+", "inputs": ["y"], "outputs": ["total"],
                        "rows": [{"id": f"r{i}", "when": ["-"], "then": ["x"], "cite": "s"} for i in range(4)]}},
    },
}

_EDGES = [0, 1, -1, NARROW // 1000, -(NARROW // 1000), NARROW // 10, NARROW // 3, NARROW - 1, NARROW,
          NARROW + 1, 2 ** 62, -(2 ** 62), 2 ** 63 - 1, 10 ** 20, -(10 ** 20)]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_EDGES), st.integers(0, 2), st.sampled_from(_EDGES[:9]),
                          st.sampled_from([0, 1, -7, 1000, -(10 ** 4)]),
                          st.lists(st.sampled_from([0, 1, 99, NARROW // 10, NARROW, 2 ** 63 - 1, 10 ** 21]),
                                   max_size=4)),
                min_size=1, max_size=12))
def test_values_near_and_beyond_the_int64_bound_equal_the_scalar_path(rows: list[Any]) -> None:
    """Populations whose values straddle ``NARROW`` (and Int64's own limit): every node takes
    Int64 or Int128 by its bounds, and the results are the scalar path's. (Products stay within
    what an output column, Decimal(38, s), can hold.)"""
    engine = engine_for(_WIDE_MODULE)
    facts = [{"x": str(Decimal(x).scaleb(-places)), "y": y, "z": z,
              "members": [{"w": str(Decimal(w).scaleb(-2))} for w in ws]} for x, places, y, z, ws in rows]
    batch = decide_batch(engine, facts, "2023-07-01")
    names = ["sum", "product", "negated", "rounded", "total", "large"]
    for row, f in zip(batch.iter_rows(named=True), facts):
        decision = engine.decide(f, "2023-07-01")
        outcome = decision["d"]
        assert row["d.status"] == outcome.status
        assert [row[f"d.{n}"] for n in names] == [getattr(outcome, n) for n in names], f
        assert row["c.total"] == decision["c"].total, f


# --- member aggregates: running sums over segments, or grouping -----------------------------------


@pytest.fixture(scope="module")
def huaiyuan_split(tmp_path_factory: pytest.TempPathFactory) -> tuple[Split, list[dict[str, Any]]]:
    path = tmp_path_factory.mktemp("synth") / "anhui.parquet"
    write_synth(path, 3000, "anhui", seed=11)
    chunk = read_chunk(HUAIYUAN.policy, pl.read_parquet(path), 1)
    assert not chunk.bad and chunk.population.sizes is not None
    return chunk.population, list(synth_households(3000, "anhui", 11))


def _shuffled(split: Split, seed: int) -> Split:
    """The same population with its households' members in another order in the members table
    (each household's own members keep their order), and no sizes."""
    assert split.members is not None
    rank = list(range(split.height))
    random.Random(seed).shuffle(rank)
    members = (split.members.with_columns(_rank=pl.Series(rank, dtype=pl.Int64).gather(split.members["_hh"]))
               .sort("_rank", maintain_order=True).drop("_rank"))
    assert not members["_hh"].is_sorted()
    return Split(split.households, members, split.height)


def test_member_aggregates_do_not_depend_on_the_members_layout(huaiyuan_split: tuple[Split, Any]) -> None:
    """Sizes given (read_chunk), sizes counted from `_hh`, members out of household order
    (grouping): the same results, every output of every Huaiyuan decision."""
    split, _ = huaiyuan_split
    given = decide_batch(HUAIYUAN, split, "2023-07-01")
    counted = decide_batch(HUAIYUAN, Split(split.households, split.members, split.height), "2023-07-01")
    grouped = decide_batch(HUAIYUAN, _shuffled(split, 3), "2023-07-01")
    assert given.equals(counted)
    assert given.equals(grouped)
    assert given["_fallback"].sum() == 0


def test_split_results_equal_decide(huaiyuan_split: tuple[Split, list[dict[str, Any]]]) -> None:
    split, facts = huaiyuan_split
    batch = decide_batch(HUAIYUAN, split, "2023-07-01")
    rng = random.Random(5)
    for i in rng.sample(range(split.height), 150):
        decision = HUAIYUAN.decide(facts[i], "2023-07-01")
        row = batch.row(i, named=True)
        for node in HUAIYUAN.select("household", None):
            outcome = decision[node.id]
            assert row[f"{node.id}.status"] == outcome.status, (i, node.id)
            assert row[f"{node.id}.fired_rows"] == list(outcome.fired_rows), (i, node.id)


def test_sizes_that_do_not_match_the_members_table_are_refused(huaiyuan_split: tuple[Split, Any]) -> None:
    split, _ = huaiyuan_split
    assert split.sizes is not None
    wrong = Split(split.households, split.members, split.height, checked=True, sizes=split.sizes + 1)
    with pytest.raises(ValueError, match="Split.sizes does not match"):
        decide_batch(HUAIYUAN, wrong, "2023-07-01")


@pytest.mark.parametrize("x", [NARROW, NARROW - 1, -NARROW, NARROW // 2 + 1])
def test_a_collect_sum_of_narrow_values_does_not_wrap(x: int) -> None:
    """Four matching rows of a value just inside Int64's narrow range sum past Int64."""
    engine = engine_for(_WIDE_MODULE)
    facts = [{"x": str(x), "y": 1, "z": 1, "members": []}, {"x": "1", "y": 1, "z": 1, "members": []}]
    batch = decide_batch(engine, facts, "2023-07-01")
    assert batch["c.total"].to_list() == [engine.decide(f, "2023-07-01")["c"].total for f in facts] == [
        Decimal(4 * x), Decimal(4)]


# --- decimal columns from read facts -------------------------------------------------------------

def _fits(value: Decimal | None) -> bool:  # within Decimal(38, s) for every s the list can need
    if value is None:
        return True
    _, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    return -exponent <= 16 and len(digits) + max(exponent, 0) <= 20


_decimals = st.one_of(
    st.none(),
    st.decimals(allow_nan=False, allow_infinity=False, min_value=Decimal("-1e15"), max_value=Decimal("1e15")),
    st.builds(lambda digits, exponent: Decimal(digits).scaleb(exponent),
              st.integers(-10**12, 10**12), st.integers(-12, 6)),
).filter(_fits)


@settings(max_examples=300, deadline=None)
@given(st.lists(_decimals, max_size=40))
def test_decimal_series_equals_the_direct_conversion(values: list[Decimal | None]) -> None:
    """The text route gives the same column (type and every value) as converting the Decimal
    objects directly, at the most places any value has, whatever the exponents (1E+2, 0E-5)."""
    from policy_engine.vector import _decimal_series, _scale_of

    direct = pl.Series("x", values, dtype=pl.Decimal(38, _scale_of(values)))
    fast = _decimal_series("x", values)
    assert fast.dtype == direct.dtype
    assert fast.to_list() == direct.to_list()
