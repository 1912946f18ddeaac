"""Values rego-cpp would mishandle: nesting depth, non-plain strings, inexact numbers.

Used on modules, input and data before the embedded engine hands them to rego-cpp.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from policysupply._internal.engines.rego_lexer import (
    _tokens,
)
from policysupply.errors import BundleError

# rego-cpp parses and evaluates recursively on the C stack: a module holding
# `[[[…]]]` a few thousand deep, or data/input nested as deep, kills the whole
# process with SIGSEGV (no exception to catch). Nothing is handed to it past
# this depth. `opa check` accepts modules this deep; real policies and
# documents stay within a few dozen levels.
MAX_NESTING = 500


def excessive_nesting(source: str) -> int | None:
    """Offset of the first ``(``/``[``/``{`` nested past ``MAX_NESTING``, if any.

    Brackets inside strings, raw strings and comments do not count.
    """
    depth = 0
    for tok in _tokens(source):
        if tok.text in ("(", "[", "{"):
            depth += 1
            if depth > MAX_NESTING:
                return tok.offset
        elif tok.text in (")", "]", "}"):
            depth = max(0, depth - 1)
    return None


def _nesting_message() -> str:
    return (
        f"brackets nested more than {MAX_NESTING} deep; the embedded engine "
        "refuses such modules (its parser would exhaust the stack)"
    )


def check_value_nesting(value: Any, *, what: str, entry: str | None = None) -> None:
    """Raises ``BundleError`` if a JSON-like value nests past ``MAX_NESTING``.

    Iterative, so it is safe on values of any depth.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, Mapping):
            children: Any = node.values()
        elif isinstance(node, (list, tuple)):
            children = node
        else:
            continue
        if depth > MAX_NESTING:
            raise BundleError(
                f"{what} is nested more than {MAX_NESTING} deep; the embedded "
                "engine refuses it (evaluating it would exhaust the stack)",
                entry=entry,
            )
        stack.extend((child, depth + 1) for child in children)


# Printable ASCII without the two characters JSON escapes. rego-cpp keeps a
# string in its escaped (JSON source) form and most builtins then work on
# the escapes: count("a\"b") is 4, upper("\n") is "\N", base64 and hashes
# encode the backslashes, `<` orders by them; upper/lower and hex.encode also
# mishandle non-ASCII letters. Strings outside this set are refused.
_PLAIN = re.compile(r"[ !#-\[\]-~]*\Z")


# Past 2^53 a float loses integers; OPA computes exactly, rego-cpp does not
# (1e30 + 1 is 1000000000000000019884624838657 there).
_EXACT_LIMIT = 2**53


def _too_big(text: str) -> bool:
    try:
        return abs(float(text)) >= _EXACT_LIMIT
    except (OverflowError, ValueError):
        return True


# rego-cpp keeps 16 significant digits of a float (0.14285714285714285
# becomes 0.1428571428571428, equal to it, and is written so).
_DIGITS_LIMIT = 16


def too_many_digits(text: str) -> bool:
    """A decimal number (as written) with more significant digits than rego-cpp keeps."""
    try:
        digits = Decimal(text).normalize().as_tuple().digits
    except InvalidOperation:
        return False
    return len(digits) > _DIGITS_LIMIT


def first_inexact_number(value: Any, *, limit: int = 1_000_000) -> int | float | None:
    """The first number in a JSON-like value too large or too precise for rego-cpp.

    Integers past 2^53 too (rego-cpp adds and multiplies big integers exactly
    but divides them and takes remainders as doubles), and floats with more
    than 16 significant digits.
    """
    stack: list[Any] = [value]
    seen = 0
    while stack and seen < limit:
        node = stack.pop()
        seen += 1
        if isinstance(node, (int, float)) and not isinstance(node, bool):
            if abs(node) >= _EXACT_LIMIT:
                return node
            if isinstance(node, float) and too_many_digits(repr(node)):
                return node
            continue
        if isinstance(node, Mapping):
            stack.extend(node.values())
        elif isinstance(node, (list, tuple, set, frozenset)):
            stack.extend(node)
    return None


def is_plain_string(value: str) -> bool:
    """True if rego-cpp handles ``value`` exactly (see ``_PLAIN``)."""
    return _PLAIN.match(value) is not None


def first_non_plain_string(value: Any, *, limit: int = 1_000_000) -> str | None:
    """The first string (value or object key) in a JSON-like value that is not plain."""
    stack: list[Any] = [value]
    seen = 0
    while stack:
        node = stack.pop()
        seen += 1
        if seen > limit:
            return None
        if isinstance(node, str):
            if not is_plain_string(node):
                return node
        elif isinstance(node, Mapping):
            for k, v in node.items():
                if isinstance(k, str) and not is_plain_string(k):
                    return k
                stack.append(v)
        elif isinstance(node, (list, tuple, set, frozenset)):
            stack.extend(node)
    return None
