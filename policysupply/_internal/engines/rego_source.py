"""Rego source text, read without a Rego parser.

The package path of a module and the single-expression wrapper of a query,
and (re-exported from their modules) the lexer (``rego_lexer``), the value
checks (``rego_values``), calls and arities (``rego_calls``), what rego-cpp
would answer differently (``rego_unsupported``), OPA's semantic checks
(``rego_semantics``) and syntax (``rego_syntax``). The embedded engine
(``embedded``) runs these before rego-cpp sees a module; the OPA engine does
not need them.
"""

from __future__ import annotations

import json

from policysupply._internal.engines.rego_calls import (
    called_builtins as called_builtins,
)
from policysupply._internal.engines.rego_calls import (
    calls as calls,
)
from policysupply._internal.engines.rego_calls import (
    function_arities as function_arities,
)
from policysupply._internal.engines.rego_calls import (
    opa_builtins as opa_builtins,
)
from policysupply._internal.engines.rego_lexer import (
    _KEYWORDS as _KEYWORDS,
)
from policysupply._internal.engines.rego_lexer import (
    _Tok as _Tok,
)
from policysupply._internal.engines.rego_lexer import (
    _tokens as _tokens,
)
from policysupply._internal.engines.rego_lexer import (
    line_of as line_of,
)
from policysupply._internal.engines.rego_lexer import (
    tok_offset as tok_offset,
)
from policysupply._internal.engines.rego_semantics import (
    opa_builtin_types as opa_builtin_types,
)
from policysupply._internal.engines.rego_semantics import (
    semantic_problems as semantic_problems,
)
from policysupply._internal.engines.rego_syntax import (
    opa_error_line as opa_error_line,
)
from policysupply._internal.engines.rego_syntax import (
    syntax_problem as syntax_problem,
)
from policysupply._internal.engines.rego_syntax import (
    v1_body_without_if as v1_body_without_if,
)
from policysupply._internal.engines.rego_unsupported import (
    unsupported_constructs as unsupported_constructs,
)
from policysupply._internal.engines.rego_values import (
    MAX_NESTING as MAX_NESTING,
)
from policysupply._internal.engines.rego_values import (
    _nesting_message as _nesting_message,
)
from policysupply._internal.engines.rego_values import (
    check_value_nesting as check_value_nesting,
)
from policysupply._internal.engines.rego_values import (
    excessive_nesting as excessive_nesting,
)
from policysupply._internal.engines.rego_values import (
    first_inexact_number as first_inexact_number,
)
from policysupply._internal.engines.rego_values import (
    first_non_plain_string as first_non_plain_string,
)
from policysupply._internal.engines.rego_values import (
    is_plain_string as is_plain_string,
)
from policysupply.errors import BundleError


def package_path(source: str, *, entry: str) -> tuple[str, ...]:
    """Returns the package path of a module (``package a.b["c"]`` → ``("a","b","c")``).

    Raises:
        BundleError: The module has no parseable ``package`` declaration.
    """
    toks = _tokens(source)
    first = next(toks, None)
    if first is None or first.text != "package":
        raise BundleError(
            "module does not start with a package declaration",
            entry=entry,
            line=line_of(source, first.offset) if first else 1,
        )
    path: list[str] = []
    expect_name = True
    for tok in toks:
        if expect_name:
            if tok.kind == "ident":
                path.append(tok.text)
                expect_name = False
                continue
            break
        if tok.text == ".":
            expect_name = True
        elif tok.text == "[":
            key = next(toks, None)
            close = next(toks, None)
            if (
                key is None
                or key.kind not in ("string", "raw")
                or close is None
                or close.text != "]"
            ):
                raise BundleError(
                    "malformed package path", entry=entry, line=line_of(source, tok.offset)
                )
            # OPA takes a raw string (`...`) key as it is written.
            path.append(json.loads(key.text) if key.kind == "string" else key.text[1:-1])
        else:
            break
    if not path or expect_name:
        raise BundleError("malformed package path", entry=entry, line=line_of(source, first.offset))
    return tuple(path)


RESULT_VAR = "__policysupply_result__"


def wrap_single_expression(query: str) -> str | None:
    """Rewrites a single-expression query so that a ``false`` value survives.

    In Rego query semantics an expression that evaluates to ``false`` fails
    the query; ``opa eval`` and OPA's REST API nonetheless report the value
    of a lone expression, and rego-cpp does not. Binding the expression to a
    variable gives OPA's answer. Returns ``None`` for queries that already
    bind variables, hold several expressions, or use keywords that cannot be
    assigned.
    """
    depth = 0
    toks = list(_tokens(query))
    if not toks or toks[0].text in ("not", "some", "every", "import", "package", "default"):
        return None
    for tok in toks:
        if tok.text in ("(", "[", "{"):
            depth += 1
        elif tok.text in (")", "]", "}"):
            depth -= 1
        elif depth == 0 and (tok.text in (":=", "=", ";", "with") or tok.kind == "other"):
            return None
    if "\n" in query.strip():
        return None
    return f"{RESULT_VAR} := ({query})"
