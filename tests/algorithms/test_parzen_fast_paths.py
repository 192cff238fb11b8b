"""The fast paths of the Parzen estimators give exactly what the plain computations give."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special

from asyncopt import hp
from asyncopt.algorithms import _parzen
from asyncopt.algorithms._parzen import (
    Axes,
    ProductMixture,
    categorical_kernels,
    categorical_rows,
)
from asyncopt.algorithms.tpe import _smallest
from asyncopt.space.compile import compile_space

from .helpers import prior_mixture


def _grid_kernels(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    # Kernels on a grid axis: few distinct centres, widths mostly at one floor.
    rng = np.random.default_rng(seed)
    mu = rng.integers(0, 20, n) / 20.0
    sigma = np.where(rng.random(n) < 0.8, 0.05, rng.random(n))
    return mu, sigma


@pytest.mark.parametrize("n", [1, 2, 200, 5000])
def test_distinct_kernels_match_a_lexicographic_unique(n: int) -> None:
    mu, sigma = _grid_kernels(n, n)
    unique = np.unique(mu + 1j * sigma)
    d_mu, d_sigma, d_first, d_inverse = _parzen._distinct_kernels(mu, sigma)
    assert len(d_mu) == len(unique)
    # The same partition of the kernels, each group holding one (mu, sigma) pair.
    assert np.array_equal(d_mu[d_inverse], mu)
    assert np.array_equal(d_sigma[d_inverse], sigma)
    assert np.array_equal(mu[d_first], d_mu)
    assert np.array_equal(sigma[d_first], d_sigma)
    assert len(np.unique(d_inverse)) == len(unique)


def test_distinct_kernels_fall_back_when_hashes_collide(monkeypatch: pytest.MonkeyPatch) -> None:
    mu, sigma = _grid_kernels(300, 1)
    # Every pair hashes to one value: the check must notice and take the exact way.
    monkeypatch.setattr(_parzen, "_HASH_MU", 0)
    monkeypatch.setattr(_parzen, "_HASH_SIGMA", 0)
    d_mu, d_sigma, _, d_inverse = _parzen._distinct_kernels(mu, sigma)
    assert len(d_mu) == len(np.unique(mu + 1j * sigma))
    assert np.array_equal(d_mu[d_inverse], mu)
    assert np.array_equal(d_sigma[d_inverse], sigma)


@pytest.mark.parametrize("g", [1, 2, 3, 7, 8, 9, 16, 17, 129, 300])
def test_axis_sum_adds_in_numpys_order(g: int) -> None:
    rng = np.random.default_rng(g)
    terms = rng.normal(size=(g, 5, 7)) * 10.0 ** rng.uniform(-8, 8, size=(g, 5, 7))
    expected = np.ascontiguousarray(np.moveaxis(terms, 0, -1)).sum(axis=-1)
    assert np.array_equal(_parzen._axis_sum(terms), expected)


@pytest.mark.parametrize("rule", ["optuna", "hyperopt"])
@pytest.mark.parametrize(("n", "size"), [(0, 3), (2, 5), (40, 5), (300, 64), (10, 100)])
def test_categorical_rows_factor_the_kernel_table(rule: str, n: int, size: int) -> None:
    rng = np.random.default_rng(n + size)
    prior = rng.random(size)
    prior /= prior.sum()
    observed = rng.integers(0, size, n)
    table = categorical_kernels(observed, prior, prior_weight=1.0, rule=rule)
    rows, codes = categorical_rows(observed, prior, prior_weight=1.0, rule=rule)
    assert np.array_equal(rows if codes is None else rows[codes], table)


@pytest.mark.parametrize("n", [0, 1, 7, 100, 3000])
def test_smallest_is_the_head_of_a_stable_sort(n: int) -> None:
    rng = np.random.default_rng(n)
    losses = rng.integers(0, 4, n).astype(float)
    losses[rng.random(n) < 0.2] = np.nan
    losses[rng.random(n) < 0.1] = -0.0
    for count in {0, 1, n // 3, n - 1, n, n + 1}:
        expected = np.zeros(n, dtype=bool)
        expected[np.argsort(losses, kind="stable")[: max(count, 0)]] = True
        assert np.array_equal(_smallest(losses, count), expected)


def _mixed_mixtures(n_below: int, n_above: int) -> tuple[ProductMixture, ProductMixture, Axes]:
    space = compile_space(
        {
            "u": hp.uniform("u", -5, 5),
            "l": hp.loguniform("l", -8, 0),
            "i": hp.uniformint("i", 1, 30),
            "q": hp.quniform("q", 0, 10, 0.5),
            "c": hp.choice("c", list(range(4))),
        }
    )
    numeric = [s.dist for s in space.params if not s.dist.is_categorical]
    axes = Axes(numeric)
    rng = np.random.default_rng(n_below * 1000 + n_above)

    def build(n: int) -> ProductMixture:
        raw = axes.from_unit(rng.random((n, len(axes))))
        mus = np.asfortranarray(axes.to_unit(raw))
        prior = np.full(4, 0.25)
        table = categorical_rows(rng.integers(0, 4, n), prior, prior_weight=1.0, rule="optuna")
        return prior_mixture(axes, mus, rng.uniform(0.2, 1.0, n), [table])

    return build(n_below), build(n_above), axes


@pytest.mark.parametrize(("n_below", "n_above"), [(5, 40), (10, 300), (25, 3000)])
def test_log_ratio_is_the_difference_of_the_two_densities(n_below: int, n_above: int) -> None:
    below, above, axes = _mixed_mixtures(n_below, n_above)
    points, categories = below.sample(np.random.default_rng(0), 24)
    raw = axes.from_unit(points)
    cells = axes.cells(raw)
    with np.errstate(all="ignore"):
        ratio = below.log_ratio(above, points, cells, categories)
        apart = below.log_pdf(points, cells, categories) - above.log_pdf(points, cells, categories)
    assert np.all(np.isfinite(ratio))
    assert ratio == pytest.approx(apart, rel=1e-9, abs=1e-9)


def test_reused_buffers_do_not_leak_between_evaluations() -> None:
    small_below, small_above, axes = _mixed_mixtures(5, 40)
    big_below, big_above, _ = _mixed_mixtures(25, 3000)
    points, categories = small_below.sample(np.random.default_rng(1), 24)
    cells = axes.cells(axes.from_unit(points))
    with np.errstate(all="ignore"):
        first = small_below.log_ratio(small_above, points, cells, categories)
        big_below.log_ratio(big_above, points, cells, categories)
        again = small_below.log_ratio(small_above, points, cells, categories)
    assert np.array_equal(first, again)


def _integer_mixtures(n_below: int, n_above: int) -> tuple[ProductMixture, ProductMixture, Axes]:
    # Two uniformint axes (one of them signed) among continuous ones: the lattice applies.
    space = compile_space(
        {
            "u": hp.uniform("u", -5, 5),
            "i": hp.uniformint("i", 1, 30),
            "l": hp.loguniform("l", -8, 0),
            "j": hp.uniformint("j", -40, 7),
        }
    )
    axes = Axes([s.dist for s in space.params])
    rng = np.random.default_rng(n_below * 1000 + n_above)

    def build(n: int) -> ProductMixture:
        mus = np.asfortranarray(axes.to_unit(axes.from_unit(rng.random((n, len(axes))))))
        return prior_mixture(axes, mus, rng.uniform(0.2, 1.0, n))

    return build(n_below), build(n_above), axes


@pytest.mark.parametrize(("n_below", "n_above"), [(1, 3), (5, 40), (10, 300), (25, 3000)])
def test_lattice_ends_score_exactly_as_cells(n_below: int, n_above: int) -> None:
    below, above, axes = _integer_mixtures(n_below, n_above)
    points, categories = below.sample(np.random.default_rng(2), 24)
    raw = axes.from_unit(points, inside=True)
    ends = axes.grid_ends(raw)
    assert ends is not None
    cells = axes.cells(raw)
    grid = np.flatnonzero(axes.quantized)
    sorted_ends = _parzen.GridEnds.of_cells(cells, grid)
    assert np.array_equal(ends.ends, sorted_ends.ends)
    assert np.array_equal(ends.axis, sorted_ends.axis)
    assert np.array_equal(ends.where, sorted_ends.where)
    with np.errstate(all="ignore"):
        by_lattice = below.log_ratio(above, points, ends, categories)
        by_cells = below.log_ratio(above, points, cells, categories)
    assert np.all(np.isfinite(by_lattice))
    assert np.array_equal(by_lattice, by_cells)


@pytest.mark.parametrize(
    "extra",
    [
        hp.normal("n", 0, 1),  # unbounded: its cells may be fine
        hp.uniform("wide", 0, 1e7),  # a raw unit is below 1e-6 of its prior
        hp.quniform("q", 0, 10, 0.5),  # a grid that is not an integer lattice
    ],
)
def test_lattice_is_declined_where_it_would_not_be_exact(extra: object) -> None:
    space = compile_space({"i": hp.uniformint("i", 1, 30), "x": extra})
    axes = Axes([s.dist for s in space.params])
    raw = axes.from_unit(np.random.default_rng(0).random((5, len(axes))))
    assert axes.grid_ends(raw) is None


def test_tail_skipping_normal_cdf_is_scipys() -> None:
    rng = np.random.default_rng(3)
    z = np.concatenate(
        [
            rng.normal(0.0, 30.0, 5000),
            np.linspace(-40.0, -36.0, 4001),
            np.linspace(7.0, 10.0, 2990),
            [np.nan, np.inf, -np.inf, -1e308, 1e308, 0.0, -0.0],
        ]
    ).reshape(-1, 7)
    with np.errstate(all="raise", under="ignore"):
        assert np.array_equal(_parzen._ndtr(z), special.ndtr(z), equal_nan=True)


@pytest.mark.parametrize("flat", [1, 10, 25, 100])
def test_forgetting_ramp_is_numpys_linspace(flat: int) -> None:
    for n in [*range(flat + 1, flat + 300), 9_999, 123_457]:
        expected = np.concatenate([np.linspace(1.0 / n, 1.0, num=n - flat), np.ones(flat)])
        assert np.array_equal(_parzen.linear_forgetting_weights(n, flat), expected)
        with_prior = _parzen.linear_forgetting_weights(n, flat, 2.5)
        assert np.array_equal(with_prior, np.append(expected, 2.5))


@pytest.mark.parametrize("k", [20, 300, 1000])
def test_kernel_masses_skip_only_exact_ones(k: int) -> None:
    rng = np.random.default_rng(k)
    mus = rng.random((k, 4))
    sigmas = np.exp(rng.uniform(np.log(1e-3), np.log(2.0), (k, 4)))
    mus[3, 1] = np.nan
    lows, highs = np.zeros(4), np.ones(4)
    with np.errstate(all="ignore"):
        plain = np.log(special.ndtr((highs - mus) / sigmas) - special.ndtr((lows - mus) / sigmas))
        fast = _parzen._kernel_log_mass(mus, sigmas, lows, highs)
    assert np.array_equal(fast, plain, equal_nan=True)


def test_lattice_leaves_nan_points_to_cells() -> None:
    space = compile_space({"i": hp.uniformint("i", 1, 30), "u": hp.uniform("u", 0, 1)})
    axes = Axes([s.dist for s in space.params])
    raw = np.array([[3.0, 0.5], [np.nan, 0.25]])
    with np.errstate(all="raise", under="ignore"):
        assert axes.grid_ends(raw) is None
        assert axes.grid_ends(raw[:1]) is not None
