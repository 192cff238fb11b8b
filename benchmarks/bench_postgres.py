"""PostgreSQL storage throughput, side by side with Optuna 5's RDB storage on the same server.

1. Random search, a free objective, one process, concurrency 1: trials per second of
   asyncopt (asyncio and trio) and of Optuna's ``RDBStorage`` (SQLAlchemy with psycopg 3,
   ``postgresql+psycopg://``), next to asyncopt in memory.
2. 4 processes x concurrency 8 on one study, an objective that waits 20 ms: trials per
   second against the ideal (every slot busy all the time); the study must hold exactly
   the budget with dense tids, every trial OK.

The server is a private one started for the run (tests/postgres_server.py) with
PostgreSQL's default durability settings (``fsync`` and ``synchronous_commit`` on), or the
one named by ``--url``. Each asyncopt run gets a schema of its own; each Optuna run a
database of its own.

Run:  python benchmarks/bench_postgres.py [--trials 1000] [--optuna-trials 100] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import asyncopt as ao
from _report import machine, write_section
from bench_storage import (
    CONCURRENCY,
    PAUSE,
    PROCESSES,
    SPACE,
    asyncopt_one_process_waiting,
    asyncopt_parallel,
    free_async,
    optuna_single,
)
from postgres_server import PostgresServer, running_server, with_schema

TARGET_RATIO = 20.0


def fresh_schema(server_url: str) -> str:
    """``server_url`` naming a new, empty schema."""
    return with_schema(server_url, f"bench_{uuid.uuid4().hex[:10]}")


def fresh_database(server_url: str) -> str:
    """A ``postgresql+psycopg://`` URL (SQLAlchemy's form) of a new, empty database."""
    name = f"optuna_{uuid.uuid4().hex[:10]}"
    parts = urlsplit(server_url)
    with psycopg.connect(urlunsplit((*parts[:3], "", "")), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return urlunsplit(("postgresql+psycopg", parts.netloc, f"/{name}", "", ""))


def free_run(url: str, trials: int, backend: str) -> float:
    """Trials per second of ``trials`` free trials, random search, concurrency 1."""

    async def run() -> float:
        started = time.perf_counter()
        result = await ao.minimize(
            free_async,
            SPACE,
            algo=ao.rand.suggest,
            max_evals=trials,
            storage=url,
            study="bench",
            seed=1,
        )
        elapsed = time.perf_counter() - started
        assert len(result.trials) == trials
        return trials / elapsed

    return anyio.run(run, backend=backend)


def round_trip_ms(server_url: str, n: int = 500) -> tuple[float, float]:
    """Milliseconds per bare ``SELECT 1`` and per one-row update committed alone."""
    parts = urlsplit(server_url)
    with psycopg.connect(urlunsplit((*parts[:3], "", "")), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS calibration (id int PRIMARY KEY, v int)")
        conn.execute("DELETE FROM calibration")
        conn.execute("INSERT INTO calibration VALUES (1, 0)")
        started = time.perf_counter()
        for _ in range(n):
            conn.execute("SELECT 1").fetchone()
        read = (time.perf_counter() - started) / n * 1e3
        started = time.perf_counter()
        for _ in range(n):
            conn.execute("UPDATE calibration SET v = v + 1 WHERE id = 1")
        write = (time.perf_counter() - started) / n * 1e3
    return read, write


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--parallel-trials", type=int, default=3200)
    parser.add_argument("--optuna-trials", type=int, default=100)
    parser.add_argument("--url", help="a PostgreSQL server to use instead of a private one")
    parser.add_argument("--no-write", action="store_true", help="print, do not edit the docs")
    options = parser.parse_args()
    ideal = PROCESSES * CONCURRENCY / PAUSE

    server: AbstractContextManager[Any] = (
        nullcontext(options.url) if options.url else running_server(fast=False)
    )
    load_before = os.getloadavg()[0]
    with server as started:
        url = started.url if isinstance(started, PostgresServer) else started
        read_ms, write_ms = round_trip_ms(url)
        rows: list[tuple[str, float]] = []
        for backend in ("asyncio", "trio"):
            # The best of three: the run least disturbed by other load on the machine.
            rate = max(free_run(fresh_schema(url), options.trials, backend) for _ in range(3))
            rows.append((f"asyncopt, PostgreSQL, {backend}", rate))
            print(rows[-1], flush=True)
        memory = max(free_run("memory://", options.trials, "asyncio") for _ in range(3))
        theirs = max(
            optuna_single(fresh_database(url), options.optuna_trials, tpe=False) for _ in range(2)
        )
        print("optuna", theirs, flush=True)
        one_trials = options.parallel_trials // PROCESSES
        one_process = asyncopt_one_process_waiting(fresh_schema(url), one_trials)
        parallel, errors, cpu_per_trial = asyncopt_parallel(
            fresh_schema(url), options.parallel_trials
        )
        assert not errors, errors
        print("parallel", parallel, cpu_per_trial, flush=True)
    load = f"{load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
    best = max(rate for _, rate in rows)
    ratio = best / theirs
    lines = [
        "## PostgreSQL",
        "",
        "`python benchmarks/bench_postgres.py`: asyncopt's `postgresql://` storage and",
        "Optuna 5.0.0's RDB storage (SQLAlchemy, `postgresql+psycopg://`) on the same",
        "PostgreSQL 15 server in one run, started for the run on this machine with the",
        f"default durability settings (fsync and synchronous commit on). Machine: {machine()}.",
        f"On this server a bare `SELECT 1` took {read_ms:.3f} ms and a one-row update",
        f"committed alone {write_ms:.3f} ms.",
        "",
        f"**{options.trials:,} free trials, random search, one process, concurrency 1**"
        f" (best of three; Optuna {options.optuna_trials} trials, best of two):",
        "",
        "| storage | trials/s |",
        "|---|---:|",
        *(f"| {name} | {rate:,.0f} |" for name, rate in rows),
        f"| Optuna 5, RDB storage on the same server | {theirs:,.1f} |",
        f"| asyncopt, `memory://` (reference) | {memory:,.0f} |",
        "",
        f"asyncopt is **{ratio:.0f}x** Optuna's PostgreSQL storage (target {TARGET_RATIO:.0f}x).",
        "",
        f"**{PROCESSES} processes x concurrency {CONCURRENCY}, an objective that awaits 20 ms,"
        f" {options.parallel_trials:,} trials:** {parallel:,.0f} trials/s,"
        f" {parallel / ideal:.0%} of the ideal {ideal:,.0f}/s (target 80 %). The study held"
        f" exactly {options.parallel_trials:,} trials with dense tids, every one OK. The four"
        f" processes spent {cpu_per_trial:.2f} ms of CPU per trial (the server's own CPU not"
        f" counted). One process alone ({one_trials:,} trials) reached {one_process:,.0f}/s"
        f" ({one_process / (CONCURRENCY / PAUSE):.0%} of its ideal).",
        "",
        "A trial costs one transaction: lock the study's row, record the results of the",
        "process's workers that finished meanwhile, create their next trials, read the",
        "other workers' changes, commit (six statements on one connection, on a worker",
        "thread: psycopg's synchronous calls cost less than half of its asyncio ones).",
        "Optuna's storage makes many round trips and commits per trial (create the",
        "trial, each parameter, each value, the state), each through SQLAlchemy.",
        f"The machine was shared with other jobs (load average {load}).",
    ]
    markdown = "\n".join(lines)
    print(markdown)
    if not options.no_write:
        write_section("postgresql", markdown)


if __name__ == "__main__":
    main()
