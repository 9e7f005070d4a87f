"""Tests of the facts models (policy_engine.facts), their JSON Schemas and docs tables."""

from __future__ import annotations

import json
import re
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from policy_engine import facts
from policy_engine.facts import (
    ENTITY_MODELS,
    Assets,
    County,
    Household,
    Income,
    Member,
    Month,
    Township,
    Village,
    facts_json_schema,
    to_facts,
    write_schemas,
)

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_DIR = ROOT / "src" / "policy_engine" / "schemas"
DOCS_PAGE = ROOT / "docs" / "facts.md"
ENTITIES = ["household", "member", "village", "township", "county", "institution", "month"]


def only_error(exc: pytest.ExceptionInfo[ValidationError]) -> dict[str, Any]:
    errors = exc.value.errors()
    assert len(errors) == 1, errors
    return dict(errors[0])


# A 怀远县 (Huaiyuan, Bengbu, Anhui) rural household as a YAML test suite would give it:
# dates as date objects or ISO strings, money as ints, floats and decimal strings.
REALISTIC_HOUSEHOLD: dict[str, Any] = {
    "household_id": "HY-2023-0042",
    "jurisdiction_code": "340321",
    "area_type": "rural",
    "region": "north",
    "members": [
        {
            "member_id": "m1",
            "birth_date": date(1965, 3, 14),
            "relation": "head",
            "disability_grade": 0,
            "serious_illness": False,
            "adl_failed": 0,
            "schooling": "none",
            "employment": "farming",
            "able_to_work": True,
            "has_able_supporter": False,
            "hukou_local": True,
            "income": {
                "wages": 600,
                "business_gross": "1250.00",
                "business_costs": 430.5,
                "productive_asset_depreciation": "35.25",
                "transfer_net": "-50",
                "social_insurance_contributions": 25,
            },
        },
        {
            "member_id": "m2",
            "birth_date": "1967-11-02",
            "relation": "spouse",
            "disability_grade": 2,
            "disability_kind": "physical",
            "serious_illness": True,
            "received_major_illness_medical_aid": True,
            "adl_failed": 4,
            "employment": "unable_to_work",
            "able_to_work": False,
            "hukou_local": True,
            "income": {"social_assistance_received": Decimal("120.00")},
        },
        {
            "member_id": "m3",
            "birth_date": date(2007, 9, 1),
            "relation": "child",
            "schooling": "senior_secondary",
            "employment": "student",
            "able_to_work": False,
            "hukou_local": True,
            "income": {"scholarships_and_awards": 100},
        },
        {
            "member_id": "m4",
            "birth_date": date(1941, 1, 20),
            "relation": "parent",
            "adl_failed": 2,
            "employment": "retired",
            "able_to_work": False,
            "hukou_local": True,
            "lives_in_institution": False,
            "income": {"basic_pension_central": 133, "old_age_allowance": 50},
        },
    ],
    "rigid_expenditure": {"medical": "820.5", "education": 300, "other": 0},
    "assets": {
        "deposits": 12000,
        "securities": 0,
        "vehicle_count": 1,
        "vehicle_value": 30000,
        "extra_real_estate_count": 0,
        "registered_business": False,
    },
    "monitoring_categories": ["marginal_at_risk"],
    "current_benefits": {
        "receiving_dibao": True,
        "receiving_marginal": False,
        "receiving_tekun": False,
        "dibao_since": date(2022, 9, 1),
        "dibao_coverage": "single_person",
        "dibao_member_ids": ["m2"],
        "dibao_monthly_amount": "722",
        "months_since_income_exceeded": 0,
    },
    "hardship": {
        "kind": "expenditure",
        "cause": "medical",
        "occurred_on": "2023-03-10",
        "applied_on": date(2023, 6, 20),
        "occurred_in_jurisdiction": True,
        "during_epidemic_or_disaster": False,
        "expenditure_12_months": "26500.00",
        "medical_out_of_pocket_12_months": 21000,
        "income_12_months": 31000,
        "applying_for_dibao_or_tekun": False,
        "applications_this_year": 1,
        "amount_requested": 5000,
    },
}


# --------------------------------------------------------------------------------------
# Money
# --------------------------------------------------------------------------------------


def test_float_is_converted_through_its_text_exactly() -> None:
    wages = Income.model_validate({"wages": 820.5}).wages
    assert type(wages) is Decimal
    assert wages == Decimal("820.5")
    assert str(wages) == "820.5"
    # Decimal(0.1) would be 0.1000000000000000055511151231257827...; str() gives 0.1.
    assert Income.model_validate({"wages": 0.1}).wages == Decimal("0.1")


def test_float_in_json_is_converted_exactly() -> None:
    income = Income.model_validate_json('{"wages": 820.5, "other_counted": 0.1}')
    assert income.wages == Decimal("820.5")
    assert income.other_counted == Decimal("0.1")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (820, Decimal(820)),
        (Decimal("820.50"), Decimal("820.50")),
        ("820.50", Decimal("820.50")),
        ("0", Decimal(0)),
        ("-0", Decimal(0)),
    ],
)
def test_money_accepts_ints_decimals_and_decimal_text(given: Any, expected: Decimal) -> None:
    value = Income(wages=given).wages
    assert type(value) is Decimal
    assert value == expected
    assert str(value) == str(expected)  # the scale written is kept: 820.50 stays 820.50


def test_negative_money_is_refused_with_its_field_path() -> None:
    with pytest.raises(ValidationError) as exc:
        Household.model_validate(
            {"members": [{"member_id": "m1"}, {"member_id": "m2", "income": {"wages": -1}}]}
        )
    error = only_error(exc)
    assert error["loc"] == ("members", 1, "income", "wages")
    assert error["type"] == "negative_money"
    assert "negative" in error["msg"]


@pytest.mark.parametrize("given", [-0.01, "-5", Decimal("-1E+2")])
def test_negative_money_is_refused_in_every_form(given: Any) -> None:
    with pytest.raises(ValidationError) as exc:
        Assets(deposits=given)
    assert only_error(exc)["type"] == "negative_money"


def test_net_income_items_may_be_negative() -> None:
    income = Income.model_validate({"property_net": "-12.5", "transfer_net": -50})
    assert income.property_net == Decimal("-12.5")
    assert income.transfer_net == Decimal(-50)


@pytest.mark.parametrize(
    "given",
    [
        float("nan"),
        float("inf"),
        float("-inf"),
        Decimal("NaN"),
        Decimal("Infinity"),
        Decimal("sNaN"),
    ],
)
def test_non_finite_money_is_refused(given: Any) -> None:
    with pytest.raises(ValidationError) as exc:
        Income(wages=given)
    error = only_error(exc)
    assert error["loc"] == ("wages",)
    assert error["type"] == "money_not_finite"


@pytest.mark.parametrize(
    ("given", "error_type"),
    [
        ("NaN", "money_format"),
        ("820元", "money_format"),
        ("1,000", "money_format"),
        (" 820", "money_format"),
        ("", "money_format"),
        ("1e3", "money_format"),
        (True, "money_type"),
        ([820], "money_type"),
        (Decimal("1E+999999"), "money_out_of_range"),
    ],
)
def test_money_that_is_not_a_plain_amount_is_refused(given: Any, error_type: str) -> None:
    with pytest.raises(ValidationError) as exc:
        Income(wages=given)
    assert only_error(exc)["type"] == error_type


# --------------------------------------------------------------------------------------
# Other value types
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "code", ["340321", 340321, "340000", "340300", "430603", "610727", "130800"]
)
def test_valid_gb2260_codes_are_accepted(code: Any) -> None:
    assert Household(jurisdiction_code=code).jurisdiction_code == str(code)


@pytest.mark.parametrize(
    ("code", "error_type"),
    [
        ("34032", "jurisdiction_code_format"),
        ("3403210", "jurisdiction_code_format"),
        ("34O321", "jurisdiction_code_format"),
        ("３４０３２１", "jurisdiction_code_format"),  # full-width digits
        (" 340321", "jurisdiction_code_format"),
        (True, "jurisdiction_code_format"),
        ("990000", "jurisdiction_code_province"),
        ("000000", "jurisdiction_code_province"),
        ("160000", "jurisdiction_code_province"),
        ("340021", "jurisdiction_code_structure"),
    ],
)
def test_invalid_gb2260_codes_are_refused(code: Any, error_type: str) -> None:
    with pytest.raises(ValidationError) as exc:
        Household(jurisdiction_code=code)
    error = only_error(exc)
    assert error["loc"] == ("jurisdiction_code",)
    assert error["type"] == error_type


def test_dates_accept_date_objects_and_iso_text() -> None:
    assert Member.model_validate({"birth_date": "1965-03-14"}).birth_date == date(1965, 3, 14)
    assert Member(birth_date=date(1965, 3, 14)).birth_date == date(1965, 3, 14)


@pytest.mark.parametrize(
    "given", [datetime(1965, 3, 14), "1965/03/14", "19650314", "1965-02-30", 1965, -1]
)
def test_dates_refuse_datetimes_timestamps_and_other_text(given: Any) -> None:
    with pytest.raises(ValidationError) as exc:
        Member(birth_date=given)
    assert only_error(exc)["type"] in {"date_type", "date_format"}


@pytest.mark.parametrize("given", [True, 3.0, "3", -1])
def test_counts_are_strict_non_negative_integers(given: Any) -> None:
    with pytest.raises(ValidationError):
        Village(registered_population=given)


@pytest.mark.parametrize("given", [1, "true", "yes"])
def test_booleans_are_strict(given: Any) -> None:
    with pytest.raises(ValidationError):
        Member(able_to_work=given)


@pytest.mark.parametrize(("field", "value"), [("disability_grade", 5), ("adl_failed", 7)])
def test_member_scales_are_bounded(field: str, value: int) -> None:
    with pytest.raises(ValidationError) as exc:
        Member.model_validate({field: value})
    assert only_error(exc)["loc"] == (field,)


def test_month_is_a_calendar_month() -> None:
    assert Month(year=2023, month=12).month == 12
    with pytest.raises(ValidationError):
        Month(month=13)


# --------------------------------------------------------------------------------------
# Model shape: extra fields, immutability, cross-field checks
# --------------------------------------------------------------------------------------


def test_extra_field_is_refused_with_its_path() -> None:
    with pytest.raises(ValidationError) as exc:
        Household.model_validate({"members": [{"member_id": "m1", "income": {"wage": 800}}]})
    error = only_error(exc)
    assert error["loc"] == ("members", 0, "income", "wage")
    assert error["type"] == "extra_forbidden"


@pytest.mark.parametrize("model", list(ENTITY_MODELS.values()))
def test_every_entity_refuses_unknown_fields(model: type[BaseModel]) -> None:
    with pytest.raises(ValidationError) as exc:
        model.model_validate({"no_such_fact": 1})
    assert only_error(exc)["type"] == "extra_forbidden"


def test_models_are_frozen() -> None:
    member = Member(member_id="m1")
    with pytest.raises(ValidationError):
        member.member_id = "m2"


def test_duplicate_member_ids_are_refused() -> None:
    with pytest.raises(ValidationError) as exc:
        Household.model_validate({"members": [{"member_id": "m1"}, {"member_id": "m1"}]})
    assert only_error(exc)["type"] == "duplicate_member_id"


def test_a_household_has_at_most_one_head() -> None:
    with pytest.raises(ValidationError) as exc:
        Household.model_validate({"members": [{"relation": "head"}, {"relation": "head"}]})
    assert only_error(exc)["type"] == "several_heads"


def test_disability_kind_needs_a_grade() -> None:
    assert Member(disability_grade=3, disability_kind="intellectual").disability_kind
    assert Member(disability_kind="intellectual").disability_grade is None  # grade unknown
    with pytest.raises(ValidationError) as exc:
        Member(disability_grade=0, disability_kind="visual")
    assert only_error(exc)["type"] == "disability_kind_without_grade"


def test_parts_cannot_exceed_totals() -> None:
    assert County(township_decisions=10, spot_checks_done=3).spot_checks_done == 3
    with pytest.raises(ValidationError):
        County(township_decisions=10, spot_checks_done=11)
    with pytest.raises(ValidationError):
        Township(concentrated_care_disabled_tekun=5, disabled_tekun_total=4)


# --------------------------------------------------------------------------------------
# to_facts
# --------------------------------------------------------------------------------------


def test_every_fact_defaults_to_unknown() -> None:
    for model in ENTITY_MODELS.values():
        assert to_facts(model()) == {}


def test_to_facts_drops_none_but_keeps_known_zero_false_and_empty() -> None:
    household = Household.model_validate(
        {
            "household_id": "h1",
            "monitoring_categories": [],
            "assets": {"deposits": 0, "registered_business": False},
            "members": [{"member_id": "m1", "income": {"wages": 0}}],
        }
    )
    assert to_facts(household) == {
        "household_id": "h1",
        "monitoring_categories": [],
        "assets": {"deposits": Decimal(0), "registered_business": False},
        "members": [{"member_id": "m1", "income": {"wages": Decimal(0)}}],
    }


def _walk(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [value, *[x for v in value.values() for x in _walk(v)]]
    if isinstance(value, list):
        return [value, *[x for v in value for x in _walk(v)]]
    return [value]


def test_realistic_household_round_trips() -> None:
    household = Household.model_validate(REALISTIC_HOUSEHOLD)
    data = to_facts(household)

    # Nested models are plain dicts and lists; nothing unknown is present.
    assert all(not isinstance(v, BaseModel) and v is not None for v in _walk(data))
    head, spouse, _child, parent = data["members"]
    assert head["income"]["business_costs"] == Decimal("430.5")
    assert head["income"]["transfer_net"] == Decimal(-50)
    assert type(head["birth_date"]) is date
    assert spouse["birth_date"] == date(1967, 11, 2)
    assert "lives_in_institution" not in spouse and parent["lives_in_institution"] is False
    assert data["rigid_expenditure"]["medical"] == Decimal("820.5")
    assert data["hardship"]["occurred_on"] == date(2023, 3, 10)
    assert data["current_benefits"]["dibao_member_ids"] == ["m2"]

    # Python round trip and JSON round trip give back the same model.
    assert Household.model_validate(data) == household
    assert to_facts(Household.model_validate(data)) == data
    assert Household.model_validate_json(household.model_dump_json()) == household


def test_realistic_household_json_satisfies_the_published_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((SCHEMA_DIR / "facts.household.schema.json").read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(schema)
    document = json.loads(Household.model_validate(REALISTIC_HOUSEHOLD).model_dump_json())
    assert list(validator.iter_errors(document)) == []
    # The schema also catches what the models catch.
    document["members"][0]["income"]["wage"] = 800
    document["assets"]["deposits"] = -1
    assert len(list(validator.iter_errors(document))) == 2


# --------------------------------------------------------------------------------------
# JSON Schema files and docs stay current
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("entity", ENTITIES)
def test_checked_in_schema_is_current(entity: str) -> None:
    path = SCHEMA_DIR / f"facts.{entity}.schema.json"
    assert path.exists(), f"{path} is missing; run: PYTHONPATH=src python -m policy_engine.facts"
    expected = json.dumps(facts_json_schema(entity), sort_keys=True, indent=2, ensure_ascii=False)
    assert path.read_text(encoding="utf-8") == expected + "\n", (
        f"{path.name} is stale; run: PYTHONPATH=src python -m policy_engine.facts docs/facts.md"
    )


def test_write_schemas_writes_exactly_the_checked_in_files(tmp_path: Path) -> None:
    written = write_schemas(tmp_path)
    assert sorted(p.name for p in written) == sorted(f"facts.{e}.schema.json" for e in ENTITIES)
    checked_in = sorted(p.name for p in SCHEMA_DIR.glob("facts.*.schema.json"))
    assert checked_in == sorted(p.name for p in written)
    for path in written:
        text = path.read_text(encoding="utf-8")
        assert text.endswith("}\n") and not text.endswith("\n\n")
        assert text == (SCHEMA_DIR / path.name).read_text(encoding="utf-8")


def test_schema_describes_the_entity() -> None:
    schema = facts_json_schema("village")
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["additionalProperties"] is False
    population = schema["properties"]["registered_population"]
    assert population["title"] == "户籍人口"
    assert population["x-unit"] == "people"


def test_unknown_entity_is_an_error() -> None:
    with pytest.raises(ValueError, match="known entities: household"):
        facts_json_schema("family")


_CJK = re.compile(r"[\u3400-\u9fff]")


def _all_models() -> list[type[BaseModel]]:
    seen: list[type[BaseModel]] = []
    pending: list[type[BaseModel]] = list(ENTITY_MODELS.values())
    while pending:
        model = pending.pop()
        if model in seen:
            continue
        seen.append(model)
        for field in model.model_fields.values():
            text = repr(field.annotation)
            pending += [
                m
                for m in vars(facts).values()
                if isinstance(m, type) and issubclass(m, BaseModel) and f".{m.__name__}" in text
            ]
    return seen


def test_every_field_is_optional_and_documented_in_chinese_and_english() -> None:
    models = _all_models()
    assert {m.__name__ for m in models} >= {
        "Household",
        "Member",
        "Income",
        "RigidExpenditure",
        "Assets",
        "CurrentBenefits",
        "Hardship",
        "Village",
        "Township",
        "County",
        "Institution",
        "Month",
    }
    for model in models:
        assert model.model_config.get("extra") == "forbid" and model.model_config.get("frozen")
        for name, field in model.model_fields.items():
            where = f"{model.__name__}.{name}"
            assert re.fullmatch(r"[a-z][a-z0-9_]*", name), where
            assert field.default is None and not field.is_required(), where
            zh, sep, en = (field.description or "").partition(" / ")
            assert sep and _CJK.search(zh) and en.strip(), where
            assert field.title == zh, where


def test_docs_tables_are_current() -> None:
    text = DOCS_PAGE.read_text(encoding="utf-8")
    for entity in ENTITIES:
        assert f"<!-- facts-table: {entity} -->" in text, entity
    assert facts.refresh_docs_tables(text) == text, (
        "docs/facts.md tables are stale; run: PYTHONPATH=src python -m policy_engine.facts "
        "docs/facts.md"
    )


def test_docs_list_member_income_paths() -> None:
    table = facts.markdown_table("member")
    assert "| `income.wages` | money | yuan/month | 工资性收入 |" in table
    assert "| `disability_grade` | integer 0..4 |" in table
