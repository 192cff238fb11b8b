"""Benchmark problems, each written for asyncopt, Hyperopt and Optuna on the same space.

Every problem has a loss function of the *evaluated* parameters (a dict of real values,
choices resolved to their options), so the three libraries score identically.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from asyncopt import hp

__all__ = ["PROBLEMS", "Problem", "mixed10_space", "wide_space"]


@dataclass(frozen=True)
class Problem:
    """A named objective with its space in each library's terms."""

    name: str
    optimum: float
    loss: Callable[[dict[str, Any]], float]
    asyncopt_space: Callable[[], Any]
    hyperopt_space: Callable[[], Any]
    optuna_params: Callable[[Any], dict[str, Any]]


def _branin(p: dict[str, Any]) -> float:
    x1, x2 = p["x1"], p["x2"]
    b = 5.1 / (4 * math.pi**2)
    c = 5 / math.pi
    t = 1 / (8 * math.pi)
    return (x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - t) * math.cos(x1) + 10


_H_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])
_H_A = np.array(
    [
        [10, 3, 17, 3.5, 1.7, 8],
        [0.05, 10, 17, 0.1, 8, 14],
        [3, 3.5, 1.7, 10, 17, 8],
        [17, 8, 0.05, 10, 0.1, 14],
    ]
)
_H_P = 1e-4 * np.array(
    [
        [1312, 1696, 5569, 124, 8283, 5886],
        [2329, 4135, 8307, 3736, 1004, 9991],
        [2348, 1451, 3522, 2883, 3047, 6650],
        [4047, 8828, 8732, 5743, 1091, 381],
    ]
)


def _hartmann6(p: dict[str, Any]) -> float:
    x = np.array([p[f"x{i}"] for i in range(6)])
    inner = (_H_A * (x - _H_P) ** 2).sum(axis=1)
    return float(-(_H_ALPHA * np.exp(-inner)).sum())


def _rosenbrock5(p: dict[str, Any]) -> float:
    x = [p[f"x{i}"] for i in range(5)]
    return float(sum(100 * (x[i + 1] - x[i] ** 2) ** 2 + (1 - x[i]) ** 2 for i in range(4)))


_ACT = {"relu": 0.0, "tanh": 0.2, "sigmoid": 0.5}


def _conditional(p: dict[str, Any]) -> float:
    branch = p["branch"]
    if branch["kind"] == "a":
        return 1 + ((branch["a_x"] - 1) ** 2 + (branch["a_y"] + 2) ** 2) / 50
    return (
        ((math.log10(branch["b_lr"]) + 3) / 2) ** 2
        + ((branch["b_n"] - 7) / 13) ** 2
        + _ACT[branch["b_act"]]
    )


def _box(names: list[str], low: float, high: float) -> Callable[[], Any]:
    return lambda: {n: hp.uniform(n, low, high) for n in names}


def _hyperopt_box(names: list[str], low: float, high: float) -> Callable[[], Any]:
    def build() -> Any:
        from hyperopt import hp as hhp

        return {n: hhp.uniform(n, low, high) for n in names}

    return build


def _optuna_box(names: list[str], low: float, high: float) -> Callable[[Any], dict[str, Any]]:
    return lambda trial: {n: trial.suggest_float(n, low, high) for n in names}


def _conditional_space() -> Any:
    return {
        "branch": hp.choice(
            "branch",
            [
                {"kind": "a", "a_x": hp.uniform("a_x", -5, 5), "a_y": hp.uniform("a_y", -5, 5)},
                {
                    "kind": "b",
                    "b_lr": hp.loguniform("b_lr", math.log(1e-5), 0.0),
                    "b_n": hp.uniformint("b_n", 1, 20),
                    "b_act": hp.choice("b_act", ["relu", "tanh", "sigmoid"]),
                },
            ],
        )
    }


def _conditional_hyperopt() -> Any:
    from hyperopt import hp as hhp

    return {
        "branch": hhp.choice(
            "branch",
            [
                {"kind": "a", "a_x": hhp.uniform("a_x", -5, 5), "a_y": hhp.uniform("a_y", -5, 5)},
                {
                    "kind": "b",
                    "b_lr": hhp.loguniform("b_lr", math.log(1e-5), 0.0),
                    "b_n": hhp.uniformint("b_n", 1, 20),
                    "b_act": hhp.choice("b_act", ["relu", "tanh", "sigmoid"]),
                },
            ],
        )
    }


def _conditional_optuna(trial: Any) -> dict[str, Any]:
    kind = trial.suggest_categorical("branch", ["a", "b"])
    if kind == "a":
        branch = {
            "kind": "a",
            "a_x": trial.suggest_float("a_x", -5, 5),
            "a_y": trial.suggest_float("a_y", -5, 5),
        }
    else:
        branch = {
            "kind": "b",
            "b_lr": trial.suggest_float("b_lr", 1e-5, 1.0, log=True),
            "b_n": trial.suggest_int("b_n", 1, 20),
            "b_act": trial.suggest_categorical("b_act", ["relu", "tanh", "sigmoid"]),
        }
    return {"branch": branch}


def _branin_space() -> Any:
    return {"x1": hp.uniform("x1", -5, 10), "x2": hp.uniform("x2", 0, 15)}


def _branin_hyperopt() -> Any:
    from hyperopt import hp as hhp

    return {"x1": hhp.uniform("x1", -5, 10), "x2": hhp.uniform("x2", 0, 15)}


def _branin_optuna(trial: Any) -> dict[str, Any]:
    return {"x1": trial.suggest_float("x1", -5, 10), "x2": trial.suggest_float("x2", 0, 15)}


_H6 = [f"x{i}" for i in range(6)]
_R5 = [f"x{i}" for i in range(5)]

PROBLEMS: dict[str, Problem] = {
    "branin": Problem("Branin", 0.397887, _branin, _branin_space, _branin_hyperopt, _branin_optuna),
    "hartmann6": Problem(
        "Hartmann-6",
        -3.32237,
        _hartmann6,
        _box(_H6, 0, 1),
        _hyperopt_box(_H6, 0, 1),
        _optuna_box(_H6, 0, 1),
    ),
    "rosenbrock5": Problem(
        "Rosenbrock-5",
        0.0,
        _rosenbrock5,
        _box(_R5, -2, 2),
        _hyperopt_box(_R5, -2, 2),
        _optuna_box(_R5, -2, 2),
    ),
    "conditional": Problem(
        "Conditional (two branches)",
        0.0,
        _conditional,
        _conditional_space,
        _conditional_hyperopt,
        _conditional_optuna,
    ),
}


def mixed10_space() -> Any:
    """The 10-d mixed space of the speed benchmark (asyncopt terms)."""
    space: dict[str, Any] = {}
    for i in range(4):
        space[f"u{i}"] = hp.uniform(f"u{i}", -5, 5)
    for i in range(2):
        space[f"l{i}"] = hp.loguniform(f"l{i}", math.log(1e-5), 0.0)
    for i in range(2):
        space[f"i{i}"] = hp.uniformint(f"i{i}", 1, 100)
    for i in range(2):
        space[f"c{i}"] = hp.choice(f"c{i}", list(range(5)))
    return space


def wide_space(d: int = 200) -> Any:
    """A ``d``-parameter space of uniform floats (the "hundreds of variables" benchmark)."""
    return {f"w{i}": hp.uniform(f"w{i}", 0, 1) for i in range(d)}
