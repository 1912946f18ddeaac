"""The seam every Rego engine implements.

Two operations, nothing else: *check* modules and data (the diagnostics
``opa check`` would report; whether strict, and whether to refuse what the
engine cannot evaluate, are the caller's explicit choices) and *prepare*
them once for repeated *queries* (results shaped exactly as OPA's REST API
and ``opa eval`` return them).

An engine answers as OPA would or raises: compile problems are
``BundleError`` naming the module and OPA's line, runtime errors (type errors,
division by zero, builtin errors, conflicting values) are ``BundleError`` too,
never an undefined result; an engine that cannot answer a query exactly (an
unsupported builtin or construct) raises ``UnsupportedByEngineError``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import attrs

from policysupply.errors import (
    EngineUnavailableError,
    UnsupportedByEngineError,
)

__all__ = [
    "BackgroundCheck",
    "CheckRequest",
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


@attrs.frozen(kw_only=True)
class CheckRequest:
    """What to check and how: the one argument of every engine's ``check``.

    Attributes:
        modules: Module name → Rego source.
        data: The data document.
        rego_versions: Each module's Rego version.
        strict: Also OPA's strict-mode errors, as ``opa check --strict``
            (unused imports and local variables, deprecated builtins,
            shadowed ``input``/``data``).
        refuse: Checking before this engine evaluates the modules: raise
            for what it would answer differently from OPA. When false
            (a bundle checked for OPA to evaluate), such builtins are
            fine and constructs the engine cannot read are diagnostics.
        data_is_json: ``data`` was parsed from JSON or YAML files, so it need
            not be validated as JSON again.
    """

    modules: Mapping[str, str]
    data: Mapping[str, Any]
    rego_versions: RegoVersions
    strict: bool
    refuse: bool
    data_is_json: bool = False


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

    def check(self, request: CheckRequest) -> list[RegoDiagnostic]:
        """Every problem ``opa check`` would report for ``request`` (empty: none).

        Raises:
            UnsupportedByEngineError: ``request.strict`` and the engine cannot
                check as ``opa check --strict``; or ``request.refuse`` and the
                modules use something the engine cannot answer exactly.
        """
        ...

    def prepare(
        self, modules: Mapping[str, str], data: Mapping[str, Any], *, rego_versions: RegoVersions
    ) -> Prepared:
        """Compiles modules and data for repeated queries.

        Raises:
            BundleError: A module does not compile.
        """
        ...


@runtime_checkable
class BackgroundCheck(Protocol):
    """An engine that can run :meth:`RegoEngine.check` while its caller works on.

    ``Bundle`` uses it when present (the CLI writes the tarball while the OPA
    engine's ``opa check`` runs); engines without it are checked in place.
    """

    def start_check(self, request: CheckRequest) -> Callable[[], list[RegoDiagnostic]]:
        """Starts :meth:`RegoEngine.check`; the function returned waits for its diagnostics.

        The function must be called on every path (it releases what the check
        holds).
        """
        ...
