"""The compiled kernel (``kernel.py``) decides as the scalar path does.

``decide_batch`` hands a large batch to the kernel (``kernel.MIN_ROWS`` households or more);
here every batch goes to it, so that small random batches test it against ``Engine.decide``:
shipped policies with households near their thresholds, random policies of every construct
the kernel writes, values that trip its guards, and malformed values it must report."""

from __future__ import annotations

import random
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import policy_engine as pe
from policy_engine import kernel
from policy_engine.diagnostics import FactsError
from policy_engine.vector import Split, decide_batch, facts_to_population
from tests import random_policies as rp
from tests.helpers import MANIFEST, engine_for, same_value
from tests.test_differential import _batch
from tests.test_vector import HUAIYUAN, SMALL, assert_equal, household

ROOT = Path(__file__).parent.parent
SHARED = pe.load(ROOT / "benchmarks" / "policies" / "shared_dibao")


@pytest.fixture(scope="session")
def kernel_cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One cache of compiled kernels for the session (each source is compiled once)."""
    return str(tmp_path_factory.mktemp("kernels"))


@pytest.fixture(autouse=True)
def every_batch_compiled(monkeypatch: pytest.MonkeyPatch, kernel_cache: str) -> None:
    monkeypatch.setattr(kernel, "MIN_ROWS", 0)
    monkeypatch.setenv("POLICY_ENGINE_CACHE", kernel_cache)


@pytest.fixture
def compiled(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How many batches the kernel decided each decision of (a test that expects the kernel at
    work checks it was)."""
    seen: dict[str, int] = {}
    original = kernel.decide

    def spy(*args: Any, **kwargs: Any) -> Any:
        frames = original(*args, **kwargs)
        for did in frames:
            seen[did] = seen.get(did, 0) + 1
        return frames
    monkeypatch.setattr(kernel, "decide", spy)
    return seen


def test_the_shared_rule_and_a_small_policy_are_decided_by_the_kernel(compiled: dict[str, int]) -> None:
    r = random.Random(5)
    assert_equal(SMALL, [household(SMALL, "2023-07-01", r) for _ in range(400)], "2023-07-01")
    assert compiled.get("dibao") == 1
    facts = [_shared(r) for _ in range(400)]
    assert_equal(SHARED, facts, "2023-07-01")
    assert compiled["dibao"] == 2


def test_huaiyuan_is_decided_by_the_kernel(compiled: dict[str, int]) -> None:
    """Every household decision of Huaiyuan (enums, dates, keyed parameters, member lists,
    hit policies F and U): the same statuses, outputs and fired rows as ``decide``."""
    r = random.Random(11)
    facts = [household(HUAIYUAN, "2024-07-01", r, p_missing=0.03) for _ in range(500)]
    assert_equal(HUAIYUAN, facts, "2024-07-01")
    assert set(compiled) == set(HUAIYUAN.decision_ids("household"))


@pytest.mark.parametrize("seed", range(24))
def test_random_policies(seed: int, compiled: dict[str, int]) -> None:
    """Random policies (every hit policy, operator, function, aggregate, keyed parameter,
    rounding mode...): the decisions the kernel writes, and those it leaves to the polars plan,
    equal the scalar path on 60 random households."""
    module = rp.make_policy(seed)
    rounding = module.pop("_rounding", None)
    engine = engine_for(module, {**MANIFEST, "rounding": rounding} if rounding else None)
    r = random.Random(seed * 7919 + 1)
    as_of = r.choice(rp.AS_OFS)
    cases = [rp.make_facts(r, r.choice([0.0, 0.05, 0.2])) for _ in range(60)]
    rows = _batch(engine, cases, as_of)
    for i, facts in enumerate(cases):
        try:
            decision = engine.decide(facts, as_of)
        except (FactsError, pe.PolicyError) as exc:
            assert isinstance(rows[i], (FactsError, pe.PolicyError)), (seed, i, str(exc))
            continue
        row = rows[i]
        if isinstance(row, FactsError):
            assert "more digits than a batch column holds" in str(row), (seed, i, str(row))
            continue
        for did, outcome in decision.items():
            assert row[f"{did}.status"] == outcome.status, (seed, i, did)
            assert tuple(row[f"{did}.fired_rows"] or ()) == tuple(outcome.fired_rows), (seed, i, did)
            for name, want in outcome.outputs.items():
                assert same_value(row[f"{did}.{name}"], want), (seed, i, did, name, row[f"{did}.{name}"], want)


def test_random_policies_exercise_the_kernel(compiled: dict[str, int]) -> None:
    """The random policies above are not all left to the polars plan: most seeds have a
    decision the kernel writes."""
    written = 0
    for seed in range(24):
        module = rp.make_policy(seed)
        rounding = module.pop("_rounding", None)
        engine = engine_for(module, {**MANIFEST, "rounding": rounding} if rounding else None)
        before = sum(compiled.values())
        r = random.Random(seed)
        decide_batch(engine, [rp.make_facts(r, 0.0) for _ in range(3)], r.choice(rp.AS_OFS), errors=[])
        written += sum(compiled.values()) > before
    assert written >= 8


def _shared(r: random.Random) -> dict[str, Any]:
    """A household of the shared rule near its thresholds (700 a head; deposits 24 × 700 a head)."""
    size = r.randint(0, 6)
    target = Decimal(700 * size + r.randint(-300, 300)) + Decimal(r.randint(0, 99)) / 100
    members = []
    for k in range(size):
        wages = max(Decimal(0), target / size + Decimal(r.randint(-50, 50)) / 100) if k == 0 or r.random() < 0.5 \
            else Decimal(0)
        member: dict[str, Any] = {"income": {"wages": wages.quantize(Decimal("0.01"))}}
        if r.random() < 0.5:
            member["income"]["other_counted"] = Decimal(r.randint(0, 30000)) / 100
        if r.random() < 0.03:
            del member["income"]["wages"]  # not given: needs information
        members.append(member)
    facts: dict[str, Any] = {"assets": {"deposits": Decimal(max(0, 24 * 700 * size + r.randint(-200, 200)))}}
    if r.random() < 0.97:
        facts["members"] = members
    return facts


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32))
def test_the_shared_rule_near_its_thresholds(seed: int, compiled: dict[str, int]) -> None:
    r = random.Random(seed)
    assert_equal(SHARED, [_shared(r) for _ in range(30)], "2023-07-01")
    assert compiled.get("dibao")


def _split(facts: list[dict[str, Any]]) -> Split:
    """The shared rule's households in the two-table layout (money as Decimal(38, 2), a fact
    not given as null), unchecked: as a caller hands them to ``decide_batch``."""
    money = pl.Decimal(38, 2)
    members = [(h, m) for h, f in enumerate(facts) for m in f.get("members", [])]
    households = pl.DataFrame({
        "deposits": pl.Series([f.get("assets", {}).get("deposits") for f in facts], dtype=money),
        "members": pl.Series([True if "members" in f else None for f in facts], dtype=pl.Boolean)})
    table = pl.DataFrame({
        "_hh": pl.Series([h for h, _ in members], dtype=pl.Int64),
        "wages": pl.Series([m.get("income", {}).get("wages") for _, m in members], dtype=money),
        "other_income": pl.Series([m.get("income", {}).get("other_counted") for _, m in members], dtype=money)})
    sizes = pl.Series("members", [len(f.get("members", [])) for f in facts], dtype=pl.Int64)
    return Split(households, table, len(facts), checked=False, sizes=sizes)


def test_values_beyond_64_bits_go_to_the_scalar_path(compiled: dict[str, int]) -> None:
    """A deposit of 10^17 yuan (10^19 fen: beyond int64) and wages whose deduction would
    overflow are decided by the scalar path, exactly; the other rows by the kernel."""
    r = random.Random(3)
    facts = [_shared(r) for _ in range(20)]
    facts[3] = {"assets": {"deposits": Decimal(10) ** 17}, "members": [{"income": {"wages": Decimal(5)}}]}
    facts[7] = {"assets": {"deposits": Decimal(1)},
                "members": [{"income": {"wages": Decimal("46116860184273879.03")}}]}
    result = assert_equal(SHARED, facts, "2023-07-01")
    assert compiled.get("dibao")
    assert result["_fallback"].arg_true().to_list() == [3, 7]


def test_a_value_decide_refuses_is_reported_with_its_row(compiled: dict[str, int]) -> None:
    """An unchecked two-table population with a negative wage: the same error as the polars
    plan gives (the kernel reads the column as given, and sends it back to be checked)."""
    good = {"assets": {"deposits": Decimal(100)}, "members": [{"income": {"wages": Decimal(100)}}]}
    bad = _split([good, {"assets": {"deposits": Decimal(100)}, "members": [{"income": {"wages": Decimal(-5)}}]}])
    with pytest.raises(FactsError) as info:
        decide_batch(SHARED, bad, "2023-07-01")
    kernel_error = [d.path for d in info.value.diagnostics]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(kernel, "MIN_ROWS", 10**9)
        with pytest.raises(FactsError) as plain:
            decide_batch(SHARED, bad, "2023-07-01")
    assert kernel_error == [d.path for d in plain.value.diagnostics] == ["[1].members[0].income.wages"]


@pytest.fixture
def sources(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The kernel sources compiled (or loaded) by the test, in order."""
    seen: list[str] = []
    original = kernel.compile_source

    def spy(source: str) -> Any:
        seen.append(source)
        return original(source)
    monkeypatch.setattr(kernel, "compile_source", spy)
    return seen


@pytest.mark.parametrize("complete_first", [True, False])
def test_at_most_two_kernels_serve_chunks_with_and_without_missing_facts(sources: list[str],
                                                                         complete_first: bool) -> None:
    """The first batch of a layout fixes the columns its kernel takes as having no nulls; a
    batch with a null in one of them takes the kernel written for none: at most two kernels,
    in any order of batches, each deciding as ``decide`` does."""
    kernel._NULL_FREE.clear()
    r = random.Random(8)
    complete = [_shared(r) for _ in range(40)]
    for k, f in enumerate(complete):  # every fact given
        f["members"] = [{"income": {"wages": Decimal(300 * k), "other_counted": Decimal(2)}}] * (1 + k % 3)
        f["assets"] = {"deposits": Decimal(5)}
    gaps = [dict(f, members=[{"income": {}}]) for f in complete]
    batches = [complete, gaps] * 2 if complete_first else [gaps, complete] * 2
    for facts in batches:
        got = decide_batch(SHARED, _split(facts), "2023-07-01")
        assert got["dibao.status"].to_list() == [SHARED.decide(f, "2023-07-01")["dibao"].status for f in facts]
    assert len(sources) == 4 and sources[0] == sources[2] and sources[1] == sources[3]
    # complete first: its kernel reads no states; then the one for none reads them all. Gaps
    # first (deposits given, member incomes not): its kernel, which reads the members' states,
    # serves the complete batches too
    assert (sources[0] != sources[1]) == complete_first
    assert "s_h0" not in sources[0] and ("s_m1" in sources[0]) != complete_first
    assert "s_h0" in sources[1] if complete_first else sources[1] == sources[0]


def test_threads_decide_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    r = random.Random(9)
    facts = [household(HUAIYUAN, "2024-07-01", r) for _ in range(120)]
    one = decide_batch(HUAIYUAN, facts, "2024-07-01")
    monkeypatch.setattr(kernel, "PART_ROWS", 7)  # households in parts of 7 or more, one a thread
    monkeypatch.setattr(kernel, "threads", lambda: 4)
    assert decide_batch(HUAIYUAN, facts, "2024-07-01").equals(one)


def test_what_the_kernel_cannot_write_is_left_to_the_polars_plan(compiled: dict[str, int]) -> None:
    """A rule hit policy (R: a list of every matched row's output) is not written by the
    kernel; its decision is decided by the polars plan, the other one by the kernel."""
    module = {
        "inputs": {"x": {"path": "x", "type": "integer", "label": {"zh": "x", "en": "x"}}},
        "decisions": {
            "listed": {"label": {"zh": "l", "en": "l"}, "cite": "s §1",
                       "outputs": {"o": {"type": "list", "label": {"zh": "o", "en": "o"}}},
                       "table": {"hit": "R", "inputs": ["x"], "outputs": ["o"],
                                 "rows": [{"id": "a", "when": ["> 1"], "then": ['"big"'], "cite": "s §1"},
                                          {"id": "b", "when": ["> 2"], "then": ['"bigger"'], "cite": "s §1"}]}},
            "plain": {"label": {"zh": "p", "en": "p"}, "cite": "s §1", "type": "integer", "value": "x * 2"},
        },
    }
    engine = engine_for(module)
    facts = [{"x": k} for k in range(5)] + [{}]
    rows = decide_batch(engine, facts, "2023-01-01").to_dicts()
    assert set(compiled) == {"plain"}
    for row, case in zip(rows, facts):
        decision = engine.decide(case, "2023-01-01")
        for did, short in (("listed", "o"), ("plain", "value")):
            assert row[f"{did}.status"] == decision[did].status
            assert same_value(row[f"{did}.{short}"], decision[did].outputs[short])


def _raised_both_ways(population: Split, error: type[Any]) -> list[Any]:
    """The ``error`` decide_batch raises on the shared rule with the kernel, then without it."""
    raised = []
    for rows in (0, 10**9):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(kernel, "MIN_ROWS", rows)
            with pytest.raises(error) as info:
                decide_batch(SHARED, population, "2023-07-01")
        raised.append(info.value)
    return raised


def test_members_given_to_the_wrong_household_are_refused_as_before(compiled: dict[str, int]) -> None:
    """The kernel checks each member's `_hh` against the household sizes as it reads the
    members; a table that does not match gets the error the polars plan gives."""
    good = {"assets": {"deposits": Decimal(100)}, "members": [{"income": {"wages": Decimal(100)}}]}
    right = _split([good, {**good, "members": good["members"] * 2}, good])
    assert decide_batch(SHARED, right, "2023-07-01").height == 3 and compiled.get("dibao") == 1
    wrong = Split(right.households, right.members.with_columns(_hh=pl.Series([0, 0, 1, 2], dtype=pl.Int64)),
                  3, checked=False, sizes=right.sizes)
    messages = [str(exc) for exc in _raised_both_ways(wrong, ValueError)]
    assert messages[0] == messages[1] and "Split.sizes does not match" in messages[0]


def test_one_compiled_function_serves_columns_copied_or_not(monkeypatch: pytest.MonkeyPatch) -> None:
    """A column polars hands over without a copy is a read-only array, one it fills (nulls) a
    writable copy: numba would compile the kernel again for each (half a minute for Huaiyuan,
    in the middle of a screen). Every input is passed read-only: one signature."""
    r = random.Random(12)
    complete = [_shared(r) for _ in range(30)]
    for f in complete:
        f["members"] = [{"income": {"wages": Decimal(1), "other_counted": Decimal(2)}}] + f.get("members", [])
        f["assets"] = {"deposits": Decimal(5)}
    decide_batch(SHARED, _split(complete), "2023-07-01")
    gaps = [dict(f, members=[{"income": {}}], assets={}) for f in complete]
    decide_batch(SHARED, _split(gaps), "2023-07-01")
    functions = [f for f in kernel._KERNELS.values() if hasattr(f, "signatures")]
    assert functions and all(len(f.signatures) == 1 for f in functions)


def test_one_kernel_serves_every_date_with_the_same_rules(sources: list[str]) -> None:
    """The date is an argument of the kernel, not part of its source: two dates with the same
    parameter values and rows in force share one compiled kernel, and ages are counted on each
    date (Huaiyuan reads members' ages)."""
    r = random.Random(13)
    facts = [household(HUAIYUAN, "2024-07-01", r) for _ in range(150)]
    for day in ("2024-07-01", "2024-11-30"):
        assert_equal(HUAIYUAN, facts, day)
    assert len(sources) == 2 and sources[0] == sources[1]


def test_every_refused_value_is_reported_as_without_the_kernel() -> None:
    """Refused values in columns the kernel reads (member wages) and in those it leaves to the
    polars plan's intake (a text household column), and an amount beyond 10^20 fen: the same
    errors, in the same order, with the kernel and without it."""
    facts = [{"assets": {"deposits": Decimal(100)}, "members": [{"income": {"wages": Decimal(100)}}]}] * 3
    split = _split(facts)
    members = split.members.with_columns(wages=pl.Series([Decimal("-5.00"), Decimal("100.00"),
                                                          Decimal("3000000000000000000.00")], dtype=pl.Decimal(38, 2)))
    households = split.households.with_columns(deposits=pl.Series([Decimal(1), Decimal(-2), Decimal(3)],
                                                                  dtype=pl.Decimal(38, 2)))
    bad = Split(households, members, 3, checked=False, sizes=split.sizes)
    found = [[(d.code, d.path, d.message) for d in exc.diagnostics] for exc in _raised_both_ways(bad, FactsError)]
    assert found[0] == found[1]
    assert [path for _, path, _ in found[0]] == ["[0].members[0].income.wages", "[1].assets.deposits",
                                                 "[2].members[0].income.wages"]


def test_screen_with_the_kernel_equals_decide_and_explain_row(tmp_path: Path, compiled: dict[str, int]) -> None:
    """`screen` of a synthetic Huaiyuan file (read and checked chunk by chunk, two workers), each
    chunk decided by the kernel: sampled rows equal `decide` on the household, and
    `explain_row` replays them."""
    from policy_engine import population as P

    source = tmp_path / "households.parquet"
    P.write_synth(source, 1500, "anhui", seed=5)
    out = tmp_path / "out.parquet"
    result = P.screen(HUAIYUAN, source, out, "2024-07-01", chunk_size=600, workers=2)
    assert result.households == 1500 and not result.errors
    assert set(compiled) == set(HUAIYUAN.decision_ids("household"))
    table = pl.read_parquet(out)
    facts = [f for _, f in P.read_facts(source)]
    for k, i in enumerate(random.Random(4).sample(range(1500), 80)):
        row = table.row(i, named=True)
        decision = (P.replay(HUAIYUAN, source, row["row"], "2024-07-01") if k < 5
                    else HUAIYUAN.decide(facts[row["row"] - 1], "2024-07-01"))
        for did, outcome in decision.items():
            assert row[f"{did}.status"] == outcome.status, (i, did)
            assert row[f"{did}.fired_rows"] == list(outcome.fired_rows), (i, did)
            for name, value in outcome.outputs.items():
                assert same_value(row[f"{did}.{name}"], value), (i, did, name)


def _module(inputs: dict[str, Any], outputs: dict[str, tuple[str, str]], parameters: dict[str, Any] | None = None
            ) -> pe.Engine:
    """A one-decision package: ``outputs`` name -> (type, expression)."""
    label = {"zh": "x", "en": "x"}
    module: dict[str, Any] = {
        "inputs": {name: {"label": label, **spec} for name, spec in inputs.items()},
        "decisions": {"d": {"label": label, "cite": "s §1", "outputs": {
            name: {"type": t, "label": label, "expr": e} for name, (t, e) in outputs.items()}}}}
    if parameters:
        module["parameters"] = {name: {"label": label, "provenance": "illustrative", "note": "x", **spec}
                                for name, spec in parameters.items()}
    return engine_for(module)


def _same(engine: pe.Engine, facts: list[dict[str, Any]], population: Any = None) -> pl.DataFrame:
    """decide_batch (the kernel) equals decide on every case."""
    result = decide_batch(engine, population if population is not None else facts, "2024-07-01")
    for row, case in zip(result.to_dicts(), facts):
        for did, outcome in engine.decide(case, "2024-07-01").items():
            assert row[f"{did}.status"] == outcome.status
            for name, want in outcome.outputs.items():
                assert same_value(row[f"{did}.{name}"], want), (name, row[f"{did}.{name}"], want)
    return result


def test_found_by_review_collect_and_sum_of_one_member_input(compiled: dict[str, int]) -> None:
    """collect(members, k) and sum(members, k): the kernel took k's states twice as arguments
    (a SyntaxError); collected values keep their type (integers, dates, booleans, text)."""
    import datetime as dt

    engine = _module({"k": {"path": "k", "type": "integer", "entity": "member"},
                      "b": {"path": "b", "type": "date", "entity": "member"},
                      "f": {"path": "f", "type": "boolean", "entity": "member"}},
                     {"ks": ("list", "collect(members, k)"), "total": ("integer", "sum(members, k)"),
                      "bs": ("list", "collect(members, b)"), "fs": ("list", "collect(members, f)")})
    facts = [{"members": [{"k": 3, "b": dt.date(2000, 2, 29), "f": True}, {"k": 1, "b": dt.date(1, 1, 1), "f": False}]},
             {"members": []}, {}, {"members": [{"k": 2}]}]
    _same(engine, facts)
    assert compiled.get("d")


def test_found_by_review_the_smallest_int64_and_negated_constants(compiled: dict[str, int]) -> None:
    """-2^63 fen (a valid signed amount) slipped through the guard `abs(v) > 2^62` (abs wraps);
    `-(a negative constant)` was written `--5`."""
    engine = _module({"s": {"path": "transfer_net", "type": "money"}, "a": {"path": "a", "type": "money"}},
                     {"o": ("money", "s + a"), "m": ("money", "s * 2"), "n": ("money", "-k * a")},
                     {"k": {"type": "decimal", "values": {"2020-01-01": "-5"}}})
    low = Decimal(-2**63) / 100
    facts = [{"transfer_net": low, "a": Decimal(1)}, {"transfer_net": Decimal(-5), "a": Decimal(2)}]
    frame = pl.DataFrame({"s": pl.Series([low, Decimal(-5)], dtype=pl.Decimal(38, 2)),
                          "a": pl.Series([Decimal(1), Decimal(2)], dtype=pl.Decimal(38, 2))})
    result = _same(engine, facts, frame)
    assert compiled.get("d") and result["_fallback"].to_list() == [True, False]


def test_found_by_review_a_rounding_divisor_beyond_64_bits_is_not_written(compiled: dict[str, int]) -> None:
    """A product of two 12-place decimals (24 places) rounded to the money unit divides by 10^22:
    not written by the kernel (the polars plan decides it), rather than a divisor beyond int64."""
    engine = _module({"x": {"path": "x", "type": "decimal"}, "y": {"path": "y", "type": "decimal"}},
                     {"o": ("money", "x * y")})
    _same(engine, [{"x": Decimal("1.000000000001"), "y": Decimal("2.000000000003")}, {"x": Decimal("3.5"), "y": Decimal(1)}])
    assert not compiled


def test_found_by_review_a_changed_helper_is_never_loaded_from_an_old_cache(sources: list[str]) -> None:
    """The cache key is the whole file written (the calendar helpers too), not the kernel's own
    source: after an upgrade that changes a helper, the kernel is compiled anew."""
    r = random.Random(21)
    decide_batch(SHARED, [_shared(r) for _ in range(5)], "2023-07-01")
    first = kernel.compile_source(sources[-1])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(kernel, "HELPERS", kernel.HELPERS + "\n# a helper changed\n")
        assert kernel.compile_source(sources[-1]) is not first
    assert kernel.compile_source(sources[-1]) is first


def test_found_by_review_a_rounding_unit_written_1e1_is_left_to_the_polars_plan(compiled: dict[str, int]) -> None:
    """A package rounding to tens written 1E+1 (exponent 1): the kernel writes nothing (it raised in the writer's
    constructor, outside the decision it tried, and the batch failed)."""
    label = {"zh": "x", "en": "x"}
    module = {"inputs": {"a": {"path": "a", "type": "money", "label": label}},
              "decisions": {"d": {"label": label, "cite": "s §1", "outputs": {
                  "o": {"type": "money", "label": label, "expr": "a * 3"}}}}}
    engine = engine_for(module, {**MANIFEST, "rounding": {"unit": "1E+1", "mode": "half_up"}})
    _same(engine, [{"a": Decimal("12.34")}, {"a": Decimal(5)}, {}])
    assert not compiled


def test_threads_compiling_one_kernel_at_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """screen's workers may need the same kernel at the same moment: compiled once, written to
    the cache without the threads' files colliding, and every thread decides alike."""
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setenv("POLICY_ENGINE_CACHE", str(tmp_path))
    monkeypatch.setattr(kernel, "_KERNELS", {})
    r = random.Random(31)
    facts = [_shared(r) for _ in range(50)]
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: decide_batch(SHARED, facts, "2023-01-15"), range(3)))
    assert all(result.equals(results[0]) for result in results)
    assert len(kernel._KERNELS) == 1 and len(list((tmp_path / "kernels").glob("*.py"))) == 1


_TEXTS = st.sampled_from(["", "a", "ab\x00", "abcd", "abcde", "physical", "intellectual", "psychiatric",
                          "abcdefghijkl", "abcdefghijklm", "traffic_accident", "城市", "农村户口", "农村户口 "])


@settings(max_examples=80, deadline=None)
@given(policy_texts=st.lists(_TEXTS, unique=True), values=st.lists(st.one_of(st.none(), _TEXTS, st.text(max_size=20))),
       cut=st.integers(0, 5), categorical=st.booleans(), chunks=st.integers(1, 3))
def test_text_codes_read_from_string_views_equal_a_lookup(policy_texts: list[str], values: list[str | None],
                                                            cut: int, categorical: bool, chunks: int) -> None:
    """A text column's codes read from its Arrow string views (short texts held in the view,
    longer ones compared in its data buffer, or looked up by polars when there are several)
    are those of a plain lookup, on slices, chunked columns and categoricals."""
    codes = {text: k for k, text in enumerate(policy_texts)}
    series = pl.concat([pl.Series(values, dtype=pl.String)] * chunks, rechunk=False).slice(min(cut, len(values)))
    if categorical:
        series = series.cast(pl.Categorical)
    coded = kernel._text_codes(series, codes)
    expected = series.cast(pl.String).replace_strict(list(codes), list(codes.values()), default=-1,
                                                     return_dtype=pl.Int64)
    given_at = series.is_not_null().to_numpy()
    assert coded[given_at].tolist() == expected.to_numpy()[given_at].tolist()


def test_a_refused_value_in_a_column_no_kernel_decision_reads_is_reported() -> None:
    """A money column the kernel does not read (a deduction, when only the care agreement is
    decided) is checked, not converted, when nothing else reads it; a refused value in it is
    still reported, as without the kernel."""
    from tests.test_vector import household

    r = random.Random(3)
    facts = [household(HUAIYUAN, "2023-07-01", r, 0.0) for _ in range(6)]
    frame = facts_to_population(HUAIYUAN, facts)
    members = frame["members"].list.explode().struct.unnest()
    assert "income_tax_paid" in members.columns
    for bad in (False, True):
        tax = members["income_tax_paid"]
        if bad:
            tax = tax.scatter(4, Decimal(-3))
        nested = members.with_columns(tax).with_columns(_hh=pl.Series(
            [h for h, f in enumerate(facts) for _ in f["members"]])).group_by("_hh", maintain_order=True).agg(
            pl.struct(pl.exclude("_hh")).alias("members"))
        table = frame.drop("members").with_columns(nested["members"])
        outcomes = []
        for rows in (0, 10**9):
            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(kernel, "MIN_ROWS", rows)
                try:
                    outcomes.append(decide_batch(HUAIYUAN, table, "2023-07-01", decisions=["tekun_care_agreement"]))
                except FactsError as exc:
                    outcomes.append([(d.code, d.path) for d in exc.diagnostics])
        if bad:
            assert outcomes[0] == outcomes[1] and outcomes[0] and "income_tax_paid" in outcomes[0][0][1]
        else:
            assert outcomes[0].equals(outcomes[1])


def test_longer_texts_in_another_data_buffer_are_looked_up_by_polars(monkeypatch: pytest.MonkeyPatch) -> None:
    """A longer text the kernel's lookup cannot reach (its array has several data buffers) is
    marked -2 and looked up by polars; the codes are those of a plain lookup."""
    from policy_engine import _jit

    lookup = _jit.view_codes
    monkeypatch.setattr(_jit, "view_codes", lambda views, keys, slots, data, *rest: lookup(
        views, keys, slots, data[:0], *rest))
    codes = {"traffic_accident": 0, "b": 1, "sudden_illness": 2}
    series = pl.Series(["sudden_illness", None, "b", "traffic_accident", "c", "traffic_accident_"])
    assert kernel._text_codes(series, codes)[[0, 2, 3, 4, 5]].tolist() == [2, 1, 0, -1, -1]


_NEAR_LIMITS = st.sampled_from([0, 1, 2**51, 2**52 - 1, 2**52, 2**52 + 1, 2**53, 2**61, 2**62 - 1, 2**62, 2**62 + 1,
                                2**63 - 1, 10**18, 10**19 + 7])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(households=st.lists(st.tuples(st.lists(st.tuples(_NEAR_LIMITS, _NEAR_LIMITS), max_size=6), _NEAR_LIMITS),
                           min_size=1, max_size=8))
def test_amounts_near_the_kernels_bounds_are_decided_exactly(households: list[Any], compiled: dict[str, int]) -> None:
    """Wages, other income and deposits (in fen) around the kernel's bounds: the read limit
    (2^52, beyond which a household goes to the scalar path, so that sums and small products
    of what is read need no guard), LIMIT (2^62) and int64. Every household equals
    ``decide``: a guard the bounds let the kernel leave out never hides an overflow."""
    fen = Decimal("0.01")
    facts = [{"assets": {"deposits": deposits * fen},
              "members": [{"income": {"wages": wages * fen, "other_counted": other * fen}} for wages, other in members]}
             for members, deposits in households]
    assert_equal(SHARED, facts, "2023-07-01")
    assert compiled.get("dibao")


def _tiered(derived: dict[str, Any], decisions: dict[str, str]) -> pe.Engine:
    """A policy with an amount by tier that has no value for tier C, and ``decisions`` (id ->
    money expression)."""
    label = {"zh": "x", "en": "x"}
    return engine_for({
        "inputs": {"tiered": {"path": "tiered", "type": "boolean", "label": label},
                   "tier": {"path": "tier", "type": "enum", "values": ["A", "B", "C"], "label": label}},
        "parameters": {"amount": {"type": "money", "unit": "yuan_per_month", "label": label, "by": ["tier"],
                                  "values": {"2022-01-01": {"A": 450, "B": 350}}, "provenance": "illustrative",
                                  "cite": "s §1"}},
        "derived": {name: {"type": "money", "label": label, "expr": expr, "cite": "s §1"} for name, expr in derived.items()},
        "decisions": {did: {"label": label, "cite": "s §1", "type": "money", "value": value}
                      for did, value in decisions.items()},
    })


def test_a_parameter_key_without_a_value_matters_only_in_the_branch_that_reads_it(compiled: dict[str, int]) -> None:
    """``amount if tiered else 100``: a tier with no amount sends a household to the scalar
    path only where the scalar path looks the amount up (tiered); elsewhere the kernel decides
    it. Every household equals ``decide``."""
    engine = _tiered({}, {"pay": "amount if tiered else 100"})
    facts = [{"tiered": t, "tier": k} for t in (True, False) for k in ("A", "B", "C")] + [{"tier": "C"}, {"tiered": False}]
    result = decide_batch(engine, facts, "2023-01-01")
    assert compiled.get("pay")
    for row, case in zip(result.to_dicts(), facts):
        decision = engine.decide(case, "2023-01-01")
        assert row["pay.status"] == decision["pay"].status
        assert same_value(row["pay.value"], decision["pay"].outputs.get("value"))
    # only the tiered household of tier C (no amount) is left to the scalar path
    assert result["_fallback"].arg_true().to_list() == [2]


def test_a_value_kept_for_other_uses_is_guarded_wherever_it_is_first_written(compiled: dict[str, int]) -> None:
    """A derived value with a keyed parameter, first written in an `if` branch (decision `a_pay`)
    and read outside one (decision `b_other`): its missing key is guarded wherever the value is
    used, so every household of tier C goes to the scalar path, and all equal ``decide``."""
    engine = _tiered({"tier_amount": "amount"}, {"a_pay": "tier_amount if tiered else 100",
                                                 "b_other": "tier_amount + 1"})
    facts = [{"tiered": t, "tier": k} for t in (True, False) for k in ("A", "B", "C")] + [{"tier": "C"}]
    result = decide_batch(engine, facts, "2023-01-01")
    assert compiled.get("a_pay") and compiled.get("b_other")
    assert [node.id for node in engine.select("household", None)] == ["a_pay", "b_other"]  # written in this order
    for row, case in zip(result.to_dicts(), facts):
        decision = engine.decide(case, "2023-01-01")
        for did in ("a_pay", "b_other"):
            assert row[f"{did}.status"] == decision[did].status
            assert same_value(row[f"{did}.value"], decision[did].outputs.get("value"))
    assert result["_fallback"].arg_true().to_list() == [2, 5, 6]


def test_a_null_whose_string_view_holds_anything_is_not_read() -> None:
    """A null slot's Arrow string view may hold anything (found by review: one claiming a long
    text far beyond the data buffer made the lookup read past it); the given texts are coded."""
    import numpy as np
    import pyarrow as pa

    data = b"northern-region" + b"\0" * 17
    views = np.zeros((3, 2), dtype=np.uint64)
    views[0, 0] = 15 | (int.from_bytes(data[:4], "little") << 32)  # "northern-region": buffer 0, offset 0
    views[1] = views[0]
    views[1, 1] = (2**26) << 32  # the null: an offset far beyond the buffer
    views[2] = views[0]
    validity = pa.py_buffer(np.packbits(np.array([1, 0, 1], dtype=bool), bitorder="little"))
    array = pa.Array.from_buffers(pa.string_view(), 3, [validity, pa.py_buffer(views), pa.py_buffer(data)])
    coded = kernel._text_codes(pl.Series(pl.from_arrow(array)), {"northern-region": 4, "south": 5})
    assert coded[[0, 2]].tolist() == [4, 4]
