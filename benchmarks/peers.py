#!/usr/bin/env python3
"""Peer engines, measured in the same run as policy_engine.

The peer scripts live in ``shared/bench/peers`` (beside this repository) and run in their
own virtualenvs outside the project tree; this module only starts them and reads their
figures. Nothing of the peers' code is imported here.

    python benchmarks/peers.py --install          # create the peer venvs if missing
    python benchmarks/peers.py single --quick     # single-household p50, plain and traced
    python benchmarks/peers.py batch              # 1M-household build+calc throughput

Environment overrides: PE_BENCH_OPENFISCA, PE_BENCH_POLICYENGINE, PE_BENCH_ZEN (each the
venv's python), PE_BENCH_PEERS_DIR (the folder holding the peer scripts).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Row = dict[str, Any]
"""{"peer", "case"} plus "p50_us" | "households_per_s" | "skipped" | "error"."""

BATCH_HOUSEHOLDS = 1_000_000
BATCH_CASE = "batch 1M build+calc"
SINGLE_TIMEOUT_S = 600.0
BATCH_TIMEOUT_S = 900.0


def peers_dir() -> Path:
    default = Path(__file__).resolve().parents[2] / "shared" / "bench" / "peers"
    return Path(os.environ.get("PE_BENCH_PEERS_DIR") or default)


@dataclass(frozen=True)
class PeerVenv:
    env_var: str
    default_python: str
    packages: tuple[str, ...]  # required, pinned to the versions measured in benchmarks/README.md
    optional: tuple[str, ...] = ()  # installed if it builds; if absent its rows are skipped

    @property
    def python(self) -> Path:
        return Path(os.environ.get(self.env_var) or self.default_python)


VENVS: dict[str, PeerVenv] = {
    "openfisca": PeerVenv(
        "PE_BENCH_OPENFISCA", "/tmp/peers/bin/python", ("openfisca-core==46.0.1", "psutil"),
        ("polars==2.1.0",),  # only for batch_throughput.py's Parquet-to-Parquet run (peer_parquet.py)
    ),
    "policyengine": PeerVenv(
        "PE_BENCH_POLICYENGINE", "/tmp/pe/bin/python", ("policyengine-core==3.33.12", "psutil"),
        ("polars==2.1.0",),
    ),
    "zen": PeerVenv(
        "PE_BENCH_ZEN", "/tmp/zen/bin/python", ("zen-engine==2.1.3",), ("durable-rules==2.0.28",)
    ),
}
ENGINE_DIST = {"openfisca": "openfisca-core", "policyengine": "policyengine-core"}


class PeerError(RuntimeError):
    """A peer script failed or printed something this module cannot read."""


def _dist(spec: str) -> str:
    return spec.split("==")[0]


def installed_versions(python: Path, dists: Sequence[str]) -> dict[str, str | None]:
    """Versions of `dists` in the venv of `python` (None where absent)."""
    code = (
        "import json, sys\nfrom importlib import metadata\nout = {}\n"
        "for d in sys.argv[1:]:\n"
        "    try:\n        out[d] = metadata.version(d)\n"
        "    except metadata.PackageNotFoundError:\n        out[d] = None\n"
        "print(json.dumps(out))"
    )
    proc = subprocess.run(
        [str(python), "-c", code, *dists], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise PeerError(f"{python} cannot report versions: {_tail(proc.stderr)}")
    result: dict[str, str | None] = json.loads(proc.stdout)
    return result


def _tail(text: str, lines: int = 1) -> str:
    return " | ".join(text.strip().splitlines()[-lines:])


def _run_script(python: Path, script: str, args: Sequence[str], timeout: float) -> str:
    cmd = [str(python), str(peers_dir() / script), *args]
    try:
        proc = subprocess.run(
            cmd, cwd=peers_dir(), capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise PeerError(f"{script} timed out after {timeout:.0f} s") from exc
    if proc.returncode != 0:
        raise PeerError(f"{script} exited {proc.returncode}: {_tail(proc.stderr)}")
    return proc.stdout


def _last_json(stdout: str) -> dict[str, Any]:
    lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise PeerError(f"no JSON line in output: {_tail(stdout)!r}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


Measure = Callable[[Path, dict[str, str | None]], list[Row]]


def _measure(
    venv: PeerVenv, script: str, cases: Sequence[tuple[str, str]], fn: Measure
) -> list[Row]:
    """Run `fn(python, versions)`; on a missing venv or a failure, one row per (dist, case)."""
    python = venv.python
    versions: dict[str, str | None] = {}

    def rows(key: str, reason: str) -> list[Row]:
        out: list[Row] = []
        for dist, case in cases:
            peer = f"{dist} {versions[dist]}" if versions.get(dist) else dist
            out.append({"peer": peer, "case": case, key: reason})
        return out

    if not python.exists():
        return rows("skipped", f"no venv at {python} (set {venv.env_var} or run --install)")
    if not (peers_dir() / script).exists():
        return rows("skipped", f"peer script not found: {peers_dir() / script}")
    try:
        versions = installed_versions(python, sorted({dist for dist, _ in cases}))
        if not versions.get(cases[0][0]):
            return rows("skipped", f"{cases[0][0]} not installed in {python}")
        return fn(python, versions)
    except (PeerError, OSError, KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
        return rows("error", f"{type(exc).__name__}: {exc}")


def _openfisca_single(engine: str, quick: bool) -> list[Row]:
    dist = ENGINE_DIST[engine]
    cases = ("build+calculate", "build+calculate traced")

    def fn(python: Path, versions: dict[str, str | None]) -> list[Row]:
        args = ["--engine", engine, "--worker", "single", "--calls", "200" if quick else "500"]
        report = _last_json(_run_script(python, "openfisca_dibao.py", args, SINGLE_TIMEOUT_S))
        peer = f"{dist} {versions[dist]}"
        return [
            {"peer": peer, "case": case, "p50_us": 1000.0 * report[key]["p50_ms"]}
            for case, key in zip(cases, ("python_api", "python_api_traced"), strict=True)
        ]

    return _measure(VENVS[engine], "openfisca_dibao.py", [(dist, c) for c in cases], fn)


def _openfisca_batch(engine: str, quick: bool) -> list[Row]:
    dist = ENGINE_DIST[engine]
    n = BATCH_HOUSEHOLDS
    variants = {"flat": BATCH_CASE, "province_reform": f"{BATCH_CASE}, province variant"}

    def fn(python: Path, versions: dict[str, str | None]) -> list[Row]:
        reps = "1" if quick else "3"
        args = ["--engine", engine, "--worker", "vector", "--n", str(n), "--reps", reps]
        report = _last_json(_run_script(python, "openfisca_dibao.py", args, BATCH_TIMEOUT_S))
        peer = f"{dist} {versions[dist]}"
        rows: list[Row] = []
        for variant, case in variants.items():
            r = report["rows"][variant]  # best of reps, as the script reports it
            per_s = n / (r["build_s"] + r["calc_s"])
            rows.append({"peer": peer, "case": case, "households_per_s": per_s})
        return rows

    return _measure(VENVS[engine], "openfisca_dibao.py", [(dist, c) for c in variants.values()], fn)


ZEN_CASES = {  # row label in zen_dibao.py's JSON -> (dist, case)
    "zen ZenEngine.evaluate(key)": ("zen-engine", "evaluate"),
    "zen ZenEngine.evaluate(key, trace=True)": ("zen-engine", "evaluate traced"),
    "durable-rules post()": ("durable-rules", "post"),
}
DURABLE_TRACED = ("durable-rules", "post traced")


def _zen_single(quick: bool) -> list[Row]:
    def fn(python: Path, versions: dict[str, str | None]) -> list[Row]:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "zen.json"
            args = ["--sizes", "2000" if quick else "10000", "--repeat", "1" if quick else "3"]
            args += ["--json", str(out)]
            if not versions.get("durable-rules"):
                args.append("--skip-durable")
            _run_script(python, "zen_dibao.py", args, SINGLE_TIMEOUT_S)
            results = json.loads(out.read_text(encoding="utf-8"))["results"]
        rows: list[Row] = []
        for r in results:
            if r["engine"] in ZEN_CASES:
                dist, case = ZEN_CASES[r["engine"]]
                peer = f"{dist} {versions[dist]}"
                rows.append({"peer": peer, "case": case, "p50_us": r["p50_us"]})
        if versions.get("durable-rules"):
            durable = f"durable-rules {versions['durable-rules']}"
            rows.append({"peer": durable, "case": "post traced", "skipped": "no trace in durable"})
        else:
            why = f"durable-rules not installed in {python}"
            rows += [
                {"peer": "durable-rules", "case": c, "skipped": why}
                for c in ("post", "post traced")
            ]
        return rows

    cases = [*ZEN_CASES.values(), DURABLE_TRACED]
    return _measure(VENVS["zen"], "zen_dibao.py", cases, fn)


def run_peers(kind: str, quick: bool) -> list[Row]:
    """Run the peers sequentially (they share 2 cores) and return one row per (peer, case).

    kind "single": p50 latency (µs) of one household per call, with and without trace.
    kind "batch": households/s for build+calc of 1M households (vectorised engines only).
    `quick` uses fewer calls / repetitions (noisier figures, same cases).
    """
    if kind == "single":
        return [
            *_openfisca_single("openfisca", quick),
            *_openfisca_single("policyengine", quick),
            *_zen_single(quick),
        ]
    if kind == "batch":
        return [*_openfisca_batch("openfisca", quick), *_openfisca_batch("policyengine", quick)]
    raise ValueError(f"kind must be 'single' or 'batch', not {kind!r}")


def _pip_install(python: Path, specs: Sequence[str]) -> str | None:
    """pip-install `specs` into the venv of `python`; the error's tail, or None on success."""
    print(f"  {python} -m pip install {' '.join(specs)}", flush=True)
    cmd = [str(python), "-m", "pip", "install", "--quiet", *specs]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    return None if proc.returncode == 0 else "\n".join(proc.stderr.strip().splitlines()[-15:])


def ensure_peer_venvs() -> list[str]:
    """Create each missing peer venv and pip-install what it lacks; return the failures.

    Required packages go in one pip call; each optional one (durable-rules, which compiles
    C code) in its own, so that its failure only skips its rows.
    """
    failures: list[str] = []
    for name, venv in VENVS.items():
        python = venv.python
        print(f"[{name}] {python}", flush=True)
        if not python.exists():
            print(f"  creating venv {python.parent.parent}", flush=True)
            subprocess.run([sys.executable, "-m", "venv", str(python.parent.parent)], check=True)
        have = installed_versions(python, [_dist(s) for s in (*venv.packages, *venv.optional)])
        for dist, version in have.items():
            if version:
                print(f"  {dist} {version} already installed", flush=True)
        missing = [s for s in venv.packages if not have[_dist(s)]]
        groups = [missing] if missing else []
        groups += [[s] for s in venv.optional if not have[_dist(s)]]
        for group in groups:
            if (error := _pip_install(python, group)) is not None:
                optional = group[0] in venv.optional
                what = "optional: its rows will be skipped" if optional else "required"
                failures.append(f"{name}: {' '.join(group)} failed ({what}): {_tail(error)}")
                print(f"  FAILED ({what}):\n{textwrap.indent(error, '    ')}", flush=True)
    return failures


def format_table(rows: Sequence[Row]) -> str:
    lines = ["| peer | case | p50 µs | households/s | note |", "|---|---|---:|---:|---|"]
    for r in rows:
        p50 = f"{r['p50_us']:,.1f}" if "p50_us" in r else ""
        hps = f"{r['households_per_s']:,.0f}" if "households_per_s" in r else ""
        note = f"skipped: {r['skipped']}" if "skipped" in r else ""
        note = f"error: {r['error']}" if "error" in r else note
        lines.append(f"| {r['peer']} | {r['case']} | {p50} | {hps} | {note} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Run the peer engines' dibao benchmarks.")
    ap.add_argument("kind", nargs="?", choices=["single", "batch"])
    ap.add_argument("--quick", action="store_true", help="fewer calls/repetitions")
    ap.add_argument("--install", action="store_true", help="create missing peer venvs first")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = ap.parse_args(argv)
    if not args.kind and not args.install:
        ap.error("give a kind (single or batch), --install, or both")
    if args.install:
        for failure in ensure_peer_venvs():
            print(f"install problem: {failure}", file=sys.stderr)
    if args.kind:
        rows = run_peers(args.kind, args.quick)
        print(json.dumps(rows, indent=1) if args.json else format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
