"""YAML test suites (``*_test.yaml``) that live beside the policies, and their runner.

A suite is a list of cases (or ``{tests: [...]}``)::

    - name: 7,500 residents need two coordinators
      as_of: 2023-07-01            # required
      entity: village              # default household
      facts: {registered_population: 7500, region: north, regular_recipients: 40}
      # or: facts_file: testdata/village.yaml   (relative to the suite file)
      parameters: {coordinator_maximum: 2}      # optional: replaces only the parameters named
      expect:
        assistance_coordinators_required: 2     # a bare value checks the output `value`
        dibao: {eligible: true, amount: "518.00", fired_rows: [income-met]}
        tekun: {status: needs_information, missing: ["members[0].birth_date"]}
      cites: ["46号 §十一"]          # text the explanation must contain
      tags: [boundary]
      todo: not yet encoded          # reported as SKIP

Results are PASS, FAIL (wrong decision: the difference and the ``fails`` explanation), ERROR
(could not evaluate: the diagnostics) and SKIP (``todo``), each with file and line.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from . import document as doc
from . import ir
from .diagnostics import PolicyEngineError, make
from .engine import Engine, json_value
from .load import load_file

Result = Literal["PASS", "FAIL", "ERROR", "SKIP"]


class TestCase(BaseModel):
    """One test household (or village, month, ...) and what its decisions must be."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    as_of: dt.date
    entity: doc.Entity = "household"
    facts: dict[str, Any] | None = None
    facts_file: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    expect: dict[str, Any]
    cites: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    todo: str | None = None
    description: str | None = None


class TestSuite(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    policy: str | None = Field(default=None, description="package path relative to the suite; "
                               "default: the package folder that contains the suite")
    tests: list[TestCase]


@dataclass
class CaseResult:
    suite: str
    line: int | None
    name: str
    result: Result
    messages: list[str] = field(default_factory=list)
    explanation: str = ""
    decisions: tuple[str, ...] = ()

    @property
    def location(self) -> str:
        return f"{self.suite}:{self.line}" if self.line else self.suite


def find_suites(paths: list[str | Path]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_file():
            out.append(p)
        else:
            out.extend(sorted(p.rglob("*_test.yaml")))
    return out


def package_of(suite: Path) -> Path:
    """The nearest folder above the suite that has a package.yaml."""
    for parent in suite.resolve().parents:
        if (parent / "package.yaml").is_file():
            return parent
    raise FileNotFoundError(f"no package.yaml above {suite}")


def with_parameters(engine: Engine, overrides: dict[str, Any]) -> Engine:
    """An engine whose named parameters are replaced (for every date); nothing else changes."""
    if not overrides:
        return engine
    params = {p.name: p for p in engine.policy.parameters}
    replaced = []
    for p in engine.policy.parameters:
        if p.name not in overrides:
            replaced.append(p)
            continue
        value = overrides[p.name]
        entries = _override_entries(p, value)
        dated = ir.DatedValue(dt.date.min, None, entries, "illustrative", note="test override")
        replaced.append(dataclasses.replace(p, values=(dated,)))
    unknown = [n for n in overrides if n not in params]
    if unknown:
        from .diagnostics import PolicyError, did_you_mean

        raise PolicyError([make("PE220", f"unknown parameter `{n}` in test override", hint=did_you_mean(n, params))
                           for n in unknown])
    policy = dataclasses.replace(engine.policy, parameters=tuple(replaced))
    return Engine(policy, engine.diagnostics, engine.path)


def _override_entries(p: ir.ParameterNode, value: Any) -> tuple[tuple[tuple[str, ...], Any], ...]:
    def convert(v: Any) -> Any:
        if p.type in ("money", "decimal") and not isinstance(v, bool):
            return Decimal(str(v))
        return v

    if not p.by:
        return (((), convert(value)),)
    out: list[tuple[tuple[str, ...], Any]] = []

    def walk(node: Any, key: tuple[str, ...]) -> None:
        if len(key) == len(p.by):
            out.append((key, convert(node)))
        elif isinstance(node, dict):
            for k, v in node.items():
                walk(v, key + (str(k),))
        else:  # one value for every key
            for k, _ in p.values[-1].entries:
                out.append((k, convert(node)))

    walk(value, ())
    return tuple(dict(out).items())


def _equal(expected: Any, actual: Any) -> bool:
    if isinstance(actual, bool) or isinstance(expected, bool):
        return actual is expected
    if isinstance(actual, (Decimal, int)) and not isinstance(actual, bool):
        try:
            return Decimal(str(expected)) == Decimal(actual)
        except (InvalidOperation, ValueError):
            return False
    if isinstance(actual, dt.date) and isinstance(expected, (str, dt.date)):
        return str(expected) == actual.isoformat()
    if isinstance(actual, (list, tuple)) and isinstance(expected, (list, tuple)):
        return len(actual) == len(expected) and all(_equal(e, a) for e, a in zip(expected, actual))
    return bool(expected == actual)


def check_case(engine: Engine, case: TestCase, facts: Any) -> tuple[list[str], str, tuple[str, ...]]:
    """Evaluate one case; returns the failures (empty when it passes) and the explanation."""
    engine = with_parameters(engine, case.parameters)
    ids = [d for d in case.expect if d in engine.decision_ids(case.entity)]
    unknown = [d for d in case.expect if d not in engine.decision_ids(case.entity)]
    failures = [f"no decision `{d}` for entity {case.entity}" for d in unknown]
    decision = engine.decide(facts, case.as_of, case.entity, decisions=ids or None)
    for decision_id in ids:
        outcome = decision[decision_id]
        expected = case.expect[decision_id]
        if not isinstance(expected, dict):
            expected = {"value": expected}
        for key, want in expected.items():
            if key == "status":
                got: Any = outcome.status
            elif key == "missing":
                got = list(outcome.missing)
                if not all(m in got for m in want):
                    failures.append(f"{decision_id}.missing: expected to include {want}, got {got}")
                continue
            elif key == "fired_rows":
                got = list(outcome.fired_rows)
            elif key in outcome.outputs:
                got = outcome.outputs[key]
                if outcome.status != "decided":
                    failures.append(f"{decision_id}.{key}: expected {want!r}, but the decision is "
                                    f"{outcome.status}" + (f" (missing {', '.join(outcome.missing)})"
                                                           if outcome.missing else f" ({outcome.reason})"))
                    continue
            else:
                failures.append(f"{decision_id}: no output `{key}` (status {outcome.status}; outputs "
                                f"{', '.join(outcome.outputs) or 'none'})")
                continue
            if not _equal(want, got):
                failures.append(f"{decision_id}.{key}: expected {want!r}, got {json_value(got)!r}")
    explanation = decision.explain(lang="zh", level="fails") if decision else ""
    if case.cites:
        full = decision.explain(lang="zh", level="full")
        for cite in case.cites:
            if cite not in full:
                failures.append(f"the explanation does not cite `{cite}`")
    return failures, explanation, tuple(ids)


def run_suite(path: Path, engines: dict[Path, Engine] | None = None) -> list[CaseResult]:
    engines = engines if engines is not None else {}
    display = str(path)
    loaded, problems = load_file(path, display)
    if loaded is None or problems:
        return [CaseResult(display, p.line, "(suite)", "ERROR", [p.gnu()]) for p in problems]
    data = loaded.data
    if isinstance(data, list):
        data = {"tests": data}
    try:
        suite = TestSuite.model_validate(data)
    except Exception as exc:
        from pydantic import ValidationError

        if isinstance(exc, ValidationError):
            messages = []
            for error in exc.errors():
                loc = tuple(error["loc"])
                diag = loaded.source_map.diagnostic("PE203", f"{'.'.join(map(str, loc))}: {error['msg']}", loc)
                messages.append(diag.gnu())
            return [CaseResult(display, None, "(suite)", "ERROR", messages)]
        raise
    try:
        package = (path.parent / suite.policy).resolve() if suite.policy else package_of(path)
        if package not in engines:
            from .engine import load

            engines[package] = load(package)
        engine = engines[package]
    except (PolicyEngineError, FileNotFoundError) as exc:
        return [CaseResult(display, None, "(suite)", "ERROR", [str(exc)])]
    results = []
    offset = ("tests",) if isinstance(loaded.data, dict) else ()
    for i, case in enumerate(suite.tests):
        line = loaded.source_map.locate(offset + (i,))[0]
        if case.todo:
            results.append(CaseResult(display, line, case.name, "SKIP", [case.todo]))
            continue
        try:
            facts = case.facts
            if case.facts_file:
                facts_doc, problems = load_file(path.parent / case.facts_file)
                if facts_doc is None or problems:
                    raise ValueError("; ".join(p.gnu() for p in problems))
                facts = facts_doc.data
            failures, explanation, ids = check_case(engine, case, facts or {})
        except PolicyEngineError as exc:
            results.append(CaseResult(display, line, case.name, "ERROR", [d.gnu() for d in exc.diagnostics]))
            continue
        except ValueError as exc:
            results.append(CaseResult(display, line, case.name, "ERROR", [str(exc)]))
            continue
        results.append(CaseResult(display, line, case.name, "FAIL" if failures else "PASS", failures,
                                  explanation if failures else "", ids))
    return results


def run(paths: list[str | Path]) -> list[CaseResult]:
    engines: dict[Path, Engine] = {}
    results: list[CaseResult] = []
    for suite in find_suites(paths):
        results.extend(run_suite(suite, engines))
    return results
