"""The examples of docs/spaces.md run, and the results they show are the real ones."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

PAGE = Path(__file__).resolve().parents[2] / "docs" / "spaces.md"
# An expression on its own line followed by "# <repr of its value>".
SHOWN = re.compile(r"^(?P<expr>ao\.\w+\(.*\)(\[.*\])?(\.\w+\(\))?)\n# (?P<shown>[\[{].*)$", re.M)


def blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", PAGE.read_text(encoding="utf-8"), re.S)


def test_page_has_examples() -> None:
    assert len(blocks()) >= 8


def test_examples_run_and_show_their_real_results(capsys: pytest.CaptureFixture[str]) -> None:
    namespace: dict[str, Any] = {}
    checked = 0
    for block in blocks():
        position = 0
        for match in SHOWN.finditer(block):
            exec(block[position : match.start()], namespace)
            value = repr(eval(match["expr"], namespace))
            shown = match["shown"].split("  ")[0].strip()
            # "0.0633..." on the page stands for the remaining digits.
            pattern = r"\d*".join(re.escape(part) for part in shown.split("..."))
            assert re.fullmatch(pattern, value), (match["expr"], value, shown)
            checked += 1
            position = match.end()
        exec(block[position:], namespace)
    assert checked == 7
    printed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in printed] == [
        "classifier",
        "svm_C",
        "kernel",
        "gamma",
        "depth",
        "max_depth",
        "trees",
    ]
