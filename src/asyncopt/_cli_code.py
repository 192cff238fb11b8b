"""Loading the user's code for the ``asyncopt`` command: ``module:name`` targets (an
objective, a space) and a study's space rebuilt from its stored description."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import anyio.to_thread

from asyncopt.errors import CommandError, SpaceError
from asyncopt.trial import StudyRecord


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


async def load_in_thread(target: str, what: str) -> Any:
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
