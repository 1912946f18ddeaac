"""A bundle's Rego handed to an engine: the check, one preparation per engine, the answer.

Used by :class:`policysupply.bundle.Bundle` (``check``, ``prepare``,
``evaluate``), which never asks which engine it has: each engine answers the
check's choices (``strict``, ``refuse``) itself. The engines load with the
first call, not with the bundle.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from policysupply.errors import BundleError

if TYPE_CHECKING:
    from policysupply._internal.bundle_views import Cache
    from policysupply._internal.engines import EngineChoice
    from policysupply._internal.engines.base import (
        CheckRequest,
        Prepared,
        RegoDiagnostic,
        RegoEngine,
    )


def start_check(engine: EngineChoice, request: CheckRequest) -> Callable[[], None]:
    """Starts ``Bundle.check``; the function returned finishes it (see ``Bundle._start_check``)."""
    from policysupply._internal.engines import select_engine
    from policysupply._internal.engines.base import BackgroundCheck

    eng = select_engine(engine)
    if isinstance(eng, BackgroundCheck):
        pending = eng.start_check(request)
        return lambda: raise_first(pending())
    raise_first(eng.check(request))
    return lambda: None


def prepare(cache: Cache, engine: EngineChoice, make: Callable[[RegoEngine], Prepared]) -> Prepared:
    """``make(engine)``, once per engine for a bundle; see ``Bundle.prepare``."""
    from policysupply._internal.engines import select_engine

    # Keyed by the engine object (select_engine returns one per binary),
    # not by anything that would ask the engine about itself.
    eng = select_engine(engine)
    with cache.lock:
        prepared = cache.prepared.get(eng)
        if prepared is None:
            prepared = cache.prepared[eng] = make(eng)
        return prepared


def answer(results: Sequence[Mapping[str, Any]]) -> Any:
    """What ``Bundle.evaluate`` returns for a query's result sets."""
    if not results:
        return None
    first = results[0]
    bindings = first.get("bindings") or {}
    if bindings:
        return bindings
    exprs = [e.get("value") for e in first.get("expressions", [])]
    return exprs[0] if len(exprs) == 1 else exprs


def raise_first(diags: Sequence[RegoDiagnostic]) -> None:
    """Raises ``BundleError`` for the first diagnostic, listing the others."""
    if diags:
        first = diags[0]
        more = "".join(
            f"\n  {d.entry}{f':{d.line}' if d.line else ''}: {d.message}" for d in diags[1:]
        )
        suffix = f" ({len(diags) - 1} more problem(s):{more})" if more else ""
        raise BundleError(first.message + suffix, entry=first.entry, line=first.line)
