"""Development sessions: tests, lint, types, docs, bench."""

from __future__ import annotations

import shutil

import nox

nox.options.sessions = ["tests", "lint", "types"]
nox.options.reuse_existing_virtualenvs = True

PYTHONS = [v for v in ("3.10", "3.11", "3.12", "3.13") if shutil.which(f"python{v}")]


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The whole test suite, on each installed Python from 3.10 to 3.13."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def types(session: nox.Session) -> None:
    """mypy --strict on the package."""
    session.install("-e", ".[mongo,postgres,plot]", "mypy")
    session.run("mypy", "--strict", "src")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site with --strict."""
    session.install("-e", ".[docs]")
    session.run("mkdocs", "build", "--strict")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks against Hyperopt and Optuna, side by side; tables go to docs/benchmarks.md."""
    session.install("-e", ".[bench,mongo,test]")
    for script in (
        "benchmarks/bench_orchestrator.py",
        "benchmarks/bench_fanout.py",
        "benchmarks/bench_suggest_speed.py",
        "benchmarks/bench_quality.py",
        "benchmarks/bench_storage.py",
        "benchmarks/bench_mongo.py",
        "benchmarks/bench_postgres.py",
        "benchmarks/bench_pruning.py",
    ):
        session.run("python", script, *session.posargs)
