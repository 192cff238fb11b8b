"""Hyperopt-style acceptance checks: on small domains with fixed seeds, TPE clearly beats
random search (mean over a few seeds of the best loss, or, where a dozen parameters make
the best of a few dozen draws a lottery, of the median loss of the second half of the
trials, which shows whether the search concentrates on good regions)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from asyncopt import hp
from asyncopt.algorithms import rand, tpe
from asyncopt.history import HistoryBuilder
from asyncopt.space.compile import compile_space
from asyncopt.space.evaluate import space_eval
from asyncopt.storage.base import Trial, TrialState


def _run(
    suggest: Callable[..., Any],
    space: Any,
    loss: Callable[[Any], float],
    n_trials: int,
    seed: int,
) -> list[float]:
    compiled = compile_space(space)
    builder = HistoryBuilder(compiled)
    rng = np.random.default_rng(seed)
    losses = []
    for tid in range(n_trials):
        (assignment,) = suggest(compiled, builder.snapshot(), rng)
        value = loss(space_eval(compiled, assignment))
        losses.append(value)
        builder.update([Trial("a", tid, TrialState.OK, assignment, loss=value)])
    return losses


def _best(losses: list[float]) -> float:
    return min(losses)


def _late_median(losses: list[float]) -> float:
    return float(np.median(losses[len(losses) // 2 :]))


def _quadratic() -> tuple[Any, Callable[[Any], float]]:
    return hp.uniform("x", -5, 5), lambda x: (x - 3.0) ** 2


def _lognormal_target() -> tuple[Any, Callable[[Any], float]]:
    # A learning-rate-like parameter whose best value sits far from the prior's median.
    return hp.lognormal("lr", -4, 3), lambda lr: (math.log(lr) - math.log(0.5)) ** 2


def _conditional_choice() -> tuple[Any, Callable[[Any], float]]:
    space = hp.choice(
        "kind",
        [
            {"kind": "flat", "c": hp.uniform("c", 0, 1)},
            {"kind": "bowl", "x": hp.uniform("x", -10, 10), "k": hp.randint("k", 6)},
        ],
    )

    def loss(p: dict[str, Any]) -> float:
        if p["kind"] == "flat":
            return 1.0 + p["c"]
        return (p["x"] - 2.5) ** 2 / 100 + 0.1 * abs(p["k"] - 3)

    return space, loss


def _many_distributions() -> tuple[Any, Callable[[Any], float]]:
    space = {
        "u": hp.uniform("u", -3, 3),
        "qu": hp.quniform("qu", 0, 20, 2),
        "lu": hp.loguniform("lu", math.log(1e-4), 0),
        "qlu": hp.qloguniform("qlu", 0, math.log(1000), 5),
        "n": hp.normal("n", 0, 5),
        "qn": hp.qnormal("qn", 0, 10, 1),
        "ln": hp.lognormal("ln", 0, 1),
        "qln": hp.qlognormal("qln", 1, 1, 1),
        "ui": hp.uniformint("ui", 0, 30),
        "ri": hp.randint("ri", 8),
        "c": hp.choice("c", [0.0, 0.5, 1.0, 2.0]),
        "pc": hp.pchoice("pc", [(0.7, 1.0), (0.2, 0.0), (0.1, 0.5)]),
    }

    def loss(p: dict[str, Any]) -> float:
        return (
            (p["u"] - 1) ** 2 / 9
            + (p["qu"] - 14) ** 2 / 100
            + (math.log10(p["lu"]) + 2) ** 2 / 4
            + (p["qlu"] - 300) ** 2 / 1e5
            + (p["n"] - 3) ** 2 / 25
            + (p["qn"] + 6) ** 2 / 100
            + (math.log(p["ln"]) - 1) ** 2
            + (p["qln"] - 4) ** 2 / 16
            + (p["ui"] - 21) ** 2 / 900
            + abs(p["ri"] - 5) / 8
            + p["c"]
            + p["pc"]
        )

    return space, loss


DOMAINS = {
    "quadratic": (_quadratic, 40, 0.5, _best),
    "lognormal": (_lognormal_target, 30, 0.3, _best),
    "conditional": (_conditional_choice, 40, 0.5, _best),
    "many_distributions": (_many_distributions, 60, 0.6, _late_median),
}


@pytest.mark.parametrize("preset", ["default", "hyperopt"])
@pytest.mark.parametrize("domain", list(DOMAINS))
def test_tpe_beats_random_search(domain: str, preset: str) -> None:
    build, n_trials, ratio, metric = DOMAINS[domain]
    space, loss = build()
    suggest = tpe.configure(preset=preset)
    if preset == "hyperopt":
        n_trials += 20  # its startup phase is 20 prior draws instead of 10
    seeds = range(3)
    ours = np.mean([metric(_run(suggest, space, loss, n_trials, s)) for s in seeds])
    baseline = np.mean([metric(_run(rand.suggest, space, loss, n_trials, s)) for s in seeds])
    assert ours < ratio * baseline, (ours, baseline)
