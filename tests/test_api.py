"""The public API is small and frozen; facts are validated; the library never reads the clock."""

from __future__ import annotations

import datetime as dt
import json
import re
from decimal import Decimal
from pathlib import Path

import pytest

import policy_engine as pe
from policy_engine import schemas
from policy_engine.facts import Household, Member

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "policies" / "dibao_small"


def test_exported_members_are_frozen() -> None:
    assert sorted(pe.__all__) == [
        "Decision", "Diagnostic", "Engine", "FactsError", "Outcome", "PolicyEngineError", "PolicyError",
        "__version__", "load",
    ]
    for name in pe.__all__:
        assert hasattr(pe, name)
    assert issubclass(pe.PolicyError, pe.PolicyEngineError) and issubclass(pe.FactsError, pe.PolicyEngineError)


def test_facts_errors_list_every_bad_field_with_its_path() -> None:
    engine = pe.load(FIXTURE)
    facts = {"area_type": "suburban", "assets": {"deposits": "lots"},
             "members": [{"income": {"wages": -5}}, {"income": {"wages": True}}]}
    with pytest.raises(pe.FactsError) as caught:
        engine.decide(facts, as_of="2023-07-01")
    assert sorted(caught.value.paths) == ["area_type", "assets.deposits", "members[0].income.wages",
                                          "members[1].income.wages"]
    assert {d.code for d in caught.value.diagnostics} == {"PE401"}


@pytest.mark.parametrize("group", [5, "5", [1, 2], True])
def test_a_group_of_facts_given_as_a_value_is_an_error_not_an_unknown(group: object) -> None:
    """``"assets": 5`` would otherwise read as "deposits not given": said once per group, with its path."""
    engine = pe.load(FIXTURE)
    facts = {"area_type": "urban", "assets": group, "members": [{"income": group}, {"income": None}]}
    with pytest.raises(pe.FactsError) as caught:
        engine.decide(facts, as_of="2023-07-01")
    assert sorted(caught.value.paths) == ["assets", "members[0].income"]
    assert all("expected a mapping of facts" in d.message and d.hint for d in caught.value.diagnostics)
    facts["assets"], facts["members"] = None, [{"income": None}]  # null is "not given", as for any fact
    assert engine.decide(facts, as_of="2023-07-01")["dibao"].status == "needs_information"


def test_as_of_must_be_a_date() -> None:
    engine = pe.load(FIXTURE)
    for bad in ("2023-02-30", dt.datetime(2023, 7, 1, 12, 0), 20230701):
        with pytest.raises(pe.FactsError) as caught:
            engine.decide({}, as_of=bad)  # type: ignore[arg-type]
        assert caught.value.diagnostics[0].code == "PE402"


def test_pydantic_facts_and_dicts_give_the_same_decision() -> None:
    engine = pe.load(FIXTURE)
    model = Household(area_type="urban", assets={"deposits": 1000},
                      members=[Member(member_id="a", income={"wages": 820.5})])
    as_dict = {"area_type": "urban", "assets": {"deposits": 1000}, "members": [{"income": {"wages": "820.5"}}]}
    a = engine.decide(model, as_of="2023-07-01")
    b = engine.decide(as_dict, as_of="2023-07-01")
    assert a["dibao"].outputs == b["dibao"].outputs
    assert a["dibao"].amount == Decimal("82.60")  # 739 - (820.5 - 164.1) = 82.60, exactly


def test_facts_a_decision_does_not_need_are_not_demanded() -> None:
    engine = pe.load(FIXTURE)
    # income alone fails the first row of an F table: deposits are not needed
    d = engine.decide({"area_type": "urban", "members": [{"income": {"wages": 2000}}]}, as_of="2023-07-01")
    assert d.status == "decided" and d["dibao"].eligible is False


def test_unknown_decision_and_output_names_are_helpful() -> None:
    d = pe.load(FIXTURE).decide({"area_type": "urban", "members": []}, as_of="2023-07-01")
    with pytest.raises(KeyError, match="did you mean `dibao`"):
        d["diabo"]
    with pytest.raises(AttributeError, match="outputs: eligible, amount"):
        _ = d["dibao"].amout


def test_before_the_first_parameter_value_the_decision_is_not_in_force() -> None:
    d = pe.load(FIXTURE).decide({"area_type": "urban", "assets": {"deposits": 0},
                                 "members": [{"income": {"wages": 0}}]}, as_of="2022-03-01")
    assert d["dibao"].status == "not_in_force"
    assert "dibao_standard" in (d["dibao"].reason or "")


def test_the_library_never_reads_the_wall_clock() -> None:
    pattern = re.compile(r"\b(datetime\.now|datetime\.today|date\.today|time\.time\(|time\.localtime)")
    offenders = [f"{p}:{i}" for p in (ROOT / "src").rglob("*.py")
                 for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]
    assert offenders == []


def test_no_eval_or_exec_and_only_safe_yaml_in_the_library() -> None:
    pattern = re.compile(r"(^|[^_.\w])(eval|exec)\(|yaml\.(load|unsafe_load|full_load)\(")
    offenders = [f"{p}:{i}" for p in (ROOT / "src").rglob("*.py")
                 for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]
    assert offenders == []


def test_published_schemas_are_current() -> None:
    for name, schema in schemas.generated().items():
        checked_in = ROOT / "src" / "policy_engine" / "schemas" / name
        assert checked_in.read_text(encoding="utf-8") == schemas.text(schema), \
            f"{name} is stale: run python -m policy_engine.schemas"
    json.loads((ROOT / "src" / "policy_engine" / "schemas" / "decision.schema.json").read_text(encoding="utf-8"))


def test_one_engine_shared_by_threads_decides_as_it_does_alone() -> None:
    """``Engine`` is documented as safe to share between threads (``screen --workers`` shares
    one): threads deciding at once, over more dates than the engine keeps per parameter (1,024,
    so its caches are cleared while other threads read them), give the decisions of one thread."""
    from concurrent.futures import ThreadPoolExecutor

    from policy_engine.population import synth_households

    engine = pe.load(ROOT / "policies" / "anhui")
    households = list(synth_households(8, "anhui", seed=4))
    days = [dt.date(2021, 1, 1) + dt.timedelta(days=k) for k in range(1300)]
    cases = [(households[k % len(households)], day, k % 3 == 0) for k, day in enumerate(days)]

    def decide(case: tuple[dict[str, object], dt.date, bool]) -> dict[str, object]:
        facts, day, trace = case
        decision = engine.decide(facts, day, trace=trace)
        return decision.to_dict() if trace else {d: (o.status, o.outputs) for d, o in decision.items()}

    alone = [decide(case) for case in cases]
    with ThreadPoolExecutor(max_workers=4) as pool:
        together = list(pool.map(decide, cases))
    assert together == alone
    # each record is its own case's (as_of), and the households do not all come out alike
    assert [a["as_of"] for a, (_, _, trace) in zip(together, cases) if trace] == [
        day.isoformat() for _, day, trace in cases if trace]
    assert len({repr(a) for a, (_, _, trace) in zip(alone, cases) if not trace}) > 1


def test_a_trace_recorded_later_is_that_of_the_decision_made() -> None:
    """``trace=False`` records the trace when it is first read: of the decisions that were
    asked for, on the facts as they were read (found by review: it re-ran every decision of the
    entity, on the caller's dict as changed since)."""
    import copy

    import yaml

    engine = pe.load(ROOT / "policies" / "anhui" / "bengbu" / "huaiyuan")
    facts = yaml.safe_load((ROOT / "examples" / "anhui_household.yaml").read_text(encoding="utf-8"))
    for decisions in (["dibao"], ["tekun", "dibao"], None):
        traced = engine.decide(copy.deepcopy(facts), "2023-07-01", decisions=decisions, trace=True)
        given = copy.deepcopy(facts)
        later = engine.decide(given, "2023-07-01", decisions=decisions, trace=False)
        given["members"][0]["income"]["wages"] = "99999"  # the caller reuses its dict
        given["assets"].clear()
        assert later.to_dict() == traced.to_dict()
        assert later.explain("zh", "full") == traced.explain("zh", "full")
        tables = {e[1] for e in later.events if e[0] == "fired"}
        assert tables <= set(later) | {d.name for d in engine.policy.derived}


def test_a_member_entity_decision_reads_the_members_own_facts() -> None:
    """``entity="member"``: the facts are one member's (``income.wages``, as under ``members[i]``
    of a household). Found by review: such a decision was ``needs_information`` (missing
    ``members``) whatever the facts."""
    from policy_engine.vector import decide_batch
    from tests.helpers import engine_for

    engine = engine_for({
        "inputs": {"wages": {"entity": "member", "path": "income.wages", "type": "money",
                             "label": {"zh": "工资", "en": "wages"}}},
        "decisions": {"low": {"entity": "member", "label": {"zh": "低收入", "en": "low income"}, "cite": "s 一",
                              "type": "boolean", "value": "wages < 500"}}})
    cases = [{"income": {"wages": "100"}}, {"income": {"wages": "900"}}, {}]
    for trace in (False, True):
        got = [engine.decide(c, "2023-07-01", entity="member", trace=trace)["low"] for c in cases]
        assert [(o.status, o.outputs.get("value")) for o in got][:2] == [("decided", True), ("decided", False)]
        assert got[2].status == "needs_information" and got[2].missing == ("income.wages",)
    decision = engine.decide(cases[0], "2023-07-01", entity="member")
    assert "工资" in decision.explain("zh", "full") and "100.00" in decision.explain("zh", "full")
    batch = decide_batch(engine, cases, "2023-07-01", entity="member")
    assert batch["low.value"].to_list() == [True, False, None]
