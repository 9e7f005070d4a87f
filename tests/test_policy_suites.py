"""Every YAML test household under policies/ and benchmarks/policies/ passes (the same suites
`policy-engine test` runs)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest

from policy_engine.testing import CaseResult, find_suites, run_suite

ROOT = Path(__file__).resolve().parent.parent
POLICIES = ROOT / "policies"
#: the benchmark rules' hand-computed cases: the benchmarks time these packages
BENCHMARK_POLICIES = ROOT / "benchmarks" / "policies"


@cache
def _results(suite: str) -> tuple[CaseResult, ...]:
    return tuple(run_suite(Path(suite)))


def _cases() -> list[tuple[str, int]]:
    out = []
    for suite in find_suites([POLICIES, BENCHMARK_POLICIES]):
        for i, _ in enumerate(_results(str(suite))):
            out.append((str(suite), i))
    return out


CASES = _cases()


@pytest.mark.parametrize(
    ("suite", "index"), CASES, ids=[f"{Path(s).relative_to(ROOT)}#{i}" for s, i in CASES]
)
def test_policy_case(suite: str, index: int) -> None:
    result = _results(suite)[index]
    if result.result == "SKIP":
        pytest.skip(f"{result.location} {result.name}: todo: {'; '.join(result.messages)}")
    assert result.result == "PASS", (
        f"{result.location} {result.name}: {result.result}\n" + "\n".join(result.messages)
        + ("\n" + result.explanation if result.explanation else "")
    )


def test_every_policy_test_names_the_clause_it_checks() -> None:
    import yaml

    missing = []
    for suite in find_suites([POLICIES]):
        data = yaml.safe_load(suite.read_text(encoding="utf-8"))
        cases = data["tests"] if isinstance(data, dict) else data
        missing += [f"{suite.relative_to(POLICIES)}: {case['name']}" for case in cases if not case.get("cites")]
    assert missing == []


def test_each_province_has_enough_test_households() -> None:
    counts: dict[str, int] = {}
    for suite in find_suites([POLICIES]):
        province = suite.relative_to(POLICIES).parts[0]
        counts[province] = counts.get(province, 0) + len(_results(str(suite)))
    for province in ("anhui", "hebei", "hunan", "shaanxi"):
        assert counts.get(province, 0) >= 25, counts
    assert sum(counts.values()) >= 120
