"""Several processes, one study, one SQLite file: the budget is shared exactly.

Each worker process calls `asyncopt.minimize` with the same storage URL and study name; the
storage hands out trials so that together they run exactly ``max_evals``, with unique,
dense trial ids. Start it again and the study resumes (then nothing is left to do).

Run:  python examples/multiprocess_sqlite.py [--workers 4] [--max-evals 200] [--file study.db]
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
from collections import Counter
from typing import Any

import anyio

import asyncopt as ao
from asyncopt import hp

space = {
    "lr": hp.loguniform("lr", math.log(1e-5), math.log(1e-1)),
    "dropout": hp.uniform("dropout", 0.0, 0.5),
    "optimizer": hp.choice("optimizer", ["sgd", "adam"]),
}


async def validation_loss(params: dict[str, Any]) -> float:
    """Stands in for a training job: waits a little, then returns a loss."""
    await anyio.sleep(0.02)
    loss = (math.log10(params["lr"]) + 3) ** 2 / 4 + (params["dropout"] - 0.2) ** 2
    return float(loss + (0.1 if params["optimizer"] == "sgd" else 0.0))


def worker(url: str, max_evals: int) -> None:
    """One process: run trials of the shared study until its budget is spent."""

    async def run() -> None:
        result = await ao.minimize(
            validation_loss,
            space,
            algo=ao.tpe.suggest,
            max_evals=max_evals,
            concurrency=4,
            storage=url,
            study="shared-study",
            seed=0,
        )
        mine = [t for t in result.trials if t.worker and f":{os.getpid()}:" in t.worker]
        print(f"worker {os.getpid()}: ran {len(mine)} of the study's trials")

    anyio.run(run)


async def summarize(url: str) -> None:
    async with ao.open_storage(url) as storage:
        trials = sorted(await storage.trials_since("shared-study"), key=lambda t: t.tid)
    per_process = Counter(t.worker.split(":")[1] for t in trials if t.worker)
    best = min(
        (t for t in trials if t.state is ao.TrialState.OK),
        key=lambda t: t.loss if t.loss is not None else math.inf,
    )
    print(f"{len(trials)} trials, tids {trials[0].tid}..{trials[-1].tid}")
    print("trials per process:", dict(per_process))
    print(f"best loss {best.loss:.4f} at trial {best.tid}: {dict(best.assignment)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--max-evals", type=int, default=200)
    parser.add_argument("--file", default="multiprocess_study.db")
    options = parser.parse_args()
    url = f"sqlite:///{options.file}"

    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=worker, args=(url, options.max_evals))
        for _ in range(options.workers)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    anyio.run(summarize, url)


if __name__ == "__main__":
    main()
