"""The twelve `hp` constructors and every validation rule of DESIGN section 2."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import asyncopt as ao
from asyncopt import SpaceError, hp
from asyncopt.space import compile_space
from asyncopt.space.distributions import Distribution
from asyncopt.space.expressions import Choice, Param


def raises_for(label: str, build: Callable[[], Any], match: str | None = None) -> SpaceError:
    """Assert ``build()`` raises a `SpaceError` that names ``label`` (attribute and text)."""
    with pytest.raises(SpaceError, match=match) as info:
        compile_space(build())
    error = info.value
    assert error.label == label
    assert repr(label) in str(error)
    return error


# -- the constructors -------------------------------------------------------------------------


def test_uniform() -> None:
    x = hp.uniform("x", -2, 3)
    assert x == Param("x", Distribution("uniform", (-2, 3)))
    assert (x.dist.low, x.dist.high) == (-2.0, 3.0)
    values = [ao.sample(x, seed) for seed in range(50)]
    assert all(type(v) is float and -2 <= v <= 3 for v in values)


def test_quniform_argument_order_is_low_high_q() -> None:
    x = hp.quniform("x", 0, 10, 2.5)
    assert x.dist.args == (0, 10, 2.5)
    assert x.dist.q == 2.5
    values = {ao.sample(x, seed) for seed in range(200)}
    assert values <= {0.0, 2.5, 5.0, 7.5, 10.0}
    assert all(type(v) is float for v in values)


def test_loguniform_bounds_are_in_log_space() -> None:
    x = hp.loguniform("lr", math.log(1e-4), math.log(1e-1))
    values = [ao.sample(x, seed) for seed in range(100)]
    assert all(type(v) is float and 1e-4 <= v <= 1e-1 for v in values)
    # Hyperopt's meaning: exp(uniform(-1, 1)), so negative bounds are normal and valid.
    assert 1 / math.e <= ao.sample(hp.loguniform("y", -1, 1), 0) <= math.e


def test_qloguniform() -> None:
    x = hp.qloguniform("x", math.log(1), math.log(1000), 10)
    values = [ao.sample(x, seed) for seed in range(100)]
    assert all(type(v) is float and v % 10 == 0 and 0 <= v <= 1000 for v in values)


def test_normal_and_qnormal() -> None:
    assert hp.normal("n", 1, 2).dist.args == (1, 2)
    assert (hp.normal("n", 1, 2).dist.mu, hp.normal("n", 1, 2).dist.sigma) == (1.0, 2.0)
    assert type(ao.sample(hp.normal("n", 1, 2), 0)) is float
    values = [ao.sample(hp.qnormal("q", 0, 10, 3), seed) for seed in range(100)]
    assert all(type(v) is float and v % 3 == 0 for v in values)


def test_lognormal_and_qlognormal_are_positive() -> None:
    values = [ao.sample(hp.lognormal("l", 0, 1), seed) for seed in range(100)]
    assert all(type(v) is float and v > 0 for v in values)
    values = [ao.sample(hp.qlognormal("q", 3, 1, 5), seed) for seed in range(100)]
    assert all(type(v) is float and v >= 0 and v % 5 == 0 for v in values)


def test_uniformint_is_inclusive_and_int() -> None:
    x = hp.uniformint("k", 1, 3)
    assert x.dist.q == 1.0
    values = {ao.sample(x, seed) for seed in range(200)}
    assert values == {1, 2, 3}
    assert all(type(v) is int for v in values)


def test_randint_with_one_argument_counts_from_zero() -> None:
    x = hp.randint("r", 4)
    assert x.dist.args == (0, 4)
    assert (x.dist.low, x.dist.high, x.dist.size, x.dist.offset) == (0, 4, 4, 0)
    assert x.dist.is_categorical
    values = {ao.sample(x, seed) for seed in range(200)}
    assert values == {0, 1, 2, 3}
    assert all(type(v) is int for v in values)


def test_randint_with_two_arguments_excludes_upper() -> None:
    x = hp.randint("r", -2, 2)
    assert x.dist.args == (-2, 2)
    assert (x.dist.size, x.dist.offset) == (4, -2)
    assert {ao.sample(x, seed) for seed in range(200)} == {-2, -1, 0, 1}


def test_choice_gives_the_option_and_stores_the_index() -> None:
    space = {"opt": hp.choice("opt", ["adam", {"name": "sgd", "m": hp.uniform("m", 0, 1)}])}
    assert isinstance(space["opt"], Choice)
    assert ao.space_eval(space, {"opt": 0}) == {"opt": "adam"}
    assert ao.space_eval(space, {"opt": 1, "m": 0.5}) == {"opt": {"name": "sgd", "m": 0.5}}
    table = compile_space(space)
    assert table["opt"].dist == Distribution("choice", (2,))
    seen = {repr(ao.sample(space, seed)["opt"])[:6] for seed in range(30)}
    assert seen == {"'adam'", "{'name"}


def test_choice_accepts_a_tuple_and_a_single_option() -> None:
    assert ao.sample(hp.choice("c", ("only",)), 0) == "only"
    assert ao.sample(hp.choice("c", (1, 2)), 0) in (1, 2)


def test_pchoice() -> None:
    c = hp.pchoice("p", [(0.2, "a"), (0.8, "b")])
    assert c.dist == Distribution("pchoice", (0.2, 0.8))
    assert c.options == ("a", "b")
    assert np.allclose(c.dist.probabilities, [0.2, 0.8])
    assert ao.space_eval(c, {"p": 1}) == "b"
    assert {ao.sample(c, seed) for seed in range(100)} == {"a", "b"}


def test_pchoice_with_zero_probability_option_never_draws_it() -> None:
    c = hp.pchoice("p", [(0.0, "never"), (1.0, "always")])
    assert {ao.sample(c, seed) for seed in range(50)} == {"always"}


def test_numpy_numbers_are_accepted_as_parameters() -> None:
    x = hp.uniform("x", np.float32(0.5), np.int64(2))
    assert x.dist.args == (0.5, 2)
    assert all(type(a) in (int, float) for a in x.dist.args)
    assert hp.randint("r", np.int32(3)).dist.args == (0, 3)


def test_constructors_are_distinct_when_arguments_differ() -> None:
    assert hp.uniform("x", 0, 1) == hp.uniform("x", 0.0, 1.0)
    assert hp.uniform("x", 0, 1) != hp.loguniform("x", 0, 1)
    assert hp.uniform("x", 0, 1) != hp.uniform("y", 0, 1)
    assert hp.quniform("x", 0, 1, 0.5) != hp.quniform("x", 0, 1, 0.25)


# -- validation: labels -----------------------------------------------------------------------


@pytest.mark.parametrize("label", [None, 3, b"x", ("x",)])
def test_label_must_be_a_string(label: Any) -> None:
    with pytest.raises(SpaceError, match="non-empty strings") as info:
        hp.uniform(label, 0, 1)
    assert repr(label) in str(info.value)


@pytest.mark.parametrize(
    "build",
    [
        lambda: hp.uniform("", 0, 1),
        lambda: hp.choice("", [1, 2]),
        lambda: hp.pchoice("", [(1.0, "a")]),
        lambda: hp.randint("", 3),
    ],
)
def test_label_must_be_non_empty(build: Callable[[], Any]) -> None:
    raises_for("", build, match="non-empty")


def test_labels_are_unique() -> None:
    raises_for(
        "x",
        lambda: {"a": hp.uniform("x", 0, 1), "b": hp.uniform("x", 0, 2)},
        match="two different",
    )
    raises_for(
        "x",
        lambda: [hp.uniform("x", 0, 1), hp.choice("x", [0, 1])],
        match="two different",
    )
    raises_for(
        "c",
        lambda: (hp.choice("c", [0, 1]), hp.choice("c", [False, True])),
        match="two different",
    )
    # The same label in two branches of a choice still names two hyperparameters.
    raises_for(
        "lr",
        lambda: hp.choice(
            "model", [{"lr": hp.uniform("lr", 0, 1)}, {"lr": hp.loguniform("lr", -5, 0)}]
        ),
        match="two different",
    )


def test_the_same_expression_may_be_reused() -> None:
    x = hp.uniform("x", 0, 1)
    space = {"a": x, "b": [x, x * 2], "c": hp.choice("c", [x, {"x": x}])}
    table = compile_space(space)
    assert table.labels.count("x") == 1
    value = ao.sample(space, 3)
    assert value["b"] == [value["a"], value["a"] * 2]
    # A reused choice is one hyperparameter too, and so are the ones inside it.
    inner = hp.choice("inner", [x, 0])
    assert compile_space([inner, {"again": inner}]).labels == ("inner", "x")


@pytest.mark.parametrize(
    "build",
    [
        lambda: [hp.uniform("x", -5, 5), hp.uniform("x", -5, 5)],
        lambda: {"a": hp.choice("x", [1, 2]), "b": hp.choice("x", [1, 2])},
        lambda: hp.choice("m", [{"lr": hp.uniform("x", 0, 1)}, {"lr": hp.uniform("x", 0, 1)}]),
        lambda: hp.uniform("x", 0, 1) + hp.uniform("x", 0, 1),
    ],
    ids=["list", "choices", "two branches", "arithmetic"],
)
def test_equal_expressions_built_separately_are_refused(build: Callable[[], Any]) -> None:
    # As Hyperopt's DuplicateLabel: a copied line whose label was not changed must not
    # silently couple two parameters, even when the copies are identical.
    raises_for("x", build, match="built separately")


# -- validation: parameters are finite plain numbers ------------------------------------------

ALL_NUMERIC: list[tuple[str, Callable[..., Any], tuple[Any, ...]]] = [
    ("uniform", hp.uniform, (0, 1)),
    ("quniform", hp.quniform, (0, 1, 0.1)),
    ("loguniform", hp.loguniform, (-3, 0)),
    ("qloguniform", hp.qloguniform, (0, 3, 1)),
    ("normal", hp.normal, (0, 1)),
    ("qnormal", hp.qnormal, (0, 1, 0.5)),
    ("lognormal", hp.lognormal, (0, 1)),
    ("qlognormal", hp.qlognormal, (0, 1, 0.5)),
    ("uniformint", hp.uniformint, (0, 5)),
    ("randint", hp.randint, (0, 5)),
]


@pytest.mark.parametrize(("name", "build", "args"), ALL_NUMERIC, ids=[n for n, *_ in ALL_NUMERIC])
def test_valid_arguments_are_accepted(
    name: str, build: Callable[..., Any], args: tuple[Any]
) -> None:
    param = build("v", *args)
    assert param.dist.name == name
    compile_space(param).check_assignment(
        {"v": param.dist.to_python(param.dist.sample(np.random.default_rng(0), 1)[0])}
    )


@pytest.mark.parametrize(("name", "build", "args"), ALL_NUMERIC, ids=[n for n, *_ in ALL_NUMERIC])
@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_parameters_must_be_finite(
    name: str, build: Callable[..., Any], args: tuple[Any, ...], bad: float
) -> None:
    for position in range(len(args)):
        changed = list(args)
        changed[position] = bad
        raises_for("v", lambda changed=changed: build("v", *changed), match="not finite")


@pytest.mark.parametrize(("name", "build", "args"), ALL_NUMERIC, ids=[n for n, *_ in ALL_NUMERIC])
@pytest.mark.parametrize(
    "bad",
    [hp.uniform("other", 0, 1), hp.uniform("other", 0, 1) + 1, "1", True, None, [1], np.bool_(1)],
    ids=["param", "expression", "str", "bool", "none", "list", "numpy-bool"],
)
def test_parameters_must_be_plain_numbers(
    name: str, build: Callable[..., Any], args: tuple[Any, ...], bad: Any
) -> None:
    for position in range(len(args)):
        if name == "randint" and position == 1 and bad is None:
            continue  # randint("v", 0, None) is the one-bound form, randint("v", 0)
        changed = list(args)
        changed[position] = bad
        raises_for("v", lambda changed=changed: build("v", *changed), match="plain numbers")


def test_pchoice_probabilities_must_be_plain_numbers() -> None:
    raises_for("p", lambda: hp.pchoice("p", [(hp.uniform("w", 0, 1), "a")]), "plain numbers")
    raises_for("p", lambda: hp.pchoice("p", [(math.nan, "a"), (1.0, "b")]), "not finite")


# -- validation: low < high -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "label"),
    [
        (lambda: hp.uniform("u", 0, 0), "u"),  # Hyperopt accepts this one
        (lambda: hp.uniform("u", 1, 0), "u"),
        (lambda: hp.uniform("u", 0, -1), "u"),
        (lambda: hp.uniform("u", -0.0, 0.0), "u"),
        (lambda: hp.quniform("q", 5, 5, 1), "q"),
        (lambda: hp.quniform("q", 0, -5, 1), "q"),
        (lambda: hp.loguniform("l", 0, 0), "l"),
        (lambda: hp.loguniform("l", -1, -2), "l"),
        (lambda: hp.qloguniform("ql", 2, 1, 1), "ql"),
        (lambda: hp.uniformint("i", 3, 3), "i"),
        (lambda: hp.uniformint("i", 3, 0), "i"),
        (lambda: hp.randint("r", 0), "r"),
        (lambda: hp.randint("r", -3), "r"),
        (lambda: hp.randint("r", 5, 5), "r"),
        (lambda: hp.randint("r", 5, 2), "r"),
    ],
)
def test_low_must_be_below_high(build: Callable[[], Any], label: str) -> None:
    raises_for(label, build, match="low < high")


@pytest.mark.parametrize(
    "build",
    [
        lambda: hp.uniformint("i", 0.5, 3),
        lambda: hp.uniformint("i", 0, 2.5),
        lambda: hp.randint("i", 2.5),
        lambda: hp.randint("i", 0.5, 3),
    ],
)
def test_integer_distributions_need_integer_bounds(build: Callable[[], Any]) -> None:
    raises_for("i", build, match="integers")


def test_integral_float_bounds_are_accepted_for_integer_distributions() -> None:
    assert {ao.sample(hp.randint("r", 3.0), s) for s in range(60)} == {0, 1, 2}
    assert {ao.sample(hp.uniformint("u", 1.0, 2.0), s) for s in range(60)} == {1, 2}


@pytest.mark.parametrize(
    "build",
    [lambda: hp.loguniform("l", 1e-5, 1e5), lambda: hp.qloguniform("l", 1, 1000, 1)],
)
def test_log_bounds_that_overflow_exp_point_at_log_space(build: Callable[[], Any]) -> None:
    error = raises_for("l", build, match="log space")
    assert "overflows" in str(error)
    assert "Did you mean" in str(error)
    assert "log(" in str(error)


def test_log_bounds_that_underflow_exp_are_rejected_without_a_log_hint() -> None:
    error = raises_for("l", lambda: hp.loguniform("l", -1000, 0), match="log space")
    assert "exp(-1000) underflows to 0" in str(error)
    assert "Did you mean" not in str(error)


@pytest.mark.parametrize(
    "build",
    [
        lambda: hp.randint("i", 10**20),
        lambda: hp.randint("i", -(2**53) - 2, 0),
        lambda: hp.uniformint("i", 0, 2**63 - 1),
        lambda: hp.uniformint("i", 0, 2.0**60),
    ],
)
def test_integer_bounds_must_be_exact_in_float64(build: Callable[[], Any]) -> None:
    raises_for("i", build, match=r"2\*\*53")


def test_integer_bounds_up_to_two_to_the_53_work() -> None:
    x = hp.uniformint("i", -(2**53), 2**53)
    values = [ao.sample(x, seed) for seed in range(20)]
    assert all(type(v) is int and -(2**53) <= v <= 2**53 for v in values)
    assert all(x.dist.contains(v) for v in values)


@pytest.mark.parametrize(
    "build", [lambda: hp.lognormal("l", 800, 1), lambda: hp.qlognormal("l", -800, 1, 1)]
)
def test_lognormal_mu_that_overflows_exp_is_rejected(build: Callable[[], Any]) -> None:
    raises_for("l", build, match="log space")


# -- validation: q > 0, sigma > 0 -------------------------------------------------------------


@pytest.mark.parametrize("q", [0, -1, -0.5, 0.0])
@pytest.mark.parametrize(
    "build",
    [
        lambda q: hp.quniform("q", 0, 10, q),
        lambda q: hp.qloguniform("q", 0, 3, q),
        lambda q: hp.qnormal("q", 0, 1, q),
        lambda q: hp.qlognormal("q", 0, 1, q),
    ],
    ids=["quniform", "qloguniform", "qnormal", "qlognormal"],
)
def test_q_must_be_positive(build: Callable[[float], Any], q: float) -> None:
    raises_for("q", lambda: build(q), match="q > 0")


@pytest.mark.parametrize("sigma", [0, -1, 0.0, -1e-9])
@pytest.mark.parametrize(
    "build",
    [
        lambda s: hp.normal("s", 0, s),
        lambda s: hp.qnormal("s", 0, s, 1),
        lambda s: hp.lognormal("s", 0, s),
        lambda s: hp.qlognormal("s", 0, s, 1),
    ],
    ids=["normal", "qnormal", "lognormal", "qlognormal"],
)
def test_sigma_must_be_positive(build: Callable[[float], Any], sigma: float) -> None:
    raises_for("s", lambda: build(sigma), match="sigma > 0")


# -- validation: choices ----------------------------------------------------------------------


def test_choice_options_must_be_non_empty() -> None:
    raises_for("c", lambda: hp.choice("c", []), match="at least one option")
    raises_for("c", lambda: hp.choice("c", ()), match="at least one option")


@pytest.mark.parametrize("options", ["abc", b"abc", {"a": 1}, 3, None, iter([1, 2])])
def test_choice_options_must_be_a_list_or_tuple(options: Any) -> None:
    raises_for("c", lambda: hp.choice("c", options), match="list or tuple")


def test_pchoice_options_must_be_non_empty() -> None:
    raises_for("p", lambda: hp.pchoice("p", []), match="at least one option")


@pytest.mark.parametrize(
    "p_options",
    [[0.5, 0.5], [(0.5,), (0.5,)], [(0.5, "a", "b")], [[0.5, "a"], [0.5, "b"]], 5, "ab"],
)
def test_pchoice_takes_probability_option_pairs(p_options: Any) -> None:
    raises_for("p", lambda: hp.pchoice("p", p_options), match=r"\(probability, option\) pairs")


def test_pchoice_probabilities_must_be_non_negative() -> None:
    raises_for("p", lambda: hp.pchoice("p", [(-0.5, "a"), (1.5, "b")]), match=">= 0")


@pytest.mark.parametrize(
    "probabilities", [(0.5, 0.4), (0.5, 0.6), (0.0, 0.0), (1 / 3, 1 / 3, 1 / 3 - 2e-6)]
)
def test_pchoice_probabilities_must_sum_to_one(probabilities: tuple[float, ...]) -> None:
    pairs = [(p, i) for i, p in enumerate(probabilities)]
    raises_for("p", lambda: hp.pchoice("p", pairs), match="sum to 1")


def test_pchoice_sum_tolerance_is_one_in_a_million() -> None:
    c = hp.pchoice("p", [(0.5, "a"), (0.5 + 9e-7, "b")])
    assert c.dist.probabilities.sum() == pytest.approx(1.0)
    thirds = hp.pchoice("p", [(1 / 3, "a"), (1 / 3, "b"), (1 / 3, "c")])
    assert len(thirds.options) == 3


def test_errors_inside_nested_spaces_name_the_inner_label() -> None:
    raises_for(
        "deep",
        lambda: {
            "outer": hp.choice(
                "outer", [{"inner": hp.choice("inner", [[hp.uniform("deep", 1, 1)]])}]
            )
        },
    )


def test_space_error_is_a_value_error_and_an_asyncopt_error() -> None:
    error = raises_for("u", lambda: hp.uniform("u", 0, 0))
    assert isinstance(error, ValueError)
    assert isinstance(error, ao.AsyncoptError)


class _FakeHyperoptApply:
    """The shape of ``hyperopt.pyll.base.Apply`` (hyperopt is not a test dependency)."""

    __module__ = "hyperopt.pyll.base"

    def __init__(self, name: str, *pos_args: Any, obj: Any = None) -> None:
        self.name = name
        self.pos_args = pos_args
        self.obj = obj


def test_a_hyperopt_expression_is_refused_with_its_label() -> None:
    label = _FakeHyperoptApply("literal", obj="lr")
    expression = _FakeHyperoptApply("float", _FakeHyperoptApply("hyperopt_param", label))
    error = raises_for("lr", lambda: {"nested": [expression]}, match="Hyperopt expression")
    assert "asyncopt's hp" in str(error)
