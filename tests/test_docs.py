"""Every Python snippet in docs/ runs, page by page, in order, in one namespace per page
(as a reader would paste them), with top-level ``await`` allowed; and the images of the
"Looking at results" page are built by its script."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path
from typing import Any

import anyio
import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = sorted(DOCS.glob("*.md"))

# What a page takes for granted from the pages before it (a reader's own objective and
# space, a function of theirs), given to its snippets before they run.
_READER = """
import anyio
import asyncopt as ao
from asyncopt import hp

space = {"x": hp.uniform("x", -5, 5)}

async def objective(params):
    return (params["x"] - 1) ** 2

async def run_somewhere(params):
    return await objective(params)

validation_loss = 0.5
"""
SETUP = {
    "index.md": _READER,
    "storage.md": _READER,
    "tutorial.md": _READER,
    "migrating.md": _READER,
    "concepts.md": _READER,
    "distributed.md": "validation_loss = 0.5",
}

# Addresses of machines the reader has, replaced by the test's own MongoDB server.
_MONGO_PLACEHOLDERS = (
    "mongodb://tuner:secret@db1,db2,db3/tuning?replicaSet=rs0",
    "mongodb://db1,db2,db3/?replicaSet=rs0",
)

_POSTGRES_PLACEHOLDER = "postgresql://tuner:secret@db.example:5432/tuning"

# Pages whose snippets another test runs (and checks the output they show).
RUN_ELSEWHERE = {"spaces.md": "tests/space/test_docs_spaces.py"}


def snippets(page: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", page.read_text(), re.S | re.M)


def test_every_page_is_checked() -> None:
    with_snippets = {page.name for page in PAGES if snippets(page)}
    assert {"results.md", "logging.md", "tutorial.md", "spaces.md"} <= with_snippets
    root = DOCS.parent
    assert all((root / test).is_file() for test in RUN_ELSEWHERE.values())


@pytest.mark.parametrize(
    "page", [p for p in PAGES if snippets(p) and p.name not in RUN_ELSEWHERE], ids=lambda p: p.name
)
def test_snippets_run(
    page: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    monkeypatch.chdir(tmp_path)  # snippets write sqlite:///tuning.db, images, ...
    namespace: dict[str, object] = {"__name__": "__docs__"}
    exec(SETUP.get(page.name, ""), namespace)
    mongo = request.getfixturevalue("mongodb_url") if page.name == "distributed.md" else None
    postgres = request.getfixturevalue("postgres_url") if page.name == "distributed.md" else None
    for number, source in enumerate(snippets(page)):
        if mongo is not None and postgres is not None:
            for placeholder in _MONGO_PLACEHOLDERS:
                source = source.replace(placeholder, mongo)
            source = source.replace(_POSTGRES_PLACEHOLDER, postgres)
            source = source.replace("max_evals=500", "max_evals=20")
        code = compile(
            source, f"{page.name} snippet {number}", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        )
        returned = eval(code, namespace)
        if inspect.iscoroutine(returned):
            anyio.run(_awaited, returned)


async def _awaited(coroutine: Any) -> None:
    await coroutine


def test_results_page_images_are_built(tmp_path: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_images", DOCS / "make_images.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    written = module.main(tmp_path)
    page = (DOCS / "results.md").read_text()
    shown = set(re.findall(r"\]\(images/(\w+)\.png\)", page))
    from asyncopt.plot import KINDS

    assert shown == set(KINDS)  # every plot kind is on the page
    assert {path.stem for path in written} == shown
    for path in written:
        assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
