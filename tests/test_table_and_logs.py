"""The DataFrame of trials (columns and dtypes) and the log records of finished trials."""

from __future__ import annotations

import logging
import sys
from typing import Any

import numpy as np
import pandas as pd
import pytest

import asyncopt as ao
from asyncopt import hp
from asyncopt._log import log_finished
from asyncopt._table import MissingDependencyError, trials_dataframe

SPACE = {
    "x": hp.uniform("x", -5, 5),
    "layers": hp.uniformint("layers", 1, 4),
    "model": hp.choice("model", ["linear", {"kind": "tree", "depth": hp.randint("depth", 2, 9)}]),
}


async def objective(params: dict[str, Any]) -> dict[str, Any]:
    if params["x"] > 3.0:
        raise RuntimeError("x too large\nsecond line")
    return {"loss": params["x"] ** 2, "accuracy": 0.5, "note": "fine"}


async def test_dataframe_columns_and_dtypes() -> None:
    result = await ao.minimize(objective, SPACE, max_evals=30, algo=ao.rand.suggest, seed=2)
    frame = result.to_dataframe()
    assert list(frame.columns) == [
        "tid", "state", "loss", "last_step", "last_value", "started_at", "finished_at",
        "duration", "worker", "retry_of",
        "params_layers", "params_model", "params_depth", "params_x", "params_model_index",
        "result_accuracy", "result_note", "error",
    ]  # fmt: skip
    dtypes = {name: str(dtype) for name, dtype in frame.dtypes.items()}
    assert dtypes["tid"] == "int64"
    assert dtypes["loss"] == dtypes["duration"] == dtypes["params_x"] == "float64"
    assert dtypes["started_at"].startswith("datetime64")
    assert dtypes["started_at"].endswith("UTC]")
    assert dtypes["params_layers"] == dtypes["params_model_index"] == "Int64"
    assert dtypes["params_depth"] == "Int64"  # randint: an integer, missing where inactive
    assert dtypes["retry_of"] == dtypes["last_step"] == "Int64"
    assert dtypes["last_value"] == "float64"
    assert dtypes["result_accuracy"] == "float64"
    assert dtypes["params_model"] == dtypes["state"] == dtypes["error"] == "object"

    assert len(frame) == 30
    for row, trial in zip(frame.itertuples(), result.trials):
        assert row.tid == trial.tid
        assert row.state == trial.state.name
        assert row.params_x == trial.assignment["x"]
        assert row.params_model_index == trial.assignment["model"]
        assert row.params_model == trial.params["model"]  # the option the objective saw
        if "depth" in trial.assignment:
            assert row.params_depth == trial.assignment["depth"]
        else:
            assert pd.isna(row.params_depth)
        assert row.started_at.timestamp() == pytest.approx(trial.started_at)
        assert row.duration == pytest.approx(trial.duration)
        if trial.state is ao.TrialState.OK:
            assert (row.loss, row.result_accuracy, row.result_note) == (trial.loss, 0.5, "fine")
            assert row.error is None
        else:
            assert pd.isna(row.loss)
            assert row.error == "RuntimeError: x too large"


async def test_study_to_dataframe_and_an_empty_one() -> None:
    async with ao.open_study("memory://", "s", SPACE, seed=1) as study:
        empty = await study.to_dataframe()
        assert len(empty) == 0
        assert list(empty.columns[:3]) == ["tid", "state", "loss"]
        trial = await study.ask()
        assert trial is not None
        await study.tell(trial.tid, {"loss": 1.5, "f1": 0.75})
        frame = await study.to_dataframe()
    assert frame["loss"].tolist() == [1.5]
    assert frame["result_f1"].tolist() == [0.75]
    assert frame["state"].tolist() == ["OK"]


def test_dataframe_without_a_space_holds_raw_values() -> None:
    trial = ao.Trial(study="s", tid=0, state=ao.TrialState.OK, assignment={"m": 1}, loss=1.0)
    frame = trials_dataframe([trial])
    assert frame["params_m"].tolist() == [1]
    assert "params_m_index" not in frame


def test_dataframe_without_pandas_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(MissingDependencyError, match=r"pip install asyncopt\[pandas\]"):
        trials_dataframe([])


async def test_each_finished_trial_is_logged_at_its_level(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="asyncopt")
    result = await ao.minimize(objective, SPACE, max_evals=30, algo=ao.rand.suggest, seed=2)
    records = [r for r in caplog.records if r.name == "asyncopt" and "trial " in r.getMessage()]
    by_tid = {int(r.getMessage().split()[1]): r for r in records}
    assert sorted(by_tid) == list(range(30))
    for trial in result.trials:
        record = by_tid[trial.tid]
        message = record.getMessage()
        if trial.state is ao.TrialState.OK:
            assert record.levelno == logging.INFO
            assert f"finished with loss {trial.loss!r}" in message
            assert '"x": ' in message  # its parameters
        else:
            assert record.levelno == logging.WARNING
            assert "failed: RuntimeError: x too large (parameters " in message
            assert "second line" not in message


async def test_nothing_below_warning_by_default(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="asyncopt")
    await ao.minimize(objective, SPACE, max_evals=10, algo=ao.rand.suggest, seed=2)
    assert all(r.levelno >= logging.WARNING for r in caplog.records)


def test_cancelled_trial_is_logged_at_info(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="asyncopt")
    trial = ao.Trial(
        study="s", tid=4, state=ao.TrialState.CANCELLED, assignment={}, error="cancelled: stop"
    )
    log_finished(trial)
    (record,) = caplog.records
    assert record.levelno == logging.INFO
    assert record.getMessage() == "trial 4 of study 's' was cancelled: cancelled: stop"


def test_fmin_trial_timeout() -> None:
    def slow(params: dict[str, Any]) -> float:
        import time

        time.sleep(0.3 if params["x"] > 0 else 0.0)
        return float(params["x"] ** 2)

    assignment = ao.fmin(
        slow,
        {"x": hp.uniform("x", -1, 1)},
        algo=ao.rand.suggest,
        max_evals=8,
        trial_timeout=0.05,
        show_progressbar=False,
        rstate=np.random.default_rng(0),
    )
    assert assignment["x"] <= 0  # every slow (x > 0) trial failed on its timeout
