"""The immutable expression tree a search space is made of.

A space written by the user (dicts, lists, tuples, constants, `hp` expressions) is turned
into a tree of frozen nodes by `as_node`. Nodes compare by structure and are hashable, so
two spaces written the same way are equal. Arithmetic on any node builds an `Apply` node
that names a registered `scope` function.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
import numpy as np

from asyncopt.errors import SpaceError
from asyncopt.space.distributions import Distribution

__all__ = [
    "MAX_DEPTH",
    "Apply",
    "Choice",
    "DictNode",
    "Expr",
    "ListNode",
    "Literal",
    "Param",
    "TupleNode",
    "as_node",
    "check_depth",
]

_SCALARS = (str, int, float, bool, bytes, type(None))

#: How many levels containers, choices and expressions may nest inside each other. Every
#: walk over a space (compiling, evaluating, describing, hashing, pickling) recurses once
#: or a few times per level; this bound keeps all of them well inside Python's recursion
#: limit, so a deeper space is a `SpaceError` when it is built, never a RecursionError.
MAX_DEPTH = 100


def _scalar_key(value: Any) -> Any:
    # Python says 1 == 1.0 == True, but a space holding True is not the space holding 1:
    # they evaluate differently, so structural equality must see the type of constants.
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int):
        return ("int", value)
    if isinstance(value, float):
        # NaN is one constant, so a space holding it equals its own rebuilt copy.
        return ("float", "nan") if value != value else ("float", value)
    if isinstance(value, (str, bytes)) or value is None:
        return (type(value).__name__, value)
    return value


def _items_key(items: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(_scalar_key(item) for item in items)


class Expr:
    """Base of every space node; gives expressions their arithmetic operators."""

    __slots__ = ()

    def __add__(self, other: Any) -> Apply:
        return Apply("add", (self, as_node(other)))

    def __radd__(self, other: Any) -> Apply:
        return Apply("add", (as_node(other), self))

    def __sub__(self, other: Any) -> Apply:
        return Apply("sub", (self, as_node(other)))

    def __rsub__(self, other: Any) -> Apply:
        return Apply("sub", (as_node(other), self))

    def __mul__(self, other: Any) -> Apply:
        return Apply("mul", (self, as_node(other)))

    def __rmul__(self, other: Any) -> Apply:
        return Apply("mul", (as_node(other), self))

    def __truediv__(self, other: Any) -> Apply:
        return Apply("truediv", (self, as_node(other)))

    def __rtruediv__(self, other: Any) -> Apply:
        return Apply("truediv", (as_node(other), self))

    def __floordiv__(self, other: Any) -> Apply:
        return Apply("floordiv", (self, as_node(other)))

    def __rfloordiv__(self, other: Any) -> Apply:
        return Apply("floordiv", (as_node(other), self))

    def __mod__(self, other: Any) -> Apply:
        return Apply("mod", (self, as_node(other)))

    def __rmod__(self, other: Any) -> Apply:
        return Apply("mod", (as_node(other), self))

    def __pow__(self, other: Any) -> Apply:
        return Apply("pow", (self, as_node(other)))

    def __rpow__(self, other: Any) -> Apply:
        return Apply("pow", (as_node(other), self))

    def __neg__(self) -> Apply:
        return Apply("neg", (self,))

    def __pos__(self) -> Apply:
        return Apply("pos", (self,))

    def __abs__(self) -> Apply:
        return Apply("abs", (self,))

    def __getitem__(self, key: Any) -> Apply:
        return Apply("getitem", (self, as_node(key)))

    def __iter__(self) -> Any:
        # Defined so that Python does not iterate an expression through __getitem__ with
        # 0, 1, 2, ... forever (list(expr), unpacking, ``in``).
        raise TypeError(
            "a space expression cannot be iterated or unpacked; index it (expr[0]) instead"
        )


def _depth_of(value: Any) -> int:
    """Levels of nesting under and including ``value`` (0 for a plain constant)."""
    if isinstance(value, (Choice, Apply, DictNode, ListNode, TupleNode)):
        return value.depth
    return 1 if isinstance(value, Expr) else 0


def check_depth(depth: int, label: str | None = None) -> None:
    """`SpaceError` when ``depth`` levels of nesting exceed `MAX_DEPTH`."""
    if depth > MAX_DEPTH:
        where = f"label {label!r}: " if label is not None else ""
        raise SpaceError(
            f"{where}the space is nested more than {MAX_DEPTH} levels deep (containers, "
            "choices and expressions inside each other, or a container that holds itself); "
            "flatten it",
            label,
        )


def _depth_field(children: Callable[[Any], Iterable[Any]]) -> Any:
    """The ``depth`` of a node whose children are ``children(node)``, checked when built."""

    def deepest(node: Any) -> int:
        return 1 + max(map(_depth_of, children(node)), default=0)

    def check(node: Any, attribute: Any, depth: int) -> None:
        check_depth(depth, getattr(node, "label", None))

    return attrs.field(
        init=False,
        eq=False,
        repr=False,
        default=attrs.Factory(deepest, takes_self=True),
        validator=check,
    )


@attrs.frozen
class Literal(Expr):
    """A constant that is not a plain scalar (an object, a class, an array...)."""

    value: Any = attrs.field(eq=False)
    _key: Any = attrs.field(init=False, repr=False)

    @_key.default
    def _identity_or_value(self) -> Any:
        try:
            hash(self.value)
        except TypeError:
            return ("id", id(self.value))
        return ("value", type(self.value), self.value)


@attrs.frozen
class Param(Expr):
    """A labelled hyperparameter drawn from a `Distribution`."""

    label: str
    dist: Distribution

    def __attrs_post_init__(self) -> None:
        _check_label(self.label)
        self.dist.validate(self.label)


@attrs.frozen
class Choice(Expr):
    """A labelled choice between sub-spaces; its raw value is the option index."""

    label: str
    options: tuple[Any, ...] = attrs.field(eq=_items_key)
    dist: Distribution
    depth: int = _depth_field(lambda node: node.options)

    def __attrs_post_init__(self) -> None:
        _check_label(self.label)
        if not self.options:
            raise SpaceError(f"label {self.label!r}: choice needs at least one option", self.label)
        self.dist.validate(self.label)
        if self.dist.size != len(self.options):
            raise SpaceError(
                f"label {self.label!r}: {len(self.options)} options but "
                f"{self.dist.size} probabilities",
                self.label,
            )


@attrs.frozen
class Apply(Expr):
    """A registered `scope` function applied to argument nodes."""

    name: str
    args: tuple[Any, ...] = attrs.field(eq=_items_key)
    depth: int = _depth_field(lambda node: node.args)


@attrs.frozen(eq=False)
class DictNode(Expr):
    """A dict in the space; equal to another when the mappings are equal (any key order)."""

    items: tuple[tuple[Any, Any], ...]
    depth: int = _depth_field(lambda node: (part for pair in node.items for part in pair))

    def _mapping(self) -> dict[Any, Any]:
        return {_scalar_key(k): _scalar_key(v) for k, v in self.items}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DictNode):
            return NotImplemented
        return len(self.items) == len(other.items) and self._mapping() == other._mapping()

    def __hash__(self) -> int:
        return hash(frozenset(self._mapping().items()))


@attrs.frozen
class ListNode(Expr):
    """A list in the space."""

    items: tuple[Any, ...] = attrs.field(eq=_items_key)
    depth: int = _depth_field(lambda node: node.items)


@attrs.frozen
class TupleNode(Expr):
    """A tuple in the space."""

    items: tuple[Any, ...] = attrs.field(eq=_items_key)
    depth: int = _depth_field(lambda node: node.items)


def _check_label(label: object) -> None:
    if not isinstance(label, str) or not label:
        raise SpaceError(
            f"labels must be non-empty strings, got {label!r}",
            label if isinstance(label, str) else None,
        )


def as_node(value: Any) -> Any:
    """Turn a user's space (any nesting of containers, constants, expressions) into nodes.

    Scalars (str, int, float, bool, None) stay as they are, numpy scalars become the
    equivalent Python scalar (so the space can be described as JSON); other constants are
    wrapped in `Literal`. A structure nested more than `MAX_DEPTH` levels deep (or holding
    itself) raises `SpaceError`.
    """
    return _as_node(value, 1)


def _as_node(value: Any, level: int) -> Any:
    if isinstance(value, (np.bool_, np.integer, np.floating)):
        return value.item()
    if isinstance(value, (Expr, *_SCALARS)):
        return value
    if isinstance(value, (Mapping, list, tuple)):
        # Checked on the way down: the nodes' own check runs only once the children exist,
        # which for a deep (or self-holding) structure would be after a RecursionError.
        check_depth(level)
        below = level + 1
        if isinstance(value, Mapping):
            return DictNode(
                tuple((_as_node(k, below), _as_node(v, below)) for k, v in value.items())
            )
        if isinstance(value, list):
            return ListNode(tuple(_as_node(v, below) for v in value))
        return TupleNode(tuple(_as_node(v, below) for v in value))
    # Imported here: compile imports this module. A compiled space nested in a bigger one
    # is its tree, not an opaque constant whose parameters would go unseen.
    from asyncopt.space.compile import CompiledSpace

    if isinstance(value, CompiledSpace):
        return value.root
    if type(value).__module__.startswith("hyperopt."):
        label = _hyperopt_label(value)
        raise SpaceError(
            f"{'label ' + repr(label) + ': ' if label else ''}this is a Hyperopt expression; "
            "build the space with asyncopt's hp and scope (same names and arguments)",
            label,
        )
    return Literal(value)


def _hyperopt_label(node: Any, depth: int = 0) -> str | None:
    # Only to name the label in the error above: a Hyperopt hyperparameter is an Apply
    # node "hyperopt_param" whose first argument is a literal holding the label.
    if depth > 20:
        return None
    if getattr(node, "name", None) == "hyperopt_param":
        label = getattr(node.pos_args[0], "obj", None)
        return label if isinstance(label, str) else None
    for arg in getattr(node, "pos_args", ()):
        found = _hyperopt_label(arg, depth + 1)
        if found is not None:
            return found
    return None
