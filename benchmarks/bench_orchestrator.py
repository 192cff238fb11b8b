"""Orchestrator overhead, side by side with Optuna and Hyperopt in one run.

1. 200 evaluations of an objective that waits 50 ms, 20 at a time, random search:
   wall time against the ideal 200 / 20 * 0.05 s = 0.5 s.
2. A free objective, 1,000 trials, random search, in memory: trials per second.
3. The same with TPE (each library's default TPE).
4. The same with TPE on the 10-d mixed space of the suggestion benchmark, against Optuna
   (Hyperopt's TPE needs minutes per run there and is left out).

Run:  python benchmarks/bench_orchestrator.py [--quick] [--no-write]
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))
import asyncopt as ao
from _report import machine, write_section
from asyncopt import hp
from problems import mixed10_space

SPACE = {
    "a": hp.uniform("a", -5, 5),
    "b": hp.uniform("b", -5, 5),
    "c": hp.uniform("c", 0, 1),
    "lr": hp.loguniform("lr", math.log(1e-5), math.log(1.0)),
    "act": hp.choice("act", ["relu", "tanh", "sigmoid"]),
}


def loss_of(a: float, b: float, c: float, lr: float, act: str) -> float:
    return a * a + (b - 1) ** 2 + c + abs(math.log10(lr) + 3) + (act != "relu")


def loss_of_params(params: dict[str, Any]) -> float:
    return loss_of(params["a"], params["b"], params["c"], params["lr"], params["act"])


def optuna_params(trial: Any) -> dict[str, Any]:
    return {
        "a": trial.suggest_float("a", -5, 5),
        "b": trial.suggest_float("b", -5, 5),
        "c": trial.suggest_float("c", 0, 1),
        "lr": trial.suggest_float("lr", 1e-5, 1.0, log=True),
        "act": trial.suggest_categorical("act", ["relu", "tanh", "sigmoid"]),
    }


MIXED10 = mixed10_space()


def mixed10_loss(params: dict[str, Any]) -> float:
    """A smooth loss over every parameter of the 10-d mixed space."""
    floats = sum((params[f"u{i}"] - 1) ** 2 for i in range(4))
    logs = sum((math.log10(params[f"l{i}"]) + 2) ** 2 for i in range(2))
    integers = sum(abs(params[f"i{i}"] - 30) / 10 for i in range(2))
    return floats + logs + integers + params["c0"] + 0.5 * params["c1"]


def mixed10_optuna_params(trial: Any) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for i in range(4):
        params[f"u{i}"] = trial.suggest_float(f"u{i}", -5, 5)
    for i in range(2):
        params[f"l{i}"] = trial.suggest_float(f"l{i}", 1e-5, 1.0, log=True)
    for i in range(2):
        params[f"i{i}"] = trial.suggest_int(f"i{i}", 1, 100)
    for i in range(2):
        params[f"c{i}"] = trial.suggest_categorical(f"c{i}", list(range(5)))
    return params


def hyperopt_space() -> dict[str, Any]:
    from hyperopt import hp as hhp

    return {
        "a": hhp.uniform("a", -5, 5),
        "b": hhp.uniform("b", -5, 5),
        "c": hhp.uniform("c", 0, 1),
        "lr": hhp.loguniform("lr", math.log(1e-5), math.log(1.0)),
        "act": hhp.choice("act", ["relu", "tanh", "sigmoid"]),
    }


# Runs of each optimizer on a free objective, in turns; each figure is the best of them.
ROUNDS = 4


def timed(function: Callable[[], Any]) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


# -- asyncopt -------------------------------------------------------------------------------


def asyncopt_run(
    algo: Any,
    n: int,
    concurrency: int,
    wait: float,
    backend: str = "asyncio",
    space: Any = SPACE,
    loss: Callable[[dict[str, Any]], float] = loss_of_params,
) -> float:
    async def objective(params: dict[str, Any]) -> float:
        if wait:
            await anyio.sleep(wait)
        return loss(params)

    async def main() -> None:
        result = await ao.minimize(
            objective, space, algo=algo, max_evals=n, concurrency=concurrency, seed=1
        )
        assert len(result.trials) == n

    return timed(lambda: anyio.run(main, backend=backend))


# -- optuna ---------------------------------------------------------------------------------


def optuna_run(
    sampler_name: str,
    n: int,
    n_jobs: int,
    wait: float,
    params_of: Callable[[Any], dict[str, Any]] = optuna_params,
    loss: Callable[[dict[str, Any]], float] = loss_of_params,
) -> float:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = (
        optuna.samplers.RandomSampler(seed=1)
        if sampler_name == "random"
        else optuna.samplers.TPESampler(seed=1)
    )

    def objective(trial: Any) -> float:
        params = params_of(trial)
        if wait:
            time.sleep(wait)
        return loss(params)

    study = optuna.create_study(sampler=sampler)
    return timed(lambda: study.optimize(objective, n_trials=n, n_jobs=n_jobs))


# -- hyperopt -------------------------------------------------------------------------------


def hyperopt_run(algo_name: str, n: int, wait: float) -> float:
    import numpy as np
    from hyperopt import Trials, fmin, rand, tpe

    logging.getLogger("hyperopt").setLevel(logging.WARNING)
    algo = rand.suggest if algo_name == "random" else tpe.suggest

    def objective(params: dict[str, Any]) -> float:
        if wait:
            time.sleep(wait)
        return loss_of_params(params)

    return timed(
        lambda: fmin(
            objective,
            hyperopt_space(),
            algo=algo,
            max_evals=n,
            trials=Trials(),
            rstate=np.random.default_rng(1),
            show_progressbar=False,
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller runs, no Hyperopt waits")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    n_free = 300 if args.quick else 1000
    lines: list[str] = []

    def row(*cells: object) -> None:
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
        print(lines[-1], flush=True)

    # Warm every library up first (imports, caches), so no one pays it inside a timing.
    asyncopt_run(ao.rand.suggest, 20, 4, 0.0)
    asyncopt_run(ao.rand.suggest, 20, 4, 0.0, "trio")
    asyncopt_run(ao.tpe.suggest, 20, 4, 0.0)
    optuna_run("random", 20, 4, 0.0)
    optuna_run("tpe", 20, 4, 0.0)
    hyperopt_run("random", 20, 0.0)
    hyperopt_run("tpe", 20, 0.0)
    asyncopt_run(ao.tpe.suggest, 20, 1, 0.0, space=MIXED10, loss=mixed10_loss)
    optuna_run("tpe", 20, 1, 0.0, mixed10_optuna_params, mixed10_loss)

    # 1. Waiting objective, concurrency 20.
    ideal = 200 / 20 * 0.05
    lines += [
        "### 200 evaluations of a 50 ms objective, 20 at a time, random search",
        "",
        f"Ideal wall time {ideal:.2f} s. Optuna runs `n_jobs=20` threads; Hyperopt has no "
        "parallel mode and runs them one after another.",
        "",
        "| optimizer | wall time (s) | × ideal |",
        "|---|---:|---:|",
    ]
    for label, run in [
        ("asyncopt, random, asyncio", lambda: asyncopt_run(ao.rand.suggest, 200, 20, 0.05)),
        ("asyncopt, random, trio", lambda: asyncopt_run(ao.rand.suggest, 200, 20, 0.05, "trio")),
        ("asyncopt, TPE (default)", lambda: asyncopt_run(ao.tpe.suggest, 200, 20, 0.05)),
        ("Optuna 5, random, n_jobs=20", lambda: optuna_run("random", 200, 20, 0.05)),
        ("Optuna 5, TPE (default), n_jobs=20", lambda: optuna_run("tpe", 200, 20, 0.05)),
    ] + (
        []
        if args.quick
        else [("Hyperopt 0.3, random (sequential)", lambda: hyperopt_run("random", 200, 0.05))]
    ):
        seconds = run()
        row(label, f"{seconds:.2f}", f"{seconds / ideal:.2f}")

    # 2 and 3. Free objective.
    for algo_label, ours, theirs in [
        ("random search", ao.rand.suggest, "random"),
        ("TPE", ao.tpe.suggest, "tpe"),
    ]:
        lines += [
            "",
            f"### {n_free:,} trials of a free objective, {algo_label}, in memory "
            f"(best of {ROUNDS}, interleaved)",
            "",
            "| optimizer | trials/s | asyncopt ÷ peer |",
            "|---|---:|---:|",
        ]
        # The best of several runs each (the first run in a process pays warm-up costs),
        # taken in turns so that a slow spell of this shared machine hits all alike.
        runs: dict[str, list[float]] = {"ours": [], "optuna": [], "hyperopt": []}
        for _ in range(ROUNDS):
            runs["ours"].append(asyncopt_run(ours, n_free, 1, 0.0))
            runs["optuna"].append(optuna_run(theirs, n_free, 1, 0.0))
            runs["hyperopt"].append(hyperopt_run(theirs, n_free, 0.0))
        ours_rate, optuna_rate, hyperopt_rate = (
            n_free / min(runs[name]) for name in ("ours", "optuna", "hyperopt")
        )
        row("asyncopt", f"{ours_rate:,.0f}", "")
        row("Optuna 5", f"{optuna_rate:,.0f}", f"{ours_rate / optuna_rate:.1f}x")
        row("Hyperopt 0.3", f"{hyperopt_rate:,.0f}", f"{ours_rate / hyperopt_rate:.1f}x")

    # 4. TPE on the 10-d mixed space (integers, log scales, two categoricals).
    lines += [
        "",
        f"### {n_free:,} trials of a free objective, TPE, 10-d mixed space, in memory "
        f"(best of {ROUNDS}, interleaved)",
        "",
        "The space of the suggestion benchmark: 4 uniform, 2 log-uniform, 2 integers in "
        "1..100, 2 categoricals of 5. Hyperopt's TPE needs minutes per run here and is "
        "left out.",
        "",
        "| optimizer | trials/s | asyncopt ÷ peer |",
        "|---|---:|---:|",
    ]
    mixed: dict[str, list[float]] = {"ours": [], "optuna": []}
    for _ in range(ROUNDS):
        mixed["ours"].append(
            asyncopt_run(ao.tpe.suggest, n_free, 1, 0.0, space=MIXED10, loss=mixed10_loss)
        )
        mixed["optuna"].append(
            optuna_run("tpe", n_free, 1, 0.0, mixed10_optuna_params, mixed10_loss)
        )
    ours_rate, optuna_rate = (n_free / min(mixed[name]) for name in ("ours", "optuna"))
    row("asyncopt", f"{ours_rate:,.0f}", "")
    row("Optuna 5", f"{optuna_rate:,.0f}", f"{ours_rate / optuna_rate:.1f}x")

    markdown = "\n".join(
        [
            "## Orchestrator overhead",
            "",
            f"`python benchmarks/bench_orchestrator.py` — measured on {machine()} in one run, "
            "each library warmed up first.",
            "",
            *lines,
        ]
    )
    if not args.no_write:
        write_section("orchestrator", markdown)


if __name__ == "__main__":
    main()
