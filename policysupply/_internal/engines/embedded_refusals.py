"""What the embedded engine refuses, and how it says so.

The builtins listed in ``embedded_unsupported.json``, values rego-cpp would
mishandle, crash messages and parse diagnostics, all with the advice to use
the OPA engine. See docs/adr/0012-embedded-engine-isolation.md.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from importlib import resources
from typing import Any

from policysupply._internal.engines import rego_source as src
from policysupply._internal.engines.base import (
    RegoDiagnostic,
    UnsupportedByEngineError,
)

ADVICE = "use the OPA engine (engine='opa')"


@functools.lru_cache(maxsize=1)
def unsupported_builtins() -> dict[str, str]:
    """Builtins the embedded engine refuses, name -> why (from the probe's data file)."""
    raw = resources.files("policysupply._internal.engines").joinpath("embedded_unsupported.json")
    table: dict[str, Any] = json.loads(raw.read_text())["builtins"]
    return {name: str(info["why"]) for name, info in table.items()}


def _refusal(
    entry: str | None, source: str, found: list[tuple[int, str]]
) -> UnsupportedByEngineError:
    off, what = found[0]
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    return UnsupportedByEngineError(
        f"the embedded engine cannot evaluate {what} exactly as OPA does{more}; {ADVICE}",
        entry=entry,
        line=src.line_of(source, off) if entry is not None else None,
    )


def _check_plain(value: Any, what: str, entry: str | None = None) -> None:
    number = src.first_inexact_number(value)
    if number is not None:
        raise UnsupportedByEngineError(
            f"{what} holds the number {number!r}, beyond what the embedded engine "
            f"computes with exactly (2^53, or 16 significant digits); {ADVICE}",
            entry=entry,
        )
    bad = src.first_non_plain_string(value)
    if bad is not None:
        shown = bad if len(bad) <= 40 else bad[:37] + "..."
        raise UnsupportedByEngineError(
            f"{what} holds the string {shown!r}; the embedded engine handles only "
            'printable ASCII strings without " or \\ exactly (it applies builtins '
            f"to the escaped form); {ADVICE}",
            entry=entry,
        )


def _crash_message(what: str, reason: str) -> str:
    return (
        f"the embedded engine (rego-cpp) crashed {what} ({reason}); the calling "
        f"process is unaffected; {ADVICE}"
    )


def _parse_diagnostic(error: Mapping[str, Any], name: str, source: str) -> RegoDiagnostic:
    message = str(error.get("message") or "parse error")
    line = None
    if "offset" in error and error.get("name") == name:
        # rego-cpp reports byte offsets into the UTF-8 source; OPA's line may
        # be a later one (it points at the token that cannot continue).
        line = src.opa_error_line(source, int(error["offset"]), message)
    if message == "Invalid collection":
        message += f" (if `opa check` accepts this module: {ADVICE})"
    return RegoDiagnostic(entry=name, line=line, message=message)
