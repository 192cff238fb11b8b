"""Adaptive Parzen estimators: the one mixture type behind both TPE families.

Every numeric parameter is mapped to a *unit axis* (`Axes`) on which its prior has
centre ``0.5`` (bounded families, support ``[0, 1]``) or ``0`` (normal families,
unbounded) and width 1. Kernels are Gaussians on that axis, truncated to the support;
log densities differ from those of the raw values by a constant per parameter, which
cancels in the ratio ``l(x) / g(x)`` that TPE ranks candidates by. A quantized parameter
uses the probability mass of the grid cell around a value instead of a density.

A `Mixture` is a weighted mixture of product kernels: a truncated Gaussian per numeric
axis times a probability row per categorical axis. Its data are plain arrays (centres,
widths, supports, one probability table per categorical axis), so one type serves the
multivariate model (one mixture over a group of co-active parameters) and Hyperopt's
(one 1-D mixture per parameter). Widths come from neighbour gaps (`gap_bandwidths`),
weights from linear forgetting (`linear_forgetting_weights`), categorical rows from
`categorical_table`. Everything is array code: no Python loop over observations.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy import special

from asyncopt.space.distributions import Distribution

__all__ = [
    "Axes",
    "Mixture",
    "Points",
    "categorical_table",
    "clip_floor",
    "gap_bandwidths",
    "linear_forgetting_weights",
    "logsumexp",
    "row_sums",
]

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_MAX_FLOAT = float(np.finfo(float).max)
_TINY = float(np.finfo(float).tiny)
# exp() overflows above _MAX_LOG; below _MIN_LOG it is 0.
_MAX_LOG = 709.0
_MIN_LOG = -745.0
# Floor of every kernel width on the unit axis, so that no division overflows.
MIN_SIGMA = 1e-12
# Floor of a probability or mass before its logarithm (a far kernel's mass underflows;
# the prior kernel, as wide as the support, keeps every mixture far above it).
_FLOOR = 1e-300
# `_gaussian_log_terms` expands squares while every |centre| and |point| is below this
# many times the narrowest width (its rounding then stays below 1e-6 in a log density).
_EXPAND_REACH = 1e3
# A kernel this many widths inside both ends of its support has mass 1 (to rounding).
_WHOLE = 8.5
# Entries of a block of (points, kernels) log terms in `Mixture.log_pdf` (256 KiB).
_BLOCK = 1 << 15
_EVERY_ROW = slice(None)
_NO_AXES = np.empty(0, dtype=np.intp)
_NO_AXES.flags.writeable = False
# The weight of the second key in the sort of `_distinct` (1 / the golden ratio).
_GOLDEN = 0.6180339887498949


def _clip(values: Any, low: Any, high: Any) -> np.ndarray:
    # np.clip's own wrapper costs more than the clip on arrays this small.
    clipped: np.ndarray = np.minimum(np.maximum(values, low), high)
    return clipped


def row_sums(values: np.ndarray) -> np.ndarray:
    """``values.sum(axis=1)`` of a 2-D array, bit for bit.

    Numpy adds a row of fewer than 8 entries one entry after the other, the order of a
    sum column by column, which needs one pass over the columns instead of a reduction
    per row (many times slower when rows are short and many). From 8 entries it sums
    pairwise: those rows are summed as they are.
    """
    sums: np.ndarray = (
        values.sum(axis=1) if values.shape[1] >= 8 else np.ascontiguousarray(values.T).sum(axis=0)
    )
    return sums


def logsumexp(values: np.ndarray, axis: int | None = None) -> np.ndarray:
    """``log(sum(exp(values)))`` along ``axis``; rows of ``-inf`` give ``-inf``, NaN stays."""
    peak = values.max(axis=axis, keepdims=True)
    # Rows without a finite peak (all -inf, or holding +inf or NaN) are shifted by 0.
    finite = bool(np.isfinite(peak).all())
    shift = peak if finite else np.where(np.isfinite(peak), peak, 0.0)
    # After the shift the largest term is 1: terms below exp(-700) change no sum, and
    # raising them to it spares exp its slow underflowing arguments.
    shifted = values - shift
    np.maximum(shifted, -700.0, out=shifted)
    np.exp(shifted, out=shifted)
    total = shifted.sum(axis=axis, keepdims=True)
    np.log(total, out=total)
    total += shift
    result: np.ndarray = total if finite else np.where(peak == -np.inf, -np.inf, total)
    return result.reshape(()) if axis is None else result.squeeze(axis=axis)


def linear_forgetting_weights(n: int, flat: int | None) -> np.ndarray:
    """Weights of ``n`` observations in the order they were made.

    The newest ``flat`` get weight 1; older ones ramp linearly from ``1/n`` up (Hyperopt's
    "linear forgetting"). ``flat=None`` gives every observation weight 1.
    """
    weights = np.ones(n)
    if flat is not None and n > flat:
        # np.linspace(1 / n, 1, n - flat), without its wrapper's cost.
        ramp = n - flat
        step = (1.0 - 1.0 / n) / (ramp - 1) if ramp > 1 else 0.0
        weights[:ramp] = np.arange(ramp) * step + 1.0 / n
        weights[ramp - 1] = 1.0 if ramp > 1 else 1.0 / n
    return weights


def clip_floor(count: int, magic_clip: bool) -> float:
    """The narrowest width the magic clip allows with ``count`` observations (prior widths)."""
    return 1.0 / min(100.0, count + 2.0) if magic_clip else MIN_SIGMA


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
) -> np.ndarray:
    """Kernel widths of observations ``mus`` (shape ``(n, d)``) from neighbour gaps.

    Widths are in prior widths (1 on the unit axis); ``prior_mu``, ``low`` and ``high``
    are per axis. Each observation takes the larger gap to its sorted neighbours (an
    extreme one its single inner gap). ``rule="hyperopt"`` inserts the prior centre
    among the observations first (a lone observation gets 0.5); ``rule="optuna"`` uses
    the observations only, with the bounds as the neighbours of a lone observation. The
    magic clip bounds every width to ``[clip_floor(c), 1]``, ``c`` being ``clip_count``
    (default ``n``); ``least`` (per axis) raises the lower bound of some axes. A NaN
    observation gets width 1.
    """
    n, d = mus.shape
    if n == 0 or d == 0:
        return np.empty((n, d))
    if rule == "hyperopt":
        if n == 1:
            sigmas = np.full((1, d), 0.5)
        else:
            extended = np.concatenate([mus, np.reshape(prior_mu, (1, d))])
            sigmas = _neighbour_gaps(extended)[:n]
    elif n == 1:
        sigmas = np.maximum(mus - low, high - mus)
    else:
        sigmas = _neighbour_gaps(mus)
    floor: float | np.ndarray = clip_floor(n if clip_count is None else clip_count, magic_clip)
    if least is not None:
        floor = np.maximum(least, floor)
    # fmin sends a NaN width (a NaN observation) to the prior's width.
    clipped: np.ndarray = np.fmin(np.maximum(sigmas, floor), 1.0)
    return clipped


def _neighbour_gaps(points: np.ndarray) -> np.ndarray:
    # Per column: the larger of each point's gaps to its sorted neighbours (sorted as
    # contiguous rows, the fast way for numpy).
    rows = np.ascontiguousarray(points.T)
    d, n = rows.shape
    # Positions in the flattened rows of each row's values in sorted order.
    flat = np.argsort(rows, axis=1) + (np.arange(d) * n)[:, None]
    ordered = rows.ravel().take(flat)
    gaps = ordered[:, 1:] - ordered[:, :-1]
    widths = np.empty_like(ordered)
    widths[:, 0], widths[:, -1] = gaps[:, 0], gaps[:, -1]
    np.maximum(gaps[:, :-1], gaps[:, 1:], out=widths[:, 1:-1])
    result = np.empty(d * n)
    result[flat.ravel()] = widths.ravel()
    transposed: np.ndarray = result.reshape(d, n).T
    return transposed


def categorical_table(codes: np.ndarray, prior: np.ndarray, share: float) -> np.ndarray:
    """Probability rows of kernels at categories ``codes``: each one-hot row plus ``share``
    per category of the prior's mass (scaled by the number of categories), normalized.

    Optuna's kernels take ``share = prior_weight / (n + 1)`` (each keeps some mass on every
    category); Hyperopt's take 0 (the mixture is then a table of pseudo-counts).
    """
    # A row depends on its category alone: the distinct rows, then one gather.
    size = len(prior)
    distinct = np.eye(size)
    if share:
        distinct += (share * size) * prior
        distinct /= distinct.sum(axis=1, keepdims=True)
    rows: np.ndarray = distinct[codes]
    return rows


def _axis_fields(dist: Distribution) -> tuple[float, ...]:
    # (log, bounded, origin, half span, q or nan, integer, value low/high, clip low/high)
    # of one numeric distribution; see `Axes`.
    q = dist.q
    if dist.is_bounded:
        low, high = dist.low, dist.high
        if dist.name == "uniformint":
            low, high = low - 0.5, high + 0.5
        origin, half = low, 0.5 * high - 0.5 * low
        value_low, value_high = (math.exp(low), math.exp(high)) if dist.log else (low, high)
        if dist.name == "uniformint":
            clip_low, clip_high = dist.low, dist.high
        elif q is not None:
            clip_low, clip_high = (
                float(_grid_round(value_low, q)),
                float(_grid_round(value_high, q)),
            )
        else:
            clip_low, clip_high = value_low, value_high
    else:
        origin, half = dist.mu, 0.5 * dist.sigma
        value_low, value_high = (0.0 if dist.log else -math.inf), math.inf
        clip_low, clip_high = (0.0 if dist.log else -_MAX_FLOAT), _MAX_FLOAT
    nan = math.nan if q is None else q
    return (float(dist.log), float(dist.is_bounded), origin, half, nan, float(dist.is_integer),
            value_low, value_high, clip_low, clip_high)  # fmt: skip


class Axes:
    """How the numeric parameters of one group map to unit axes, and back to raw values.

    On its unit axis a parameter's prior has width 1 and centre 0.5 (bounded families,
    support ``[0, 1]``) or 0 (normal families). Spans are stored as halves so that no
    span overflows. Methods take and return ``(rows, axes)`` arrays.
    """

    def __init__(self, dists: Sequence[Distribution]) -> None:
        fields = np.asarray([_axis_fields(d) for d in dists], dtype=float).reshape(-1, 10).T
        self.log = fields[0].astype(bool)
        self.bounded = fields[1].astype(bool)
        self.half_origin = 0.5 * fields[2]
        self.half_span = fields[3]
        self.quantized = ~np.isnan(fields[4])
        self.any_quantized = bool(self.quantized.any())
        self.q = np.where(self.quantized, fields[4], 1.0)
        self.integer = fields[5].astype(bool)
        self.value_low, self.value_high = fields[6], fields[7]
        self.clip_low, self.clip_high = fields[8], fields[9]
        self.prior_mu = np.where(self.bounded, 0.5, 0.0)
        self.low = np.where(self.bounded, 0.0, -np.inf)
        self.high = np.where(self.bounded, 1.0, np.inf)
        with np.errstate(all="ignore"):
            t = 2.0 * (self.half_origin + self.prior_mu * self.half_span)
            # The raw value of the prior's centre (what a NaN becomes).
            self.centre = np.where(self.log, np.exp(np.minimum(t, _MAX_LOG)), t)
        self.log_columns = np.flatnonzero(self.log)
        self.unit_low, self.unit_high = np.maximum(self.low, -1e12), np.minimum(self.high, 1e12)

    def __len__(self) -> int:
        return len(self.half_span)

    def to_unit(self, raw: np.ndarray) -> np.ndarray:
        """Raw values on the unit axes, clipped into the supports (within 1e12); NaN stays."""
        t = np.array(raw, dtype=float)
        if self.log_columns.size:
            t[:, self.log_columns] = np.log(np.maximum(raw[:, self.log_columns], _TINY))
        unit = (0.5 * t - self.half_origin) / self.half_span
        clipped: np.ndarray = _clip(unit, self.unit_low, self.unit_high)
        return clipped

    def from_unit(self, unit: np.ndarray) -> np.ndarray:
        """Raw values (on their grid, inside their supports) of unit-axis points."""
        unit = _clip(unit, self.low, self.high)
        t = 2.0 * (self.half_origin + unit * self.half_span)
        raw = np.where(self.log, np.exp(_clip(t, _MIN_LOG, _MAX_LOG)), t)
        raw = _clip(raw, -_MAX_FLOAT, _MAX_FLOAT)
        raw = np.where(np.isnan(raw), self.centre, raw)
        if self.any_quantized:
            raw = np.where(self.quantized, _grid_round(raw, self.q), raw)
        clipped: np.ndarray = _clip(raw, self.clip_low, self.clip_high)
        return clipped

    def cells(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Unit-axis ends of the grid cells that round to the raw values (any axis)."""
        half, m = 0.5 * self.q, len(raw)
        ends = np.concatenate([np.maximum(raw - half, self.value_low),
                               np.minimum(raw + half, self.value_high)])  # fmt: skip
        # Both ends in one `to_unit` (which clips into the supports and takes the log of
        # at least the smallest positive float); a log cell reaching down to 0 starts at
        # the bottom of the axis.
        unit = self.to_unit(ends)
        lower = np.where(self.log & (ends[:m] <= 0.0), self.low, unit[:m])
        return lower, unit[m:]


def _grid_round(values: np.ndarray | float, q: np.ndarray | float) -> np.ndarray | float:
    steps = _clip(np.divide(values, q), -1e300, 1e300)
    rounded = _clip(np.round(steps) * q, -_MAX_FLOAT, _MAX_FLOAT)
    return float(rounded) if np.ndim(rounded) == 0 else rounded


class Points:
    """Points at which to evaluate mixtures, prepared once for any mixture on their axes.

    ``values`` are unit-axis values ``(m, Dn)``; ``cells`` the unit-axis ends of the grid
    cells around them (as `Axes.cells`), or None; ``categories`` category indices ``(m,
    Dc)``. On the ``quantized`` axes, when ``cells`` are given (the *exact* axes), a
    mixture gives the mass of each point's cell instead of the density at the point.
    """

    def __init__(
        self,
        values: np.ndarray,
        cells: tuple[np.ndarray, np.ndarray] | None,
        categories: np.ndarray,
        quantized: np.ndarray,
    ) -> None:
        self.exact = _NO_AXES if cells is None else np.flatnonzero(quantized)
        # Without exact axes, every axis: a slice, so that mixtures read views of theirs.
        self.continuous = np.flatnonzero(~quantized) if self.exact.size else _EVERY_ROW
        self.x = values[:, self.continuous]
        self.features = _features(self.x)
        self.categories = categories
        # Per exact axis: its distinct cells (lower ends, upper ends) and each point's
        # among them (points share cells, so each is computed once).
        self.cells: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        for d in self.exact:
            assert cells is not None
            first, where = _distinct(cells[0][:, d], cells[1][:, d])
            # Neighbouring cells share an end: each distinct end once, and per distinct
            # cell the positions of its lower and upper ends among them.
            ends = np.concatenate([cells[0][first, d], cells[1][first, d]])
            distinct, at = _distinct(ends)
            self.cells.append((ends[distinct], at[: len(first)], at[len(first) :], where))

    def __len__(self) -> int:
        return len(self.x)


class Mixture:
    """Weighted mixtures of product kernels over the same numeric unit axes and categorical axes.

    Numeric part: ``mus`` and ``sigmas`` of shape ``(K, Dn)`` and the supports ``lows``,
    ``highs`` (``(Dn,)``, +-inf when unbounded); each kernel is truncated to the support.
    Categorical part: one ``(K, size)`` table of probability rows per axis. ``sizes``
    splits the kernels into consecutive *segments*, each a mixture of its own (TPE's
    ``l`` and ``g`` side by side), evaluated together; by default all kernels form one.
    ``weights`` may have any positive scale per segment. ``mixture_truncation``
    renormalizes each mixture as a whole by its mass inside the support (Hyperopt's
    rejection sampler): kernel ``k`` then weighs ``w_k Z_k``, ``Z_k`` its mass inside.
    """

    def __init__(
        self,
        weights: np.ndarray,
        mus: np.ndarray,
        sigmas: np.ndarray,
        lows: np.ndarray,
        highs: np.ndarray,
        tables: Sequence[np.ndarray] = (),
        *,
        sizes: Sequence[int] | None = None,
        mixture_truncation: bool = False,
    ) -> None:
        self.mus = mus
        self.sigmas = np.maximum(sigmas, MIN_SIGMA)
        self.lows, self.highs = lows, highs
        self.tables = list(tables)
        ends = list(itertools.accumulate([len(weights)] if sizes is None else sizes))
        self.segments = [slice(start, end) for start, end in zip([0, *ends], ends)]
        self.log_mass = _kernel_log_mass(mus, self.sigmas, lows, highs)
        log_mass = row_sums(self.log_mass)
        log_w = np.log(np.maximum(weights, _FLOOR))
        if mixture_truncation:
            log_w = log_w + log_mass
        self.log_weights = np.empty(len(log_w))
        for segment in self.segments:
            self.log_weights[segment] = log_w[segment] - logsumexp(log_w[segment])
        # Per kernel: its log weight over its masses inside the support (truncation).
        self._offset = self.log_weights - log_mass
        self._log_tables = [np.log(np.maximum(table.T, _FLOOR)) for table in self.tables]

    def __len__(self) -> int:
        return len(self.log_weights)

    def sample(
        self, rng: np.random.Generator, m: int, segment: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        """``m`` draws from one segment's mixture: unit-axis points ``(m, Dn)`` and category
        indices ``(m, Dc)``."""
        kernels = self.segments[segment]
        cumulative = np.exp(self.log_weights[kernels]).cumsum()
        drawn = cumulative.searchsorted(rng.random(m) * cumulative[-1], "right")
        kernel = np.minimum(drawn, len(cumulative) - 1) + kernels.start
        mus, sigmas = self.mus[kernel], self.sigmas[kernel]
        supports = np.array([self.lows, self.highs])[:, None, :]
        lo, hi = special.ndtr((supports - mus) / sigmas)
        u = _clip(lo + rng.random(mus.shape) * (hi - lo), 1e-300, 1.0 - 1e-16)
        points = _clip(mus + sigmas * special.ndtri(u), self.lows, self.highs)
        points = np.where(np.isfinite(points), points, mus)
        categories = np.empty((m, len(self.tables)), dtype=np.intp)
        for j, table in enumerate(self.tables):
            rows = table[kernel].cumsum(axis=1)
            drawn = (rows <= rng.random(m)[:, None] * rows[:, -1:]).sum(axis=1)
            categories[:, j] = np.minimum(drawn, table.shape[1] - 1)
        return points, categories

    def log_pdf(self, at: Points, rows: slice = _EVERY_ROW) -> np.ndarray:
        """Log density (mass on the exact grid axes of ``at``) of each segment's mixture at
        the points ``rows`` of ``at``, shape ``(segments, points)``.

        The ``(points, K)`` log terms are summed over kernels a block of points at a time,
        so that a block stays in the processor's cache however many points are asked.
        """
        start, stop, _ = rows.indices(len(at))
        asked = slice(start, stop)
        # A categorical axis is a one-hot column per category, times the (categories, K)
        # table of log probabilities: linear, like the expanded Gaussian terms.
        one_hot = [np.eye(len(table))[at.categories[asked, j]]
                   for j, table in enumerate(self._log_tables)]  # fmt: skip
        terms = _log_terms(
            at.x[asked], at.features[asked], self.mus[:, at.continuous],
            self.sigmas[:, at.continuous], self._offset, one_hot, self._log_tables,
        )  # fmt: skip
        # Per exact grid axis: a (cells, distinct kernels) table of log masses, the
        # kernels' columns in it, and each point's cell.
        cells = [
            (*_cell_log_mass(self.mus[:, d], self.sigmas[:, d], *ends), where[asked])
            for d, (*ends, where) in zip(at.exact, at.cells)
        ]
        result = np.empty((len(self.segments), stop - start))
        step = max(1, _BLOCK // max(1, len(self)))
        for begin in range(0, stop - start, step):
            block = slice(begin, begin + step)
            total = terms(block)
            for table, columns, index in cells:
                total += table[index[block]].take(columns, axis=1)
            for k, segment in enumerate(self.segments):
                result[k, block] = logsumexp(total[:, segment], axis=1)
        return result


def _kernel_log_mass(
    mus: np.ndarray, sigmas: np.ndarray, lows: np.ndarray, highs: np.ndarray
) -> np.ndarray:
    """Log mass of each kernel inside the support, per axis, ``(K, D)``.

    Centres lie inside the supports, so a mass is at least Phi(1) - 1/2 and a plain
    difference of normal CDFs loses nothing. A kernel more than `_WHOLE` widths inside
    both ends has mass exactly 1 in double precision; only the others are computed
    (`_kernel_log_mass_plain` is the oracle).
    """
    lower, upper = (lows - mus) / sigmas, (highs - mus) / sigmas
    near = np.flatnonzero((lower > -_WHOLE) | (upper < _WHOLE))
    if len(near) == lower.size:
        return _kernel_log_mass_plain(lower, upper)
    result = np.zeros(lower.size)
    result[near] = _kernel_log_mass_plain(lower.ravel()[near], upper.ravel()[near])
    shaped: np.ndarray = result.reshape(lower.shape)
    return shaped


def _kernel_log_mass_plain(lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    result: np.ndarray = np.log(special.ndtr(upper) - special.ndtr(lower))
    return result


def _features(x: np.ndarray) -> np.ndarray:
    # Per point: the factors of the expanded sum of squares (see `_log_terms`).
    features: np.ndarray = np.concatenate([-0.5 * x * x, x, np.ones((len(x), 1))], axis=1)
    return features


def _log_terms(
    x: np.ndarray,
    features: np.ndarray,
    mus: np.ndarray,
    sigmas: np.ndarray,
    offset: np.ndarray,
    one_hot: Sequence[np.ndarray] = (),
    log_tables: Sequence[np.ndarray] = (),
) -> Callable[[slice], np.ndarray]:
    """A function of a slice of the points ``x`` (with their `_features`): ``offset`` plus
    the log product-Gaussian density of each kernel at each point, plus each categorical
    axis's log probability (``one_hot`` columns per point times ``log_tables``, each
    ``(categories, K)``), shape ``(points, K)``.

    The sum of squares is expanded into one matrix product with the categorical terms
    (coefficients computed once for every slice) where its rounding cannot matter
    (centres and points within `_EXPAND_REACH` of the narrowest width); otherwise it is
    summed axis by axis (`_gaussian_log_terms_plain`, the oracle).
    """
    reach = max(float(np.abs(x).max(initial=0.0)), float(np.abs(mus).max(initial=0.0)))
    if not reach / float(sigmas.min(initial=1.0)) < _EXPAND_REACH:
        hot = np.concatenate([np.empty((len(x), 0)), *one_hot], axis=1)
        categorical = np.concatenate([np.empty((0, len(mus))), *log_tables])
        return lambda rows: (
            _gaussian_log_terms_plain(x[rows], mus, sigmas, offset) + hot[rows] @ categorical
        )
    inv_var = 1.0 / (sigmas * sigmas)
    d = x.shape[1]
    # One C-ordered block of coefficients: a product with a strided operand sends BLAS to
    # its threaded path, which a busy machine makes many times slower.
    coefficients = np.empty((2 * d + 1 + sum(len(table) for table in log_tables), len(mus)))
    coefficients[:d] = inv_var.T
    np.multiply(mus.T, inv_var.T, out=coefficients[d : 2 * d])
    square = (mus.T * coefficients[d : 2 * d]).sum(axis=0)
    coefficients[2 * d] = offset - (0.5 * square + row_sums(np.log(sigmas)) + d * _LOG_SQRT_2PI)
    start = 2 * d + 1
    for table in log_tables:
        coefficients[start : start + len(table)] = table
        start += len(table)
    linear = np.concatenate([features, *one_hot], axis=1)
    return lambda rows: linear[rows] @ coefficients


def _gaussian_log_terms_plain(
    x: np.ndarray, mus: np.ndarray, sigmas: np.ndarray, offset: np.ndarray
) -> np.ndarray:
    terms = np.zeros((len(x), len(mus)))
    for d in range(x.shape[1]):
        z = (x[:, d, None] - mus[:, d]) / sigmas[:, d]
        terms -= 0.5 * z * z
    constant = offset - np.log(sigmas).sum(axis=1) - x.shape[1] * _LOG_SQRT_2PI
    result: np.ndarray = terms + constant
    return result


def _cell_log_mass(
    mu: np.ndarray, sigma: np.ndarray, ends: np.ndarray, lower: np.ndarray, upper: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Log mass of kernels ``(mu, sigma)`` in the cells ``[ends[lower], ends[upper]]`` of
    one axis: a ``(cells, P)`` table over the ``P`` distinct kernels, and each kernel's
    column in it.

    Kernels on a grid axis share few distinct ``(mu, sigma)`` pairs, and neighbouring
    cells share ends: each normal CDF is computed once per distinct kernel and end.
    `_cell_log_mass_plain` is the oracle.
    """
    first, columns = _distinct(mu, sigma)
    mu, sigma = mu[first], sigma[first]
    cdf = special.ndtr((ends[:, None] - mu) / sigma)
    mass = cdf[upper] - cdf[lower]
    return np.log(np.maximum(mass, _FLOOR)), columns


def _distinct(a: np.ndarray, b: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Positions of one of each distinct value of ``a`` (pair ``(a[i], b[i])``), and each
    one's among them.

    Pairs are sorted by ``a + b / golden ratio`` (one float sort, far cheaper than a
    lexicographic one): equal pairs have equal sums, so they end up next to each other
    unless another pair has the same sum, in which case a pair may be listed twice (a
    repeat costs a little work, never a wrong value; the irrational weight keeps pairs
    of grid values from sharing sums).
    """
    order = (a if b is None else a + _GOLDEN * b).argsort()
    ordered = a[order]
    fresh = np.empty(len(order), dtype=bool)
    fresh[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=fresh[1:])
    if b is not None:
        ordered = b[order]
        fresh[1:] |= ordered[1:] != ordered[:-1]
    which = np.empty(len(order), dtype=np.intp)
    which[order] = np.cumsum(fresh) - 1
    return order[fresh], which


def _cell_log_mass_plain(
    mu: np.ndarray, sigma: np.ndarray, a: np.ndarray, b: np.ndarray
) -> np.ndarray:
    mass = special.ndtr((b[:, None] - mu) / sigma) - special.ndtr((a[:, None] - mu) / sigma)
    result: np.ndarray = np.log(np.maximum(mass, _FLOOR))
    return result
