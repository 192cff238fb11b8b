"""Pure functions usable inside a space, registered by name.

Spaces refer to functions by registered name, so a stored space description can be
rebuilt in another process that has registered the same names.
"""

from __future__ import annotations

import builtins
import math
import operator
from collections.abc import Callable
from typing import Any, TypeVar, overload

from asyncopt.errors import SpaceError
from asyncopt.space.expressions import Apply, as_node

__all__ = ["Scope", "lookup", "scope"]

F = TypeVar("F", bound=Callable[..., Any])


def switch(index: int, *options: Any) -> Any:
    """The option at ``index`` (Hyperopt's ``scope.switch``; every option is evaluated)."""
    return options[index]


_REGISTRY: dict[str, Callable[..., Any]] = {
    "add": operator.add,
    "sub": operator.sub,
    "mul": operator.mul,
    "truediv": operator.truediv,
    "floordiv": operator.floordiv,
    "mod": operator.mod,
    "pow": operator.pow,
    "neg": operator.neg,
    "pos": operator.pos,
    "abs": builtins.abs,
    "int": builtins.int,
    "float": builtins.float,
    "exp": math.exp,
    "log": math.log,
    "sqrt": math.sqrt,
    "min": builtins.min,
    "max": builtins.max,
    "sin": math.sin,
    "cos": math.cos,
    "getitem": operator.getitem,
    "switch": switch,
}


def lookup(name: str) -> Callable[..., Any]:
    """The function registered as ``name``; `SpaceError` if there is none."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise SpaceError(
            f"scope function {name!r} is not registered in this process; import the module "
            "that calls scope.define() for it before using the space",
            None,
        ) from None


class Scope:
    """Namespace of space functions: ``scope.int(expr)``, ``scope.define(fn)``, ..."""

    def __getattr__(self, name: str) -> Callable[..., Apply]:
        if name.startswith("_") or name not in _REGISTRY:
            raise AttributeError(f"scope has no function {name!r}; register it with scope.define")
        return _builder(name)

    @overload
    def define(self, fn: F, /) -> Callable[..., Apply]: ...

    @overload
    def define(self, fn: None = None, /, *, name: str) -> Callable[[F], Callable[..., Apply]]: ...

    def define(self, fn: F | None = None, /, *, name: str | None = None) -> Any:
        """Register a pure function for use in spaces; returns its space builder.

        ``@scope.define`` registers under the function's ``__name__``;
        ``scope.define(name="x")(fn)`` under another name. Registering a different
        function under a taken name raises `SpaceError`.
        """

        def register(function: F) -> Callable[..., Apply]:
            key = name or getattr(function, "__name__", "")
            if not isinstance(key, str) or not key or key == "<lambda>":
                # Every lambda is called "<lambda>": registering two would silently make
                # spaces built with the first one call the second.
                raise SpaceError(
                    f"scope.define needs a name for {function!r}: use scope.define(name=...)(fn)",
                    None,
                )
            existing = _REGISTRY.get(key)
            if existing is not None and existing is not function:
                same_origin = getattr(existing, "__qualname__", None) == getattr(
                    function, "__qualname__", None
                ) and getattr(existing, "__module__", None) == getattr(function, "__module__", None)
                if not same_origin:
                    raise SpaceError(f"scope function {key!r} is already registered", None)
            _REGISTRY[key] = function
            return _builder(key)

        if fn is None:
            return register
        return register(fn)

    def __dir__(self) -> list[str]:
        return sorted(_REGISTRY)


def _builder(name: str) -> Callable[..., Apply]:
    def build(*args: Any) -> Apply:
        return Apply(name, tuple(as_node(a) for a in args))

    build.__name__ = name
    build.__doc__ = f"Space expression applying the registered function {name!r}."
    return build


scope = Scope()
