"""Compilation of a space into the flat table the suggest functions read.

Each labelled parameter gets one row: its distribution and its activation condition (the
choice branches above it). Rows are ordered parents first, so sampling them in order
decides every choice before the parameters it controls.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import attrs
import numpy as np

from asyncopt.errors import SpaceError
from asyncopt.space.distributions import Distribution
from asyncopt.space.expressions import (
    Apply,
    Choice,
    DictNode,
    ListNode,
    Param,
    TupleNode,
    as_node,
)

__all__ = ["CompiledSpace", "Condition", "ParamSpec", "compile_space"]

Clause = frozenset[tuple[str, int]]


@attrs.frozen
class Condition:
    """When a parameter is active: any clause holds, a clause being choices that all match.

    A clause is a set of ``(choice_label, option_index)``; the empty clause always holds.
    """

    clauses: frozenset[Clause]

    @classmethod
    def always(cls) -> Condition:
        """The condition of a parameter outside every choice."""
        return cls(frozenset({frozenset()}))

    @property
    def is_always(self) -> bool:
        """True when the parameter is active in every trial."""
        return frozenset() in self.clauses

    @property
    def parents(self) -> frozenset[str]:
        """Labels of the choices this condition reads."""
        return frozenset(label for clause in self.clauses for label, _ in clause)

    def holds(self, assignment: Mapping[str, Any]) -> bool:
        """True when ``assignment`` activates the parameter."""
        return any(
            all(assignment.get(label) == index for label, index in clause)
            for clause in self.clauses
        )

    def mask(self, columns: Mapping[str, np.ndarray], n: int) -> np.ndarray:
        """Vectorized `holds` over ``n`` rows of raw-value columns (NaN when inactive)."""
        if self.is_always:
            return np.ones(n, dtype=bool)
        result = np.zeros(n, dtype=bool)
        for clause in self.clauses:
            term = np.ones(n, dtype=bool)
            for label, index in clause:
                term &= columns[label] == index
            result |= term
        return result

    def describe(self) -> list[list[list[Any]]]:
        """Canonical JSON form: sorted clauses of sorted ``[label, index]`` pairs."""
        return sorted(sorted([label, index] for label, index in clause) for clause in self.clauses)


@attrs.frozen
class ParamSpec:
    """One row of the compiled table."""

    label: str
    dist: Distribution
    condition: Condition


@attrs.frozen
class CompiledSpace:
    """A validated space: the expression tree plus its flat table of parameters.

    ``params`` is ordered parents first. ``fingerprint`` is a stable hash of labels,
    distributions, parameters and conditions (not of constants or expressions).
    """

    root: Any
    params: tuple[ParamSpec, ...]
    fingerprint: str = attrs.field(init=False)
    _index: dict[str, int] = attrs.field(init=False, eq=False, repr=False)
    _prior_draws: tuple[tuple[str, Condition | None, Any], ...] = attrs.field(
        init=False, eq=False, repr=False
    )
    # Built on first use and never pickled: it is made of closures.
    _evaluator: Any = attrs.field(init=False, default=None, eq=False, repr=False)

    @fingerprint.default
    def _compute_fingerprint(self) -> str:
        # Arguments as floats: hp.uniform("x", 0, 1) and hp.uniform("x", 0.0, 1.0) are equal
        # spaces, so they must not tell a resumed study that its space changed.
        table = sorted(
            [
                spec.label,
                spec.dist.name,
                [float(a) for a in spec.dist.args],
                spec.condition.describe(),
            ]
            for spec in self.params
        )
        text = json.dumps(table, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    @_index.default
    def _build_index(self) -> dict[str, int]:
        return {spec.label: i for i, spec in enumerate(self.params)}

    @_prior_draws.default
    def _build_prior_draws(self) -> tuple[tuple[str, Condition | None, Any], ...]:
        return tuple(
            (
                spec.label,
                None if spec.condition.is_always else spec.condition,
                spec.dist.scalar_sampler(),
            )
            for spec in self.params
        )

    def evaluate(self, assignment: Mapping[str, Any]) -> Any:
        """The concrete structure for ``assignment``; see `asyncopt.space_eval`."""
        evaluator = self._evaluator
        if evaluator is None:
            from asyncopt.space.evaluate import build_evaluator  # evaluate imports this module

            evaluator = build_evaluator(self.root)
            object.__setattr__(self, "_evaluator", evaluator)
        return evaluator(assignment)

    def __getstate__(self) -> dict[str, Any]:
        state = {field.name: getattr(self, field.name) for field in attrs.fields(CompiledSpace)}
        state["_evaluator"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            object.__setattr__(self, name, value)

    def draw_prior(self, rng: np.random.Generator) -> dict[str, int | float]:
        """One assignment drawn from the prior with Python scalars (parents first)."""
        assignment: dict[str, int | float] = {}
        for label, condition, draw in self._prior_draws:
            if condition is None or condition.holds(assignment):
                assignment[label] = draw(rng)
        return assignment

    @property
    def labels(self) -> tuple[str, ...]:
        """Labels in table order (parents first)."""
        return tuple(spec.label for spec in self.params)

    def __getitem__(self, label: str) -> ParamSpec:
        try:
            return self.params[self._index[label]]
        except KeyError:
            raise SpaceError(f"the space has no label {label!r}", label) from None

    def __contains__(self, label: object) -> bool:
        return label in self._index

    def __iter__(self) -> Iterator[ParamSpec]:
        return iter(self.params)

    def __len__(self) -> int:
        return len(self.params)

    def describe(self) -> dict[str, Any]:
        """The JSON description from which `asyncopt.space.description.rebuild` makes it again."""
        from asyncopt.space.description import describe

        return describe(self.root)

    def check_assignment(self, assignment: Mapping[str, Any]) -> None:
        """Raise `SpaceError` unless ``assignment`` holds exactly the active labels, in support."""
        for label in assignment:
            if label not in self._index:
                raise SpaceError(f"assignment has unknown label {label!r}", label)
        for spec in self.params:
            active = spec.condition.holds(assignment)
            if active and spec.label not in assignment:
                raise SpaceError(f"assignment misses active label {spec.label!r}", spec.label)
            if not active and spec.label in assignment:
                raise SpaceError(f"assignment holds inactive label {spec.label!r}", spec.label)
            if active and not spec.dist.contains(assignment[spec.label]):
                hint = ""
                if spec.dist.name in ("choice", "pchoice"):
                    # The usual slip: giving the option itself where the index is expected.
                    hint = f" (a {spec.dist.name} takes the option index, 0..{spec.dist.size - 1})"
                raise SpaceError(
                    f"label {spec.label!r}: {assignment[spec.label]!r} is outside "
                    f"its {spec.dist.name} distribution{hint}",
                    spec.label,
                )


def compile_space(space: Any) -> CompiledSpace:
    """Validate ``space`` and build its flat table; `SpaceError` names any bad label.

    Args:
        space: a space (returned as it is when already a `CompiledSpace`).
    """
    if isinstance(space, CompiledSpace):
        return space
    root = as_node(space)
    found: dict[str, tuple[Param | Choice, set[Clause]]] = {}
    order: list[str] = []
    _walk(root, frozenset(), found, order)
    specs = {
        label: ParamSpec(label, found[label][0].dist, _simplify(found[label][1])) for label in order
    }
    return CompiledSpace(root, _parents_first(specs, order))


def _parents_first(specs: dict[str, ParamSpec], order: list[str]) -> tuple[ParamSpec, ...]:
    # A parameter reused under several choices may be met before some of them.
    placed: dict[str, ParamSpec] = {}

    def place(label: str) -> None:
        if label in placed:
            return
        for parent in sorted(specs[label].condition.parents):
            place(parent)
        placed[label] = specs[label]

    for label in order:
        place(label)
    return tuple(placed.values())


def _simplify(clauses: Iterable[Clause]) -> Condition:
    unique = set(clauses)
    # A clause that contains a smaller clause is implied by it.
    kept = frozenset(c for c in unique if not any(other < c for other in unique))
    return Condition(kept)


def _walk(
    node: Any,
    clause: Clause,
    found: dict[str, tuple[Param | Choice, set[Clause]]],
    order: list[str],
) -> None:
    if isinstance(node, (Param, Choice)):
        seen = found.get(node.label)
        if seen is None:
            found[node.label] = (node, {clause})
            order.append(node.label)
        elif seen[0] is not node:
            # As in Hyperopt: one hyperparameter is one object, reused wherever it appears.
            # Two built separately are a mistake even when equal (a copied line whose label
            # was not changed would silently couple two parameters).
            if seen[0] != node:
                raise SpaceError(
                    f"label {node.label!r} is used for two different hyperparameters",
                    node.label,
                )
            raise SpaceError(
                f"label {node.label!r} is used by two hyperparameters built separately (equal "
                "ones too): give each its own label, or build it once and reuse the object",
                node.label,
            )
        else:
            if clause in seen[1]:
                return
            seen[1].add(clause)
        if isinstance(node, Choice):
            for index, option in enumerate(node.options):
                _walk(option, clause | {(node.label, index)}, found, order)
        return
    if isinstance(node, Apply):
        for arg in node.args:
            _walk(arg, clause, found, order)
    elif isinstance(node, DictNode):
        for key, value in sorted(node.items, key=lambda kv: repr(kv[0])):
            _walk(key, clause, found, order)
            _walk(value, clause, found, order)
    elif isinstance(node, (ListNode, TupleNode)):
        for item in node.items:
            _walk(item, clause, found, order)
