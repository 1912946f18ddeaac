"""Comparing an engine's answers with OPA's compliance cases: one order, one normal form.

Shared by the compliance runner (``runner.py``) and ``scripts/probe_embedded.py``
so that both read a case's ``want_result`` the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def opa_order(v: Any) -> tuple[int, Any]:
    """A sort key in OPA's order across types: null, boolean, number, string, array, object."""
    if v is None:
        return (0, 0)
    if isinstance(v, bool):
        return (1, v)
    if isinstance(v, (int, float)):
        return (2, v)
    if isinstance(v, str):
        return (3, v)
    if isinstance(v, list):
        return (4, [opa_order(x) for x in v])
    return (5, sorted((k, opa_order(x)) for k, x in v.items()))


def comparable(v: Any) -> Any:
    """``v`` hashable and number-kind-blind (OPA compares 1 and 1.0 as equal).

    Numbers past 2^53 stay exact (a float would make neighbours equal);
    object keys are read as Go's YAML decoder reads them into
    ``map[string]any`` (``1:`` is ``"1"``).
    """
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, (int, float)):
        return float(v) if abs(v) < 2**53 else v
    if isinstance(v, list):
        return tuple(comparable(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((_key(k), comparable(x)) for k, x in v.items()))
    return repr(v)


def _key(k: Any) -> str:
    if isinstance(k, bool):
        return "true" if k else "false"
    return "null" if k is None else str(k)


def expected_bindings(want_result: Iterable[Mapping[str, Any]] | None) -> set[Any]:
    """A case's ``want_result``, each binding set in :func:`comparable` form."""
    return {comparable(dict(b)) for b in want_result or []}


def result_bindings(
    results: Iterable[Mapping[str, Any]], *, ignore_generated_vars: bool, sort_bindings: bool
) -> set[Any]:
    """The bindings of an engine's result sets, read as the case asks.

    Args:
        results: OPA-shaped result sets (``{"bindings": {...}, ...}``).
        ignore_generated_vars: Drop OPA's generated ``__localq`` variables.
        sort_bindings: Sort array values in OPA's order (the case's
            ``sort_bindings``: their order is not part of the answer).
    """
    out = set()
    for r in results:
        b = dict(r.get("bindings") or {})
        if ignore_generated_vars:
            b = {k: v for k, v in b.items() if not k.startswith("__localq")}
        if sort_bindings:
            b = {k: sorted(v, key=opa_order) if isinstance(v, list) else v for k, v in b.items()}
        out.add(comparable(b))
    return out
