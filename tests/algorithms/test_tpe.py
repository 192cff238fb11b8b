"""TPE behaviour: startup, determinism, proposals, the constant liar, options, numerics."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import attrs
import numpy as np
import pytest

from asyncopt import hp
from asyncopt.algorithms import tpe
from asyncopt.history import History, HistoryBuilder
from asyncopt.space.compile import CompiledSpace, compile_space
from asyncopt.space.evaluate import sample_assignments
from asyncopt.storage.base import Trial, TrialState

PRESETS = [tpe.suggest, tpe.configure(preset="hyperopt")]


def _history(
    space: CompiledSpace,
    losses: list[float | None],
    seed: int = 0,
    states: list[TrialState] | None = None,
) -> History:
    assignments = sample_assignments(space, np.random.default_rng(seed), len(losses))
    states = states or [TrialState.OK if loss is not None else TrialState.FAIL for loss in losses]
    return History.from_trials(
        space,
        [
            Trial("t", i, state, a, loss=loss if state is TrialState.OK else None)
            for i, (a, loss, state) in enumerate(zip(assignments, losses, states))
        ],
    )


MIXED = compile_space(
    {
        "x": hp.uniform("x", -5, 5),
        "lr": hp.loguniform("lr", -9, 0),
        "n": hp.uniformint("n", 1, 9),
        "q": hp.quniform("q", 0, 10, 2.5),
        "k": hp.randint("k", 3, 8),
        "act": hp.pchoice("act", [(0.2, "a"), (0.5, "b"), (0.3, "c")]),
        "nn": hp.normal("nn", 1, 2),
        "ln": hp.qlognormal("ln", 0, 1, 0.5),
    }
)

CONDITIONAL = compile_space(
    {
        "model": hp.choice(
            "model",
            [
                {"kind": "svm", "C": hp.lognormal("C", 0, 1), "g": hp.loguniform("g", -5, 0)},
                {
                    "kind": "tree",
                    "depth": hp.uniformint("depth", 1, 10),
                    "split": hp.choice(
                        "split",
                        [{"s": "gini"}, {"s": "ent", "w": hp.quniform("w", 0, 1, 0.1)}],
                    ),
                },
                {"kind": "none"},
            ],
        ),
        "shared": hp.uniform("shared", 0, 1),
    }
)


def test_startup_is_the_prior() -> None:
    history = _history(MIXED, [float(i) for i in range(9)])
    for suggest, n_startup in ((tpe.suggest, 10), (tpe.configure(preset="hyperopt"), 20)):
        assert history.n_ok < n_startup
        got = suggest(MIXED, history, np.random.default_rng(5), 3)
        assert got == sample_assignments(MIXED, np.random.default_rng(5), 3)


def test_failed_and_pending_trials_do_not_end_startup() -> None:
    states = [TrialState.OK] * 5 + [TrialState.FAIL] * 10 + [TrialState.RUNNING] * 10
    history = _history(MIXED, [1.0] * 25, states=states)
    got = tpe.suggest(MIXED, history, np.random.default_rng(2))
    assert got == sample_assignments(MIXED, np.random.default_rng(2), 1)


@pytest.mark.parametrize("suggest", PRESETS)
def test_same_rng_same_proposals(suggest: Callable[..., Any]) -> None:
    history = _history(MIXED, [float(i % 7) for i in range(40)])
    a = suggest(MIXED, history, np.random.default_rng(11), 3)
    b = suggest(MIXED, history, np.random.default_rng(11), 3)
    assert a == b
    assert a != suggest(MIXED, history, np.random.default_rng(12), 3)


@pytest.mark.parametrize("suggest", PRESETS)
def test_proposals_are_valid_and_typed(suggest: Callable[..., Any]) -> None:
    history = _history(MIXED, [float(i % 5) for i in range(30)])
    for assignment in suggest(MIXED, history, np.random.default_rng(0), 5):
        MIXED.check_assignment(assignment)
        for spec in MIXED.params:
            expected = int if spec.dist.is_integer else float
            assert type(assignment[spec.label]) is expected


@pytest.mark.parametrize("suggest", PRESETS)
def test_n_proposals_are_distinct(suggest: Callable[..., Any]) -> None:
    history = _history(MIXED, [float(i) for i in range(30)])
    proposals = suggest(MIXED, history, np.random.default_rng(0), 12)
    assert len(proposals) == 12
    assert len({tuple(sorted(p.items())) for p in proposals}) == 12
    assert suggest(MIXED, history, np.random.default_rng(0), 0) == []


def test_small_finite_space_allows_repeats_beyond_its_size() -> None:
    space = compile_space({"c": hp.choice("c", [0, 1])})
    history = _history(space, [float(i) for i in range(12)])
    proposals = tpe.suggest(space, history, np.random.default_rng(0), 5)
    assert len(proposals) == 5
    assert {p["c"] for p in proposals} == {0, 1}


def _distances_to(
    suggest: Callable[..., Any], n_pending: int, centre: float, seed: int
) -> np.ndarray:
    """Distances of 8 proposals to ``centre``, with pending trials sitting on it."""
    space = compile_space({"x": hp.uniform("x", 0, 10)})
    rng = np.random.default_rng(seed)
    xs = rng.uniform(0, 10, 40)
    trials = [
        Trial("t", i, TrialState.OK, {"x": float(x)}, loss=abs(x - centre))
        for i, x in enumerate(xs)
    ]
    trials += [
        Trial("t", 40 + i, TrialState.RUNNING, {"x": centre + 0.01 * i}) for i in range(n_pending)
    ]
    history = History.from_trials(space, trials)
    return np.array(
        [
            abs(suggest(space, history, np.random.default_rng(seed * 100 + j))[0]["x"] - centre)
            for j in range(8)
        ]
    )


def test_constant_liar_spreads_concurrent_proposals() -> None:
    with_liar = np.mean([_distances_to(tpe.suggest, 12, 3.0, s).mean() for s in range(4)])
    no_liar = tpe.configure(constant_liar=False)
    without = np.mean([_distances_to(no_liar, 12, 3.0, s).mean() for s in range(4)])
    assert with_liar > 2 * without


def test_liar_applies_between_proposals_of_one_call() -> None:
    space = compile_space({"x": hp.uniform("x", 0, 10)})
    history = _history(space, [float(i) for i in range(30)])
    xs = [p["x"] for p in tpe.suggest(space, history, np.random.default_rng(3), 16)]
    assert np.std(xs) > 0.2


@pytest.mark.parametrize("suggest", PRESETS)
def test_conditional_spaces_give_valid_assignments(suggest: Callable[..., Any]) -> None:
    rng = np.random.default_rng(0)
    builder = HistoryBuilder(CONDITIONAL)
    for tid in range(45):
        (assignment,) = suggest(CONDITIONAL, builder.snapshot(), rng)
        CONDITIONAL.check_assignment(assignment)
        loss = assignment["shared"] + assignment["model"] + assignment.get("w", 0.5)
        state = TrialState.FAIL if tid % 9 == 4 else TrialState.OK
        builder.update(
            [Trial("t", tid, state, assignment, loss=loss if state is TrialState.OK else None)]
        )
    history = builder.snapshot()
    batch = suggest(CONDITIONAL, history, rng, 6)
    for assignment in batch:
        CONDITIONAL.check_assignment(assignment)


def test_hyperopt_preset_and_multivariate_false_agree() -> None:
    preset = tpe.configure(preset="hyperopt")
    assert tpe.configure(multivariate=False) == preset
    assert (preset.gamma, preset.gamma_rule, preset.n_startup) == (0.25, "sqrt", 20)
    assert (preset.n_candidates, preset.prior_weight, preset.linear_forgetting) == (24, 1.0, 25)
    default = tpe.configure()
    assert (default.multivariate, default.gamma, default.gamma_rule) == (True, 0.1, "linear")
    assert (default.n_startup, default.constant_liar) == (10, True)
    assert tpe.configure(preset="hyperopt", n_startup=5).n_startup == 5


def test_n_below_rules() -> None:
    preset = tpe.configure(preset="hyperopt")
    assert [preset.n_below(n) for n in (0, 1, 16, 100, 10**6)] == [0, 1, 1, 3, 25]
    default = tpe.configure()
    assert [default.n_below(n) for n in (0, 1, 10, 11, 100, 1000)] == [0, 1, 1, 2, 10, 25]


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"gamma": 0}, ValueError, "gamma"),
        ({"gamma": math.nan}, ValueError, "gamma"),
        ({"gamma": "0.1"}, TypeError, "gamma"),
        ({"n_candidates": 0}, ValueError, "n_candidates"),
        ({"n_startup": -1}, ValueError, "n_startup"),
        ({"n_startup": 2.0}, TypeError, "n_startup"),
        ({"prior_weight": -1.0}, ValueError, "prior_weight"),
        ({"linear_forgetting": 0}, ValueError, "linear_forgetting"),
        ({"max_below": 0}, ValueError, "max_below"),
        ({"multivariate": "yes"}, TypeError, "multivariate"),
        ({"constant_liar": 1}, TypeError, "constant_liar"),
        ({"gamma_rule": "cubic"}, ValueError, "gamma_rule"),
        ({"preset": "optuna"}, ValueError, "preset"),
        ({"n_ei_candidates": 24}, TypeError, "n_ei_candidates"),
    ],
)
def test_configure_rejects_bad_options(options: dict[str, Any], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        tpe.configure(**options)


def test_configured_suggest_is_frozen() -> None:
    configured = tpe.configure(n_candidates=48)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        configured.n_candidates = 1  # type: ignore[misc]
    assert hash(configured) == hash(tpe.configure(n_candidates=48))


EXTREME = [
    {"x": hp.uniform("x", 0, 1e-300)},
    {"x": hp.uniform("x", -1e308, 1e308)},
    {"x": hp.uniform("x", 1.0, 1.0 + 4e-16)},
    {"x": hp.loguniform("x", -700, 700)},
    {"x": hp.qloguniform("x", -700, 700, 1e-300)},
    {"x": hp.quniform("x", -1e300, 1e300, 1e299)},
    {"x": hp.quniform("x", 0, 1e-300, 1e-301)},
    {"x": hp.normal("x", 0, 1e300)},
    {"x": hp.normal("x", 1e300, 1e-300)},
    {"x": hp.qnormal("x", 0, 1e300, 1e-300)},
    {"x": hp.lognormal("x", 700, 1e300)},
    {"x": hp.lognormal("x", -700, 1e-300)},
    {"x": hp.qlognormal("x", 0, 50, 1e-10)},
    {"x": hp.uniformint("x", -(2**52), 2**52)},
    {"x": hp.randint("x", 10**15)},
    {"x": hp.pchoice("x", [(0.0, 1), (1.0, 2)])},
    {"x": hp.choice("x", ["only"])},
]


@pytest.mark.parametrize("space", EXTREME, ids=lambda s: repr(s["x"])[:60])
@pytest.mark.parametrize("kind", ["default", "hyperopt"])
def test_no_floating_point_error_leaks(space: dict[str, Any], kind: str) -> None:
    compiled = compile_space(space)
    suggest = tpe.configure(preset=kind, n_startup=0)
    histories = [
        History.empty(compiled),
        _history(compiled, [None] * 8),  # all failed
        _history(compiled, [1.0] * 30),  # ties
        _history(compiled, [float(i) for i in range(40)], seed=1),
        _history(compiled, [0.0] * 5, states=[TrialState.RUNNING] * 5),
    ]
    with np.errstate(all="raise", under="ignore"):
        for history in histories:
            for assignment in suggest(compiled, history, np.random.default_rng(0), 3):
                compiled.check_assignment(assignment)


@pytest.mark.parametrize("kind", ["default", "hyperopt"])
def test_stray_stored_values_do_not_break_the_model(kind: str) -> None:
    space = compile_space({"c": hp.choice("c", [0, 1, 2]), "x": hp.uniform("x", 0, 1)})
    trials = [
        Trial("t", i, TrialState.OK, {"c": i % 3, "x": 0.1 * (i % 10)}, loss=float(i))
        for i in range(30)
    ]
    # Values outside the support (a hand-queued assignment, an older space).
    trials.append(Trial("t", 30, TrialState.OK, {"c": 7, "x": 5.0}, loss=-1.0))
    history = History.from_trials(space, trials)
    for assignment in tpe.configure(preset=kind)(space, history, np.random.default_rng(0), 4):
        space.check_assignment(assignment)
