"""``python -m asyncopt``: the command line (see `asyncopt.cli`)."""

from __future__ import annotations

import sys

from asyncopt.cli import main

if __name__ == "__main__":
    sys.exit(main())
