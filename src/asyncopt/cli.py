"""The ``asyncopt`` command: create, drive, inspect, export, plot and delete stored studies,
and run workers.

``main(argv)`` parses the arguments, runs the command on an event loop and returns the
exit status: 0 on success, 1 when the user declined a confirmation, 2 for a usage error
or any `asyncopt.AsyncoptError` (printed as ``asyncopt: error: <message>``, never as a
traceback), 130 when interrupted, 141 when the reader of the output went away (a closed
pipe, as in ``| head -1``). Storage URLs are only ever shown with their password replaced
by ``***``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import functools
import importlib
import importlib.util
import json
import math
import os
import secrets
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from asyncopt._cli_code import load_in_thread, stored_space
from asyncopt._cli_output import (
    cell,
    cut,
    fit,
    iso,
    logging_to_stderr,
    silence_stdout,
    terminal_width,
    write_csv,
    write_json,
    write_table,
)
from asyncopt._log import first_line, log_finished
from asyncopt._table import (
    Columns,
    MissingDependencyError,
    columns_dataframe,
    trial_columns,
)
from asyncopt.errors import (
    AllTrialsFailed,
    AsyncoptError,
    CommandError,
    StudyMismatchError,
    StudyNotFoundError,
)
from asyncopt.outcome import Outcome, from_value
from asyncopt.plot import KINDS
from asyncopt.pruners import Pruner, pruner_from_name
from asyncopt.space.compile import CompiledSpace, compile_space
from asyncopt.space.evaluate import space_eval
from asyncopt.storage.base import Storage, new_worker_id
from asyncopt.storage.urls import StorageURL, open_storage, scrub
from asyncopt.trial import StudyRecord, Trial, TrialState, best_of

__all__ = ["CommandError", "main"]

ALGORITHMS = ("tpe", "rand", "anneal")
FORMATS = ("table", "csv", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")
# The lease of a trial started by `asyncopt ask`: a person, not a process, finishes it.
ASK_LEASE = 86400.0


# -- entry point ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``asyncopt`` command line with ``argv`` (default: ``sys.argv[1:]``).

    Returns the exit status instead of exiting, so it can be called from Python.
    """
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else 2
    command: Callable[[argparse.Namespace], Awaitable[int]] = args.command
    if args.event_loop == "trio" and importlib.util.find_spec("trio") is None:
        print("asyncopt: error: --event-loop trio needs trio (pip install trio)", file=sys.stderr)
        return 2
    try:
        with logging_to_stderr(args.log_level):
            status = anyio.run(functools.partial(command, args), backend=args.event_loop)
        sys.stdout.flush()  # a closed pipe shows here when the output was buffered
        return status
    except BaseException as exc:
        return _exit_status(exc, url=getattr(args, "url", ""))


def _exit_status(exc: BaseException, *, url: str) -> int:
    """The exit status for ``exc``, having told the user what happened; re-raises a bug.

    A closed pipe (``asyncopt trials ... | head -1``) ends quietly with 141, as a
    program killed by SIGPIPE would; an interrupt with 130; asyncopt errors are printed
    as one line each with status 2.
    """
    errors = list(_leaves(exc))
    if errors and all(isinstance(e, BrokenPipeError) for e in errors):
        silence_stdout()
        return _CLOSED_PIPE
    if any(isinstance(e, _Terminated) for e in errors):
        print("asyncopt: terminated (SIGTERM)", file=sys.stderr)
        return _TERMINATED
    if isinstance(exc, (KeyboardInterrupt, asyncio.CancelledError)):
        # Before Python 3.11, anyio's asyncio runner reports a SIGINT as CancelledError.
        print("asyncopt: interrupted", file=sys.stderr)
        return 130
    if not errors or not all(isinstance(e, AsyncoptError) for e in errors):
        raise exc
    for error in dict.fromkeys(str(e) for e in errors):
        # One line, and never a secret of the URL, whatever the error says.
        line = " ".join(scrub(error, url).split()) if url else " ".join(error.split())
        print(f"asyncopt: error: {line}", file=sys.stderr)
    return 2


# 128 + SIGTERM: what a shell reports for a program ended by SIGTERM.
_TERMINATED = 128 + signal.SIGTERM
# 128 + SIGPIPE: what a shell reports for a program that wrote to a closed pipe.
_CLOSED_PIPE = 128 + getattr(signal, "SIGPIPE", 13)


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    """The exceptions inside (nested) exception groups, or ``exc`` itself."""
    inner = getattr(exc, "exceptions", None)
    if isinstance(inner, tuple) and inner and all(isinstance(e, BaseException) for e in inner):
        for item in inner:
            yield from _leaves(item)
    else:
        yield exc


def _global_options(parser: argparse.ArgumentParser, *, inherited: bool) -> None:
    """The options every command takes, before or after its name.

    On the subcommands they default to "not given" so that a value given before the
    command name is not overwritten.
    """

    def default(value: str) -> str:
        return argparse.SUPPRESS if inherited else value

    parser.add_argument(
        "--event-loop",
        choices=("asyncio", "trio"),
        default=default("asyncio"),
        help="the event loop to run on (default: asyncio)",
    )
    parser.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default=default("warning"),
        help="show the asyncopt logger's records from this level on (info: every trial; "
        "default: warning, failed trials)",
    )


def _parser() -> argparse.ArgumentParser:
    from asyncopt import __version__

    parser = argparse.ArgumentParser(
        prog="asyncopt",
        description="Create, drive, inspect, export and plot asyncopt studies, and run workers.",
    )
    parser.add_argument("--version", action="version", version=f"asyncopt {__version__}")
    _global_options(parser, inherited=False)
    shared = argparse.ArgumentParser(add_help=False)
    _global_options(shared, inherited=True)
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    def command(name: str, help: str, run: Callable[[argparse.Namespace], Awaitable[int]]) -> Any:
        sub = commands.add_parser(name, help=help, description=help, parents=[shared])
        sub.add_argument("url", metavar="URL", help="storage URL, e.g. sqlite:///tuning.db")
        sub.set_defaults(command=run)
        return sub

    def study_argument(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("study", metavar="STUDY", help="study name")

    def space_option(sub: argparse.ArgumentParser, help: str) -> None:
        sub.add_argument("--space", metavar="MODULE:NAME", help=help)

    sub = command("studies", "List the studies in a storage.", _studies)
    sub.add_argument("--format", choices=FORMATS, default="table", help="output format")

    sub = command("create-study", "Create a study for a space defined in your code.", _create)
    study_argument(sub)
    sub.add_argument(
        "--space", metavar="MODULE:NAME", required=True, help="the space, e.g. train:space"
    )
    sub.add_argument("--seed", type=int, help="the study seed (default: random)")
    sub.add_argument(
        "--skip-if-exists",
        action="store_true",
        help="succeed without change when the study exists with this space",
    )

    sub = command("trials", "List the trials of a study.", _trials)
    study_argument(sub)
    sub.add_argument("--format", choices=FORMATS, default="table", help="output format")
    sub.add_argument(
        "--columns",
        metavar="A,B,...",
        type=_names,
        help="the columns to show, in this order (default: tid, state, loss, duration, "
        "parameters, result extras, error)",
    )

    sub = command("best", "Show the best trial of a study and its parameters.", _best)
    study_argument(sub)
    space_option(sub, "load the space from your code (when the stored one cannot be rebuilt)")
    sub.add_argument("--format", choices=("table", "json"), default="table", help="output format")

    sub = command("ask", "Start a trial and print it as JSON (finish it with tell).", _ask)
    study_argument(sub)
    space_option(sub, "load the space from your code instead of rebuilding the stored one")
    sub.add_argument("--algo", choices=ALGORITHMS, help="suggest algorithm (default: tpe)")
    sub.add_argument(
        "--max-evals", type=_positive_int, help="start nothing once the study has this many"
    )
    sub.add_argument(
        "--lease",
        type=_positive_float,
        default=ASK_LEASE,
        help=f"seconds the trial stays yours before workers may requeue it (default {ASK_LEASE:g})",
    )

    sub = command("tell", "Record the loss (or the failure) of a trial started by ask.", _tell)
    study_argument(sub)
    sub.add_argument("tid", metavar="TID", type=int, help="the trial's tid (printed by ask)")
    sub.add_argument("loss", metavar="LOSS", nargs="?", type=_number, help="its loss")
    sub.add_argument("--fail", metavar="MESSAGE", help="record a failure with this message")

    sub = command("export", "Write every trial to a CSV, JSON lines or Parquet file.", _export)
    study_argument(sub)
    sub.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="FILE",
        help="FILE.csv, FILE.jsonl or FILE.parquet (Parquet needs asyncopt[parquet])",
    )

    sub = command("delete", "Delete a study and all its trials.", _delete)
    study_argument(sub)
    sub.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")

    sub = command("plot", "Draw a figure of a study to an image file.", _plot)
    sub.add_argument(
        "study", metavar="STUDY", nargs="+", help="study name (several only with --kind edf)"
    )
    sub.add_argument(
        "--kind", choices=KINDS, default="history", help="what to draw (default: history)"
    )
    sub.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="FILE",
        help="image to write; the extension picks the format (.png, .svg, .pdf, ...)",
    )
    sub.add_argument("--log", action="store_true", help="logarithmic loss axis")
    sub.add_argument(
        "--params",
        metavar="A,B,...",
        type=_names,
        help="parameters to show (slice, parallel; exactly two for contour)",
    )
    space_option(sub, "load the space from your code (when the stored one cannot be rebuilt)")

    sub = command("worker", "Join a study (or create it with --space) and run trials.", _worker)
    study_argument(sub)
    sub.add_argument(
        "objective", metavar="MODULE:OBJECTIVE", help="the objective, e.g. train:objective"
    )
    space_option(
        sub,
        "load the space from your code instead of rebuilding the stored one; "
        "creates the study if it does not exist",
    )
    sub.add_argument(
        "--concurrency", type=_positive_int, default=1, help="objective calls in flight"
    )
    sub.add_argument(
        "--max-evals",
        type=_positive_int,
        help="the study's total budget (trials of every worker count)",
    )
    sub.add_argument("--timeout", type=_positive_float, help="seconds this worker runs at most")
    sub.add_argument(
        "--trial-timeout",
        type=_positive_float,
        help="seconds one objective call may take; a slower trial fails",
    )
    sub.add_argument(
        "--algo", choices=ALGORITHMS, help="suggest algorithm (default: the library's, tpe)"
    )
    sub.add_argument(
        "--lease", type=_positive_float, default=60.0, help="lease in seconds (default 60)"
    )
    sub.add_argument(
        "--pruner",
        type=_pruner,
        help="stop reporting trials early: none (default), median, percentile, asha or "
        "hyperband, options after a colon (median:n_startup_trials=3)",
    )
    sub.add_argument("--progress", action="store_true", help="show a progress bar on stderr")
    return parser


def _names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return names


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number: {text!r}")
    return value


def _pruner(text: str) -> Pruner:
    try:
        return pruner_from_name(text)
    except (TypeError, ValueError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# -- shared helpers ------------------------------------------------------------------------


def _redacted(url: str) -> str:
    try:
        return StorageURL.parse(url).redacted
    except AsyncoptError:
        return "<invalid URL>"


async def _get_study(storage: Storage, name: str) -> StudyRecord:
    try:
        return await storage.get_study(name)
    except StudyNotFoundError:
        known = [record.name for record in await storage.list_studies()]
        listing = ", ".join(repr(n) for n in known) if known else "none"
        raise StudyNotFoundError(
            f"no study {name!r} in {storage.url} (studies there: {listing})"
        ) from None


# -- commands ------------------------------------------------------------------------------


async def _studies(args: argparse.Namespace) -> int:
    async with open_storage(args.url, read_only=True) as storage:
        rows: list[dict[str, Any]] = []
        for record in await storage.list_studies():
            trials = await storage.trials_since(record.name, 0)
            best = best_of(trials)
            rows.append(
                {
                    "name": record.name,
                    "trials": len(trials),
                    "best_loss": None if best is None else best.loss,
                    "created_at": record.created_at,
                }
            )
    out = sys.stdout
    if args.format == "json":
        write_json(rows, out)
        return 0
    if args.format == "csv":
        write_csv(
            [
                [
                    row["name"],
                    str(row["trials"]),
                    cell(row["best_loss"], exact=True),
                    iso(row["created_at"], exact=True),
                ]
                for row in rows
            ],
            ["name", "trials", "best_loss", "created_at"],
            out,
        )
    elif rows:
        write_table(
            [
                [row["name"], str(row["trials"]), cell(row["best_loss"]), iso(row["created_at"])]
                for row in rows
            ],
            ["name", "trials", "best_loss", "created_at"],
            out,
        )
    else:
        print(f"no studies in {_redacted(args.url)}", file=sys.stderr)
    return 0


def _space_or_none(record: StudyRecord) -> CompiledSpace | None:
    """The study's space when it can be rebuilt here; tables fall back to raw values."""
    try:
        space: CompiledSpace = stored_space(record)
    except CommandError:
        return None
    return space


async def _study_space(record: StudyRecord, target: str | None) -> CompiledSpace:
    """The space from ``--space`` (checked against the study's), else the stored one."""
    if target is None:
        space: CompiledSpace = stored_space(record)
        return space
    loaded = compile_space(await load_in_thread(target, "space"))
    if loaded.fingerprint != record.fingerprint:
        raise StudyMismatchError(
            f"the space {target} is not the space of study {record.name!r} "
            "(its labels, distributions or conditions differ)"
        )
    return loaded


async def _read_study(url: str, name: str) -> tuple[StudyRecord, list[Trial]]:
    async with open_storage(url, read_only=True) as storage:
        record = await _get_study(storage, name)
        trials = sorted(await storage.trials_since(record.name, 0), key=lambda t: t.tid)
    return record, trials


#: Columns of the trials table that only CSV, JSON lines and ``--columns`` show.
_DETAIL_COLUMNS = ("started_at", "finished_at", "worker", "retry_of")


async def _trials(args: argparse.Namespace) -> int:
    record, trials = await _read_study(args.url, args.study)
    out = sys.stdout
    if args.format == "json":
        write_json([trial.to_dict() for trial in trials], out)
        return 0
    columns = trial_columns(trials, _space_or_none(record))
    if args.columns is not None:
        unknown = [name for name in args.columns if name not in columns]
        if unknown:
            raise CommandError(
                f"no column {unknown[0]!r} in the trials of study {record.name!r}; "
                f"columns: {', '.join(columns)}"
            )
        names = list(args.columns)
    elif args.format == "csv":
        names = list(columns)
    else:
        # The last reported step and value only for a study whose trials report them.
        reported = any(trial.intermediate for trial in trials)
        detail = _DETAIL_COLUMNS if reported else (*_DETAIL_COLUMNS, "last_step", "last_value")
        names = [name for name in columns if name not in detail and not name.endswith("_index")]
    exact = args.format == "csv"
    rows = [[cell(columns[name][i], exact=exact) for name in names] for i in range(len(trials))]
    if args.format == "csv":
        write_csv(rows, names, out)
        return 0
    rows = [[cut(cell) for cell in row] for row in rows]
    shown, hidden = fit(names, rows, terminal_width(out))
    write_table([row[:shown] for row in rows], names[:shown], out)
    if hidden:
        print(
            f"({len(hidden)} more columns do not fit the terminal: {', '.join(hidden)}; "
            "pick columns with --columns A,B or see all with --format csv)",
            file=sys.stderr,
        )
    return 0


async def _best(args: argparse.Namespace) -> int:
    record, trials = await _read_study(args.url, args.study)
    best = best_of(trials)
    if best is None:
        raise AllTrialsFailed(
            f"study {record.name!r} has no successful trial ({len(trials)} trials in all)"
        )
    space = await _study_space(record, args.space)
    params = space_eval(space, best.assignment)
    extras = {
        key: value
        for key, value in (best.result or {}).items()
        if key not in ("loss", "status", "error")
    }
    if args.format == "json":
        write_json(
            {
                "study": record.name,
                "tid": best.tid,
                "loss": best.loss,
                "params": params,
                "assignment": dict(best.assignment),
                "result": extras,
            },
            sys.stdout,
        )
        return 0
    print(f"study:      {record.name}")
    print(f"best loss:  {best.loss!r}")
    print(f"tid:        {best.tid}")
    print(f"params:     {json.dumps(params, default=repr)}")
    print(f"assignment: {json.dumps(dict(best.assignment))}")
    if extras:
        print(f"result:     {json.dumps(extras, default=repr)}")
    return 0


async def _create(args: argparse.Namespace) -> int:
    space = compile_space(await load_in_thread(args.space, "space"))
    async with open_storage(args.url) as storage:
        try:
            existing: StudyRecord | None = await storage.get_study(args.study)
        except StudyNotFoundError:
            existing = None
        if existing is not None:
            if existing.fingerprint != space.fingerprint:
                raise StudyMismatchError(
                    f"study {existing.name!r} already exists in {storage.url} with another "
                    "space; choose another name or delete it first"
                )
            if not args.skip_if_exists:
                raise CommandError(
                    f"study {existing.name!r} already exists in {storage.url} "
                    "(with this space; --skip-if-exists accepts that)"
                )
            print(f"study {existing.name!r} already exists (seed {existing.seed}); unchanged")
            return 0
        record = await storage.create_study(
            args.study,
            fingerprint=space.fingerprint,
            space=space.describe(),
            seed=_random_seed() if args.seed is None else args.seed,
        )
    print(
        f"created study {record.name!r} in {storage.url} "
        f"({len(space)} parameters, seed {record.seed})"
    )
    return 0


def _random_seed() -> int:
    return secrets.randbits(31)


#: Workers started by ``asyncopt ask`` are named with this prefix; ``tell`` finishes only those.
SHELL_WORKER = "shell:"


async def _ask(args: argparse.Namespace) -> int:
    from asyncopt.study import open_study

    algo = _algorithm(args.algo)
    async with open_storage(args.url) as storage:
        record = await _get_study(storage, args.study)
        space = await _study_space(record, args.space)
        async with open_study(
            storage,
            record.name,
            space,
            algo=algo,
            lease=args.lease,
            worker=SHELL_WORKER + new_worker_id(),
        ) as study:
            trial = await study.ask(budget=args.max_evals)
            if trial is None:
                raise CommandError(
                    f"study {record.name!r} already has {args.max_evals} trials "
                    "(--max-evals): nothing started"
                )
            # The trial outlives this process: `tell` finishes it, in another one.
            study.let_go(trial.tid)
    write_json(
        {
            "study": record.name,
            "tid": trial.tid,
            "params": trial.params,
            "assignment": dict(trial.assignment),
        },
        sys.stdout,
    )
    return 0


async def _tell(args: argparse.Namespace) -> int:
    if (args.loss is None) == (args.fail is None):
        raise CommandError("tell needs a LOSS or --fail MESSAGE (one of them)")
    outcome = (
        from_value(args.loss) if args.fail is None else Outcome(TrialState.FAIL, error=args.fail)
    )
    async with open_storage(args.url) as storage:
        record = await _get_study(storage, args.study)
        trial = await storage.get_trial(record.name, args.tid)
        if trial.state is not TrialState.RUNNING:
            raise CommandError(
                f"trial {trial.tid} of study {record.name!r} is {trial.state.name}, "
                "not RUNNING: only a trial started by `asyncopt ask` can be told"
            )
        if not (trial.worker or "").startswith(SHELL_WORKER):
            raise CommandError(
                f"trial {trial.tid} of study {record.name!r} is being run by worker "
                f"{trial.worker}; only a trial started by `asyncopt ask` can be told"
            )
        finished = await storage.finish_trial(
            record.name,
            trial.tid,
            worker=trial.worker or "",
            state=outcome.state,
            loss=outcome.loss,
            result=outcome.result,
            error=outcome.error,
        )
    log_finished(finished)
    what = f"loss {finished.loss!r}" if finished.loss is not None else first_line(finished.error)
    print(f"trial {finished.tid} of study {record.name!r}: {finished.state.name}, {what}")
    return 0


_EXPORT_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}


def _export_format(path: str) -> str:
    extension = os.path.splitext(path)[1].lower()
    try:
        return _EXPORT_FORMATS[extension]
    except KeyError:
        known = ", ".join(_EXPORT_FORMATS)
        what = f"extension {extension}" if extension else "no extension"
        raise CommandError(f"cannot export to {path}: {what}; use one of {known}") from None


def _json_ready(value: Any) -> Any:
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    return value


def _write_export(columns: Columns, space: CompiledSpace | None, path: str, kind: str) -> None:
    names = list(columns)
    count = len(columns["tid"])
    if kind == "csv":
        with open(path, "w", newline="", encoding="utf-8") as file:
            rows = [[cell(columns[n][i], exact=True) for n in names] for i in range(count)]
            write_csv(rows, names, file)
    elif kind == "jsonl":
        with open(path, "w", encoding="utf-8") as file:
            for i in range(count):
                row = {name: _json_ready(columns[name][i]) for name in names}
                file.write(json.dumps(row, default=repr) + "\n")
    else:
        frame = columns_dataframe(columns, space)
        for name in frame.columns:
            if frame[name].dtype == object and any(
                isinstance(v, (dict, list, tuple)) for v in frame[name]
            ):
                # Parquet columns have one type: a choice among structures is kept as JSON.
                frame[name] = [
                    None if v is None else json.dumps(v, default=repr) for v in frame[name]
                ]
        try:
            frame.to_parquet(path, index=False)
        except ImportError as exc:
            raise MissingDependencyError(
                f"Parquet export needs pyarrow ({exc}); "
                "install it with `pip install asyncopt[parquet]`"
            ) from None


async def _export(args: argparse.Namespace) -> int:
    kind = _export_format(args.output)
    record, trials = await _read_study(args.url, args.study)
    space = _space_or_none(record)
    columns = trial_columns(trials, space)
    write = functools.partial(_write_export, columns, space, args.output, kind)
    try:
        await anyio.to_thread.run_sync(write)
    except OSError as exc:
        raise CommandError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    print(f"wrote {args.output} ({len(trials)} trials, {len(columns)} columns)")
    return 0


async def _delete(args: argparse.Namespace) -> int:
    async with open_storage(args.url) as storage:
        record = await _get_study(storage, args.study)
        count = await storage.count_trials(record.name, budgeted=False)
        if not args.yes:
            question = (
                f"Delete study {record.name!r} and its {count} trials from {storage.url}? [y/N] "
            )
            answer = await anyio.to_thread.run_sync(_confirm, question)
            if answer not in {"y", "yes"}:
                print("asyncopt: not deleted", file=sys.stderr)
                return 1
        await storage.delete_study(record.name)
    print(f"deleted study {record.name!r} ({count} trials)")
    return 0


def _confirm(question: str) -> str:
    sys.stderr.write(question)
    sys.stderr.flush()
    try:
        line = sys.stdin.readline() if sys.stdin is not None else ""
    except (OSError, ValueError):  # stdin closed or not readable: no consent
        line = ""
    return line.strip().lower()


async def _plot(args: argparse.Namespace) -> int:
    from asyncopt.plot import draw, image_format, save_figure

    image_format(args.output)  # an unknown extension fails before any work
    if len(args.study) > 1 and args.kind != "edf":
        raise CommandError(f"--kind {args.kind} draws one study; only edf compares several")
    studies: dict[str, Sequence[Trial]] = {}
    space: CompiledSpace | None = None
    for name in args.study:
        record, trials = await _read_study(args.url, name)
        studies[record.name] = trials
        if space is None and args.kind in _NEEDS_SPACE:
            space = await _study_space(record, args.space) if args.space else _space_or_none(record)
    title = f"study {args.study[0]!r}" if args.kind in ("history", "timeline") else None

    def render() -> None:
        try:
            figure = draw(
                args.kind, studies, space, title=title, log_scale=args.log, params=args.params
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        save_figure(figure, args.output)

    try:
        await anyio.to_thread.run_sync(render)
    except OSError as exc:
        raise CommandError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    count = sum(len(trials) for trials in studies.values())
    print(f"wrote {args.output} ({args.kind}, {count} trials)")
    return 0


_NEEDS_SPACE = frozenset({"slice", "parallel", "contour", "importance"})


def _algorithm(name: str | None) -> Any:
    if name is None:
        return None
    try:
        module = importlib.import_module(f"asyncopt.algorithms.{name}")
    except ImportError as exc:
        raise CommandError(f"the {name} algorithm is not available: {exc}") from None
    return module.suggest


async def _worker(args: argparse.Namespace) -> int:
    from asyncopt.orchestrator import minimize

    if args.max_evals is None and args.timeout is None:
        raise CommandError(
            "a worker needs a stopping rule: --max-evals N (the study's total budget) "
            "and/or --timeout SECONDS"
        )
    objective = await load_in_thread(args.objective, "objective")
    if not callable(objective):
        raise CommandError(f"{args.objective} is not callable ({type(objective).__name__})")
    algo = _algorithm(args.algo)
    async with open_storage(args.url) as storage:
        if args.space is not None:
            space = await load_in_thread(args.space, "space")
            try:
                name = (await storage.get_study(args.study)).name
            except StudyNotFoundError:
                name = args.study
                print(f"asyncopt: creating study {name!r} in {storage.url}", file=sys.stderr)
        else:
            record = await _get_study(storage, args.study)
            name = record.name
            # Importing the objective first registers the scope functions its module defines.
            space = stored_space(record)
        ran: list[Trial] = []
        search = functools.partial(
            minimize,
            objective,
            space,
            algo=algo,
            max_evals=args.max_evals,
            concurrency=args.concurrency,
            storage=storage,
            study=name,
            timeout=args.timeout,
            trial_timeout=args.trial_timeout,
            lease=args.lease,
            pruner=args.pruner,
            progress=args.progress,
            callbacks=[ran.append],
        )
        result = await _stopped_by_sigterm(search)
    counts = dict.fromkeys(TrialState, 0)
    for trial in result.trials:
        counts[trial.state] += 1
    best = best_of(result.trials)
    best_text = "none" if best is None else f"{best.loss!r} (tid {best.tid})"
    print(
        f"worker done: ran {len(ran)} trials; study {name!r} has "
        f"{len(result.trials)} trials ({counts[TrialState.OK]} ok, "
        f"{counts[TrialState.FAIL]} failed, {counts[TrialState.PRUNED]} pruned, "
        f"{counts[TrialState.CANCELLED]} cancelled); "
        f"best loss {best_text}"
    )
    if not ran:
        print(f"asyncopt: ran nothing: {_why_nothing(args, result.trials)}", file=sys.stderr)
    return 0


T = TypeVar("T")


class _Terminated(Exception):
    """The worker received SIGTERM; its running trials were recorded CANCELLED."""


async def _stopped_by_sigterm(search: Callable[[], Awaitable[T]]) -> T:
    """``search()``, cancelled like Ctrl-C when SIGTERM arrives (then `_Terminated`)."""
    terminated = False
    async with anyio.create_task_group() as group:

        async def watch() -> None:
            nonlocal terminated
            with anyio.open_signal_receiver(signal.SIGTERM) as signals:
                async for _ in signals:
                    terminated = True
                    group.cancel_scope.cancel()

        group.start_soon(watch)
        result = await search()
        group.cancel_scope.cancel()
    if terminated:
        raise _Terminated
    return result


def _why_nothing(args: argparse.Namespace, trials: Sequence[Trial]) -> str:
    budgeted = sum(1 for t in trials if t.state.counts_toward_budget)
    if args.max_evals is not None and budgeted >= args.max_evals:
        return (
            f"the study's budget is already spent ({budgeted} trials, --max-evals "
            f"{args.max_evals}); raise --max-evals to run more"
        )
    if args.timeout is not None:
        return f"no trial finished within --timeout {args.timeout:g} seconds"
    return "no trial was free to run (other workers hold the rest of the budget)"
