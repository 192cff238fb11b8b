"""pchoice, randint and space_eval through `asyncopt.hyperopt` (Hyperopt's tests, our words)."""

from __future__ import annotations

from collections import Counter
from functools import partial
from typing import Any

import numpy as np
import pytest

from asyncopt.hyperopt import Trials, anneal, fmin, hp, rand, space_eval, tpe
from asyncopt.hyperopt.pyll import scope, stochastic

QUIET: dict[str, Any] = {"show_progressbar": False}


def draws(space: Any, n: int) -> Counter[Any]:
    rng = np.random.default_rng(123)
    return Counter(stochastic.sample(space, rng=rng) for _ in range(n))


# -- pchoice ------------------------------------------------------------------------------------


def test_pchoice_draws_options_with_their_probabilities() -> None:
    space = hp.pchoice(
        "naive_type", [(0.14, "gaussian"), (0.02, "multinomial"), (0.84, "bernoulli")]
    )
    counts = draws(space, 1000)
    assert sum(counts.values()) == 1000
    assert 120 < counts["gaussian"] < 160
    assert 0 < counts["multinomial"] < 40
    assert 800 < counts["bernoulli"] < 900


def test_pchoice_inside_a_choice() -> None:
    space = hp.choice(
        "normal_choice",
        [
            hp.pchoice("fsd", [(0.1, "first"), (0.8, "second"), (0.1, 2)]),
            hp.choice("something_else", [10, 20]),
        ],
    )
    counts = draws(space, 1000)
    assert set(counts) <= {"first", "second", 2, 10, 20}
    assert counts["second"] > 2 * counts["first"]
    assert counts["second"] > 2 * counts[2]


def test_pchoice_of_pchoices() -> None:
    space = hp.pchoice(
        "something",
        [
            (0.2, hp.pchoice("number", [(0.8, 2), (0.2, 1)])),
            (0.8, hp.pchoice("number1", [(0.7, 5), (0.3, 6)])),
        ],
    )
    counts = draws(space, 2000)
    assert sum(counts.values()) == 2000
    assert set(counts) <= {1, 2, 5, 6}
    assert 300 < counts[2] + counts[1] < 500
    assert 1500 < counts[5] + counts[6] < 1700
    assert counts[2] * 0.3 > counts[1]
    assert counts[5] * 3 * 1.2 > counts[6] * 7


PCHOICE = hp.pchoice("a", [(0.1, 0), (0.2, 1), (0.3, 2), (0.4, 3)])


@pytest.mark.parametrize(
    ("algo", "max_evals", "low", "high"),
    [
        (rand.suggest, 150, 0.35, 0.60),
        (partial(tpe.suggest, n_startup_jobs=10), 100, 0.6, 1.0),
        (partial(anneal.suggest), 100, 0.6, 1.0),
    ],
    ids=["rand", "tpe", "anneal"],
)
def test_pchoice_in_fmin(algo: Any, max_evals: int, low: float, high: float) -> None:
    trials = Trials()
    fmin(
        lambda a: [1, 1, 1, 0][a],
        PCHOICE,
        algo=algo,
        max_evals=max_evals,
        trials=trials,
        rstate=np.random.default_rng(4),
        **QUIET,
    )
    values = [doc["misc"]["vals"]["a"][0] for doc in trials.trials]
    share = np.bincount(values, minlength=4)[3] / max_evals
    assert low < share <= high


@pytest.mark.parametrize(
    "algo", [rand.suggest, tpe.suggest, anneal.suggest], ids=["rand", "tpe", "anneal"]
)
def test_a_constant_objective_over_a_conditional_space_runs(algo: Any) -> None:
    space = hp.choice(
        "preprocess_choice",
        [
            {"pwhiten": hp.pchoice("whiten_randomPCA", [(0.3, False), (0.7, True)])},
            {"palgo": False},
            {"pthree": 7},
        ],
    )
    trials = Trials()
    fmin(
        lambda x: 1,
        space,
        algo=algo,
        max_evals=50,
        trials=trials,
        rstate=np.random.default_rng(44),
        **QUIET,
    )
    assert len(trials) == 50


# -- randint ------------------------------------------------------------------------------------


def test_randint_with_one_bound_draws_evenly_from_zero() -> None:
    counts = draws(hp.randint("a", 5), 1000)
    assert sorted(counts) == [0, 1, 2, 3, 4]
    assert all(100 < count < 300 for count in counts.values())


def test_randint_with_two_bounds_draws_evenly_between_them() -> None:
    counts = draws(hp.randint("a", 5, 15), 1000)
    assert sorted(counts) == list(range(5, 15))
    assert all(80 < count < 120 for count in counts.values())


def cubic(t: int) -> float:
    # Roots at 3, 10 and 50.
    return float(abs(np.poly1d([1, -63, 680, -1500])(t)))


@pytest.mark.parametrize(
    ("algo", "max_evals"),
    [(rand.suggest, 150), (partial(tpe.suggest, n_startup_jobs=10), 100)],
    ids=["rand", "tpe"],
)
def test_randint_stays_in_its_bounds_in_fmin(algo: Any, max_evals: int) -> None:
    trials = Trials()
    fmin(
        cubic,
        hp.randint("t", 2, 100),
        algo=algo,
        max_evals=max_evals,
        trials=trials,
        rstate=np.random.default_rng(4),
        **QUIET,
    )
    values = [doc["misc"]["vals"]["t"][0] for doc in trials.trials]
    assert all(isinstance(value, int) for value in values)
    assert np.bincount(values, minlength=100)[:2].sum() == 0


@pytest.mark.parametrize("algo", [rand.suggest, tpe.suggest], ids=["rand", "tpe"])
def test_randint_finds_the_root_inside_its_bounds(algo: Any) -> None:
    for lower, upper in [(2, 7), (2, 30), (2, 100), (5, 30), (5, 100), (20, 100)]:
        best = fmin(
            cubic,
            hp.randint("t", lower, upper),
            algo=algo,
            max_evals=150,
            rstate=np.random.default_rng(4),
            **QUIET,
        )
        assert best["t"] in [root for root in (3, 10, 50) if lower <= root < upper]


# -- space_eval and scope -----------------------------------------------------------------------


def test_space_eval_follows_the_chosen_branch() -> None:
    space = hp.choice(
        "a",
        [("case 1", 1 + hp.lognormal("c1", 0, 1)), ("case 2", hp.uniform("c2", -10, 10))],
    )
    assert space_eval(space, {"a": 0, "c1": 1.0}) == ("case 1", 2.0)
    assert space_eval(space, {"a": 1, "c2": 3.5}) == ("case 2", 3.5)


def test_space_eval_of_fmins_argmin_gives_the_best_value() -> None:
    space = {"lr": hp.loguniform("lr", -5, 0), "layers": scope.int(hp.quniform("layers", 1, 4, 1))}
    best = fmin(
        lambda p: p["lr"] * p["layers"],
        space,
        algo=rand.suggest,
        max_evals=20,
        rstate=np.random.default_rng(0),
        **QUIET,
    )
    value = space_eval(space, best)
    assert value["lr"] == best["lr"]
    assert value["layers"] == int(best["layers"])
    assert isinstance(value["layers"], int)


def test_scope_functions_hyperopt_users_call() -> None:
    x = hp.uniform("x", 0, 1)
    pair = hp.choice("pair", [(1.0, 2.0), (3.0, 4.0)])
    space = {
        "sin": scope.sin(x),
        "cos": scope.cos(x),
        "exp": scope.exp(x),
        "log": scope.log(x),
        "sqrt": scope.sqrt(x),
        "min": scope.min(x, 0.5),
        "max": scope.max(x, 0.5),
        "abs": scope.abs(x - 1),
        "int": scope.int(x * 10),
        "float": scope.float(scope.int(x * 10)),
        "switch": scope.switch(hp.randint("i", 3), "a", "b", "c"),
        "index": pair[1],
    }
    value = space_eval(space, {"x": 0.25, "pair": 1, "i": 2})
    assert value == {
        "sin": np.sin(0.25),
        "cos": np.cos(0.25),
        "exp": np.exp(0.25),
        "log": np.log(0.25),
        "sqrt": 0.5,
        "min": 0.25,
        "max": 0.5,
        "abs": 0.75,
        "int": 2,
        "float": 2.0,
        "switch": "c",
        "index": 4.0,
    }
