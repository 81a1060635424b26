"""The results store's own speed, SQLite against PostgreSQL: results stored per second in batches, by one
writer and by several at once (each its own store and connection, as receivers are).

    python benchmarks/bench_store.py --postgres postgresql://edgekit@127.0.0.1:5432/bench [--results 6000]
        [--batch 32] [--writers 1 3] [--runs 3]

The PostgreSQL database must exist and may be emptied (its tables are dropped before each run); the SQLite
baseline is a new file in a temporary folder, measured in the same process. Prints the median of ``--runs``
runs and PostgreSQL's rate as a ratio of SQLite's. Writes take turns in both back ends (docs/server.md,
PostgreSQL), so more writers share one rate; this says how many frames per second one database absorbs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from edgekit.server.store import Result, ResultStore, open_database

TABLES = ("results", "deadletters", "deadletter_totals", "auth_boots", "counters", "seq_ranges", "gaps",
          "schema_version")


def _results(writer: int, n: int) -> list[Result]:
    return [Result(f"cam-{writer}", 1, seq, "ab" * 32, 3, "3", 0.9, [("3", 0.9), ("1", 0.05), ("7", 0.01)],
                   1, 2, 3, 32) for seq in range(n)]


def one_run(db: str, total: int, batch: int, writers: int) -> float:
    """Results per second stored by ``writers`` threads, each storing ``total / writers`` results."""
    stores = [ResultStore(db, receiver=f"rx-{w}") for w in range(writers)]
    work = [_results(w, total // writers) for w in range(writers)]
    counters = {"received": 1, "valid": 1, "batches": 1, "deadlettered": 0}  # as the receiver records each batch

    def write(store: ResultStore, results: list[Result]) -> None:
        for i in range(0, len(results), batch):
            store.insert(results[i:i + batch], counters)

    threads = [threading.Thread(target=write, args=pair) for pair in zip(stores, work)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rate = sum(len(w) for w in work) / (time.perf_counter() - started)
    for store in stores:
        store.close()
    return rate


def _empty_postgres(url: str) -> None:
    database = open_database(url)
    try:
        for table in TABLES:
            database.conn.execute(f"DROP TABLE IF EXISTS {table}")
    finally:
        database.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", required=True, help="URL of a PostgreSQL database the benchmark may empty")
    parser.add_argument("--results", type=int, default=6000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--writers", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(f"{'writers':>7} {'SQLite results/s':>17} {'PostgreSQL results/s':>21} {'ratio':>6}")
    for writers in args.writers:
        sqlite_rates, postgres_rates = [], []
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory() as folder:
                sqlite_rates.append(one_run(str(Path(folder) / "r.sqlite"), args.results, args.batch, writers))
            _empty_postgres(args.postgres)
            postgres_rates.append(one_run(args.postgres, args.results, args.batch, writers))
        s, p = statistics.median(sqlite_rates), statistics.median(postgres_rates)
        print(f"{writers:>7} {s:>17,.0f} {p:>21,.0f} {p / s:>6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
