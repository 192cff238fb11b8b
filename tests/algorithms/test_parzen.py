"""The adaptive Parzen estimators: weights, bandwidths, densities and sampling."""

from __future__ import annotations

import math

import numpy as np
import pytest

from asyncopt import hp
from asyncopt.algorithms._parzen import (
    Axes,
    ProductMixture,
    categorical_kernels,
    gap_bandwidths,
    linear_forgetting_weights,
)
from asyncopt.space.compile import compile_space
from asyncopt.space.distributions import Distribution

from .helpers import prior_mixture


def _dist(expr: object) -> Distribution:
    (spec,) = compile_space({"p": expr}).params
    return spec.dist


def test_linear_forgetting_is_flat_up_to_the_window() -> None:
    assert np.array_equal(linear_forgetting_weights(25, 25), np.ones(25))
    assert np.array_equal(linear_forgetting_weights(3, None), np.ones(3))
    assert len(linear_forgetting_weights(0, 25)) == 0


def test_linear_forgetting_ramps_older_observations() -> None:
    w = linear_forgetting_weights(40, 25)
    assert len(w) == 40
    assert w[0] == pytest.approx(1 / 40)
    assert np.all(np.diff(w) >= 0)
    assert np.array_equal(w[-25:], np.ones(25))
    assert w[14] == pytest.approx(1.0)


def _bw(mus: list[float], rule: str, **kw: object) -> np.ndarray:
    column = np.asarray(mus, dtype=float)[:, None]
    result = gap_bandwidths(
        column,
        prior_mu=np.array([0.5]),
        low=np.array([0.0]),
        high=np.array([1.0]),
        rule=rule,
        **kw,  # type: ignore[arg-type]
    )
    return result[:, 0]


def test_hyperopt_bandwidths_count_the_prior_as_a_neighbour() -> None:
    # Sorted with the prior: 0.1, 0.3, [0.5], 0.9 -> gaps 0.2, 0.2, 0.4; clip floor 1/5.
    assert _bw([0.9, 0.1, 0.3], "hyperopt") == pytest.approx([0.4, 0.2, 0.2])
    assert _bw([0.2], "hyperopt") == pytest.approx([0.5])


def test_optuna_bandwidths_use_observations_and_bounds() -> None:
    assert _bw([0.9, 0.1, 0.3], "optuna") == pytest.approx([0.6, 0.2, 0.6])
    assert _bw([0.2], "optuna") == pytest.approx([0.8])


def test_magic_clip_bounds_widths() -> None:
    crowded = np.linspace(0.4, 0.41, 500)
    widths = _bw(list(crowded), "optuna")
    assert widths.min() == pytest.approx(1 / 100)
    assert widths.max() <= 1.0
    unclipped = _bw(list(crowded), "optuna", magic_clip=False)
    assert unclipped.min() < 1e-4
    few = _bw([0.1, 0.1000001, 0.9], "hyperopt")
    assert few.min() == pytest.approx(1 / 5)


def _mixture(dists: list[Distribution], n: int, seed: int, truncation: bool) -> ProductMixture:
    rng = np.random.default_rng(seed)
    axes = Axes(dists)
    mus = np.column_stack([rng.uniform(axes.low.clip(-2), axes.high.clip(max=2), n)])
    return prior_mixture(axes, mus, rng.uniform(0.2, 1.0, n), truncation=truncation)


@pytest.mark.parametrize("truncation", [False, True])
def test_bounded_density_integrates_to_one(truncation: bool) -> None:
    mixture = _mixture([_dist(hp.uniform("p", -3, 7))], 12, 0, truncation)
    grid = np.linspace(0, 1, 20001)[:, None]
    density = np.exp(mixture.log_pdf(grid, None, np.empty((len(grid), 0), dtype=np.intp)))
    assert np.trapezoid(density, grid[:, 0]) == pytest.approx(1.0, abs=2e-3)


def test_normal_density_integrates_to_one() -> None:
    mixture = _mixture([_dist(hp.lognormal("p", 0, 2))], 7, 1, False)
    grid = np.linspace(-12, 12, 40001)[:, None]
    density = np.exp(mixture.log_pdf(grid, None, np.empty((len(grid), 0), dtype=np.intp)))
    assert np.trapezoid(density, grid[:, 0]) == pytest.approx(1.0, abs=2e-3)


def test_product_density_integrates_to_one() -> None:
    dists = [_dist(hp.uniform("p", 0, 1)), _dist(hp.loguniform("p", -4, 1))]
    rng = np.random.default_rng(3)
    axes = Axes(dists)
    mus = rng.uniform(0, 1, (9, 2))
    mixture = prior_mixture(axes, mus, np.ones(9))
    g = np.linspace(0, 1, 301)
    xx, yy = np.meshgrid(g, g, indexing="ij")
    points = np.column_stack([xx.ravel(), yy.ravel()])
    density = np.exp(mixture.log_pdf(points, None, np.empty((len(points), 0), dtype=np.intp)))
    total = np.trapezoid(np.trapezoid(density.reshape(301, 301), g, axis=1), g)
    assert total == pytest.approx(1.0, abs=5e-3)


@pytest.mark.parametrize(
    "expr",
    [
        hp.quniform("p", -2, 3, 0.5),
        hp.uniformint("p", 1, 7),
        hp.qloguniform("p", math.log(1), math.log(50), 2),
        hp.quniform("p", 0.05, 1, 0.1),
    ],
)
@pytest.mark.parametrize("truncation", [False, True])
def test_quantized_masses_sum_to_one(expr: object, truncation: bool) -> None:
    dist = _dist(expr)
    axes = Axes([dist])
    mixture = _mixture([dist], 6, 2, truncation)
    # Every raw value the axis can produce, once each.
    values = np.unique(axes.from_unit(np.linspace(0, 1, 100001)[:, None])[:, 0])
    raw = values[:, None]
    cells = axes.cells(raw)
    mass = np.exp(mixture.log_pdf(axes.to_unit(raw), cells, np.empty((len(raw), 0), dtype=np.intp)))
    assert mass.sum() == pytest.approx(1.0, abs=1e-6)
    assert all(dist.contains(float(v)) for v in values)


def test_categorical_kernels_rows_are_distributions() -> None:
    prior = np.array([0.1, 0.2, 0.7])
    observed = np.array([0, 2, 2])
    hyper = categorical_kernels(observed, prior, prior_weight=1.0, rule="hyperopt")
    assert np.allclose(hyper.sum(axis=1), 1)
    assert np.array_equal(hyper[:3], np.eye(3)[[0, 2, 2]])
    assert np.array_equal(hyper[3], prior)
    blended = categorical_kernels(observed, prior, prior_weight=1.0, rule="optuna")
    assert np.allclose(blended.sum(axis=1), 1)
    assert np.all(blended > 0)
    assert np.all(blended[:3].argmax(axis=1) == observed)


def test_categorical_mixture_is_pseudo_counts() -> None:
    prior = np.full(4, 0.25)
    observed = np.array([1, 1, 3])
    table = categorical_kernels(observed, prior, prior_weight=1.0, rule="hyperopt")
    # Hyperopt: counts + prior_weight per category, normalized.
    mixture = ProductMixture(
        np.array([1.0, 1.0, 1.0, 4.0]),
        np.empty((4, 0)),
        np.empty((4, 0)),
        np.empty(0),
        np.empty(0),
        np.empty(0, dtype=bool),
        [table],
    )
    p = np.exp(mixture.log_pdf(np.empty((4, 0)), None, np.arange(4)[:, None]))
    assert p == pytest.approx(np.array([1, 3, 1, 2]) / 7)


@pytest.mark.parametrize(
    "expr",
    [
        hp.uniform("p", -1, 1),
        hp.quniform("p", 0.05, 1, 0.1),
        hp.loguniform("p", -5, 2),
        hp.qloguniform("p", 0, 5, 3),
        hp.uniformint("p", -3, 3),
        hp.normal("p", 2, 3),
        hp.qnormal("p", 0, 4, 2),
        hp.lognormal("p", 0, 1),
        hp.qlognormal("p", 1, 2, 0.5),
        hp.uniform("p", 0, 1e-300),
        hp.uniform("p", -1e308, 1e308),
        hp.loguniform("p", -700, 700),
        hp.normal("p", 0, 1e300),
        hp.lognormal("p", 700, 1e3),
    ],
)
def test_samples_stay_in_support_and_on_grid(expr: object) -> None:
    dist = _dist(expr)
    with np.errstate(all="raise", under="ignore"):
        mixture = _mixture([dist], 15, 4, False)
        points, _ = mixture.sample(np.random.default_rng(0), 500)
        raw = Axes([dist]).from_unit(points)[:, 0]
    assert all(dist.contains(float(v)) for v in raw)


def test_samples_follow_the_density() -> None:
    mixture = _mixture([_dist(hp.uniform("p", 0, 1))], 5, 5, False)
    points, _ = mixture.sample(np.random.default_rng(1), 40000)
    counts, edges = np.histogram(points[:, 0], bins=20, range=(0, 1))
    centres = 0.5 * (edges[1:] + edges[:-1])[:, None]
    density = np.exp(mixture.log_pdf(centres, None, np.empty((20, 0), dtype=np.intp)))
    expected = density / density.sum() * len(points)
    assert np.max(np.abs(counts - expected) / np.sqrt(expected + 1)) < 5
