"""Annealing: proposals drawn near one of the best trials, in neighbourhoods that shrink.

This is Hyperopt's annealing algorithm. For each proposal a reference trial is picked
among the OK trials sorted by loss, at a geometric rank (rank 1 is the best; the mean
rank is ``avg_best_idx``). Every parameter of the proposal is then drawn from a
neighbourhood of the reference trial's value, one proposal sharing one reference:

- uniform families (``uniform``, ``quniform``, ``loguniform``, ``qloguniform``,
  ``uniformint``): a uniform window centred on the reference value, in log space for the
  log ones, shifted to fit inside the bounds, then quantized as the prior is;
- normal families: a normal centred on the reference value (on its log for the log ones)
  with the prior's sigma scaled down, then quantized as the prior is;
- categories (``choice``, ``pchoice``, ``randint``): the reference category with
  probability ``1 - s``, otherwise a draw from the prior.

The scale ``s = 1 / (1 + T * shrink_coef)`` is the window width (or sigma) relative to
the prior's; ``T`` counts the evaluated (OK or FAIL) trials in which the parameter was
active, so the search narrows around good trials as evidence accumulates.

Parameters are drawn parents first, so a proposal holds exactly its active labels. A
parameter that the reference trial does not use (another branch was chosen there) is
drawn from the prior, and so is everything while there is no OK trial. Pending,
failed and cancelled trials are never references.
"""

from __future__ import annotations

import math
import numbers

import attrs
import numpy as np

from asyncopt.history import History
from asyncopt.space.compile import CompiledSpace
from asyncopt.space.distributions import Distribution
from asyncopt.space.evaluate import Assignment, columns_to_assignments, sample_assignments

__all__ = ["Anneal", "configure", "suggest"]

_TINY = float(np.finfo(np.float64).tiny)


def _check_avg_best_idx(instance: object, attribute: object, value: float) -> None:
    if not (math.isfinite(value) and value >= 1.0):
        raise ValueError(
            f"anneal: avg_best_idx must be a finite number >= 1 (the mean rank of the "
            f"reference trial, 1 being the best), got {value!r}"
        )


def _check_shrink_coef(instance: object, attribute: object, value: float) -> None:
    if not (math.isfinite(value) and value > 0.0):
        raise ValueError(f"anneal: shrink_coef must be a finite number > 0, got {value!r}")


def _to_float(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"anneal: options must be real numbers, got {value!r}")
    return float(value)


@attrs.frozen
class Anneal:
    """A configured annealing suggest function; call it like `suggest`.

    ``avg_best_idx`` (default 2.0, >= 1): mean 1-based rank of the reference trial among
    the OK trials sorted by loss. ``shrink_coef`` (default 0.1, > 0): how fast the
    neighbourhoods shrink with the number of observations of a parameter.
    """

    avg_best_idx: float = attrs.field(
        default=2.0, converter=_to_float, validator=_check_avg_best_idx
    )
    shrink_coef: float = attrs.field(default=0.1, converter=_to_float, validator=_check_shrink_coef)

    def __call__(
        self, space: CompiledSpace, history: History, rng: np.random.Generator, n: int = 1
    ) -> list[Assignment]:
        """``n`` proposals, each around its own reference trial; see the module docstring."""
        if n < 0:
            raise ValueError(f"anneal: n must be >= 0, got {n!r}")
        losses = np.asarray(history.losses)
        ok_rows = np.flatnonzero(history.ok & ~np.isnan(losses))
        if n == 0 or ok_rows.size == 0:
            return sample_assignments(space, rng, n)
        ranks = _geometric_ranks(rng, n, 1.0 / self.avg_best_idx, ok_rows.size)
        references = _rows_at_ranks(losses[ok_rows], ok_rows, ranks)
        evaluated = np.asarray(history.ok | history.failed)

        columns: dict[str, np.ndarray] = {}
        for spec in space.params:
            dist = spec.dist
            history_values = np.asarray(history.values[spec.label])
            reference = history_values[references]
            near = _usable_reference(dist, reference)
            if spec.condition.is_always:
                fresh = ~near
            else:
                active = spec.condition.mask(columns, n)
                near &= active
                fresh = active & ~near
            n_near = int(np.count_nonzero(near))
            n_fresh = int(np.count_nonzero(fresh))
            scale = 1.0
            if n_near:
                observations = np.count_nonzero(evaluated & ~np.isnan(history_values))
                scale = 1.0 / (1.0 + float(observations) * self.shrink_coef)
            if n_near == n:
                values = _neighbourhood(dist, reference, scale, rng)
            elif n_fresh == n:
                values = dist.sample(rng, n)
            else:
                values = np.full(n, np.nan)
                if n_near:
                    values[near] = _neighbourhood(dist, reference[near], scale, rng)
                if n_fresh:
                    values[fresh] = dist.sample(rng, n_fresh)
            columns[spec.label] = values
        return columns_to_assignments(space, columns, n)


def _geometric_ranks(rng: np.random.Generator, n: int, p: float, count: int) -> np.ndarray:
    """``n`` 0-based ranks, geometric with success probability ``p``, capped at ``count - 1``."""
    u = rng.random(n)
    if p >= 1.0 or count == 1:
        return np.zeros(n, dtype=np.intp)
    # Inversion: P(rank >= k) = (1 - p) ** k. 1 - u lies in (0, 1], so the log is finite.
    with np.errstate(over="ignore"):
        # A huge avg_best_idx overflows to inf, which the cap below turns into the last rank.
        ranks = np.floor(np.log1p(-u) / math.log1p(-p))
    return np.minimum(ranks, count - 1).astype(np.intp)


def _rows_at_ranks(
    losses: np.ndarray, rows: np.ndarray, ranks: np.ndarray, *, partial: bool | None = None
) -> np.ndarray:
    """The rows at 0-based ``ranks`` of ``losses`` sorted ascending, ties in row order.

    A few distinct ranks in a long history are found by partitioning, O(N) each, instead
    of sorting; both ways give the same rows. ``partial`` forces one way (for tests).
    """
    distinct = np.unique(ranks)
    if partial is None:
        partial = losses.size > 1000 and distinct.size <= 8
    if not partial:
        ordered: np.ndarray = rows[np.argsort(losses, kind="stable")[ranks]]
        return ordered
    kth = np.partition(losses, distinct)[distinct]
    found = np.empty(ranks.size, dtype=np.intp)
    for rank, value in zip(distinct.tolist(), kth.tolist(), strict=True):
        below = int(np.count_nonzero(losses < value))
        found[ranks == rank] = rows[losses == value][rank - below]
    return found


def _usable_reference(dist: Distribution, reference: np.ndarray) -> np.ndarray:
    """Rows whose reference value can centre a neighbourhood (NaN means inactive there)."""
    usable: np.ndarray = np.isfinite(reference)
    if dist.is_categorical:
        index = np.where(usable, reference, 0.0) - dist.offset
        usable &= (index == np.round(index)) & (index >= 0) & (index < dist.size)
    return usable


def _neighbourhood(
    dist: Distribution, centre: np.ndarray, scale: float, rng: np.random.Generator
) -> np.ndarray:
    """One draw per row from the neighbourhood of ``centre`` (raw values, all finite)."""
    n = centre.size
    if dist.is_categorical:
        keep = rng.random(n) >= scale
        return np.where(keep, centre, dist.sample(rng, n))
    if dist.is_bounded:
        return _window(dist, centre, scale, rng)
    return _normal(dist, centre, scale, rng)


def _log_centre(dist: Distribution, centre: np.ndarray) -> np.ndarray:
    # A quantized log value of 0 stands for anything below q/2; an unquantized one can
    # only be 0 by underflow.
    q = dist.q
    floor = max(0.5 * q, _TINY) if q is not None else _TINY
    logs: np.ndarray = np.log(np.maximum(centre, floor))
    return logs


def _window(
    dist: Distribution, centre: np.ndarray, scale: float, rng: np.random.Generator
) -> np.ndarray:
    """A uniform window ``scale`` times the width of the bounds, shifted inside them."""
    low, high = dist.low, dist.high
    if dist.name == "uniformint":
        # Each integer owns a unit cell, as it does under the prior.
        low, high = low - 0.5, high + 0.5
    x = _log_centre(dist, centre) if dist.log else centre
    # Halving each bound before subtracting keeps huge ranges from overflowing.
    half = (0.5 * scale) * high - (0.5 * scale) * low
    mid = np.minimum(np.maximum(x, low + half), high - half)
    u = rng.random(centre.size)
    drawn = np.minimum(np.maximum(mid + (2.0 * u - 1.0) * half, low), high)
    if dist.name == "uniformint":
        integers: np.ndarray = np.minimum(np.maximum(np.round(drawn), dist.low), dist.high)
        return integers
    return dist.from_internal(drawn)


def _normal(
    dist: Distribution, centre: np.ndarray, scale: float, rng: np.random.Generator
) -> np.ndarray:
    """A normal around ``centre`` (its log for the log families) with sigma scaled down."""
    mu = _log_centre(dist, centre) if dist.log else centre
    z = rng.standard_normal(centre.size)
    with np.errstate(over="ignore"):
        # An overflow gives +-inf, which from_internal saturates to the float range.
        drawn = mu + (dist.sigma * scale) * z
    return dist.from_internal(drawn)


_DEFAULT = Anneal()


def suggest(
    space: CompiledSpace, history: History, rng: np.random.Generator, n: int = 1
) -> list[Assignment]:
    """``n`` annealing proposals with the default options (``avg_best_idx=2``, ``shrink_coef=0.1``).

    Pure: the same space, history and generator state give the same proposals. With no
    OK trial in ``history`` this is random search.

    Args:
        space: the compiled space.
        history: the study's trials (finished and pending).
        rng: the random generator of this suggestion.
        n: how many proposals.
    """
    return _DEFAULT(space, history, rng, n)


def configure(*, avg_best_idx: float = 2.0, shrink_coef: float = 0.1) -> Anneal:
    """An annealing suggest function with other options.

    Args:
        avg_best_idx: mean rank of the reference trial (1 is the best), finite and >= 1.
        shrink_coef: neighbourhood shrink rate, finite and > 0.

    Raises:
        ValueError: an invalid value.
        TypeError: an unknown option or a non-number.
    """
    return Anneal(avg_best_idx=avg_best_idx, shrink_coef=shrink_coef)
