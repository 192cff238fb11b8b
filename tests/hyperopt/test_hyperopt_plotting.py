"""`plotting`: Hyperopt's three plots of a `Trials`, checked through the artists' data."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest

from asyncopt.hyperopt import STATUS_FAIL, STATUS_OK, Trials, fmin, hp, plotting, rand
from asyncopt.hyperopt.pyll import scope


def many_distributions() -> dict[str, Any]:
    a = hp.choice("a", [0, 1, 2])
    b = hp.randint("b", 10)
    bb = hp.randint("bb", 12, 25)
    c = hp.uniform("c", 4, 7)
    d = hp.loguniform("d", -2, 0)
    e = hp.quniform("e", 0, 10, 3)
    f = hp.qloguniform("f", 0, 3, 2)
    g = hp.normal("g", 4, 7)
    h = hp.lognormal("h", -2, 2)
    i = hp.qnormal("i", 0, 10, 2)
    j = hp.qlognormal("j", 0, 2, 1)
    k = hp.pchoice("k", [(0.1, 0), (0.9, 1)])
    z = a + b + bb + c + d + e + f + g + h + i + j + k
    return {"loss": scope.float(scope.log(1e-12 + z**2)), "status": STATUS_OK}


@pytest.fixture(scope="module")
def trials() -> Trials:
    filled = Trials()
    fmin(
        lambda result: result,
        many_distributions(),
        algo=rand.suggest,
        max_evals=200,
        trials=filled,
        rstate=np.random.default_rng(0),
        show_progressbar=False,
    )
    return filled


@pytest.fixture(autouse=True)
def fresh_figure() -> Iterator[None]:
    plt.figure()
    yield
    plt.close("all")


def test_history_plots_each_loss_in_order_and_the_best(trials: Trials) -> None:
    plotting.main_plot_history(trials, do_show=False)
    axes = plt.gca()
    (points,) = axes.collections
    assert points.get_offsets().tolist() == [[i, loss] for i, loss in enumerate(trials.losses())]
    (best,) = axes.get_lines()
    assert best.get_ydata()[0] == pytest.approx(min(trials.losses()))
    assert axes.get_title() == "Loss History"
    assert (axes.get_xlabel(), axes.get_ylabel()) == ("time", "loss")


def test_history_colors_trials_by_status() -> None:
    outcomes: Iterator[dict[str, Any]] = iter(
        [
            {"loss": 1.0, "status": STATUS_OK},
            {"status": STATUS_FAIL},
            {"loss": 0.5, "status": STATUS_OK},
        ]
    )
    small = Trials()
    fmin(
        lambda x: next(outcomes),
        hp.uniform("x", 0, 1),
        algo=rand.suggest,
        max_evals=3,
        trials=small,
        show_progressbar=False,
    )
    plotting.main_plot_history(small, do_show=False, status_colors={"ok": "b", "fail": "r"})
    (points,) = plt.gca().collections
    # Only trials with a loss are drawn, in blue for ok.
    assert points.get_offsets().tolist() == [[0, 1.0], [1, 0.5]]
    assert points.get_facecolors().tolist() == [list(matplotlib.colors.to_rgba("b"))] * 2


def test_histogram_counts_every_loss(trials: Trials) -> None:
    plotting.main_plot_histogram(trials, do_show=False)
    axes = plt.gca()
    heights = [patch.get_height() for patch in axes.patches]
    assert len(heights) == 10
    assert sum(heights) == len(trials)
    assert axes.get_title() == "Loss Histogram"


def test_vars_draws_one_panel_per_hyperparameter(trials: Trials) -> None:
    plotting.main_plot_vars(trials, do_show=False)
    panels = plt.gcf().axes
    labels = sorted(trials.idxs)
    assert [panel.get_title() for panel in panels] == labels
    for panel, label in zip(panels, labels):
        (points,) = panel.collections
        assert points.get_offsets().tolist() == [
            [tid, value] for tid, value in zip(trials.idxs[label], trials.vals[label])
        ]
    logged = {panel.get_title() for panel in panels if panel.get_yscale() == "log"}
    assert logged == {"d", "f", "h", "j"}


def test_vars_arranged_by_loss(trials: Trials) -> None:
    plotting.main_plot_vars(trials, do_show=False, arrange_by_loss=True, colorize_best=5)
    panel = next(p for p in plt.gcf().axes if p.get_title() == "c")
    losses = dict(zip(trials.tids, trials.losses()))
    (points,) = panel.collections
    assert [x for x, _ in points.get_offsets().tolist()] == [losses[t] for t in trials.idxs["c"]]
    greens = [tuple(color) for color in points.get_facecolors() if color[0] == 0 and color[1] > 0]
    assert len(greens) == 5
