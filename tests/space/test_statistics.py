"""Statistical tests of the priors, with fixed seeds and generous bounds."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np
import pytest
from scipy import stats

from asyncopt import hp
from asyncopt.space import compile_space, sample_assignments

N = 20_000
# With fixed seeds these tests are deterministic; the thresholds only say how far from the
# expected distribution a correct sampler may plausibly land.
P_MIN = 1e-3


def draw(space: Any, seed: int, n: int = N) -> list[dict[str, Any]]:
    return sample_assignments(compile_space(space), np.random.default_rng(seed), n)


def values(param: Any, seed: int, n: int = N) -> np.ndarray:
    label = compile_space(param).labels[0]
    return np.array([a[label] for a in draw(param, seed, n)])


def frequencies(observed: np.ndarray, support: list[Any]) -> np.ndarray:
    counts = Counter(observed.tolist())
    assert set(counts) <= set(support)
    return np.array([counts[v] for v in support]) / len(observed)


def check_categorical(observed: np.ndarray, support: list[Any], expected: list[float]) -> None:
    freq = frequencies(observed, support)
    assert np.max(np.abs(freq - expected)) < 0.02, (freq, expected)
    result = stats.chisquare(freq * len(observed), np.asarray(expected) * len(observed))
    assert result.pvalue > P_MIN


@pytest.mark.parametrize("seed", [0, 1])
def test_choice_is_uniform_over_indices(seed: int) -> None:
    observed = values(hp.choice("c", list("abcde")), seed)
    assert all(type(v) is int for v in observed.tolist())
    check_categorical(observed, [0, 1, 2, 3, 4], [0.2] * 5)


@pytest.mark.parametrize("seed", [0, 1])
def test_pchoice_follows_its_probabilities(seed: int) -> None:
    p = [0.1, 0.2, 0.0, 0.7]
    observed = values(hp.pchoice("p", [(pi, f"o{i}") for i, pi in enumerate(p)]), seed)
    assert 2 not in observed.tolist()
    freq = frequencies(observed, [0, 1, 2, 3])
    assert np.max(np.abs(freq - p)) < 0.02
    nonzero = [0, 1, 3]
    result = stats.chisquare(freq[nonzero] * N, np.asarray(p)[nonzero] * N)
    assert result.pvalue > P_MIN


@pytest.mark.parametrize("seed", [0, 1])
def test_randint_is_uniform_and_excludes_upper(seed: int) -> None:
    check_categorical(values(hp.randint("r", 3, 8), seed), [3, 4, 5, 6, 7], [0.2] * 5)
    check_categorical(values(hp.randint("r", 4), seed), [0, 1, 2, 3], [0.25] * 4)


@pytest.mark.parametrize("seed", [0, 1])
def test_uniformint_gives_both_ends_full_weight(seed: int) -> None:
    # A quniform-based sampler would give 1 and 4 half the weight of 2 and 3.
    observed = values(hp.uniformint("u", 1, 4), seed)
    assert all(type(v) is int for v in observed.tolist())
    check_categorical(observed, [1, 2, 3, 4], [0.25] * 4)


@pytest.mark.parametrize("seed", [0, 1])
def test_loguniform_is_uniform_in_log_space(seed: int) -> None:
    low, high = math.log(1e-4), math.log(1.0)
    observed = values(hp.loguniform("lr", low, high), seed)
    assert observed.min() >= 1e-4
    assert observed.max() <= 1.0
    result = stats.kstest(np.log(observed), stats.uniform(loc=low, scale=high - low).cdf)
    assert result.pvalue > P_MIN
    # Each decade gets a quarter of the draws (a linear sampler would put 90% in the last).
    decades = np.histogram(np.log10(observed), bins=[-4, -3, -2, -1, 0])[0] / N
    assert np.max(np.abs(decades - 0.25)) < 0.02
    # ... and it is far from uniform in the linear space.
    assert stats.kstest(observed, stats.uniform(loc=1e-4, scale=1.0 - 1e-4).cdf).pvalue < 1e-10


@pytest.mark.parametrize("seed", [0, 1])
def test_uniform_normal_and_lognormal_have_their_shapes(seed: int) -> None:
    observed = values(hp.uniform("u", -2, 3), seed)
    assert stats.kstest(observed, stats.uniform(loc=-2, scale=5).cdf).pvalue > P_MIN
    observed = values(hp.normal("n", 1.5, 2), seed)
    assert stats.kstest(observed, stats.norm(loc=1.5, scale=2).cdf).pvalue > P_MIN
    observed = values(hp.lognormal("l", -1, 0.5), seed)
    assert (observed > 0).all()
    assert stats.kstest(np.log(observed), stats.norm(loc=-1, scale=0.5).cdf).pvalue > P_MIN


@pytest.mark.parametrize("seed", [0, 1])
def test_quniform_values_are_on_the_grid_with_rounding_weights(seed: int) -> None:
    observed = values(hp.quniform("q", 0, 10, 2.5), seed)
    grid = [0.0, 2.5, 5.0, 7.5, 10.0]
    assert set(observed.tolist()) <= set(grid)
    # round(U(0, 10) / 2.5) * 2.5: the two ends collect half an interval each.
    check_categorical(observed, grid, [0.125, 0.25, 0.25, 0.25, 0.125])


def test_quniform_with_a_fractional_step_stays_on_the_grid() -> None:
    observed = values(hp.quniform("q", -1, 1, 0.1), 3)
    steps = observed / 0.1
    assert np.allclose(steps, np.round(steps), atol=1e-9)
    assert len(set(np.round(steps).astype(int).tolist())) == 21
    assert observed.min() >= -1 - 1e-12
    assert observed.max() <= 1 + 1e-12


def test_qloguniform_and_qnormal_values_are_on_their_grids() -> None:
    observed = values(hp.qloguniform("q", math.log(1), math.log(1000), 5), 4)
    assert set((observed % 5).tolist()) == {0.0}
    assert observed.min() >= 0
    assert observed.max() <= 1000
    # Still log-uniform underneath: as many draws below 31.6 as above.
    assert abs(np.mean(observed < math.sqrt(1000)) - 0.5) < 0.03
    observed = values(hp.qnormal("q", 0, 10, 3), 5)
    assert set((observed % 3).tolist()) == {0.0}
    assert abs(observed.mean()) < 0.5


def test_conditional_parameters_are_active_as_often_as_their_branch() -> None:
    space = {
        "model": hp.pchoice(
            "model",
            [
                (0.3, {"C": hp.lognormal("C", 0, 1)}),
                (
                    0.7,
                    {
                        "split": hp.choice(
                            "split", ["gini", {"base": hp.uniform("base", 1, 2)}, "log"]
                        )
                    },
                ),
            ],
        )
    }
    assignments = draw(space, 11)
    share = {label: np.mean([label in a for a in assignments]) for label in ("C", "split", "base")}
    assert abs(share["C"] - 0.3) < 0.02
    assert abs(share["split"] - 0.7) < 0.02
    assert abs(share["base"] - 0.7 / 3) < 0.02
    # The child's own distribution is unaffected by how often it is active.
    base = np.array([a["base"] for a in assignments if "base" in a])
    assert stats.kstest(base, stats.uniform(loc=1, scale=1).cdf).pvalue > P_MIN


def test_labels_are_drawn_independently() -> None:
    assignments = draw({"a": hp.uniform("a", 0, 1), "b": hp.uniform("b", 0, 1)}, 12)
    a = np.array([x["a"] for x in assignments])
    b = np.array([x["b"] for x in assignments])
    assert abs(stats.pearsonr(a, b).statistic) < 0.03
