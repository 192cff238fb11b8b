"""Stop bad training runs early: SGDClassifier on scikit-learn's digits, pruned by ASHA.

Each trial trains a linear classifier for up to 27 epochs (``partial_fit``) and reports
its validation error after each epoch. Asynchronous successive halving stops a trial
at epochs 1, 3 and 9 unless it ranks in the top third of the trials that got there; the
search (TPE) learns from the pruned trials too. The digits data ships with
scikit-learn: nothing is downloaded.

Run:  python examples/pruning_digits.py [max_evals]
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any

import anyio
import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import SGDClassifier
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

import asyncopt as ao
from asyncopt import hp

EPOCHS = 27

features, labels = load_digits(return_X_y=True)
x_train, x_valid, y_train, y_valid = train_test_split(
    features, labels, test_size=0.3, random_state=0
)
scaler = StandardScaler().fit(x_train)
x_train, x_valid = scaler.transform(x_train), scaler.transform(x_valid)
classes = np.unique(labels)

space = {
    "loss": hp.choice("loss", ["hinge", "log_loss", "modified_huber"]),
    "alpha": hp.loguniform("alpha", math.log(1e-6), math.log(1e-1)),
    "eta0": hp.loguniform("eta0", math.log(1e-5), math.log(1.0)),
}


def validation_error(params: dict[str, Any], trial: Any) -> float:
    """Train epoch by epoch; report the validation error; stop when the pruner says so.

    A plain function runs on a worker thread, where ``trial.report`` and
    ``trial.should_prune`` block while the study records and decides.
    """
    model = SGDClassifier(
        loss=params["loss"],
        alpha=params["alpha"],
        learning_rate="constant",
        eta0=params["eta0"],
        random_state=0,
    )
    error = 1.0
    for epoch in range(1, EPOCHS + 1):
        model.partial_fit(x_train, y_train, classes=classes)
        error = 1.0 - model.score(x_valid, y_valid)
        trial.report(error, step=epoch)
        if epoch < EPOCHS and trial.should_prune():  # the last epoch is done anyway
            raise ao.TrialPruned()
    return error


async def main(max_evals: int) -> None:
    started = time.perf_counter()
    result = await ao.minimize(
        validation_error,
        space,
        algo=ao.tpe.suggest,
        max_evals=max_evals,
        concurrency=4,
        seed=7,
        pruner=ao.SuccessiveHalving(min_resource=1, reduction_factor=3),
    )
    elapsed = time.perf_counter() - started
    pruned = [t for t in result.trials if t.state is ao.TrialState.PRUNED]
    epochs = sum(len(t.intermediate) for t in result.trials)
    print(f"{len(result.trials)} trials in {elapsed:.1f} s, {len(pruned)} pruned")
    print(f"epochs trained: {epochs} of {EPOCHS * len(result.trials)} without pruning")
    print(f"best validation error: {result.best_loss:.4f}")
    print(f"best params: {result.best_params}")


if __name__ == "__main__":
    anyio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 60)
