#!/usr/bin/env python3
"""Per-call latency of ``Engine.decide``, with and without explanation, beside the peers.

    python benchmarks/decide_latency.py              # ~2 min: ours, then the peers (same run)
    python benchmarks/decide_latency.py --quick      # ~40 s, noisier
    python benchmarks/decide_latency.py --no-peers --json out.json

A script, not a timed test. Three policies:

* ``shared``: the shared dibao benchmark rule of ``shared/bench/peers/README.md``, encoded as
  ``benchmarks/policies/shared_dibao`` (the rule the OpenFisca/policyengine peers compute);
  households from ``households.shared_households`` (1-6 members, lognormal incomes/deposits).
* ``zen_rule``: the rule the zen-engine peer script (``zen_dibao.py``) evaluates, encoded as
  ``benchmarks/policies/zen_rule``: flat facts (per-capita income, standard, deposits, size,
  household type), an eligibility table and a multiplier table, hit policy first; households
  from ``households.zen_rule_households`` (the peer's shapes, numbers as JSON numbers). Every
  outcome is checked against the rule by hand before timing, as the peer script checks zen's.
* ``huaiyuan``: the realistic household policy ``policies/anhui/bengbu/huaiyuan`` (dibao,
  marginal_household, graduated_exit, tekun, tekun_care_agreement, temporary_assistance), on
  ``households.anhui_households``.

Modes, each one call per distinct household (facts dict in, Decision out), timed with
``time.perf_counter_ns`` around exactly what is named, after a warm-up; gc left as is:

* ``decide``: ``engine.decide(facts, as_of, trace=False)`` (outcomes only)
* ``decide traced``: ``engine.decide(facts, as_of, trace=True)``: the same plus every
  explanation event recorded (facts, parameters with provenance, each derived value, every
  table row tried with its cells, fired rows, outputs): the full explanation *data*. This is
  the row compared with OpenFisca's traced call and zen-engine's traced evaluate, which
  both return their trace as data.
* ``decide traced + explain full``: the traced decide plus rendering
  ``decision.explain("zh", "full")`` to text (summary, citations, the whole computation).

Then, in the same process and run, the peers (``benchmarks/peers.py``, ``run_peers("single")``)
and one table of ratios: peer p50 / our p50 (higher is better for us).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import households

try:
    import policy_engine as pe
except ImportError:  # running from a checkout without the package installed
    sys.path.insert(0, str(ROOT / "src"))
    import policy_engine as pe

AS_OF = "2023-07-01"
POLICIES = {
    "shared": ("benchmarks/policies/shared_dibao", households.shared_households),
    "zen_rule": ("benchmarks/policies/zen_rule", households.zen_rule_households),
    "huaiyuan": ("policies/anhui/bengbu/huaiyuan", households.anhui_households),
}
MODES = ("decide", "decide traced", "decide traced + explain full")
#: (households, warm-up calls) per policy
SIZES = {  # zen_rule: as many calls and as long a warm-up as the zen peer script makes
    False: {"shared": (5000, 500), "zen_rule": (10000, 2000), "huaiyuan": (2000, 200)},
    True: {"shared": (1500, 200), "zen_rule": (2000, 500), "huaiyuan": (500, 100)},
}
#: the targets of the issue: peer traced p50 / our traced p50
TARGETS = {"openfisca-core": 20.0, "zen-engine": 1.0}
#: the rule each peer computes: a target applies to the ratio on that rule, where both engines do
#: the same work (every other ratio is printed for scale only)
PEER_RULE = {"openfisca-core": "shared", "policyengine-core": "shared", "zen-engine": "zen_rule"}


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count() or 0
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "policy_engine": pe.__version__,
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def percentile(sorted_ns: Sequence[int], q: float) -> float:
    """Nearest-rank percentile in µs (the same rule as the peers: index int(n * q))."""
    return sorted_ns[min(len(sorted_ns) - 1, int(len(sorted_ns) * q))] / 1000.0


def call_for(engine: pe.Engine, mode: str) -> Callable[[Any], Any]:
    if mode == "decide":
        return lambda facts: engine.decide(facts, AS_OF, trace=False)
    if mode == "decide traced":
        return lambda facts: engine.decide(facts, AS_OF, trace=True)
    return lambda facts: engine.decide(facts, AS_OF, trace=True).explain("zh", "full")


def measure(engine: pe.Engine, facts: Sequence[Any], warmup: int, mode: str) -> dict[str, Any]:
    fn = call_for(engine, mode)
    for f in facts[:warmup]:
        fn(f)
    clock = time.perf_counter_ns
    ns: list[int] = []
    append = ns.append
    for f in facts:
        t0 = clock()
        fn(f)
        append(clock() - t0)
    ns.sort()
    return {
        "calls": len(ns),
        "p50_us": percentile(ns, 0.50),
        "p90_us": percentile(ns, 0.90),
        "p99_us": percentile(ns, 0.99),
        "mean_us": statistics.fmean(ns) / 1000.0,
    }


def run_ours(quick: bool, only: Sequence[str]) -> list[dict[str, Any]]:
    rows = []
    for key in only:
        path, generate = POLICIES[key]
        n, warmup = SIZES[quick][key]
        t0 = time.perf_counter()
        engine = pe.load(ROOT / path)
        load_ms = 1000 * (time.perf_counter() - t0)
        facts = generate(n, seed=20261123)
        statuses: dict[str, int] = {}
        for f in facts:
            decision = engine.decide(f, AS_OF, trace=False)
            statuses[decision.status] = statuses.get(decision.status, 0) + 1
            if key == "zen_rule":  # the same answers as the peer, or no timing
                got = (decision["eligibility"].eligible, decision["multiplier"].multiplier)
                if got != households.zen_rule_expected(f):
                    raise SystemExit(f"zen_rule: {f} gave {got}, the rule by hand {households.zen_rule_expected(f)}")
        print(f"[{key}] {path}: loaded in {load_ms:.0f} ms; {n} distinct households "
              f"({', '.join(f'{k} {v}' for k, v in sorted(statuses.items()))})", flush=True)
        for mode in MODES:
            r = measure(engine, facts, warmup, mode)
            r.update(policy=key, mode=mode)
            rows.append(r)
            print(f"  {mode:<30} p50 {r['p50_us']:9.1f} µs   p90 {r['p90_us']:9.1f} µs", flush=True)
    return rows


def run_peer_rows(quick: bool) -> list[dict[str, Any]]:
    try:
        from peers import run_peers
    except ImportError as exc:  # pragma: no cover - peers.py ships beside this file
        return [{"peer": "peers", "case": "all", "skipped": f"benchmarks/peers.py not importable: {exc}"}]
    try:
        return run_peers("single", quick=quick)
    except Exception as exc:  # noqa: BLE001 - a peer problem must not lose our figures
        return [{"peer": "peers", "case": "all", "error": f"{type(exc).__name__}: {exc}"}]


def ratios(ours: list[dict[str, Any]], peer_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Peer traced p50 / our p50, for each of our policies and traced modes."""
    traced = {}
    for r in peer_rows:
        if "p50_us" in r and r["case"].endswith("traced"):
            traced[r["peer"]] = r["p50_us"]
    out = []
    for peer, peer_p50 in traced.items():
        dist = peer.split(" ")[0]
        for r in ours:
            if r["mode"] == "decide":
                continue
            ratio = peer_p50 / r["p50_us"]
            # a target compares the same rule: the one the peer computes
            target = TARGETS.get(dist) if r["policy"] == PEER_RULE.get(dist) else None
            out.append({
                "peer": peer, "peer_traced_p50_us": peer_p50, "policy": r["policy"],
                "mode": r["mode"], "our_p50_us": r["p50_us"], "ratio": ratio,
                "target": target, "met": None if target is None else ratio >= target,
                "same_rule": r["policy"] == PEER_RULE.get(dist),
            })
    return out


def print_tables(ours: list[dict[str, Any]], peer_rows: list[dict[str, Any]],
                 ratio_rows: list[dict[str, Any]]) -> None:
    print("\n| engine | policy / case | p50 µs | p90 µs | calls | note |")
    print("|---|---|---:|---:|---:|---|")
    for r in ours:
        print(f"| policy_engine {pe.__version__} | {r['policy']}: {r['mode']} | {r['p50_us']:,.1f} "
              f"| {r['p90_us']:,.1f} | {r['calls']} | |")
    for r in peer_rows:
        p50 = f"{r['p50_us']:,.1f}" if "p50_us" in r else ""
        note = f"skipped: {r['skipped']}" if "skipped" in r else ""
        note = f"error: {r['error']}" if "error" in r else note
        print(f"| {r['peer']} | {r['case']} | {p50} | | | {note} |")
    if not ratio_rows:
        print("\n(no peer traced figures: ratios not computed)")
        return
    print("\nRatios: peer traced p50 / policy_engine p50 (higher = policy_engine faster); a target applies"
          " where both compute the same rule (OpenFisca and policyengine: shared; zen-engine: zen_rule);"
          " other rows are for scale only\n")
    print("| peer traced p50 | policy | policy_engine mode | ratio | target | met |")
    print("|---|---|---|---:|---:|---|")
    for r in ratio_rows:
        target = f"≥ {r['target']:g}" if r["target"] is not None else ("" if r["same_rule"] else "(other rule)")
        met = "" if r["met"] is None else ("yes" if r["met"] else "NO")
        print(f"| {r['peer']} {r['peer_traced_p50_us']:,.1f} µs | {r['policy']} | {r['mode']} "
              f"{r['our_p50_us']:,.1f} µs | {r['ratio']:.2f} | {target} | {met} |")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer households and peer calls (noisier)")
    ap.add_argument("--no-peers", action="store_true", help="measure policy_engine only")
    ap.add_argument("--policy", choices=sorted(POLICIES), action="append",
                    help="only this policy (repeatable; default all three)")
    ap.add_argument("--json", metavar="OUT", help="also write every figure to this JSON file")
    args = ap.parse_args(argv)

    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores ({info['usable_cores']} usable), "
          f"{info['implementation']} {info['python']}, {info['platform']}")
    print(f"policy_engine {info['policy_engine']}; as_of {AS_OF}; {info['date']}"
          f"{'; --quick' if args.quick else ''}\n", flush=True)
    ours = run_ours(args.quick, args.policy or list(POLICIES))
    peer_rows: list[dict[str, Any]] = []
    if not args.no_peers:
        print("\npeers (benchmarks/peers.py run_peers('single'), one after another) ...", flush=True)
        t0 = time.perf_counter()
        peer_rows = run_peer_rows(args.quick)
        print(f"peers done in {time.perf_counter() - t0:.0f} s", flush=True)
    ratio_rows = ratios(ours, peer_rows)
    print_tables(ours, peer_rows, ratio_rows)
    if args.json:
        out = {"machine": info, "quick": args.quick, "as_of": AS_OF, "ours": ours,
               "peers": peer_rows, "ratios": ratio_rows}
        Path(args.json).write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
