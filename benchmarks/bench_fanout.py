"""Many calls in flight: wall time against the ideal, side by side with Optuna in one run.

The objective awaits a fixed time (a remote API); the ideal wall time is
``evals / concurrency * wait``. Every asyncopt row also reports the longest stretch the
event loop was held, measured by a ticker task that sleeps 1 ms at a time, and every row
the process's CPU seconds during the search. One row spreads the waits uniformly over
0.5-1.5 times the wait, so that calls end one at a time.
Space: the 10-d mixed space of the suggestion benchmark. Optuna runs its default TPE
with ``n_jobs`` threads and ``time.sleep`` in the objective.

Run:  python benchmarks/bench_fanout.py [--quick] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))
import asyncopt as ao
from _report import machine, write_section
from bench_orchestrator import MIXED10, mixed10_loss, mixed10_optuna_params

# (concurrency, evals, seconds each call waits)
CASES = [(20, 200, 0.05), (50, 500, 0.1), (100, 1000, 0.1), (200, 2000, 0.1)]
LARGE = (1000, 10000, 1.0)
UNEVEN = (200, 1400, 1.0)

NOTE = """\
Each pass of the loop records the results that arrived and fills the free slots with one
suggestion call and one storage round trip. Every slot holds its next trial, taken one
batch ahead, so a call that returns is followed at once by the next while the loop records
it and the TPE thread proposes the batch after. When calls end together (every row but the
uneven one) one suggestion call proposes a whole wave: 200 trials from one fitted model at
200 in flight, each trial's loss predicted once, while it runs. The TPE thread then needs
about 85-115 ms a call at N = 600-1,800, nearly the 100 ms a wave lasts, and paces the run.
Where a call's time goes at 200 in flight (N = 1,400): l's and g's densities at the 4,800
candidates about 40 %, the lies (each proposal joins g of the later ones of its batch, one
small mixture per proposal) about 35 %, the believer about 15 %, the fit and the rest about
10 %. At 1,000 in flight g's densities take most of a call (1.8 s of a 1 s wave at N =
9,000). With uneven waits calls end one at a time and each pass proposes a few trials,
each seeing the others in flight as believed: most of the CPU then goes to predicting the
pending trials again at every pass (about 70 % of the TPE thread's time in the uneven
row), but the TPE thread keeps up. The longest stretch varies between runs: the loop thread
waits for the interpreter lock while the TPE thread holds it. Random search at 200 in
flight shows the loop alone."""


def asyncopt_run(
    algo: Any,
    concurrency: int,
    evals: int,
    wait: float,
    *,
    storage: str,
    backend: str,
    uneven: bool = False,
) -> tuple[float, float, float]:
    """Wall seconds of the search, the longest stretch the event loop was held, and the
    process's CPU seconds; ``uneven`` spreads each wait over 0.5-1.5 times ``wait``."""
    longest = 0.0
    spread = random.Random(0)

    async def objective(params: dict[str, Any]) -> float:
        await anyio.sleep(wait * (0.5 + spread.random()) if uneven else wait)
        return mixed10_loss(params)

    async def ticker() -> None:
        nonlocal longest
        last = time.perf_counter()
        while True:
            await anyio.sleep(0.001)
            now = time.perf_counter()
            longest = max(longest, now - last - 0.001)
            last = now

    async def main() -> float:
        async with anyio.create_task_group() as group:
            group.start_soon(ticker)
            started = time.perf_counter()
            result = await ao.minimize(
                objective,
                MIXED10,
                algo=algo,
                max_evals=evals,
                concurrency=concurrency,
                storage=storage,
                seed=1,
            )
            took = time.perf_counter() - started
            group.cancel_scope.cancel()
        assert len(result.trials) == evals
        return took

    cpu = time.process_time()
    took = anyio.run(main, backend=backend)
    return took, longest, time.process_time() - cpu


def optuna_run(concurrency: int, evals: int, wait: float) -> tuple[float, float]:
    """Wall and CPU seconds of Optuna's search."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=1))

    def objective(trial: Any) -> float:
        params = mixed10_optuna_params(trial)
        time.sleep(wait)
        return mixed10_loss(params)

    started, cpu = time.perf_counter(), time.process_time()
    study.optimize(objective, n_trials=evals, n_jobs=concurrency)
    return time.perf_counter() - started, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="skip the 1,000-in-flight and uneven rows"
    )
    parser.add_argument("--no-optuna", action="store_true")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    lines = [
        f"Measured on {machine()}. Wall time as a multiple of the ideal "
        "(evals / concurrency x wait); longest event-loop stretch in ms; the process's CPU "
        "seconds during the search.",
        "",
        "| case | in flight | evals x wait | ideal | wall | x ideal | longest stretch | CPU |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def row(
        case: str, concurrency: int, evals: int, wait: float, timing: tuple[float, ...]
    ) -> None:
        took, cpu = timing[0], timing[-1]
        ideal = evals / concurrency * wait
        stretch = f"{timing[1] * 1000:.1f} ms" if len(timing) == 3 else ""
        lines.append(
            f"| {case} | {concurrency} | {evals:,} x {wait * 1000:.0f} ms | {ideal:.1f} s "
            f"| {took:.2f} s | {took / ideal:.2f}x | {stretch} | {cpu:.2f} s |"
        )
        print(lines[-1], flush=True)

    asyncopt_run(ao.tpe.suggest, 10, 50, 0.0, storage="memory://", backend="asyncio")  # warm up
    cases = [*CASES] if args.quick else [*CASES, LARGE]
    for concurrency, evals, wait in cases:
        timing = asyncopt_run(
            ao.tpe.suggest, concurrency, evals, wait, storage="memory://", backend="asyncio"
        )
        row("asyncopt TPE, memory", concurrency, evals, wait, timing)
    if not args.quick:
        concurrency, evals, wait = UNEVEN
        timing = asyncopt_run(
            ao.tpe.suggest, concurrency, evals, wait, storage="memory://", backend="asyncio",
            uneven=True,
        )  # fmt: skip
        row("asyncopt TPE, memory, uneven waits (0.5-1.5x)", concurrency, evals, wait, timing)
    timing = asyncopt_run(ao.rand.suggest, 200, 2000, 0.1, storage="memory://", backend="asyncio")
    row("asyncopt random, memory", 200, 2000, 0.1, timing)
    timing = asyncopt_run(ao.tpe.suggest, 20, 200, 0.05, storage="memory://", backend="trio")
    row("asyncopt TPE, memory, trio", 20, 200, 0.05, timing)
    with tempfile.TemporaryDirectory() as directory:
        url = f"sqlite:///{directory}/fanout.db"
        timing = asyncopt_run(ao.tpe.suggest, 200, 2000, 0.1, storage=url, backend="asyncio")
        row("asyncopt TPE, SQLite", 200, 2000, 0.1, timing)
    if not args.no_optuna:
        row("Optuna 5 TPE, threads", 20, 200, 0.05, optuna_run(20, 200, 0.05))
        row("Optuna 5 TPE, threads", 200, 1000, 0.1, optuna_run(200, 1000, 0.1))
    if not args.no_write:
        lines += [
            "",
            NOTE,
            "",
            f"The machine was shared with other jobs (load average {load:.1f} at the start, "
            f"{os.getloadavg()[0]:.1f} at the end).",
        ]
        write_section("fanout", "## Many calls in flight\n\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
