"""`asyncopt.plot`: the loss-per-trial figure and its PNG file."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from asyncopt import Trial, TrialState
from asyncopt.errors import AsyncoptError
from asyncopt.plot import MissingDependencyError, plot_trials, save_plot

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def make_trials() -> list[Trial]:
    """tid 0..9: losses with a FAIL at 3 and 7, a CANCELLED at 5, a RUNNING at 9."""
    losses = {0: 5.0, 1: 7.0, 2: 2.0, 4: 3.0, 6: 1.5, 8: 4.0}
    states = {3: TrialState.FAIL, 7: TrialState.FAIL, 5: TrialState.CANCELLED}
    trials = []
    for tid in range(10):
        if tid in losses:
            state = TrialState.OK
        elif tid == 9:
            state = TrialState.RUNNING
        else:
            state = states[tid]
        trials.append(
            Trial(
                study="s",
                tid=tid,
                state=state,
                assignment={"x": float(tid)},
                loss=losses.get(tid),
                error="ValueError: boom" if state is TrialState.FAIL else None,
            )
        )
    return trials


def test_figure_shows_losses_running_best_and_failures() -> None:
    trials = make_trials()
    figure = plot_trials(list(reversed(trials)), title="my study")
    (ax,) = figure.axes
    assert ax.get_title() == "my study"
    assert ax.get_xlabel() == "trial (tid)"
    assert ax.get_ylabel() == "loss"

    losses, failed, cancelled = ax.collections
    assert losses.get_offsets().tolist() == [
        [0, 5.0],
        [1, 7.0],
        [2, 2.0],
        [4, 3.0],
        [6, 1.5],
        [8, 4.0],
    ]
    assert np.asarray(failed.get_offsets())[:, 0].tolist() == [3, 7]
    assert np.asarray(cancelled.get_offsets())[:, 0].tolist() == [5]

    (best,) = ax.lines
    assert best.get_xdata().tolist() == [0, 1, 2, 4, 6, 8, 9]
    assert best.get_ydata().tolist() == [5.0, 5.0, 2.0, 2.0, 1.5, 1.5, 1.5]
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert "best so far (1.5)" in labels
    assert "failed (2)" in labels
    assert "cancelled (1)" in labels


def test_log_scale_only_for_positive_losses() -> None:
    trials = make_trials()
    assert plot_trials(trials, log_scale=True).axes[0].get_yscale() == "log"
    assert plot_trials(trials).axes[0].get_yscale() == "linear"
    negative = [*trials, Trial(study="s", tid=10, state=TrialState.OK, assignment={}, loss=-1.0)]
    assert plot_trials(negative, log_scale=True).axes[0].get_yscale() == "linear"


def test_no_successful_trial() -> None:
    failed = [Trial(study="s", tid=0, state=TrialState.FAIL, assignment={}, error="E: x")]
    for trials in ([], failed):
        (ax,) = plot_trials(trials).axes
        assert [t.get_text() for t in ax.texts] == ["no successful trial yet"]
        assert not ax.lines


def test_save_plot_writes_png_and_svg(tmp_path: Path) -> None:
    png = tmp_path / "plot.png"
    save_plot(make_trials(), png)
    data = png.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert data[12:16] == b"IHDR"
    assert int.from_bytes(data[16:20], "big") == 800  # 8 inches at 100 dpi
    assert int.from_bytes(data[20:24], "big") == 450

    svg = tmp_path / "plot.svg"
    save_plot(make_trials(), str(svg), title="svg")
    assert b"<svg" in svg.read_bytes()[:500]


def test_missing_matplotlib_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(MissingDependencyError, match=r"pip install asyncopt\[plot\]") as info:
        plot_trials(make_trials())
    assert isinstance(info.value, AsyncoptError)
    assert isinstance(info.value, ImportError)


def test_plotting_leaves_pyplot_alone() -> None:
    plot_trials(make_trials())
    assert "matplotlib.pyplot" not in sys.modules or not _pyplot_figures()


def _pyplot_figures() -> list[int]:
    import matplotlib.pyplot as plt

    return list(plt.get_fignums())
