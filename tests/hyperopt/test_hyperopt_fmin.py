"""`asyncopt.hyperopt.fmin` behaves as Hyperopt 0.3.0's (its fmin tests, in our words)."""

from __future__ import annotations

import contextlib
import pickle
import signal
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest

import asyncopt as ao
from asyncopt.hyperopt import (
    JOB_STATE_CANCEL,
    JOB_STATE_DONE,
    JOB_STATE_ERROR,
    STATUS_FAIL,
    STATUS_OK,
    Trials,
    anneal,
    atpe,
    exceptions,
    fmin,
    hp,
    mix,
    rand,
    tpe,
)
from asyncopt.hyperopt.early_stop import no_progress_loss
from asyncopt.hyperopt.fmin import generate_trials_to_calculate

QUIET: dict[str, Any] = {"show_progressbar": False}


def square(x: float) -> float:
    return (x - 3) ** 2


@pytest.mark.parametrize(
    ("algo", "max_evals"),
    [(rand.suggest, 500), (tpe.suggest, 50), (anneal.suggest, 30)],
    ids=["rand", "tpe", "anneal"],
)
def test_each_algorithm_finds_the_minimum_of_a_parabola(algo: Any, max_evals: int) -> None:
    trials = Trials()
    argmin = fmin(
        square,
        hp.uniform("x", -5, 5),
        algo=algo,
        max_evals=max_evals,
        trials=trials,
        rstate=np.random.default_rng(np.random.PCG64(123)),
        **QUIET,
    )
    assert len(trials) == max_evals
    assert abs(argmin["x"] - 3.0) < 0.25


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_both_event_loops_give_the_same_search(backend: str) -> None:
    trials = Trials()
    argmin = fmin(
        square,
        hp.uniform("x", -5, 5),
        algo=tpe.suggest,
        max_evals=30,
        trials=trials,
        rstate=np.random.default_rng(5),
        backend=backend,
        **QUIET,
    )
    again = fmin(
        square,
        hp.uniform("x", -5, 5),
        algo=tpe.suggest,
        max_evals=30,
        rstate=np.random.default_rng(5),
        **QUIET,
    )
    assert argmin == again
    assert len(trials) == 30


def test_two_hyperparameters_with_one_label_are_refused_before_any_trial() -> None:
    calls = 0

    def fn(xy: list[float]) -> float:
        nonlocal calls
        calls += 1
        return xy[0] ** 2 + xy[1] ** 2

    with pytest.raises(exceptions.DuplicateLabel, match="'x'"):
        fmin(
            fn,
            [hp.uniform("x", -5, 5), hp.uniform("x", -5, 5)],
            algo=rand.suggest,
            max_evals=500,
            trials=Trials(),
            rstate=np.random.default_rng(0),
            **QUIET,
        )
    assert calls == 0


def test_one_hyperparameter_reused_is_one_label() -> None:
    x = hp.uniform("x", -5, 5)
    best = fmin(lambda xy: (xy[0] - 1) ** 2, [x, x], algo=rand.suggest, max_evals=20, **QUIET)
    assert set(best) == {"x"}


def test_rstate_seeds_the_search() -> None:
    def once(seed: int) -> dict[str, Any]:
        trials = Trials()
        argmin = fmin(
            square,
            hp.uniform("x", -5, 5),
            algo=rand.suggest,
            max_evals=1,
            trials=trials,
            rstate=np.random.default_rng(seed),
            **QUIET,
        )
        assert len(trials) == 1
        result: dict[str, Any] = argmin
        return result

    assert once(0) != once(1)
    assert once(0) == once(0)
    # A legacy RandomState is accepted too.
    legacy = fmin(
        square,
        hp.uniform("x", -5, 5),
        algo=rand.suggest,
        max_evals=3,
        rstate=np.random.RandomState(7),
        **QUIET,
    )
    assert legacy == fmin(
        square,
        hp.uniform("x", -5, 5),
        algo=rand.suggest,
        max_evals=3,
        rstate=np.random.RandomState(7),
        **QUIET,
    )


def test_return_argmin_gives_indices_and_false_gives_the_value() -> None:
    space = hp.choice("x", [100, 5, 10])
    kwargs: dict[str, Any] = {"max_evals": 10, "algo": rand.suggest, **QUIET}
    best_value = fmin(
        lambda x: x, space, return_argmin=False, rstate=np.random.default_rng(0), **kwargs
    )
    assert best_value == 5
    best_args = fmin(lambda x: x, space, rstate=np.random.default_rng(0), **kwargs)
    assert best_args == {"x": 1}


class SomeError(Exception):
    pass


def raising(params: Any) -> float:
    raise SomeError("always")


def test_caught_exceptions_are_error_trials_hidden_from_trials() -> None:
    trials = Trials()
    returned = fmin(
        raising,
        hp.uniform("x", 0, 1),
        algo=rand.suggest,
        trials=trials,
        max_evals=2,
        catch_eval_exceptions=True,
        return_argmin=False,
        **QUIET,
    )
    # Hyperopt returns None when no trial succeeded (return_argmin=False).
    assert returned is None
    assert len(trials) == 0
    assert trials.count_by_state_unsynced(JOB_STATE_ERROR) == 2
    assert len(trials.records) == 2
    assert all(record.state is ao.TrialState.FAIL for record in trials.records)
    assert "SomeError" in (trials.records[0].error or "")


def test_uncaught_exception_propagates_after_its_trial_is_recorded() -> None:
    trials = Trials()
    with pytest.raises(SomeError):
        fmin(raising, hp.uniform("x", 0, 1), algo=rand.suggest, trials=trials, max_evals=2, **QUIET)
    assert len(trials) == 0
    assert trials.count_by_state_unsynced([JOB_STATE_ERROR]) == 1


def test_every_trial_failed_with_return_argmin_raises_all_trials_failed() -> None:
    with pytest.raises(exceptions.AllTrialsFailed, match="none of the 3 trials"):
        fmin(
            lambda x: {"status": STATUS_FAIL},
            hp.uniform("x", 0, 1),
            algo=rand.suggest,
            max_evals=3,
            **QUIET,
        )
    # A result asyncopt cannot use fails its trial; the error says what it was.
    with pytest.raises(exceptions.AllTrialsFailed, match="the first error: ObjectiveError"):
        fmin(lambda x: (x, "extra"), hp.uniform("x", 0, 1), algo=rand.suggest, max_evals=2, **QUIET)


def test_status_fail_trials_count_and_are_never_best() -> None:
    trials = Trials()
    argmin = fmin(
        lambda x: {"loss": (x - 3) ** 2, "status": STATUS_OK} if x < 0 else {"status": STATUS_FAIL},
        hp.uniform("x", -5, 5),
        algo=tpe.suggest,
        max_evals=50,
        trials=trials,
        **QUIET,
    )
    assert len(trials) == 50
    assert argmin["x"] < 0
    assert "loss" in trials.best_trial["result"]
    assert trials.best_trial["result"]["loss"] >= 9
    failed = [doc for doc in trials.trials if doc["result"]["status"] == STATUS_FAIL]
    assert failed
    assert all(doc["state"] == JOB_STATE_DONE for doc in failed)


def test_points_to_evaluate_run_first_and_count_toward_max_evals() -> None:
    seen: list[dict[str, float]] = []

    def fn(space: dict[str, float]) -> float:
        seen.append(space)
        return space["x"] ** 2 + space["y"] ** 2

    best = fmin(
        fn,
        {"x": hp.uniform("x", -10, 10), "y": hp.uniform("y", -10, 10)},
        algo=tpe.suggest,
        max_evals=10,
        points_to_evaluate=[{"x": 0.0, "y": 0.0}, {"x": 1.0, "y": 1.0}],
        **QUIET,
    )
    assert best == {"x": 0.0, "y": 0.0}
    assert seen[:2] == [{"x": 0.0, "y": 0.0}, {"x": 1.0, "y": 1.0}]
    assert len(seen) == 10


def test_generated_trials_are_evaluated_first() -> None:
    trials = generate_trials_to_calculate([{"x": 0.5}, {"x": -0.5}])
    assert len(trials) == 2
    assert [doc["misc"]["vals"]["x"] for doc in trials.trials] == [[0.5], [-0.5]]
    fmin(
        lambda x: x**2,
        hp.uniform("x", -1, 1),
        algo=rand.suggest,
        max_evals=5,
        trials=trials,
        **QUIET,
    )
    assert len(trials) == 5
    assert trials.vals["x"][:2] == [0.5, -0.5]


def sleepy(x: int) -> int:
    time.sleep(1.0)
    return x


def test_timeout_lets_the_running_trial_finish_and_count() -> None:
    trials = Trials()
    started = time.monotonic()
    fmin(
        sleepy,
        hp.choice("x", list(range(20))),
        algo=rand.suggest,
        max_evals=10,
        timeout=1.5,
        trials=trials,
        return_argmin=False,
        rstate=np.random.default_rng(0),
        **QUIET,
    )
    took = time.monotonic() - started
    # The second trial starts before the deadline, runs past it and counts; no third.
    assert len(trials) == 2
    assert all(record.state is ao.TrialState.OK for record in trials.records)
    assert 2.0 <= took < 3.0


@pytest.mark.parametrize("wrong", [-1, 0, True, "1", float("nan")])
def test_an_invalid_timeout_is_refused_with_hyperopts_message(wrong: Any) -> None:
    with pytest.raises(ValueError, match="The timeout argument should be None or a positive value"):
        fmin(sleepy, hp.choice("x", [1]), max_evals=10, timeout=wrong, **QUIET)


@pytest.mark.parametrize("wrong", ["a", True, None])
def test_an_invalid_loss_threshold_is_refused_before_any_trial(wrong: Any) -> None:
    calls = 0

    def fn(x: float) -> float:
        nonlocal calls
        calls += 1
        return x

    if wrong is None:
        fmin(fn, hp.uniform("x", 0, 1), max_evals=2, loss_threshold=wrong, **QUIET)
        assert calls == 2
        return
    with pytest.raises(TypeError, match="The loss_threshold argument should be None or a numeric"):
        fmin(fn, hp.uniform("x", 0, 1), max_evals=10, loss_threshold=wrong, **QUIET)
    assert calls == 0


def test_loss_threshold_stops_once_a_loss_is_below_it() -> None:
    trials = Trials()
    fmin(
        lambda x: x**2,
        hp.uniform("x", -10, 10),
        loss_threshold=0.001,
        algo=rand.suggest,
        trials=trials,
        rstate=np.random.default_rng(0),
        **QUIET,
    )
    losses = trials.losses()
    assert trials.best_trial["result"]["loss"] <= 0.001
    # It stopped at the first loss below the threshold.
    assert all(loss > 0.001 for loss in losses[:-1])
    assert losses[-1] < 0.001


def test_early_stop_fn_receives_the_trials_and_its_state() -> None:
    trials = Trials()
    seen: list[tuple[int, tuple[Any, ...]]] = []

    def stop(received: Trials, count: int = 0) -> tuple[bool, list[int]]:
        assert received is trials
        seen.append((len(received), (count,)))
        return count + 1 >= 100, [count + 1]

    fmin(
        lambda x: x,
        hp.uniform("x", -5, 5),
        algo=rand.suggest,
        max_evals=500,
        trials=trials,
        early_stop_fn=stop,
        **QUIET,
    )
    assert len(trials) == 100
    assert seen[:3] == [(1, (0,)), (2, (1,)), (3, (2,))]


def test_early_stop_with_no_progress_loss() -> None:
    trials = generate_trials_to_calculate([{"x": -5.0}])
    fmin(
        lambda x: x,
        hp.uniform("x", -5, 5),
        algo=rand.suggest,
        max_evals=500,
        trials=trials,
        early_stop_fn=no_progress_loss(10),
        **QUIET,
    )
    assert len(trials) == 10


def test_annotated_space() -> None:
    def objective(x: hp.uniform("x", -10, 10), y: hp.uniform("y", -10, 10)) -> float:  # type: ignore[valid-type]
        return float((x * y) ** 2)

    trials = Trials()
    best = fmin(
        objective, space="annotated", algo=tpe.suggest, max_evals=10, trials=trials, **QUIET
    )
    assert len(trials) == 10
    assert set(best) == {"x", "y"}


def test_annotated_space_refuses_a_plain_annotation() -> None:
    def objective(x: hp.uniform("x", -10, 10), y: float) -> float:  # type: ignore[valid-type]
        return float((x * y) ** 2)

    with pytest.raises(exceptions.InvalidAnnotatedParameter, match="'y'"):
        fmin(objective, space="annotated", algo=tpe.suggest, max_evals=10, **QUIET)


# -- algorithms and their options --------------------------------------------------------------


def test_tpe_options_through_partial_map_onto_the_hyperopt_preset() -> None:
    configured = tpe.configure(
        n_startup_jobs=10, gamma=0.2, n_EI_candidates=12, prior_weight=0.5, linear_forgetting=30
    )
    assert configured == ao.tpe.configure(
        preset="hyperopt",
        n_startup=10,
        gamma=0.2,
        n_candidates=12,
        prior_weight=0.5,
        linear_forgetting=30,
    )
    assert tpe.configure() == ao.tpe.configure(preset="hyperopt")
    assert tpe.configure(preset="default") == ao.tpe.configure()
    with pytest.raises(TypeError, match="n_startup_jobs"):
        tpe.configure(n_startup=10)
    with pytest.raises(TypeError, match="give the options of a suggest function by keyword"):
        fmin(square, hp.uniform("x", 0, 1), algo=partial(tpe.suggest, 1), max_evals=1, **QUIET)


def test_a_partial_of_tpe_suggest_drives_the_search() -> None:
    # n_startup_jobs=3: the fourth trial on is proposed by the model, not the prior.
    space = hp.uniform("x", -5, 5)
    runs = [
        fmin(square, space, algo=algo, max_evals=8, rstate=np.random.default_rng(2), **QUIET)
        for algo in (
            partial(tpe.suggest, n_startup_jobs=3),
            partial(tpe.suggest, n_startup_jobs=30),
            rand.suggest,
        )
    ]
    assert runs[0] != runs[1]
    assert runs[1] == runs[2]  # all 8 from the prior, like random search


def test_anneal_and_mix_take_their_options() -> None:
    best = fmin(
        square,
        hp.uniform("x", -5, 5),
        algo=partial(anneal.suggest, shrink_coef=0.3),
        max_evals=30,
        rstate=np.random.default_rng(1),
        **QUIET,
    )
    assert abs(best["x"] - 3) < 1
    mixed = partial(mix.suggest, p_suggest=[(0.2, rand.suggest), (0.8, tpe.suggest)])
    best = fmin(square, hp.uniform("x", -5, 5), algo=mixed, max_evals=30, **QUIET)
    assert abs(best["x"] - 3) < 1
    with pytest.raises(ValueError, match="sum to 1"):
        fmin(
            square,
            hp.uniform("x", -5, 5),
            algo=partial(mix.suggest, p_suggest=[(0.5, rand.suggest)]),
            max_evals=1,
            **QUIET,
        )


def test_atpe_is_refused_naming_tpe() -> None:
    with pytest.raises(NotImplementedError, match=r"tpe\.suggest"):
        fmin(square, hp.uniform("x", 0, 1), algo=atpe.suggest, max_evals=1, **QUIET)


def test_an_asyncopt_suggest_function_is_used_as_is() -> None:
    best = fmin(square, hp.uniform("x", -5, 5), algo=ao.tpe.suggest, max_evals=30, **QUIET)
    assert abs(best["x"] - 3) < 1


def test_hyperopt_style_algorithms_are_refused_clearly() -> None:
    def custom(new_ids: Any, domain: Any, trials: Any, seed: int) -> Any:
        raise AssertionError("never called")

    with pytest.raises(TypeError, match="new_ids, domain, trials, seed"):
        fmin(square, hp.uniform("x", 0, 1), algo=custom, max_evals=1, **QUIET)
    custom.__module__ = "hyperopt.tpe"
    with pytest.raises(TypeError, match=r"import it from asyncopt\.hyperopt"):
        fmin(square, hp.uniform("x", 0, 1), algo=custom, max_evals=1, **QUIET)


def test_pass_expr_memo_ctrl_is_refused() -> None:
    with pytest.raises(TypeError, match="pass_expr_memo_ctrl is not supported"):
        fmin(square, hp.uniform("x", 0, 1), max_evals=1, pass_expr_memo_ctrl=True, **QUIET)


def test_max_queue_len_is_accepted_and_validated() -> None:
    fmin(square, hp.uniform("x", 0, 1), max_evals=3, max_queue_len=4, **QUIET)
    with pytest.raises(ValueError, match="max_queue_len"):
        fmin(square, hp.uniform("x", 0, 1), max_evals=3, max_queue_len=0, **QUIET)


def test_a_stopping_rule_is_required() -> None:
    with pytest.raises(ValueError, match="stopping rule"):
        fmin(square, hp.uniform("x", 0, 1), **QUIET)


# -- resume, storage, concurrency ----------------------------------------------------------------


def test_a_trials_object_resumes_across_calls() -> None:
    trials = Trials()
    for total in (10, 25):
        fmin(
            square,
            hp.uniform("x", -5, 5),
            algo=tpe.suggest,
            max_evals=total,
            trials=trials,
            rstate=np.random.default_rng(4),
            **QUIET,
        )
        assert len(trials) == total
    one_run = Trials()
    fmin(
        square,
        hp.uniform("x", -5, 5),
        algo=tpe.suggest,
        max_evals=25,
        trials=one_run,
        rstate=np.random.default_rng(4),
        **QUIET,
    )
    assert trials.vals == one_run.vals


def test_trials_save_file_keeps_the_study_in_sqlite_and_resumes(tmp_path: Path) -> None:
    path = tmp_path / "trials.hyperopt"
    kwargs: dict[str, Any] = {"algo": rand.suggest, "trials_save_file": str(path), **QUIET}
    fmin(square, hp.uniform("x", -5, 5), max_evals=4, **kwargs)
    assert path.exists()
    fmin(square, hp.uniform("x", -5, 5), max_evals=9, **kwargs)
    stored = Trials(storage=f"sqlite:///{path}")
    assert len(stored) == 9
    assert stored.tids == list(range(9))
    # An empty Trials given with the file moves into it and shows the study.
    trials = Trials()
    fmin(square, hp.uniform("x", -5, 5), max_evals=12, trials=trials, **kwargs)
    assert len(trials) == 12


def test_a_hyperopt_pickle_as_trials_save_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "trials.p"
    path.write_bytes(pickle.dumps({"written by": "hyperopt"}))
    with pytest.raises(ValueError, match="not an SQLite study"):
        fmin(square, hp.uniform("x", 0, 1), max_evals=1, trials_save_file=str(path), **QUIET)
    assert pickle.loads(path.read_bytes()) == {"written by": "hyperopt"}


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_concurrent_trials_in_a_shared_storage(tmp_path: Path, backend: str) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"

    def slow(x: float) -> float:
        time.sleep(0.02)
        return square(x)

    trials = Trials(exp_key="shared", storage=url)
    fmin(
        slow,
        hp.uniform("x", -5, 5),
        algo=tpe.suggest,
        max_evals=24,
        trials=trials,
        concurrency=4,
        backend=backend,
        **QUIET,
    )
    assert len(trials) == 24
    assert len(Trials(exp_key="shared", storage=url)) == 24


# -- inside a running event loop (a notebook) ------------------------------------------------------


def raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_an_interrupt_while_blocking_a_loop_cancels_the_search(backend: str) -> None:
    # As in a notebook: a loop runs, fmin blocks it, the user interrupts the kernel.
    calls: list[float] = []

    def fn(x: float) -> float:
        calls.append(x)
        if len(calls) == 3:
            # A real signal, as a notebook's interrupt sends: it wakes the waiting thread.
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)
        time.sleep(0.05)
        return x

    trials = Trials()

    async def cell() -> None:
        fmin(fn, hp.uniform("x", 0, 1), algo=rand.suggest, max_evals=1000, trials=trials, **QUIET)

    previous = signal.signal(signal.SIGINT, raise_interrupt)
    try:
        with pytest.raises(KeyboardInterrupt):
            anyio.run(cell, backend=backend)
    finally:
        signal.signal(signal.SIGINT, previous)
    # The interrupted trial is recorded as cancelled and no other starts.
    assert len(calls) == 3
    assert trials.count_by_state_unsynced(JOB_STATE_CANCEL) == 1
    assert len(trials) == 2
    time.sleep(0.2)
    assert len(calls) == 3


def test_a_hyperopt_progress_callback_is_driven() -> None:
    events: list[Any] = []

    class Context:
        postfix = ""

        def update(self, n: int) -> None:
            events.append(("update", n, self.postfix))

    @contextlib.contextmanager
    def callback(initial: int, total: int) -> Iterator[Context]:
        events.append(("open", initial, total))
        yield Context()
        events.append(("close",))

    trials = Trials()
    fmin(
        lambda x: x,
        hp.uniform("x", 0, 1),
        algo=rand.suggest,
        max_evals=2,
        trials=trials,
        show_progressbar=callback,
    )
    fmin(
        lambda x: x,
        hp.uniform("x", 0, 1),
        algo=rand.suggest,
        max_evals=3,
        trials=trials,
        show_progressbar=callback,
    )
    assert events[0] == ("open", 0, 2)
    assert [e[1] for e in events[1:3]] == [1, 1]
    assert events[1][2].startswith("best loss: ")
    assert events[3:5] == [("close",), ("open", 2, 3)]
    assert events[5][:2] == ("update", 1)
    assert events[-1] == ("close",)
    fmin(
        lambda x: x,
        hp.uniform("x", 0, 1),
        algo=rand.suggest,
        max_evals=4,
        trials=trials,
        show_progressbar=callback,
        verbose=False,
    )
    assert events[-1] == ("close",)
    assert len(trials) == 4


def test_hyperopt_fmin_seed_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    def run() -> Any:
        return fmin(square, hp.uniform("x", -5, 5), algo=rand.suggest, max_evals=3, **QUIET)

    monkeypatch.setenv("HYPEROPT_FMIN_SEED", "17")
    first, second = run(), run()
    assert first == second
    monkeypatch.setenv("HYPEROPT_FMIN_SEED", "")
    assert run() != run()


def test_an_option_random_search_does_not_take_is_refused_before_any_trial() -> None:
    with pytest.raises(TypeError, match="takes no options"):
        fmin(
            square,
            hp.uniform("x", 0, 1),
            algo=partial(rand.suggest, gamma=0.1),
            max_evals=1,
            **QUIET,
        )
    # Used directly as an asyncopt suggest function, it is random search.
    assert fmin(
        square,
        hp.uniform("x", 0, 1),
        algo=rand.suggest,
        max_evals=3,
        rstate=np.random.default_rng(1),
        **QUIET,
    ) == fmin(
        square,
        hp.uniform("x", 0, 1),
        algo=ao.rand.suggest,
        max_evals=3,
        rstate=np.random.default_rng(1),
        **QUIET,
    )
