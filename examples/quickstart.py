"""Tune an "expensive remote model" with asyncopt: 100 trials, 16 in flight at once.

Run:  python examples/quickstart.py
"""

from __future__ import annotations

import math
import time
from typing import Any

import anyio

import asyncopt as ao
from asyncopt import hp, scope

space = {
    "lr": hp.loguniform("lr", math.log(1e-5), math.log(1e-1)),
    "layers": hp.uniformint("layers", 1, 4),
    "model": hp.choice(
        "model",
        [
            {"kind": "svm", "C": hp.lognormal("C", 0, 1)},
            {"kind": "tree", "depth": scope.int(hp.quniform("depth", 1, 10, 1))},
        ],
    ),
}


async def remote_validation_loss(params: dict[str, Any]) -> float:
    """Stands in for an HTTP call to a training service: awaits, then returns a loss."""
    await anyio.sleep(0.05)
    loss = (math.log10(params["lr"]) + 3) ** 2 / 4 + 0.05 * (params["layers"] - 2) ** 2
    model = params["model"]
    if model["kind"] == "svm":
        loss += 0.1 + 0.05 * abs(math.log(model["C"]))
    else:
        loss += 0.02 * abs(model["depth"] - 6)
    return loss


async def main() -> None:
    started = time.perf_counter()
    result = await ao.minimize(
        remote_validation_loss,
        space,
        algo=ao.tpe.suggest,
        max_evals=100,
        concurrency=16,
        seed=42,
    )
    elapsed = time.perf_counter() - started
    print(f"{len(result.trials)} trials in {elapsed:.2f} s (each call awaited 50 ms)")
    print(f"best loss:   {result.best_loss:.4f}")
    print(f"best params: {result.best_params}")


if __name__ == "__main__":
    anyio.run(main)
