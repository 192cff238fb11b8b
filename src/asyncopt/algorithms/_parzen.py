"""Adaptive Parzen estimators: the density code shared by the TPE variants.

Every numeric parameter is mapped to a *unit axis* on which its prior has centre
``0.5`` (bounded families, support ``[0, 1]``) or ``0`` (normal families, unbounded) and
width 1. Kernels are Gaussians on that axis, truncated to the support; log densities
differ from those of the raw values by a constant per parameter, which cancels in the
ratio ``l(x) / g(x)`` that TPE ranks candidates by. Quantized parameters use the
probability mass of the grid cell around a value instead of a density.

A `ProductMixture` is a weighted mixture of kernels, each a product over the
parameters of one group: Gaussians for numeric axes and probability vectors for
categories. With one parameter it is the 1-D adaptive Parzen estimator of Bergstra
et al. (2011); with several it is the joint "multivariate" estimator. All work is array
code: no Python loop over observations or kernels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import attrs
import numpy as np
from scipy import special

from asyncopt.space.distributions import Distribution

__all__ = [
    "Axis",
    "ProductMixture",
    "categorical_kernels",
    "gap_bandwidths",
    "linear_forgetting_weights",
]

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_MAX_FLOAT = float(np.finfo(float).max)
# exp() overflows above this; below _MIN_LOG it is 0.
_MAX_LOG = 709.0
_MIN_LOG = -745.0
# Floor of every bandwidth on the unit axis, so that no division can overflow.
_MIN_SIGMA = 1e-12


def linear_forgetting_weights(n: int, flat: int | None) -> np.ndarray:
    """Weights of ``n`` observations in the order they were made.

    The newest ``flat`` get weight 1; older ones ramp linearly from ``1/n`` up (Hyperopt's
    "linear forgetting"). ``flat=None`` gives every observation weight 1.
    """
    if flat is None or n <= flat:
        return np.ones(n)
    return np.concatenate([np.linspace(1.0 / n, 1.0, num=n - flat), np.ones(flat)])


def gap_bandwidths(
    mus: np.ndarray,
    *,
    prior_mu: float,
    low: float,
    high: float,
    rule: str,
    magic_clip: bool = True,
) -> np.ndarray:
    """Kernel widths of observations ``mus`` (shape ``(n, d)``) from neighbour gaps.

    Widths are in units of the prior's width (1 on the unit axis). ``rule="hyperopt"``
    inserts the prior centre among the sorted observations and takes, for each, the larger
    gap to its neighbours (one observation gets 0.5). ``rule="optuna"`` takes gaps among
    the observations only, using the bounds ``low`` and ``high`` as outer neighbours of a
    lone observation. The magic clip bounds every width to ``[1 / min(100, n + 2), 1]``.
    """
    n, d = mus.shape
    if n == 0:
        return np.empty((0, d))
    if rule == "hyperopt":
        if n == 1:
            sigmas = np.full((1, d), 0.5)
        else:
            extended = np.concatenate([mus, np.full((1, d), prior_mu)], axis=0)
            sigmas = _neighbour_gaps(extended, outer=None)[:n]
    elif n == 1:
        sigmas = np.maximum(mus - low, high - mus)
    else:
        sigmas = _neighbour_gaps(mus, outer=None)
    floor = 1.0 / min(100.0, n + 2.0) if magic_clip else _MIN_SIGMA
    sigmas = np.where(np.isnan(sigmas), 1.0, sigmas)
    return np.clip(sigmas, floor, 1.0)


def _neighbour_gaps(points: np.ndarray, outer: float | None) -> np.ndarray:
    # For each point (column by column): the larger of the gaps to the next smaller and
    # next larger point; the extreme points take their single inner gap.
    order = np.argsort(points, axis=0, kind="stable")
    ordered = np.take_along_axis(points, order, axis=0)
    gaps = np.diff(ordered, axis=0)
    left = np.concatenate([gaps[:1], gaps], axis=0)
    right = np.concatenate([gaps, gaps[-1:]], axis=0)
    widths = np.maximum(left, right)
    result = np.empty_like(widths)
    np.put_along_axis(result, order, widths, axis=0)
    return result


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
    rows = np.zeros((n + 1, size))
    rows[np.arange(n), observed] = 1.0
    if rule == "optuna" and n > 0:
        rows[:n] += (prior_weight * size / (n + 1)) * prior
        rows[:n] /= rows[:n].sum(axis=1, keepdims=True)
    rows[n] = prior
    return rows


@attrs.frozen
class Axis:
    """How one numeric parameter maps to its unit axis, and back to raw values.

    Build it with `Axis.of`. ``origin`` and ``half_span`` are in the parameter's native
    space (the log for log families); halves are stored so that no span overflows.
    """

    log: bool
    bounded: bool
    origin: float
    half_span: float
    q: float | None
    integer: bool
    # Support of the continuous value before quantization (raw units; +-inf if none).
    value_low: float
    value_high: float
    # Where final raw values are clipped to (grid-aligned for quantized families).
    clip_low: float
    clip_high: float

    @classmethod
    def of(cls, dist: Distribution) -> Axis:
        """The axis of a numeric (non-categorical) distribution."""
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
                clip_low = _grid_round(value_low, q)
                clip_high = _grid_round(value_high, q)
            else:
                clip_low, clip_high = value_low, value_high
        else:
            origin, half = dist.mu, 0.5 * dist.sigma
            value_low = 0.0 if dist.log else -math.inf
            value_high = math.inf
            clip_low = 0.0 if dist.log else -_MAX_FLOAT
            clip_high = _MAX_FLOAT
        return cls(
            log=dist.log,
            bounded=dist.is_bounded,
            origin=origin,
            half_span=half,
            q=q,
            integer=dist.is_integer,
            value_low=value_low,
            value_high=value_high,
            clip_low=clip_low,
            clip_high=clip_high,
        )

    @property
    def prior_mu(self) -> float:
        """Centre of the prior on the unit axis."""
        return 0.5 if self.bounded else 0.0

    @property
    def low(self) -> float:
        """Lower end of the support on the unit axis."""
        return 0.0 if self.bounded else -math.inf

    @property
    def high(self) -> float:
        """Upper end of the support on the unit axis."""
        return 1.0 if self.bounded else math.inf

    def _native(self, raw: np.ndarray) -> np.ndarray:
        if self.log:
            return np.log(np.maximum(raw, np.finfo(float).tiny))
        return raw

    def _to_unit_native(self, t: np.ndarray) -> np.ndarray:
        # Scale = 2 * half_span for bounded (width 1) and sigma = 2 * half_span for normals.
        if self.bounded:
            return (0.5 * t - 0.5 * self.origin) / self.half_span
        return (0.5 * t - 0.5 * self.origin) / self.half_span

    def to_unit(self, raw: np.ndarray) -> np.ndarray:
        """Observed raw values on the unit axis (clipped into the support)."""
        u = self._to_unit_native(self._native(np.asarray(raw, dtype=float)))
        if self.bounded:
            return np.clip(u, 0.0, 1.0)
        return np.clip(u, -1e12, 1e12)

    def from_unit(self, u: np.ndarray) -> np.ndarray:
        """Raw values (quantized, clipped into the support) of unit-axis points."""
        if self.bounded:
            u = np.clip(u, 0.0, 1.0)
            t = 2.0 * (0.5 * self.origin + u * self.half_span)
        else:
            t = 2.0 * (0.5 * self.origin + u * self.half_span)
        if self.log:
            raw = np.exp(np.clip(t, _MIN_LOG, _MAX_LOG))
        else:
            raw = np.clip(t, -_MAX_FLOAT, _MAX_FLOAT)
        raw = np.where(np.isnan(raw), self._fallback(), raw)
        if self.integer:
            raw = np.round(raw)
        elif self.q is not None:
            raw = _grid_round_array(raw, self.q)
        return np.clip(raw, self.clip_low, self.clip_high)

    def _fallback(self) -> float:
        centre = 2.0 * (0.5 * self.origin + self.prior_mu * self.half_span)
        return math.exp(min(centre, _MAX_LOG)) if self.log else centre

    def cell(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Unit-axis ends of the grid cells that round to the raw values (quantized only)."""
        q = 1.0 if self.q is None else self.q
        raw = np.asarray(raw, dtype=float)
        below = np.maximum(raw - 0.5 * q, self.value_low)
        above = np.minimum(raw + 0.5 * q, self.value_high)
        if self.log:
            a = np.log(np.maximum(below, 0.0))
            b = np.log(above)
        else:
            a, b = below, above
        ua, ub = self._to_unit_native(a), self._to_unit_native(b)
        if self.bounded:
            ua, ub = np.clip(ua, 0.0, 1.0), np.clip(ub, 0.0, 1.0)
        return ua, ub

    @property
    def quantized(self) -> bool:
        """True when values live on a grid (``q`` or integers)."""
        return self.q is not None


def _grid_round(value: float, q: float) -> float:
    return float(_grid_round_array(np.asarray([value]), q)[0])


def _grid_round_array(values: np.ndarray, q: float) -> np.ndarray:
    steps = np.clip(values / q, -1e300, 1e300)
    return np.clip(np.round(steps) * q, -_MAX_FLOAT, _MAX_FLOAT)


def log_interval_mass(za: np.ndarray, zb: np.ndarray) -> np.ndarray:
    """``log(Phi(zb) - Phi(za))`` for standard-normal ends ``za <= zb``, stable in the tails."""
    # Mirror intervals in the upper tail so the subtraction happens where Phi is small.
    flip = za > 0
    lo = np.where(flip, -zb, za)
    hi = np.where(flip, -za, zb)
    diff = special.ndtr(hi) - special.ndtr(lo)
    out = np.log(np.maximum(diff, 1e-300))
    weak = np.flatnonzero(diff < 1e-9)
    if weak.size:
        lo_w, hi_w = lo.flat[weak], hi.flat[weak]
        log_hi = special.log_ndtr(hi_w)
        delta = special.log_ndtr(lo_w) - log_hi
        careful = log_hi + np.log(-np.expm1(np.minimum(delta, 0.0)))
        width = hi_w - lo_w
        mid = 0.5 * (lo_w + hi_w)
        approx = -0.5 * mid * mid - _LOG_SQRT_2PI + np.log(np.maximum(width, 1e-300))
        careful = np.where(np.isfinite(careful), careful, approx)
        out.flat[weak] = np.maximum(careful, -1e300)
    return out


@attrs.frozen(eq=False)
class ProductMixture:
    """A weighted mixture of product kernels over one group of parameters.

    Numeric axes: ``mus`` and ``sigmas`` of shape ``(K, Dn)``, supports ``lows``/``highs``
    (``(Dn,)``, unit axis, +-inf when unbounded) and which axes are ``quantized``.
    Categorical axes: one ``(K, size)`` probability table each. ``mixture_truncation``
    renormalizes the whole mixture by its mass inside the support (Hyperopt's rejection
    sampler) instead of each kernel separately.
    """

    log_weights: np.ndarray
    mus: np.ndarray
    sigmas: np.ndarray
    lows: np.ndarray
    highs: np.ndarray
    quantized: np.ndarray
    tables: tuple[np.ndarray, ...]
    log_tables: tuple[np.ndarray, ...] = attrs.field(init=False)
    log_mass: np.ndarray = attrs.field(init=False)
    _za: np.ndarray = attrs.field(init=False, repr=False)
    _zb: np.ndarray = attrs.field(init=False, repr=False)

    @log_tables.default
    def _log_tables(self) -> tuple[np.ndarray, ...]:
        return tuple(np.log(np.maximum(t, 1e-300)) for t in self.tables)

    @log_mass.default
    def _mass(self) -> np.ndarray:
        za = (self.lows - self.mus) / self.sigmas
        zb = (self.highs - self.mus) / self.sigmas
        return log_interval_mass(za, zb)

    @_za.default
    def _compute_za(self) -> np.ndarray:
        return special.ndtr((self.lows - self.mus) / self.sigmas)

    @_zb.default
    def _compute_zb(self) -> np.ndarray:
        return special.ndtr((self.highs - self.mus) / self.sigmas)

    @classmethod
    def build(
        cls,
        weights: np.ndarray,
        mus: np.ndarray,
        sigmas: np.ndarray,
        lows: np.ndarray,
        highs: np.ndarray,
        quantized: np.ndarray,
        tables: Sequence[np.ndarray],
        *,
        mixture_truncation: bool = False,
    ) -> ProductMixture:
        """A mixture from kernel ``weights`` (any positive scale) and kernel parameters."""
        sigmas = np.maximum(sigmas, _MIN_SIGMA)
        log_w = np.log(np.maximum(weights, 1e-300))
        mixture = cls(log_w, mus, sigmas, lows, highs, quantized, tuple(tables))
        if mixture_truncation and mus.shape[1]:
            log_w = log_w + mixture.log_mass.sum(axis=1)
            mixture = cls(log_w, mus, sigmas, lows, highs, quantized, tuple(tables))
        log_w = mixture.log_weights - _logsumexp(mixture.log_weights)
        return cls(log_w, mus, sigmas, lows, highs, quantized, tuple(tables))

    @property
    def n_kernels(self) -> int:
        """Number of kernels."""
        return len(self.log_weights)

    def sample(self, rng: np.random.Generator, m: int) -> tuple[np.ndarray, np.ndarray]:
        """``m`` draws: unit-axis points ``(m, Dn)`` and category indices ``(m, Dc)``."""
        weights = np.exp(self.log_weights)
        cumulative = np.cumsum(weights)
        kernel = np.searchsorted(cumulative, rng.random(m) * cumulative[-1], side="right")
        kernel = np.minimum(kernel, self.n_kernels - 1)
        dn = self.mus.shape[1]
        if dn:
            lo = self._za[kernel]
            hi = self._zb[kernel]
            u = lo + rng.random((m, dn)) * (hi - lo)
            u = np.clip(u, 1e-300, 1.0 - 1e-16)
            points = self.mus[kernel] + self.sigmas[kernel] * special.ndtri(u)
            points = np.clip(points, self.lows, self.highs)
            points = np.where(np.isfinite(points), points, self.mus[kernel])
        else:
            points = np.empty((m, 0))
        categories = np.empty((m, len(self.tables)), dtype=np.intp)
        for j, table in enumerate(self.tables):
            rows = np.cumsum(table[kernel], axis=1)
            draw = rng.random(m)[:, None] * rows[:, -1:]
            categories[:, j] = np.minimum((rows <= draw).sum(axis=1), table.shape[1] - 1)
        return points, categories

    def log_pdf(
        self,
        points: np.ndarray,
        cells: tuple[np.ndarray, np.ndarray] | None,
        categories: np.ndarray,
    ) -> np.ndarray:
        """Log density (mass on quantized axes) of ``m`` points under the mixture.

        ``points`` are unit-axis values ``(m, Dn)``; ``cells`` the unit-axis ends of the
        grid cells of the quantized axes (same shape, read on quantized axes only);
        ``categories`` category indices ``(m, Dc)``.
        """
        m = len(categories)
        total = np.zeros((m, self.n_kernels))
        total += self.log_weights
        continuous = np.flatnonzero(~self.quantized)
        if continuous.size:
            x = points[:, continuous]
            mus = self.mus[:, continuous]
            inv_var = 1.0 / (self.sigmas[:, continuous] ** 2)
            quad = (x * x) @ inv_var.T
            quad -= 2.0 * (x @ (mus * inv_var).T)
            quad += (mus * mus * inv_var).sum(axis=1)
            total -= 0.5 * np.maximum(quad, 0.0)
            total -= (
                np.log(self.sigmas[:, continuous]).sum(axis=1)
                + continuous.size * _LOG_SQRT_2PI
                + self.log_mass[:, continuous].sum(axis=1)
            )
        if cells is not None:
            for d in np.flatnonzero(self.quantized):
                mu = self.mus[:, d]
                sigma = self.sigmas[:, d]
                za = (cells[0][:, d, None] - mu) / sigma
                zb = (cells[1][:, d, None] - mu) / sigma
                total += log_interval_mass(za, zb) - self.log_mass[:, d]
        for j, log_table in enumerate(self.log_tables):
            total += log_table[:, categories[:, j]].T
        return _logsumexp(total, axis=1)


def _logsumexp(values: np.ndarray, axis: int | None = None) -> np.ndarray:
    peak = np.max(values, axis=axis, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0.0)
    summed = np.sum(np.exp(values - peak), axis=axis, keepdims=True)
    result = np.log(summed) + peak
    if axis is None:
        return result.reshape(())
    return np.squeeze(result, axis=axis)
