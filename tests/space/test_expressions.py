"""Expressions: arithmetic, `scope` functions, structural equality, hashing, immutability."""

from __future__ import annotations

import copy
import math
import operator
import pickle
from collections.abc import Callable
from typing import Any

import attrs
import numpy as np
import pytest

import asyncopt as ao
from asyncopt import SpaceError, hp, scope
from asyncopt.space import Distribution, compile_space, rebuild
from asyncopt.space.expressions import (
    Apply,
    Choice,
    DictNode,
    ListNode,
    Literal,
    Param,
    TupleNode,
    as_node,
)

X = 2.5
Y = -3


def at(expression: Any, **values: float) -> Any:
    """``expression`` evaluated with x = 2.5, y = -3 unless given."""
    return ao.space_eval(expression, {"x": X, "y": Y, **values})


x = hp.uniform("x", -10, 10)
y = hp.randint("y", -5, 5)

BINARY: list[tuple[str, Callable[[Any, Any], Any]]] = [
    ("add", operator.add),
    ("sub", operator.sub),
    ("mul", operator.mul),
    ("truediv", operator.truediv),
    ("floordiv", operator.floordiv),
    ("mod", operator.mod),
    ("pow", operator.pow),
]


@pytest.mark.parametrize(("name", "op"), BINARY, ids=[n for n, _ in BINARY])
def test_binary_operators_with_constants_on_either_side(
    name: str, op: Callable[[Any, Any], Any]
) -> None:
    left = op(x, 4)
    right = op(4, x)
    assert left == Apply(name, (x, 4))
    assert right == Apply(name, (4, x))
    assert at(left) == op(X, 4)
    assert at(right) == op(4, X)


@pytest.mark.parametrize(("name", "op"), BINARY, ids=[n for n, _ in BINARY])
def test_binary_operators_between_expressions(name: str, op: Callable[[Any, Any], Any]) -> None:
    expression = op(x, y)
    assert expression == Apply(name, (x, y))
    assert at(expression) == op(X, Y)


def test_unary_operators() -> None:
    assert -x == Apply("neg", (x,))
    assert +x == Apply("pos", (x,))
    assert abs(y) == Apply("abs", (y,))
    assert at(-x) == -X
    assert at(+x) == X
    assert at(abs(y)) == 3
    assert type(at(abs(y))) is int


def test_arithmetic_composes_and_keeps_python_semantics() -> None:
    expression = (x * 10 + 1) / 2 - y**2 // 3
    assert at(expression) == (X * 10 + 1) / 2 - Y**2 // 3
    assert at(abs(-x - 100)) == abs(-X - 100)
    assert at(2**y) == 2**Y


def test_arithmetic_on_a_choice_uses_the_chosen_option() -> None:
    c = hp.choice("c", [1, 10, x])
    assert ao.space_eval(c * 3, {"c": 1}) == 30
    assert ao.space_eval(c * 3, {"c": 2, "x": 2.0}) == 6.0


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (lambda: scope.int(x), int(X)),
        (lambda: scope.float(y), float(Y)),
        (lambda: scope.exp(x), math.exp(X)),
        (lambda: scope.log(x), math.log(X)),
        (lambda: scope.sqrt(x), math.sqrt(X)),
        (lambda: scope.min(x, y, 0), min(X, Y, 0)),
        (lambda: scope.max(x, y), max(X, Y)),
        (lambda: scope.abs(y), abs(Y)),
        (lambda: scope.int(scope.exp(x) * 100), int(math.exp(X) * 100)),
        (lambda: scope.sin(x), math.sin(X)),
        (lambda: scope.cos(y), math.cos(Y)),
        (lambda: scope.switch(scope.int(x), "zero", "one", "two"), "two"),
        (lambda: as_node((x, y))[1], Y),
        (lambda: as_node({"k": [y, x]})["k"], [Y, X]),
    ],
    ids=[
        "int",
        "float",
        "exp",
        "log",
        "sqrt",
        "min",
        "max",
        "abs",
        "nested",
        "sin",
        "cos",
        "switch",
        "index",
        "index_plain",
    ],
)
def test_scope_functions(build: Callable[[], Any], expected: Any) -> None:
    expression = build()
    assert isinstance(expression, Apply)
    result = at(expression)
    assert result == expected
    assert type(result) is type(expected)


def test_an_expression_is_indexed_not_iterated() -> None:
    pair = hp.choice("pair", [(1, 2), (3, 4)])
    assert ao.space_eval(pair[0] + pair[1], {"pair": 1}) == 7
    with pytest.raises(TypeError, match="index it"):
        _first, _second = pair  # type: ignore[misc]
    with pytest.raises(TypeError, match="index it"):
        list(x)


def test_scope_int_of_quniform_gives_an_int() -> None:
    depth = scope.int(hp.quniform("depth", 1, 10, 1))
    assert all(type(ao.sample(depth, seed)) is int for seed in range(20))


def test_scope_functions_accept_containers_and_constants() -> None:
    assert at(scope.max([x, 7, y])) == 7
    assert at(scope.min((x, 1.0))) == 1.0


def test_scope_names_are_discoverable_and_unknown_ones_are_attribute_errors() -> None:
    assert {"int", "float", "exp", "log", "sqrt", "min", "max", "abs"} <= set(dir(scope))
    with pytest.raises(AttributeError, match=r"scope\.define"):
        _ = scope.no_such_function_here
    with pytest.raises(AttributeError):
        _ = scope._REGISTRY


def _clip01(value: float) -> float:
    return min(max(value, 0.0), 1.0)


def _clip01_again(value: float) -> float:
    return value


def test_scope_define_registers_a_pure_function() -> None:
    clip = scope.define(_clip01)
    expression = clip(x - 2)
    assert expression == Apply("_clip01", (x - 2,))
    assert at(expression) == 0.5
    assert at(expression, x=9.0) == 1.0
    # Registering the same function again is harmless (module reloads, notebooks).
    assert scope.define(_clip01)(x) == Apply("_clip01", (x,))
    assert at(scope.define(_clip01)(x), x=-1.0) == 0.0


def test_scope_define_as_decorator_and_with_a_name() -> None:
    @scope.define
    def twice_plus(value: float, extra: float) -> float:
        return 2 * value + extra

    assert at(twice_plus(x, y)) == 2 * X + Y

    half = scope.define(name="test_expressions.half")(lambda value: value / 2)
    assert at(half(x)) == X / 2
    assert half(x) == Apply("test_expressions.half", (x,))


def test_scope_define_refuses_a_different_function_under_a_taken_name() -> None:
    scope.define(name="test_expressions.taken")(_clip01)
    with pytest.raises(SpaceError, match="already registered"):
        scope.define(name="test_expressions.taken")(_clip01_again)
    with pytest.raises(SpaceError, match="already registered"):
        scope.define(name="exp")(_clip01)


def test_scope_define_refuses_an_anonymous_lambda() -> None:
    # Two lambdas share the name "<lambda>"; accepting both would silently swap them.
    with pytest.raises(SpaceError, match="needs a name"):
        scope.define(lambda value: value)


def test_an_unregistered_function_fails_at_evaluation_with_space_error() -> None:
    expression = Apply("test_expressions.never_registered", (x,))
    compile_space(expression)  # compiling never needs the function: workers may lack it
    with pytest.raises(SpaceError, match="not registered"):
        at(expression)


# -- structural equality and hashing ---------------------------------------------------------


def _space(order: int = 0) -> dict[str, Any]:
    items: list[tuple[str, Any]] = [
        ("lr", hp.loguniform("lr", -9, -1)),
        ("layers", [scope.int(hp.quniform("n", 1, 4, 1)), (1, "a", None)]),
        ("model", hp.choice("model", [{"C": hp.lognormal("C", 0, 1)}, 3 * -x])),
    ]
    if order:
        items.reverse()
    return dict(items)


def test_equal_spaces_built_separately_are_equal_and_hash_alike() -> None:
    a, b = as_node(_space()), as_node(_space())
    assert a is not b
    assert a == b
    assert hash(a) == hash(b)
    assert {a: "v"}[b] == "v"
    assert len({a, b, as_node(_space(order=1))}) == 1


def test_dict_key_order_does_not_matter() -> None:
    assert as_node(_space(0)) == as_node(_space(1))
    assert compile_space(_space(0)) == compile_space(_space(1))
    # ... and sampling does not depend on it either.
    assert ao.sample(_space(0), 5) == ao.sample(_space(1), 5)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ([1, 2], (1, 2)),
        ([1], [True]),
        ([1], [1.0]),
        ([0], [False]),
        ({"a": 1}, {"a": True}),
        ({1: "a"}, {True: "a"}),
        ({"a": 1}, {"a": 1, "b": 2}),
        ([None], [0]),
        (["1"], [1]),
        ([b"a"], ["a"]),
        (hp.choice("c", [1, 2]), hp.choice("c", [True, 2])),
        (hp.choice("c", [1, 2]), hp.choice("c", [2, 1])),
        (hp.choice("c", [1, 2]), hp.pchoice("c", [(0.5, 1), (0.5, 2)])),
        (hp.uniform("x", 0, 1), hp.uniform("x", 0, 2)),
        (hp.uniform("x", 0, 1), hp.quniform("x", 0, 1, 1)),
        (x + 1, x + True),
        (x + 1, 1 + x),
        (x - 1, x + 1),
        (scope.int(x), scope.float(x)),
    ],
)
def test_structurally_different_spaces_are_unequal(a: Any, b: Any) -> None:
    assert as_node(a) != as_node(b)
    assert as_node(b) != as_node(a)


def test_equal_numbers_in_distribution_arguments_are_equal() -> None:
    assert hp.uniform("x", 0, 1) == hp.uniform("x", 0.0, 1.0)
    assert hash(hp.uniform("x", 0, 1)) == hash(hp.uniform("x", 0.0, 1.0))
    assert hp.randint("r", 3) == hp.randint("r", 0, 3)


def test_nan_constants_equal_themselves_across_copies() -> None:
    a = as_node([float("nan"), {"k": float("nan")}])
    b = as_node([float("nan"), {"k": float("nan")}])
    assert a == b
    assert hash(a) == hash(b)


def test_unhashable_constants_are_kept_by_identity() -> None:
    table = np.arange(3)
    node = as_node({"table": table})
    assert node == as_node({"table": table})
    assert node != as_node({"table": np.arange(3)})
    assert ao.space_eval(node, {}) == {"table": table}
    assert ao.space_eval(node, {})["table"] is table


def test_hashable_foreign_constants_compare_by_value() -> None:
    assert as_node([frozenset({1})]) == as_node([frozenset({1})])
    assert as_node([frozenset({1})]) != as_node([frozenset({2})])
    assert isinstance(as_node(frozenset({1})), Literal)


def test_numpy_scalar_constants_become_python_scalars() -> None:
    node = as_node([np.int64(3), np.float32(0.5), np.bool_(True)])
    assert node == as_node([3, 0.5, True])
    values = ao.space_eval(node, {})
    assert [type(v) for v in values] == [int, float, bool]
    assert rebuild(compile_space(node).describe()) == node


def test_as_node_builds_the_matching_node_types() -> None:
    node = as_node({"d": {"k": 1}, "l": [1], "t": (1,), "s": "text", "n": None, "x": x})
    assert isinstance(node, DictNode)
    values = dict(node.items)
    assert isinstance(values["d"], DictNode)
    assert isinstance(values["l"], ListNode)
    assert isinstance(values["t"], TupleNode)
    assert values["s"] == "text"
    assert values["n"] is None
    assert values["x"] is x
    assert as_node(node) is node
    assert ao.space_eval(node, {"x": 1.0}) == {
        "d": {"k": 1},
        "l": [1],
        "t": (1,),
        "s": "text",
        "n": None,
        "x": 1.0,
    }


def test_space_eval_returns_fresh_containers() -> None:
    space = {"l": [1, 2], "d": {"a": x}}
    first = ao.space_eval(space, {"x": 1.0})
    first["l"].append(3)
    first["d"]["a"] = "changed"
    assert ao.space_eval(space, {"x": 1.0}) == {"l": [1, 2], "d": {"a": 1.0}}


# -- immutability ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("node", "field"),
    [
        (hp.uniform("x", 0, 1), "label"),
        (hp.uniform("x", 0, 1), "dist"),
        (hp.uniform("x", 0, 1).dist, "args"),
        (hp.choice("c", [1, 2]), "options"),
        (x + 1, "args"),
        (as_node({"a": 1}), "items"),
        (as_node([1]), "items"),
        (as_node((1,)), "items"),
        (as_node(object()), "value"),
        (compile_space({"x": x}), "params"),
        (compile_space({"x": x}), "fingerprint"),
        (compile_space({"x": x}).params[0], "condition"),
        (compile_space({"x": x}).params[0].condition, "clauses"),
    ],
)
def test_nodes_are_frozen(node: Any, field: str) -> None:
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        setattr(node, field, None)


@pytest.mark.parametrize("node", [hp.uniform("x", 0, 1), x + 1, as_node([1]), as_node({"a": 1})])
def test_nodes_have_no_instance_dict(node: Any) -> None:
    with pytest.raises((AttributeError, TypeError)):
        node.new_attribute = 1


def test_user_containers_are_copied_into_the_space() -> None:
    options: list[Any] = [1, 2]
    inner = {"a": 1}
    c = hp.choice("c", [options, inner])
    options.append(3)
    inner["a"] = 99
    assert ao.space_eval(c, {"c": 0}) == [1, 2]
    assert ao.space_eval(c, {"c": 1}) == {"a": 1}


def test_evolve_makes_a_new_node_and_leaves_the_old_one() -> None:
    original = hp.uniform("x", 0, 1)
    renamed = attrs.evolve(original, label="z")
    assert original.label == "x"
    assert renamed == hp.uniform("z", 0, 1)
    with pytest.raises(SpaceError, match="'bad'"):
        attrs.evolve(original, label="bad", dist=Distribution("uniform", (1, 0)))


def test_param_and_choice_constructors_validate() -> None:
    with pytest.raises(SpaceError, match="'p'"):
        Param("p", Distribution("normal", (0, -1)))
    with pytest.raises(SpaceError, match="2 options but 3 probabilities"):
        Choice("c", (1, 2), Distribution("pchoice", (0.2, 0.3, 0.5)))


def test_spaces_survive_pickle_and_deepcopy() -> None:
    space = {"a": hp.choice("c", [x * 2, (1, [None])]), "n": float("nan"), "f": frozenset({1})}
    table = compile_space(space)
    for value in (table, table.root, x + 1):
        for copied in (pickle.loads(pickle.dumps(value)), copy.deepcopy(value)):
            assert copied == value
            assert hash(copied) == hash(value)
    assert pickle.loads(pickle.dumps(table))["x"] == table["x"]
