"""What the ``asyncopt`` command writes: tables, CSV and JSON on standard output, log
records on standard error, and quiet after the reader closed the pipe."""

from __future__ import annotations

import contextlib
import csv
import datetime
import io
import json
import logging
import os
import shutil
import sys
from collections.abc import Iterator, Sequence
from typing import Any, TextIO

from asyncopt._table import utc


def silence_stdout() -> None:
    """Point standard output at the null device, so exiting does not flush into the
    closed pipe again (Python would print "Exception ignored ... BrokenPipeError")."""
    try:
        descriptor = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return  # not a real file (captured output): nothing will be flushed at exit
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, descriptor)
    finally:
        os.close(devnull)


class _StderrHandler(logging.Handler):
    """Writes records to whatever ``sys.stderr`` is when they are emitted."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)


@contextlib.contextmanager
def logging_to_stderr(level: str) -> Iterator[None]:
    """While the command runs, show the ``asyncopt`` logger's records from ``level`` on."""
    logger = logging.getLogger("asyncopt")
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("[%(levelname)s %(asctime)s] %(message)s"))
    previous = logger.level
    logger.setLevel(level.upper())
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


def cell(value: Any, *, exact: bool = False) -> str:
    """One table cell: numbers short (or exact, for CSV), times ISO 8601, structures JSON."""
    if value is None:
        return ""
    if isinstance(value, datetime.datetime):
        return value.isoformat() if exact else value.isoformat(timespec="seconds")
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return repr(value) if exact else format(value, ".6g")
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, default=repr)
    return str(value)


def iso(timestamp: float | None, *, exact: bool = False) -> str:
    return cell(utc(timestamp), exact=exact)


def write_table(rows: Sequence[Sequence[str]], header: Sequence[str], out: TextIO) -> None:
    widths = [len(h) for h in header]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row)]
    for row in [header, *rows]:
        line = "  ".join(cell.ljust(w) for cell, w in zip(row, widths))
        out.write(line.rstrip() + "\n")


def write_csv(rows: Sequence[Sequence[str]], header: Sequence[str], out: TextIO) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    out.write(buffer.getvalue())


def write_json(data: Any, out: TextIO) -> None:
    out.write(json.dumps(data, indent=2, default=repr) + "\n")


def terminal_width(out: TextIO) -> int | None:
    """The terminal's width when ``out`` is one; None (no limit) for a pipe or a file."""
    try:
        if not out.isatty():
            return None
    except (AttributeError, ValueError):
        return None
    return shutil.get_terminal_size().columns


def fit(header: list[str], rows: list[list[str]], width: int | None) -> tuple[int, list[str]]:
    """How many leading columns fit in ``width`` characters, and the names of the others.

    At least the first column is always shown.
    """
    if width is None:
        return len(header), []
    used = 0
    for count, name in enumerate(header):
        column = max([len(name), *(len(row[count]) for row in rows)])
        used += column + (2 if count else 0)
        if used > width and count > 0:
            return count, header[count:]
    return len(header), []


# Longest cell of the table, in characters (CSV and JSON keep everything).
_MAX_CELL = 40


def cut(text: str) -> str:
    return text if len(text) <= _MAX_CELL else text[: _MAX_CELL - 1] + "…"
