"""Many calls in flight: wall time against the ideal, side by side with Optuna in one run.

The objective awaits a fixed time (a remote API); the ideal wall time is
``evals / concurrency * wait``. Every asyncopt row also reports the longest stretch the
event loop was held, measured by a ticker task that sleeps 1 ms at a time.
Space: the 10-d mixed space of the suggestion benchmark. Optuna runs its default TPE
with ``n_jobs`` threads and ``time.sleep`` in the objective.

Run:  python benchmarks/bench_fanout.py [--quick] [--no-write]
"""

from __future__ import annotations

import argparse
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

NOTE = """\
Each pass of the loop records the results that arrived and fills the free slots with one
suggestion call and one storage round trip, and every slot holds its next trial, taken one
batch ahead, so a call that returns is followed at once by the next while the loop records
it and the TPE thread proposes the batch after (about 5 ms of loop work per pass of 100+
trials). At 200 and more in flight the TPE thread is busy most of the run: each proposal of
a batch scores its 24 candidates against all of g's kernels (about 0.4 ms at N =
1,000-2,000), and each call predicts the loss of every pending trial afresh (about 0.08 ms
per pending trial). The longest stretch varies between runs (11-28 ms at 200 in flight):
the loop thread waits for the interpreter lock while the TPE thread holds it. Random search
at 200 in flight shows the loop alone."""


def asyncopt_run(
    algo: Any, concurrency: int, evals: int, wait: float, *, storage: str, backend: str
) -> tuple[float, float]:
    """Wall seconds of the search, and the longest stretch the event loop was held."""
    longest = 0.0

    async def objective(params: dict[str, Any]) -> float:
        await anyio.sleep(wait)
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

    took = anyio.run(main, backend=backend)
    return took, longest


def optuna_run(concurrency: int, evals: int, wait: float) -> float:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=1))

    def objective(trial: Any) -> float:
        params = mixed10_optuna_params(trial)
        time.sleep(wait)
        return mixed10_loss(params)

    started = time.perf_counter()
    study.optimize(objective, n_trials=evals, n_jobs=concurrency)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="skip the 1,000-in-flight row")
    parser.add_argument("--no-optuna", action="store_true")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    lines = [
        f"Measured on {machine()}. Wall time as a multiple of the ideal "
        "(evals / concurrency x wait); longest event-loop stretch in ms.",
        "",
        "| case | in flight | evals x wait | ideal | wall | x ideal | longest stretch |",
        "|---|---|---|---|---|---|---|",
    ]

    def row(case: str, concurrency: int, evals: int, wait: float, took: float, held: Any) -> None:
        ideal = evals / concurrency * wait
        stretch = "" if held is None else f"{held * 1000:.1f} ms"
        lines.append(
            f"| {case} | {concurrency} | {evals:,} x {wait * 1000:.0f} ms | {ideal:.1f} s "
            f"| {took:.2f} s | {took / ideal:.2f}x | {stretch} |"
        )
        print(lines[-1], flush=True)

    asyncopt_run(ao.tpe.suggest, 10, 50, 0.0, storage="memory://", backend="asyncio")  # warm up
    cases = [*CASES] if args.quick else [*CASES, LARGE]
    for concurrency, evals, wait in cases:
        took, held = asyncopt_run(
            ao.tpe.suggest, concurrency, evals, wait, storage="memory://", backend="asyncio"
        )
        row("asyncopt TPE, memory", concurrency, evals, wait, took, held)
    took, held = asyncopt_run(
        ao.rand.suggest, 200, 2000, 0.1, storage="memory://", backend="asyncio"
    )
    row("asyncopt random, memory", 200, 2000, 0.1, took, held)
    took, held = asyncopt_run(ao.tpe.suggest, 20, 200, 0.05, storage="memory://", backend="trio")
    row("asyncopt TPE, memory, trio", 20, 200, 0.05, took, held)
    with tempfile.TemporaryDirectory() as directory:
        url = f"sqlite:///{directory}/fanout.db"
        took, held = asyncopt_run(ao.tpe.suggest, 200, 2000, 0.1, storage=url, backend="asyncio")
        row("asyncopt TPE, SQLite", 200, 2000, 0.1, took, held)
    if not args.no_optuna:
        row("Optuna 5 TPE, threads", 20, 200, 0.05, optuna_run(20, 200, 0.05), None)
        row("Optuna 5 TPE, threads", 200, 1000, 0.1, optuna_run(200, 1000, 0.1), None)
    if not args.no_write:
        lines += ["", NOTE]
        write_section("fanout", "## Many calls in flight\n\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
