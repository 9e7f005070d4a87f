"""The columnar intake (policy_engine.batch_intake) accepts and refuses exactly what the scalar
intake does, with the same values: a screened Parquet row is the household ``decide`` sees."""

from __future__ import annotations

import io
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import policy_engine as pe
from policy_engine import population as P
from policy_engine.batch_intake import read_chunk
from policy_engine.diagnostics import FactsError
from policy_engine.evaluate import Unknown
from policy_engine.intake import NOT_MAPPING
from policy_engine.intake import read_facts as scalar_intake

ROOT = Path(__file__).resolve().parents[1]
AS_OF = "2023-07-01"
HUAIYUAN = pe.load(ROOT / "policies" / "anhui" / "bengbu" / "huaiyuan")


def _facts_frame(households: list[dict[str, Any]]) -> pl.DataFrame:
    """Households in the facts layout (money and dates as text), as ``synth`` writes them."""
    data = "\n".join(json.dumps(h) for h in households).encode("utf-8")
    return pl.read_ndjson(io.BytesIO(data), schema=P.FACTS_SCHEMA)


def _compare(engine: pe.Engine, households: list[dict[str, Any]], frame: pl.DataFrame) -> None:
    """Rows refused by the scalar intake are refused here (same fields); the others are decided
    exactly as ``decide`` decides them."""
    chunk = read_chunk(engine.policy, frame, 1)
    refused: dict[int, set[str]] = {}
    for b in chunk.bad:
        refused.setdefault(b.position, set()).add(b.column)
    kept = []
    for i, facts in enumerate(households):
        try:
            scalar_intake(engine.policy.inputs, facts, "household")
        except FactsError as exc:
            assert i in refused, (i, [d.message for d in exc.diagnostics])
            assert refused[i] == {d.path for d in exc.diagnostics}, i
            continue
        assert i not in refused, (i, refused.get(i))
        kept.append(i)
    assert chunk.rows.to_list() == [i + 1 for i in kept]
    result = engine.decide_batch(chunk.population, AS_OF)
    for row, i in zip(result.iter_rows(named=True), kept):
        decision = engine.decide(households[i], AS_OF)
        for did, outcome in decision.items():
            assert row[f"{did}.status"] == outcome.status, (i, did)
            assert row[f"{did}.fired_rows"] == list(outcome.fired_rows), (i, did)
            for name, value in outcome.outputs.items():
                expected = None if isinstance(value, Unknown) else (list(value) if isinstance(value, tuple) else value)
                assert row[f"{did}.{name}"] == expected, (i, did, name)


_ODD_MONEY = ["12.5", " 7 ", "1e3", "+4", "0.001", "-3", "-0", "abc", "NaN", "Infinity", "", "1,000", "820.505"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), odd=st.lists(st.tuples(st.integers(0, 39), st.sampled_from(_ODD_MONEY),
                                                            st.sampled_from(["wages", "deposits", "medical"])),
                                                  max_size=8))
def test_text_amounts_are_read_and_refused_as_decide_reads_them(seed: int, odd: list[tuple[int, str, str]]) -> None:
    households = list(P.synth_households(40, "anhui", seed))
    for i, value, where in odd:
        h = households[i]
        if where == "wages" and h["members"]:
            h["members"][0].setdefault("income", {})["wages"] = value
        elif where == "deposits":
            h.setdefault("assets", {})["deposits"] = value
        else:
            h.setdefault("rigid_expenditure", {})["medical"] = value
    _compare(HUAIYUAN, households, _facts_frame(households))


def test_enum_values_dates_and_whole_numbers_are_checked() -> None:
    households = list(P.synth_households(12, "anhui", 5))
    households[1]["area_type"] = "suburban"
    households[2]["members"][0]["birth_date"] = "1990-02-30"
    households[3]["members"][0]["birth_date"] = "19900101"  # ISO basic format: accepted as decide does
    households[4]["members"] = []
    del households[5]["members"]
    households[6]["members"][0]["disability_kind"] = "wings"
    _compare(HUAIYUAN, households, _facts_frame(households))
    # a column of the wrong type: every given value is refused with decide's message
    frame = _facts_frame(households).with_columns(
        pl.col("members").list.eval(pl.element().struct.with_fields(
            pl.field("adl_failed").cast(pl.String).str.replace("0", "zero"))))
    chunk = read_chunk(HUAIYUAN.policy, frame, 1)
    messages = {b.message for b in chunk.bad if b.column.endswith(".adl_failed")}
    assert "expected a whole number, not 'zero'" in messages


def test_typed_decimal_and_date_columns_are_read_exactly() -> None:
    households = list(P.synth_households(30, "anhui", 9))
    text = _facts_frame(households)
    typed = text.with_columns(pl.col("assets").struct.with_fields(
        pl.field("deposits").cast(pl.Decimal(38, 2))))
    a = HUAIYUAN.decide_batch(read_chunk(HUAIYUAN.policy, text, 1).population, AS_OF)
    b = HUAIYUAN.decide_batch(read_chunk(HUAIYUAN.policy, typed, 1).population, AS_OF)
    assert a.equals(b)
    typed = typed.with_columns(pl.col("assets").struct.with_fields(pl.field("deposits") - Decimal(10 ** 6)))
    bad = read_chunk(HUAIYUAN.policy, typed, 1).bad
    assert bad and all(b.column == "assets.deposits" and "money cannot be negative" in b.message for b in bad)


def test_screen_reports_malformed_parquet_rows_and_decides_the_rest(tmp_path: Path) -> None:
    households = list(P.synth_households(30, "anhui", 3))
    households[4]["assets"]["deposits"] = "-10"
    households[9]["members"][0]["income"]["wages"] = "abc"
    households[9]["area_type"] = "suburban"
    path = tmp_path / "in.parquet"
    _facts_frame(households).write_parquet(path)
    result = P.screen(HUAIYUAN, path, tmp_path / "out.parquet", AS_OF, chunk_size=7)
    assert result.households == 28
    assert {(e.row, e.column) for e in result.errors} == {
        (5, "assets.deposits"), (10, "area_type"), (10, "members[0].income.wages")}
    assert {e.household_id for e in result.errors} == {households[4]["household_id"], households[9]["household_id"]}
    table = pl.read_parquet(tmp_path / "out.parquet")
    assert table["row"].to_list() == [n for n in range(1, 31) if n not in (5, 10)]
    for index in (0, 20, 27):  # explain_row re-decides a written row with the scalar path, traced
        row = table.row(index, named=True)
        decision = HUAIYUAN.explain_row(path, row["row"], AS_OF)
        assert decision.to_dict() == HUAIYUAN.decide(households[row["row"] - 1], AS_OF).to_dict()
        for did, outcome in decision.items():
            assert row[f"{did}.status"] == outcome.status and row[f"{did}.fired_rows"] == list(outcome.fired_rows)
        assert row["dibao.amount"] == decision["dibao"].outputs["amount"]
        assert "低保" in decision.explain("zh", "full")
    assert HUAIYUAN.explain_row(households, 3, AS_OF).to_dict() == HUAIYUAN.decide(households[2], AS_OF).to_dict()
    with pytest.raises(IndexError):
        HUAIYUAN.explain_row(path, 31, AS_OF)


@pytest.mark.parametrize("missing", ["members", "assets", "area_type"])
def test_an_absent_column_is_an_unknown_fact_not_a_malformed_row(missing: str) -> None:
    households = list(P.synth_households(10, "anhui", 4))
    frame = _facts_frame(households).drop(missing)
    for h in households:
        h.pop(missing, None)
    _compare(HUAIYUAN, households, frame)


def test_a_member_that_is_not_a_mapping_is_refused_as_decide_refuses_it() -> None:
    households = list(P.synth_households(6, "anhui", 8))
    frame = _facts_frame(households)
    members = frame["members"].to_list()
    members[2] = [None, *members[2]]
    frame = frame.with_columns(pl.Series("members", members, dtype=frame.schema["members"]))
    households[2]["members"] = [None, *households[2]["members"]]
    _compare(HUAIYUAN, households, frame)
    assert [(b.position, b.column) for b in read_chunk(HUAIYUAN.policy, frame, 1).bad] == [(2, "members[0]")]


def test_a_group_of_facts_given_as_a_value_is_refused_as_decide_refuses_it() -> None:
    """``"assets": 5`` (a household's group) or ``"income": "x"`` (a member's) is a malformed row,
    said once per group, not a household whose deposits or wages are quietly unknown."""
    households = list(P.synth_households(6, "anhui", 9))
    for i, h in enumerate(households):
        h["assets"] = {1: 5, 4: "many"}.get(i)
        for k, member in enumerate(h.get("members") or []):
            member["income"] = "none" if (i, k) in ((2, 0), (4, 1)) else None
    schema = dict(P.FACTS_SCHEMA)
    schema["assets"] = pl.String
    inner = schema["members"].inner  # type: ignore[union-attr]
    schema["members"] = pl.List(pl.Struct({f.name: (pl.String if f.name == "income" else f.dtype)
                                           for f in inner.fields}))
    data = "\n".join(json.dumps({**h, "assets": None if h["assets"] is None else str(h["assets"])})
                     for h in households).encode("utf-8")
    frame = pl.read_ndjson(io.BytesIO(data), schema=schema)
    _compare(HUAIYUAN, households, frame)
    assert sorted((b.position, b.column, b.message) for b in read_chunk(HUAIYUAN.policy, frame, 1).bad) == [
        (1, "assets", NOT_MAPPING), (2, "members[0].income", NOT_MAPPING),
        (4, "assets", NOT_MAPPING), (4, "members[1].income", NOT_MAPPING)]


def _fits_by_definition(value: Decimal) -> bool:
    exponent = value.as_tuple().exponent
    return isinstance(exponent, int) and value.adjusted() < 18 and exponent >= -18


@settings(max_examples=400, deadline=None)
@given(st.one_of(
    st.decimals(allow_nan=True, allow_infinity=True),
    st.builds(lambda digits, places, sign: Decimal(f"{sign}{digits}").scaleb(-places),
              st.integers(0, 10**40), st.integers(-25, 25), st.sampled_from(["", "-"])),
    st.sampled_from([Decimal("1E+17"), Decimal("1E+18"), Decimal(999999999999999999),
                     Decimal(10**18), Decimal("0.000000000000000001"),
                     Decimal("0.0000000000000000001"), Decimal("-0E-18"), Decimal("-0E-19"),
                     Decimal("12345678901234567.8"), Decimal("0.12345678901234567")]),
))
def test_fits_digits_is_the_digit_limit_exactly(value: Decimal) -> None:
    """The plain-notation shortcut of ``intake.fits_digits`` gives the definition's answer."""
    from policy_engine.intake import fits_digits

    assert fits_digits(value) == _fits_by_definition(value)


def test_a_date_before_year_one_in_a_date_column_is_refused() -> None:
    """Polars holds such a date, Python (and so decide and explain_row) cannot: refused, with its row."""
    households = list(P.synth_households(3, "anhui", 12))
    frame = _facts_frame(households)
    early = frame.with_columns(pl.when(pl.int_range(pl.len()) == 1).then(
        pl.col("members").list.eval(pl.element().struct.with_fields(
            birth_date=pl.element().struct.field("birth_date").str.to_date().dt.offset_by("-2100y"))))
        .otherwise(pl.col("members").list.eval(pl.element().struct.with_fields(
            birth_date=pl.element().struct.field("birth_date").str.to_date()))).alias("members"))
    chunk = read_chunk(HUAIYUAN.policy, early, 1)
    assert {(b.position, b.column) for b in chunk.bad} >= {(1, "members[0].birth_date")}
    assert {b.position for b in chunk.bad} == {1}
    assert chunk.rows.to_list() == [1, 3]
