"""The two evaluators agree on random policies: ``decide_batch`` (polars) equals ``decide`` (the
scalar reference) on every status, output and fired row, over small random policy packages
(`random_policies`) and random households, including missing facts and extreme values.

The one difference allowed is the documented one (docs/population.md): a result that no
``Decimal(38, s)`` column can hold exactly is that row's error on the batch path."""

from __future__ import annotations

import random
from typing import Any

import pytest

from policy_engine.diagnostics import FactsError, PolicyEngineError, PolicyError
from policy_engine.vector import decide_batch
from tests import random_policies as rp
from tests.helpers import MANIFEST, engine_for, same_value

SEEDS = range(120)  # 120 policies: each of the eleven hit policies in 12 to 22 tables
CASES = 25


@pytest.mark.parametrize("seed", SEEDS)
def test_the_batch_path_equals_the_scalar_path_on_a_random_policy(seed: int) -> None:
    module = rp.make_policy(seed)
    rounding = module.pop("_rounding", None)
    engine = engine_for(module, {**MANIFEST, "rounding": rounding} if rounding else None)
    r = random.Random(seed * 7919 + 1)
    as_of = r.choice(rp.AS_OFS)
    missing = r.choice([0.0, 0.05, 0.2])
    cases = [rp.make_facts(r, missing) for _ in range(CASES)]
    rows = _batch(engine, cases, as_of)
    for i, facts in enumerate(cases):
        try:
            decision = engine.decide(facts, as_of)
        except (FactsError, PolicyError) as exc:  # decide refuses it: the batch refuses it too
            assert isinstance(rows[i], (FactsError, PolicyError)), (seed, i, str(exc))
            assert [d.code for d in rows[i].diagnostics] == [d.code for d in exc.diagnostics], (seed, i)
            continue
        row = rows[i]
        if isinstance(row, FactsError):
            assert "more digits than a batch column holds" in str(row), (seed, i, str(row))
            continue
        assert isinstance(row, dict), (seed, i, row)
        for did, outcome in decision.items():
            assert row[f"{did}.status"] == outcome.status, (seed, i, did)
            assert tuple(row[f"{did}.fired_rows"] or ()) == tuple(outcome.fired_rows), (seed, i, did)
            for name, want in outcome.outputs.items():
                assert same_value(row[f"{did}.{name}"], want), (seed, i, did, name, row[f"{did}.{name}"], want)


def _batch(engine: Any, cases: list[dict[str, Any]], as_of: str) -> list[Any]:
    """Each case's batch row (a dict), or the error the batch path gave it (FactsError, or
    PolicyError for a case the policy cannot decide: a U or A table violated)."""
    errors: list[tuple[int, PolicyEngineError]] = []
    table = decide_batch(engine, cases, as_of, errors=errors)
    refused = dict(errors)
    return [refused.get(i) or table.row(i, named=True) for i in range(len(cases))]


def test_a_row_sent_back_for_another_decision_keeps_its_values() -> None:
    """Seed 214 with 200 households: rows sent to the scalar path for one decision keep the batch
    values of another, whose column the scalar values then widened to 38 places, beyond what
    those kept values allow (the cast failed: InvalidOperationError). The column now widens only
    as far as every value kept still fits."""
    global CASES
    saved, CASES = CASES, 200
    try:
        test_the_batch_path_equals_the_scalar_path_on_a_random_policy(214)
    finally:
        CASES = saved
