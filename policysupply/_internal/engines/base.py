"""The seam every Rego engine implements.

Two operations, nothing else: *check* modules and data (the diagnostics
``opa check`` would report) and *prepare* them once for repeated *queries*
(results shaped exactly as OPA's REST API and ``opa eval`` return them).

An engine answers as OPA would or raises: compile problems are
``BundleError`` naming the module and OPA's line, runtime errors (type errors,
division by zero, builtin errors, conflicting values) are ``BundleError`` too,
never an undefined result; an engine that cannot answer a query exactly (an
unsupported builtin or construct) raises ``UnsupportedByEngineError``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import attrs

from policysupply.errors import (
    EngineUnavailableError,
    UnsupportedByEngineError,
)

__all__ = [
    "EngineUnavailableError",
    "Prepared",
    "RegoDiagnostic",
    "RegoEngine",
    "UnsupportedByEngineError",
]

# Rego version of each module, by module name: 0 (v0 syntax and semantics) or 1.
RegoVersions = Mapping[str, int]

# One result set as OPA returns it: {"expressions": [{"value": ..., "text": ...}],
# "bindings": {...}} (either key may be absent, as in OPA's JSON).
ResultSet = Mapping[str, Any]


@attrs.frozen(kw_only=True)
class RegoDiagnostic:
    """One problem found in a module, located as OPA locates it."""

    entry: str
    line: int | None
    message: str


@runtime_checkable
class Prepared(Protocol):
    """Modules and data compiled once, ready for many queries."""

    @property
    def engine(self) -> str:
        """Name of the engine that answers (``"opa"`` or ``"embedded"``)."""
        ...

    def query(self, query: str, input: Any = None) -> Sequence[ResultSet]:
        """Evaluates ``query``; an empty sequence means undefined.

        Raises:
            BundleError: The query failed to parse, compile or evaluate.
        """
        ...

    def close(self) -> None:
        """Releases processes or memory held for this preparation."""
        ...


@runtime_checkable
class RegoEngine(Protocol):
    """A Rego engine: check, and prepare for evaluation."""

    @property
    def name(self) -> str:
        """``"opa"`` or ``"embedded"``."""
        ...

    def check(
        self, modules: Mapping[str, str], data: Mapping[str, Any], *, rego_versions: RegoVersions
    ) -> list[RegoDiagnostic]:
        """Every problem ``opa check`` would report for these modules (empty: none)."""
        ...

    def prepare(
        self, modules: Mapping[str, str], data: Mapping[str, Any], *, rego_versions: RegoVersions
    ) -> Prepared:
        """Compiles modules and data for repeated queries.

        Raises:
            BundleError: A module does not compile.
        """
        ...
