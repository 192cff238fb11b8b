"""The progress bar: correct on a resumed study, one rate, a timeout in whole seconds that
reaches 100 %."""

from __future__ import annotations

import re
from typing import Any

import pytest

import asyncopt as ao
from asyncopt import hp
from asyncopt.progress import TqdmProgress

SPACE = {"x": hp.uniform("x", -1, 1)}


async def quick(params: dict[str, Any]) -> float:
    return float(params["x"] ** 2)


def last_frame(err: str) -> str:
    """The bar as last drawn (tqdm redraws in place with carriage returns)."""
    return [frame for frame in re.split(r"[\r\n]", err) if frame.strip()][-1]


async def test_resumed_study_starts_from_the_trials_already_done(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with ao.open_storage("memory://") as storage:
        await ao.minimize(quick, SPACE, max_evals=6, storage=storage, algo=ao.rand.suggest)
        capsys.readouterr()
        await ao.minimize(
            quick, SPACE, max_evals=10, storage=storage, algo=ao.rand.suggest, progress=True
        )
    err = capsys.readouterr().err
    frames = [frame for frame in re.split(r"[\r\n]", err) if frame.strip()]
    assert "6/10" in frames[0]  # the first drawing already counts the earlier trials
    assert not any(re.search(r"\b[0-5]/10\b", frame) for frame in frames)
    final = last_frame(err)
    assert "10/10" in final
    assert "100%" in final
    # One rate (tqdm's own, in trials per second), no second one in the text.
    assert len(re.findall(r"/s\b", final)) == 1
    assert "trial/s" in final
    assert "best loss: " in final


def test_rate_and_time_left_count_only_this_run(capsys: pytest.CaptureFixture[str]) -> None:
    bar = TqdmProgress(100, None)
    bar.start(90, 0.5)
    for done in range(91, 96):
        bar.update(done, 0.5)
    assert bar._bar.n == 95
    rate = bar._bar.format_dict["rate"]
    elapsed = bar._bar.format_dict["elapsed"]
    # 5 trials in this run, not 95: the rate, and so the time left, is of this run.
    if rate is None:
        n, initial = bar._bar.format_dict["n"], bar._bar.format_dict["initial"]
        assert (n - initial) == 5
    else:
        assert rate <= 5 / max(elapsed, 1e-9) * 1.01
    bar.close()
    assert "95/100" in last_frame(capsys.readouterr().err)


async def test_timeout_in_whole_seconds_reaches_100_percent(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def slowish(params: dict[str, Any]) -> float:
        import anyio

        await anyio.sleep(0.05)
        return float(params["x"] ** 2)

    await ao.minimize(slowish, SPACE, timeout=1.0, algo=ao.rand.suggest, progress=True)
    final = last_frame(capsys.readouterr().err)
    assert "100%" in final
    assert " 1/1 s" in final  # whole seconds, not 0.5818631760000699/4.0
    assert not re.search(r"\d\.\d{4,}", final.split("best loss")[0])
    assert " s/s" not in final  # no rate of seconds per second
    assert re.search(r"\d+ trials \([\d.]+ trials/s\)", final)
