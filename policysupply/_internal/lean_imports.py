"""Imports of third-party packages without the parts policysupply never uses."""

from __future__ import annotations

import sys
import types
from typing import Any


def httpx_without_cli() -> None:
    """Imports httpx without loading its command-line client.

    ``import httpx`` also imports ``httpx._main`` (its CLI) whenever click and
    rich are installed, as they are here: about 70 ms of click, rich and
    pygments on every start of our CLI for code that never runs. A placeholder
    stands in for ``httpx._main`` during the import and is removed afterwards,
    so a later ``import httpx._main`` loads the real module, and ``httpx.main``
    still works (it loads the real one on first call).
    """
    if "httpx" in sys.modules or "httpx._main" in sys.modules:
        return
    placeholder = types.ModuleType("httpx._main")

    def main(*args: Any, **kwargs: Any) -> Any:
        import importlib

        sys.modules.pop("httpx._main", None)
        return importlib.import_module("httpx._main").main(*args, **kwargs)

    placeholder.main = main  # type: ignore[attr-defined]
    sys.modules["httpx._main"] = placeholder
    try:
        import httpx  # noqa: F401
    finally:
        if sys.modules.get("httpx._main") is placeholder:
            del sys.modules["httpx._main"]
