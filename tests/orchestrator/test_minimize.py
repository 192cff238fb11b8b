"""minimize: concurrency, budget, failures, stopping rules, cancellation, resume."""

from __future__ import annotations

import itertools
import math
import time
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import asyncopt as ao
from asyncopt import hp
from asyncopt.storage.memory import MemoryStorage

SPACE = {
    "x": hp.uniform("x", -5, 5),
    "branch": hp.choice("branch", [{"kind": "a"}, {"kind": "b", "y": hp.uniform("y", 0, 1)}]),
}


async def quadratic(params: dict[str, Any]) -> float:
    await anyio.lowlevel.checkpoint()
    return float(params["x"] ** 2)


async def test_peak_concurrency_equals_limit() -> None:
    in_flight = peak = 0

    async def objective(params: dict[str, Any]) -> float:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await anyio.sleep(0.01)
        in_flight -= 1
        return float(params["x"])

    result = await ao.minimize(
        objective, SPACE, algo=ao.rand.suggest, max_evals=60, concurrency=7, seed=1
    )
    assert peak == 7
    assert len(result.trials) == 60


async def test_budget_gives_dense_tids_and_counts_failures() -> None:
    calls = 0

    async def objective(params: dict[str, Any]) -> float:
        nonlocal calls
        calls += 1
        if calls % 3 == 0:
            raise RuntimeError("boom")
        return float(params["x"])

    result = await ao.minimize(
        objective, SPACE, algo=ao.rand.suggest, max_evals=30, concurrency=4, seed=2
    )
    assert [t.tid for t in result.trials] == list(range(30))
    assert calls == 30
    states = [t.state for t in result.trials]
    assert states.count(ao.TrialState.FAIL) == 10
    assert states.count(ao.TrialState.OK) == 20


async def test_points_to_evaluate_run_first_and_count() -> None:
    seen: list[float] = []

    async def objective(params: dict[str, Any]) -> float:
        seen.append(params["x"])
        return float(params["x"])

    points = [{"x": 1.5, "branch": 0}, {"x": -2.0, "branch": 1, "y": 0.5}]
    result = await ao.minimize(
        objective,
        SPACE,
        algo=ao.rand.suggest,
        max_evals=5,
        seed=3,
        points_to_evaluate=points,
    )
    assert len(result.trials) == 5
    assert seen[:2] == [1.5, -2.0]
    assert dict(result.trials[1].assignment) == points[1]
    assert result.trials[1].params == {"x": -2.0, "branch": {"kind": "b", "y": 0.5}}


async def test_points_to_evaluate_are_validated() -> None:
    with pytest.raises(ao.SpaceError, match="'y'"):
        await ao.minimize(
            quadratic,
            SPACE,
            max_evals=3,
            points_to_evaluate=[{"x": 1.0, "branch": 1}],
        )


@pytest.mark.parametrize(
    ("returned", "fragment"),
    [
        (math.nan, "non-finite"),
        (math.inf, "non-finite"),
        ({"loss": math.nan}, "not finite"),
        ({"status": "ok"}, "no 'loss'"),
        ({"loss": "low"}, "not a number"),
        ({"loss": 1.0, "status": "great"}, "status"),
        ("0.5", "expected a number"),
        (None, "expected a number"),
        ({"loss": 1.0, "model": object()}, "JSON"),
    ],
)
async def test_bad_results_become_failed_trials(returned: Any, fragment: str) -> None:
    async def objective(params: dict[str, Any]) -> Any:
        return returned

    result = await ao.minimize(objective, SPACE, algo=ao.rand.suggest, max_evals=2, seed=4)
    assert [t.state for t in result.trials] == [ao.TrialState.FAIL] * 2
    assert result.trials[0].error is not None
    assert fragment in result.trials[0].error
    with pytest.raises(ao.AllTrialsFailed):
        _ = result.best_trial


async def test_result_mapping_extras_and_fail_status() -> None:
    async def objective(params: dict[str, Any]) -> Any:
        if params["x"] > 0:
            return {"status": "fail", "error": "diverged"}
        return {"loss": -params["x"], "accuracy": 0.9, "tags": ["a"]}

    result = await ao.minimize(objective, SPACE, algo=ao.rand.suggest, max_evals=20, seed=5)
    ok = [t for t in result.trials if t.state is ao.TrialState.OK]
    failed = [t for t in result.trials if t.state is ao.TrialState.FAIL]
    assert ok
    assert failed
    assert ok[0].result is not None
    assert ok[0].result["accuracy"] == 0.9
    assert ok[0].result["tags"] == ["a"]
    assert failed[0].error == "diverged"
    assert failed[0].loss is None


async def test_exception_is_recorded_with_traceback() -> None:
    async def objective(params: dict[str, Any]) -> float:
        raise ValueError("bad learning rate")

    result = await ao.minimize(objective, SPACE, algo=ao.rand.suggest, max_evals=1, seed=6)
    error = result.trials[0].error
    assert error is not None
    assert error.startswith("ValueError: bad learning rate")
    assert "Traceback" in error


async def test_exception_outside_catch_propagates_after_recording() -> None:
    storage = MemoryStorage()

    class Fatal(Exception):
        pass

    async def objective(params: dict[str, Any]) -> float:
        raise Fatal("stop everything")

    with pytest.raises(Fatal):
        await ao.minimize(
            objective,
            SPACE,
            algo=ao.rand.suggest,
            max_evals=5,
            storage=storage,
            catch=(KeyError,),
            seed=7,
        )
    trials = await storage.trials_since("default")
    assert trials
    assert trials[0].state is ao.TrialState.FAIL
    assert "Fatal: stop everything" in (trials[0].error or "")
    assert all(t.state is not ao.TrialState.RUNNING for t in trials)


async def test_timeout_returns_near_deadline_and_cancels_running() -> None:
    async def objective(params: dict[str, Any]) -> float:
        await anyio.sleep(10)
        return 0.0

    started = time.monotonic()
    result = await ao.minimize(
        objective, SPACE, algo=ao.rand.suggest, max_evals=100, concurrency=3, timeout=0.3
    )
    elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 2.0
    # The three running and the three taken one batch ahead.
    assert len(result.trials) == 6
    assert all(t.state is ao.TrialState.CANCELLED for t in result.trials)


async def test_trial_timeout_fails_only_slow_trials() -> None:
    async def objective(params: dict[str, Any]) -> float:
        await anyio.sleep(1.0 if params["x"] > 0 else 0)
        return float(params["x"])

    result = await ao.minimize(
        objective,
        SPACE,
        algo=ao.rand.suggest,
        max_evals=12,
        concurrency=12,
        trial_timeout=0.2,
        seed=8,
    )
    for trial in result.trials:
        if trial.assignment["x"] > 0:
            assert trial.state is ao.TrialState.FAIL
            assert "trial_timeout" in (trial.error or "")
        else:
            assert trial.state is ao.TrialState.OK


async def test_sync_objective_trial_timeout() -> None:
    def objective(params: dict[str, Any]) -> float:
        time.sleep(0.5 if params["x"] > 0 else 0)
        return float(params["x"])

    result = await ao.minimize(
        objective,
        SPACE,
        algo=ao.rand.suggest,
        max_evals=4,
        concurrency=4,
        trial_timeout=0.1,
        seed=9,
    )
    slow = [t for t in result.trials if t.assignment["x"] > 0]
    assert all(t.state is ao.TrialState.FAIL for t in slow)


async def test_more_slots_than_trials_ends_with_every_trial_recorded() -> None:
    # The slots left without a trial wait for one; the search still ends once the
    # budget is spent.
    with anyio.fail_after(10):
        result = await ao.minimize(
            quadratic, SPACE, algo=ao.rand.suggest, max_evals=3, concurrency=8, seed=2
        )
    assert [t.state for t in result.trials] == [ao.TrialState.OK] * 3


async def test_a_sequential_search_runs_its_trials_one_after_another_in_one_task() -> None:
    tasks: set[Any] = set()
    in_flight = peak = 0

    async def objective(params: dict[str, Any]) -> float:
        nonlocal in_flight, peak
        tasks.add(anyio.get_current_task().id)
        in_flight += 1
        peak = max(peak, in_flight)
        await anyio.lowlevel.checkpoint()
        in_flight -= 1
        return float(params["x"] ** 2)

    result = await ao.minimize(objective, SPACE, algo=ao.rand.suggest, max_evals=25, seed=4)
    assert len(result.trials) == 25
    assert peak == 1
    assert len(tasks) == 1


async def test_loss_threshold_stops() -> None:
    async def objective(params: dict[str, Any]) -> float:
        return abs(params["x"])

    result = await ao.minimize(
        objective, SPACE, algo=ao.rand.suggest, max_evals=10_000, loss_threshold=0.5, seed=10
    )
    assert len(result.trials) < 10_000
    assert result.best_loss <= 0.5
    assert result.trials[-1].loss == result.best_loss


async def test_early_stop_receives_trials_and_stops() -> None:
    sizes: list[int] = []

    def stop_after_five(trials: tuple[ao.Trial, ...]) -> bool:
        sizes.append(len(trials))
        return sum(t.state is ao.TrialState.OK for t in trials) >= 5

    result = await ao.minimize(
        quadratic, SPACE, algo=ao.rand.suggest, max_evals=100, early_stop=stop_after_five, seed=11
    )
    assert len(result.trials) == 5
    assert sizes == [1, 2, 3, 4, 5]


async def test_async_early_stop_and_callbacks() -> None:
    finished: list[int] = []
    async_finished: list[int] = []

    def callback(trial: ao.Trial) -> None:
        finished.append(trial.tid)

    async def async_callback(trial: ao.Trial) -> None:
        await anyio.lowlevel.checkpoint()
        async_finished.append(trial.tid)

    async def early_stop(trials: tuple[ao.Trial, ...]) -> bool:
        return len(trials) >= 4

    result = await ao.minimize(
        quadratic,
        SPACE,
        algo=ao.rand.suggest,
        max_evals=50,
        callbacks=[callback, async_callback],
        early_stop=early_stop,
        seed=12,
    )
    assert finished == [0, 1, 2, 3] == async_finished
    assert len(result.trials) == 4
    assert all(t.state is ao.TrialState.OK for t in result.trials)


async def test_sync_objective_runs_in_threads() -> None:
    import threading

    main_thread = threading.get_ident()
    threads: set[int] = set()

    def objective(params: dict[str, Any]) -> float:
        threads.add(threading.get_ident())
        time.sleep(0.01)
        return float(params["x"])

    result = await ao.minimize(
        objective, SPACE, algo=ao.rand.suggest, max_evals=8, concurrency=4, seed=13
    )
    assert len(result.trials) == 8
    assert main_thread not in threads


async def _threads_of_suggestions(seconds: float, calls: int) -> list[bool]:
    """Whether each suggestion of a ``seconds``-long algorithm ran off the loop's thread."""
    import threading

    loop_thread = threading.get_ident()
    off_loop: list[bool] = []

    def slow(space: Any, history: Any, rng: Any, n: int) -> Any:
        off_loop.append(threading.get_ident() != loop_thread)
        until = time.perf_counter() + seconds
        while time.perf_counter() < until:  # busy, like a real computation
            pass
        return ao.rand.suggest(space, history, rng, n)

    await ao.minimize(quadratic, SPACE, algo=slow, max_evals=calls, seed=4)
    return off_loop


async def test_slow_suggestions_move_to_a_worker_thread_and_fast_ones_stay() -> None:
    slow = await _threads_of_suggestions(0.03, 8)
    assert not slow[0]  # nothing is known of the first call
    assert all(slow[3:])
    assert not any(await _threads_of_suggestions(0.0, 8))


async def test_cancelling_minimize_leaves_nothing_running() -> None:
    storage = MemoryStorage()
    started = anyio.Event()

    async def objective(params: dict[str, Any]) -> float:
        started.set()
        await anyio.sleep(10)
        return 0.0

    async with anyio.create_task_group() as group:
        group.start_soon(
            lambda: ao.minimize(
                objective, SPACE, algo=ao.rand.suggest, max_evals=20, concurrency=5, storage=storage
            )
        )
        await started.wait()
        await anyio.sleep(0.05)
        group.cancel_scope.cancel()
    trials = await storage.trials_since("default")
    assert len({t.tid for t in trials}) == 10  # five running, five taken one batch ahead
    latest = {t.tid: t for t in trials}
    assert all(t.state is ao.TrialState.CANCELLED for t in latest.values())
    assert await storage.count_trials("default") == 0


async def test_same_seed_same_assignments() -> None:
    first = await ao.minimize(quadratic, SPACE, algo=ao.rand.suggest, max_evals=15, seed=42)
    second = await ao.minimize(quadratic, SPACE, algo=ao.rand.suggest, max_evals=15, seed=42)
    assert [t.assignment for t in first.trials] == [t.assignment for t in second.trials]
    other = await ao.minimize(quadratic, SPACE, algo=ao.rand.suggest, max_evals=15, seed=43)
    assert [t.assignment for t in first.trials] != [t.assignment for t in other.trials]


EXPECTED_FIRST: dict[str, list[dict[str, Any]]] = {}


async def test_sequence_identical_on_asyncio_and_trio(anyio_backend: str) -> None:
    result = await ao.minimize(quadratic, SPACE, algo=ao.rand.suggest, max_evals=12, seed=99)
    assignments = [dict(t.assignment) for t in result.trials]
    EXPECTED_FIRST.setdefault("run", assignments)
    assert EXPECTED_FIRST["run"] == assignments


async def test_resume_equals_uninterrupted_run() -> None:
    storage = MemoryStorage()
    await ao.minimize(quadratic, SPACE, algo=ao.rand.suggest, max_evals=30, storage=storage, seed=5)
    resumed = await ao.minimize(
        quadratic, SPACE, algo=ao.rand.suggest, max_evals=60, storage=storage
    )
    straight = await ao.minimize(quadratic, SPACE, algo=ao.rand.suggest, max_evals=60, seed=5)
    assert [t.tid for t in resumed.trials] == list(range(60))
    assert [t.assignment for t in resumed.trials] == [t.assignment for t in straight.trials]
    assert [t.seed for t in resumed.trials] == [t.seed for t in straight.trials]


async def test_resume_with_other_space_raises_and_changes_nothing() -> None:
    storage = MemoryStorage()
    await ao.minimize(quadratic, SPACE, algo=ao.rand.suggest, max_evals=5, storage=storage, seed=1)
    before = await storage.trials_since("default")
    other = {**SPACE, "x": hp.uniform("x", -5, 6)}
    with pytest.raises(ao.StudyMismatchError):
        await ao.minimize(quadratic, other, max_evals=10, storage=storage)
    assert await storage.trials_since("default") == before


async def test_resume_with_other_seed_raises() -> None:
    storage = MemoryStorage()
    await ao.minimize(quadratic, SPACE, algo=ao.rand.suggest, max_evals=2, storage=storage, seed=1)
    with pytest.raises(ao.StudyMismatchError, match="seed"):
        await ao.minimize(quadratic, SPACE, max_evals=4, storage=storage, seed=2)


async def test_budget_already_spent_returns_immediately() -> None:
    storage = MemoryStorage()
    await ao.minimize(quadratic, SPACE, algo=ao.rand.suggest, max_evals=5, storage=storage, seed=1)
    calls = 0

    async def objective(params: dict[str, Any]) -> float:
        nonlocal calls
        calls += 1
        return 0.0

    result = await ao.minimize(objective, SPACE, max_evals=5, storage=storage)
    assert calls == 0
    assert len(result.trials) == 5


async def test_best_params_are_evaluated_values() -> None:
    space = {"opt": hp.choice("opt", ["sgd", "adam"]), "lr": hp.loguniform("lr", -5, 0)}

    async def objective(params: dict[str, Any]) -> float:
        return params["lr"] + (0 if params["opt"] == "adam" else 1)

    result = await ao.minimize(objective, space, algo=ao.rand.suggest, max_evals=30, seed=3)
    assert result.best_params["opt"] in ("sgd", "adam")
    assert result.best_assignment["opt"] in (0, 1)
    assert result.best_loss == min(t.loss for t in result.trials if t.loss is not None)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"max_evals": -1}, ValueError),
        ({"max_evals": 2.5}, TypeError),
        ({"max_evals": 5, "concurrency": 0}, ValueError),
        ({"max_evals": 5, "timeout": -1}, ValueError),
        ({"max_evals": 5, "lease": 0}, ValueError),
        ({"max_evals": 5, "study": ""}, ValueError),
        ({"max_evals": 5, "algo": "tpe"}, TypeError),
        ({"max_evals": 5, "catch": (ValueError, "oops")}, TypeError),
        ({}, ValueError),
    ],
)
async def test_bad_arguments(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        await ao.minimize(quadratic, SPACE, **kwargs)


async def test_unknown_storage_scheme() -> None:
    with pytest.raises(ao.StorageURLError, match="did you mean 'sqlite'"):
        await ao.minimize(quadratic, SPACE, max_evals=1, storage="sqlit:///x.db")


async def test_progress_factory_receives_updates() -> None:
    updates: list[tuple[int, float | None]] = []
    closed: list[bool] = []

    class Reporter:
        def start(self, done: int, best_loss: float | None) -> None:
            updates.append((done, best_loss))

        def update(self, done: int, best_loss: float | None) -> None:
            updates.append((done, best_loss))

        def close(self) -> None:
            closed.append(True)

    def factory(total: int | None, timeout: float | None) -> Reporter:
        assert total == 6
        return Reporter()

    await ao.minimize(quadratic, SPACE, algo=ao.rand.suggest, max_evals=6, progress=factory, seed=1)
    assert [done for done, _ in updates] == [0, 1, 2, 3, 4, 5, 6]  # start, then each trial
    assert closed == [True]
    bests = [best for _, best in updates[1:]]
    assert all(a is not None and b is not None and b <= a for a, b in itertools.pairwise(bests))


async def test_progress_bar(capsys: pytest.CaptureFixture[str]) -> None:
    await ao.minimize(quadratic, SPACE, algo=ao.rand.suggest, max_evals=4, progress=True, seed=1)
    err = capsys.readouterr().err
    assert "4/4" in err
    assert "best loss" in err


async def test_each_trial_is_reproducible_from_its_seed_and_history() -> None:
    from asyncopt.history import History
    from asyncopt.study import suggestion_rng

    result = await ao.minimize(quadratic, SPACE, algo=ao.tpe.suggest, max_evals=25, seed=8)
    space = ao.compile_space(SPACE)
    for trial in result.trials:
        assert trial.seed is not None
        history = History.from_trials(space, result.trials[: trial.tid])
        again = ao.tpe.suggest(space, history, suggestion_rng(trial.seed), 1)[0]
        assert again == dict(trial.assignment)


async def test_catch_takes_a_single_exception_class() -> None:
    async def objective(params: dict[str, Any]) -> float:
        raise KeyError("missing")

    result = await ao.minimize(
        objective, SPACE, algo=ao.rand.suggest, max_evals=2, catch=KeyError, seed=1
    )
    assert [t.state for t in result.trials] == [ao.TrialState.FAIL] * 2


async def test_bad_argument_messages_name_the_argument() -> None:
    with pytest.raises(TypeError, match="algo must be a suggest function"):
        await ao.minimize(quadratic, SPACE, max_evals=1, algo="tpe")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_evals must be >= 0"):
        await ao.minimize(quadratic, SPACE, max_evals=-3)


@pytest.fixture(params=["memory", "sqlite"])
def shared_storage(request: pytest.FixtureRequest, tmp_path: Any) -> ao.Storage | str:
    """A storage two handles of one test can share: a memory instance or an SQLite file."""
    if request.param == "memory":
        return MemoryStorage()
    return f"sqlite:///{tmp_path}/study.db"


async def test_a_threshold_reached_by_another_worker_cancels_the_trial_taken_with_it(
    shared_storage: ao.Storage | str,
) -> None:
    calls = 0

    async def objective(params: dict[str, Any]) -> float:
        nonlocal calls
        calls += 1
        if calls == 1:
            # Meanwhile another worker of the study finds a loss below the threshold; this
            # worker reads it in the same round trip that records its trial and takes the
            # next one, which must then not run.
            async with ao.open_study(shared_storage, "default") as other:
                trial = await other.ask()
                assert trial is not None
                await other.tell(trial.tid, 0.0)
        return 1.0

    result = await ao.minimize(
        objective,
        SPACE,
        algo=ao.rand.suggest,
        max_evals=10,
        loss_threshold=0.5,
        storage=shared_storage,
        seed=1,
    )
    assert calls == 1
    states = [(t.tid, t.state, t.loss) for t in result.trials]
    assert states == [
        (0, ao.TrialState.OK, 1.0),
        (1, ao.TrialState.OK, 0.0),
        (2, ao.TrialState.CANCELLED, None),
    ]
    assert "stopped" in (result.trials[2].error or "")


async def test_a_failing_suggestion_still_records_the_trial_before_it(
    shared_storage: ao.Storage | str,
) -> None:
    calls = 0

    def algo(space: Any, history: Any, rng: Any, n: int) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("the suggestion broke")
        return ao.rand.suggest(space, history, rng, n)

    with pytest.raises(RuntimeError, match="the suggestion broke"):
        await ao.minimize(quadratic, SPACE, algo=algo, max_evals=5, storage=shared_storage, seed=1)
    async with ao.open_study(shared_storage, "default") as study:
        trials = await study.trials()
    assert [(t.tid, t.state) for t in trials] == [(0, ao.TrialState.OK)]
    assert trials[0].loss is not None


async def test_a_timeout_in_a_callback_cancels_the_trial_taken_with_the_finish(
    shared_storage: ao.Storage | str,
) -> None:
    async def slow_callback(trial: ao.Trial) -> None:
        await anyio.sleep(5)

    result = await ao.minimize(
        quadratic,
        SPACE,
        algo=ao.rand.suggest,
        max_evals=10,
        timeout=0.3,
        callbacks=[slow_callback],
        storage=shared_storage,
        seed=1,
    )
    # Trial 1 was created with trial 0's result; it never ran, and nothing stays RUNNING.
    assert [(t.tid, t.state) for t in result.trials] == [
        (0, ao.TrialState.OK),
        (1, ao.TrialState.CANCELLED),
    ]


async def test_a_spent_budget_ends_soon_after_another_workers_last_trial(
    shared_storage: ao.Storage | str,
) -> None:
    # The idle workers look again after a quarter of a typical trial (here 5 ms), not
    # after a fixed 0.25 s. The median of three runs keeps one stall of a busy machine
    # from deciding.

    async def objective(params: dict[str, Any]) -> float:
        await anyio.sleep(0.02)
        return float(params["x"] ** 2)

    async def lag(name: str) -> float:
        other_ended_at = 0.0

        async def other_worker() -> None:
            nonlocal other_ended_at
            async with ao.open_study(shared_storage, name, SPACE, seed=1) as other:
                trial = await other.ask(budget=20)
                assert trial is not None
                await anyio.sleep(0.3)  # longer than this run's own trials
                await other.tell(trial.tid, 1.0)
                other_ended_at = time.monotonic()

        async with anyio.create_task_group() as group:
            # The study exists before the other worker takes its trial.
            await ao.minimize(
                objective,
                SPACE,
                algo=ao.rand.suggest,
                max_evals=1,
                storage=shared_storage,
                study=name,
                seed=1,
            )
            group.start_soon(other_worker)
            await anyio.sleep(0.05)
            result = await ao.minimize(
                objective,
                SPACE,
                algo=ao.rand.suggest,
                max_evals=20,
                concurrency=4,
                storage=shared_storage,
                study=name,
                seed=1,
            )
            returned_at = time.monotonic()
        assert len(result.trials) == 20
        assert all(t.state is ao.TrialState.OK for t in result.trials)
        return returned_at - other_ended_at

    lags = [await lag(f"run{i}") for i in range(3)]
    assert sorted(lags)[1] < 0.06


async def test_an_objective_that_never_awaits_leaves_the_event_loop_to_other_tasks() -> None:
    # A free objective on memory never waits, so the worker hands the loop over now and
    # then by itself: a ticker in the same loop keeps ticking, and the timeout gets in.
    ticks = 0

    async def objective(params: dict[str, Any]) -> float:
        return float(params["x"] ** 2)

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await anyio.sleep(0.005)
            ticks += 1

    async with anyio.create_task_group() as group:
        group.start_soon(ticker)
        started = time.monotonic()
        result = await ao.minimize(
            objective, SPACE, algo=ao.rand.suggest, max_evals=50_000, timeout=0.5, seed=1
        )
        took = time.monotonic() - started
        group.cancel_scope.cancel()
    assert took < 3.0
    assert len(result.trials) > 100
    # A tick every 5 ms would give 100; a pass of the loop every 10 ms or so lets some in
    # even on a busy machine (none at all if the worker never handed the loop over).
    assert ticks >= 5
