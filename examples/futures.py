"""Await futures from an executor — the pattern for Dask, Ray or any job system.

Dask's ``client.submit`` and Ray's ``.remote()`` hand back futures; to await one from
asyncopt's objective, wrap it: ``await asyncio.wrap_future(future)`` for a
``concurrent.futures.Future`` (Dask futures are awaitable directly inside an asynchronous
client; Ray object refs are awaitable under asyncio). This example uses a process pool from the
standard library so it runs anywhere, under asyncio or trio, by waiting on the future in a
worker thread.

Run:  python examples/futures.py
"""

from __future__ import annotations

import math
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

import anyio
import anyio.to_thread

import asyncopt as ao
from asyncopt import hp

space = {
    "x": hp.uniform("x", -3, 3),
    "y": hp.uniform("y", -3, 3),
}


def train(x: float, y: float) -> float:
    """A CPU-bound "training job" that runs in another process."""
    total = 0.0
    for i in range(20_000):
        total += math.sin(i) * 1e-9
    return (x - 1) ** 2 + (y + 0.5) ** 2 + total


async def wait_for(future: Future[float]) -> float:
    """Await a concurrent.futures.Future without blocking the event loop."""
    return await anyio.to_thread.run_sync(future.result)


async def main() -> None:
    with ProcessPoolExecutor(max_workers=2) as pool:

        async def objective(params: dict[str, Any]) -> float:
            return await wait_for(pool.submit(train, params["x"], params["y"]))

        result = await ao.minimize(objective, space, max_evals=40, concurrency=4, seed=3)
    print(f"best loss {result.best_loss:.4f} at {result.best_params}")


if __name__ == "__main__":
    anyio.run(main)
