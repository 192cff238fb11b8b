"""Record the golden densities of Optuna 5.0.0 and Hyperopt 0.3.0 that TPE is pinned to.

Writes tests/algorithms/golden_parzen.json: fixed inputs and what the references make of
them (Optuna's multivariate ``_ParzenEstimator`` densities; Hyperopt's
``adaptive_parzen_normal`` weights and widths and ``GMM1_lpdf`` densities). The tests
(tests/algorithms/test_golden.py) read the file and import neither library.

    python benchmarks/record_golden.py
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

OUT = Path(__file__).resolve().parent.parent / "tests" / "algorithms" / "golden_parzen.json"


def _optuna_case(n: int, seed: int) -> dict[str, Any]:
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )
    from optuna.samplers._tpe.parzen_estimator import (
        _ParzenEstimator,
        _ParzenEstimatorParameters,
    )
    from optuna.samplers._tpe.sampler import default_weights

    rng = np.random.default_rng(seed)
    space = {
        "u": FloatDistribution(-5.0, 5.0),
        "l": FloatDistribution(1e-3, 10.0, log=True),
        "i": IntDistribution(1, 20),
        "c": CategoricalDistribution([0, 1, 2, 3]),
    }

    def draw(m: int) -> dict[str, list[float]]:
        return {
            "u": rng.uniform(-5, 5, m).tolist(),
            "l": np.exp(rng.uniform(math.log(1e-3), math.log(10.0), m)).tolist(),
            "i": rng.integers(1, 21, m).astype(float).tolist(),
            "c": rng.integers(0, 4, m).astype(float).tolist(),
        }

    observations, points = draw(n), draw(30)
    parameters = _ParzenEstimatorParameters(
        prior_weight=1.0,
        consider_magic_clip=True,
        consider_endpoints=False,
        weights=default_weights,
        multivariate=True,
    )
    estimator = _ParzenEstimator(
        {k: np.asarray(v) for k, v in observations.items()}, space, parameters
    )
    log_pdf = estimator.log_pdf({k: np.asarray(v) for k, v in points.items()})
    return {"observations": observations, "points": points, "log_pdf": log_pdf.tolist()}


def _hyperopt_case(n: int, seed: int, q: float | None) -> dict[str, Any]:
    from hyperopt.tpe import GMM1_lpdf, adaptive_parzen_normal

    rng = np.random.default_rng(seed)
    low, high = -5.0, 5.0
    observed = rng.uniform(low, high, n)
    if q is not None:
        observed = np.round(observed / q) * q
    weights, mus, sigmas = adaptive_parzen_normal(observed, 1.0, 0.5 * (low + high), high - low)
    points = rng.uniform(low, high, 30)
    if q is not None:
        points = np.round(points / q) * q
    log_pdf = GMM1_lpdf(points, weights, mus, sigmas, low=low, high=high, q=q)
    return {
        "low": low,
        "high": high,
        "q": q,
        "observed": observed.tolist(),
        "weights": np.asarray(weights).tolist(),
        "mus": np.asarray(mus).tolist(),
        "sigmas": np.asarray(sigmas).tolist(),
        "points": points.tolist(),
        "log_pdf": np.asarray(log_pdf).tolist(),
    }


def main() -> None:
    import hyperopt
    import optuna

    golden = {
        "versions": {"optuna": optuna.__version__, "hyperopt": hyperopt.__version__},
        "optuna": [_optuna_case(n, seed) for seed, n in enumerate((1, 7, 40))],
        "hyperopt": [
            _hyperopt_case(n, 10 + seed, q)
            for seed, (n, q) in enumerate([(1, None), (6, None), (40, None), (12, 0.5)])
        ],
    }
    OUT.write_text(json.dumps(golden, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
