"""MongoDB storage throughput through the wire protocol.

1. 1,000 trials of a free objective, random search, one process, concurrency 1: trials/s
   (asyncio with AsyncMongoClient and trio with the sync client on threads), next to the
   same run in memory.
2. 4 worker processes x concurrency 8 on one study, an objective that waits 20 ms:
   wall time and trials/s against the ideal (every slot busy all the time); checks that the
   study holds exactly ``max_evals`` trials with dense tids.

The server is the SecantusDB test server started on a free loopback port (a Python
MongoDB-wire-compatible server, so these are lower bounds for a real ``mongod``), or the
one named by ``--url`` / ``ASYNCOPT_TEST_MONGODB_URL``.

Run:  python benchmarks/bench_mongo.py [--quick] [--no-write] [--url mongodb://...]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
import uuid
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import asyncopt as ao
from _report import machine, write_section
from asyncopt import hp
from asyncopt.storage.base import TrialState
from asyncopt.storage.urls import open_storage
from mongo_server import running_server, with_database

SPACE = {
    "x": hp.uniform("x", -5, 5),
    "y": hp.uniform("y", -5, 5),
    "kind": hp.choice("kind", ["a", "b", "c"]),
}


def free(params: dict[str, Any]) -> float:
    return float(params["x"] ** 2 + params["y"] ** 2 + (params["kind"] != "a"))


async def waits_20ms(params: dict[str, Any]) -> float:
    await anyio.sleep(0.02)
    return free(params)


async def _free_async(params: dict[str, Any]) -> float:
    return free(params)


def free_run(storage: str, n: int, backend: str) -> float:
    """Trials per second of ``n`` free trials, random search, concurrency 1."""

    async def run() -> float:
        started = time.perf_counter()
        result = await ao.minimize(
            _free_async,
            SPACE,
            algo=ao.rand.suggest,
            max_evals=n,
            storage=storage,
            study="free",
            seed=1,
        )
        elapsed = time.perf_counter() - started
        assert len(result.trials) == n
        return n / elapsed

    return anyio.run(run, backend=backend)


def _worker(url: str, max_evals: int, concurrency: int, start: Any) -> None:
    start.wait()

    async def run() -> None:
        await ao.minimize(
            waits_20ms,
            SPACE,
            algo=ao.rand.suggest,
            max_evals=max_evals,
            concurrency=concurrency,
            storage=url,
            study="shared",
            seed=7,
        )

    anyio.run(run)


async def _check_study(url: str, max_evals: int) -> None:
    async with open_storage(url) as storage:
        trials = await storage.trials_since("shared", 0)
    tids = sorted(t.tid for t in trials)
    assert tids == list(range(len(tids))), "tids are not dense"
    budgeted = [t for t in trials if t.state is not TrialState.CANCELLED]
    assert len(budgeted) == max_evals, f"{len(budgeted)} budgeted trials, not {max_evals}"
    assert all(t.state is TrialState.OK for t in budgeted)


def shared_run(url: str, processes: int, concurrency: int, max_evals: int) -> float:
    """Wall seconds for ``processes`` workers to run ``max_evals`` trials of 20 ms."""
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    workers = [
        context.Process(target=_worker, args=(url, max_evals, concurrency, start))
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    time.sleep(2.0)  # let every interpreter import asyncopt before the clock starts
    started = time.perf_counter()
    start.set()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    assert all(worker.exitcode == 0 for worker in workers), "a worker failed"
    anyio.run(_check_study, url, max_evals)
    return elapsed


def round_trips(url: str, n: int = 200) -> tuple[float, float]:
    """Milliseconds per bare write ($inc of one document) and per read (by _id)."""
    import pymongo

    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(url)
    try:
        counters = client.get_default_database()["calibration"]
        counters.insert_one({"_id": 1, "value": 0})
        started = time.perf_counter()
        for _ in range(n):
            counters.find_one_and_update({"_id": 1}, {"$inc": {"value": 1}})
        write = (time.perf_counter() - started) / n * 1000
        started = time.perf_counter()
        for _ in range(n):
            counters.find_one({"_id": 1})
        read = (time.perf_counter() - started) / n * 1000
        return write, read
    finally:
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer trials, for a smoke run")
    parser.add_argument("--no-write", action="store_true", help="do not update the docs")
    parser.add_argument("--url", help="a MongoDB server to use instead of the test server")
    args = parser.parse_args()
    n_free = 200 if args.quick else 1000
    processes, concurrency = 4, 8
    max_evals = 160 if args.quick else 320

    server: AbstractContextManager[str] = nullcontext(args.url) if args.url else running_server()
    with server as base:

        def database() -> str:
            return with_database(base, f"asyncopt_bench_{uuid.uuid4().hex[:8]}")

        load_start = os.getloadavg()[0]
        write_ms, read_ms = round_trips(database())
        rows = []
        memory_rate = free_run("memory://", n_free, "asyncio")
        rows.append(("memory (reference)", "asyncio", memory_rate))
        for backend in ("asyncio", "trio"):
            rate = free_run(database(), n_free, backend)
            rows.append(("MongoDB (SecantusDB)", backend, rate))
            print(f"free trials, {backend}: {rate:.1f} trials/s", flush=True)
        elapsed = shared_run(database(), processes, concurrency, max_evals)
        load_end = os.getloadavg()[0]
    ideal = max_evals * 0.02 / (processes * concurrency)
    print(
        f"{processes} processes x concurrency {concurrency}, {max_evals} trials of 20 ms: "
        f"{elapsed:.2f} s ({max_evals / elapsed:.1f} trials/s; ideal {ideal:.2f} s)"
    )

    lines = [
        "## MongoDB",
        "",
        f"Measured with `python benchmarks/bench_mongo.py` on {machine()}, against the",
        "SecantusDB test server (a MongoDB-wire-compatible server written in Python, on the",
        "same machine), so every storage call is a real round trip through PyMongo and the",
        "wire protocol. A real `mongod` answers each call faster; read these as lower bounds.",
        "",
        f"**{n_free} free trials, random search, one process, concurrency 1:**",
        "",
        "| storage | event loop | trials/s |",
        "|---|---|---|",
        *(f"| {name} | {loop} | {rate:.0f} |" for name, loop, rate in rows),
        "",
        f"**{processes} processes x concurrency {concurrency} on one study, an objective "
        f"that awaits 20 ms, max_evals={max_evals}:** {elapsed:.2f} s wall, "
        f"{max_evals / elapsed:.0f} trials/s (ideal with every slot always busy: "
        f"{ideal:.2f} s, {max_evals / ideal:.0f} trials/s). The study held exactly "
        f"{max_evals} trials with dense tids 0..{max_evals - 1}.",
        "",
        "Each trial costs nine round trips: three reads to refresh the history (the seq",
        "counter, unstamped changes, new changes), and six writes (create: insert, take a",
        "seq, stamp it; finish: update, take a seq, stamp it). With several processes,",
        "creators racing for the same tid retry, which costs a failed insert each, and",
        "the four worker processes compete with the server for the two cores. asyncopt's",
        "own overhead per trial is the memory figure; the rest is the server.",
        "",
        f"For scale, on this server at the start of the run a bare write (`$inc` of one "
        f"document) took {write_ms:.1f} ms and a read by `_id` {read_ms:.1f} ms; writes "
        "to the trials collection (four indexes, conditional pipeline updates) cost "
        "several times that in SecantusDB's Python query engine. Load average "
        f"{load_start:.1f} at the start, {load_end:.1f} at the end (2 cores, shared "
        "with other jobs).",
    ]
    if args.quick or args.no_write:
        print("\n".join(lines))
    else:
        write_section("mongodb", "\n".join(lines))


if __name__ == "__main__":
    main()
