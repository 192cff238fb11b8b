"""`ProductMixture.best_ratio` picks exactly the point the exact log-density ratio picks."""

from __future__ import annotations

import numpy as np
import pytest

from asyncopt import hp
from asyncopt.algorithms import _parzen
from asyncopt.algorithms._parzen import Axes, ProductMixture, categorical_rows
from asyncopt.space.compile import compile_space

from .helpers import prior_mixture


def _rows(rng: np.random.Generator, m: int, n: int) -> np.ndarray:
    # Log terms as densities make them: a peak per row, most terms far below it, a
    # band around -1 (where single precision errs most), some -inf.
    values = -rng.exponential(rng.choice([1.0, 30.0, 300.0]), size=(m, n))
    values[:, : n // 4] = -rng.uniform(0.5, 2.0, size=(m, n // 4))
    values[rng.random((m, n)) < 0.02] = -np.inf
    values += rng.normal(scale=rng.choice([1.0, 1e3]), size=(m, 1))
    return values


@pytest.mark.parametrize("seed", range(6))
def test_the_halves_sum_as_the_split_sum_does(seed: int) -> None:
    rng = np.random.default_rng(seed)
    m, n = int(rng.integers(1, 30)), int(rng.integers(2, 600))
    split = int(rng.integers(1, n))
    values = _rows(rng, m, n)
    with np.errstate(all="ignore"):
        first = _parzen._logsumexp(values[:, :split], axis=1)
        second = _parzen._logsumexp(values[:, split:], axis=1)
        together = _parzen._split_logsumexp(values.copy(), split)
    assert np.array_equal(first, together[0])
    assert np.array_equal(second, together[1])


@pytest.mark.parametrize("seed", range(6))
def test_the_one_pass_pair_sums_as_the_two_calls_do(seed: int) -> None:
    # Long rows included: there `_logsumexp` sums in single precision too, and the pair
    # must give its very numbers.
    rng = np.random.default_rng(50 + seed)
    m = int(rng.choice([1, 7, 24]))
    n = int(rng.integers(20_000 // m - 500, 20_000 // m + 3000)) if seed % 2 else 300
    split = int(rng.integers(1, 60))
    values = _rows(rng, m, split + n)
    with np.errstate(all="ignore"):
        first, second = _parzen._rough_split_logsumexp(values, split)
        assert np.array_equal(first, _parzen._logsumexp(values[:, :split], axis=1))
        single = _parzen._logsumexp(values[:, split:], axis=1, single=True)
    assert np.array_equal(second, single)


@pytest.mark.parametrize("seed", range(8))
def test_single_precision_sums_stay_within_the_bound(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    m, n = 24, int(rng.integers(80, 900))
    values = _rows(rng, m, n)
    values[rng.random((m, n)) < 0.5] = -rng.uniform(0.9, 1.1)
    with np.errstate(all="ignore"):
        exact = _parzen._logsumexp(values, axis=1, single=False)
        rough = _parzen._logsumexp(values, axis=1, single=True)
        error = _parzen._rough_error(n, rough, float(np.abs(rough).max()))
    assert np.all(np.abs(rough - exact) <= error)
    # The bound is not vacuous: it still separates scores a few 1e-5 apart.
    assert error < 1e-4


def _mixtures(n_below: int, n_above: int, seed: int) -> tuple[ProductMixture, ProductMixture, Axes]:
    space = compile_space(
        {
            "a": hp.uniform("a", -5, 5),
            "b": hp.loguniform("b", -9, 0),
            "c": hp.uniform("c", 0, 1),
        }
    )
    axes = Axes([s.dist for s in space.params])
    rng = np.random.default_rng(seed)

    def build(n: int) -> ProductMixture:
        mus = np.asfortranarray(rng.random((n, len(axes))) ** 2)
        prior = np.full(3, 1.0 / 3.0)
        table = categorical_rows(rng.integers(0, 3, n), prior, prior_weight=1.0, rule="optuna")
        return prior_mixture(axes, mus, rng.uniform(0.01, 0.3, n), [table])

    return build(n_below), build(n_above), axes


@pytest.mark.parametrize(("n_below", "n_above"), [(10, 90), (20, 300), (26, 800), (25, 2000)])
@pytest.mark.parametrize("ties", [False, True])
def test_best_ratio_is_the_exact_argmax(
    n_below: int, n_above: int, ties: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"rough": 0}
    bound = _parzen._rough_error

    def counted(n: int, rough: np.ndarray, score: float) -> float:
        calls["rough"] += 1
        return bound(n, rough, score)

    monkeypatch.setattr(_parzen, "_rough_error", counted)
    for seed in range(15):
        below, above, _ = _mixtures(n_below, n_above, seed)
        both = below.joined(above)
        points, categories = below.sample(np.random.default_rng(seed), 24)
        if ties:
            # Repeated candidates: equal scores, where the first must win.
            points[7::8] = points[3]
            categories[7::8] = categories[3]
        with np.errstate(all="ignore"):
            first, second = both.log_pdf(points, None, categories, split=below.n_kernels)
            exact = first - second
            expected = int(np.fmax(exact, -np.inf).argmax())
            assert both.best_ratio(points, None, categories, None, below.n_kernels) == expected
    if 24 * (n_above + 1) >= _parzen._ROUGH_FROM and 24 * (n_above + 1) <= 20_000:
        assert calls["rough"] == 15


@pytest.mark.parametrize("seed", range(4))
def test_best_ratio_ranks_every_point_exactly_when_the_bound_says_nothing(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An infinite bound keeps every point in the race: the exact sums, row by row, must
    # then rank as the exact pair of densities does.
    monkeypatch.setattr(_parzen, "_rough_error", lambda n, rough, score: np.inf)
    below, above, _ = _mixtures(20, 400, seed)
    both = below.joined(above)
    points, categories = below.sample(np.random.default_rng(seed), 24)
    with np.errstate(all="ignore"):
        first, second = both.log_pdf(points, None, categories, split=below.n_kernels)
        expected = int(np.fmax(first - second, -np.inf).argmax())
        assert both.best_ratio(points, None, categories, None, below.n_kernels) == expected
