"""Every YAML test household under policies/ passes (the same suites `policy-engine test` runs)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pytest

from policy_engine.testing import CaseResult, find_suites, run_suite

POLICIES = Path(__file__).resolve().parent.parent / "policies"


@lru_cache(maxsize=None)
def _results(suite: str) -> tuple[CaseResult, ...]:
    return tuple(run_suite(Path(suite)))


def _cases() -> list[tuple[str, int]]:
    out = []
    for suite in find_suites([POLICIES]):
        for i, _ in enumerate(_results(str(suite))):
            out.append((str(suite), i))
    return out


CASES = _cases()


@pytest.mark.parametrize(
    ("suite", "index"), CASES, ids=[f"{Path(s).relative_to(POLICIES)}#{i}" for s, i in CASES]
)
def test_policy_case(suite: str, index: int) -> None:
    result = _results(suite)[index]
    if result.result == "SKIP":
        pytest.skip(f"{result.location} {result.name}: todo: {'; '.join(result.messages)}")
    assert result.result == "PASS", (
        f"{result.location} {result.name}: {result.result}\n" + "\n".join(result.messages)
        + ("\n" + result.explanation if result.explanation else "")
    )
