"""Densities pinned to the references, on fixed inputs recorded from Optuna 5.0.0 and
Hyperopt 0.3.0 by benchmarks/record_golden.py (neither library is imported here).

Our densities live on unit axes: a continuous axis differs from the reference by the log
of its span (in the reference's own coordinates), a grid axis or a category not at all.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from asyncopt import hp
from asyncopt.algorithms._parzen import (
    Axes,
    Mixture,
    Points,
    categorical_table,
    gap_bandwidths,
    linear_forgetting_weights,
)
from asyncopt.space.compile import compile_space

GOLDEN = json.loads((Path(__file__).parent / "golden_parzen.json").read_text())


def _axes(*exprs: Any) -> Axes:
    compiled = compile_space({f"p{i}": e for i, e in enumerate(exprs)})
    return Axes([spec.dist for spec in compiled.params])


@pytest.mark.parametrize("case", GOLDEN["optuna"], ids=lambda c: f"n={len(c['points']['u'])}")
def test_multivariate_densities_are_optunas(case: dict[str, Any]) -> None:
    # The multivariate g (and l with Optuna's clip) as `tpe` builds it: gap widths among
    # the observations, the prior kernel last, Optuna's blended category rows.
    axes = _axes(hp.uniform("u", -5, 5), hp.loguniform("l", math.log(1e-3), math.log(10)),
                 hp.uniformint("i", 1, 20))  # fmt: skip
    observed, points = case["observations"], case["points"]
    raw = np.column_stack([observed[k] for k in "uli"])
    units = axes.to_unit(raw)
    n = len(units)
    sigmas = gap_bandwidths(units, prior_mu=axes.prior_mu, low=axes.low, high=axes.high,
                            rule="optuna")  # fmt: skip
    prior = np.full(4, 0.25)
    table = categorical_table(np.asarray(observed["c"], dtype=int), prior, 1.0 / (n + 1))
    mixture = Mixture(
        np.append(linear_forgetting_weights(n, 25), 1.0),
        np.vstack([units, axes.prior_mu]),
        np.vstack([sigmas, np.ones(3)]),
        axes.low,
        axes.high,
        [np.vstack([table, prior])],
    )
    at = np.column_stack([points[k] for k in "uli"])
    categories = np.asarray(points["c"], dtype=np.intp)[:, None]
    ours = mixture.log_pdf(Points(axes.to_unit(at), axes.cells(at), categories, axes.quantized))[0]
    spans = math.log(10.0) + math.log(math.log(10.0) - math.log(1e-3))
    assert ours - spans == pytest.approx(case["log_pdf"], rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("case", GOLDEN["hyperopt"], ids=lambda c: f"n={len(c['observed'])}")
def test_hyperopt_kernels_are_adaptive_parzen_normal(case: dict[str, Any]) -> None:
    span = case["high"] - case["low"]
    units = (np.asarray(case["observed"]) - case["low"]) / span
    n = len(units)
    widths = gap_bandwidths(units[:, None], prior_mu=np.array([0.5]), low=np.zeros(1),
                            high=np.ones(1), rule="hyperopt")[:, 0]  # fmt: skip
    weights = np.append(linear_forgetting_weights(n, 25), 1.0)
    mus = np.append(units, 0.5) * span + case["low"]
    sigmas = np.append(widths, 1.0) * span
    # Hyperopt returns the kernels sorted by centre, the prior among them.
    order = np.argsort(mus, kind="stable")
    assert mus[order] == pytest.approx(case["mus"], rel=1e-12, abs=1e-12)
    assert sigmas[order] == pytest.approx(case["sigmas"], rel=1e-12)
    assert (weights / weights.sum())[order] == pytest.approx(case["weights"], rel=1e-12)


@pytest.mark.parametrize("case", GOLDEN["hyperopt"], ids=lambda c: f"n={len(c['observed'])}")
def test_hyperopt_densities_are_gmm1_lpdf(case: dict[str, Any]) -> None:
    low, high, q = case["low"], case["high"], case["q"]
    axes = _axes(hp.uniform("x", low, high) if q is None else hp.quniform("x", low, high, q))
    span = high - low
    mixture = Mixture(
        np.asarray(case["weights"]),
        ((np.asarray(case["mus"]) - low) / span)[:, None],
        (np.asarray(case["sigmas"]) / span)[:, None],
        axes.low,
        axes.high,
        mixture_truncation=True,
    )
    raw = np.asarray(case["points"])[:, None]
    no_categories = np.empty((len(raw), 0), dtype=np.intp)
    ours = mixture.log_pdf(
        Points(axes.to_unit(raw), axes.cells(raw), no_categories, axes.quantized)
    )[0]
    shift = 0.0 if q is not None else math.log(span)
    assert ours - shift == pytest.approx(case["log_pdf"], rel=1e-9, abs=1e-9)
