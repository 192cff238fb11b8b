"""Prior distributions of the labelled parameters, with their validation and sampling."""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import numpy as np

from asyncopt.errors import SpaceError

__all__ = ["CATEGORICAL", "DISTRIBUTION_NAMES", "Distribution"]

#: Distributions whose stored raw value is a category (an option index, or ``low + index``).
CATEGORICAL = frozenset({"choice", "pchoice", "randint"})
_BOUNDED = frozenset({"uniform", "quniform", "loguniform", "qloguniform", "uniformint"})
_NORMAL = frozenset({"normal", "qnormal", "lognormal", "qlognormal"})
_LOG = frozenset({"loguniform", "qloguniform", "lognormal", "qlognormal"})
_QUANTIZED = frozenset({"quniform", "qloguniform", "qnormal", "qlognormal"})
_ARITY = {
    "uniform": 2,
    "quniform": 3,
    "loguniform": 2,
    "qloguniform": 3,
    "normal": 2,
    "qnormal": 3,
    "lognormal": 2,
    "qlognormal": 3,
    "uniformint": 2,
    "randint": 2,
    "choice": 1,
}
DISTRIBUTION_NAMES = frozenset({*_ARITY, "pchoice"})
# exp() of anything above this overflows a float64.
_MAX_LOG_BOUND = 709.0
_MAX_EXACT_INT = 2**53
_MAX_FLOAT = float(np.finfo(np.float64).max)
_MAX_EXP = math.log(_MAX_FLOAT)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )


@attrs.frozen
class Distribution:
    """A prior distribution named after its `hp` constructor.

    ``args`` are the constructor's numeric arguments in Hyperopt's order, normalized:
    ``randint`` always holds ``(low, upper)``, ``choice`` holds ``(n_options,)`` and
    ``pchoice`` holds the option probabilities. Log-space bounds stay in log space, as
    Hyperopt defines them. Use `validate` (done by every `hp` constructor) before sampling.
    """

    name: str
    args: tuple[float, ...]

    # -- derived properties, read by the suggest functions ------------------------------

    @property
    def is_categorical(self) -> bool:
        """True for `choice`, `pchoice` and `randint`: unordered categories."""
        return self.name in CATEGORICAL

    @property
    def is_integer(self) -> bool:
        """True when the value given to the objective is an `int`."""
        return self.name in ("uniformint", "randint", "choice", "pchoice")

    @property
    def is_bounded(self) -> bool:
        """True for the uniform family (and `uniformint`): support ``[low, high]``."""
        return self.name in _BOUNDED

    @property
    def is_normal(self) -> bool:
        """True for the (log-)normal family: parameters ``mu`` and ``sigma``."""
        return self.name in _NORMAL

    @property
    def log(self) -> bool:
        """True when the distribution is defined on the log of the value."""
        return self.name in _LOG

    @property
    def q(self) -> float | None:
        """The quantization step, or None (``uniformint`` reports 1)."""
        if self.name in _QUANTIZED:
            return float(self.args[2])
        if self.name == "uniformint":
            return 1.0
        return None

    @property
    def low(self) -> float:
        """Lower bound of the bounded families (log space for the log ones)."""
        if not (self.is_bounded or self.name == "randint"):
            raise AttributeError(f"{self.name} has no low bound")
        return float(self.args[0])

    @property
    def high(self) -> float:
        """Upper bound of the bounded families (``randint``: exclusive upper)."""
        if not (self.is_bounded or self.name == "randint"):
            raise AttributeError(f"{self.name} has no high bound")
        return float(self.args[1])

    @property
    def mu(self) -> float:
        """Mean of the normal families (of the log for the log-normal ones)."""
        if not self.is_normal:
            raise AttributeError(f"{self.name} has no mu")
        return float(self.args[0])

    @property
    def sigma(self) -> float:
        """Standard deviation of the normal families."""
        if not self.is_normal:
            raise AttributeError(f"{self.name} has no sigma")
        return float(self.args[1])

    @property
    def size(self) -> int:
        """Number of categories of a categorical distribution."""
        if self.name == "choice":
            return int(self.args[0])
        if self.name == "pchoice":
            return len(self.args)
        if self.name == "randint":
            return int(self.args[1] - self.args[0])
        raise AttributeError(f"{self.name} is not categorical")

    @property
    def offset(self) -> int:
        """Raw value of category 0 (``low`` for `randint`, 0 for the choices)."""
        return int(self.args[0]) if self.name == "randint" else 0

    @property
    def probabilities(self) -> np.ndarray:
        """Prior probability of each category, as a float array."""
        if self.name == "pchoice":
            p = np.asarray(self.args, dtype=float)
            normalized: np.ndarray = p / p.sum()
            return normalized
        return np.full(self.size, 1.0 / self.size)

    # -- validation ------------------------------------------------------------------------

    def validate(self, label: str) -> None:
        """Raise `SpaceError` naming ``label`` unless the parameters are valid."""
        name = self.name
        if name not in DISTRIBUTION_NAMES:
            raise SpaceError(f"label {label!r}: unknown distribution {name!r}", label)
        for value in self.args:
            if not _is_number(value):
                raise SpaceError(
                    f"label {label!r}: {name} parameters must be plain numbers, "
                    f"not {type(value).__name__} ({value!r})",
                    label,
                )
            if not math.isfinite(value):
                raise SpaceError(
                    f"label {label!r}: {name} parameter {value!r} is not finite", label
                )
        if name == "pchoice":
            self._validate_probabilities(label)
            return
        if len(self.args) != _ARITY[name]:
            raise SpaceError(
                f"label {label!r}: {name} takes {_ARITY[name]} parameters, got {len(self.args)}",
                label,
            )
        if name == "choice":
            if self.args[0] < 1:
                raise SpaceError(f"label {label!r}: choice needs at least one option", label)
            return
        if name in ("randint", "uniformint"):
            for value in self.args:
                if not (isinstance(value, (int, np.integer)) or float(value).is_integer()):
                    raise SpaceError(
                        f"label {label!r}: {name} bounds must be integers, got {value!r}", label
                    )
                # Raw values travel as float64 columns, exact for integers up to 2**53 only.
                if abs(value) > _MAX_EXACT_INT:
                    raise SpaceError(
                        f"label {label!r}: {name} bounds must lie within +-2**53, got {value!r}",
                        label,
                    )
        if self.is_bounded or name == "randint":
            low, high = self.args[0], self.args[1]
            if not low < high:
                raise SpaceError(
                    f"label {label!r}: {name} needs low < high, got low={low!r}, high={high!r}",
                    label,
                )
            if self.log and max(abs(low), abs(high)) > _MAX_LOG_BOUND:
                bound = high if abs(high) > _MAX_LOG_BOUND else low
                problem = "overflows" if bound > 0 else "underflows to 0"
                hint = (
                    f" Did you mean {name}({label!r}, log({low!r}), log({high!r}))?"
                    if low > 0
                    else ""
                )
                raise SpaceError(
                    f"label {label!r}: {name} bounds are in log space (the value is "
                    f"exp(uniform(low, high))); exp({bound!r}) {problem}.{hint}",
                    label,
                )
        if self.is_normal:
            if not self.args[1] > 0:
                raise SpaceError(
                    f"label {label!r}: {name} needs sigma > 0, got {self.args[1]!r}", label
                )
            if self.log and abs(self.args[0]) > _MAX_LOG_BOUND:
                problem = "overflows" if self.args[0] > 0 else "underflows to 0"
                raise SpaceError(
                    f"label {label!r}: {name} mu is in log space; exp({self.args[0]!r}) {problem}",
                    label,
                )
        if self.name in _QUANTIZED and not self.args[2] > 0:
            raise SpaceError(f"label {label!r}: {name} needs q > 0, got {self.args[2]!r}", label)

    def _validate_probabilities(self, label: str) -> None:
        if not self.args:
            raise SpaceError(f"label {label!r}: pchoice needs at least one option", label)
        if any(p < 0 for p in self.args):
            raise SpaceError(f"label {label!r}: pchoice probabilities must be >= 0", label)
        total = math.fsum(self.args)
        if abs(total - 1.0) > 1e-6:
            raise SpaceError(
                f"label {label!r}: pchoice probabilities must sum to 1, they sum to {total!r}",
                label,
            )

    # -- sampling and support ---------------------------------------------------------------

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Draw ``n`` raw values from the prior, as a float64 array."""
        name = self.name
        if name == "choice":
            return rng.integers(0, self.size, n).astype(float)
        if name == "pchoice":
            return rng.choice(self.size, size=n, p=self.probabilities).astype(float)
        if name == "randint":
            return rng.integers(int(self.args[0]), int(self.args[1]), n).astype(float)
        if name == "uniformint":
            return rng.integers(int(self.args[0]), int(self.args[1]) + 1, n).astype(float)
        if self.is_bounded:
            low, high = float(self.args[0]), float(self.args[1])
            if math.isfinite(high - low):
                draws = rng.uniform(low, high, n)
            else:
                # rng.uniform refuses a range wider than the float range; a convex
                # combination of the bounds cannot overflow.
                u = rng.random(n)
                draws = low * (1.0 - u) + high * u
        else:
            draws = rng.normal(self.args[0], self.args[1], n)
        return self.from_internal(draws)

    def scalar_sampler(self) -> Callable[[np.random.Generator], int | float]:
        """A function drawing one raw value (int for integer distributions) per call.

        The distribution's parameters are read once, here, so that callers drawing many
        single proposals (random search, startup trials) can keep the function.
        """
        name = self.name
        if name in ("choice", "randint"):
            return _IntegerDraw(self.offset, self.size)
        if name == "uniformint":
            first = int(self.args[0])
            return _IntegerDraw(first, int(self.args[1]) - first + 1)
        if name == "pchoice":
            return _WeightedDraw(tuple(np.cumsum(self.probabilities).tolist()))
        return _RealDraw(
            self.is_bounded, self.log, self.q, float(self.args[0]), float(self.args[1])
        )

    def from_internal(self, x: np.ndarray) -> np.ndarray:
        """Map draws of the underlying uniform/normal to raw values (exp, then quantize)."""
        x = np.asarray(x, dtype=float)
        # Draws beyond the float range (huge sigma, huge bounds) saturate instead of
        # overflowing to inf, so every raw value stays finite.
        values = (
            np.exp(np.minimum(x, _MAX_EXP))
            if self.log
            else np.minimum(np.maximum(x, -_MAX_FLOAT), _MAX_FLOAT)
        )
        q = self.q
        if q is not None and self.name != "uniformint":
            with np.errstate(over="ignore", invalid="ignore"):
                quantized = np.round(values / q) * q
            # Beyond 2**53 steps every float is on the grid already.
            values = np.where(np.isfinite(quantized), quantized, values)
        return np.asarray(values, dtype=float)

    def contains(self, value: float) -> bool:
        """True when ``value`` is a possible raw value (bounds, grid, integrality)."""
        if not _is_number(value) or not math.isfinite(value):
            return False
        if self.is_integer:
            if float(value) != int(value):
                return False
            if self.is_categorical:
                return self.offset <= value < self.offset + self.size
            return self.args[0] <= value <= self.args[1]
        q = self.q
        if q is not None:
            # On the grid means equal to the nearest grid point up to float rounding; a
            # tolerance on value / q itself would accept anything once value / q is large.
            nearest = _on_grid(value, q)
            if not math.isclose(value, nearest, rel_tol=1e-9, abs_tol=1e-12 * q):
                return False
        if self.is_bounded:
            low, high = self.args[0], self.args[1]
            if self.log:
                low, high = math.exp(low), math.exp(high)
            if q is not None:
                low, high = _on_grid(low, q), _on_grid(high, q)
            slack = 1e-9 * max(1.0, abs(low), abs(high))
            return low - slack <= value <= high + slack
        if self.log:
            return value >= 0.0
        return True

    def to_python(self, value: Any) -> int | float:
        """The raw value as the Python type handed to the objective."""
        return int(value) if self.is_integer else float(value)

    def describe(self) -> dict[str, Any]:
        """A JSON-serializable description."""
        return {"name": self.name, "args": [_plain(a) for a in self.args]}


def _on_grid(value: float, q: float) -> float:
    """``value`` rounded to a multiple of ``q`` (unchanged when the steps overflow)."""
    steps = value / q
    if not math.isfinite(steps):
        return value
    nearest = float(round(steps)) * q
    return nearest if math.isfinite(nearest) else value


def _plain(value: float) -> int | float:
    if isinstance(value, (int, np.integer)):
        return int(value)
    return float(value)


def normalized_args(values: Sequence[Any]) -> tuple[Any, ...]:
    """Arguments as plain Python numbers where they are numbers (others kept for errors)."""
    out: list[Any] = []
    for v in values:
        if isinstance(v, np.integer):
            out.append(int(v))
        elif isinstance(v, np.floating):
            out.append(float(v))
        else:
            out.append(v)
    return tuple(out)


@attrs.frozen
class _IntegerDraw:
    """Uniform integer in ``[first, first + count)``."""

    first: int
    count: int

    def __call__(self, rng: np.random.Generator) -> int:
        return self.first + min(int(rng.random() * self.count), self.count - 1)


@attrs.frozen
class _WeightedDraw:
    """Category index drawn by its cumulative probabilities."""

    cumulative: tuple[float, ...]

    def __call__(self, rng: np.random.Generator) -> int:
        index = bisect.bisect_right(self.cumulative, rng.random() * self.cumulative[-1])
        return min(index, len(self.cumulative) - 1)


@attrs.frozen
class _RealDraw:
    """uniform(a, b) or normal(a, b), then exp for the log ones, then the q-grid."""

    bounded: bool
    log: bool
    q: float | None
    a: float
    b: float

    def __call__(self, rng: np.random.Generator) -> float:
        if self.bounded:
            u = rng.random()
            x = self.a * (1.0 - u) + self.b * u
        else:
            x = self.a + self.b * rng.standard_normal()
        value = math.exp(min(x, _MAX_EXP)) if self.log else min(max(x, -_MAX_FLOAT), _MAX_FLOAT)
        q = self.q
        if q is not None:
            steps = value / q
            if math.isfinite(steps):
                # A float of 2**52 or more is already integral (and round() is slow).
                whole = steps if abs(steps) >= 2.0**52 else float(round(steps))
                quantized = whole * q
                if math.isfinite(quantized):
                    value = quantized
        return value
