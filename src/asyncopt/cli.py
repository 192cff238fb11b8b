"""The ``asyncopt`` command: inspect, plot and delete stored studies, and run workers.

``main(argv)`` parses the arguments, runs the command on an event loop and returns the
exit status: 0 on success, 1 when the user declined a confirmation, 2 for a usage error
or any `asyncopt.AsyncoptError` (printed as ``asyncopt: error: <message>``, never as a
traceback), 130 when interrupted. Storage URLs are only ever shown with their password
replaced by ``***``.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime
import functools
import importlib
import importlib.util
import io
import json
import math
import os
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, TextIO

import anyio
import anyio.to_thread

from asyncopt.errors import (
    AllTrialsFailed,
    AsyncoptError,
    CommandError,
    SpaceError,
    StudyMismatchError,
    StudyNotFoundError,
)
from asyncopt.storage.base import Storage
from asyncopt.storage.urls import StorageURL, open_storage, scrub
from asyncopt.trial import StudyRecord, Trial, TrialState, best_of

__all__ = ["CommandError", "main"]

ALGORITHMS = ("tpe", "rand", "anneal")
FORMATS = ("table", "csv", "json")


# -- entry point ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``asyncopt`` command line with ``argv`` (default: ``sys.argv[1:]``).

    Returns the exit status instead of exiting, so it can be called from Python.
    """
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help and on usage errors
        return exc.code if isinstance(exc.code, int) else 2
    command: Callable[[argparse.Namespace], Awaitable[int]] = args.command
    if args.event_loop == "trio" and importlib.util.find_spec("trio") is None:
        print("asyncopt: error: --event-loop trio needs trio (pip install trio)", file=sys.stderr)
        return 2
    try:
        return anyio.run(functools.partial(command, args), backend=args.event_loop)
    except (KeyboardInterrupt, asyncio.CancelledError):
        # Before Python 3.11, anyio's asyncio runner reports a SIGINT as CancelledError.
        print("asyncopt: interrupted", file=sys.stderr)
        if argv is None and _busy_threads():
            # A sync objective still running on a (non-daemon) worker thread would keep the
            # process alive until it returns; its trial is already recorded as CANCELLED.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(130)
        return 130
    except BaseException as exc:
        errors = list(_leaves(exc))
        if not errors or not all(isinstance(e, AsyncoptError) for e in errors):
            raise
        url = getattr(args, "url", "")
        for error in dict.fromkeys(str(e) for e in errors):
            # One line, and never a secret of the URL, whatever the error says.
            line = " ".join(scrub(error, url).split()) if url else " ".join(error.split())
            print(f"asyncopt: error: {line}", file=sys.stderr)
        return 2


def _busy_threads() -> bool:
    main_thread = threading.main_thread()
    return any(t is not main_thread and not t.daemon for t in threading.enumerate())


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    """The exceptions inside (nested) exception groups, or ``exc`` itself."""
    inner = getattr(exc, "exceptions", None)
    if isinstance(inner, tuple) and inner and all(isinstance(e, BaseException) for e in inner):
        for item in inner:
            yield from _leaves(item)
    else:
        yield exc


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="asyncopt",
        description="Inspect, plot and delete asyncopt studies, and run workers that join them.",
    )
    parser.add_argument(
        "--event-loop",
        choices=("asyncio", "trio"),
        default="asyncio",
        help="the event loop to run on (default: asyncio)",
    )
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    def command(name: str, help: str, run: Callable[[argparse.Namespace], Awaitable[int]]) -> Any:
        sub = commands.add_parser(name, help=help, description=help)
        sub.add_argument("url", metavar="URL", help="storage URL, e.g. sqlite:///tuning.db")
        sub.set_defaults(command=run)
        return sub

    def study_argument(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("study", metavar="STUDY", help="study name")

    def format_argument(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--format", choices=FORMATS, default="table", help="output format")

    sub = command("studies", "List the studies in a storage.", _studies)
    format_argument(sub)

    sub = command("trials", "List the trials of a study.", _trials)
    study_argument(sub)
    format_argument(sub)

    sub = command("best", "Show the best trial of a study and its parameters.", _best)
    study_argument(sub)
    sub.add_argument(
        "--space",
        metavar="MODULE:NAME",
        help="load the space from your code (when the stored one cannot be rebuilt)",
    )
    sub.add_argument("--format", choices=("table", "json"), default="table", help="output format")

    sub = command("delete", "Delete a study and all its trials.", _delete)
    study_argument(sub)
    sub.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")

    sub = command("plot", "Plot each trial's loss and the running best to a PNG file.", _plot)
    study_argument(sub)
    sub.add_argument("-o", "--output", required=True, metavar="FILE.png", help="image to write")
    sub.add_argument("--log", action="store_true", help="logarithmic loss axis")

    sub = command("worker", "Join an existing study and evaluate trials.", _worker)
    study_argument(sub)
    sub.add_argument(
        "objective", metavar="MODULE:OBJECTIVE", help="the objective, e.g. train:objective"
    )
    sub.add_argument(
        "--space",
        metavar="MODULE:NAME",
        help="load the space from your code instead of rebuilding the stored one",
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
        "--algo", choices=ALGORITHMS, help="suggest algorithm (default: the library's, tpe)"
    )
    sub.add_argument(
        "--lease", type=_positive_float, default=60.0, help="lease in seconds (default 60)"
    )
    sub.add_argument("--progress", action="store_true", help="show a progress bar on stderr")
    return parser


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


def _format_number(value: float | None, spec: str = ".6g") -> str:
    return "" if value is None else format(value, spec)


def _exact(value: float | None) -> str:
    return "" if value is None else repr(value)


def _format_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return format(value, ".6g")
    return str(value)


def _format_time(timestamp: float | None) -> str:
    if timestamp is None:
        return ""
    moment = datetime.datetime.fromtimestamp(timestamp, tz=datetime.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _first_line(text: str | None) -> str:
    if not text:
        return ""
    return text.strip().splitlines()[0] if text.strip() else ""


def _write_table(rows: Sequence[Sequence[str]], header: Sequence[str], out: TextIO) -> None:
    widths = [len(h) for h in header]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row)]
    for row in [header, *rows]:
        line = "  ".join(cell.ljust(w) for cell, w in zip(row, widths))
        out.write(line.rstrip() + "\n")


def _write_csv(rows: Sequence[Sequence[str]], header: Sequence[str], out: TextIO) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    out.write(buffer.getvalue())


def _write_json(data: Any, out: TextIO) -> None:
    out.write(json.dumps(data, indent=2, default=repr) + "\n")


def load_object(target: str, what: str) -> Any:
    """Import ``module:attribute`` (dotted attributes allowed) from the current directory too.

    Raises `CommandError` naming ``what`` when the target is malformed or cannot be found.
    """
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise CommandError(f"{what} must be given as module:name, got {target!r}")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    importlib.invalidate_caches()
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise CommandError(
                f"cannot import module {module_name!r} for the {what} "
                f"(searched the current directory {cwd} and sys.path)"
            ) from None
        raise CommandError(f"importing module {module_name!r} failed: {exc}") from None
    except Exception as exc:
        raise CommandError(
            f"importing module {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from None
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise CommandError(
                f"module {module_name!r} has no attribute {attribute!r} (the {what})"
            ) from None
    return obj


async def _load_in_thread(target: str, what: str) -> Any:
    # Importing user code reads files and may run arbitrary setup: keep it off the loop.
    return await anyio.to_thread.run_sync(load_object, target, what)


def _unregistered_functions(description: Any) -> list[str]:
    """Scope function names the stored space uses that this process has not registered."""
    from asyncopt.space.scope import lookup

    names: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "apply" in node:
                names.add(str(node["apply"]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(description)
    missing = []
    for name in sorted(names):
        try:
            lookup(name)
        except SpaceError:
            missing.append(name)
    return missing


def stored_space(record: StudyRecord) -> Any:
    """The study's space rebuilt from its stored description.

    Raises `CommandError` telling the user to pass ``--space module:space`` when the
    description holds a constant that cannot be rebuilt or a function not registered here.
    """
    from asyncopt.space.compile import compile_space
    from asyncopt.space.description import rebuild

    hint = "pass --space module:space to load the space from your code"
    missing = _unregistered_functions(dict(record.space))
    if missing:
        raise CommandError(
            f"the stored space of study {record.name!r} uses scope functions not registered "
            f"in this process ({', '.join(missing)}); {hint}"
        )
    try:
        return compile_space(rebuild(dict(record.space)))
    except SpaceError as exc:
        reason = str(exc) if "--space" in str(exc) else f"{exc}; {hint}"
        raise CommandError(
            f"the stored space of study {record.name!r} cannot be rebuilt: {reason}"
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
        _write_json(rows, out)
        return 0
    if args.format == "csv":
        _write_csv(
            [
                [
                    row["name"],
                    str(row["trials"]),
                    _exact(row["best_loss"]),
                    repr(row["created_at"]),
                ]
                for row in rows
            ],
            ["name", "trials", "best_loss", "created_at"],
            out,
        )
    elif rows:
        _write_table(
            [
                [
                    row["name"],
                    str(row["trials"]),
                    _format_number(row["best_loss"]),
                    _format_time(row["created_at"]),
                ]
                for row in rows
            ],
            ["name", "trials", "best loss", "created"],
            out,
        )
    else:
        print(f"no studies in {_redacted(args.url)}", file=sys.stderr)
    return 0


def _labels(record: StudyRecord, trials: Sequence[Trial]) -> list[str]:
    """Assignment columns: the space's order when it can be rebuilt, else sorted."""
    seen = {label for trial in trials for label in trial.assignment}
    try:
        from asyncopt.space.compile import compile_space
        from asyncopt.space.description import rebuild

        ordered = list(compile_space(rebuild(dict(record.space))).labels)
    except SpaceError:
        ordered = []
    return [label for label in ordered if label in seen] + sorted(seen.difference(ordered))


async def _trials(args: argparse.Namespace) -> int:
    async with open_storage(args.url, read_only=True) as storage:
        record = await _get_study(storage, args.study)
        trials = sorted(await storage.trials_since(record.name, 0), key=lambda t: t.tid)
    out = sys.stdout
    if args.format == "json":
        _write_json([trial.to_dict() for trial in trials], out)
        return 0
    labels = _labels(record, trials)
    header = ["tid", "state", "loss", "duration", *labels, "error"]
    if args.format == "csv":
        rows = [
            [
                str(t.tid),
                t.state.name,
                _exact(t.loss),
                _exact(t.duration),
                *(repr(t.assignment[label]) if label in t.assignment else "" for label in labels),
                _first_line(t.error),
            ]
            for t in trials
        ]
        _write_csv(rows, header, out)
        return 0
    rows = [
        [
            str(t.tid),
            t.state.name,
            _format_number(t.loss),
            _format_number(t.duration, ".3f"),
            *(_format_value(t.assignment.get(label)) for label in labels),
            _first_line(t.error)[:80],
        ]
        for t in trials
    ]
    _write_table(rows, header, out)
    return 0


async def _best(args: argparse.Namespace) -> int:
    from asyncopt.space.compile import compile_space
    from asyncopt.space.evaluate import space_eval

    async with open_storage(args.url, read_only=True) as storage:
        record = await _get_study(storage, args.study)
        trials = await storage.trials_since(record.name, 0)
    best = best_of(trials)
    if best is None:
        raise AllTrialsFailed(
            f"study {record.name!r} has no successful trial ({len(trials)} trials in all)"
        )
    if args.space is not None:
        space = compile_space(await _load_in_thread(args.space, "space"))
        if space.fingerprint != record.fingerprint:
            raise StudyMismatchError(
                f"the space {args.space} is not the space of study {record.name!r} "
                "(its labels, distributions or conditions differ)"
            )
    else:
        space = stored_space(record)
    params = space_eval(space, best.assignment)
    if args.format == "json":
        _write_json(
            {
                "study": record.name,
                "tid": best.tid,
                "loss": best.loss,
                "params": params,
                "assignment": dict(best.assignment),
            },
            sys.stdout,
        )
        return 0
    print(f"study:      {record.name}")
    print(f"best loss:  {best.loss!r}")
    print(f"tid:        {best.tid}")
    print(f"params:     {json.dumps(params, default=repr)}")
    print(f"assignment: {json.dumps(dict(best.assignment))}")
    return 0


async def _delete(args: argparse.Namespace) -> int:
    async with open_storage(args.url) as storage:
        record = await _get_study(storage, args.study)
        count = await storage.count_trials(record.name, budgeted=False)
        if not args.yes:
            question = (
                f"Delete study {record.name!r} and its {count} trials from {storage.url}? [y/N] "
            )
            answer = await anyio.to_thread.run_sync(_ask, question)
            if answer not in {"y", "yes"}:
                print("asyncopt: not deleted", file=sys.stderr)
                return 1
        await storage.delete_study(record.name)
    print(f"deleted study {record.name!r} ({count} trials)")
    return 0


def _ask(question: str) -> str:
    sys.stderr.write(question)
    sys.stderr.flush()
    try:
        line = sys.stdin.readline() if sys.stdin is not None else ""
    except (OSError, ValueError):  # stdin closed or not readable: no consent
        line = ""
    return line.strip().lower()


async def _plot(args: argparse.Namespace) -> int:
    from asyncopt.plot import save_plot

    async with open_storage(args.url, read_only=True) as storage:
        record = await _get_study(storage, args.study)
        trials = sorted(await storage.trials_since(record.name, 0), key=lambda t: t.tid)
    draw = functools.partial(
        save_plot, trials, args.output, title=f"study {record.name!r}", log_scale=args.log
    )
    try:
        await anyio.to_thread.run_sync(draw)
    except OSError as exc:
        raise CommandError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    print(f"wrote {args.output} ({len(trials)} trials)")
    return 0


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
    objective = await _load_in_thread(args.objective, "objective")
    if not callable(objective):
        raise CommandError(f"{args.objective} is not callable ({type(objective).__name__})")
    algo = _algorithm(args.algo)
    async with open_storage(args.url) as storage:
        record = await _get_study(storage, args.study)
        if args.space is not None:
            space = await _load_in_thread(args.space, "space")
        else:
            # Importing the objective first registers the scope functions its module defines.
            space = stored_space(record)
        ran: list[Trial] = []
        result = await minimize(
            objective,
            space,
            algo=algo,
            max_evals=args.max_evals,
            concurrency=args.concurrency,
            storage=storage,
            study=record.name,
            timeout=args.timeout,
            lease=args.lease,
            progress=args.progress,
            callbacks=[ran.append],
        )
    counts = dict.fromkeys(TrialState, 0)
    for trial in result.trials:
        counts[trial.state] += 1
    best = best_of(result.trials)
    best_text = "none" if best is None else f"{best.loss!r} (tid {best.tid})"
    print(
        f"worker done: ran {len(ran)} trials; study {record.name!r} has "
        f"{len(result.trials)} trials ({counts[TrialState.OK]} ok, "
        f"{counts[TrialState.FAIL]} failed, {counts[TrialState.CANCELLED]} cancelled); "
        f"best loss {best_text}"
    )
    return 0
