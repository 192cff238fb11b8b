"""Spaces, histories and a plain sequential loop shared by the suggest-function tests."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from asyncopt import hp
from asyncopt.algorithms._parzen import Axes, Mixture, gap_bandwidths
from asyncopt.history import History, HistoryBuilder
from asyncopt.space import CompiledSpace, compile_space, space_eval
from asyncopt.space.evaluate import Assignment
from asyncopt.storage.base import Trial, TrialState

Suggest = Callable[..., list[Assignment]]

#: One hyperparameter reused in two branches of a choice.
SHARED_X = hp.quniform("x", -5, 5, 1)

#: Spaces covering every distribution, conditions, nesting and a label reused in two branches.
SPACES: dict[str, Any] = {
    "every distribution": {
        "u": hp.uniform("u", -3, 7),
        "qu": hp.quniform("qu", 0, 10, 2.5),
        "lu": hp.loguniform("lu", -7, 2),
        "qlu": hp.qloguniform("qlu", 0, 6, 5),
        "n": hp.normal("n", 1, 3),
        "qn": hp.qnormal("qn", 0, 4, 0.5),
        "ln": hp.lognormal("ln", 0, 1),
        "qln": hp.qlognormal("qln", 2, 1, 3),
        "ui": hp.uniformint("ui", -4, 4),
        "ri": hp.randint("ri", 5),
        "ri2": hp.randint("ri2", -3, 4),
        "c": hp.choice("c", ["a", "b", "c"]),
        "pc": hp.pchoice("pc", [(0.1, "x"), (0.6, "y"), (0.3, "z")]),
    },
    "conditional": hp.choice(
        "model",
        [
            {
                "kind": "svm",
                "C": hp.lognormal("C", 0, 1),
                "kernel": hp.choice("kernel", ["rbf", "lin"]),
            },
            {
                "kind": "tree",
                "depth": hp.uniformint("depth", 1, 10),
                "split": hp.choice(
                    "split",
                    [
                        {"crit": "gini", "w": hp.uniform("w", 0, 1)},
                        {"crit": "entropy", "lr": hp.loguniform("lr", -5, 0)},
                    ],
                ),
            },
            {"kind": "none"},
        ],
    ),
    "shared label": {
        "a": hp.choice(
            "a",
            [
                {"x": SHARED_X},
                {"x": SHARED_X, "y": hp.normal("y", 0, 1)},
                {"z": hp.randint("z", 3)},
            ],
        ),
        "b": hp.pchoice("b", [(0.5, hp.uniform("bu", 0, 1)), (0.5, None)]),
    },
    "single": hp.uniform("only", 0, 1),
}


def history_of(
    space: CompiledSpace,
    assignments: Sequence[Assignment],
    losses: Iterable[float | None],
    states: Iterable[TrialState] | None = None,
) -> History:
    """A history of trials with the given assignments, losses and states (default OK)."""
    losses = list(losses)
    states = [TrialState.OK] * len(losses) if states is None else list(states)
    trials = [
        Trial(study="s", tid=tid, state=state, assignment=assignment, loss=loss)
        for tid, (assignment, loss, state) in enumerate(
            zip(assignments, losses, states, strict=True)
        )
    ]
    return History.from_trials(space, trials)


def assert_valid(space: CompiledSpace, assignments: Sequence[Assignment]) -> None:
    """Every assignment holds exactly its active labels, in support, with ints as ints."""
    for assignment in assignments:
        space.check_assignment(assignment)
        for label, value in assignment.items():
            expected = int if space[label].dist.is_integer else float
            assert type(value) is expected, (label, value)
            assert math.isfinite(value), (label, value)


def minimize(
    suggest: Suggest,
    space: Any,
    objective: Callable[[Any], float],
    evals: int,
    seed: int,
) -> float:
    """Best loss of a plain sequential loop: suggest, evaluate, record the trial."""
    compiled = compile_space(space)
    builder = HistoryBuilder(compiled)
    rng = np.random.default_rng(seed)
    best = math.inf
    for tid in range(evals):
        (assignment,) = suggest(compiled, builder.snapshot(), rng, 1)
        loss = float(objective(space_eval(compiled, assignment)))
        best = min(best, loss)
        builder.update(
            [Trial(study="s", tid=tid, state=TrialState.OK, assignment=assignment, loss=loss)]
        )
    return best


# -- acceptance domains (Hyperopt-style small problems; every minimum is 0) ---------------------


def _conditional_loss(p: dict[str, Any]) -> float:
    if p["kind"] == "a":
        return float(1.0 + ((p["x"] - 1.0) ** 2 + (p["y"] + 2.0) ** 2) / 50.0)
    penalty = {"relu": 0.0, "tanh": 0.2, "sigmoid": 0.5}[p["act"]]
    return ((math.log10(p["lr"]) + 3.0) / 2.0) ** 2 + float((p["n"] - 7.0) / 13.0) ** 2 + penalty


def _many_loss(p: dict[str, Any]) -> float:
    return float(
        ((p["u"] - 3.0) / 10.0) ** 2
        + ((p["qu"] + 2.0) / 10.0) ** 2
        + (math.log10(p["lu"]) - 1.0) ** 2 / 9.0
        + ((p["qlu"] - 50.0) / 500.0) ** 2
        + ((p["n"] - 2.0) / 5.0) ** 2
        + ((p["qn"] + 3.0) / 5.0) ** 2
        + (math.log(max(p["ln"], 1e-12)) - 0.5) ** 2
        + ((p["qln"] - 4.0) / 10.0) ** 2
        + 0.3 * (p["ri"] != 7)
        + ((p["ui"] - 5.0) / 20.0) ** 2
        + 0.3 * (p["c"] != 2)
        + 0.3 * (p["pc"] != 2)
    )


#: name -> (space, objective); each objective's minimum is 0.
DOMAINS: dict[str, tuple[Any, Callable[[Any], float]]] = {
    "quadratic": (hp.uniform("x", -5, 5), lambda x: (x - 3.0) ** 2),
    "lognormal target": (
        hp.lognormal("x", 0, 2),
        lambda x: (math.log(max(x, 1e-300)) - math.log(20.0)) ** 2,
    ),
    "conditional choice": (
        hp.choice(
            "branch",
            [
                {"kind": "a", "x": hp.uniform("a_x", -5, 5), "y": hp.uniform("a_y", -5, 5)},
                {
                    "kind": "b",
                    "lr": hp.loguniform("b_lr", math.log(1e-5), 0),
                    "n": hp.uniformint("b_n", 1, 20),
                    "act": hp.choice("b_act", ["relu", "tanh", "sigmoid"]),
                },
            ],
        ),
        _conditional_loss,
    ),
    "many distributions": (
        {
            "u": hp.uniform("u", -10, 10),
            "qu": hp.quniform("qu", -10, 10, 0.5),
            "lu": hp.loguniform("lu", math.log(1e-3), math.log(1e3)),
            "qlu": hp.qloguniform("qlu", 0, math.log(1000), 1),
            "n": hp.normal("n", 0, 5),
            "qn": hp.qnormal("qn", 0, 5, 0.5),
            "ln": hp.lognormal("ln", 0, 1),
            "qln": hp.qlognormal("qln", 1, 1, 1),
            "ri": hp.randint("ri", 10),
            "ui": hp.uniformint("ui", -20, 20),
            "c": hp.choice("c", [0, 1, 2, 3]),
            "pc": hp.pchoice("pc", [(0.5, 0), (0.3, 1), (0.2, 2)]),
        },
        _many_loss,
    ),
}


def prior_mixture(
    axes: Axes,
    mus: np.ndarray,
    weights: np.ndarray,
    tables: Sequence[np.ndarray] = (),
    *,
    truncation: bool = False,
) -> Mixture:
    """Kernels at ``mus`` (unit axes) with Optuna's gap widths, and the prior kernel last."""
    sigmas = gap_bandwidths(
        mus, prior_mu=axes.prior_mu, low=axes.low, high=axes.high, rule="optuna"
    )
    return Mixture(
        np.append(weights, 1.0),
        np.concatenate([mus, axes.prior_mu[None, :]]),
        np.concatenate([sigmas, np.ones((1, len(axes)))]),
        axes.low,
        axes.high,
        list(tables),
        mixture_truncation=truncation,
    )
