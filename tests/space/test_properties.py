"""Property tests: random nested spaces compile, sample, evaluate and describe consistently."""

from __future__ import annotations

import json
import math
import pickle
import sys
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import asyncopt as ao
from asyncopt import SpaceError, hp
from asyncopt.space import (
    CompiledSpace,
    Distribution,
    compile_space,
    rebuild,
    sample_assignments,
)
from asyncopt.space.expressions import (
    Apply,
    Choice,
    DictNode,
    ListNode,
    Param,
    TupleNode,
    as_node,
)

from .strategies import conditional_spaces, is_finite_number, spaces

PROPERTY = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SEEDS = st.integers(min_value=0, max_value=2**32 - 1)
DRAWS = 6


# -- independent oracles -----------------------------------------------------------------------


def active_labels(node: Any, assignment: dict[str, Any]) -> set[str]:
    """Labels met when walking ``node`` along the branches ``assignment`` picks."""
    if isinstance(node, Param):
        return {node.label}
    if isinstance(node, Choice):
        chosen = node.options[assignment[node.label]]
        return {node.label} | active_labels(chosen, assignment)
    children: tuple[Any, ...] = ()
    if isinstance(node, DictNode):
        children = tuple(part for item in node.items for part in item)
    elif isinstance(node, (ListNode, TupleNode)):
        children = node.items
    elif isinstance(node, Apply):
        children = node.args
    return set().union(*(active_labels(child, assignment) for child in children))


def all_nodes(node: Any) -> list[Any]:
    """Every labelled node of the tree, once per place it appears."""
    found: list[Any] = []
    if isinstance(node, (Param, Choice)):
        found.append(node)
    if isinstance(node, Choice):
        children: tuple[Any, ...] = node.options
    elif isinstance(node, DictNode):
        children = tuple(part for item in node.items for part in item)
    elif isinstance(node, (ListNode, TupleNode)):
        children = node.items
    elif isinstance(node, Apply):
        children = node.args
    else:
        children = ()
    for child in children:
        found.extend(all_nodes(child))
    return found


def on_grid(value: float, q: float) -> bool:
    steps = value / q
    if not math.isfinite(steps):
        # Past the float range every representable value is as close to the grid as it gets.
        return True
    # Multiplying back by q rounds once more: allow a few ulps of the step count.
    return math.isclose(steps, round(steps), rel_tol=4 * sys.float_info.epsilon, abs_tol=1e-6)


def in_support(dist: Distribution, value: Any) -> bool:
    """Membership in the support, written from the table of DESIGN section 2."""
    name, args = dist.name, dist.args
    if name in ("choice", "pchoice", "randint", "uniformint"):
        if type(value) is not int:
            return False
        if name == "choice":
            return 0 <= value < args[0]
        if name == "pchoice":
            return 0 <= value < len(args) and args[value] > 0
        if name == "randint":
            return args[0] <= value < args[1]
        return args[0] <= value <= args[1]
    if type(value) is not float or not math.isfinite(value):
        return False
    if name == "uniform":
        return args[0] <= value <= args[1]
    if name == "loguniform":
        return math.exp(args[0]) * (1 - 1e-12) <= value <= math.exp(args[1]) * (1 + 1e-12)
    if name in ("quniform", "qloguniform"):
        low, high, q = args
        if name == "qloguniform":
            low, high = math.exp(low), math.exp(high)
        tolerance = 1e-9 * max(1.0, abs(low), abs(high))
        return (
            on_grid(value, q)
            and round(low / q) * q - tolerance <= value <= round(high / q) * q + tolerance
        )
    if name == "normal":
        return True
    if name == "qnormal":
        return on_grid(value, args[2])
    if name == "lognormal":
        return value >= 0  # exp() of a very negative draw underflows to 0.0
    if name == "qlognormal":
        return value >= 0 and on_grid(value, args[2])
    raise AssertionError(f"unknown distribution {name}")


def same(a: Any, b: Any) -> bool:
    """Structural equality of evaluated spaces, with NaN equal to NaN and types checked."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def draws(table: CompiledSpace, seed: int, n: int = DRAWS) -> list[dict[str, Any]]:
    return sample_assignments(table, np.random.default_rng(seed), n)


# -- properties --------------------------------------------------------------------------------
# Drawing a space costs more than checking it, so each test checks several properties of
# the spaces it draws.


@settings(PROPERTY, max_examples=100)
@given(space=spaces())
def test_spaces_compile_to_a_consistent_table_and_describe_round_trips(space: Any) -> None:
    table = compile_space(space)
    root = as_node(space)
    nodes = all_nodes(root)
    # One row per label, with the distribution of the node that carries it.
    assert set(table.labels) == {node.label for node in nodes}
    assert len(set(table.labels)) == len(table.labels)
    for node in nodes:
        assert table[node.label].dist == node.dist
    # Parents first, and only choices are parents.
    position = {label: i for i, label in enumerate(table.labels)}
    for spec in table:
        for parent in spec.condition.parents:
            assert position[parent] < position[spec.label]
            assert table[parent].dist.is_categorical
    assert compile_space(space) == table
    # The JSON description rebuilds an equal space with the same fingerprint.
    text = json.dumps(table.describe(), allow_nan=False)
    rebuilt = rebuild(json.loads(text))
    assert rebuilt == table.root
    assert hash(rebuilt) == hash(table.root)
    again = compile_space(rebuilt)
    assert again == table
    assert again.fingerprint == table.fingerprint
    assert again.labels == table.labels
    assert json.dumps(again.describe(), allow_nan=False) == text
    # Spaces travel to worker processes by pickle as well.
    copied = pickle.loads(pickle.dumps(table))
    assert copied == table
    assert copied.fingerprint == table.fingerprint
    # The fingerprint covers the table only.
    assert compile_space({"wrapped": [space, "constant"]}).fingerprint == table.fingerprint
    extra = compile_space([space, hp.uniform("an extra label", 0, 1)])
    assert extra.fingerprint != table.fingerprint


@PROPERTY
@given(space=spaces(), seed=SEEDS)
def test_samples_are_in_support_active_only_and_evaluate_consistently(
    space: Any, seed: int
) -> None:
    table = compile_space(space)
    rebuilt = rebuild(json.loads(json.dumps(table.describe())))
    assignments = draws(table, seed)
    assert assignments == draws(table, seed)
    for assignment in assignments:
        # Every value lies in its distribution's support (bounds, grid, integer type).
        for label, value in assignment.items():
            dist = table[label].dist
            assert in_support(dist, value), (label, dist, value)
            assert dist.contains(value)
        table.check_assignment(assignment)
        # Exactly the labels on the chosen branches are present.
        assert set(assignment) == active_labels(table.root, assignment)
        for spec in table:
            assert (spec.label in assignment) == spec.condition.holds(assignment)
            # A parameter evaluated alone gives its raw value with the objective's type.
            if spec.label in assignment and not spec.dist.is_categorical:
                value = ao.space_eval(hp_node(table, spec.label), assignment)
                assert value == assignment[spec.label]
                assert type(value) is (int if spec.dist.is_integer else float)
                assert is_finite_number(value)
        # Original, compiled and rebuilt spaces evaluate alike.
        evaluated = ao.space_eval(space, assignment)
        assert same(ao.space_eval(table, assignment), evaluated)
        assert same(ao.space_eval(rebuilt, assignment), evaluated)
    # ao.sample is space_eval of the assignment drawn with the same seed.
    sampled = ao.sample(space, seed)
    vectorized_one = sample_assignments(table, np.random.default_rng(seed), 1, fast=False)[0]
    assert same(ao.space_eval(space, vectorized_one), sampled)
    # The scalar path for one proposal draws other values from the same distributions.
    fast_one = sample_assignments(table, np.random.default_rng(seed), 1)[0]
    table.check_assignment(fast_one)
    for label, value in fast_one.items():
        assert in_support(table[label].dist, value), (label, value)
    assert same(ao.sample(table, np.random.default_rng(seed)), sampled)
    assert same(ao.sample(rebuilt, seed), sampled)


@settings(PROPERTY, max_examples=60)
@given(space=conditional_spaces(), seed=SEEDS)
def test_conditional_spaces_leave_inactive_labels_out(space: Any, seed: int) -> None:
    table = compile_space(space)
    assert not table[table.labels[0]].condition.parents
    for assignment in draws(table, seed, 20):
        assert set(assignment) == active_labels(table.root, assignment)
        table.check_assignment(assignment)


def hp_node(table: CompiledSpace, label: str) -> Any:
    return next(node for node in all_nodes(table.root) if node.label == label)


# -- description edge cases ----------------------------------------------------------------------


def test_opaque_constants_are_described_but_cannot_be_rebuilt() -> None:
    table = compile_space({"x": hp.uniform("x", 0, 1), "obj": object(), "raw": b"bytes"})
    description = json.loads(json.dumps(table.describe()))
    with pytest.raises(SpaceError, match="cannot be rebuilt"):
        rebuild(description)
    # A large constant leaves only a short reminder in the stored description.
    big = json.dumps(compile_space({"table": np.zeros(100_000)}).describe())
    assert len(big) < 300


@pytest.mark.parametrize(
    "description",
    [
        None,
        {},
        {"format": 99, "root": 1},
        {"format": 1, "root": {"param": "x"}},
        {"format": 1, "root": {"param": "x", "name": "uniform", "args": [1, 0]}},
        {"format": 1, "root": {"choice": "c", "name": "choice", "args": [2], "options": [1]}},
        {"format": 1, "root": {"list": 3}},
        {"format": 1, "root": {"dict": [[1]]}},
        {"format": 1, "root": {"what": 1}},
    ],
)
def test_malformed_descriptions_raise_space_error(description: Any) -> None:
    with pytest.raises(SpaceError):
        rebuild(description)


def test_special_floats_survive_the_description() -> None:
    space = [float("inf"), -float("inf"), float("nan"), -0.0, 1e308, 5e-324]
    text = json.dumps(compile_space(space).describe(), allow_nan=False)
    rebuilt = rebuild(json.loads(text))
    assert rebuilt == as_node(space)
    assert same(ao.space_eval(rebuilt, {}), space)
    assert math.copysign(1.0, ao.space_eval(rebuilt, {})[3]) == -1.0


# -- arbitrary constructor arguments: a SpaceError now, or a space that samples cleanly --------

ANY_ARGUMENT = st.one_of(
    st.floats(),
    st.floats(min_value=-20, max_value=20),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.integers(min_value=-5, max_value=5),
    st.sampled_from([0, 1, -1, 0.5, 1e-300, 1e300, 709.0, 710.0, 2**53, True, None, "1"]),
)
CONSTRUCTORS = {
    "uniform": (hp.uniform, 2),
    "quniform": (hp.quniform, 3),
    "loguniform": (hp.loguniform, 2),
    "qloguniform": (hp.qloguniform, 3),
    "normal": (hp.normal, 2),
    "qnormal": (hp.qnormal, 3),
    "lognormal": (hp.lognormal, 2),
    "qlognormal": (hp.qlognormal, 3),
    "uniformint": (hp.uniformint, 2),
    "randint1": (hp.randint, 1),
    "randint2": (hp.randint, 2),
}


@settings(PROPERTY, max_examples=300)
@given(
    name=st.sampled_from(sorted(CONSTRUCTORS)),
    args=st.lists(ANY_ARGUMENT, min_size=3, max_size=3),
    seed=SEEDS,
)
def test_any_arguments_give_a_space_error_or_a_sound_parameter(
    name: str, args: list[Any], seed: int
) -> None:
    build, arity = CONSTRUCTORS[name]
    try:
        param = build("v", *args[:arity])
    except SpaceError as error:
        refused: SpaceError | None = error
    else:
        refused = None
    if refused is not None:
        assert refused.label == "v"
        return
    table = compile_space(param)
    with np.errstate(all="raise", under="ignore"):
        assignments = draws(table, seed, 20)
    for assignment in assignments:
        assert in_support(param.dist, assignment["v"]), (param.dist, assignment)
        assert param.dist.contains(assignment["v"])
        table.check_assignment(assignment)
    assert rebuild(json.loads(json.dumps(table.describe(), allow_nan=False))) == param


@settings(PROPERTY, max_examples=100)
@given(
    probabilities=st.lists(st.one_of(st.floats(), st.sampled_from([0.0, 0.5, 1.0])), max_size=4),
    seed=SEEDS,
)
def test_any_pchoice_probabilities_give_a_space_error_or_a_sound_choice(
    probabilities: list[float], seed: int
) -> None:
    try:
        choice = hp.pchoice("p", [(p, i) for i, p in enumerate(probabilities)])
    except SpaceError as error:
        refused: SpaceError | None = error
    else:
        refused = None
    if refused is not None:
        assert refused.label == "p"
        return
    assert abs(math.fsum(probabilities) - 1) <= 1e-6
    for assignment in draws(compile_space(choice), seed, 20):
        assert probabilities[assignment["p"]] > 0
