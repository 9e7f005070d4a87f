"""Code generation (policy_engine.codegen): the verifier refuses what the generators never emit;
every policy package's generated source passes it; the generated backend equals the closures."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Any

import pytest

import policy_engine as pe
from policy_engine import codegen, evaluate
from policy_engine.intake import _build_plan

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = sorted({p.parent for base in ("policies", "benchmarks/policies")
                   for p in (ROOT / base).rglob("package.yaml")})

GOOD = "def _d1(c, m):\n    _t2 = _k3\n    return _t2\n"


def test_the_verifier_accepts_generated_shapes() -> None:
    codegen.verify(GOOD)
    ns = codegen.run(GOOD, {"_k3": 7}, "<test>")
    assert ns["_d1"](None, None) == 7
    assert ns["__builtins__"] is codegen._BUILTINS


@pytest.mark.parametrize("source", [
    "import os\n",
    "def _d1(c, m):\n    import os\n    return 1\n",
    "def _d1(c, m):\n    from os import system\n    return 1\n",
    "def _d1(c, m):\n    return c.__class__\n",
    "def _d1(c, m):\n    return _k1.__globals__\n",
    "def _d1(c, m):\n    return c._secret\n",
    "def _d1(c, m):\n    return c.system\n",
    "def _d1(c, m):\n    return 'text'\n",
    "def _d1(c, m):\n    return b'bytes'\n",
    "def _d1(c, m):\n    return 1.5\n",
    "def _d1(c, m):\n    return 10 ** 30\n",
    "def _d1(c, m):\n    return f'{m}'\n",
    "def _d1(c, m):\n    return open\n",
    "def _d1(c, m):\n    return __import__\n",
    "def _d1(c, m):\n    return eval\n",
    "def _d1(c, m):\n    return getattr(c, _k1)\n",
    "def _d1(c, m):\n    return os\n",
    "def _d1(c, m):\n    return lambda: 1\n",
    "def _d1(c, m):\n    return [_v for _v in m]\n",
    "def _d1(c, m):\n    return (_v for _v in m)\n",
    "def _d1(c, m):\n    global _k1\n    return 1\n",
    "def _d1(c, m):\n    with c:\n        return 1\n",
    "def _d1(c, m):\n    yield 1\n",
    "def _d1(c, m):\n    raise _k1\n",
    "def _d1(c, m):\n    del _k1\n",
    "def _d1(c, m):\n    return _k1(m, key=_k2)\n",
    "def _d1(c, m):\n    return _k1(**m)\n",
    "class _d1:\n    pass\n",
    "_k1 = 1\n",
    "@_k1\ndef _d1(c, m):\n    return 1\n",
    "def _d1(c, m=_k1):\n    return 1\n",
    "def _d1(*c):\n    return 1\n",
    "def __init__(c, m):\n    return 1\n",
    "def _d1(c, m):\n    return c.as_of.__class__\n",
    "def _d1(c, m):\n    return (yield)\n",
    "def _d1(c, m):\n    return await m\n",
    "def _d1(c, m)\n    return 1\n",  # does not parse
])
def test_the_verifier_refuses_hostile_source(source: str) -> None:
    with pytest.raises(codegen.CodegenError):
        codegen.verify(source)
    ran: list[Any] = []
    with pytest.raises(codegen.CodegenError):
        codegen.run(source, {"_k1": ran.append, "_k2": 1}, "<test>")
    assert ran == []


def test_run_refuses_a_namespace_with_other_names() -> None:
    with pytest.raises(codegen.CodegenError):
        codegen.run(GOOD, {"os": sys.modules["os"], "_k3": 1}, "<test>")


def test_the_named_refusals() -> None:
    """The five kinds of the brief, with the reason in the message."""
    cases = {
        "def _d1(c, m):\n    import os\n    return 1\n": "Import",
        "def _d1(c, m):\n    return c.__class__\n": "__class__",
        "def _d1(c, m):\n    return 'x'\n": "constant",
        "def _d1(c, m):\n    return secret\n": "secret",
        "def _d1(c, m):\n    return lambda: 1\n": "Lambda",
    }
    for source, word in cases.items():
        with pytest.raises(codegen.CodegenError, match=word):
            codegen.verify(source)


@pytest.mark.parametrize("package", PACKAGES, ids=[str(p.relative_to(ROOT)) for p in PACKAGES])
def test_every_package_generates_verified_source(package: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sources: list[str] = []
    verify = codegen.verify

    def recording(source: str) -> Any:
        sources.append(source)
        return verify(source)  # raises CodegenError if it fails

    monkeypatch.setattr(codegen, "verify", recording)
    engine = pe.load(package)
    for trace in (False, True):
        backend = evaluate.Backend(engine.policy, trace, generate=True)
        assert backend.source is not None  # generated, not the closures
    for entity in ("household", "member"):
        _build_plan(engine.policy.inputs, entity)
    assert len(sources) >= 4


def _households() -> list[tuple[str, Any]]:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import households
    finally:
        sys.path.pop(0)
    shared = households.shared_households(120, seed=5)
    for i, f in enumerate(shared):
        if i % 6 == 1 and f.get("members"):
            f["members"][0].get("income", {}).pop("wages", None)
        elif i % 6 == 2:
            f.pop("members", None)
        elif i % 6 == 3:
            f.get("assets", {}).pop("deposits", None)
    anhui = households.anhui_households(120, seed=6, missing_rate=0.3)
    bad: list[Any] = [{"members": [{"income": {"wages": "abc"}}]}, {"members": "x"}, "not a mapping",
                      {"members": [3, {"income": {"wages": 1.5}}], "assets": {"deposits": "-1"}}]
    return ([("benchmarks/policies/shared_dibao", f) for f in shared + bad]
            + [("policies/anhui/bengbu/huaiyuan", f) for f in anhui + bad])


def _decide(backend: evaluate.Backend, engine: pe.Engine, facts: Any, day: dt.date) -> Any:
    engine._backends[backend.tracing] = backend
    try:
        d = engine.decide(facts, day, trace=backend.tracing)
    except Exception as exc:  # noqa: BLE001 - the error is compared
        return ("error", type(exc).__name__, str(exc))
    return (d.to_dict(), d._events, {k: (o.status, o.outputs, o.missing, o.reason, o.fired_rows, o.cites)
                                     for k, o in d.items()},
            d.explain("en", "full") if backend.tracing else None)


def test_generated_equals_closures() -> None:
    engines: dict[str, pe.Engine] = {}
    backends: dict[tuple[str, bool], tuple[evaluate.Backend, evaluate.Backend]] = {}
    compared = errors = 0
    for path, facts in _households():
        engine = engines.get(path) or engines.setdefault(path, pe.load(ROOT / path))
        for trace in (False, True):
            if (path, trace) not in backends:
                backends[path, trace] = (evaluate.Backend(engine.policy, trace, generate=False),
                                         evaluate.Backend(engine.policy, trace, generate=True))
            closures, generated = backends[path, trace]
            assert closures.source is None and generated.source is not None
            for day in (dt.date(1999, 6, 30), dt.date(2023, 7, 1), dt.date(2025, 12, 31)):
                want = _decide(closures, engine, facts, day)
                assert _decide(generated, engine, facts, day) == want
                compared += 1
                errors += want[0] == "error"
    for engine in engines.values():
        engine._backends.clear()
    assert compared == 248 * 6 and errors == 8 * 6


def test_the_engine_generates_code_after_a_few_calls() -> None:
    from policy_engine import engine as engine_module

    engine = pe.load(ROOT / "benchmarks/policies/shared_dibao")
    facts = [f for _, f in _households()[:40]]
    first = [engine.decide(f, "2023-07-01").to_dict() for f in facts[:engine_module.GENERATE_AFTER]]
    assert engine._backends[True].source is None  # the closures so far
    rest = [engine.decide(f, "2023-07-01").to_dict() for f in facts[engine_module.GENERATE_AFTER:]]
    assert engine._backends[True].source is not None  # then generated code
    again = pe.load(ROOT / "benchmarks/policies/shared_dibao")
    again._backends[True] = evaluate.Backend(again.policy, True, generate=False)
    assert first + rest == [again.decide(f, "2023-07-01").to_dict() for f in facts]
