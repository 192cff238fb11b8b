"""The immutable expression tree a search space is made of.

A space written by the user (dicts, lists, tuples, constants, `hp` expressions) is turned
into a tree of frozen nodes by `as_node`. Nodes compare by structure and are hashable, so
two spaces written the same way are equal. Arithmetic on any node builds an `Apply` node
that names a registered `scope` function.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from asyncopt.errors import SpaceError
from asyncopt.space.distributions import Distribution

__all__ = [
    "Apply",
    "Choice",
    "DictNode",
    "Expr",
    "ListNode",
    "Literal",
    "Param",
    "TupleNode",
    "as_node",
]

_SCALARS = (str, int, float, bool, bytes, type(None))


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
    options: tuple[Any, ...]
    dist: Distribution

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
    args: tuple[Any, ...]


@attrs.frozen(eq=False)
class DictNode(Expr):
    """A dict in the space; equal to another when the mappings are equal (any key order)."""

    items: tuple[tuple[Any, Any], ...]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DictNode):
            return NotImplemented
        return len(self.items) == len(other.items) and dict(self.items) == dict(other.items)

    def __hash__(self) -> int:
        return hash(frozenset(self.items))


@attrs.frozen
class ListNode(Expr):
    """A list in the space."""

    items: tuple[Any, ...]


@attrs.frozen
class TupleNode(Expr):
    """A tuple in the space."""

    items: tuple[Any, ...]


def _check_label(label: object) -> None:
    if not isinstance(label, str) or not label:
        raise SpaceError(f"labels must be non-empty strings, got {label!r}", None)


def as_node(value: Any) -> Any:
    """Turn a user's space (any nesting of containers, constants, expressions) into nodes.

    Scalars (str, int, float, bool, None) stay as they are; other constants are wrapped
    in `Literal`.
    """
    if isinstance(value, Expr) or isinstance(value, _SCALARS):
        return value
    if isinstance(value, Mapping):
        return DictNode(tuple((as_node(k), as_node(v)) for k, v in value.items()))
    if isinstance(value, list):
        return ListNode(tuple(as_node(v) for v in value))
    if isinstance(value, tuple):
        return TupleNode(tuple(as_node(v) for v in value))
    return Literal(value)
