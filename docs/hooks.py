"""mkdocs hooks: build the images of docs/results.md before the pages (see make_images.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any


def on_pre_build(config: Any) -> None:
    """Run docs/make_images.py, writing docs/images/*.png from a real study."""
    docs = Path(config["docs_dir"])
    spec = importlib.util.spec_from_file_location("make_images", docs / "make_images.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(docs / "images")
