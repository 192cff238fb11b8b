"""Hypothesis strategies for search spaces.

`spaces()` draws random nested spaces: dicts, lists and tuples of constants, all twelve
`hp` constructors, choices and pchoices inside choices, arithmetic and `scope` functions,
and parameters or choices reused in several places (so a label can have several paths).
Every space it draws is valid, evaluates without arithmetic errors for every assignment
in its support, and holds only JSON-describable constants.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st

from asyncopt import hp, scope
from asyncopt.space.expressions import Choice, Param

Draw = Callable[[st.SearchStrategy[Any]], Any]

FINITE = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, allow_infinity=False)
WIDTH = st.floats(min_value=1e-3, max_value=1e3, allow_nan=False, allow_infinity=False)
LOG_LOW = st.floats(min_value=-12, max_value=6, allow_nan=False)
LOG_WIDTH = st.floats(min_value=1e-2, max_value=8, allow_nan=False)
Q = st.sampled_from([0.01, 0.1, 0.25, 0.5, 1, 1.0, 2, 5, 10, 0.3])
SIGMA = st.floats(min_value=1e-3, max_value=100, allow_nan=False)
LOG_MU = st.floats(min_value=-4, max_value=3, allow_nan=False)
LOG_SIGMA = st.floats(min_value=1e-3, max_value=1.5, allow_nan=False)
SMALL_INT = st.integers(min_value=-1000, max_value=1000)

TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=6)
NUMERIC_CONSTANT = st.one_of(
    st.integers(min_value=-100, max_value=100),
    st.floats(min_value=-100, max_value=100, allow_nan=False, allow_infinity=False),
)
CONSTANT = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),  # NaN and the infinities too: the description must carry them
    TEXT,
)
KEY = st.one_of(TEXT, st.integers(min_value=-5, max_value=5))
# Containers and choices more often than leaves, so spaces grow several levels deep.
ANY_FORMS = ["constant", "numeric", "numeric", "dict", "dict", "list", "tuple", "choice", "choice"]

NUMERIC_KINDS = (
    "uniform",
    "quniform",
    "loguniform",
    "qloguniform",
    "normal",
    "qnormal",
    "lognormal",
    "qlognormal",
    "uniformint",
    "randint",
)


class _Builder:
    """Draws one space; hands out unique labels and remembers nodes for reuse."""

    def __init__(self, draw: Draw) -> None:
        self.draw = draw
        self.count = 0
        self.numeric_pool: list[Any] = []
        self.any_pool: list[Any] = []

    def label(self) -> str:
        self.count += 1
        return f"{self.draw(TEXT)}#{self.count}"

    def reuse(self, pool: list[Any]) -> Any | None:
        if pool and self.draw(st.sampled_from([True, False, False, False, False])):
            return self.draw(st.sampled_from(pool))
        return None

    def param(self) -> Param:
        draw = self.draw
        kind = draw(st.sampled_from(NUMERIC_KINDS))
        label = self.label()
        if kind in ("uniform", "quniform"):
            low = draw(FINITE)
            high = low + draw(WIDTH)
            if kind == "uniform":
                return hp.uniform(label, low, high)
            return hp.quniform(label, low, high, draw(Q))
        if kind in ("loguniform", "qloguniform"):
            low = draw(LOG_LOW)
            high = low + draw(LOG_WIDTH)
            if kind == "loguniform":
                return hp.loguniform(label, low, high)
            return hp.qloguniform(label, low, high, draw(Q))
        if kind in ("normal", "qnormal"):
            mu, sigma = draw(FINITE), draw(SIGMA)
            if kind == "normal":
                return hp.normal(label, mu, sigma)
            return hp.qnormal(label, mu, sigma, draw(Q))
        if kind in ("lognormal", "qlognormal"):
            mu, sigma = draw(LOG_MU), draw(LOG_SIGMA)
            if kind == "lognormal":
                return hp.lognormal(label, mu, sigma)
            return hp.qlognormal(label, mu, sigma, draw(Q))
        low = draw(SMALL_INT)
        high = low + draw(st.integers(1, 50))
        if kind == "uniformint":
            return hp.uniformint(label, low, high)
        if draw(st.booleans()):
            return hp.randint(label, low, high)
        return hp.randint(label, high - low)

    def choice(self, option: Callable[[], Any]) -> Choice:
        draw = self.draw
        label = self.label()
        options = [option() for _ in range(draw(st.sampled_from([1, 2, 2, 3, 3, 4])))]
        if draw(st.booleans()):
            return hp.choice(label, options if draw(st.booleans()) else tuple(options))
        weights = draw(st.lists(st.integers(0, 5), min_size=len(options), max_size=len(options)))
        if sum(weights) == 0:
            weights[0] = 1
        total = sum(weights)
        return hp.pchoice(label, [(w / total, o) for w, o in zip(weights, options, strict=True)])

    def numeric(self, depth: int) -> Any:
        """An expression whose value is an int or a float of moderate size."""
        draw = self.draw
        reused = self.reuse(self.numeric_pool)
        if reused is not None:
            return reused
        if depth <= 0 or draw(st.sampled_from([True, False, False])):
            if draw(st.sampled_from([True, False, False, False])):
                return draw(NUMERIC_CONSTANT)
            node: Any = self.param()
            self.numeric_pool.append(node)
            return node
        sub = depth - 1
        form = draw(st.sampled_from(range(14)))
        a = self.numeric(sub)
        if form == 0:
            return a + self.numeric(sub)
        if form == 1:
            return a - self.numeric(sub)
        if form == 2:
            return scope.min(abs(a), 1e3) * self.numeric(sub)
        if form == 3:
            return a / (abs(self.numeric(sub)) + 1)
        if form == 4:
            return a // (abs(self.numeric(sub)) + 1)
        if form == 5:
            return a % (abs(self.numeric(sub)) + 0.5)
        if form == 6:
            return scope.min(abs(a), 30) ** draw(st.sampled_from([0.5, 2, 3]))
        if form == 7:
            return draw(st.sampled_from([lambda v: -v, lambda v: +v, abs]))(a)
        if form == 8:
            return scope.int(scope.max(scope.min(a, 1e6), -1e6))
        if form == 9:
            return scope.exp(scope.min(a, 5)) + scope.float(1)
        if form == 10:
            return scope.log(abs(a) + 1) + scope.sqrt(abs(a))
        if form == 11:
            return draw(st.sampled_from([scope.min, scope.max]))(a, self.numeric(sub))
        if form == 12:
            return 3 * a
        choice = self.choice(lambda: self.numeric(sub))
        self.numeric_pool.append(choice)
        return choice

    def any(self, depth: int) -> Any:
        """Any space: constants, numeric expressions, containers, choices of these."""
        draw = self.draw
        reused = self.reuse(self.any_pool)
        if reused is not None:
            return reused
        if depth <= 0:
            form = draw(st.sampled_from(["numeric", "numeric", "constant"]))
        else:
            form = draw(st.sampled_from(ANY_FORMS))
        sub = depth - 1
        if form == "constant":
            return draw(CONSTANT)
        if form == "numeric":
            return self.numeric(draw(st.integers(0, max(depth, 0))))
        if form == "dict":
            keys = draw(st.lists(KEY, min_size=1, max_size=4, unique_by=lambda k: (type(k), k)))
            return {key: self.any(sub) for key in keys}
        if form == "list":
            return [self.any(sub) for _ in range(draw(st.sampled_from([0, 1, 2, 2, 3])))]
        if form == "tuple":
            return tuple(self.any(sub) for _ in range(draw(st.sampled_from([0, 1, 2, 3]))))
        choice = self.choice(lambda: self.any(sub))
        self.any_pool.append(choice)
        return choice


@st.composite
def spaces(draw: Draw, max_depth: int = 4) -> Any:
    """A random valid space (as the user writes it: plain containers and expressions)."""
    builder = _Builder(draw)
    depth = draw(st.integers(1, max_depth))
    if draw(st.sampled_from([True, True, False])):
        # The usual shape: a dict of named sub-spaces.
        keys = draw(st.lists(TEXT, min_size=2, max_size=5, unique=True))
        space = {key: builder.any(depth - 1) for key in keys}
        space[keys[0]] = builder.choice(lambda: builder.any(depth - 1))
        space[keys[1]] = builder.numeric(depth)
        return space
    return builder.any(depth)


@st.composite
def conditional_spaces(draw: Draw) -> Any:
    """A space with at least one choice at its top, so conditions are always exercised."""
    builder = _Builder(draw)
    return {"root": builder.choice(lambda: builder.any(3)), "other": builder.any(2)}


def is_finite_number(value: object) -> bool:
    """True for an int or a finite float (not bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
