"""The facts a policy reads: households, members, villages, townships, counties,
institutions and months, as frozen pydantic models with a published JSON Schema.

Three rules shape every model here:

* **Unknown is not zero.** Every field defaults to ``None``. :func:`to_facts` drops
  ``None`` so an unknown fact is an *absent key*, which the evaluator turns into
  ``needs_information``; it never becomes ``0`` or ``False``.
* **Money is exact.** Money fields are :class:`~decimal.Decimal` in yuan. Ints, Decimals
  and plain decimal strings (``"820.50"``) are accepted; a float is converted through
  ``str()`` so ``820.5`` becomes ``Decimal("820.5")``, never the binary approximation.
  NaN, infinities and negative amounts are refused (only the two *net* income items,
  which are differences by definition, may be negative).
* **No clock.** Dates are :class:`datetime.date`; ages and durations are computed by the
  engine from an explicit ``as_of``, never here.

Field names are stable public names (policies refer to them by path, e.g. a member's
``income.wages``); the Chinese term is the field's JSON Schema ``title`` and starts its
``description``. ``docs/facts.md`` lists them all; ``python -m policy_engine.facts``
regenerates the checked-in schemas and the tables in that page.
"""

from __future__ import annotations

import json
import math
import re
import sys
import types
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

__all__ = [
    "ENTITY_MODELS",
    "Assessment",
    "Assets",
    "County",
    "CurrentBenefits",
    "FactsModel",
    "Hardship",
    "Household",
    "Income",
    "Institution",
    "Member",
    "Month",
    "RigidExpenditure",
    "Township",
    "Village",
    "facts_json_schema",
    "to_facts",
    "write_schemas",
]

# --------------------------------------------------------------------------------------
# Value types
# --------------------------------------------------------------------------------------

#: Largest money amount accepted, in yuan. Far above any household or fund figure; it
#: only stops absurd inputs (``1E+999999``) from reaching Decimal arithmetic.
MONEY_LIMIT = Decimal("1e15")

_DECIMAL_TEXT = re.compile(r"[+-]?[0-9]+(\.[0-9]+)?")
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")

# GB/T 2260 province-level prefixes (first two digits of an administrative division code).
_GB2260_PROVINCES = frozenset(
    {
        *("11", "12", "13", "14", "15"),  # 华北
        *("21", "22", "23"),  # 东北
        *("31", "32", "33", "34", "35", "36", "37"),  # 华东
        *("41", "42", "43", "44", "45", "46"),  # 中南
        *("50", "51", "52", "53", "54"),  # 西南
        *("61", "62", "63", "64", "65"),  # 西北
        *("71", "81", "82"),  # 台湾, 香港, 澳门
    }
)


def _to_decimal(value: Any) -> Decimal:
    """Parse a money input exactly; refuse anything that is not a finite number."""
    if isinstance(value, bool):  # bool is an int subclass; True yuan is a bug upstream
        raise PydanticCustomError(
            "money_type", "money must be a number or a decimal string, not a boolean"
        )
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise PydanticCustomError(
                "money_not_finite", "money must be a finite amount, got {value}", {"value": value}
            )
        # str() gives the shortest repr that round-trips, so 820.5 -> Decimal("820.5").
        result = Decimal(str(value))
    elif isinstance(value, str):
        if not _DECIMAL_TEXT.fullmatch(value):
            raise PydanticCustomError(
                "money_format",
                "money text must be a plain decimal such as 820.50 (no unit, commas or "
                "spaces), got {value!r}",
                {"value": value},
            )
        try:
            result = Decimal(value)
        except InvalidOperation:  # pragma: no cover - the regex admits only valid text
            raise PydanticCustomError("money_format", "not a decimal: {value!r}", {"value": value})
    else:
        raise PydanticCustomError(
            "money_type",
            "money must be an int, Decimal, float or decimal string, got {type_name}",
            {"type_name": type(value).__name__},
        )
    if not result.is_finite():
        raise PydanticCustomError(
            "money_not_finite", "money must be a finite amount, got {value}", {"value": str(result)}
        )
    if abs(result) >= MONEY_LIMIT:
        raise PydanticCustomError(
            "money_out_of_range",
            "money must be below {limit} yuan in size, got {value}",
            {"limit": str(MONEY_LIMIT), "value": str(result)},
        )
    if result == 0:
        result = abs(result)  # -0 and 0 are the same amount; keep one spelling
    return result


def _non_negative(value: Decimal) -> Decimal:
    if value < 0:
        raise PydanticCustomError(
            "negative_money",
            "money must not be negative, got {value} yuan",
            {"value": str(value)},
        )
    return value


def _to_date(value: Any) -> date:
    """Accept a date or an ISO ``YYYY-MM-DD`` string; refuse datetimes and timestamps."""
    if isinstance(value, datetime):
        raise PydanticCustomError(
            "date_type", "expected a calendar date, got a datetime {value}", {"value": str(value)}
        )
    if isinstance(value, date):
        return value
    if isinstance(value, str) and _ISO_DATE.fullmatch(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise PydanticCustomError(
        "date_format",
        "expected a date written YYYY-MM-DD, got {value!r}",
        {"value": value},
    )


def _to_jurisdiction_code(value: Any) -> str:
    """GB/T 2260 administrative division code: six ASCII digits, a real province prefix,
    and no county part under a missing prefecture part (``xx00yy`` does not exist)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # YAML reads 340321 as an int; codes never start with 0
    if not isinstance(value, str) or not re.fullmatch(r"[0-9]{6}", value):
        raise PydanticCustomError(
            "jurisdiction_code_format",
            "jurisdiction code must be a six-digit GB/T 2260 code such as 340321, got {value!r}",
            {"value": value},
        )
    if value[:2] not in _GB2260_PROVINCES:
        raise PydanticCustomError(
            "jurisdiction_code_province",
            "jurisdiction code {value} does not start with a GB/T 2260 province code",
            {"value": value},
        )
    if value[2:4] == "00" and value[4:] != "00":
        raise PydanticCustomError(
            "jurisdiction_code_structure",
            "jurisdiction code {value} has a county part but no prefecture part",
            {"value": value},
        )
    return value


_MONEY_TEXT_PATTERN = r"^[+-]?[0-9]+(\.[0-9]+)?$"

#: Money in yuan, non-negative.
Money = Annotated[
    Decimal,
    BeforeValidator(_to_decimal),
    AfterValidator(_non_negative),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": r"^\+?[0-9]+(\.[0-9]+)?$"},
            ]
        }
    ),
]
#: Money in yuan that may be negative: only for items defined as a difference (净额).
SignedMoney = Annotated[
    Decimal,
    BeforeValidator(_to_decimal),
    WithJsonSchema(
        {"anyOf": [{"type": "number"}, {"type": "string", "pattern": _MONEY_TEXT_PATTERN}]}
    ),
]
FactDate = Annotated[
    date,
    BeforeValidator(_to_date),
    WithJsonSchema({"type": "string", "format": "date"}),
]
JurisdictionCode = Annotated[
    str,
    BeforeValidator(_to_jurisdiction_code),
    WithJsonSchema({"type": "string", "pattern": "^[1-8][0-9]{5}$"}),
]
Count = Annotated[int, Strict(), Field(ge=0)]
Flag = Annotated[bool, Strict()]
Identifier = Annotated[str, Strict(), Field(min_length=1, max_length=200)]

AreaType = Literal["urban", "rural"]
Region = Literal["north", "south"]


def fact(zh: str, en: str, unit: str | None = None, **constraints: Any) -> Any:
    """A fact field: optional (default ``None``), titled with its Chinese term, described
    as ``"<中文> / <English>"``, with its unit published as ``x-unit`` in the schema."""
    extra: dict[str, Any] = {"x-unit": unit} if unit else {}
    return Field(
        default=None,
        title=zh,
        description=f"{zh} / {en}",
        json_schema_extra=extra or None,
        **constraints,
    )


class FactsModel(BaseModel):
    """Base of every facts model: unknown keys are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------------------
# Member-level
# --------------------------------------------------------------------------------------

YUAN_MONTH = "yuan/month"
YUAN = "yuan"


class Income(FactsModel):
    """收入: one member's income by national category, yuan per month.

    Counted categories follow 民发〔2021〕57号 (工资性、经营净、财产净、转移净收入 and other
    income). Items the national list does not count (不计入家庭收入) have their own fields;
    record each amount exactly once, so a basic pension recorded in
    ``basic_pension_central`` must not also be inside ``transfer_net``.
    """

    wages: Money | None = fact("工资性收入", "Wages and salaries.", YUAN_MONTH)
    business_gross: Money | None = fact(
        "经营收入", "Gross income from household business or farming.", YUAN_MONTH
    )
    business_costs: Money | None = fact(
        "家庭经营费用", "Business and farming costs, deducted from business income.", YUAN_MONTH
    )
    productive_asset_depreciation: Money | None = fact(
        "生产性固定资产折旧", "Depreciation of productive fixed assets, deducted.", YUAN_MONTH
    )
    property_net: SignedMoney | None = fact(
        "财产净收入",
        "Net property income (rent, interest, dividends); may be negative.",
        YUAN_MONTH,
    )
    transfer_net: SignedMoney | None = fact(
        "转移净收入",
        "Net transfer income (pensions, alimony, support received minus support paid), "
        "excluding the not-counted items below; may be negative.",
        YUAN_MONTH,
    )
    other_counted: Money | None = fact(
        "其他应计入收入", "Other income that is counted.", YUAN_MONTH
    )
    income_tax_paid: Money | None = fact(
        "个人所得税", "Personal income tax paid, deducted.", YUAN_MONTH
    )
    social_insurance_contributions: Money | None = fact(
        "基本社会保障性支出",
        "Statutory social-insurance contributions paid, deducted.",
        YUAN_MONTH,
    )
    employment_costs: Money | None = fact(
        "必要的就业成本",
        "Necessary employment costs (travel, training); deductible where the policy says so.",
        YUAN_MONTH,
    )
    preferential_payments: Money | None = fact(
        "优待抚恤金",
        "Statutory preferential and pension payments to veterans and their families (not counted).",
        YUAN_MONTH,
    )
    family_planning_awards: Money | None = fact(
        "计划生育奖励与扶助金", "Family-planning rewards and support (not counted).", YUAN_MONTH
    )
    scholarships_and_awards: Money | None = fact(
        "奖学金、见义勇为等奖励性补助",
        "Scholarships, awards for bravery and similar rewards (not counted).",
        YUAN_MONTH,
    )
    social_assistance_received: Money | None = fact(
        "社会救助款物", "Government social-assistance cash and goods (not counted).", YUAN_MONTH
    )
    basic_pension_central: Money | None = fact(
        "城乡居民基本养老保险基础养老金",
        "Centrally set basic pension of the residents' scheme (not counted during the "
        "14th Five-Year Plan, 2021-2025).",
        YUAN_MONTH,
    )
    old_age_allowance: Money | None = fact(
        "高龄津贴", "Old-age allowance (not counted for 特困).", YUAN_MONTH
    )
    support_from_siblings_or_elders: Money | None = fact(
        "兄弟姐妹或60周岁以上老人给付的供养费用",
        "Support paid by siblings or by people aged 60+ to an unemployed adult with a "
        "severe disability (may be disregarded).",
        YUAN_MONTH,
    )
    other_not_counted: Money | None = fact(
        "其他不计入家庭收入",
        "Other items a prefecture-level or higher government excludes from income.",
        YUAN_MONTH,
    )


Relation = Literal[
    "head", "spouse", "child", "parent", "sibling", "grandchild", "grandparent", "other"
]
DisabilityKind = Literal[
    "physical", "visual", "hearing", "speech", "intellectual", "psychiatric", "multiple"
]
Schooling = Literal[
    "none", "preschool", "primary", "junior_secondary", "senior_secondary", "vocational", "higher"
]
Employment = Literal[
    "employed", "flexible", "unemployed", "retired", "student", "unable_to_work", "farming"
]


class Member(FactsModel):
    """家庭成员: one co-resident family member (共同生活的家庭成员)."""

    member_id: Identifier | None = fact(
        "成员编号", "Identifier of the member, unique in the household."
    )
    birth_date: FactDate | None = fact("出生日期", "Date of birth; ages are computed from as_of.")
    relation: Relation | None = fact("与户主关系", "Relation to the head of household.")
    disability_grade: Count | None = fact(
        "残疾等级",
        "Certified disability grade 1 (most severe) to 4; 0 = no certified disability.",
        le=4,
    )
    disability_kind: DisabilityKind | None = fact(
        "残疾类别", "Kind of certified disability; only with a grade 1-4."
    )
    serious_illness: Flag | None = fact(
        "重特大疾病", "Has a serious illness recognised by the local authorities."
    )
    received_major_illness_medical_aid: Flag | None = fact(
        "享受重特大疾病医疗救助",
        "Received medical aid for a major disease (some provinces define 重病患者 by this).",
    )
    adl_failed: Count | None = fact(
        "生活自理能力评估未达到项数",
        "How many of the 6 daily-living activities (eating, dressing, getting in and out "
        "of bed, toilet, walking indoors, bathing) are not achieved: 0-6.",
        "activities",
        le=6,
    )
    schooling: Schooling | None = fact("在学阶段", "Current schooling level.")
    employment: Employment | None = fact("就业状况", "Employment situation.")
    able_to_work: Flag | None = fact("劳动能力", "Has the capacity to work.")
    has_able_supporter: Flag | None = fact(
        "有履行义务能力的法定赡养、抚养、扶养人",
        "Has a person legally obliged to support them who is able to do so.",
    )
    hukou_local: Flag | None = fact("本地户籍", "Registered (hukou) in this jurisdiction.")
    residence_permit: Flag | None = fact("居住证", "Holds a local residence permit.")
    lives_in_institution: Flag | None = fact(
        "集中供养", "Lives in a care institution (institutional rather than home-based care)."
    )
    tekun_care_agreement_signed: Flag | None = fact(
        "签订照料服务协议", "A home-based 特困 person has a signed care-service agreement."
    )
    job_offers_refused_consecutively: Count | None = fact(
        "连续拒绝介绍工作次数",
        "Suitable jobs offered by 人社 and other departments refused in a row without good reason.",
        "times",
    )
    years_at_religious_site: Count | None = fact(
        "在宗教活动场所居住年数",
        "For clergy: years lived apart from the family at a religious site.",
        "years",
    )
    income: Income | None = fact("收入", "The member's income by category, yuan per month.")

    @model_validator(mode="after")
    def _disability_kind_needs_grade(self) -> Member:
        if self.disability_grade == 0 and self.disability_kind is not None:
            raise PydanticCustomError(
                "disability_kind_without_grade",
                "disability_kind is {kind} but disability_grade is 0 (no certified disability)",
                {"kind": self.disability_kind},
            )
        return self


# --------------------------------------------------------------------------------------
# Household-level
# --------------------------------------------------------------------------------------


class RigidExpenditure(FactsModel):
    """刚性支出: the household's unavoidable spending, yuan per month."""

    medical: Money | None = fact(
        "医疗支出", "Out-of-pocket medical costs after insurance and medical aid.", YUAN_MONTH
    )
    education: Money | None = fact("教育支出", "Education costs.", YUAN_MONTH)
    disability_rehabilitation: Money | None = fact(
        "残疾康复支出", "Disability rehabilitation costs.", YUAN_MONTH
    )
    other: Money | None = fact(
        "其他刚性支出", "Other rigid spending (for example rent).", YUAN_MONTH
    )


class Assets(FactsModel):
    """家庭财产: the household's property, as a whole."""

    cash: Money | None = fact("现金", "Cash held.", YUAN)
    deposits: Money | None = fact("存款", "Bank deposits.", YUAN)
    securities: Money | None = fact("有价证券", "Securities and other financial assets.", YUAN)
    vehicle_count: Count | None = fact(
        "机动车辆数",
        "Non-business motor vehicles owned (disability mobility vehicles excluded).",
        "vehicles",
    )
    vehicle_value: Money | None = fact(
        "机动车辆价值",
        "Value of the most valuable of those vehicles (purchase price or insured value, as "
        "the policy says).",
        YUAN,
    )
    extra_real_estate_count: Count | None = fact(
        "其他房产数", "Houses owned beyond the one the family lives in.", "houses"
    )
    registered_business: Flag | None = fact(
        "登记注册企业或个体工商户", "A member owns an operating registered business."
    )


MonitoringCategory = Literal["unstable_ex_poor", "marginal_at_risk", "sudden_hardship"]
DibaoCoverage = Literal["whole_household", "single_person"]


class CurrentBenefits(FactsModel):
    """现享受救助: what the household receives now."""

    receiving_dibao: Flag | None = fact("享受低保", "Receives 低保 (minimum living allowance).")
    receiving_marginal: Flag | None = fact(
        "低保边缘家庭", "Recognised as a 低保边缘 (near-dibao) family."
    )
    receiving_tekun: Flag | None = fact(
        "特困人员", "A member is supported as 特困 (extreme poverty)."
    )
    dibao_since: FactDate | None = fact("纳入低保日期", "Date 低保 started.")
    dibao_coverage: DibaoCoverage | None = fact(
        "低保施保方式", "Whole household (整户施保) or single-person (单人保) coverage."
    )
    dibao_member_ids: list[Identifier] | None = fact(
        "纳入低保成员", "member_id of each member covered by 低保."
    )
    dibao_monthly_amount: Money | None = fact(
        "月低保金", "低保 benefit currently paid to the household.", YUAN_MONTH
    )
    last_reviewed_on: FactDate | None = fact("最近核查日期", "Date of the last periodic review.")
    months_since_income_exceeded: Count | None = fact(
        "收入超过低保标准月数",
        "Months since per-capita income first exceeded the 低保 standard (for 渐退).",
        "months",
    )
    income_rose_from_employment: Flag | None = fact(
        "因就业收入增加", "The rise in income came from employment (渐退 applies)."
    )


HardshipKind = Literal["emergency", "expenditure"]
HardshipCause = Literal[
    "fire",
    "traffic_accident",
    "sudden_illness",
    "disaster",
    "epidemic",
    "medical",
    "education",
    "other",
]


class Hardship(FactsModel):
    """临时救助 application: the emergency or spending shock the household faces."""

    kind: HardshipKind | None = fact(
        "救助类型", "急难型 (emergency) or 支出型 (expenditure-driven) hardship."
    )
    cause: HardshipCause | None = fact("困难原因", "What caused the hardship.")
    occurred_on: FactDate | None = fact("发生日期", "Date the emergency or spending began.")
    applied_on: FactDate | None = fact("申请日期", "Date of the application.")
    occurred_in_jurisdiction: Flag | None = fact(
        "急难发生在本地", "The emergency happened in this jurisdiction."
    )
    during_epidemic_or_disaster: Flag | None = fact(
        "疫情或灾害期间", "During an epidemic or disaster (hukou restrictions lifted)."
    )
    expenditure_12_months: Money | None = fact(
        "近12个月刚性支出", "Rigid spending in the 12 months before applying.", YUAN
    )
    medical_out_of_pocket_12_months: Money | None = fact(
        "近12个月自付医疗费用",
        "Medical costs left after insurance and medical aid, 12 months before applying.",
        YUAN,
    )
    education_expenditure_12_months: Money | None = fact(
        "近12个月教育支出", "Education spending in the 12 months before applying.", YUAN
    )
    income_12_months: Money | None = fact(
        "近12个月家庭总收入", "Total family income in the 12 months before applying.", YUAN
    )
    applying_for_dibao_or_tekun: Flag | None = fact(
        "正在申请低保或特困", "The household is applying for 低保 or 特困."
    )
    still_in_hardship_after_specialised_assistance: Flag | None = fact(
        "专项救助后仍有困难",
        "Received medical or other specialised assistance and is still in hardship.",
    )
    applications_this_year: Count | None = fact(
        "本年度临时救助申请次数",
        "Temporary-assistance applications this year, this one included.",
        "applications",
    )
    amount_requested: Money | None = fact("申请救助金额", "Amount requested.", YUAN)


class Assessment(FactsModel):
    """家庭经济状况核查结论: conclusions a township records after its assessment."""

    dibao_tier: Literal["A", "B", "C", "D", "E"] | None = fact(
        "低保分档",
        "The 分档 (tier) the township assessed for a tiered dibao payment (e.g. 汉中 rural A/B/C); "
        "tier criteria are set locally.",
    )


class Household(FactsModel):
    """家庭: an applying or receiving household and its co-resident members."""

    household_id: Identifier | None = fact("家庭编号", "Identifier of the household.")
    jurisdiction_code: JurisdictionCode | None = fact(
        "行政区划代码", "GB/T 2260 code of the place of assessment, e.g. 340321 (怀远县)."
    )
    area_type: AreaType | None = fact("城乡类别", "城镇 (urban) or 农村 (rural) standard applies.")
    region: Region | None = fact("皖北/皖南", "Anhui region: 皖北 (north) or 皖南 (south).")
    members: list[Member] | None = fact("家庭成员", "The co-resident family members.")
    rigid_expenditure: RigidExpenditure | None = fact("刚性支出", "Rigid spending, per month.")
    assets: Assets | None = fact("家庭财产", "The household's property.")
    monitoring_categories: list[MonitoringCategory] | None = fact(
        "防止返贫监测对象类别",
        "Monitored groups: 脱贫不稳定 (unstable_ex_poor), 边缘易致贫 (marginal_at_risk), "
        "突发严重困难 (sudden_hardship); an empty list means none.",
    )
    current_benefits: CurrentBenefits | None = fact("现享受救助", "Benefits received now.")
    hardship: Hardship | None = fact("临时救助情形", "The hardship behind a 临时救助 application.")
    assessment: Assessment | None = fact("核查结论", "Conclusions of the township's assessment.")

    @model_validator(mode="after")
    def _members_are_distinct(self) -> Household:
        seen: set[str] = set()
        heads = 0
        for member in self.members or ():
            if member.member_id is not None:
                if member.member_id in seen:
                    raise PydanticCustomError(
                        "duplicate_member_id",
                        "member_id {member_id} appears more than once",
                        {"member_id": member.member_id},
                    )
                seen.add(member.member_id)
            heads += member.relation == "head"
        if heads > 1:
            raise PydanticCustomError(
                "several_heads", "a household has at most one head, found {heads}", {"heads": heads}
            )
        return self


# --------------------------------------------------------------------------------------
# Administrative entities
# --------------------------------------------------------------------------------------


class Village(FactsModel):
    """村/社区: a village or urban community, for staffing and service-station rules."""

    village_id: Identifier | None = fact(
        "村（社区）编号", "Identifier of the village or community."
    )
    village_name: Identifier | None = fact("村（社区）名称", "Name of the village or community.")
    township_name: Identifier | None = fact("所属乡镇（街道）", "Township or street it belongs to.")
    jurisdiction_code: JurisdictionCode | None = fact(
        "行政区划代码", "GB/T 2260 code of the county it lies in."
    )
    region: Region | None = fact("皖北/皖南", "Anhui region: 皖北 (north) or 皖南 (south).")
    registered_population: Count | None = fact(
        "户籍人口", "Registered (hukou) residents.", "people"
    )
    regular_recipients: Count | None = fact(
        "常年救助对象", "Long-term assistance recipients (低保, 特困 ...).", "people"
    )
    assistance_coordinators: Count | None = fact(
        "已配备社会救助协理员", "Assistance coordinators currently in post.", "people"
    )
    has_service_station: Flag | None = fact(
        "已建立社会救助服务站（点）", "A social-assistance service station exists."
    )
    emergency_fund_county: Money | None = fact(
        "救急难资金县级拨付", "County money paid into the village 救急难 fund.", YUAN
    )
    emergency_fund_township: Money | None = fact(
        "救急难资金乡镇拨付", "Township money paid into the village 救急难 fund.", YUAN
    )
    emergency_fund_village: Money | None = fact(
        "救急难资金村级自筹", "Money raised by the village collective for the fund.", YUAN
    )


class Township(FactsModel):
    """乡镇/街道: a township or urban street office."""

    township_name: Identifier | None = fact("乡镇（街道）名称", "Name of the township.")
    jurisdiction_code: JurisdictionCode | None = fact(
        "行政区划代码", "GB/T 2260 code of the county it lies in."
    )
    concentrated_care_disabled_tekun: Count | None = fact(
        "集中供养的失能半失能特困人员",
        "Fully or partly dependent 特困 people in institutional care.",
        "people",
    )
    disabled_tekun_total: Count | None = fact(
        "失能半失能特困人员总数", "All fully or partly dependent 特困 people.", "people"
    )
    pairing_households: Count | None = fact(
        "慈善结对帮扶户数", "Households in charity pairing (结对帮扶).", "households"
    )
    joint_review_meetings_in_month: Count | None = fact(
        "本月联审会议次数", "Meetings of the joint review group this month.", "meetings"
    )
    service_projects: Count | None = fact(
        "服务类救助项目数", "Service-type assistance projects run.", "projects"
    )
    reserve_fund: Money | None = fact(
        "临时救助备用金", "Township temporary-assistance reserve fund.", YUAN
    )

    @model_validator(mode="after")
    def _part_not_above_whole(self) -> Township:
        part, whole = self.concentrated_care_disabled_tekun, self.disabled_tekun_total
        if part is not None and whole is not None and part > whole:
            raise PydanticCustomError(
                "part_exceeds_total",
                "concentrated_care_disabled_tekun ({part}) exceeds disabled_tekun_total ({whole})",
                {"part": part, "whole": whole},
            )
        return self


class County(FactsModel):
    """县/区: a county or district civil-affairs bureau (民政局)."""

    county_name: Identifier | None = fact("县（区）名称", "Name of the county or district.")
    jurisdiction_code: JurisdictionCode | None = fact("行政区划代码", "GB/T 2260 code.")
    township_decisions: Count | None = fact(
        "乡镇审核确认件数", "Township decisions in the period, refusals included.", "decisions"
    )
    spot_checks_done: Count | None = fact(
        "县级抽查件数", "Of those, decisions spot-checked by county 民政.", "decisions"
    )
    data_comparisons_in_month: Count | None = fact(
        "本月部门数据比对次数", "Data comparisons with other departments this month.", "times"
    )
    coordinator_trainings_in_year: Count | None = fact(
        "本年度协理员培训次数", "Training sessions for assistance coordinators this year.", "times"
    )

    @model_validator(mode="after")
    def _checks_not_above_decisions(self) -> County:
        checks, decisions = self.spot_checks_done, self.township_decisions
        if checks is not None and decisions is not None and checks > decisions:
            raise PydanticCustomError(
                "part_exceeds_total",
                "spot_checks_done ({checks}) exceeds township_decisions ({decisions})",
                {"checks": checks, "decisions": decisions},
            )
        return self


class Institution(FactsModel):
    """供养机构: a care institution (敬老院, 特困供养服务机构)."""

    institution_id: Identifier | None = fact("机构编号", "Identifier of the institution.")
    institution_name: Identifier | None = fact("机构名称", "Name of the institution.")
    jurisdiction_code: JurisdictionCode | None = fact("行政区划代码", "GB/T 2260 code.")
    residents_self_care: Count | None = fact(
        "全自理人员", "Residents who achieve all 6 daily-living activities.", "people"
    )
    residents_partial: Count | None = fact(
        "半失能（半护理）人员", "Residents who fail 1-3 of the 6 activities.", "people"
    )
    residents_full: Count | None = fact(
        "失能（全护理）人员", "Residents who fail 4-6 of the 6 activities.", "people"
    )
    caregivers: Count | None = fact("护理人员", "Caregivers employed.", "people")


class Month(FactsModel):
    """月份: a payment month, for the disbursement calendar (发放时限)."""

    year: Count | None = fact("年", "Calendar year.", ge=1949, le=2200)
    month: Count | None = fact("月", "Calendar month, 1-12.", ge=1, le=12)
    holidays_early: Flag | None = fact(
        "节假日提前发放", "Payment is brought forward because of statutory holidays."
    )
    list_sent_to_finance_on: FactDate | None = fact(
        "民政报送财政日期", "Date county 民政 sent the recipient list to 财政."
    )
    funds_transferred_on: FactDate | None = fact("财政拨付日期", "Date 财政 transferred the funds.")
    paid_to_recipients_on: FactDate | None = fact(
        "银行发放到账日期", "Date the bank credited recipients' accounts."
    )


# --------------------------------------------------------------------------------------
# Entities, facts dicts, JSON Schema
# --------------------------------------------------------------------------------------

#: Entity name (as used by ``decide(..., entity=...)``) to its facts model.
ENTITY_MODELS: Mapping[str, type[FactsModel]] = types.MappingProxyType(
    {
        "household": Household,
        "member": Member,
        "village": Village,
        "township": Township,
        "county": County,
        "institution": Institution,
        "month": Month,
    }
)

_JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def to_facts(model: BaseModel) -> dict[str, Any]:
    """The facts dict the evaluator reads: unknown (``None``) facts are absent keys,
    nested models are dicts, dates stay ``date`` and money stays ``Decimal``."""
    return model.model_dump(mode="python", exclude_none=True)


def facts_json_schema(entity: str) -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of the facts for ``entity`` (see :data:`ENTITY_MODELS`)."""
    try:
        model = ENTITY_MODELS[entity]
    except KeyError:
        known = ", ".join(ENTITY_MODELS)
        raise ValueError(f"unknown facts entity {entity!r}; known entities: {known}") from None
    schema = model.model_json_schema(mode="validation")
    return {"$schema": _JSON_SCHEMA_DIALECT, **schema}


def schema_text(entity: str) -> str:
    """The checked-in file content for ``entity``: sorted keys, indent 2, final newline."""
    return (
        json.dumps(facts_json_schema(entity), sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    )


def write_schemas(directory: str | Path) -> list[Path]:
    """Write ``facts.<entity>.schema.json`` for every entity into ``directory``."""
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for entity in ENTITY_MODELS:
        path = target / f"facts.{entity}.schema.json"
        path.write_text(schema_text(entity), encoding="utf-8")
        written.append(path)
    return written


# --------------------------------------------------------------------------------------
# Reference tables for docs/facts.md (kept in sync by tests/test_facts.py)
# --------------------------------------------------------------------------------------

_TYPE_NAMES: dict[Any, str] = {
    Decimal: "money",
    date: "date",
    int: "integer",
    bool: "boolean",
    str: "text",
}


def _strip_optional(annotation: Any) -> Any:
    if get_origin(annotation) in (Union, types.UnionType):
        rest = [a for a in get_args(annotation) if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return annotation


def _type_label(annotation: Any) -> str:
    annotation = _strip_optional(annotation)
    if get_origin(annotation) is Annotated:
        base, *metadata = get_args(annotation)
        if base is Decimal:
            return (
                "money"
                if any(isinstance(m, AfterValidator) for m in metadata)
                else ("money (may be negative)")
            )
        if base is int:
            return "integer ≥ 0"
        if any(getattr(m, "func", None) is _to_jurisdiction_code for m in metadata):
            return "GB/T 2260 code"
        return _type_label(base)
    if get_origin(annotation) is Literal:
        return "one of " + ", ".join(f"`{v}`" for v in get_args(annotation))
    if get_origin(annotation) is list:
        (item,) = get_args(annotation)
        if isinstance(item, type) and issubclass(item, BaseModel):
            return f"list of {item.__name__}"
        return "list, each " + _type_label(item)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation.__name__
    return _TYPE_NAMES.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _bounds(field: Any) -> str:
    """Bounds of a count field: ``Count`` is ≥ 0; a field may narrow it (``le=4``)."""
    lower, upper = 0, None
    for item in field.metadata:
        lower = getattr(item, "ge", lower)
        upper = getattr(item, "le", upper)
    return f" ≥ {lower}" if upper is None else f" {lower}..{upper}"


def _rows(model: type[BaseModel], prefix: str = "") -> list[str]:
    rows = []
    for name, field in model.model_fields.items():
        inner = _strip_optional(field.annotation)
        path = f"{prefix}{name}"
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            rows.extend(_rows(inner, prefix=f"{path}."))
            continue
        label = _type_label(field.annotation)
        if label == "integer ≥ 0" and field.metadata:
            label = "integer" + _bounds(field)
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        unit = str(extra.get("x-unit", "")) or "–"
        zh = field.title or ""
        meaning = (field.description or "").split(" / ", 1)[-1]
        rows.append(f"| `{path}` | {label} | {unit} | {zh} | {meaning} |")
    return rows


def markdown_table(entity: str) -> str:
    """The reference table of ``entity`` for docs/facts.md; nested single models are
    flattened into dotted paths (``income.wages``), lists of members are not."""
    if entity not in ENTITY_MODELS:
        facts_json_schema(entity)  # raises the same error
    header = "| Path | Type | Unit | 中文 | Meaning |\n|---|---|---|---|---|\n"
    return header + "\n".join(_rows(ENTITY_MODELS[entity])) + "\n"


_TABLE_BLOCK = re.compile(
    r"(<!-- facts-table: (?P<entity>[a-z]+) -->\n)(?P<body>.*?)(<!-- /facts-table -->)", re.DOTALL
)


def refresh_docs_tables(text: str) -> str:
    """Replace each ``<!-- facts-table: <entity> -->`` block in ``text`` by the current table."""
    return _TABLE_BLOCK.sub(
        lambda m: m.group(1) + markdown_table(m.group("entity")) + m.group(4), text
    )


def _main(argv: list[str]) -> int:
    """``python -m policy_engine.facts [DOCS_FILE]``: rewrite the schemas beside this module
    and, if given, the tables in the docs page."""
    for path in write_schemas(Path(__file__).parent / "schemas"):
        print(path)
    for docs in argv:
        page = Path(docs)
        page.write_text(refresh_docs_tables(page.read_text(encoding="utf-8")), encoding="utf-8")
        print(page)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(_main(sys.argv[1:]))
