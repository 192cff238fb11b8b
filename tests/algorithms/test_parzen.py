"""The adaptive Parzen estimators: weights, bandwidths, densities and sampling."""

from __future__ import annotations

import math

import numpy as np
import pytest

from asyncopt import hp
from asyncopt.algorithms import _parzen
from asyncopt.algorithms._parzen import (
    Axes,
    Mixture,
    Points,
    categorical_table,
    gap_bandwidths,
    linear_forgetting_weights,
    logsumexp,
)
from asyncopt.space.compile import compile_space
from asyncopt.space.distributions import Distribution

from .helpers import prior_mixture

_CONTINUOUS = np.zeros(1, dtype=bool)
_CONTINUOUS2 = np.zeros(2, dtype=bool)


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


def _mixture(dists: list[Distribution], n: int, seed: int, truncation: bool) -> Mixture:
    rng = np.random.default_rng(seed)
    axes = Axes(dists)
    mus = np.column_stack([rng.uniform(axes.low.clip(-2), axes.high.clip(max=2), n)])
    return prior_mixture(axes, mus, rng.uniform(0.2, 1.0, n), truncation=truncation)


@pytest.mark.parametrize("truncation", [False, True])
def test_bounded_density_integrates_to_one(truncation: bool) -> None:
    mixture = _mixture([_dist(hp.uniform("p", -3, 7))], 12, 0, truncation)
    grid = np.linspace(0, 1, 20001)[:, None]
    density = np.exp(
        mixture.log_pdf(Points(grid, None, np.empty((len(grid), 0), dtype=np.intp), _CONTINUOUS))[0]
    )
    assert np.trapezoid(density, grid[:, 0]) == pytest.approx(1.0, abs=2e-3)


def test_normal_density_integrates_to_one() -> None:
    mixture = _mixture([_dist(hp.lognormal("p", 0, 2))], 7, 1, False)
    grid = np.linspace(-12, 12, 40001)[:, None]
    density = np.exp(
        mixture.log_pdf(Points(grid, None, np.empty((len(grid), 0), dtype=np.intp), _CONTINUOUS))[0]
    )
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
    density = np.exp(
        mixture.log_pdf(
            Points(points, None, np.empty((len(points), 0), dtype=np.intp), _CONTINUOUS2)
        )[0]
    )
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
    no_categories = np.empty((len(raw), 0), dtype=np.intp)
    at = Points(axes.to_unit(raw), cells, no_categories, axes.quantized)
    mass = np.exp(mixture.log_pdf(at)[0])
    assert mass.sum() == pytest.approx(1.0, abs=1e-6)
    assert all(dist.contains(float(v)) for v in values)


def test_categorical_rows_are_distributions() -> None:
    prior = np.array([0.1, 0.2, 0.7])
    observed = np.array([0, 2, 2])
    hyper = categorical_table(observed, prior, 0.0)
    assert np.array_equal(hyper, np.eye(3)[[0, 2, 2]])
    # Optuna's rows: one-hot plus prior_weight / (n + 1) per category (uniform prior).
    blended = categorical_table(np.array([1, 0]), np.full(4, 0.25), 1.0 / 3)
    assert blended[0] == pytest.approx(np.array([1, 4, 1, 1]) / 7)
    assert np.allclose(categorical_table(observed, prior, 0.5).sum(axis=1), 1)


def test_categorical_mixture_is_pseudo_counts() -> None:
    prior = np.full(4, 0.25)
    table = np.vstack([categorical_table(np.array([1, 1, 3]), prior, 0.0), prior])
    # Hyperopt: counts + prior_weight per category, normalized.
    none = np.empty((4, 0))
    mixture = Mixture(np.array([1.0, 1.0, 1.0, 4.0]), none, none, np.empty(0), np.empty(0), [table])
    at = Points(none, None, np.arange(4)[:, None], np.empty(0, dtype=bool))
    p = np.exp(mixture.log_pdf(at)[0])
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
    density = np.exp(
        mixture.log_pdf(Points(centres, None, np.empty((20, 0), dtype=np.intp), _CONTINUOUS))[0]
    )
    expected = density / density.sum() * len(points)
    assert np.max(np.abs(counts - expected) / np.sqrt(expected + 1)) < 5


# -- fast paths against their plain oracles ----------------------------------------------


def test_expanded_terms_match_the_plain_sum() -> None:
    rng = np.random.default_rng(0)
    x, mus = rng.random((24, 6)), rng.random((300, 6))
    sigmas, offset = rng.uniform(0.01, 1.0, (300, 6)), rng.normal(size=300)
    codes = rng.integers(0, 3, 24)
    table = np.log(rng.dirichlet(np.ones(3), 300).T)
    one_hot = [np.eye(3)[codes]]
    every, rows = slice(None), slice(5, 17)
    plain = _parzen._gaussian_log_terms_plain(x, mus, sigmas, offset) + table[codes]
    fast = _parzen._log_terms(x, _parzen._features(x), mus, sigmas, offset, one_hot, [table])
    assert np.allclose(fast(every), plain, rtol=1e-9, atol=1e-6)
    assert np.allclose(fast(rows), plain[rows], rtol=1e-9, atol=1e-6)
    # Far from the narrowest width the plain sum is taken.
    sigmas[0, 0] = 1e-9
    far = _parzen._log_terms(x, _parzen._features(x), mus, sigmas, offset, one_hot, [table])
    plain = _parzen._gaussian_log_terms_plain(x[rows], mus, sigmas, offset) + table[codes[rows]]
    assert np.array_equal(far(rows), plain)


def test_shared_cell_masses_match_the_plain_ones() -> None:
    rng = np.random.default_rng(1)
    mu = rng.integers(0, 10, 500) / 10.0
    sigma = np.where(rng.random(500) < 0.5, 0.01, 0.1)
    a = rng.integers(0, 10, 24) / 10.0 - 0.05
    b = a + 0.1
    ends = np.unique(np.concatenate([a, b]))
    lower, upper = np.searchsorted(ends, a), np.searchsorted(ends, b)
    table, columns = _parzen._cell_log_mass(mu, sigma, ends, lower, upper)
    assert table.shape[1] < len(mu)
    assert np.array_equal(table[:, columns], _parzen._cell_log_mass_plain(mu, sigma, a, b))


def test_distinct_pairs_index_every_pair() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.integers(0, 4, 300) / 4.0, rng.integers(0, 3, 300) / 3.0
    a[:2], b[:2] = np.nan, 0.5
    first, which = _parzen._distinct(a, b)
    assert np.array_equal(a[first][which], a, equal_nan=True)
    assert np.array_equal(b[first][which], b)
    # Every distinct pair once (NaN equals nothing, so each NaN pair is its own).
    assert len(first) == len({(x, y) for x, y in zip(a[2:].tolist(), b[2:].tolist())}) + 2
    # Pairs whose sort keys collide are never merged, and each keeps its own values.
    a = np.array([0.0, _parzen._GOLDEN, 0.0, _parzen._GOLDEN, 0.0])
    b = np.array([1.0, 0.0, 1.0, 0.0, 1.0])
    first, which = _parzen._distinct(a, b)
    assert np.array_equal(a[first][which], a)
    assert np.array_equal(b[first][which], b)
    assert 2 <= len(first) <= 5
    # One key: its distinct values.
    first, which = _parzen._distinct(np.array([3.0, 1.0, 3.0, 2.0]))
    assert sorted(np.array([3.0, 1.0, 3.0, 2.0])[first].tolist()) == [1.0, 2.0, 3.0]
    assert np.array_equal(np.array([3.0, 1.0, 3.0, 2.0])[first][which], [3.0, 1.0, 3.0, 2.0])


def test_segments_are_the_mixtures_evaluated_alone() -> None:
    # l and g side by side in one mixture give each one's own densities and draws.
    space = compile_space({"u": hp.uniform("u", -5, 5), "i": hp.uniformint("i", 1, 9),
                           "c": hp.choice("c", ["a", "b", "c"])})  # fmt: skip
    axes = Axes([s.dist for s in space.params if not s.dist.is_categorical])
    rng = np.random.default_rng(5)
    parts = []
    for k in (7, 200):
        mus, table = rng.random((k, 2)), rng.dirichlet(np.ones(3), k)
        parts.append((rng.random(k), mus, rng.uniform(0.01, 0.5, (k, 2)), table))
    alone = [Mixture(w, m, s, axes.low, axes.high, [t]) for w, m, s, t in parts]
    weights, mus, sigmas, table = (np.concatenate(field) for field in zip(*parts))
    both = Mixture(weights, mus, sigmas, axes.low, axes.high, [table], sizes=[7, 200])
    raw = axes.from_unit(rng.random((30, 2)))
    at = Points(axes.to_unit(raw), axes.cells(raw), rng.integers(0, 3, (30, 1)), axes.quantized)
    densities = both.log_pdf(at)
    for k, mixture in enumerate(alone):
        assert densities[k] == pytest.approx(mixture.log_pdf(at)[0], rel=1e-12, abs=1e-12)
        drawn = both.sample(np.random.default_rng(k), 50, segment=k)
        expected = mixture.sample(np.random.default_rng(k), 50)
        assert all(np.array_equal(x, y) for x, y in zip(drawn, expected))


def test_densities_by_blocks_and_rows_are_the_plain_sum(monkeypatch: pytest.MonkeyPatch) -> None:
    # Points with grid and categorical axes, evaluated a few rows per block, against each
    # kernel's terms summed one point at a time.
    space = compile_space({"u": hp.uniform("u", -5, 5), "i": hp.uniformint("i", 1, 9),
                           "c": hp.choice("c", ["a", "b", "c"])})  # fmt: skip
    dists = [s.dist for s in space.params if not s.dist.is_categorical]
    axes = Axes(dists)
    rng = np.random.default_rng(4)
    mus = rng.random((40, 2))
    table = categorical_table(rng.integers(0, 3, 40), np.full(3, 1 / 3), 0.1)
    mixture = prior_mixture(axes, mus, rng.random(40), [np.vstack([table, np.full(3, 1 / 3)])])
    raw = axes.from_unit(rng.random((50, 2)))
    categories = rng.integers(0, 3, (50, 1))
    at = Points(axes.to_unit(raw), axes.cells(raw), categories, axes.quantized)
    monkeypatch.setattr(_parzen, "_BLOCK", 3 * len(mixture))
    rows = slice(7, 31)
    blocked = mixture.log_pdf(at, rows)[0]
    lower, upper = axes.cells(raw)
    expected = []
    for p in range(rows.start, rows.stop):
        one = Points(axes.to_unit(raw[p : p + 1]), (lower[p : p + 1], upper[p : p + 1]),
                     categories[p : p + 1], axes.quantized)  # fmt: skip
        expected.append(mixture.log_pdf(one)[0, 0])
    assert blocked == pytest.approx(np.array(expected), rel=1e-12, abs=1e-12)


def test_kernel_masses_far_inside_are_exactly_one() -> None:
    rng = np.random.default_rng(2)
    mus = rng.random((400, 3))
    sigmas = rng.choice([0.001, 0.01, 0.3], (400, 3))
    low, high = np.zeros(3), np.ones(3)
    fast = _parzen._kernel_log_mass(mus, sigmas, low, high)
    plain = _parzen._kernel_log_mass_plain((low - mus) / sigmas, (high - mus) / sigmas)
    assert np.array_equal(fast, plain)


@pytest.mark.parametrize("columns", [0, 1, 4, 7, 8, 13])
def test_row_sums_are_numpys_to_the_bit(columns: int) -> None:
    rng = np.random.default_rng(columns)
    values = rng.normal(size=(3000, columns)) * rng.choice([1e-8, 1.0, 1e8], (3000, columns))
    values[rng.random(values.shape) < 0.01] = -np.inf
    fast, plain = _parzen.row_sums(values), values.sum(axis=1)
    assert fast.tobytes() == plain.tobytes()


def test_logsumexp_keeps_empty_rows_and_tiny_terms() -> None:
    values = np.array([[0.0, -1e6, -800.0], [-np.inf, -np.inf, -np.inf], [1.0, np.nan, 0.0]])
    result = logsumexp(values, axis=1)
    assert result[0] == 0.0
    assert result[1] == -np.inf
    assert np.isnan(result[2])
    assert float(logsumexp(np.log(np.array([0.25, 0.75])))) == pytest.approx(0.0)
