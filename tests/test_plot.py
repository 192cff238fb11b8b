"""`asyncopt.plot`: every kind on a normal study, on 0, 1 and only failed trials, and on a
conditional space, checked through the figure's artists and their data."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

import asyncopt as ao
from asyncopt import Trial, TrialState, hp
from asyncopt import plot as ap
from asyncopt.errors import AsyncoptError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# A conditional space: "depth" is active only when model is the tree (option 1).
SPACE = ao.compile_space(
    {
        "lr": hp.loguniform("lr", math.log(1e-4), 0.0),
        "model": hp.choice(
            "model", ["linear", {"kind": "tree", "depth": hp.uniformint("depth", 1, 8)}]
        ),
    }
)


def trial(tid: int, state: TrialState = TrialState.OK, **fields: object) -> Trial:
    return Trial(
        study="s",
        tid=tid,
        state=state,
        assignment=fields.pop("assignment", {"lr": 0.01, "model": 0}),  # type: ignore[arg-type]
        started_at=100.0 + tid,
        finished_at=100.5 + tid,
        worker="host:1:aa",
        **fields,  # type: ignore[arg-type]
    )


def study() -> list[Trial]:
    """tid 0..9: OK losses, FAIL at 3 and 7, CANCELLED at 5, RUNNING at 9; odd tids use the
    tree (depth active), even ones the linear model."""
    losses = {0: 5.0, 1: 7.0, 2: 2.0, 4: 3.0, 6: 1.5, 8: 4.0}
    states = {
        3: TrialState.FAIL,
        7: TrialState.FAIL,
        5: TrialState.CANCELLED,
        9: TrialState.RUNNING,
    }
    trials = []
    for tid in range(10):
        assignment: dict[str, float] = {"lr": 10.0 ** (-4 + 0.4 * tid), "model": tid % 2}
        if tid % 2:
            assignment["depth"] = 1 + tid % 8
        trials.append(
            trial(
                tid,
                states.get(tid, TrialState.OK),
                assignment=assignment,
                loss=losses.get(tid),
                error="ValueError: boom\nTraceback" if tid in (3, 7) else None,
            )
        )
    return trials


def ok_only(trials: list[Trial]) -> list[Trial]:
    return [t for t in trials if t.state is TrialState.OK]


ONE = [trial(0, loss=2.0)]
FAILED = [trial(i, TrialState.FAIL, error="E: x") for i in range(5)]


def panels_of(figure: object) -> list[object]:
    """The slice plot's panels (not its colour bar, not the hidden spare axes)."""
    return [ax for ax in figure.axes if ax.get_visible() and ax.get_title()]  # type: ignore[attr-defined]


CASES = {"empty": [], "one": ONE, "failed": FAILED, "normal": study()}


# -- history -------------------------------------------------------------------------------


def test_history_shows_losses_running_best_and_failures() -> None:
    figure = ap.plot_history(list(reversed(study())), title="my study")
    (ax,) = figure.axes
    assert ax.get_title(loc="left") == "my study"
    losses, failed, cancelled = ax.collections
    assert losses.get_offsets().tolist() == [[0, 5], [1, 7], [2, 2], [4, 3], [6, 1.5], [8, 4]]
    assert np.asarray(failed.get_offsets())[:, 0].tolist() == [3, 7]
    assert np.asarray(cancelled.get_offsets())[:, 0].tolist() == [5]
    (best,) = ax.lines
    assert best.get_xdata().tolist() == [0, 1, 2, 4, 6, 8, 9]
    assert best.get_ydata().tolist() == [5, 5, 2, 2, 1.5, 1.5, 1.5]
    # Every tid is inside the x range, and the legend sits outside the axes.
    assert ax.get_xlim() == (-0.5, 9.5)
    (legend,) = figure.legends
    assert [t.get_text() for t in legend.get_texts()] == [
        "loss",
        "best so far (1.5)",
        "failed (2)",
        "cancelled (1)",
    ]
    assert ax.get_legend() is None


def test_history_log_scale_only_for_positive_losses() -> None:
    assert ap.plot_history(study(), log_scale=True).axes[0].get_yscale() == "log"
    assert ap.plot_history(study()).axes[0].get_yscale() == "linear"
    negative = [*study(), trial(10, loss=-1.0)]
    ax = ap.plot_history(negative, log_scale=True).axes[0]
    assert ax.get_yscale() == "linear"
    assert "needs positive losses" in ax.get_ylabel()


@pytest.mark.parametrize("case", ["empty", "failed"])
def test_history_without_an_ok_trial(case: str) -> None:
    figure = ap.plot_history(CASES[case])
    (ax,) = figure.axes
    (message,) = ax.texts
    assert message.get_text().startswith("no successful trial yet")
    assert not ax.lines
    if case == "failed":
        assert "5 failed" in message.get_text()
        (marks,) = ax.collections
        # All five marks inside the figure: x within the limits, y in axes units.
        xs = np.asarray(marks.get_offsets())[:, 0]
        low, high = ax.get_xlim()
        assert xs.tolist() == [0, 1, 2, 3, 4]
        assert low < xs.min()
        assert xs.max() < high
        assert np.asarray(marks.get_offsets())[:, 1].tolist() == [0.03] * 5


def test_history_of_one_trial() -> None:
    (ax,) = ap.plot_history(ONE).axes
    assert ax.collections[0].get_offsets().tolist() == [[0, 2.0]]
    assert ax.lines[0].get_ydata().tolist() == [2.0, 2.0]


# -- slice ---------------------------------------------------------------------------------


def test_slice_one_panel_per_parameter_active_trials_only() -> None:
    trials = study()
    figure = ap.plot_slice(trials, SPACE)
    panels = panels_of(figure)
    titles = [ax.get_title() for ax in panels]
    assert titles == ["lr", "model", "depth (active in 1 of 6)"]
    ok = ok_only(trials)
    lr, model, depth = (np.asarray(ax.collections[0].get_offsets()) for ax in panels)
    assert lr[:, 0].tolist() == pytest.approx([t.assignment["lr"] for t in ok])
    assert lr[:, 1].tolist() == [t.loss for t in ok]
    assert model[:, 0].tolist() == [t.assignment["model"] for t in ok]
    assert depth.tolist() == [[2, 7.0]]  # only tid 1 is an OK tree
    assert panels[0].get_xscale() == "log"
    assert [t.get_text() for t in panels[1].get_xticklabels()] == ["linear", "kind=tree"]


def test_slice_without_the_space_uses_raw_values() -> None:
    figure = ap.plot_slice(study())
    panels = panels_of(figure)
    assert [ax.get_title() for ax in panels] == [
        "depth (active in 1 of 6)",
        "lr",
        "model",
    ]
    assert panels[1].get_xscale() == "linear"


@pytest.mark.parametrize("case", ["empty", "failed"])
def test_slice_without_an_ok_trial(case: str) -> None:
    (ax,) = ap.plot_slice(CASES[case], SPACE).axes
    assert [t.get_text() for t in ax.texts] == ["no successful trial yet"]


def test_slice_of_one_trial_and_picked_params() -> None:
    figure = ap.plot_slice(ONE, SPACE, params=["lr"])
    panels = panels_of(figure)
    assert len(panels) == 1
    assert panels[0].collections[0].get_offsets().tolist() == [[0.01, 2.0]]
    with pytest.raises(ValueError, match="no parameter 'nope'"):
        ap.plot_slice(ONE, SPACE, params=["nope"])


# -- parallel coordinates ------------------------------------------------------------------


def test_parallel_lines_scaled_per_axis_and_skip_inactive() -> None:
    trials = study()
    figure = ap.plot_parallel(trials, SPACE)
    ax = figure.axes[0]
    (lines,) = ax.collections
    assert [t.get_text() for t in ax.get_xticklabels()] == ["lr", "model", "depth", "loss"]
    segments = lines.get_segments()
    ok = ok_only(trials)
    assert len(segments) == len(ok)
    # Drawn worst first, so the best (tid 6, loss 1.5) is last, on top, and at 0 on the loss axis.
    assert lines.get_array().tolist() == sorted((t.loss for t in ok), reverse=True)
    best = segments[-1]
    assert best[:, 0].tolist() == [0, 1, 2, 3]
    assert best[3, 1] == 0.0
    assert best[2, 1] < 0  # tid 6 is linear: no depth, the line passes below that axis
    assert "inactive" in [t.get_text() for t in ax.texts]
    worst = segments[0]  # tid 1, the tree: loss 7, the top of the loss axis
    assert worst[3, 1] == 1.0
    assert worst[1, 1] == 1.0  # model option 1 of 0..1
    assert worst[2, 1] == 0.5  # its depth is the only one: the middle


@pytest.mark.parametrize("case", ["empty", "failed"])
def test_parallel_without_an_ok_trial(case: str) -> None:
    ax = ap.plot_parallel(CASES[case], SPACE).axes[0]
    assert not ax.collections
    assert [t.get_text() for t in ax.texts] == ["no successful trial yet"]


def test_parallel_of_one_trial() -> None:
    ax = ap.plot_parallel(ONE, SPACE).axes[0]
    (segment,) = ax.collections[0].get_segments()
    assert segment[0, 1] == 0.5  # a single value sits in the middle of its axis


# -- importance ----------------------------------------------------------------------------


def synthetic(n: int = 200, seed: int = 0) -> list[Trial]:
    """The loss depends on lr alone; the model choice is noise."""
    rng = np.random.default_rng(seed)
    trials = []
    for tid in range(n):
        lr = float(np.exp(rng.uniform(math.log(1e-4), 0)))
        model = int(rng.integers(2))
        assignment: dict[str, float] = {"lr": lr, "model": model}
        if model:
            assignment["depth"] = int(rng.integers(1, 9))
        trials.append(trial(tid, assignment=assignment, loss=(math.log10(lr) + 2) ** 2))
    return trials


def test_importances_find_the_parameter_that_matters() -> None:
    scores = ap.param_importances(synthetic(), SPACE)
    assert next(iter(scores)) == "lr"
    assert scores["lr"] > 0.8
    assert scores["model"] < 0.05
    assert scores["depth"] < 0.1
    assert all(0.0 <= value <= 1.0 for value in scores.values())


def test_importance_bars_show_the_scores() -> None:
    trials = synthetic()
    scores = ap.param_importances(trials, SPACE)
    ax = ap.plot_importance(trials, SPACE).axes[0]
    bars = ax.patches
    assert [t.get_text() for t in ax.get_yticklabels()] == list(scores)[::-1]
    assert [bar.get_width() for bar in bars] == pytest.approx(list(scores.values())[::-1])


@pytest.mark.parametrize("case", ["empty", "failed", "one"])
def test_importance_with_too_few_trials(case: str) -> None:
    scores = ap.param_importances(CASES[case], SPACE)
    assert set(scores.values()) <= {0.0}
    ax = ap.plot_importance(CASES[case], SPACE).axes[0]
    if case == "one":
        assert [bar.get_width() for bar in ax.patches] == [0.0, 0.0]
    else:
        assert [t.get_text() for t in ax.texts] == ["no successful trial yet"]


# -- contour -------------------------------------------------------------------------------


def test_contour_of_a_pair() -> None:
    trials = synthetic(60)
    figure = ap.plot_contour(trials, SPACE, params=["lr", "depth"])
    ax = figure.axes[0]
    assert ax.get_xlabel() == "log10(lr)"
    assert ax.get_ylabel() == "depth"
    both = [t for t in trials if "depth" in t.assignment]
    points = ax.collections[-1].get_offsets()
    assert np.asarray(points)[:, 0].tolist() == pytest.approx(
        [math.log10(t.assignment["lr"]) for t in both]
    )
    assert np.asarray(points)[:, 1].tolist() == [t.assignment["depth"] for t in both]
    filled = [c for c in ax.collections if c is not ax.collections[-1]]
    assert filled  # the contour levels
    assert len(figure.axes) == 2  # and their colour bar


def test_contour_picks_the_two_most_important_by_default() -> None:
    trials = synthetic(60)
    ax = ap.plot_contour(trials, SPACE).axes[0]
    top = list(ap.param_importances(trials, SPACE))[:2]
    assert ax.get_title(loc="left") == f"loss over {top[0]} and {top[1]}"


@pytest.mark.parametrize("case", ["empty", "failed"])
def test_contour_without_an_ok_trial(case: str) -> None:
    ax = ap.plot_contour(CASES[case], SPACE).axes[0]
    assert [t.get_text() for t in ax.texts] == ["no successful trial yet"]


def test_contour_with_too_few_points_draws_only_them() -> None:
    figure = ap.plot_contour(study(), SPACE, params=["lr", "depth"])
    ax = figure.axes[0]
    assert len(figure.axes) == 1  # no colour bar: no contours
    assert ax.collections[-1].get_offsets().tolist() == [[pytest.approx(-3.6), 2.0]]
    assert "too few for contours" in ax.texts[0].get_text()
    with pytest.raises(ValueError, match="needs two parameters"):
        ap.plot_contour(study(), SPACE, params=["lr"])


# -- EDF -----------------------------------------------------------------------------------


def test_edf_one_curve_per_study() -> None:
    figure = ap.plot_edf({"a": study(), "b": ONE, "c": FAILED})
    ax = figure.axes[0]
    a, b, c = ax.lines
    assert a.get_xdata().tolist() == [1.5, 2, 3, 4, 5, 7]
    assert a.get_ydata().tolist() == pytest.approx([1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 1])
    assert b.get_xdata().tolist() == [2.0]
    assert c.get_xdata().tolist() == []
    (legend,) = figure.legends
    assert [t.get_text() for t in legend.get_texts()] == [
        "a (6 ok)",
        "b (1 ok)",
        "c (no successful trial)",
    ]


@pytest.mark.parametrize("case", ["empty", "failed"])
def test_edf_without_an_ok_trial(case: str) -> None:
    ax = ap.plot_edf(CASES[case]).axes[0]
    assert [t.get_text() for t in ax.texts] == ["no successful trial yet"]


# -- timeline ------------------------------------------------------------------------------


def test_timeline_bars_by_slot_coloured_by_state() -> None:
    overlapping = [
        trial(0, loss=1.0),  # 100.0-100.5
        trial(1, TrialState.FAIL, error="E"),  # 101.0-101.5
        Trial(study="s", tid=2, state=TrialState.OK, assignment={}, loss=1.0,
              started_at=100.2, finished_at=101.2, worker="host:1:aa"),
        Trial(study="s", tid=3, state=TrialState.RUNNING, assignment={},
              started_at=100.1, worker="other:2:bb"),
        Trial(study="s", tid=4, state=TrialState.QUEUED, assignment={}),
    ]  # fmt: skip
    figure = ap.plot_timeline(overlapping, now=102.0)
    ax = figure.axes[0]
    bars = {
        (round(p.get_x(), 6), round(p.get_width(), 6)): (p.get_y() + p.get_height() / 2, p)
        for p in ax.patches
    }
    assert len(bars) == 4  # the queued trial never started
    rows = [t.get_text() for t in ax.get_yticklabels()]
    assert rows == ["host:1 #0", "host:1 #1", "other:2 #0"]
    assert bars[(0.0, 0.5)][0] == 0  # tid 0 in host's slot 0
    assert bars[(0.2, 1.0)][0] == 1  # tid 2 overlaps it: slot 1
    assert bars[(1.0, 0.5)][0] == 0  # tid 1 reuses slot 0 once free
    assert bars[(0.1, 1.9)][0] == 2  # the running one, drawn up to now
    colours = {
        key: tuple(round(c, 3) for c in bar.get_facecolor()[:3]) for key, (_, bar) in bars.items()
    }
    assert colours[(1.0, 0.5)] != colours[(0.0, 0.5)]  # FAIL is not OK's colour
    assert "slots busy" in ax.texts[0].get_text()


@pytest.mark.parametrize("case", ["empty", "failed", "one"])
def test_timeline_edge_cases(case: str) -> None:
    ax = ap.plot_timeline(CASES[case], now=200.0).axes[0]
    if case == "empty":
        assert [t.get_text() for t in ax.texts] == ["no trial has started yet"]
    else:
        assert len(ax.patches) == len(CASES[case])


def test_intermediate_draws_a_curve_per_reporting_trial_and_marks_the_pruned() -> None:
    trials = [
        trial(0, loss=0.2, intermediate={0: 0.9, 1: 0.5, 2: 0.2}),
        trial(1, TrialState.PRUNED, loss=0.8, intermediate={0: 1.0, 1: 0.8}),
        trial(2, TrialState.FAIL, error="E: x"),  # reported nothing: left out
    ]
    ax = ap.plot_intermediate(trials, log_scale=True).axes[0]
    assert ax.get_title(loc="left") == "2 trials reported values, 1 pruned"
    curves = [(list(line.get_xdata()), list(line.get_ydata())) for line in ax.lines]
    assert curves == [([0, 1, 2], [0.9, 0.5, 0.2]), ([0, 1], [1.0, 0.8])]
    [crosses] = ax.collections
    assert crosses.get_offsets().tolist() == [[1.0, 0.8]]
    assert ax.get_yscale() == "log"
    assert ap.draw("intermediate", {"s": trials}, SPACE).axes[0].get_title(loc="left")


def test_intermediate_without_reports_says_so() -> None:
    ax = ap.plot_intermediate(study()).axes[0]
    assert [t.get_text() for t in ax.texts] == ["no trial reported an intermediate value"]


# -- every kind, every case ----------------------------------------------------------------


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("kind", ap.KINDS)
def test_every_kind_draws_and_saves(kind: str, case: str, tmp_path: Path) -> None:
    figure = ap.draw(kind, {"s": CASES[case]}, SPACE)
    target = tmp_path / f"{kind}.png"
    ap.save_figure(figure, target)
    assert target.read_bytes().startswith(PNG_SIGNATURE)


def test_save_figure_format_from_the_extension(tmp_path: Path) -> None:
    figure = ap.plot_history(study())
    ap.save_figure(figure, tmp_path / "plot.svg")
    assert b"<svg" in (tmp_path / "plot.svg").read_bytes()[:500]
    ap.save_plot(study(), tmp_path / "plot.png")
    data = (tmp_path / "plot.png").read_bytes()
    assert int.from_bytes(data[16:20], "big") == 800  # 8 inches at 100 dpi
    for name, what in (("plot.xyz", "extension .xyz"), ("plot", "no extension")):
        with pytest.raises(ap.PlotFormatError, match=f"{what} is not an image format") as info:
            ap.save_figure(figure, tmp_path / name)
        assert ".png" in str(info.value)
        assert isinstance(info.value, AsyncoptError)
        assert not (tmp_path / name).exists()


def test_missing_matplotlib_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ap.MissingDependencyError, match=r"pip install asyncopt\[plot\]") as info:
        ap.plot_history(study())
    assert isinstance(info.value, AsyncoptError)
    assert isinstance(info.value, ImportError)


def test_plotting_leaves_pyplot_alone() -> None:
    for kind in ap.KINDS:
        ap.draw(kind, {"s": study()}, SPACE)
    if "matplotlib.pyplot" in sys.modules:
        import matplotlib.pyplot as plt

        assert plt.get_fignums() == []


async def test_plots_of_a_real_conditional_study() -> None:
    def objective(params: dict[str, object]) -> float:
        lr = float(params["lr"])  # type: ignore[arg-type]
        if lr > 0.5:
            raise RuntimeError("diverged")
        return (math.log10(lr) + 2) ** 2

    space = {
        "lr": hp.loguniform("lr", math.log(1e-4), 0.0),
        "model": hp.choice("model", ["linear", {"depth": hp.uniformint("depth", 1, 8)}]),
    }
    result = await ao.minimize(
        objective, space, max_evals=30, algo=ao.rand.suggest, seed=3, concurrency=3
    )
    assert result.space is not None
    ok = ok_only(list(result.trials))
    panels = panels_of(ap.plot_slice(result.trials, result.space))
    assert len(panels[0].collections[0].get_offsets()) == len(ok)
    segments = ap.plot_parallel(result.trials, result.space).axes[0].collections[0].get_segments()
    assert len(segments) == len(ok)
    timeline = ap.plot_timeline(result.trials).axes[0]
    assert len(timeline.patches) == len(result.trials)
