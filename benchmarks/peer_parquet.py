#!/usr/bin/env python3
"""OpenFisca / policyengine-core on the shared dibao rule, Parquet to Parquet (run in a peer venv).

    BENCH_ENGINE=policyengine /tmp/pe/bin/python benchmarks/peer_parquet.py IN.parquet OUT.parquet

Called by ``batch_throughput.py`` so that the peers are timed on the same job as ours: read the
households Parquet file (the facts layout ``batch_throughput.py`` writes), build the peer's
vectorised simulation with the model of ``shared/bench/peers/openfisca_dibao.py`` (imported,
not copied), calculate eligibility and benefit, write one row per household to Parquet. Prints
one JSON line: seconds for read, build, calc, write and in all, and peak memory. The peer needs
numpy (it has it) and polars (``benchmarks/peers.py --install`` adds it) to read and write files.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path


def main() -> int:
    source, out = Path(sys.argv[1]), Path(sys.argv[2])
    peers = Path(os.environ.get("PE_BENCH_PEERS_DIR") or Path(__file__).resolve().parents[2] / "shared" / "bench" / "peers")
    sys.path.insert(0, str(peers))
    import numpy as np
    import openfisca_dibao as model  # the peer's own model and simulation builder
    import polars as pl

    model.import_engine()
    tbs, province = model.build_tax_benefit_system()
    start = time.perf_counter()
    frame = pl.read_parquet(source)
    members = frame.select(pl.col("members").list.len().alias("size"))
    flat = frame.select(pl.int_range(pl.len()).alias("h"), "members").explode("members").select(
        "h",
        pl.col("members").struct.field("income").struct.field("wages").cast(pl.Float64).alias("wage"),
        pl.col("members").struct.field("income").struct.field("other_counted").cast(pl.Float64).alias("other"))
    d = {
        "sizes": members["size"].to_numpy(),
        "wage": flat["wage"].to_numpy(),
        "other": flat["other"].to_numpy(),
        "deposits": frame["assets"].struct.field("deposits").cast(pl.Float64).to_numpy(),
        "province": np.full(frame.height, 2),  # the flat rule: every household gets the standard 700
        "person_hh": flat["h"].to_numpy(),
    }
    read = time.perf_counter()
    sim = model.build_vector_simulation(tbs, d, province)
    built = time.perf_counter()
    benefit = sim.calculate("dibao_benefit", model.PERIOD)
    eligible = sim.calculate("dibao_eligible", model.PERIOD)
    calculated = time.perf_counter()
    pl.DataFrame({"household_id": frame["household_id"], "eligible": eligible, "amount": benefit}).write_parquet(out)
    done = time.perf_counter()
    print(json.dumps({"seconds": done - start, "read_s": read - start, "build_s": built - read,
                      "calc_s": calculated - built, "write_s": done - calculated, "households": frame.height,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
