"""Build the images of docs/results.md from a real study: ``python docs/make_images.py``.

Runs a small search (a conditional space, some failing trials, four trials at a time)
a second study for the EDF comparison and a third whose trials report learning curves and
are pruned, then writes one PNG per plot kind into
docs/images/. The docs build runs this script, so every image shows what the code draws.
"""

from __future__ import annotations

import logging
import math
import pathlib
import sys

import anyio

import asyncopt as ao
from asyncopt import hp, plot

HERE = pathlib.Path(__file__).resolve().parent
IMAGES = HERE / "images"

SPACE = {
    "lr": hp.loguniform("lr", math.log(1e-4), math.log(1.0)),
    "layers": hp.uniformint("layers", 1, 4),
    "dropout": hp.uniform("dropout", 0.0, 0.6),
    "model": hp.choice(
        "model",
        [
            {"kind": "mlp"},
            {"kind": "cnn", "kernel": hp.quniform("kernel", 1, 7, 1)},
        ],
    ),
}


async def objective(params: dict) -> dict:
    """A made-up validation loss: best near lr=0.01, 3 layers, a cnn with kernel 3."""
    await anyio.sleep(0.005 + 0.004 * params["layers"])
    if params["lr"] > 0.5:
        raise RuntimeError("diverged: loss became NaN")
    loss = (math.log10(params["lr"]) + 2) ** 2 + 0.3 * (params["layers"] - 3) ** 2
    loss += 0.5 * params["dropout"]
    if params["model"]["kind"] == "cnn":
        loss += 0.2 * (params["model"]["kernel"] - 3) ** 2 - 0.4
    return {"loss": loss + 0.5, "accuracy": 1.0 / (1.0 + loss)}


async def training(params: dict, trial: ao.RunningTrial) -> float:
    """A made-up training run: the validation loss falls each epoch towards ``objective``'s."""
    final = (await objective(params))["loss"]
    for epoch in range(1, 13):
        loss = final + 2.0 / epoch
        await trial.report(loss, epoch)
        if await trial.should_prune():
            raise ao.TrialPruned()
    return loss


async def build(
    storage: ao.Storage,
) -> tuple[ao.OptimizationResult, ao.OptimizationResult, ao.OptimizationResult]:
    tpe = await ao.minimize(
        objective, SPACE, max_evals=120, concurrency=4, storage=storage, study="tpe", seed=7
    )
    rand = await ao.minimize(
        objective, SPACE, algo=ao.rand.suggest, max_evals=120, concurrency=4,
        storage=storage, study="random", seed=7,
    )  # fmt: skip
    pruned = await ao.minimize(
        training, SPACE, max_evals=60, concurrency=4, storage=storage, study="pruned",
        seed=7, pruner=ao.SuccessiveHalving(min_resource=1, reduction_factor=3),
    )  # fmt: skip
    return tpe, rand, pruned


def main(target: pathlib.Path = IMAGES) -> list[pathlib.Path]:
    # The failing trials are part of the example; their WARNING lines are not news here.
    logger = logging.getLogger("asyncopt")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        return _draw(target)
    finally:
        logger.setLevel(level)


def _draw(target: pathlib.Path) -> list[pathlib.Path]:
    async def run() -> tuple[ao.OptimizationResult, ao.OptimizationResult, ao.OptimizationResult]:
        async with ao.open_storage("memory://") as storage:
            return await build(storage)

    tpe, rand, pruned = anyio.run(run)
    target.mkdir(parents=True, exist_ok=True)
    figures = {
        "history": plot.plot_history(tpe.trials, title="study 'tpe'", log_scale=True),
        "slice": plot.plot_slice(tpe.trials, tpe.space),
        "parallel": plot.plot_parallel(tpe.trials, tpe.space),
        "contour": plot.plot_contour(tpe.trials, tpe.space, params=["lr", "layers"]),
        "importance": plot.plot_importance(
            rand.trials, rand.space, title="parameter importance (study 'random')"
        ),
        "edf": plot.plot_edf({"tpe": tpe.trials, "random": rand.trials}, log_scale=True),
        "timeline": plot.plot_timeline(tpe.trials[:40]),
        "intermediate": plot.plot_intermediate(pruned.trials, log_scale=True),
    }
    written = []
    for kind, figure in figures.items():
        path = target / f"{kind}.png"
        plot.save_figure(figure, path, dpi=80)
        written.append(path)
    return written


if __name__ == "__main__":
    for path in main(pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else IMAGES):
        print(f"wrote {path}")
