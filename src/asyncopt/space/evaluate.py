"""Turning assignments into concrete spaces, and drawing assignments from the prior."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from asyncopt.errors import SpaceError
from asyncopt.space.compile import CompiledSpace, compile_space
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
from asyncopt.space.scope import lookup

__all__ = ["Assignment", "sample", "sample_assignments", "space_eval"]

#: Label → raw value (choice → option index) of the active parameters of one trial.
Assignment = dict[str, int | float]


def space_eval(space: Any, assignment: Mapping[str, Any]) -> Any:
    """The concrete structure of ``space`` for ``assignment`` (label → raw value).

    Choices take the option at the assigned index; only the chosen branches are
    evaluated. Raises `SpaceError` when an active label has no value or an index is
    out of range.

    Args:
        space: a space (any nesting of dicts, lists, constants and `hp` expressions) or a
            `CompiledSpace`.
        assignment: label → raw value of the active parameters (a choice's option index).
    """
    if isinstance(space, CompiledSpace):
        return space.evaluate(assignment)
    return build_evaluator(as_node(space))(assignment)


Evaluator = Callable[[Mapping[str, Any]], Any]


def build_evaluator(node: Any) -> Evaluator:
    """A function of an assignment that evaluates the space tree under ``node``.

    The tree is walked once here; each call then runs only the closures of the nodes it
    reaches (a trial's objective receives this for every trial).
    """
    if isinstance(node, Param):
        return _param_evaluator(node)
    if isinstance(node, Choice):
        return _choice_evaluator(node)
    if isinstance(node, DictNode):
        pairs = tuple((build_evaluator(k), build_evaluator(v)) for k, v in node.items)
        return lambda assignment: {key(assignment): value(assignment) for key, value in pairs}
    if isinstance(node, ListNode):
        items = tuple(build_evaluator(item) for item in node.items)
        return lambda assignment: [item(assignment) for item in items]
    if isinstance(node, TupleNode):
        items = tuple(build_evaluator(item) for item in node.items)
        return lambda assignment: tuple(item(assignment) for item in items)
    if isinstance(node, Apply):
        name = node.name
        args = tuple(build_evaluator(arg) for arg in node.args)
        # Looked up per call, like a registry should be: scope functions may be registered late.
        return lambda assignment: lookup(name)(*(arg(assignment) for arg in args))
    constant = node.value if isinstance(node, Literal) else node
    return lambda assignment: constant


def _param_evaluator(node: Param) -> Evaluator:
    label = node.label
    convert: Callable[[Any], int | float] = int if node.dist.is_integer else float

    def evaluate(assignment: Mapping[str, Any]) -> Any:
        return convert(_value(label, assignment))

    return evaluate


def _choice_evaluator(node: Choice) -> Evaluator:
    label = node.label
    options = tuple(build_evaluator(option) for option in node.options)
    last = len(options) - 1

    def evaluate(assignment: Mapping[str, Any]) -> Any:
        raw = _value(label, assignment)
        index = int(raw)
        if index != raw or not 0 <= index <= last:
            raise SpaceError(
                f"label {label!r}: option index {raw!r} is not in 0..{last}",
                label,
            )
        return options[index](assignment)

    return evaluate


def _value(label: str, assignment: Mapping[str, Any]) -> Any:
    try:
        return assignment[label]
    except KeyError:
        raise SpaceError(f"the assignment has no value for active label {label!r}", label) from None


def sample_assignments(
    space: Any, rng: np.random.Generator, n: int = 1, *, fast: bool = True
) -> list[Assignment]:
    """``n`` independent draws from the prior, as assignments (ancestral sampling).

    ``space`` is a `CompiledSpace` (or any space, compiled first). Parents are drawn
    before their children, so the draws depend only on ``rng`` and ``n``. For ``n == 1``
    a scalar path is used unless ``fast=False`` (same distribution, other draws).
    """
    space = compile_space(space)
    if n == 1 and fast:
        # One proposal: Python scalars and only the active labels, no array overhead.
        return [space.draw_prior(rng)]
    columns: dict[str, np.ndarray] = {}
    for spec in space.params:
        values = spec.dist.sample(rng, n)
        if not spec.condition.is_always:
            values[~spec.condition.mask(columns, n)] = np.nan
        columns[spec.label] = values
    return columns_to_assignments(space, columns, n)


def columns_to_assignments(
    space: CompiledSpace, columns: Mapping[str, np.ndarray], n: int | None = None
) -> list[Assignment]:
    """Split label → array columns (NaN where inactive) into ``n`` assignments.

    Every label of ``space`` needs a column; ``n`` defaults to the columns' length.
    Integer distributions give `int` values, the others `float`.
    """
    if n is None:
        n = len(next(iter(columns.values()))) if columns else 0
    if n == 1:
        single: Assignment = {}
        for spec in space.params:
            value = float(columns[spec.label][0])
            if value == value:  # not NaN: the label is active
                single[spec.label] = int(value) if spec.dist.is_integer else value
        return [single]
    result: list[Assignment] = [{} for _ in range(n)]
    for spec in space.params:
        column = columns[spec.label]
        convert = int if spec.dist.is_integer else float
        for i in np.flatnonzero(~np.isnan(column)).tolist():
            result[i][spec.label] = convert(column[i])
    return result


def sample(space: Any, seed: int | np.random.Generator | None = None) -> Any:
    """One random draw of ``space`` from its prior, as the concrete structure.

    Args:
        space: a space or a `CompiledSpace`.
        seed: an int seed, a numpy ``Generator`` (drawn from), or None for a random draw.
    """
    compiled = compile_space(space)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    return space_eval(compiled, sample_assignments(compiled, rng, 1, fast=False)[0])
