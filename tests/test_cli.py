"""The ``asyncopt`` command line, run against real SQLite files.

Most tests call ``main([...])`` in this process; the end-to-end tests run
``python -m asyncopt`` in subprocesses (two workers sharing one study, Ctrl-C).
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

import asyncopt as ao
from asyncopt import hp
from asyncopt.cli import main
from asyncopt.plot import KINDS
from asyncopt.space.compile import compile_space
from asyncopt.space.expressions import Apply

SPACE = {
    "x": hp.uniform("x", -5, 5),
    "model": hp.choice(
        "model",
        [{"kind": "a"}, {"kind": "b", "c": hp.loguniform("c", -3, 0)}],
    ),
}

# Written to a module file for the workers; the same space and a matching objective.
OBJECTIVE_MODULE = """
import time

from asyncopt import hp

space = {
    "x": hp.uniform("x", -5, 5),
    "model": hp.choice(
        "model",
        [{"kind": "a"}, {"kind": "b", "c": hp.loguniform("c", -3, 0)}],
    ),
}

def objective(params):
    time.sleep(SLEEP)
    if params["x"] > 3.5:
        raise RuntimeError("x too large\\nsecond line")
    return (params["x"] - 1) ** 2

not_callable = 42
"""


def objective(params: dict[str, Any]) -> float:
    if params["x"] > 3.5:
        raise RuntimeError("x too large\nsecond line")
    return float((params["x"] - 1) ** 2)


def populate(
    url: str,
    study: str,
    max_evals: int,
    *,
    space: Any = SPACE,
    fn: Callable[[Any], Any] = objective,
    seed: int = 3,
) -> ao.OptimizationResult:
    async def run() -> ao.OptimizationResult:
        return await ao.minimize(
            fn,
            space,
            storage=url,
            study=study,
            max_evals=max_evals,
            seed=seed,
            algo=ao.rand.suggest,
        )

    return anyio.run(run)


def stored_trials(url: str, study: str) -> list[ao.Trial]:
    async def read() -> list[ao.Trial]:
        async with ao.open_storage(url) as storage:
            return sorted(await storage.trials_since(study, 0), key=lambda t: t.tid)

    return anyio.run(read)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, ao.OptimizationResult]:
    """A storage with studies "quad" (25 trials, some FAIL) and "other" (5 trials)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('cli') / 'studies.db'}"
    result = populate(url, "quad", 25)
    populate(url, "other", 5, seed=4)
    assert any(t.state is ao.TrialState.FAIL for t in result.trials)
    return url, result


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'study.db'}"


@pytest.fixture(params=["sqlite", "mongodb", "postgresql"])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A storage many processes can share: a SQLite file, or a database on a test server."""
    if request.param in ("mongodb", "postgresql"):
        server_url: str = request.getfixturevalue(
            "mongodb_url" if request.param == "mongodb" else "postgres_url"
        )
        return server_url
    return f"sqlite:///{tmp_path / 'shared.db'}"


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., str]]:
    """Write a module into the (new) current directory; returns its unique name."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    names: list[str] = []

    def write(source: str = OBJECTIVE_MODULE, *, sleep: float = 0.0) -> str:
        name = f"cli_user_{tmp_path.name.replace('-', '_')}_{len(names)}"
        (tmp_path / f"{name}.py").write_text(f"SLEEP = {sleep}\n" + textwrap.dedent(source))
        names.append(name)
        return name

    yield write
    for name in names:
        sys.modules.pop(name, None)


# -- studies -------------------------------------------------------------------------------


def test_studies_table(
    filled: tuple[str, ao.OptimizationResult], capsys: pytest.CaptureFixture[str]
) -> None:
    url, result = filled
    code, out, err = run_cli(capsys, "studies", url)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["name", "trials", "best_loss", "created_at"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) == {"quad", "other"}
    assert rows["quad"][1] == "25"
    assert rows["quad"][2] == f"{result.best_loss:.6g}"
    assert rows["other"][1] == "5"
    created = datetime.datetime.fromisoformat(rows["quad"][-1])  # ISO 8601, to the second
    assert created.tzinfo is not None
    assert created.microsecond == 0


def test_studies_csv_and_json(
    filled: tuple[str, ao.OptimizationResult], capsys: pytest.CaptureFixture[str]
) -> None:
    url, result = filled
    code, out, _ = run_cli(capsys, "studies", url, "--format", "csv")
    assert code == 0
    rows = {row["name"]: row for row in csv.DictReader(io.StringIO(out))}
    assert float(rows["quad"]["best_loss"]) == result.best_loss
    assert int(rows["other"]["trials"]) == 5
    created = datetime.datetime.fromisoformat(rows["quad"]["created_at"])
    assert abs(created.timestamp() - time.time()) < 3600

    code, out, _ = run_cli(capsys, "studies", url, "--format", "json")
    assert code == 0
    data = {row["name"]: row for row in json.loads(out)}
    assert data["quad"]["trials"] == 25
    assert data["quad"]["best_loss"] == result.best_loss


def test_studies_of_an_empty_storage(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    async def create_empty() -> None:
        async with ao.open_storage(url):
            pass

    anyio.run(create_empty)
    code, out, err = run_cli(capsys, "studies", url)
    assert code == 0
    assert out == ""
    assert "no studies" in err


def test_a_read_command_on_a_missing_file_names_it_and_creates_nothing(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(capsys, "studies", url)
    assert code == 2
    assert out == ""
    assert url.removeprefix("sqlite:///") in err
    assert "creates nothing" in err
    assert not Path(url.removeprefix("sqlite:///")).exists()


# -- trials --------------------------------------------------------------------------------


def test_trials_table(
    filled: tuple[str, ao.OptimizationResult], capsys: pytest.CaptureFixture[str]
) -> None:
    url, result = filled
    code, out, err = run_cli(capsys, "trials", url, "quad")
    assert code == 0, err
    lines = out.splitlines()
    header = lines[0].split()
    assert header[:4] == ["tid", "state", "loss", "duration"]
    assert header[4:-1] == ["params_model", "params_c", "params_x"]  # the space's order
    assert header[-1] == "error"
    assert len(lines) == 1 + 25
    for line, trial in zip(lines[1:], result.trials):
        cells = line.split()
        assert cells[0] == str(trial.tid)
        assert cells[1] == trial.state.name
        if trial.state is ao.TrialState.FAIL:
            assert line.endswith("RuntimeError: x too large")
        else:
            assert cells[2] == f"{trial.loss:.6g}"
    assert "second line" not in out


def test_trials_csv(
    filled: tuple[str, ao.OptimizationResult], capsys: pytest.CaptureFixture[str]
) -> None:
    url, result = filled
    code, out, _ = run_cli(capsys, "trials", url, "quad", "--format", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [int(r["tid"]) for r in rows] == list(range(25))
    for row, trial in zip(rows, result.trials):
        assert row["state"] == trial.state.name
        assert row["loss"] == ("" if trial.loss is None else repr(trial.loss))
        assert trial.duration is not None
        assert float(row["duration"]) == trial.duration
        for label in ("x", "c"):
            expected = trial.assignment.get(label)
            assert row[f"params_{label}"] == ("" if expected is None else repr(expected))
        # A choice: the option the objective saw (as JSON), and its index.
        assert json.loads(row["params_model"]) == trial.params["model"]
        assert row["params_model_index"] == str(trial.assignment["model"])
        assert datetime.datetime.fromisoformat(row["started_at"]).timestamp() == pytest.approx(
            trial.started_at, abs=1e-6
        )
        assert row["worker"] == trial.worker
        if trial.state is ao.TrialState.FAIL:
            assert row["error"] == "RuntimeError: x too large"
        else:
            assert row["error"] == ""


@pytest.mark.parametrize("event_loop", ["asyncio", "trio"])
def test_trials_json_gives_full_records(
    filled: tuple[str, ao.OptimizationResult],
    capsys: pytest.CaptureFixture[str],
    event_loop: str,
) -> None:
    url, result = filled
    code, out, _ = run_cli(
        capsys, "--event-loop", event_loop, "trials", url, "quad", "--format", "json"
    )
    assert code == 0
    records = json.loads(out)
    assert records == [json.loads(json.dumps(t.to_dict())) for t in result.trials]
    assert [ao.Trial.from_dict(r) for r in records] == list(result.trials)
    failed = [r for r in records if r["state"] == "FAIL"]
    assert failed
    assert "Traceback" in failed[0]["error"]  # the full error, not only its first line


# -- best ----------------------------------------------------------------------------------


def test_best_table_and_json(
    filled: tuple[str, ao.OptimizationResult], capsys: pytest.CaptureFixture[str]
) -> None:
    url, result = filled
    code, out, _ = run_cli(capsys, "best", url, "quad")
    assert code == 0
    fields = dict(line.split(":", 1) for line in out.splitlines())
    assert float(fields["best loss"]) == result.best_loss
    assert int(fields["tid"]) == result.best_trial.tid
    assert json.loads(fields["params"]) == result.best_params
    assert json.loads(fields["assignment"]) == dict(result.best_assignment)

    code, out, _ = run_cli(capsys, "best", url, "quad", "--format", "json")
    assert code == 0
    data = json.loads(out)
    assert data["loss"] == result.best_loss
    assert data["tid"] == result.best_trial.tid
    assert data["params"] == result.best_params
    assert data["params"]["model"]["kind"] in {"a", "b"}


def test_best_without_a_successful_trial(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    def fail(params: Any) -> float:
        raise ValueError("always")

    populate(url, "doomed", 3, fn=fail)
    code, _, err = run_cli(capsys, "best", url, "doomed")
    assert code == 2
    assert err == "asyncopt: error: study 'doomed' has no successful trial (3 trials in all)\n"


# -- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["trials", "best", "delete", "plot"])
def test_unknown_study(
    filled: tuple[str, ao.OptimizationResult],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    command: str,
) -> None:
    url, _ = filled
    extra = ["-o", str(tmp_path / "x.png")] if command == "plot" else []
    code, out, err = run_cli(capsys, command, url, "nope", *extra)
    assert code == 2
    assert out == ""
    assert err.startswith("asyncopt: error: no study 'nope' in sqlite:///")
    assert "'other', 'quad'" in err
    assert "Traceback" not in err


def test_unknown_scheme_suggests_the_close_one(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run_cli(capsys, "studies", f"sqlit:///{tmp_path / 'x.db'}")
    assert code == 2
    assert err.startswith("asyncopt: error: unknown storage scheme 'sqlit'")
    assert "did you mean 'sqlite'?" in err


def test_password_is_never_printed(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "trials", "sqlite://user:hunter2@host:notaport/x.db", "s")
    assert code == 2
    assert "hunter2" not in out + err
    assert "user:***@" in err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main(["trials"]) == 2
    assert main(["trials", "memory://", "s", "--format", "xml"]) == 2
    assert "invalid choice" in capsys.readouterr().err
    assert main(["--help"]) == 0
    assert "worker" in capsys.readouterr().out


# -- delete --------------------------------------------------------------------------------


def test_delete_with_yes(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    populate(url, "gone", 4)
    populate(url, "kept", 2)
    code, out, _ = run_cli(capsys, "delete", url, "gone", "--yes")
    assert code == 0
    assert out == "deleted study 'gone' (4 trials)\n"
    code, out, _ = run_cli(capsys, "studies", url, "--format", "json")
    assert [row["name"] for row in json.loads(out)] == ["kept"]
    assert stored_trials(url, "kept")


@pytest.mark.parametrize(
    ("answer", "deleted"), [("y\n", True), ("yes\n", True), ("n\n", False), ("", False)]
)
def test_delete_asks_for_confirmation(
    url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    answer: str,
    deleted: bool,
) -> None:
    populate(url, "maybe", 2)
    monkeypatch.setattr(sys, "stdin", io.StringIO(answer))
    code, _, err = run_cli(capsys, "delete", url, "maybe")
    assert "Delete study 'maybe' and its 2 trials" in err
    assert code == (0 if deleted else 1)
    code, out, _ = run_cli(capsys, "studies", url, "--format", "json")
    assert [row["name"] for row in json.loads(out)] == ([] if deleted else ["maybe"])


def test_delete_with_closed_stdin_deletes_nothing(
    url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    populate(url, "maybe", 2)
    closed = io.StringIO()
    closed.close()
    monkeypatch.setattr(sys, "stdin", closed)
    code, _, err = run_cli(capsys, "delete", url, "maybe")
    assert code == 1
    assert "not deleted" in err
    assert len(stored_trials(url, "maybe")) == 2


# -- plot ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_plot_every_kind(
    filled: tuple[str, ao.OptimizationResult],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    kind: str,
) -> None:
    url, _ = filled
    target = tmp_path / f"{kind}.png"
    code, out, err = run_cli(capsys, "plot", url, "quad", "--kind", kind, "-o", str(target))
    assert code == 0, err
    assert out == f"wrote {target} ({kind}, 25 trials)\n"
    data = target.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 1000


def test_plot_format_from_the_extension(
    filled: tuple[str, ao.OptimizationResult],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    url, _ = filled
    svg = tmp_path / "history.svg"
    code, _, err = run_cli(capsys, "plot", url, "quad", "-o", str(svg), "--log")
    assert code == 0, err
    assert b"<svg" in svg.read_bytes()[:500]
    code, out, err = run_cli(capsys, "plot", url, "quad", "-o", str(tmp_path / "x.xyz"))
    assert code == 2
    assert out == ""
    assert err.startswith("asyncopt: error: cannot write ")
    assert "extension .xyz is not an image format; use one of " in err
    assert ".png" in err
    assert "Traceback" not in err
    assert not (tmp_path / "x.xyz").exists()


def test_plot_edf_compares_studies_and_others_take_one(
    filled: tuple[str, ao.OptimizationResult],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    url, _ = filled
    target = tmp_path / "edf.png"
    code, out, err = run_cli(
        capsys, "plot", url, "quad", "other", "--kind", "edf", "-o", str(target)
    )
    assert code == 0, err
    assert out == f"wrote {target} (edf, 30 trials)\n"
    code, _, err = run_cli(capsys, "plot", url, "quad", "other", "-o", str(target))
    assert code == 2
    assert "only edf compares several" in err


def test_plot_contour_needs_two_known_parameters(
    filled: tuple[str, ao.OptimizationResult],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    url, _ = filled
    target = str(tmp_path / "c.png")
    code, _, err = run_cli(
        capsys, "plot", url, "quad", "--kind", "contour", "--params", "x,c", "-o", target
    )
    assert code == 0, err
    code, _, err = run_cli(
        capsys, "plot", url, "quad", "--kind", "contour", "--params", "x", "-o", target
    )
    assert code == 2
    assert "needs two parameters" in err
    code, _, err = run_cli(
        capsys, "plot", url, "quad", "--kind", "slice", "--params", "zz", "-o", target
    )
    assert code == 2
    assert "no parameter 'zz'" in err


def test_plot_to_an_unwritable_place(
    filled: tuple[str, ao.OptimizationResult],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    url, _ = filled
    code, _, err = run_cli(capsys, "plot", url, "quad", "-o", str(tmp_path / "no" / "dir.png"))
    assert code == 2
    assert err.startswith("asyncopt: error: cannot write ")


def test_plot_without_matplotlib_names_the_extra(
    filled: tuple[str, ao.OptimizationResult],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    url, _ = filled
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    code, _, err = run_cli(capsys, "plot", url, "quad", "-o", str(tmp_path / "p.png"))
    assert code == 2
    assert "pip install asyncopt[plot]" in err
    assert not (tmp_path / "p.png").exists()


# -- worker --------------------------------------------------------------------------------


def test_worker_joins_a_study_and_meets_its_budget(
    shared_url: str, capsys: pytest.CaptureFixture[str], user_module: Callable[..., str]
) -> None:
    url = shared_url
    before = populate(url, "shared", 10)
    module = user_module()
    code, out, err = run_cli(
        capsys, "worker", url, "shared", f"{module}:objective", "--max-evals", "30",
        "--concurrency", "4",
    )  # fmt: skip
    assert code == 0, err
    assert out.startswith("worker done: ran 20 trials; study 'shared' has 30 trials")
    trials = stored_trials(url, "shared")
    assert [t.tid for t in trials] == list(range(30))
    assert all(t.state.is_finished for t in trials)
    assert trials[:10] == list(before.trials)
    # The workers' trials belong to the same study: same seed scheme, same space.
    assert all(set(t.assignment) <= {"x", "model", "c"} for t in trials)

    code, out, _ = run_cli(capsys, "trials", url, "shared", "--format", "json")
    assert code == 0
    assert [ao.Trial.from_dict(record) for record in json.loads(out)] == trials
    code, out, _ = run_cli(capsys, "best", url, "shared", "--format", "json")
    assert code == 0
    ok = [t for t in trials if t.state is ao.TrialState.OK]
    best = min(ok, key=lambda t: (t.loss, t.tid))
    assert (json.loads(out)["tid"], json.loads(out)["loss"]) == (best.tid, best.loss)

    # Joining a study whose budget is spent runs nothing.
    code, out, _ = run_cli(
        capsys, "worker", url, "shared", f"{module}:objective", "--max-evals", "30"
    )
    assert code == 0
    assert out.startswith("worker done: ran 0 trials; study 'shared' has 30 trials")


def test_worker_progress_bar(
    url: str, capsys: pytest.CaptureFixture[str], user_module: Callable[..., str]
) -> None:
    populate(url, "bar", 2)
    module = user_module()
    code, out, err = run_cli(
        capsys, "worker", url, "bar", f"{module}:objective", "--max-evals", "6", "--progress"
    )
    assert code == 0, err
    assert "ran 4 trials" in out
    assert "/6" in err
    assert "best loss" in err


@pytest.mark.parametrize("algo", ["rand", "anneal", "tpe"])
def test_worker_algorithms(
    url: str, capsys: pytest.CaptureFixture[str], user_module: Callable[..., str], algo: str
) -> None:
    populate(url, "algos", 4)
    module = user_module()
    code, out, err = run_cli(
        capsys, "--event-loop", "trio", "worker", url, "algos", f"{module}:objective",
        "--algo", algo, "--max-evals", "10", "--lease", "5",
    )  # fmt: skip
    assert code == 0, err
    assert "ran 6 trials" in out
    assert [t.tid for t in stored_trials(url, "algos")] == list(range(10))


REPORTING_MODULE = """
    import asyncopt as ao

    async def objective(params, trial):
        for step in range(4):
            await trial.report(params["x"] + 1.0 / (step + 1), step)
            if await trial.should_prune():
                raise ao.TrialPruned()
        return params["x"]
"""


def test_worker_with_a_pruner_prunes_reporting_trials(
    url: str, capsys: pytest.CaptureFixture[str], user_module: Callable[..., str]
) -> None:
    populate(url, "pruned", 1)
    module = user_module(REPORTING_MODULE)
    code, out, err = run_cli(
        capsys, "worker", url, "pruned", f"{module}:objective", "--max-evals", "25",
        "--pruner", "median:n_startup_trials=2", "--concurrency", "2",
    )  # fmt: skip
    assert code == 0, err
    trials = stored_trials(url, "pruned")
    pruned = [t for t in trials if t.state is ao.TrialState.PRUNED]
    assert pruned, out
    assert f"{len(pruned)} pruned" in out
    for trial in pruned:
        assert trial.loss == trial.last_value
    code, out, _ = run_cli(capsys, "trials", url, "pruned")
    assert out.splitlines()[0].split()[:5] == ["tid", "state", "loss", "last_step", "last_value"]


def test_worker_refuses_an_unknown_pruner(
    url: str, capsys: pytest.CaptureFixture[str], user_module: Callable[..., str]
) -> None:
    populate(url, "bad", 1)
    module = user_module(REPORTING_MODULE)
    code, _, err = run_cli(
        capsys, "worker", url, "bad", f"{module}:objective", "--max-evals", "5",
        "--pruner", "medain",
    )  # fmt: skip
    assert code == 2
    assert "unknown pruner 'medain'" in err
    assert len(stored_trials(url, "bad")) == 1


def test_worker_timeout_stops_it(
    url: str, capsys: pytest.CaptureFixture[str], user_module: Callable[..., str]
) -> None:
    populate(url, "timed", 1)
    module = user_module(sleep=0.05)
    started = time.monotonic()
    code, _out, err = run_cli(
        capsys, "worker", url, "timed", f"{module}:objective", "--timeout", "0.3"
    )
    assert code == 0, err
    assert time.monotonic() - started < 5
    trials = stored_trials(url, "timed")
    assert 2 <= len(trials) <= 10
    assert not [t for t in trials if t.state is ao.TrialState.RUNNING]


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("no_such_module_here:objective", "cannot import module 'no_such_module_here'"),
        ("{module}:missing", "has no attribute 'missing' (the objective)"),
        ("{module}", "objective must be given as module:name"),
        ("{module}:not_callable", "not callable"),
    ],
)
def test_worker_bad_objective(
    url: str,
    capsys: pytest.CaptureFixture[str],
    user_module: Callable[..., str],
    target: str,
    message: str,
) -> None:
    populate(url, "s", 1)
    module = user_module()
    code, _, err = run_cli(
        capsys, "worker", url, "s", target.format(module=module), "--max-evals", "5"
    )
    assert code == 2
    assert err.startswith("asyncopt: error: ")
    assert message in err
    assert "Traceback" not in err
    assert len(stored_trials(url, "s")) == 1


def test_worker_module_that_fails_to_import(
    url: str, capsys: pytest.CaptureFixture[str], user_module: Callable[..., str]
) -> None:
    populate(url, "s", 1)
    module = user_module("raise RuntimeError('config missing')\n")
    code, _, err = run_cli(capsys, "worker", url, "s", f"{module}:objective", "--max-evals", "5")
    assert code == 2
    assert f"importing module '{module}' failed: RuntimeError: config missing" in err


def test_worker_needs_an_existing_study(
    url: str, capsys: pytest.CaptureFixture[str], user_module: Callable[..., str]
) -> None:
    populate(url, "there", 1)
    module = user_module()
    code, _, err = run_cli(
        capsys, "worker", url, "absent", f"{module}:objective", "--max-evals", "5"
    )
    assert code == 2
    assert f"no study 'absent' in {url}" in err
    assert [t.tid for t in stored_trials(url, "there")] == [0]


def test_worker_needs_a_stopping_rule(
    url: str, capsys: pytest.CaptureFixture[str], user_module: Callable[..., str]
) -> None:
    populate(url, "s", 1)
    module = user_module()
    code, _, err = run_cli(capsys, "worker", url, "s", f"{module}:objective")
    assert code == 2
    assert "--max-evals" in err


class Marker:
    """A constant JSON cannot hold: its stored description is opaque."""

    def __repr__(self) -> str:
        return "Marker()"


OPAQUE_MODULE = """
from asyncopt import hp

class Marker:
    def __repr__(self):
        return "Marker()"

space = {"x": hp.uniform("x", -5, 5), "marker": Marker()}

def objective(params):
    assert type(params["marker"]).__name__ == "Marker"
    return params["x"] ** 2
"""


def test_opaque_space_needs_the_space_option(
    url: str, capsys: pytest.CaptureFixture[str], user_module: Callable[..., str]
) -> None:
    space = {"x": hp.uniform("x", -5, 5), "marker": Marker()}
    populate(url, "opaque", 3, space=space, fn=lambda p: p["x"] ** 2)
    module = user_module(OPAQUE_MODULE)

    code, _, err = run_cli(
        capsys, "worker", url, "opaque", f"{module}:objective", "--max-evals", "8"
    )
    assert code == 2
    assert "cannot be rebuilt" in err
    assert "Marker()" in err
    assert "--space module:space" in err

    code, _, err = run_cli(capsys, "best", url, "opaque")
    assert code == 2
    assert "--space" in err

    code, out, err = run_cli(
        capsys, "worker", url, "opaque", f"{module}:objective", "--space", f"{module}:space",
        "--max-evals", "8",
    )  # fmt: skip
    assert code == 0, err
    trials = stored_trials(url, "opaque")
    assert [t.tid for t in trials] == list(range(8))
    assert all(t.state is ao.TrialState.OK for t in trials)

    code, out, err = run_cli(capsys, "best", url, "opaque", "--space", f"{module}:space")
    assert code == 0, err
    assert '"marker": "Marker()"' in out


def test_space_with_an_unregistered_function(
    url: str, capsys: pytest.CaptureFixture[str], user_module: Callable[..., str]
) -> None:
    # As if created by a program that registered the function with scope.define.
    space = {"y": Apply("cli_test_triple", (hp.uniform("x", 0, 1),))}
    compiled = compile_space(space)

    async def create() -> None:
        async with ao.open_storage(url) as storage:
            await storage.create_study(
                "custom", fingerprint=compiled.fingerprint, space=compiled.describe(), seed=5
            )

    anyio.run(create)
    plain = user_module("def objective(params):\n    return params['y']\n")
    code, _, err = run_cli(
        capsys, "worker", url, "custom", f"{plain}:objective", "--max-evals", "4"
    )
    assert code == 2
    assert "cli_test_triple" in err
    assert "--space module:space" in err
    assert stored_trials(url, "custom") == []

    # Importing the objective's module registers the function: then the stored space works.
    registering = user_module(
        """
        from asyncopt import scope

        @scope.define(name="cli_test_triple")
        def triple(x):
            return 3 * x

        def objective(params):
            assert 0 <= params["y"] <= 3
            return params["y"]
        """
    )
    code, _out, err = run_cli(
        capsys, "worker", url, "custom", f"{registering}:objective", "--max-evals", "4"
    )
    assert code == 0, err
    assert [t.state for t in stored_trials(url, "custom")] == [ao.TrialState.OK] * 4


def test_worker_space_that_differs_from_the_study(
    url: str, capsys: pytest.CaptureFixture[str], user_module: Callable[..., str]
) -> None:
    populate(url, "s", 2)
    module = user_module(
        """
        from asyncopt import hp
        space = {"x": hp.uniform("x", 0, 1)}
        def objective(params):
            return params["x"]
        """
    )
    code, _, err = run_cli(
        capsys, "worker", url, "s", f"{module}:objective", "--space", f"{module}:space",
        "--max-evals", "5",
    )  # fmt: skip
    assert code == 2
    assert err.startswith("asyncopt: error: ")
    assert len(stored_trials(url, "s")) == 2

    code, _, err = run_cli(capsys, "best", url, "s", "--space", f"{module}:space")
    assert code == 2
    assert err == (
        f"asyncopt: error: the space {module}:space is not the space of study 's' "
        "(its labels, distributions or conditions differ)\n"
    )


# -- end to end, in subprocesses ------------------------------------------------------------


# `python -m asyncopt`, interruptible like a command started from a terminal even when the
# tests themselves were started as a background job (which ignores SIGINT, and children
# inherit that).
_INTERRUPTIBLE_CLI = (
    "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "runpy.run_module('asyncopt', run_name='__main__', alter_sys=True)"
)


def _cli_process(cwd: Path, *argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _INTERRUPTIBLE_CLI, *argv],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_two_worker_processes_share_one_study(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"

    async def create() -> None:
        async with ao.open_study(url, "e2e", SPACE, seed=11):
            pass

    anyio.run(create)
    # Each worker's first call waits until both processes are evaluating, so they overlap.
    barrier = textwrap.dedent(
        """
        import os, pathlib, time
        _here = pathlib.Path(__file__).parent

        def together(params):
            (_here / f"started-{os.getpid()}").touch()
            deadline = time.monotonic() + 30
            while len(list(_here.glob("started-*"))) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            return objective(params)
        """
    )
    (tmp_path / "e2e_objective.py").write_text("SLEEP = 0.01\n" + OBJECTIVE_MODULE + barrier)
    args = ("worker", url, "e2e", "e2e_objective:together", "--max-evals", "24")
    workers = [
        _cli_process(tmp_path, *args, "--concurrency", "3"),
        _cli_process(tmp_path, "--event-loop", "trio", *args, "--concurrency", "2"),
    ]
    try:
        outputs = [worker.communicate(timeout=60) for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.communicate()
    for worker, (out, err) in zip(workers, outputs):
        assert worker.returncode == 0, err
        assert out.startswith("worker done: ran "), out
    trials = stored_trials(url, "e2e")
    assert [t.tid for t in trials] == list(range(24))
    assert all(t.state.is_finished for t in trials)
    assert len({t.worker for t in trials}) == 2
    # Seeds are deterministic, so two workers that start at the same instant on the empty
    # study may make the same first proposal; after that, they propose different points.
    assert len({json.dumps(t.assignment, sort_keys=True) for t in trials}) >= 23


@pytest.mark.parametrize(
    ("sent", "status", "said"),
    [(signal.SIGINT, 130, "asyncopt: interrupted"), (signal.SIGTERM, 143, "terminated")],
)
def test_interrupted_worker_cancels_its_trials(
    tmp_path: Path, sent: signal.Signals, status: int, said: str
) -> None:
    url = f"sqlite:///{tmp_path / 'stop.db'}"
    populate(url, "stop", 1)
    (tmp_path / "slow_objective.py").write_text("SLEEP = 30\n" + OBJECTIVE_MODULE)
    worker = _cli_process(
        tmp_path, "worker", url, "stop", "slow_objective:objective", "--max-evals", "50",
        "--concurrency", "2",
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            running = [t for t in stored_trials(url, "stop") if t.state is ao.TrialState.RUNNING]
            # Two calls run; on SQLite each slot also holds its next trial, taken ahead.
            if len(running) >= 2:
                break
            time.sleep(0.05)
        assert len(running) >= 2
        worker.send_signal(sent)
        _, err = worker.communicate(timeout=20)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate()
    assert worker.returncode == status
    assert "Traceback" not in err
    assert said in err
    states = [t.state for t in stored_trials(url, "stop")]
    assert states[0].is_finished
    assert len(states) >= 3
    assert set(states[1:]) == {ao.TrialState.CANCELLED}


def test_a_worker_whose_sync_objective_hangs_exits_at_its_timeout(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hang.db'}"
    populate(url, "hang", 0)
    (tmp_path / "hanging.py").write_text(
        "import threading\n\ndef objective(params):\n    threading.Event().wait()\n"
    )
    started = time.monotonic()
    worker = _cli_process(
        tmp_path, "worker", url, "hang", "hanging:objective", "--max-evals", "5", "--timeout", "2"
    )
    try:
        _, err = worker.communicate(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate()
    assert time.monotonic() - started < 20
    assert worker.returncode == 0, err
    assert [t.state for t in stored_trials(url, "hang")] == [ao.TrialState.CANCELLED]
