#!/usr/bin/env python3
"""DBOS comparison for retrace's runtime bench (benches/benches/runtime.rs).

Measures: one DBOS workflow of N sequential steps (default 1000), each a
@DBOS.step() returning 1024 bytes of distinct, seeded pseudo-random prose. DBOS
checkpoints each step's output in its PostgreSQL system database before the
workflow continues, so every step is durable before the next starts. The wall
time of each step call is measured from inside the workflow (before/after the
call). Prints N, median and p99 per-step time (ms), total, the DBOS and
PostgreSQL versions, and, as a floor, the median time of a bare autocommit
INSERT of 1 KiB into the same server. DBOS runs with its default durability
settings (nothing here changes synchronous_commit or similar).

Run:
    python3 -m venv /tmp/dbosenv && /tmp/dbosenv/bin/pip install dbos
    source /tmp/pgenv   # exports RETRACE_TEST_PG (postgres://user@host:port/db) and PGPASSWORD
    psql "$RETRACE_TEST_PG" -c 'CREATE DATABASE dbos_bench'   # once
    /tmp/dbosenv/bin/python benches/scripts/dbos_steps.py [N] [--db dbos_bench]

The database named by --db (default dbos_bench) is used as DBOS's system
database on the host/port/user of RETRACE_TEST_PG, with PGPASSWORD.
"""

import argparse
import os
import random
import statistics
import time
from importlib.metadata import version
from urllib.parse import quote, urlsplit

import sqlalchemy as sa
from dbos import DBOS, DBOSConfig

WORDS = (
    "the a of and to in is was that for on with as by at from this it be are "
    "river stone window garden letter morning quiet distant old bright small "
    "walked carried noticed opened followed remembered turned waited wrote "
    "slowly again never perhaps almost later beneath across toward between "
    "house road field lamp table door paper voice light shadow winter summer"
).split()

TEXT_BYTES = 1024
durations_ns: list = []  # per-step wall times, filled by the workflow


def prose(i: int) -> str:
    """Exactly TEXT_BYTES bytes of ASCII prose-like text, distinct for each i."""
    rng = random.Random(0x5EED_0000 + i)
    parts = [f"Step {i}."]
    length = len(parts[0])
    while length < TEXT_BYTES:
        sentence = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 14)))
        sentence = " " + sentence[0].upper() + sentence[1:] + "."
        parts.append(sentence)
        length += len(sentence)
    return "".join(parts)[:TEXT_BYTES]


@DBOS.step()
def produce(i: int) -> str:
    return prose(i)


@DBOS.workflow()
def run_steps(n: int) -> int:
    total_len = 0
    for i in range(n):
        t0 = time.perf_counter_ns()
        out = produce(i)
        durations_ns.append(time.perf_counter_ns() - t0)
        total_len += len(out)
    return total_len


def db_url(dbname: str) -> str:
    base = urlsplit(os.environ["RETRACE_TEST_PG"])
    user = quote(base.username or "postgres", safe="")
    password = os.environ.get("PGPASSWORD")
    auth = f"{user}:{quote(password, safe='')}" if password else user
    host = base.hostname or "127.0.0.1"
    port = base.port or 5432
    return f"postgresql://{auth}@{host}:{port}/{dbname}"


def percentile(sorted_ms: list, p: float) -> float:
    # nearest-rank percentile
    k = max(0, min(len(sorted_ms) - 1, int(-(-p * len(sorted_ms) // 100)) - 1))
    return sorted_ms[k]


def commit_floor_ms(url: str, samples: int = 200) -> float:
    """Median time of one autocommit INSERT of 1 KiB (one durable commit)."""
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.connect() as c:
        c.execute(sa.text("CREATE SCHEMA IF NOT EXISTS bench_floor"))
        c.execute(sa.text("CREATE TABLE IF NOT EXISTS bench_floor.probe (i int, t text)"))
        c.commit()
        times = []
        for i in range(samples):
            t0 = time.perf_counter_ns()
            c.execute(sa.text("INSERT INTO bench_floor.probe VALUES (:i, :t)"),
                      {"i": i, "t": prose(i)})
            c.commit()
            times.append((time.perf_counter_ns() - t0) / 1e6)
        c.execute(sa.text("TRUNCATE bench_floor.probe"))
        c.commit()
    engine.dispose()
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("n", nargs="?", type=int, default=1000, help="steps (default 1000)")
    ap.add_argument("--db", default="dbos_bench", help="database name (default dbos_bench)")
    args = ap.parse_args()

    url = db_url(args.db)
    config: DBOSConfig = {
        "name": "retrace-dbos-bench",
        "system_database_url": url,
        "log_level": "WARNING",
    }
    DBOS(config=config)
    DBOS.launch()
    try:
        with sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1)).connect() as c:
            pg = c.execute(sa.text("SHOW server_version")).scalar()
            sc = c.execute(sa.text("SHOW synchronous_commit")).scalar()
            fs = c.execute(sa.text("SHOW fsync")).scalar()
        floor = commit_floor_ms(url)

        durations_ns.clear()
        t0 = time.perf_counter()
        total_len = run_steps(args.n)
        total_s = time.perf_counter() - t0
        assert total_len == args.n * TEXT_BYTES, total_len
        assert len(durations_ns) == args.n

        ms = sorted(d / 1e6 for d in durations_ns)
        print(f"dbos {version('dbos')}, PostgreSQL {pg} (synchronous_commit={sc}, fsync={fs})")
        print(f"bare 1 KiB INSERT+commit median: {floor:.3f} ms")
        print(f"N={args.n} steps of {TEXT_BYTES} B: median {statistics.median(ms):.3f} ms/step, "
              f"p99 {percentile(ms, 99):.3f} ms, max {ms[-1]:.3f} ms, "
              f"total {total_s:.3f} s (workflow call incl. start/finish)")
    finally:
        DBOS.destroy()


if __name__ == "__main__":
    main()
