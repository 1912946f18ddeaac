"""The embedded engine's answers shaped as OPA's result sets.

Expression texts and ``data`` references of a query, rego-cpp's error text,
and its results read into ``expressions`` and ``bindings``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from policysupply._internal.engines import rego_source as src
from policysupply._internal.engines.base import (
    ResultSet,
    UnsupportedByEngineError,
)
from policysupply._internal.engines.embedded_refusals import (
    ADVICE,
)
from policysupply.errors import BundleError


def _data_refs(query: str) -> list[str]:
    toks = list(src._tokens(query))
    out: list[str] = []
    i = 0
    while i < len(toks):
        if toks[i].text == "data":
            parts = ["data"]
            j = i + 1
            while j + 1 < len(toks) and toks[j].text == "." and toks[j + 1].kind == "ident":
                parts.append(toks[j + 1].text)
                j += 2
            out.append(".".join(parts))
            i = j
        else:
            i += 1
    return out


def _error_text(error: Mapping[str, Any]) -> str:
    errors = error.get("errors")
    if isinstance(errors, list) and errors:
        return "; ".join(
            f"{e.get('code') or 'eval_error'}: {e.get('message') or 'evaluation error'}"
            for e in errors
            if isinstance(e, Mapping)
        )
    return str(error.get("message") or "evaluation error")


def _expression_texts(query: str) -> list[str]:
    """The query's expressions as written (split at top-level ``;`` and newlines)."""
    toks = list(src._tokens(query))
    parts: list[str] = []
    depth = 0
    start: int | None = None
    end = 0
    for i, tok in enumerate(toks):
        newline = i > 0 and "\n" in query[toks[i - 1].offset : tok.offset]
        if depth == 0 and (tok.text == ";" or newline) and start is not None:
            parts.append(query[start:end])
            start = None
        if tok.text == ";" and depth == 0:
            continue
        if start is None:
            start = tok.offset
        if tok.text in ("(", "[", "{"):
            depth += 1
        elif tok.text in (")", "]", "}"):
            depth = max(0, depth - 1)
        end = tok.offset + len(tok.text)
    if start is not None:
        parts.append(query[start:end])
    return parts


def _is_assignment(expr: str) -> bool:
    depth = 0
    for tok in src._tokens(expr):
        if tok.text in ("(", "[", "{"):
            depth += 1
        elif tok.text in (")", "]", "}"):
            depth -= 1
        elif depth == 0 and tok.text in (":=", "="):
            return True
    return False


def _results(text: str, query: str, wrapped: bool, texts: list[str]) -> list[ResultSet]:
    if text == "undefined":
        return []
    try:
        parsed = json.loads(text)
    except RecursionError:
        raise BundleError(f"query {query!r}: the result is nested too deeply to read") from None
    except ValueError:
        raise BundleError(
            f"query {query!r}: the embedded engine returned a result it cannot "
            f"represent exactly; {ADVICE}"
        ) from None
    rows = parsed if isinstance(parsed, list) else [parsed]
    out: list[ResultSet] = []
    for row in rows:
        if not isinstance(row, Mapping):
            raise BundleError(f"query {query!r}: malformed result from the embedded engine")
        bindings = dict(row.get("bindings") or {})
        if wrapped:
            value = bindings.pop(src.RESULT_VAR, None)
            wrapped_row: dict[str, Any] = {"expressions": [{"value": value, "text": query.strip()}]}
            if bindings:
                wrapped_row["bindings"] = bindings
            out.append(wrapped_row)
            continue
        values = list(row.get("expressions") or [])
        if len(values) != len(texts):
            # rego-cpp splits some expressions in two (`x := xs[_]`); an
            # assignment or unification is true whenever there is a result.
            if not all(_is_assignment(t) for t in texts):
                raise UnsupportedByEngineError(
                    f"query {query!r}: the embedded engine cannot report the value of "
                    f"each expression; bind them to variables, or {ADVICE}"
                )
            values = [True] * len(texts)
        names = texts
        result: dict[str, Any] = {
            "expressions": [{"value": v, "text": t} for v, t in zip(values, names, strict=True)]
        }
        if bindings:
            result["bindings"] = bindings
        out.append(result)
    return out
