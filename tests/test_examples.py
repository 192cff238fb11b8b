"""The examples run as documented (each in a fresh interpreter)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("quickstart.py", "best params:"),
        ("remote_api.py", "best loss"),
        ("futures.py", "best loss"),
        ("pruning_digits.py", "best validation error"),
    ],
)
def test_example_runs(script: str, expected: str) -> None:
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / script)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert expected in completed.stdout
