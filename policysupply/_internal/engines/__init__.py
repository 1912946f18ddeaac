"""Rego engines behind one small seam (see ``base``), and the choice between them.

``opa`` runs the real ``opa`` binary; ``embedded`` runs rego-cpp through
``regopy`` in a worker process. ``auto`` picks OPA when a binary is found
(explicit path, ``POLICYSUPPLY_OPA``, ``PATH``), else the embedded engine.
Each engine's transport lives in its own module and is imported lazily.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

from policysupply._internal.engines.base import EngineUnavailableError, RegoEngine

if TYPE_CHECKING:
    from policysupply._internal.engines.opa import OpaEngine

ENGINE_NAMES = ("auto", "opa", "embedded")
ENGINE_ENV = "POLICYSUPPLY_ENGINE"

# What callers pass: a name, an engine object, or None (``POLICYSUPPLY_ENGINE``, else auto).
EngineChoice = str | RegoEngine | None

_LOCK = threading.Lock()
_OPA_ENGINES: dict[str, OpaEngine] = {}


def _opa_engine(path: str) -> OpaEngine:
    # One engine per binary: it caches the binary's version and capabilities.
    from policysupply._internal.engines.opa import OpaEngine

    with _LOCK:
        engine = _OPA_ENGINES.get(path)
        if engine is None:
            engine = _OPA_ENGINES[path] = OpaEngine(opa=path)
        return engine


def select_engine(
    engine: EngineChoice = None, *, opa: str | os.PathLike[str] | None = None
) -> RegoEngine:
    """The engine for ``engine``.

    Args:
        engine: ``"opa"``, ``"embedded"``, ``"auto"``, an engine object
            (returned as is), or ``None`` for ``POLICYSUPPLY_ENGINE``, else
            ``"auto"``.
        opa: Path of the ``opa`` binary (else ``POLICYSUPPLY_OPA``, else ``PATH``).

    Raises:
        EngineUnavailableError: ``"opa"`` was asked for and no binary is found.
        EngineUnavailableError: ``POLICYSUPPLY_ENGINE`` names no engine.
        ValueError: An unknown engine name.
    """
    if engine is not None and not isinstance(engine, str):
        if not isinstance(engine, RegoEngine):
            raise TypeError(f"not a Rego engine: {engine!r}")
        return engine
    from_env = not engine and bool(os.environ.get(ENGINE_ENV))
    name = (engine or os.environ.get(ENGINE_ENV) or "auto").strip().lower()
    if name == "embedded":
        from policysupply._internal.engines.embedded import default_engine

        return default_engine()
    if name not in ("opa", "auto") and from_env:
        # Configuration, not a programming error: typed, so a CLI reports it as such.
        raise EngineUnavailableError(
            f"{ENGINE_ENV}={name!r} is not a Rego engine: choose one of {', '.join(ENGINE_NAMES)}"
        )
    if name not in ("opa", "auto"):
        raise ValueError(f"unknown Rego engine {name!r}: choose one of {', '.join(ENGINE_NAMES)}")
    from policysupply._internal.engines.opa import find_opa

    # An explicit or POLICYSUPPLY_OPA path that is unusable is an error even
    # for auto: the caller named a binary, silently using another engine would hide it.
    path = find_opa(opa)
    if path is not None:
        return _opa_engine(path)
    if name == "opa":
        raise EngineUnavailableError(
            "the OPA engine needs the `opa` binary: install it (https://www.openpolicyagent.org/"
            "docs/#running-opa), put it on PATH or set POLICYSUPPLY_OPA to its path; or choose "
            "engine='embedded'"
        )
    from policysupply._internal.engines.embedded import default_engine

    return default_engine()
