"""A JSON description of a whole space, and its inverse.

Studies store this description so that workers and command-line tools can rebuild the
space without the user's code. Functions are stored by their `scope` name; constants
that JSON cannot hold are stored opaquely and make `rebuild` fail with a clear error.

Node forms: JSON scalars stand for themselves; ``{"dict": [[key, value], ...]}``,
``{"list": [...]}``, ``{"tuple": [...]}``, ``{"param": label, "dist": name, "args": [...]}``,
``{"choice": label, "dist": "choice"|"pchoice", "args": [...], "options": [...]}``,
``{"apply": name, "args": [...]}``, ``{"opaque": repr}``.
"""

from __future__ import annotations

import math
import reprlib
from typing import Any

from asyncopt.errors import SpaceError
from asyncopt.space.distributions import Distribution
from asyncopt.space.expressions import (
    Apply,
    Choice,
    DictNode,
    ListNode,
    Literal,
    Param,
    TupleNode,
    check_depth,
)

__all__ = ["FORMAT", "describe", "rebuild"]

FORMAT = 1


def describe(root: Any) -> dict[str, Any]:
    """The JSON-serializable description of a space's node tree."""
    return {"format": FORMAT, "root": _describe(root)}


def _describe(node: Any) -> Any:
    if isinstance(node, Param):
        return {"param": node.label, **node.dist.describe()}
    if isinstance(node, Choice):
        return {
            "choice": node.label,
            **node.dist.describe(),
            "options": [_describe(o) for o in node.options],
        }
    if isinstance(node, Apply):
        return {"apply": node.name, "args": [_describe(a) for a in node.args]}
    if isinstance(node, DictNode):
        return {"dict": [[_describe(k), _describe(v)] for k, v in node.items]}
    if isinstance(node, ListNode):
        return {"list": [_describe(i) for i in node.items]}
    if isinstance(node, TupleNode):
        return {"tuple": [_describe(i) for i in node.items]}
    if isinstance(node, Literal):
        # Only a reminder of what the constant was: a large array must not bloat the study.
        return {"opaque": reprlib.repr(node.value)}
    if isinstance(node, float) and not math.isfinite(node):
        return {"float": repr(node)}
    if isinstance(node, bytes):
        return {"opaque": repr(node)}
    return node


def rebuild(description: dict[str, Any]) -> Any:
    """The node tree described by ``description`` (equal to the one described).

    Raises `SpaceError` for an unknown format, a malformed node, or an opaque constant.
    """
    if not isinstance(description, dict) or description.get("format") != FORMAT:
        raise SpaceError(f"not a space description of format {FORMAT}: {description!r:.200}")
    return _Rebuilder().rebuild(description["root"])


class _Rebuilder:
    """Rebuilds one description, keeping a hyperparameter reused in the space one object.

    The description repeats a reused hyperparameter at each place it appears; compiling
    refuses two objects with one label, so equal repeats must become the same object.
    """

    def __init__(self) -> None:
        self.labelled: dict[str, Param | Choice] = {}
        self.level = 0

    def rebuild(self, node: Any) -> Any:
        # Checked on the way down, as `as_node` does: a (corrupt) description nested
        # deeper than any space is a SpaceError, not a RecursionError. The constants at
        # the bottom of a space are one level below its deepest node.
        self.level += 1
        try:
            check_depth(self.level - 1)
            return self._node(node)
        except SpaceError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise SpaceError(f"malformed space description node: {node!r:.200}") from exc
        finally:
            self.level -= 1

    def _reused(self, built: Param | Choice) -> Param | Choice:
        known = self.labelled.setdefault(built.label, built)
        return known if known == built else built

    def _node(self, node: Any) -> Any:
        if not isinstance(node, dict):
            return node
        rebuild = self.rebuild
        if "param" in node:
            return self._reused(
                Param(node["param"], Distribution(node["name"], tuple(node["args"])))
            )
        if "choice" in node:
            return self._reused(
                Choice(
                    node["choice"],
                    tuple(rebuild(o) for o in node["options"]),
                    Distribution(node["name"], tuple(node["args"])),
                )
            )
        if "apply" in node:
            return Apply(node["apply"], tuple(rebuild(a) for a in node["args"]))
        if "dict" in node:
            return DictNode(tuple((rebuild(k), rebuild(v)) for k, v in node["dict"]))
        if "list" in node:
            return ListNode(tuple(rebuild(i) for i in node["list"]))
        if "tuple" in node:
            return TupleNode(tuple(rebuild(i) for i in node["tuple"]))
        if "float" in node:
            return float(node["float"])
        if "opaque" in node:
            raise SpaceError(
                f"the stored space holds a constant that cannot be rebuilt ({node['opaque']}); "
                "load the space from your code instead "
                "(e.g. `asyncopt worker ... --space module:space`)"
            )
        raise SpaceError(f"malformed space description node: {node!r:.200}")
