"""Adaptive Parzen estimators: the density code shared by the TPE variants.

Every numeric parameter is mapped to a *unit axis* on which its prior has centre
``0.5`` (bounded families, support ``[0, 1]``) or ``0`` (normal families, unbounded) and
width 1. Kernels are Gaussians on that axis, truncated to the support; log densities
differ from those of the raw values by a constant per parameter, which cancels in the
ratio ``l(x) / g(x)`` that TPE ranks candidates by. Quantized parameters use the
probability mass of the grid cell around a value instead of a density.

A `ProductMixture` is a weighted mixture of kernels, each a product over the
parameters of one group: Gaussians for numeric axes and probability vectors for
categories (the joint "multivariate" estimator). `IndependentMixtures` holds one 1-D
adaptive Parzen estimator per axis (Bergstra et al., 2011, as Hyperopt builds it).
Bandwidths come from neighbour gaps (`gap_bandwidths`), weights from linear forgetting
(`linear_forgetting_weights`), categorical kernels from `categorical_kernels`. All work
is array code: no Python loop over observations or kernels.

Cell masses are plain differences of the normal CDF, floored at 1e-300: a far kernel's
mass may underflow, but the prior kernel, as wide as the support, always gives a cell a
mass far above the floor, so the mixture stays exact where it matters. Cells narrower
than 1e-6 of the prior's width (far below the clipped kernel widths) are scored by the
density at the grid point instead (the TPE layer decides this).

`ProductMixture.best_ratio` picks the candidate TPE proposes. Only that choice has to
be exact, not the scores: where g has many kernels its densities are first summed in
single precision, and exact sums are taken only for the candidates that a proven
bound on that rounding cannot separate from the best (the same choice as exact sums
throughout, bit for bit).
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from scipy import special

from asyncopt.space.distributions import Distribution

__all__ = [
    "Axes",
    "IndependentMixtures",
    "ProductMixture",
    "categorical_kernels",
    "categorical_pair",
    "categorical_rows",
    "clip_floor",
    "false_flags",
    "gap_bandwidths",
    "linear_forgetting_weights",
]

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_SUM, _MAX, _MIN = np.add.reduce, np.maximum.reduce, np.minimum.reduce
# Per-thread reusable buffers for the large temporaries of a density evaluation (see
# `_scratch`), and the largest buffer kept (in elements).
_SCRATCH = threading.local()
_SCRATCH_LIMIT = 1 << 22
# Up to this many kernels, cell masses are computed for every kernel; above it, once per
# distinct (centre, width) pair on each grid axis (many kernels share one).
_FEW_KERNELS = 128
_MAX_FLOAT = float(np.finfo(float).max)
_TINY = float(np.finfo(float).tiny)
# exp() overflows above this; below _MIN_LOG it is 0.
_MAX_LOG = 709.0
_MIN_LOG = -745.0
# The most lattice slots (cell ends) of the grid axes of one group for `Axes.grid_ends`.
_LATTICE_SIZE = 1 << 16
# Floor of every bandwidth on the unit axis, so that no division can overflow.
_MIN_SIGMA = 1e-12


def _scratch(slot: str, shape: tuple[int, ...], dtype: type = float) -> np.ndarray:
    # An uninitialized array of ``shape`` on a buffer reused by later calls of the same
    # thread: a fresh large array costs a page fault per 4 KiB touched, on long histories
    # about as much as the arithmetic on it. Each slot has one user at a time; the array
    # must not outlive the call that asked for it.
    size = math.prod(shape)
    if size > _SCRATCH_LIMIT:
        return np.empty(shape, dtype)
    buffers: dict[tuple[str, type], np.ndarray] | None = getattr(_SCRATCH, "buffers", None)
    if buffers is None:
        buffers = _SCRATCH.buffers = {}
    key = (slot, dtype)
    buffer = buffers.get(key)
    if buffer is None or len(buffer) < size:
        # Some headroom: the history grows by a trial or so between suggestions.
        buffer = buffers[key] = np.empty(size + size // 4 + 64, dtype)
    view: np.ndarray = buffer[:size].reshape(shape)
    return view


def linear_forgetting_weights(n: int, flat: int | None, extra: float | None = None) -> np.ndarray:
    """Weights of ``n`` observations in the order they were made.

    The newest ``flat`` get weight 1; older ones ramp linearly from ``1/n`` up (Hyperopt's
    "linear forgetting"). ``flat=None`` gives every observation weight 1. ``extra``
    appends one more weight (a prior kernel's, say).
    """
    weights = np.empty(n + (extra is not None))
    if extra is not None:
        weights[n] = extra
    if flat is None or n <= flat:
        weights[:n] = 1.0
        return weights
    # np.linspace(1 / n, 1, n - flat) (the same numbers), written in place: the ramp
    # is rebuilt for every new history length, and linspace costs more than the rest.
    num = n - flat
    start = 1.0 / n
    ramp = weights[:num]
    if num > 1:
        np.multiply(np.arange(num, dtype=float), np.subtract(1.0, start) / (num - 1), out=ramp)
        ramp += start
        ramp[-1] = 1.0
    else:
        ramp[:] = start
    weights[num:n] = 1.0
    return weights


def gap_bandwidths(
    mus: np.ndarray,
    *,
    prior_mu: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    rule: str,
    magic_clip: bool = True,
    clip_count: int | None = None,
    least: np.ndarray | None = None,
    order_out: list[np.ndarray] | None = None,
) -> np.ndarray:
    """Kernel widths of observations ``mus`` (shape ``(n, d)``) from neighbour gaps.

    Widths are in units of the prior's width (1 on the unit axis); ``prior_mu``, ``low``
    and ``high`` are per axis. ``rule="hyperopt"``
    inserts the prior centre among the sorted observations and takes, for each, the larger
    gap to its neighbours (one observation gets 0.5). ``rule="optuna"`` takes gaps among
    the observations only, using the bounds ``low`` and ``high`` as outer neighbours of a
    lone observation. The magic clip bounds every width to ``[1 / min(100, c + 2), 1]``
    where ``c`` is ``clip_count`` (default: ``n``). ``least`` (per axis, at most 1)
    raises the lower bound of some axes further. ``order_out`` (rule "optuna", ``n >= 2``)
    receives per axis (rows of ``(d, n)`` arrays) the observations in the order the
    gaps were taken in and their indices, and (``(d,)``) the smallest of those gaps.
    """
    n, d = mus.shape
    if n == 0 or d == 0:
        # (Nothing to sort: a sort of no axes on a long history would fail.)
        return np.empty((n, d))
    if rule == "hyperopt":
        if n == 1:
            sigmas = np.full((1, d), 0.5)
        else:
            extended = np.concatenate([mus, np.reshape(prior_mu, (1, d))], axis=0)
            sigmas = _neighbour_gaps(extended)[:n]
    elif n == 1:
        sigmas = np.maximum(mus - low, high - mus)
    else:
        sigmas = _neighbour_gaps(mus, order_out)
    count = n if clip_count is None else clip_count
    floor: float | np.ndarray = clip_floor(count, magic_clip)
    if least is not None:
        # (Below 1, a larger floor commutes with the cap at 1: the same widths as
        # clipping and then raising them to ``least``.)
        floor = np.maximum(least, floor)
    # fmin sends a NaN width (a NaN observation) to the prior's width 1. Every branch
    # above made a fresh array, so it is clipped in place.
    clipped: np.ndarray = np.maximum(sigmas, floor, out=sigmas)
    np.fmin(clipped, 1.0, out=clipped)
    return clipped


def clip_floor(count: int, magic_clip: bool) -> float:
    """The least width `gap_bandwidths` gives with clip count ``count``, in prior widths."""
    return 1.0 / min(100.0, count + 2.0) if magic_clip else _MIN_SIGMA


def _neighbour_gaps(points: np.ndarray, order_out: list[np.ndarray] | None = None) -> np.ndarray:
    # For each point (column by column): the larger of the gaps to the next smaller and
    # next larger point; the extreme points take their single inner gap. ``order_out``:
    # see `gap_bandwidths`.
    rows = np.ascontiguousarray(points.T)
    d, n = rows.shape
    # Flat positions of the sorted points: one flat gather and one flat scatter are much
    # cheaper than 2-D fancy indexing. The sorted values are then overwritten in place
    # by the widths.
    order, flat = _row_order(rows)
    if not flat:
        order += _row_offsets(d, n)
    # (The positions are a permutation: clip mode only skips the bounds checks.)
    widths = rows.ravel().take(order, mode="clip")
    if order_out is not None:
        order_out += (widths.copy(), order - _row_offsets(d, n))
    gaps = widths[:, 1:] - widths[:, :-1]
    if n >= _PACKED_FROM:
        # (Packed keys may order values closer than their resolution either way; an
        # exact sort makes every gap non-negative already.)
        np.abs(gaps, out=gaps)
    if order_out is not None:
        order_out.append(_MIN(gaps, axis=1))
    np.maximum(gaps[:, :-1], gaps[:, 1:], out=widths[:, 1:-1])
    widths[:, 0] = gaps[:, 0]
    widths[:, -1] = gaps[:, -1]
    result = np.empty(d * n)
    result[order.ravel()] = widths.ravel()
    transposed: np.ndarray = result.reshape(d, n).T
    return transposed


@functools.lru_cache(maxsize=64)
def _row_offsets(d: int, n: int) -> np.ndarray:
    # The flat position of the start of each of ``d`` rows of ``n`` (read-only, cached).
    offsets = np.arange(0, d * n, n, dtype=np.intp)[:, None]
    offsets.flags.writeable = False
    return offsets


_INDEX_BITS = 17
# Rows at least this long (and shorter than 2**_INDEX_BITS) are sorted by packed keys.
_PACKED_FROM = 256


def _row_order(rows: np.ndarray) -> tuple[np.ndarray, bool]:
    # argsort of each row, and whether the positions are flat ones (row * n + column)
    # rather than columns. For long rows, sorting int64 keys that pack the value's rank
    # position (45 bits) above the index is several times faster than argsort; values
    # closer than 2**-45 of the row's span may come out in index order instead. (The
    # index packed is the flat position when it fits: the same order within a row.)
    d, n = rows.shape
    if n < _PACKED_FROM or n >= 1 << _INDEX_BITS:
        order: np.ndarray = rows.argsort(axis=1)
        return order, False
    low = rows.min(axis=1, keepdims=True)
    span = rows.max(axis=1, keepdims=True) - low
    if not _MIN(span, axis=None) > 0:
        span = np.where(span > 0, span, 1.0)
    scaled = rows - low
    scaled /= span
    scaled *= float(1 << 45)
    # (Non-negative: truncation is the floor.)
    keys: np.ndarray = scaled.astype(np.int64)
    keys <<= _INDEX_BITS
    flat = d * n <= len(_POSITIONS)
    keys |= _POSITIONS[: d * n].reshape(d, n) if flat else _POSITIONS[:n]
    keys.sort(axis=1)
    keys &= (1 << _INDEX_BITS) - 1
    return keys, flat


# 0, 1, 2, ... as int64, every index that fits below a packed key (read-only).
_POSITIONS = np.arange(1 << _INDEX_BITS, dtype=np.int64)
_POSITIONS.flags.writeable = False


def categorical_kernels(
    observed: np.ndarray, prior: np.ndarray, *, prior_weight: float, rule: str
) -> np.ndarray:
    """Probability rows of the kernels of observed categories, then one prior row.

    ``observed`` holds category indices (shape ``(n,)``), ``prior`` the prior
    probabilities. ``rule="hyperopt"`` gives each observation a one-hot row (the mixture is
    then a table of pseudo-counts, the prior weighing ``prior_weight`` per category);
    ``rule="optuna"`` blends each one-hot row with ``prior_weight / (n + 1)`` of the prior
    per category, so each kernel keeps some mass on every category.
    """
    n = len(observed)
    size = len(prior)
    if rule == "optuna" and 0 < size <= min(n, 64):
        # Only ``size`` distinct kernel rows exist: blend those once and gather.
        distinct = _blended_rows(prior.tobytes(), prior_weight * size / (n + 1))
        gathered: np.ndarray = np.concatenate([distinct[observed], prior[None, :]])
        return gathered
    rows = np.zeros((n + 1, size))
    rows[np.arange(n), observed] = 1.0
    if rule == "optuna" and n > 0:
        rows[:n] += (prior_weight * size / (n + 1)) * prior
        rows[:n] /= rows[:n].sum(axis=1, keepdims=True)
    rows[n] = prior
    return rows


def categorical_rows(
    observed: np.ndarray, prior: np.ndarray, *, prior_weight: float, rule: str
) -> tuple[np.ndarray, np.ndarray | None]:
    """`categorical_kernels` factored: distinct probability rows and which row each kernel takes.

    ``rows[codes]`` equals ``categorical_kernels(observed, prior, ...)`` exactly (``codes``
    None: the rows are the kernels). With many observations only a few rows are distinct,
    and densities then need a logarithm per distinct row instead of per kernel.
    """
    n = len(observed)
    size = len(prior)
    if rule == "optuna" and 0 < size <= min(n, 64):
        rows = _blended_rows_and_prior(prior.tobytes(), prior_weight * size / (n + 1))
        codes = np.concatenate((observed, [size])).astype(np.intp, copy=False)
        return rows, codes
    return categorical_kernels(observed, prior, prior_weight=prior_weight, rule=rule), None


def categorical_pair(
    below: np.ndarray, above: np.ndarray, prior: np.ndarray, *, prior_weight: float
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """`categorical_rows` (rule "optuna") of ``below`` then of ``above``, as one table.

    The kernels are those of the below mixture (its observations, then its prior
    kernel) followed by those of the above mixture; ``rows[codes]`` is their table.
    The third item, when not None, holds the rows the below kernels' codes point to
    (the head of ``rows``) as a cached array of its own.
    """
    n_below, n_above = len(below), len(above)
    size = len(prior)
    if 0 < size <= min(n_below, n_above, 64):
        key = prior.tobytes()
        below_share = prior_weight * size / (n_below + 1)
        rows = _blended_pair(key, below_share, prior_weight * size / (n_above + 1))
        # The below codes, the below prior's row, the above codes past the below rows,
        # and the above prior's row (filled in place: no small temporaries).
        total = n_below + n_above + 2
        codes = np.empty(total, dtype=np.intp)
        codes[:n_below] = below
        codes[n_below] = size
        np.add(above, size + 1, out=codes[n_below + 1 : total - 1])
        codes[total - 1] = 2 * size + 1
        below_rows = _blended_rows_and_prior(key, below_share)
        return rows, codes, below_rows
    joined, joined_codes = _joined_tables(
        categorical_rows(below, prior, prior_weight=prior_weight, rule="optuna"),
        categorical_rows(above, prior, prior_weight=prior_weight, rule="optuna"),
    )
    return joined, joined_codes, None


@functools.lru_cache(maxsize=1024)
def _blended_pair(prior_bytes: bytes, below_share: float, above_share: float) -> np.ndarray:
    # The rows of `_blended_rows_and_prior` for both shares, stacked (cached, read-only).
    rows = np.concatenate(
        (
            _blended_rows_and_prior(prior_bytes, below_share),
            _blended_rows_and_prior(prior_bytes, above_share),
        )
    )
    rows.flags.writeable = False
    return rows


@functools.lru_cache(maxsize=1024)
def _blended_rows_and_prior(prior_bytes: bytes, share: float) -> np.ndarray:
    # `_blended_rows` with the prior as one more row (cached, read-only).
    prior = np.frombuffer(prior_bytes)
    rows = np.concatenate([_blended_rows(prior_bytes, share), prior[None, :]])
    rows.flags.writeable = False
    return rows


@functools.lru_cache(maxsize=1024)
def _blended_rows(prior_bytes: bytes, share: float) -> np.ndarray:
    # Each one-hot row plus ``share`` of the prior, normalized; cached (read-only): the
    # same few (prior, share) pairs come back on every suggestion.
    prior = np.frombuffer(prior_bytes)
    rows = np.eye(len(prior)) + share * prior
    rows /= rows.sum(axis=1, keepdims=True)
    rows.flags.writeable = False
    return rows


def _axis_fields(dist: Distribution) -> tuple[float, ...]:
    # (log, bounded, origin, half_span, q or nan, integer, value_low, value_high,
    #  clip_low, clip_high) of one numeric distribution; see `Axes`.
    q = dist.q
    if dist.is_bounded:
        low, high = dist.low, dist.high
        if dist.name == "uniformint":
            low, high = low - 0.5, high + 0.5
        origin, half = low, 0.5 * high - 0.5 * low
        if dist.log:
            value_low, value_high = math.exp(low), math.exp(high)
        else:
            value_low, value_high = low, high
        if dist.name == "uniformint":
            clip_low, clip_high = dist.low, dist.high
        elif q is not None:
            clip_low, clip_high = _grid_round(value_low, q), _grid_round(value_high, q)
        else:
            clip_low, clip_high = value_low, value_high
    else:
        origin, half = dist.mu, 0.5 * dist.sigma
        value_low = 0.0 if dist.log else -math.inf
        value_high = math.inf
        clip_low = 0.0 if dist.log else -_MAX_FLOAT
        clip_high = _MAX_FLOAT
    return (
        float(dist.log),
        float(dist.is_bounded),
        origin,
        half,
        math.nan if q is None else q,
        float(dist.is_integer),
        value_low,
        value_high,
        clip_low,
        clip_high,
    )


class Axes:
    """How the numeric parameters of one group map to unit axes, and back to raw values.

    On its unit axis a parameter's prior has width 1 and centre 0.5 (bounded families,
    support ``[0, 1]``) or 0 (normal families). Spans are stored as halves so that no
    span overflows. All methods work on ``(rows, axes)`` arrays.
    """

    __slots__ = (
        "_centre",
        "_grid_at",
        "_grid_columns",
        "_grid_q",
        "_half_cell",
        "_half_origin",
        "_lattice",
        "_log_at",
        "_log_columns",
        "_tame",
        "_tame_grid",
        "_tame_log",
        "_unit_high",
        "_unit_low",
        "_unit_steps",
        "any_quantized",
        "bounded",
        "clip_high",
        "clip_low",
        "half_span",
        "high",
        "integer",
        "log",
        "low",
        "origin",
        "prior_mu",
        "prior_sigma",
        "q",
        "quantized",
        "value_high",
        "value_low",
    )

    def __init__(self, dists: Sequence[Distribution]) -> None:
        fields = np.asarray([_axis_fields(d) for d in dists], dtype=float).reshape(-1, 10).T
        self.log = fields[0].astype(bool)
        self.bounded = fields[1].astype(bool)
        self.origin = fields[2]
        self.half_span = fields[3]
        self.quantized = ~np.isnan(fields[4])
        self.q = np.where(self.quantized, fields[4], 1.0)
        self.integer = fields[5].astype(bool)
        self.value_low, self.value_high = fields[6], fields[7]
        self.clip_low, self.clip_high = fields[8], fields[9]
        self.prior_mu = np.where(self.bounded, 0.5, 0.0)
        # The prior kernel's widths as one (1, axes) row, and whether any axis is a grid.
        self.prior_sigma = np.ones((1, len(self.origin)))
        self.prior_sigma.flags.writeable = False
        self.any_quantized = bool(self.quantized.any())
        self.low = np.where(self.bounded, 0.0, -np.inf)
        self.high = np.where(self.bounded, 1.0, np.inf)
        # Per-call work is many small array operations: everything that depends on the
        # axes alone is computed once here.
        self._half_origin = 0.5 * self.origin
        self._log_columns = np.flatnonzero(self.log)
        self._grid_columns = np.flatnonzero(self.quantized)
        self._grid_q = self.q[self._grid_columns]
        # The same columns as selectors (slices when contiguous: in-place views), and
        # whether every grid step is 1 (rounding to it needs no scaling: x / 1 * 1 == x).
        self._log_at = _selector(self._log_columns)
        self._grid_at = _selector(self._grid_columns)
        self._unit_steps = bool((self._grid_q == 1.0).all())
        self._unit_low = np.maximum(self.low, -1e12)
        self._unit_high = np.minimum(self.high, 1e12)
        t = 2.0 * (self._half_origin + self.prior_mu * self.half_span)
        self._centre = np.where(self.log, np.exp(np.minimum(t, _MAX_LOG)), t)
        # Tame axes: every bounded raw value is finite, so the guards of `from_unit`
        # against overflow and NaN change nothing for points inside the supports; on a
        # tame grid, neither do those of the rounding.
        with np.errstate(all="ignore"):
            reach = 2.0 * (np.abs(self._half_origin) + np.abs(self.half_span))
            self._tame = bool(self.bounded.all() and (reach < 1e300).all())
            # Tame log axes: every raw exponent of the supports lies well inside the
            # range `from_unit` clamps exponents to, so for points inside the supports
            # the clamp changes nothing.
            ends = 2.0 * (np.abs(self._half_origin) + np.abs(self.half_span))
            self._tame_log = self._tame and bool(
                (ends[self._log_columns] < min(-_MIN_LOG, _MAX_LOG) - 1.0).all()
            )
            grid_reach = np.where(self.log, np.exp(np.minimum(reach, _MAX_LOG)), reach)
            self._tame_grid = self._tame and bool(
                (grid_reach[self._grid_columns] < 1e299 * self._grid_q).all()
            )
        half = 0.5 * self.q
        self._half_cell = np.concatenate((-half, half)).reshape(2, 1, -1)
        self._lattice = self._lattice_tables(dists)

    def _lattice_tables(
        self, dists: Sequence[Distribution]
    ) -> tuple[np.ndarray, int, np.ndarray, np.ndarray] | None:
        # When every grid axis is a ``uniformint`` of moderate range, every cell end is a
        # point of a small fixed lattice (``v - 1/2`` for the integers ``v`` of an axis and
        # one more): the unit-axis value of each lattice end is computed here once, by the
        # same arithmetic as `cells`, and `grid_ends` then finds the distinct ends of a
        # batch of points by marking lattice slots instead of sorting. It also needs no
        # cell of any axis ever to be "fine" (narrower than 1e-6 of the prior), so that
        # no point is ever scored by its density instead. Returns (key shift per grid
        # axis, lattice size, unit value and axis of each lattice end), or None.
        grid = self._grid_columns
        if not grid.size or not all(dists[int(d)].name == "uniformint" for d in grid):
            return None
        lows = [int(dists[int(d)].low) for d in grid]
        counts = [int(dists[int(d)].high) - low + 2 for d, low in zip(grid, lows)]
        if sum(counts) > _LATTICE_SIZE or max(map(abs, lows)) + max(counts) > 1 << 50:
            return None
        for axis in range(len(self.origin)):
            if not self.quantized[axis] and not self._never_fine(axis):
                return None
        starts = np.cumsum([0, *counts])
        units = np.empty(int(starts[-1]))
        axis_of = np.empty(int(starts[-1]), dtype=np.intp)
        for j, d in enumerate(grid):
            ends = (lows[j] - 0.5) + np.arange(counts[j], dtype=float)
            unit = (0.5 * ends - self._half_origin[d]) / self.half_span[d]
            np.maximum(unit, self.low[d], out=unit)
            np.minimum(unit, self.high[d], out=unit)
            units[starts[j] : starts[j + 1]] = unit
            axis_of[starts[j] : starts[j + 1]] = j
        shift = np.asarray([start - low for start, low in zip(starts, lows)], dtype=float)
        for array in (shift, units, axis_of):
            array.flags.writeable = False
        return shift, int(starts[-1]), units, axis_of

    def _never_fine(self, d: int) -> bool:
        # Whether every cell ``[x - q/2, x + q/2]`` (clipped to the support) of a
        # continuous axis spans at least 1e-5 of its prior, wherever ``x`` lies in the
        # support: ten times the threshold below which a cell counts as fine. The
        # narrowest cell is the one at either end of the support.
        if not self.bounded[d] or not self.half_span[d] > 0:
            return False
        low, high, half = float(self.value_low[d]), float(self.value_high[d]), 0.5 * self.q[d]
        with np.errstate(all="ignore"):
            if self.log[d]:
                if not low > 0:
                    return False
                width = min(
                    math.log(min(low + half, high)) - math.log(low),
                    math.log(high) - math.log(max(high - half, low)),
                )
            else:
                width = min(min(low + half, high) - low, high - max(high - half, low))
            return bool(width / (2.0 * self.half_span[d]) >= 1e-5)

    def __len__(self) -> int:
        return len(self.origin)

    def _native(self, raw: np.ndarray, fresh: bool = False) -> np.ndarray:
        columns = self._log_columns
        if columns.size:
            if not fresh:
                raw = raw.copy(order="K")
            at = self._log_at
            if isinstance(at, slice):
                view = raw[:, at]
                np.maximum(view, _TINY, out=view)
                np.log(view, out=view)
            else:
                raw[:, columns] = np.log(np.maximum(raw[:, columns], _TINY))
        return raw

    def _unit(self, t: np.ndarray) -> np.ndarray:
        unit: np.ndarray = (0.5 * t - self._half_origin) / self.half_span
        return unit

    def to_unit(self, raw: np.ndarray, *, fresh: bool = False) -> np.ndarray:
        """Observed raw values on the unit axes (clipped into the supports); NaN stays.

        ``fresh``: ``raw`` is a float array of the caller's that may be overwritten.
        """
        t = self._native(np.asarray(raw, dtype=float), fresh)
        if fresh or t is not raw:
            # The caller's array, or a copy of it: transformed in place (the same numbers).
            np.multiply(t, 0.5, out=t)
            t -= self._half_origin
            t /= self.half_span
            np.maximum(t, self._unit_low, out=t)
            np.minimum(t, self._unit_high, out=t)
            return t
        u = self._unit(t)
        clipped: np.ndarray = np.minimum(np.maximum(u, self._unit_low), self._unit_high)
        return clipped

    def from_unit(self, u: np.ndarray, *, inside: bool = False) -> np.ndarray:
        """Raw values (quantized, clipped into the supports) of unit-axis points.

        ``inside``: the points are known to lie within the supports already (draws of a
        mixture), so the first clip is skipped.
        """
        if not inside:
            u = np.minimum(np.maximum(u, self.low), self.high)
        # 2 * (origin/2 + u * half_span), computed in place on one fresh array.
        raw = u * self.half_span
        raw += self._half_origin
        raw *= 2.0
        columns = self._log_columns
        if columns.size:
            at = self._log_at
            if isinstance(at, slice):
                view = raw[:, at]
                if not (inside and self._tame_log):
                    np.maximum(view, _MIN_LOG, out=view)
                    np.minimum(view, _MAX_LOG, out=view)
                np.exp(view, out=view)
            else:
                raw[:, columns] = np.exp(
                    np.minimum(np.maximum(raw[:, columns], _MIN_LOG), _MAX_LOG)
                )
        tame = inside and self._tame
        if not tame:
            raw = np.minimum(np.maximum(raw, -_MAX_FLOAT), _MAX_FLOAT)
            raw = np.where(np.isnan(raw), self._centre, raw)
        columns = self._grid_columns
        if columns.size:
            at = self._grid_at
            if tame and self._tame_grid and self._unit_steps and isinstance(at, slice):
                view = raw[:, at]
                np.round(view, out=view)
            elif tame and self._tame_grid:
                steps = raw[:, columns]
                steps /= self._grid_q
                raw[:, columns] = np.round(steps, out=steps) * self._grid_q
            else:
                raw[:, columns] = _grid_round_array(raw[:, columns], self._grid_q)
        np.maximum(raw, self.clip_low, out=raw)
        clipped: np.ndarray = np.minimum(raw, self.clip_high, out=raw)
        return clipped

    def grid_ends(self, raw: np.ndarray) -> GridEnds | None:
        """The distinct cell ends of the grid axes of raw points, or None (use `cells`).

        Available when every grid axis is a ``uniformint`` of moderate range and no cell
        of any axis is ever fine; then `ProductMixture.log_pdf` takes the result in place
        of ``cells``, with the same numbers.
        """
        lattice = self._lattice
        if lattice is None:
            return None
        shift, size, units, axis_of = lattice
        m = len(raw)
        # Lattice slot of each point's lower cell end (exact: integers in floats). Points
        # on the grid are never below slot 0; a NaN point (a NaN observation's kernel)
        # takes the way of `cells`.
        lower = raw[:, self._grid_at] + shift
        if not lower.min(initial=math.inf) >= 0.0:
            return None
        keys = np.empty((len(shift), 2, m), dtype=np.intp)
        keys[:, 0] = lower.T
        np.add(keys[:, 0], 1, out=keys[:, 1])
        flat = keys.ravel()
        marked = np.zeros(size, dtype=bool)
        marked[flat] = True
        where = marked.cumsum().take(flat)
        where -= 1
        distinct = np.flatnonzero(marked)
        return GridEnds(units.take(distinct), axis_of.take(distinct), where, m)

    def cells(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Unit-axis ends of the grid cells that round to the raw values (quantized axes)."""
        # Both ends in one (2, rows, axes) block: half the calls.
        ends = raw + self._half_cell
        np.maximum(ends[0], self.value_low, out=ends[0])
        np.minimum(ends[1], self.value_high, out=ends[1])
        columns = self._log_columns
        if columns.size:
            logged = ends[:, :, columns]
            np.maximum(logged[0], 0.0, out=logged[0])
            # A cell reaching down to 0 has a log end of -inf, as it should.
            with np.errstate(divide="ignore"):
                ends[:, :, columns] = np.log(logged, out=logged)
        unit = self._unit(ends)
        np.maximum(unit, self.low, out=unit)
        np.minimum(unit, self.high, out=unit)
        return unit[0], unit[1]


class GridEnds:
    """The distinct unit-axis cell ends of the grid axes of ``m`` points, as one set.

    ``ends`` holds them grouped by axis (axis-major), ``axis`` the grid axis of each (an
    index among the grid columns), and ``where`` which distinct end each (grid axis,
    lower/upper, point) end is, in that order (shape ``(g * 2 * m,)``).
    """

    __slots__ = ("axis", "ends", "m", "where")

    def __init__(self, ends: np.ndarray, axis: np.ndarray, where: np.ndarray, m: int) -> None:
        self.ends = ends
        self.axis = axis
        self.where = where
        self.m = m

    @classmethod
    def of_cells(cls, cells: tuple[np.ndarray, np.ndarray], grid: np.ndarray) -> GridEnds:
        """The distinct ends of the ``grid`` columns of ``cells`` (found by sorting)."""
        g = len(grid)
        m = len(cells[0])
        ends = np.concatenate((cells[0][:, grid].T, cells[1][:, grid].T), axis=1)
        order = ends.argsort(axis=1)
        order += np.arange(0, g * 2 * m, 2 * m)[:, None]
        ordered = ends.take(order)
        starts = np.empty((g, 2 * m), dtype=bool)
        starts[:, 0] = True
        np.not_equal(ordered[:, 1:], ordered[:, :-1], out=starts[:, 1:])
        new = starts.ravel()
        rank = new.cumsum()
        rank -= 1
        where = np.empty(g * 2 * m, dtype=np.intp)
        where[order.ravel()] = rank
        axis = np.flatnonzero(new)
        distinct = ordered.ravel()[axis]
        axis //= 2 * m
        return cls(distinct, axis, where, m)

    def axis_stops(self, g: int) -> list[int]:
        """Where the ends of each of the ``g`` grid axes stop in ``ends``."""
        stops: list[int] = np.searchsorted(self.axis, np.arange(1, g + 1)).tolist()
        return stops

    def axis_slice(self, j: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Grid axis ``j`` alone: its distinct ends, and which one each lower and upper end is."""
        first, stop = np.searchsorted(self.axis, (j, j + 1))
        m = self.m
        lower = self.where[2 * j * m : (2 * j + 1) * m] - first
        upper = self.where[(2 * j + 1) * m : (2 * j + 2) * m] - first
        return self.ends[first:stop], lower, upper


def _grid_round(value: float, q: float) -> float:
    return float(_grid_round_array(np.asarray([value]), q)[0])


def _grid_round_array(values: np.ndarray, q: float | np.ndarray) -> np.ndarray:
    steps = np.minimum(np.maximum(values / q, -1e300), 1e300)
    rounded: np.ndarray = np.minimum(np.maximum(np.round(steps) * q, -_MAX_FLOAT), _MAX_FLOAT)
    return rounded


class ProductMixture:
    """A weighted mixture of product kernels over one group of parameters.

    Numeric axes: ``mus`` and ``sigmas`` of shape ``(K, Dn)``, supports ``lows``/``highs``
    (``(Dn,)``, unit axis, +-inf when unbounded) and which axes are ``quantized``.
    Categorical axes: one ``(K, size)`` probability table each. ``weights`` may have any
    positive scale. ``mixture_truncation`` renormalizes the whole mixture by its mass
    inside the support (Hyperopt's rejection sampler) instead of each kernel separately.
    """

    __slots__ = (
        "_bounds",
        "_finite",
        "cumulative",
        "highs",
        "log_mass",
        "log_weights",
        "lows",
        "mus",
        "quantized",
        "sigmas",
        "tables",
    )

    def __init__(
        self,
        weights: np.ndarray,
        mus: np.ndarray,
        sigmas: np.ndarray,
        lows: np.ndarray,
        highs: np.ndarray,
        quantized: np.ndarray,
        tables: Sequence[np.ndarray | tuple[np.ndarray, np.ndarray | None]],
        *,
        mixture_truncation: bool = False,
    ) -> None:
        self.mus = mus
        self.sigmas = np.maximum(sigmas, _MIN_SIGMA)
        self.lows = lows
        self.highs = highs
        self._bounds, self._finite = _stacked_bounds(lows, highs)
        self.quantized = quantized
        # Each table as (rows, codes): kernel k's probabilities are rows[codes[k]]
        # (codes None: rows[k]); see `categorical_rows`.
        self.tables: tuple[tuple[np.ndarray, np.ndarray | None], ...] = tuple(
            (table, None) if isinstance(table, np.ndarray) else table for table in tables
        )
        # Masses inside the support are needed for densities only (and for the weights
        # under mixture truncation); they are computed when first needed.
        self.log_mass: np.ndarray | None = None
        if mixture_truncation:
            log_w = np.log(np.maximum(weights, 1e-300)) + self._masses().sum(axis=1)
            self.log_weights = log_w - _logsumexp(log_w)
            self.cumulative: np.ndarray | None = None
        else:
            self.log_weights, self.cumulative = _normalized_log_weights(weights)

    @classmethod
    def pair(
        cls,
        below_weights: np.ndarray,
        above_weights: np.ndarray,
        mus: np.ndarray,
        sigmas: np.ndarray,
        lows: np.ndarray,
        highs: np.ndarray,
        quantized: np.ndarray,
        tables: Sequence[tuple[np.ndarray, np.ndarray | None, np.ndarray | None]],
        *,
        floored: bool = False,
    ) -> tuple[ProductMixture, ProductMixture]:
        """A below and an above mixture built as one kernel set: ``(both, below)``.

        ``mus``, ``sigmas`` and each ``(rows, codes, below_rows)`` table (as
        `categorical_pair` makes them) hold the kernels of the below mixture
        (``len(below_weights)`` of them) and then those of the above mixture.
        ``below`` is the below mixture alone (a view); ``both.log_pdf(..., split=k)``
        with ``k = below.n_kernels`` gives the densities of the two mixtures, as
        `log_ratio` of two separately built mixtures does. ``floored``: every width is
        known to be at least the floor of 1e-12 already (as `gap_bandwidths` makes them).
        """
        split = len(below_weights)
        log_below, cumulative = _normalized_log_weights(below_weights)
        log_above, _ = _normalized_log_weights(above_weights, cumulative=False)
        bounds, finite = _stacked_bounds(lows, highs)
        if not floored:
            sigmas = np.maximum(sigmas, _MIN_SIGMA)
        both = object.__new__(cls)
        below = object.__new__(cls)
        for mixture in (both, below):
            mixture.lows, mixture.highs, mixture.quantized = lows, highs, quantized
            mixture._bounds, mixture._finite = bounds, finite
            mixture.log_mass = None
        both.mus, both.sigmas = mus, sigmas
        both.tables = tuple([(rows, codes) for rows, codes, _ in tables])
        both.log_weights = np.concatenate((log_below, log_above))
        both.cumulative = None
        below.mus, below.sigmas = mus[:split], sigmas[:split]
        below.tables = tuple(
            [
                (rows[:split], None)
                if codes is None
                else (rows if head is None else head, codes[:split])
                for rows, codes, head in tables
            ]
        )
        below.log_weights, below.cumulative = log_below, cumulative
        return both, below

    @property
    def n_kernels(self) -> int:
        """Number of kernels."""
        return len(self.log_weights)

    def _masses(self) -> np.ndarray:
        if self.log_mass is None:
            # (Row sums of fewer than 8 terms run first to last in either memory order.)
            self.log_mass = _kernel_log_mass(
                self.mus, self.sigmas, self.lows, self.highs, self._bounds, self.mus.shape[1] < 8
            )
        return self.log_mass

    def log_ratio(
        self,
        other: ProductMixture,
        points: np.ndarray,
        cells: tuple[np.ndarray, np.ndarray] | GridEnds | None,
        categories: np.ndarray,
        quantized: np.ndarray | None = None,
    ) -> np.ndarray:
        """``log_pdf`` under this mixture minus under ``other``, in one pass over both."""
        first, second = self.joined(other).log_pdf(
            points, cells, categories, quantized, split=self.n_kernels
        )
        ratio: np.ndarray = first - second
        return ratio

    def joined(self, other: ProductMixture) -> ProductMixture:
        """This mixture's kernels then ``other``'s as one kernel set, each part keeping its
        own normalized weights: ``log_pdf(..., split=self.n_kernels)`` of it gives both
        mixtures' densities (as `pair` builds them)."""
        both = object.__new__(ProductMixture)
        both.mus = np.concatenate([self.mus, other.mus])
        both.sigmas = np.concatenate([self.sigmas, other.sigmas])
        both.lows, both.highs, both.quantized = self.lows, self.highs, self.quantized
        both._bounds, both._finite = self._bounds, self._finite
        both.tables = tuple(
            _joined_tables(mine, theirs) for mine, theirs in zip(self.tables, other.tables)
        )
        both.log_mass = None
        both.log_weights = np.concatenate([self.log_weights, other.log_weights])
        both.cumulative = None
        return both

    def sample(self, rng: np.random.Generator, m: int) -> tuple[np.ndarray, np.ndarray]:
        """``m`` draws: unit-axis points ``(m, Dn)`` and category indices ``(m, Dc)``."""
        cumulative = self.cumulative
        if cumulative is None:
            cumulative = np.exp(self.log_weights).cumsum()
        dn = self.mus.shape[1]
        n_tables = len(self.tables)
        # Every uniform of the call in one draw, used in the order separate draws would
        # be (kernels, then points, then categories): the same stream.
        uniforms = rng.random(m * (1 + dn + n_tables))
        kernel = cumulative.searchsorted(uniforms[:m] * cumulative[-1], side="right")
        kernel = np.minimum(kernel, self.n_kernels - 1)
        if dn:
            # (On arrays this small a fresh result costs less than writing in place.)
            mus = self.mus.take(kernel, axis=0)
            sigmas = self.sigmas.take(kernel, axis=0)
            lo, hi = special.ndtr((self._bounds - mus) / sigmas)
            u = lo + uniforms[m : m * (1 + dn)].reshape(m, dn) * (hi - lo)
            u = np.minimum(np.maximum(u, 1e-300), 1.0 - 1e-16)
            points = mus + sigmas * special.ndtri(u)
            points = np.minimum(np.maximum(points, self.lows), self.highs)
            if not self._finite:
                # Within finite bounds a point is finite unless its centre is NaN (the
                # widths of `gap_bandwidths` never are): then it stays NaN either way.
                points = np.where(np.isfinite(points), points, mus)
        else:
            points = np.empty((m, 0))
        categories = np.empty((m, len(self.tables)), dtype=np.intp)
        if self.tables:
            # One block of uniforms, row j for table j (the same stream as a draw per table).
            uniforms = uniforms[m * (1 + dn) :].reshape(n_tables, m)
            widths = {table.shape[1] for table, _ in self.tables} if n_tables > 1 else None
            if widths is None or len(widths) == 1:
                # Tables of one width: all of them in one (tables, draws, categories) block.
                # Cumulative rows: those of cached tables are cached too (a cumulative
                # sum along each row is the same whichever rows are gathered).
                blocks = [
                    _cumulative_rows(table)[codes[kernel]]
                    if codes is not None and not table.flags.writeable
                    else table[kernel if codes is None else codes[kernel]].cumsum(axis=1)
                    for table, codes in self.tables
                ]
                rows = (
                    blocks[0][None]
                    if n_tables == 1
                    else np.concatenate(blocks).reshape(n_tables, m, -1)
                )
                draw = uniforms[:, :, None] * rows[:, :, -1:]
                counts = (rows <= draw).sum(axis=2)
                size = self.tables[0][0].shape[1]
                categories[...] = np.minimum(counts, size - 1).T
            else:
                for j, (table, codes) in enumerate(self.tables):
                    rows = table[kernel if codes is None else codes[kernel]].cumsum(axis=1)
                    draw = uniforms[j][:, None] * rows[:, -1:]
                    categories[:, j] = np.minimum((rows <= draw).sum(axis=1), table.shape[1] - 1)
        return points, categories

    def log_pdf(
        self,
        points: np.ndarray,
        cells: tuple[np.ndarray, np.ndarray] | GridEnds | None,
        categories: np.ndarray,
        quantized: np.ndarray | None = None,
        split: int | None = None,
    ) -> Any:
        """Log density (mass on quantized axes) of ``m`` points under the mixture.

        ``points`` are unit-axis values ``(m, Dn)``; ``cells`` the unit-axis ends of the
        grid cells of the quantized axes (same shape, read on quantized axes only), or
        their distinct ends (`Axes.grid_ends`; then ``quantized`` must be left alone);
        ``categories`` category indices ``(m, Dc)``. ``quantized`` overrides which axes use
        cell masses (a grid much finer than every kernel is as good as continuous).
        With ``split``, the kernels before and from that index are two mixtures (each
        with its own normalized weights) and a pair of log densities is returned.
        """
        total = self._log_terms(points, cells, categories, quantized)
        if split is not None:
            return _split_pair(total, split)
        return _logsumexp(total, axis=1)

    def best_ratio(
        self,
        points: np.ndarray,
        cells: tuple[np.ndarray, np.ndarray] | GridEnds | None,
        categories: np.ndarray,
        quantized: np.ndarray | None,
        split: int,
    ) -> int:
        """The point of the largest ``first - second`` of ``log_pdf(..., split=split)``.

        A NaN difference ranks last; among equal ones the first point wins (as
        ``argmax``). Always the same point as the exact differences give: when the
        second mixture has many kernels, its densities are first summed in single
        precision, and only the points within twice a bound on that rounding of the
        best are then ranked by the exact sums.
        """
        total = self._log_terms(points, cells, categories, quantized)
        m, k = total.shape
        n = k - split
        if (
            0 < split < k
            and _ROUGH_FROM <= m * n <= 20_000
            and self.mus.shape[1]
            and (quantized is None or cells is None or not quantized.all())
        ):
            first, rough = _rough_split_logsumexp(total, split)
            score = first - rough
            top, bottom = float(_MAX(score)), float(_MIN(score))
            # (Finite exactly when every score is.)
            if math.isfinite(top - bottom):
                # Each exact score lies within ``error`` of its rough one: a point more
                # than twice that below the rough best cannot be (or tie) the exact best.
                error = _rough_error(n, rough, max(top, -bottom))
                near = (score >= top - 2.0 * error).nonzero()[0]
                if len(near) == 1:
                    return int(near[0])
                # Their exact sums, row by row as `_split_logsumexp` makes them.
                second = _logsumexp(total[near, split:], axis=1)
                exact = np.subtract(first[near], second, out=second)
                return int(near[int(exact.argmax())])
            # (The same sums as `_split_logsumexp` makes, half by half.)
            second = _logsumexp(total[:, split:], axis=1)
        elif 0 < split < k and m * n > 20_000:
            # g's sums are in single precision here anyway (see `_logsumexp`): the
            # one-pass pair gives the very numbers of the two calls below.
            first, second = _rough_split_logsumexp(total, split)
        else:
            first, second = _split_pair(total, split)
        exact = np.subtract(first, second, out=first)
        return int(np.fmax(exact, -np.inf, out=exact).argmax())

    def _log_terms(
        self,
        points: np.ndarray,
        cells: tuple[np.ndarray, np.ndarray] | GridEnds | None,
        categories: np.ndarray,
        quantized: np.ndarray | None,
    ) -> np.ndarray:
        # Log of each kernel's weighted density at each point, shape (points, kernels),
        # on a scratch buffer (see `log_pdf`).
        if quantized is None:
            quantized = self.quantized
        continuous, grid, continuous_at, grid_at = _columns(
            quantized if cells is not None else false_flags(len(quantized))
        )
        m = len(points)
        k = self.n_kernels
        everywhere = continuous.size == self.mus.shape[1]
        # Work in (points, kernels) layout: every reduction over the kernels then runs
        # along contiguous rows, and kernel constants broadcast as rows (both several
        # times faster than down the columns of a (kernels, points) block).
        if continuous.size:
            x = points if everywhere else points[:, continuous_at]
            mus = self.mus if everywhere else self.mus[:, continuous_at]
            sigmas = self.sigmas if everywhere else self.sigmas[:, continuous_at]
            masses = self._masses()
            inv_var = 1.0 / (sigmas**2)
            # (Reductions by the ufuncs themselves: what the methods call, minus a
            # Python layer.)
            square = 0.5 * _SUM(mus * mus * inv_var, axis=1)
            constant = self.log_weights - (
                square
                + _SUM(np.log(sigmas), axis=1)
                + continuous.size * _LOG_SQRT_2PI
                + _SUM(masses if everywhere else masses[:, continuous_at], axis=1)
            )
            # constant - 0.5 * sum_d (x - mu)^2 / s^2, expanded into one matrix product.
            dc = continuous.size
            weights = np.empty((2 * dc + 1, k))
            np.multiply(inv_var.T, -0.5, out=weights[:dc])
            np.multiply(mus.T, inv_var.T, out=weights[dc : 2 * dc])
            weights[-1] = constant
            features = np.empty((m, 2 * dc + 1))
            np.multiply(x, x, out=features[:, :dc])
            features[:, dc : 2 * dc] = x
            features[:, -1] = 1.0
            total = _matmul(features, weights, _scratch("total", (m, k)))
            # Rounding can push the expanded square below zero; it never is.
            np.minimum(total, constant + square, out=total)
        else:
            total = _scratch("total", (m, k))
            total[...] = self.log_weights
        few = k <= _FEW_KERNELS or grid.size >= 8
        if cells is not None and grid.size and few and k <= 512:
            # Few kernels: every grid axis in one (ends, axes, points, kernels) block, the
            # kernels innermost (a short innermost axis would make every operation crawl).
            ends = cells if isinstance(cells, GridEnds) else GridEnds.of_cells(cells, grid)
            cdf = _grid_end_cdf(self.mus[:, grid_at].T, self.sigmas[:, grid_at].T, ends)
            mass = cdf[:, 1] - cdf[:, 0]
            log_mass = np.log(np.maximum(mass, 1e-300, out=mass), out=mass)
            log_mass -= self._masses()[:, grid_at].T[:, None, :]
            total += _axis_sum(log_mass)
        elif cells is not None and grid.size and k <= 512:
            # Summed as the block above would be (the same numbers, in the same order: a
            # sum of fewer than 8 terms runs from first to last).
            tables = [self._cell_log_mass(cells, j, int(d)) for j, d in enumerate(grid)]
            total += tables[0] if len(tables) == 1 else _axis_sum(np.stack(tables))
        elif cells is not None:
            gathered = _scratch("gathered", (m, k))
            for j, d in enumerate(grid):
                total += self._cell_log_mass(cells, j, int(d), gathered)
        for j, (table, codes) in enumerate(self.tables):
            gathered = _scratch("gathered", (m, k))
            if codes is None:
                log_table = _scratch("log_table", (table.shape[1], k))
                np.maximum(table.T, 1e-300, out=log_table)
                np.log(log_table, out=log_table)
                total += log_table.take(categories[:, j], axis=0, out=gathered)
            else:
                # One logarithm per distinct row (cached for cached rows); (points,
                # rows), then spread to kernels.
                log_rows = _log_rows(table).take(categories[:, j], axis=0)
                total += log_rows.take(codes, axis=1, out=gathered, mode="clip")
        return total

    def _cell_log_mass(
        self,
        cells: tuple[np.ndarray, np.ndarray] | GridEnds,
        j: int,
        d: int,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        # Log masses of the cells of axis ``d`` (grid axis ``j``), shape (cells, kernels);
        # ``out`` may receive them. Many kernels share (mu, sigma) on a grid axis: each
        # distinct pair is computed once.
        if isinstance(cells, GridEnds):
            a = b = _NO_CELLS
            ends: tuple[np.ndarray, np.ndarray, np.ndarray] | None = cells.axis_slice(j)
        else:
            a, b, ends = cells[0][:, d], cells[1][:, d], None
        mu = self.mus[:, d]
        sigma = self.sigmas[:, d]
        log_mass = self._masses()[:, d]
        inverse = None
        if len(mu) > _FEW_KERNELS:
            mu, sigma, first, inverse = _distinct_kernels(mu, sigma)
            log_mass = log_mass[first]
        # No tail care needed here: the prior kernel, as wide as the support, always gives
        # a cell a mass far above the floor, so floored far kernels change nothing.
        table: np.ndarray = _cell_log_masses(mu, sigma, a, b, ends)
        table -= log_mass
        if inverse is not None:
            # Indices from `_distinct_kernels` are in range: clip mode skips the checks.
            gathered: np.ndarray = table.take(inverse, axis=1, out=out, mode="clip")
            return gathered
        return table


_NO_CELLS = np.empty(0)


def _axis_sum(terms: np.ndarray) -> np.ndarray:
    # The sum over the first axis, in exactly the order numpy sums a contiguous last axis
    # (pairwise, in blocks of 8), so that a result does not depend on the layout chosen.
    n = len(terms)
    if n < 8:
        summed: np.ndarray = terms.sum(axis=0)
        return summed
    if n > 128:
        half = n // 2
        half -= half % 8
        halves: np.ndarray = _axis_sum(terms[:half]) + _axis_sum(terms[half:])
        return halves
    blocks = terms[:8].copy()
    end = n - n % 8
    for i in range(8, end, 8):
        blocks += terms[i : i + 8]
    result: np.ndarray = ((blocks[0] + blocks[1]) + (blocks[2] + blocks[3])) + (
        (blocks[4] + blocks[5]) + (blocks[6] + blocks[7])
    )
    for i in range(end, n):
        result += terms[i]
    return result


_BOUNDS: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray, bool]] = {}


def _stacked_bounds(lows: np.ndarray, highs: np.ndarray) -> tuple[np.ndarray, bool]:
    # (2, 1, D) lows over highs, and whether all are finite. Callers pass the same
    # (immutable) bound arrays of their axes every time, so the stack is remembered per
    # pair of arrays (kept alive here, so that their ids stay theirs).
    key = (id(lows), id(highs))
    found = _BOUNDS.get(key)
    if found is None or found[0] is not lows or found[1] is not highs:
        if len(_BOUNDS) > 256:
            _BOUNDS.clear()
        stack = np.concatenate((lows, highs)).reshape(2, 1, -1)
        found = _BOUNDS[key] = (lows, highs, stack, bool(np.isfinite(stack).all()))
    return found[2], found[3]


def _joined_tables(
    first: tuple[np.ndarray, np.ndarray | None], second: tuple[np.ndarray, np.ndarray | None]
) -> tuple[np.ndarray, np.ndarray | None]:
    # One table over the kernels of both (factored when both are).
    (rows_a, codes_a), (rows_b, codes_b) = first, second
    if codes_a is None or codes_b is None:
        plain_a = rows_a if codes_a is None else rows_a[codes_a]
        plain_b = rows_b if codes_b is None else rows_b[codes_b]
        return np.concatenate([plain_a, plain_b]), None
    return np.concatenate([rows_a, rows_b]), np.concatenate([codes_a, codes_b + len(rows_a)])


_LOG_ROWS: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _log_rows(rows: np.ndarray) -> np.ndarray:
    # log(max(rows, 1e-300)) transposed to (categories, rows). Read-only rows are the
    # cached ones that come back on every suggestion: theirs is remembered by identity
    # (the rows kept alive with it, so that their id stays theirs).
    found = _LOG_ROWS.get(id(rows))
    if found is not None and found[0] is rows:
        return found[1]
    log_rows: np.ndarray = np.log(np.maximum(rows.T, 1e-300))
    if not rows.flags.writeable:
        if len(_LOG_ROWS) > 256:
            _LOG_ROWS.clear()
        log_rows.flags.writeable = False
        _LOG_ROWS[id(rows)] = (rows, log_rows)
    return log_rows


_CUMULATIVE_ROWS: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _cumulative_rows(rows: np.ndarray) -> np.ndarray:
    # Cumulative sums along the rows of a cached (read-only) table, remembered by
    # identity (the table kept alive with them, so that its id stays its own).
    found = _CUMULATIVE_ROWS.get(id(rows))
    if found is not None and found[0] is rows:
        return found[1]
    summed = rows.cumsum(axis=1)
    summed.flags.writeable = False
    if len(_CUMULATIVE_ROWS) > 256:
        _CUMULATIVE_ROWS.clear()
    _CUMULATIVE_ROWS[id(rows)] = (rows, summed)
    return summed


_LOG_WEIGHTS: dict[bytes, list[np.ndarray]] = {}
_LOG_WEIGHTS_BY_ID: dict[int, tuple[np.ndarray, list[np.ndarray]]] = {}


def _normalized_log_weights(
    weights: np.ndarray, cumulative: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    # Log weights normalized to sum 1, and the cumulative weights sampling draws from
    # (computed only when asked for: an empty array otherwise). Short weight vectors
    # recur (the forgetting ramp of a given count), so those are cached (read-only).
    by_id = _LOG_WEIGHTS_BY_ID.get(id(weights))
    if by_id is not None and by_id[0] is weights:
        found = by_id[1]
    else:
        # A read-only vector is usually a cached one that comes back (see
        # `_plain_weights` in tpe): remembered by identity below, and kept alive so
        # that its id stays its own; other vectors by their bytes.
        by_identity = not weights.flags.writeable and weights.base is None
        key = weights.tobytes() if len(weights) <= 4096 and not by_identity else None
        cached = None if key is None else _LOG_WEIGHTS.get(key)
        if cached is None:
            log_w = np.log(np.maximum(weights, 1e-300))
            log_w -= _log_total(log_w)
            log_w.flags.writeable = False
            cached = [log_w, _NOT_YET]
            if key is not None:
                if len(_LOG_WEIGHTS) > 256:
                    _LOG_WEIGHTS.clear()
                _LOG_WEIGHTS[key] = cached
        found = cached
        if by_identity:
            if len(_LOG_WEIGHTS_BY_ID) > 256:
                _LOG_WEIGHTS_BY_ID.clear()
            _LOG_WEIGHTS_BY_ID[id(weights)] = (weights, found)
    if cumulative and found[1] is _NOT_YET:
        summed = np.exp(found[0]).cumsum()
        summed.flags.writeable = False
        found[1] = summed
    return found[0], found[1]


_NOT_YET = np.empty(0)
_NOT_YET.flags.writeable = False


def _log_total(values: np.ndarray) -> Any:
    # `_logsumexp(values)` of a vector (the same number). Weights rarely underflow, so a
    # plain exp costs less here than skipping the terms that do.
    if values.size > 20_000:
        return _logsumexp(values)
    peak = values.max()
    if not math.isfinite(peak):
        peak = 0.0
    return np.log(np.exp(values - peak).sum()) + peak


# Multipliers of the pair hash in `_distinct_kernels` (odd, so that each is a bijection
# of the 64-bit integers).
_HASH_MU = -7046029254386353131
_HASH_SIGMA = 0x5851F42D4C957F2D


def _distinct_kernels(
    mu: np.ndarray, sigma: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    # The distinct (mu, sigma) pairs of one axis, a kernel holding each, and which one
    # each kernel is. Sorting a 47-bit hash of each pair's bits, with the kernel's index
    # packed below it, is several times faster than a lexicographic unique; should two
    # different pairs share a hash, the check below sees it and the exact way is taken.
    n = len(mu)
    mu = np.ascontiguousarray(mu, dtype=float)
    sigma = np.ascontiguousarray(sigma, dtype=float)
    if 0 < n < 1 << _INDEX_BITS:
        index_mask = (1 << _INDEX_BITS) - 1
        keys = mu.view(np.int64) * _HASH_MU
        keys += sigma.view(np.int64) * _HASH_SIGMA
        keys &= ~index_mask
        keys |= np.arange(n, dtype=np.int64)
        keys.sort()
        order = keys & index_mask
        keys >>= _INDEX_BITS
        new = np.empty(n, dtype=bool)
        new[0] = True
        np.not_equal(keys[1:], keys[:-1], out=new[1:])
        group = new.cumsum() - 1
        first = order[new]
        held = first[group]
        if np.array_equal(mu[order], mu[held]) and np.array_equal(sigma[order], sigma[held]):
            inverse = np.empty(n, dtype=np.intp)
            inverse[order] = group
            return mu[first], sigma[first], first, inverse
    unique, first, inverse = np.unique(mu + 1j * sigma, return_index=True, return_inverse=True)
    return unique.real, unique.imag, first, inverse.reshape(-1)


def _cell_log_masses(
    mu: np.ndarray,
    sigma: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    ends: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> Any:
    # Log mass (floored at 1e-300) of kernels (mu, sigma) in the cells [a, b] of one axis,
    # shape (cells, kernels). Candidates share cells and neighbouring cells share an end:
    # the normal CDF is computed once per distinct end (``ends``, when given: the
    # distinct ends and which one each a and each b is; see `GridEnds.axis_slice`).
    # (np.unique costs more than this whole function on a few dozen ends.)
    if ends is None:
        both = np.concatenate([a, b])
        order = both.argsort()
        ordered = both[order]
        new = np.empty(len(both), dtype=bool)
        new[0] = True
        np.not_equal(ordered[1:], ordered[:-1], out=new[1:])
        where = np.empty(len(both), dtype=np.intp)
        where[order] = new.cumsum() - 1
        ends = ordered[new], where[: len(a)], where[len(a) :]
    distinct, lower, upper = ends
    cdf = _ndtr((distinct[:, None] - mu) / sigma)
    mass = cdf[upper] - cdf[lower]
    return np.log(np.maximum(mass, 1e-300, out=mass), out=mass)


# scipy's normal CDF is exactly 1 from about 8.3 on, and exactly 0 from about -37.68
# down (its erfc underflows there): between these, the interval a CDF must be computed in.
_CDF_ONE = 8.5
_CDF_ZERO = -38.0
_CDF_MIDDLE = 0.5 * (_CDF_ONE + _CDF_ZERO)
_CDF_REACH = 0.5 * (_CDF_ONE - _CDF_ZERO)


def _ndtr(z: np.ndarray) -> np.ndarray:
    # special.ndtr(z) (C order). Far above or below a kernel the CDF is exactly 1 or 0
    # yet costs as much as near it: only the others are computed. Below a few thousand
    # values the selection costs more than it saves.
    if z.size < 2048:
        plain: np.ndarray = special.ndtr(z)
        return plain
    flat = z.ravel()
    # 0 far below, 1 far above (and NaN stays NaN): the clip of z to [0, 1].
    cdf = np.maximum(flat, 0.0)
    np.minimum(cdf, 1.0, out=cdf)
    offset = flat - _CDF_MIDDLE
    np.abs(offset, out=offset)
    needed = np.flatnonzero(np.less(offset, _CDF_REACH))
    cdf[needed] = special.ndtr(flat.take(needed))
    result: np.ndarray = cdf.reshape(z.shape)
    return result


def _grid_end_cdf(mus: np.ndarray, sigmas: np.ndarray, ends: GridEnds) -> np.ndarray:
    # Normal CDF of every kernel (``mus``, ``sigmas``: (axes, kernels)) at both cell ends
    # of every point on the grid axes, shape (axes, 2, points, kernels). Candidates
    # often share a cell or a cell end: the CDF is computed once per distinct end of an
    # axis (the same numbers as one per end).
    g, k = mus.shape
    # Ends are grouped by axis: each axis's block of z is broadcast from its kernels.
    z = np.empty((len(ends.ends), k))
    first = 0
    for j, stop in enumerate(ends.axis_stops(g)):
        block = z[first:stop]
        np.subtract(ends.ends[first:stop, None], mus[j], out=block)
        np.divide(block, sigmas[j], out=block)
        first = stop
    cdf = _ndtr(z)
    spread: np.ndarray = cdf.take(ends.where, axis=0).reshape(g, 2, ends.m, k)
    return spread


def _matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> np.ndarray:
    # Column blocks small enough that BLAS stays single-threaded: thread start-up costs
    # more than these thin products, and badly so on a busy machine.
    step = max(1, 200_000 // max(1, a.shape[0] * a.shape[1]))
    if b.shape[1] <= step:
        # (One block: the same product as the loop below would make.)
        return np.matmul(a, b, out=out)
    for start in range(0, b.shape[1], step):
        np.matmul(a, b[:, start : start + step], out=out[:, start : start + step])
    return out


class IndependentMixtures:
    """One 1-D mixture per numeric axis, all over the same kernel centres (Hyperopt's model).

    Like `ProductMixture` but nothing is joint: each axis has its own kernel weights
    (each mixture is renormalized inside its own support when ``mixture_truncation``),
    draws pick a kernel per axis, and `log_pdf` returns one column per axis.
    """

    __slots__ = ("highs", "log_mass", "log_weights", "lows", "mus", "quantized", "sigmas")

    def __init__(
        self,
        weights: np.ndarray,
        mus: np.ndarray,
        sigmas: np.ndarray,
        lows: np.ndarray,
        highs: np.ndarray,
        quantized: np.ndarray,
        *,
        mixture_truncation: bool = True,
    ) -> None:
        self.mus = mus
        self.sigmas = np.maximum(sigmas, _MIN_SIGMA)
        self.lows = lows
        self.highs = highs
        self.quantized = quantized
        self.log_mass = _kernel_log_mass(self.mus, self.sigmas, lows, highs)
        log_w = np.log(np.maximum(weights, 1e-300))[:, None] + np.zeros_like(mus)
        if mixture_truncation:
            log_w = log_w + self.log_mass
        self.log_weights = log_w - _logsumexp(log_w, axis=0)

    def sample(self, rng: np.random.Generator, m: int) -> np.ndarray:
        """``m`` unit-axis draws per axis, shape ``(m, D)``."""
        k, d = self.mus.shape
        cumulative = np.cumsum(np.exp(self.log_weights), axis=0)
        cumulative /= cumulative[-1]
        # Offsetting column j by j makes all columns one increasing sequence.
        offsets = np.arange(d, dtype=float)
        flat = (cumulative + offsets).T.ravel()
        targets = rng.random((m, d)) + offsets
        kernel = np.searchsorted(flat, targets, side="right") - np.arange(d) * k
        kernel = np.clip(kernel, 0, k - 1)
        columns = np.arange(d)
        mus = self.mus[kernel, columns]
        sigmas = self.sigmas[kernel, columns]
        lo = special.ndtr((self.lows - mus) / sigmas)
        hi = special.ndtr((self.highs - mus) / sigmas)
        u = np.clip(lo + rng.random((m, d)) * (hi - lo), 1e-300, 1.0 - 1e-16)
        points = np.clip(mus + sigmas * special.ndtri(u), self.lows, self.highs)
        drawn: np.ndarray = np.where(np.isfinite(points), points, mus)
        return drawn

    def log_pdf(
        self,
        points: np.ndarray,
        cells: tuple[np.ndarray, np.ndarray] | None,
        quantized: np.ndarray,
    ) -> np.ndarray:
        """Per-axis log density (mass on ``quantized`` axes) of ``(m, D)`` points."""
        mus = self.mus[None, :, :]
        sigmas = self.sigmas[None, :, :]
        z = (points[:, None, :] - mus) / sigmas
        terms = -0.5 * z * z - np.log(sigmas) - _LOG_SQRT_2PI
        if cells is not None and quantized.any() and len(self.mus) <= _FEW_KERNELS:
            axes = np.flatnonzero(quantized)
            za = (cells[0][:, None, axes] - mus[:, :, axes]) / sigmas[:, :, axes]
            zb = (cells[1][:, None, axes] - mus[:, :, axes]) / sigmas[:, :, axes]
            mass = special.ndtr(zb) - special.ndtr(za)
            terms[:, :, axes] = np.log(np.maximum(mass, 1e-300))
        elif cells is not None and quantized.any():
            # Many kernels: once per distinct (mu, sigma) pair and cell end, axis by axis.
            for d in np.flatnonzero(quantized):
                mu, sigma = self.mus[:, d], self.sigmas[:, d]
                inverse = None
                if len(mu) > _FEW_KERNELS:
                    mu, sigma, _, inverse = _distinct_kernels(mu, sigma)
                table = _cell_log_masses(mu, sigma, cells[0][:, d], cells[1][:, d])
                if inverse is not None:
                    table = table.take(inverse, axis=1, mode="clip")
                terms[:, :, d] = table
        terms += (self.log_weights - self.log_mass)[None, :, :]
        return _logsumexp(terms, axis=1)


def _kernel_log_mass(
    mus: np.ndarray,
    sigmas: np.ndarray,
    lows: np.ndarray,
    highs: np.ndarray,
    bounds: np.ndarray | None = None,
    any_order: bool = False,
) -> np.ndarray:
    # Mass of each kernel inside the support. Centres lie inside it, so the mass is at
    # least Phi(1) - 1/2 and a plain difference of Phi loses nothing. With many kernels,
    # only those within 8 sigmas of an end are computed (the others keep mass 1).
    # ``any_order``: the caller takes the masses in any memory order (C otherwise when
    # the kernels are few, as sums along the rows may depend on it).
    if mus.size <= 4096:
        # ``bounds``: lows and highs stacked as (2, 1, D), both ends in one pass.
        if bounds is None:
            bounds = np.concatenate((lows, highs)).reshape(2, 1, -1)
        z = (bounds - mus) / sigmas
        if z.size < 1024:
            cdf = special.ndtr(z)
            small: np.ndarray = np.log(cdf[1] - cdf[0])
            return small
        # A kernel 8.5 sigmas or more inside both ends has mass exactly 1 (its upper CDF
        # is 1, its lower one below half an ulp of 1): only the others are computed.
        # (Flat positions in the memory order of z, usually axis-major: no copies.)
        lower, upper = z[0], z[1]
        layout: Literal["F", "C"] = "F" if lower.flags.f_contiguous else "C"
        reach = np.minimum(upper, np.negative(lower), order=layout)
        # (A NaN reach is computed too: its mass stays NaN.)
        far = np.greater_equal(reach, _CDF_ONE)
        needed = np.logical_not(far, out=far).ravel(layout).nonzero()[0]
        masses = np.zeros(mus.shape, order=layout)
        low, high = lower.ravel(layout).take(needed), upper.ravel(layout).take(needed)
        masses.ravel(layout)[needed] = np.log(_ndtr(high) - _ndtr(low))
        if layout == "C" or any_order:
            return masses
        return np.ascontiguousarray(masses)
    # Flat indices in memory order (kernel arrays are usually axis-major), the same
    # order for every array.
    order: Literal["C", "F"] = "F" if mus.flags.f_contiguous else "C"
    result = np.zeros(mus.shape, order=order)
    inside = mus - lows
    np.minimum(inside, highs - mus, out=inside)
    reach = np.multiply(sigmas, 8.0)
    near = np.flatnonzero(np.less(inside, reach).ravel(order))
    if near.size:
        mu, sigma = mus.ravel(order)[near], sigmas.ravel(order)[near]
        column = near // len(mus) if order == "F" else near % mus.shape[1]
        mass = _ndtr((highs[column] - mu) / sigma) - _ndtr((lows[column] - mu) / sigma)
        result.ravel(order)[near] = np.log(mass)
    return result


_Columns = np.ndarray | slice


def _columns(quantized: np.ndarray) -> tuple[np.ndarray, np.ndarray, _Columns, _Columns]:
    # Continuous and grid columns of a quantized mask, each also as a selector: a slice
    # when the columns are a contiguous run (a view instead of a copy; a sum along a
    # row of a C-ordered view adds in the same order as along the copy). Few masks recur,
    # so they are cached.
    key = quantized.tobytes()
    found = _COLUMNS.get(key)
    if found is None:
        if len(_COLUMNS) > 256:
            _COLUMNS.clear()
        continuous, grid = np.flatnonzero(~quantized), np.flatnonzero(quantized)
        found = _COLUMNS[key] = (continuous, grid, _selector(continuous), _selector(grid))
    return found


@functools.lru_cache(maxsize=64)
def false_flags(n: int) -> np.ndarray:
    """``n`` False flags, read-only and cached (the same few lengths come back)."""
    flags = np.zeros(n, dtype=bool)
    flags.flags.writeable = False
    return flags


def _selector(columns: np.ndarray) -> _Columns:
    # ``columns`` as a slice when they are a contiguous increasing run.
    if columns.size and columns[-1] - columns[0] == columns.size - 1:
        return slice(int(columns[0]), int(columns[-1]) + 1)
    return columns


_COLUMNS: dict[bytes, tuple[np.ndarray, np.ndarray, _Columns, _Columns]] = {}


@functools.lru_cache(maxsize=64)
def _split_starts(split: int) -> np.ndarray:
    starts = np.array([0, split])
    starts.flags.writeable = False
    return starts


def _split_pair(values: np.ndarray, split: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the log-sum-exps of the columns before ``split`` and from it."""
    if values.size > 20_000 or not 0 < split < values.shape[1]:
        return _logsumexp(values[:, :split], axis=1), _logsumexp(values[:, split:], axis=1)
    return _split_logsumexp(values, split)


def _split_logsumexp(values: np.ndarray, split: int) -> tuple[np.ndarray, np.ndarray]:
    # `_logsumexp` over axis 1 of values[:, :split] and of values[:, split:] (the same
    # numbers), with one call per step for both (small arrays: the calls are the cost).
    m = len(values)
    first, second = values[:, :split], values[:, split:]
    peak = np.maximum.reduceat(values, _split_starts(split), axis=1).T[:, :, None]
    # (A sum of log densities cannot overflow: it is finite exactly when every one is.)
    if not math.isfinite(peak.sum()):
        peak = np.where(np.isfinite(peak), peak, 0.0)
    # (In place: the values are consumed.)
    np.subtract(first, peak[0], out=first)
    np.subtract(second, peak[1], out=second)
    shifted = _exp_shifted(values)
    summed = np.empty((2, m))
    np.add.reduce(shifted[:, :split], axis=1, out=summed[0])
    np.add.reduce(shifted[:, split:], axis=1, out=summed[1])
    result = np.log(summed, out=summed)
    result += peak[:, :, 0]
    return result[0], result[1]


def _rough_split_logsumexp(values: np.ndarray, split: int) -> tuple[np.ndarray, np.ndarray]:
    # `_logsumexp` over axis 1 of values[:, :split] (the same numbers) and, summed in
    # single precision, of values[:, split:] (within `_rough_error` of the double sums),
    # with one call per step for both where possible; ``values`` are kept.
    m, k = values.shape
    peak = np.maximum.reduceat(values, _split_starts(split), axis=1)
    # (A sum of log densities cannot overflow: it is finite exactly when every one is.)
    if not math.isfinite(peak.sum()):
        peak = np.where(np.isfinite(peak), peak, 0.0)
    summed = np.empty((2, m))
    head = _exp_shifted(np.subtract(values[:, :split], peak[:, :1]))
    np.add.reduce(head, axis=1, out=summed[0])
    tail = np.subtract(
        values[:, split:],
        peak[:, 1:],
        out=_scratch("shifted", (m, k - split), np.float32),
        casting="same_kind",
    )
    np.exp(tail, out=tail)
    np.add.reduce(tail, axis=1, dtype=np.float64, out=summed[1])
    result = np.log(summed, out=summed)
    result += peak.T
    return result[0], result[1]


# exp() of anything at or below this is exactly 0.
_EXP_ZERO = -746.0
# `_exp_shifted` skips the underflowing terms from this many terms on.
_EXP_MASK_FROM = 2048

# `ProductMixture.best_ratio` ranks by single-precision sums from this many terms on
# (below, the saving is smaller than the extra calls).
_ROUGH_FROM = 2048


def _rough_error(n: int, rough: np.ndarray, score: float) -> float:
    # A bound on |single - double| of `_logsumexp` over ``n`` terms per row. After the
    # shift the largest term is exp(0) = 1 exactly, so the sum S >= 1. A term exp(y),
    # y <= 0, is exp(y (1 + e1)) (1 + e2) in single precision: |e1| <= 2**-24 (the
    # rounding of y), |e2| <= 2**-20 (exp and its rounding, generously); since
    # exp(y) |y| <= 1/e, the sum errs by at most n 2**-24 / e + 2**-20 S, and its log by
    # that over S. Terms that single precision flushes to 0 lose below 1.2e-38 each.
    # Double precision errs far less; both logs then add the same peak, and the scores
    # subtract them from the same numbers (roundings of the results' size). Every part
    # is counted with room to spare.
    # (``score``: the largest magnitude of the scores.)
    largest = max(float(_MAX(np.abs(rough))), score)
    return n * 3e-8 + 2e-6 + largest * 2.0**-40


def _exp_shifted(shifted: np.ndarray) -> np.ndarray:
    # exp of a fresh array (consumed). Most terms of a mixture's density are far below
    # its peak and their exp underflows to 0, which libm computes about twice as slowly
    # as an ordinary exp: those are set to 0 without calling it (the same numbers). A
    # small block is not worth the extra passes.
    if shifted.size < _EXP_MASK_FROM:
        exp: np.ndarray = np.exp(shifted, out=shifted)
        return exp
    keep = np.less_equal(shifted, _EXP_ZERO)
    np.logical_not(keep, out=keep)
    # (The same memory order as ``shifted``: sums along its rows add in the same order.)
    result = np.zeros(shifted.shape) if shifted.flags.c_contiguous else np.zeros_like(shifted)
    np.exp(shifted, out=result, where=keep)
    return result


def _logsumexp(
    values: np.ndarray, axis: int | None = None, single: bool | None = None
) -> np.ndarray:
    # ``single``: sum in single precision (default: for large arrays only).
    peak = values.max(axis=axis, keepdims=True)
    # (Log densities: a sum of peaks is finite exactly when every peak is.)
    if not math.isfinite(peak.sum()):
        peak = np.where(np.isfinite(peak), peak, 0.0)
    if values.size > 20_000 if single is None else single:
        # Terms are at most 1 after the shift: single precision loses nothing that
        # matters to a ranking, and its exp is much faster.
        shifted = np.subtract(
            values, peak, out=_scratch("shifted", values.shape, np.float32), casting="same_kind"
        )
        np.exp(shifted, out=shifted)
        summed = shifted.sum(axis=axis, keepdims=True, dtype=np.float64)
    else:
        summed = _exp_shifted(values - peak).sum(axis=axis, keepdims=True)
    result = np.log(summed) + peak
    if axis is None:
        total: np.ndarray = result.reshape(())
        return total
    squeezed: np.ndarray = result.squeeze(axis=axis)
    return squeezed
