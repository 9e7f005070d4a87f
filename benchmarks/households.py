"""Seeded synthetic households for the benchmarks (facts dicts, as a caller would pass them).

Two generators:

* ``shared_households(n, seed)``: households of the shape of the shared dibao benchmark rule
  (``shared/bench/peers/README.md``): 1-6 members, each with lognormal wages (65% employed)
  and lognormal other income (50% have some), and lognormal household deposits. The
  distribution follows the peers' description of the data (not their code): wages
  lognormal(7.6, 0.8), other income lognormal(5.0, 1.0), deposits lognormal(9.5, 1.5). For
  ``benchmarks/policies/shared_dibao``.
* ``zen_rule_households(n, seed)``: flat facts of the shape the zen-engine peer script
  (``shared/bench/peers/zen_dibao.py``) evaluates, drawn as its docstring and README describe
  them (not its code): a standard from seven monthly figures (680 to 1365 yuan), a household
  size 1-6, per-capita income uniform in [0, 1.5 × standard], deposits uniform in
  [0, 40 × standard × size], both to the fen, and one of four household types. Numbers are
  JSON numbers (Python floats and ints), as the peer passes them. For
  ``benchmarks/policies/zen_rule``; ``zen_rule_expected`` is the rule by hand.
* ``anhui_households(n, seed)``: realistic rural and urban households of 怀远县 (Huaiyuan) in the
  facts format of ``docs/facts.md``, for ``policies/anhui/bengbu/huaiyuan``. A mix of profiles
  (low-income families, near-dibao families, recipients whose wages rose, elderly people with
  no one to support them, households hit by an emergency or by medical bills, better-off
  families) so that dibao, marginal_household, graduated_exit, tekun, tekun_care_agreement
  and temporary_assistance all decide both ways. A small share of households leaves one fact
  out, as real applications do, so ``needs_information`` is exercised too.

For the shared rule and Huaiyuan, money is given as decimal strings (as JSON facts arrive) and
dates as ISO strings, and every generated household is valid against
``policy_engine.facts.Household`` (``check()`` below). The zen-engine rule reads flat facts of
its own (its package declares them), which that model does not describe.

    python benchmarks/households.py        # prints a sample and the outcome mix
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable
from decimal import Decimal
from typing import Any

Facts = dict[str, Any]

# ---------------------------------------------------------------------------- shared rule


def _money(x: float) -> str:
    return f"{max(x, 0.0):.2f}"


def shared_household(rng: random.Random) -> Facts:
    """One household for the shared dibao rule."""
    size = rng.randint(1, 6)
    members = []
    for _ in range(size):
        wage = rng.lognormvariate(7.6, 0.8) if rng.random() < 0.65 else 0.0
        other = rng.lognormvariate(5.0, 1.0) if rng.random() < 0.5 else 0.0
        members.append({"income": {"wages": _money(wage), "other_counted": _money(other)}})
    return {"members": members, "assets": {"deposits": _money(rng.lognormvariate(9.5, 1.5))}}


def shared_households(n: int, seed: int = 20261123) -> list[Facts]:
    rng = random.Random(seed)
    return [shared_household(rng) for _ in range(n)]


# ---------------------------------------------------------------------------- zen-engine's rule

ZEN_STANDARDS = (680, 750, 800, 900, 1000, 1150, 1365)
ZEN_TYPES = ("general", "elderly_alone", "severe_disability", "orphan_minor")


def zen_rule_household(rng: random.Random) -> Facts:
    """One household for the zen-engine peer's rule (flat facts, numbers as JSON numbers)."""
    standard = rng.choice(ZEN_STANDARDS)
    size = rng.randint(1, 6)
    return {
        "per_capita_income": round(rng.uniform(0, 1.5 * standard), 2),
        "standard": standard,
        "deposits": round(rng.uniform(0, 40 * standard * size), 2),
        "household_size": size,
        "household_type": rng.choice(ZEN_TYPES),
    }


def zen_rule_households(n: int, seed: int = 20261123) -> list[Facts]:
    rng = random.Random(seed)
    return [zen_rule_household(rng) for _ in range(n)]


def zen_rule_expected(facts: Facts) -> tuple[bool, Decimal]:
    """(eligible, multiplier) of the zen-engine peer's rule, by hand, in exact decimals."""
    standard = Decimal(str(facts["standard"]))
    eligible = (Decimal(str(facts["per_capita_income"])) < standard
                and Decimal(str(facts["deposits"])) < 24 * standard * facts["household_size"])
    kind = facts["household_type"]
    multiplier = {"elderly_alone": "1.3", "severe_disability": "1.5", "orphan_minor": "1.5"}.get(kind, "1.0")
    return eligible, Decimal(multiplier)


# ---------------------------------------------------------------------------- Huaiyuan

AS_OF = dt.date(2023, 7, 1)
STANDARD = {"urban": 739, "rural": 722}  # Bengbu dibao standards from 2022-07 (yuan/month)

_ZERO_INCOME = {
    "wages": "0", "business_gross": "0", "business_costs": "0",
    "productive_asset_depreciation": "0", "property_net": "0", "transfer_net": "0",
    "other_counted": "0", "income_tax_paid": "0", "social_insurance_contributions": "0",
}
_DISABILITY_KINDS = ["physical", "visual", "hearing", "speech", "intellectual", "psychiatric", "multiple"]


def _birth(rng: random.Random, age_lo: int, age_hi: int) -> str:
    age = rng.randint(age_lo, age_hi)
    day = AS_OF - dt.timedelta(days=int(365.25 * age) + rng.randint(0, 364))
    return day.isoformat()


def _member(rng: random.Random, mid: str, relation: str, age: tuple[int, int], *,
            earner: float = 0.0, fragile: float = 0.1, supported: bool = True) -> Facts:
    """A member; `earner` is a monthly wage scale (0 = no wages), `fragile` the chance of
    disability, serious illness and failed daily-living activities."""
    lo, hi = age
    birth = _birth(rng, lo, hi)
    years = AS_OF.year - int(birth[:4])
    m: Facts = {
        "member_id": mid,
        "relation": relation,
        "birth_date": birth,
        "hukou_local": rng.random() < 0.93,
        "lives_in_institution": False,
        "has_able_supporter": supported,
        "serious_illness": rng.random() < fragile * 0.6,
    }
    if not m["hukou_local"]:
        m["residence_permit"] = rng.random() < 0.5
    grade = 0
    if rng.random() < fragile:
        grade = rng.choice([1, 2, 2, 3, 3, 4])
        m["disability_kind"] = rng.choice(_DISABILITY_KINDS)
    m["disability_grade"] = grade
    adl = 0
    if grade in (1, 2) or years >= 75 or m["serious_illness"]:
        adl = rng.choice([0, 1, 2, 3, 4, 5, 6]) if rng.random() < 0.7 else 0
    m["adl_failed"] = adl
    if years < 6:
        m["schooling"] = "preschool" if years >= 3 else "none"
        m["employment"] = "student"
    elif years < 18:
        m["schooling"] = "primary" if years < 12 else ("junior_secondary" if years < 15 else "senior_secondary")
        m["employment"] = "student"
    income = dict(_ZERO_INCOME)
    able = 18 <= years < 60 and grade not in (1, 2) and adl <= 3 and not m["serious_illness"]
    m["able_to_work"] = able
    if able and earner > 0:
        income["wages"] = _money(rng.lognormvariate(0.0, 0.45) * earner)
        income["social_insurance_contributions"] = _money(float(income["wages"]) * 0.03)
        m["employment"] = rng.choice(["employed", "flexible", "flexible"])
    elif years >= 18:
        m["employment"] = ("retired" if years >= 60 else
                           "unable_to_work" if not able else rng.choice(["unemployed", "farming"]))
    if m.get("employment") == "farming" or (able and rng.random() < 0.3):
        gross = rng.lognormvariate(5.3, 0.6)
        income["business_gross"] = _money(gross)
        income["business_costs"] = _money(gross * rng.uniform(0.2, 0.5))
    if rng.random() < 0.15:
        income["transfer_net"] = _money(rng.lognormvariate(5.0, 0.7))
    if rng.random() < 0.05:
        income["property_net"] = _money(rng.lognormvariate(4.5, 0.8))
    if years >= 60:
        income["basic_pension_central"] = "143"
        if years >= 80:
            income["old_age_allowance"] = "50"
    if grade:
        income["social_assistance_received"] = "90"  # 残疾人两项补贴, not counted
    m["income"] = income
    return m


def _family(rng: random.Random, size: int, earner: float, fragile: float) -> list[Facts]:
    """A head of 30-65, a spouse, children or grandchildren, maybe a parent."""
    members = [_member(rng, "m1", "head", (30, 65), earner=earner, fragile=fragile)]
    kinds = ["spouse", "child", "child", "parent", "grandchild", "child"]
    for i in range(1, size):
        rel = kinds[i - 1] if i < len(kinds) + 1 else "other"
        ages = {"spouse": (28, 65), "child": (1, 25), "parent": (62, 90), "grandchild": (1, 12)}[rel]
        members.append(_member(rng, f"m{i + 1}", rel, ages, earner=earner * 0.8, fragile=fragile))
    return members


def _assets(rng: random.Random, scale: float) -> Facts:
    a: Facts = {
        "cash": _money(rng.lognormvariate(6.0, 0.8)),
        "deposits": _money(rng.lognormvariate(8.5, 1.2) * scale),
        "securities": "0" if rng.random() < 0.9 else _money(rng.lognormvariate(8.0, 1.0) * scale),
        "vehicle_count": 0 if rng.random() < 0.85 * (1 / scale if scale > 1 else 1) else 1,
        "extra_real_estate_count": 0 if rng.random() < 0.95 else 1,
        "registered_business": rng.random() < 0.03 * scale,
    }
    if a["vehicle_count"]:
        a["vehicle_value"] = _money(rng.lognormvariate(10.3, 0.6))
    return a


def _benefits(rng: random.Random, *, dibao: bool = False, marginal: bool = False,
              tekun: bool = False) -> Facts:
    b: Facts = {"receiving_dibao": dibao, "receiving_marginal": marginal, "receiving_tekun": tekun}
    if dibao:
        b["dibao_since"] = _birth(rng, 1, 6)
        b["dibao_coverage"] = "whole_household"
        b["dibao_monthly_amount"] = _money(rng.uniform(200, 1500))
        b["last_reviewed_on"] = (AS_OF - dt.timedelta(days=rng.randint(20, 300))).isoformat()
    return b


def _hardship(rng: random.Random, kind: str, members: int) -> Facts:
    occurred = AS_OF - dt.timedelta(days=rng.randint(5, 120))
    h: Facts = {
        "kind": kind,
        "occurred_on": occurred.isoformat(),
        "applied_on": (occurred + dt.timedelta(days=rng.randint(1, 30))).isoformat(),
        "occurred_in_jurisdiction": rng.random() < 0.9,
        "during_epidemic_or_disaster": rng.random() < 0.05,
        "applying_for_dibao_or_tekun": rng.random() < 0.4,
        "still_in_hardship_after_specialised_assistance": rng.random() < 0.6,
        "applications_this_year": rng.randint(1, 2),
        "amount_requested": _money(rng.choice([1000, 2000, 3000, 5000, 8000])),
        "income_12_months": _money(rng.lognormvariate(9.6, 0.6) * members ** 0.7),
    }
    if kind == "emergency":
        h["cause"] = rng.choice(["fire", "traffic_accident", "sudden_illness", "disaster", "other"])
    else:
        h["cause"] = rng.choice(["medical", "medical", "education", "other"])
        h["expenditure_12_months"] = _money(rng.lognormvariate(9.3, 0.7))
        h["medical_out_of_pocket_12_months"] = _money(rng.lognormvariate(9.0, 0.8))
        h["education_expenditure_12_months"] = _money(rng.lognormvariate(7.5, 0.8))
    return h


def _base(rng: random.Random, i: int, members: list[Facts], *, wealth: float = 1.0) -> Facts:
    area = "rural" if rng.random() < 0.7 else "urban"
    f: Facts = {
        "household_id": f"HY-2023-{i:05d}",
        "jurisdiction_code": "340321",
        "area_type": area,
        "region": "north",
        "members": members,
        "rigid_expenditure": {
            "medical": _money(rng.lognormvariate(4.5, 1.2)),
            "education": "0" if not any(m.get("schooling") for m in members)
            else _money(rng.lognormvariate(4.0, 0.6)),
        },
        "assets": _assets(rng, wealth),
        "monitoring_categories": [],
        "current_benefits": _benefits(rng),
    }
    if any(m["disability_grade"] for m in members) and rng.random() < 0.5:
        f["rigid_expenditure"]["disability_rehabilitation"] = _money(rng.lognormvariate(4.0, 0.5))
    return f


def _low_income(rng: random.Random, i: int) -> Facts:
    members = _family(rng, rng.randint(1, 6), earner=rng.uniform(300, 1400), fragile=0.2)
    f = _base(rng, i, members, wealth=0.6)
    if rng.random() < 0.3:
        f["monitoring_categories"] = [rng.choice(["unstable_ex_poor", "marginal_at_risk"])]
    return f


def _near_dibao(rng: random.Random, i: int) -> Facts:
    members = _family(rng, rng.randint(2, 6), earner=rng.uniform(900, 2200), fragile=0.25)
    f = _base(rng, i, members, wealth=0.8)
    f["current_benefits"] = _benefits(rng, marginal=rng.random() < 0.5)
    f["monitoring_categories"] = ["marginal_at_risk"] if rng.random() < 0.5 else []
    return f


def _exiting_recipient(rng: random.Random, i: int) -> Facts:
    members = _family(rng, rng.randint(2, 5), earner=rng.uniform(1200, 3000), fragile=0.15)
    f = _base(rng, i, members, wealth=0.7)
    b = _benefits(rng, dibao=True)
    b["months_since_income_exceeded"] = rng.randint(0, 9)
    b["income_rose_from_employment"] = rng.random() < 0.75
    f["current_benefits"] = b
    return f


def _lone_elderly(rng: random.Random, i: int) -> Facts:
    """An old or severely disabled person (or couple) without an able supporter: 特困 candidates."""
    n = 1 if rng.random() < 0.7 else 2
    members = [_member(rng, f"m{k + 1}", "head" if k == 0 else "spouse", (58, 92),
                       fragile=0.6, supported=rng.random() < 0.2) for k in range(n)]
    for m in members:
        if rng.random() < 0.2:
            m["lives_in_institution"] = True
        else:
            m["tekun_care_agreement_signed"] = rng.random() < 0.7
    f = _base(rng, i, members, wealth=0.3)
    f["current_benefits"] = _benefits(rng, tekun=rng.random() < 0.5)
    return f


def _in_hardship(rng: random.Random, i: int) -> Facts:
    kind = "emergency" if rng.random() < 0.5 else "expenditure"
    members = _family(rng, rng.randint(1, 6), earner=rng.uniform(600, 2500), fragile=0.2)
    f = _base(rng, i, members, wealth=0.7)
    f["hardship"] = _hardship(rng, kind, len(members))
    if kind == "expenditure":
        f["rigid_expenditure"]["medical"] = _money(rng.lognormvariate(6.5, 0.6))
    return f


def _better_off(rng: random.Random, i: int) -> Facts:
    members = _family(rng, rng.randint(1, 6), earner=rng.uniform(2500, 7000), fragile=0.05)
    return _base(rng, i, members, wealth=3.0)


PROFILES: list[tuple[float, Callable[[random.Random, int], Facts]]] = [
    (0.25, _low_income),
    (0.20, _near_dibao),
    (0.12, _exiting_recipient),
    (0.13, _lone_elderly),
    (0.15, _in_hardship),
    (0.15, _better_off),
]

#: facts an applicant sometimes leaves out (one of them, in `missing_rate` of households)
_SOMETIMES_MISSING = [
    ("assets", "deposits"), ("assets", "vehicle_count"), ("members", 0, "birth_date"),
    ("members", 0, "income", "wages"), ("members", 0, "adl_failed"),
]


def anhui_household(rng: random.Random, i: int, missing_rate: float = 0.05) -> Facts:
    r = rng.random()
    for weight, make in PROFILES:
        if r < weight:
            break
        r -= weight
    f = make(rng, i)
    if rng.random() < missing_rate:
        *parents, last = rng.choice(_SOMETIMES_MISSING)
        node: Any = f
        for p in parents:
            node = node[p]
        node.pop(last, None)
    return f


def anhui_households(n: int, seed: int = 20261123, missing_rate: float = 0.05) -> list[Facts]:
    rng = random.Random(seed)
    return [anhui_household(rng, i, missing_rate) for i in range(n)]


def check(households: list[Facts]) -> None:
    """Validate against the published facts model (raises on the first invalid household)."""
    from policy_engine.facts import Household

    for f in households:
        Household.model_validate(f)


def outcome_mix(engine: Any, households: list[Facts], as_of: str = "2023-07-01") -> dict[str, dict[str, int]]:
    """For each decision: how many households got each (status, main output) pair."""
    from collections import Counter

    mix: dict[str, Counter[str]] = {}
    for f in households:
        d = engine.decide(f, as_of=as_of, trace=False)
        for did, o in d.items():
            key = o.status
            if o.status == "decided":
                for out in ("eligible", "applies", "required"):
                    if out in o.outputs:
                        key = f"{out}={o.outputs[out]}"
                        break
            mix.setdefault(did, Counter())[key] += 1
    return {k: dict(sorted(v.items())) for k, v in mix.items()}


if __name__ == "__main__":
    import json
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "src"))
    import policy_engine as pe

    print(json.dumps(shared_households(1)[0], ensure_ascii=False))
    hh = anhui_households(1000)
    check(hh)
    print("1000 Huaiyuan households valid against policy_engine.facts.Household; outcome mix:")
    engine = pe.load(root / "policies/anhui/bengbu/huaiyuan")
    for did, counts in outcome_mix(engine, hh).items():
        print(f"  {did}: {counts}")
    shared = pe.load(root / "benchmarks/policies/shared_dibao")
    print(f"  shared rule dibao: {outcome_mix(shared, shared_households(1000))['dibao']}")
