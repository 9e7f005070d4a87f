#!/usr/bin/env python3
"""Population screening throughput, Parquet to Parquet, beside the peers (issue 5).

    python benchmarks/batch_throughput.py                    # 1M households, ours + polars + peers
    python benchmarks/batch_throughput.py --households 200000 --no-peers --reps 1

A script, not a timed test. Each measurement runs in its own subprocess (so that its peak
memory, ``ru_maxrss``, is its own) and is repeated ``--reps`` times; the median is reported.

* ``shared``: the shared dibao rule of ``shared/bench/peers/README.md``
  (``benchmarks/policies/shared_dibao``) over households of the peers' shape (1-6 members,
  wages lognormal(7.6, 0.8) for 65% of members, other income lognormal(5.0, 1.0) for half,
  deposits lognormal(9.5, 1.5)), written as Parquet in the facts layout (money Decimal(38, 2)).
  - ``policy_engine screen``: ``population.screen(engine, in.parquet, out.parquet, as_of)``:
    read, check every fact as ``decide`` does, decide exactly (fixed-point decimals,
    three-valued unknowns), reason codes (fired row ids), write Parquet;
  - ``hand-written polars``: the same rule written directly in polars by hand (fixed-point
    integers in fen, rounding as the policy declares, no checks, no unknowns, no reason
    codes): the practical limit for this rule in polars, Parquet to Parquet. Its results are
    compared with ours (they must be equal);
  - peers (``benchmarks/peers.py batch``): openfisca-core and policyengine-core building a
    vectorised simulation from in-memory arrays and calculating the rule in float32 (their own
    figure, ``build + calc``; they read and write no files).
* ``anhui``: the full household policy of Huaiyuan county, Anhui
  (``policies/anhui/bengbu/huaiyuan``, six decisions) over ``policy-engine synth`` households
  (``--province anhui``), Parquet to Parquet with reason codes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

AS_OF = "2023-07-01"
POLICIES = {"shared": ROOT / "benchmarks" / "policies" / "shared_dibao",
            "anhui": ROOT / "policies" / "anhui" / "bengbu" / "huaiyuan"}


# --- data ----------------------------------------------------------------------------------------


def shared_population(n: int, out: Path, seed: int = 20261123) -> None:
    """``n`` households of the shared rule's shape as Parquet in the facts layout."""
    import polars as pl

    rng = random.Random(seed)
    sizes = [rng.randint(1, 6) for _ in range(n)]
    owner: list[int] = []
    wages: list[int] = []
    other: list[int] = []
    for i, size in enumerate(sizes):
        for _ in range(size):
            owner.append(i)
            wages.append(round(rng.lognormvariate(7.6, 0.8) * 100) if rng.random() < 0.65 else 0)
            other.append(round(rng.lognormvariate(5.0, 1.0) * 100) if rng.random() < 0.5 else 0)
    deposits = [round(rng.lognormvariate(9.5, 1.5) * 100) for _ in range(n)]

    def money(fen: list[int]) -> pl.Series:  # exact: fen as the Decimal(38, 2) physical integers
        return pl.Series(fen, dtype=pl.Int128).cast(pl.Decimal(38, 0)).cast(pl.Decimal(38, 2)) / 100

    members = (pl.DataFrame({"_h": pl.Series(owner, dtype=pl.Int64),
                             "wages": pl.Series(wages, dtype=pl.Int128),
                             "other_counted": pl.Series(other, dtype=pl.Int128)})
               .with_columns(pl.col("wages", "other_counted").cast(pl.Decimal(38, 0)))
               .with_columns((pl.col("wages", "other_counted") / 100).cast(pl.Decimal(38, 2)))
               .select("_h", pl.struct(pl.struct("wages", "other_counted").alias("income")).alias("m"))
               .group_by("_h", maintain_order=True).agg(pl.col("m").alias("members")))
    frame = pl.DataFrame({
        "household_id": [f"SB-{i + 1:08d}" for i in range(n)],
        "_h": pl.Series(range(n), dtype=pl.Int64),
        "assets": pl.DataFrame({"deposits": money(deposits)}).to_struct("assets"),
    }).join(members, on="_h", how="left", maintain_order="left").drop("_h")
    frame.write_parquet(out)


def ensure_data(policy: str, n: int, data_dir: Path) -> Path:
    path = data_dir / f"{policy}-{n}.parquet"
    if path.exists():
        return path
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.parquet")
    t = time.perf_counter()
    if policy == "shared":
        shared_population(n, tmp)
    else:
        subprocess.run([sys.executable, "-m", "policy_engine", "synth", "--households", str(n), "--province",
                        "anhui", "--seed", "7", "--out", str(tmp)], check=True, cwd=ROOT)
    tmp.rename(path)
    print(f"# generated {path} in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    return path


# --- workers (each in its own process) ------------------------------------------------------------


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def warm_kernel(engine: Any, source: Path, checked: bool = True) -> float:
    """Compile the policy's kernel (``policy_engine.kernel``), or load it from the disk cache,
    before the clock starts, as the policy itself is loaded before it (and the peers build their
    model before theirs): a batch of the file's first households decided with every batch
    compiled (``checked=False``: as an unchecked ``Split``, whose kernel also checks the members'
    households). Its batch also fixes the columns the kernel takes as having no nulls (those
    without one among the first households; a timed chunk with a null in one of them would
    compile the general kernel in the clock: the files here have no column with rare nulls).
    Returns the seconds it took (reported beside the figures, not in them)."""
    import polars as pl

    from policy_engine import kernel
    from policy_engine.batch_intake import read_chunk
    from policy_engine.vector import Split

    t = time.perf_counter()
    saved, kernel.MIN_ROWS = kernel.MIN_ROWS, 0
    try:
        made = read_chunk(engine.policy, pl.read_parquet(source, n_rows=2000), 1).population
        if not checked:
            made = Split(made.households, made.members, made.height, checked=False, sizes=made.sizes)
        engine.decide_batch(made, AS_OF)
    finally:
        kernel.MIN_ROWS = saved
    return time.perf_counter() - t


def worker_ours(policy: str, source: Path, out: Path, chunk_size: int, workers: int | None) -> dict[str, Any]:
    import policy_engine as pe
    from policy_engine import population

    t = time.perf_counter()
    engine = pe.load(POLICIES[policy])
    load_s = time.perf_counter() - t
    compile_s = warm_kernel(engine, source)
    t = time.perf_counter()
    result = population.screen(engine, source, out, AS_OF, chunk_size=chunk_size, workers=workers)
    seconds = time.perf_counter() - t
    return {"seconds": seconds, "households": result.households, "errors": len(result.errors),
            "workers": workers or population.default_workers(),
            "fallback_rows": result.fallback_rows, "load_s": load_s, "compile_s": compile_s,
            "peak_rss_mb": peak_rss_mb()}


def worker_memory(policy: str, source: Path, chunk_size: int) -> dict[str, Any]:
    """Ours without file input and output, as the peers' ``build + calc`` is timed: the file is
    read first (untimed); then the facts are checked and converted (``read_chunk``, our "build")
    and decided (``decide_batch``), chunk by chunk."""
    import polars as pl

    import policy_engine as pe
    from policy_engine.batch_intake import read_chunk

    engine = pe.load(POLICIES[policy])
    compile_s = warm_kernel(engine, source)
    frame = pl.read_parquet(source)
    t = time.perf_counter()
    build = 0.0
    for offset in range(0, frame.height, chunk_size):
        b = time.perf_counter()
        chunk = read_chunk(engine.policy, frame.slice(offset, chunk_size), offset + 1)
        build += time.perf_counter() - b
        engine.decide_batch(chunk.population, AS_OF)
    seconds = time.perf_counter() - t
    return {"seconds": seconds, "build_s": build, "calc_s": seconds - build, "compile_s": compile_s,
            "peak_rss_mb": peak_rss_mb()}


def worker_flat(policy: str, source: Path, chunk_size: int) -> dict[str, Any]:
    """Ours from flat tables, as the peers start: their arrays (member incomes, the household of
    each member, household sizes) are made from the file before their clock starts. Untimed here:
    reading the file and flattening each chunk into the two-table layout (``read_chunk``), with
    the household sizes. Timed: ``decide_batch`` on each ``Split`` marked unchecked, so it checks
    every fact (as ``decide`` does) and decides."""
    import polars as pl

    import policy_engine as pe
    from policy_engine.batch_intake import read_chunk
    from policy_engine.vector import Split

    engine = pe.load(POLICIES[policy])
    compile_s = warm_kernel(engine, source, checked=False)
    frame = pl.read_parquet(source)
    splits = []
    for offset in range(0, frame.height, chunk_size):
        made = read_chunk(engine.policy, frame.slice(offset, chunk_size), offset + 1).population
        splits.append(Split(made.households, made.members, made.height, checked=False, sizes=made.sizes))
    del frame
    t = time.perf_counter()
    for split in splits:
        engine.decide_batch(split, AS_OF)
    return {"seconds": time.perf_counter() - t, "compile_s": compile_s, "peak_rss_mb": peak_rss_mb()}


def worker_polars(source: Path, out: Path) -> dict[str, Any]:
    """The shared rule by hand in polars, Parquet to Parquet: fixed point in fen, half-up rounding
    to the fen where the policy rounds (the deduction, per-capita income); per-member sums with
    ``list.eval`` (no explode, no join). No checks, unknowns or reason codes."""
    import polars as pl

    def half_up(numerator: pl.Expr, denominator: int | pl.Expr) -> pl.Expr:  # denominator > 0
        return (numerator.abs() * 2 + denominator) // (denominator * 2) * numerator.sign()

    t = time.perf_counter()
    frame = pl.read_parquet(source)
    computing = time.perf_counter()
    income = pl.element().struct.field("income")
    wages = income.struct.field("wages").to_physical().cast(pl.Int64)
    other = income.struct.field("other_counted").to_physical().cast(pl.Int64)
    deduction = pl.min_horizontal(half_up(wages * 2, 10), pl.lit(30_000))
    standard = 70_000
    result = (frame.select("household_id",
                           countable=pl.col("members").list.eval(wages + other - deduction).list.sum(),
                           size=pl.col("members").list.len().cast(pl.Int64),
                           deposits=pl.col("assets").struct.field("deposits").to_physical().cast(pl.Int64))
              .with_columns(pc=half_up(pl.col("countable"), pl.col("size")))
              .with_columns(eligible=(pl.col("pc") < standard) & (pl.col("deposits") < 24 * standard * pl.col("size")))
              .select("household_id", "eligible",
                      amount=pl.when(pl.col("eligible")).then((standard - pl.col("pc")) * pl.col("size"))
                      .otherwise(0).cast(pl.Int128).cast(pl.Decimal(38, 0)).cast(pl.Decimal(38, 2)).truediv(100)
                      .cast(pl.Decimal(38, 2))))
    computed = time.perf_counter()
    result.write_parquet(out)
    seconds = time.perf_counter() - t
    return {"seconds": seconds, "compute_s": computed - computing, "peak_rss_mb": peak_rss_mb(),
            "households": result.height}


def worker_peer(engine: str, source: Path, out: Path) -> dict[str, Any]:
    """A peer (openfisca-core / policyengine-core) Parquet to Parquet, in its own venv."""
    import peers

    python = peers.VENVS[engine].python
    done = subprocess.run([str(python), str(HERE / "peer_parquet.py"), str(source), str(out)], capture_output=True,
                          text=True, check=False, timeout=1800,
                          env={**os.environ, "BENCH_ENGINE": engine, "PE_BENCH_PEERS_DIR": str(peers.peers_dir())})
    if done.returncode != 0:
        raise RuntimeError(f"{engine}: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def check_equal(ours: Path, polars_out: Path) -> int:
    """Rows where the hand-written version and ours disagree (must be 0)."""
    import polars as pl

    a = pl.read_parquet(ours, columns=["household_id", "dibao.eligible", "dibao.amount"])
    b = pl.read_parquet(polars_out)
    joined = a.join(b, on="household_id", how="full")
    return int(joined.filter((pl.col("dibao.eligible") != pl.col("eligible")).fill_null(True)
                             | (pl.col("dibao.amount") != pl.col("amount")).fill_null(True)).height)


def _subprocess(args: list[str]) -> dict[str, Any]:
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=False,
                          cwd=ROOT, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"worker {args} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the run ---------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """The latency benchmark's machine record, plus the polars version."""
    import polars as pl
    from decide_latency import machine as latency_machine

    return {**latency_machine(), "polars": pl.__version__}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--households", type=int, default=1_000_000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--chunk-size", type=int, default=250_000)
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "policy_engine_bench")
    ap.add_argument("--policy", choices=["shared", "anhui", "both"], default="both")
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--workers", type=int, default=None,
                    help="chunks screen decides at once (default: screen's own, one per core, at most 4)")
    ap.add_argument("--worker", choices=["ours", "memory", "flat", "polars"], help=argparse.SUPPRESS)
    ap.add_argument("--source", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--which", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker == "ours":
        print(json.dumps(worker_ours(a.which, a.source, a.out, a.chunk_size, a.workers)))
        return 0
    if a.worker == "memory":
        print(json.dumps(worker_memory(a.which, a.source, a.chunk_size)))
        return 0
    if a.worker == "flat":
        print(json.dumps(worker_flat(a.which, a.source, a.chunk_size)))
        return 0
    if a.worker == "polars":
        print(json.dumps(worker_polars(a.source, a.out)))
        return 0

    n = a.households
    policies = ["shared", "anhui"] if a.policy == "both" else [a.policy]
    report: dict[str, Any] = {"machine": machine(), "households": n, "reps": a.reps, "rows": []}
    print(f"# machine: {report['machine']}")
    rows: list[dict[str, Any]] = report["rows"]

    def measure(policy: str, engine: str, args: list[str], **extra: Any) -> list[dict[str, Any]]:
        runs = [_subprocess(args) for _ in range(a.reps)]
        seconds = statistics.median(r["seconds"] for r in runs)
        rows.append({"policy": policy, "engine": engine, "households_per_s": n / seconds,
                     "seconds": [round(r["seconds"], 3) for r in runs],
                     "peak_rss_mb": max(r["peak_rss_mb"] for r in runs), **extra})
        if "compile_s" in runs[0]:  # compiling the kernel (the first run) or loading it (the others)
            rows[-1]["kernel_compile_s"] = [round(r["compile_s"], 2) for r in runs]
        return runs

    for policy in policies:
        source = ensure_data(policy, n, a.data)
        out = a.data / f"out-{policy}.parquet"
        runs = measure(policy, "policy_engine screen, Parquet to Parquet",
                       ["--worker", "ours", "--which", policy, "--source", str(source), "--out", str(out),
                        "--chunk-size", str(a.chunk_size)] + (["--workers", str(a.workers)] if a.workers else []))
        rows[-1].update(fallback_rows=runs[0]["fallback_rows"], errors=runs[0]["errors"], workers=runs[0]["workers"])
        rows[-1]["engine"] += f" ({runs[0]['workers']} workers)"
        measure(policy, "policy_engine in memory (check + decide)",
                ["--worker", "memory", "--which", policy, "--source", str(source), "--chunk-size", str(a.chunk_size)])
        measure(policy, "policy_engine from flat tables (check + decide)",
                ["--worker", "flat", "--which", policy, "--source", str(source), "--chunk-size", str(a.chunk_size)])
        if policy != "shared":
            continue
        hand = a.data / "out-polars.parquet"
        runs = measure(policy, "hand-written polars, Parquet to Parquet",
                       ["--worker", "polars", "--source", str(source), "--out", str(hand)])
        rows[-1]["rows_differing_from_ours"] = check_equal(out, hand)
        each = [r["compute_s"] for r in runs]  # the same runs, without reading and writing
        rows.append({"policy": policy, "engine": "hand-written polars, in memory (compute only)",
                     "households_per_s": n / statistics.median(each), "seconds": [round(x, 3) for x in each],
                     "peak_rss_mb": rows[-1]["peak_rss_mb"]})
        if a.no_peers:
            continue
        import peers

        for engine, dist in (("openfisca", "openfisca-core"), ("policyengine", "policyengine-core")):
            try:
                runs = [worker_peer(engine, source, a.data / f"out-{engine}.parquet") for _ in range(a.reps)]
            except (RuntimeError, OSError) as exc:
                print(f"# {dist}: not measured ({exc})")
                continue
            version = peers.installed_versions(peers.VENVS[engine].python, [dist]).get(dist)
            for label, part in (("Parquet to Parquet", ("seconds",)), ("build + calc only", ("build_s", "calc_s"))):
                each = [sum(r[k] for k in part) for r in runs]
                rows.append({"policy": policy, "engine": f"{dist} {version}, {label}",
                             "households_per_s": n / statistics.median(each), "seconds": [round(x, 3) for x in each],
                             "peak_rss_mb": max(r["peak_rss_mb"] for r in runs)})
    print(f"\n{'policy':8} {'engine':58} {'households/s':>13} {'peak MB':>8}  seconds per run")
    for r in rows:
        print(f"{r['policy']:8} {r['engine']:58} {r['households_per_s']:13,.0f} {r['peak_rss_mb']:8.0f}  {r['seconds']}")
    print("\nkernel compiled or loaded before each run's clock (seconds; a first compile, then the disk cache):")
    for r in rows:
        if "kernel_compile_s" in r:
            print(f"  {r['policy']:8} {r['engine'][:58]:58} {r['kernel_compile_s']}")
    def shared(prefix: str) -> dict[str, Any] | None:
        return next((r for r in rows if r["policy"] == "shared" and r["engine"].startswith(prefix)), None)

    screen, memory, flat = shared("policy_engine screen"), shared("policy_engine in memory"), shared("policy_engine from flat")
    hand_memory = shared("hand-written polars, in memory")
    if screen and memory and flat:
        print("\nratios on the shared rule (ours / theirs, higher is better for us; like with like):")
        for r in rows:
            if r["policy"] != "shared" or r["engine"].startswith("policy_engine"):
                continue
            in_memory = "build + calc" in r["engine"] or "in memory" in r["engine"]
            for mine in ((memory, flat) if in_memory else (screen,)):
                print(f"  {mine['engine'][:58]:58} / {r['engine']:52} {mine['households_per_s'] / r['households_per_s']:7.2f}")
        if hand_memory:  # how far the rule written by hand gets: the ceiling of any ratio above
            for r in rows:
                if r["policy"] == "shared" and "build + calc" in r["engine"]:
                    print(f"  {hand_memory['engine'][:58]:58} / {r['engine']:52} "
                          f"{hand_memory['households_per_s'] / r['households_per_s']:7.2f}")
    if a.json:
        a.json.write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0

if __name__ == "__main__":
    sys.exit(main())
