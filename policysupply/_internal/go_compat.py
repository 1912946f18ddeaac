"""Go's behaviour where OPA's signatures depend on it: encoding/json's output, filepath.Match.

Pure functions; ``opa_signatures`` re-exports them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

# -- Go's encoding/json, as far as OPA's hashes and tokens depend on it ------------


class RawNumber:
    """A JSON number kept as the literal text it was written with (Go's ``json.Number``)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"RawNumber({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RawNumber) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)


_ESCAPE_PLAIN = re.compile('[\\x00-\\x1f"\\\\\u2028\u2029]')
_ESCAPE_HTML = re.compile('[\\x00-\\x1f"\\\\\u2028\u2029<>&]')
_SHORT = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(m: re.Match[str]) -> str:
    c = m.group(0)
    return _SHORT.get(c) or f"\\u{ord(c):04x}"


def go_string(s: str, *, html: bool) -> str:
    """``s`` as Go's JSON encoder writes it (Go 1.22+ short escapes; HTML escaping optional)."""
    return '"' + (_ESCAPE_HTML if html else _ESCAPE_PLAIN).sub(_escape_char, s) + '"'


def go_float(value: float) -> str:
    """A float64 as Go's ``encoding/json`` writes it (shortest digits, ``e`` only when far out)."""
    if not math.isfinite(value):
        raise ValueError(f"{value} has no JSON form")
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    from decimal import Decimal

    a = abs(value)
    d = Decimal(repr(value))
    if a < 1e-6 or a >= 1e21:
        sign, digits, exponent = d.normalize().as_tuple()
        exponent = int(exponent)  # finite: never 'n'/'N'/'F'
        text = "".join(map(str, digits))
        exp = exponent + len(text) - 1
        mant = text[0] + ("." + text[1:] if len(text) > 1 else "")
        return f"{'-' if sign else ''}{mant}e{'-' if exp < 0 else '+'}{abs(exp)}"
    return format(d.normalize(), "f")


def go_json(value: Any, *, html: bool) -> str:
    """``value`` as Go's ``json.Marshal`` writes a decoded document (map keys sorted).

    Strings follow Go's escaping; :class:`RawNumber` is written verbatim;
    Python floats as Go writes a float64.
    """
    parts: list[str] = []
    _go_json(value, parts, html)
    return "".join(parts)


def _go_json(value: Any, out: list[str], html: bool) -> None:
    if isinstance(value, RawNumber):
        out.append(value.text)
    elif isinstance(value, str):
        out.append(go_string(value, html=html))
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, float):
        out.append(go_float(value))
    elif isinstance(value, Mapping):
        out.append("{")
        for i, key in enumerate(sorted(value)):
            if not isinstance(key, str):
                raise ValueError(f"object key {key!r} is not a string")
            if i:
                out.append(",")
            out.append(go_string(key, html=html))
            out.append(":")
            _go_json(value[key], out, html)
        out.append("}")
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _go_json(item, out, html)
        out.append("]")
    else:
        raise ValueError(f"a {type(value).__name__} has no JSON form")


# -- exclude_files: Go's path/filepath.Match ------------------------------------------


def _class_char(pattern: str, j: int) -> tuple[str, int] | None:
    r"""A class's character at ``pattern[j]`` (``\\`` escapes) and the index after it.

    ``None`` if there is none, or it is an unescaped ``-`` or ``]``.
    """
    if j >= len(pattern):
        return None
    c = pattern[j]
    if c == "\\":
        j += 1
        if j >= len(pattern):
            return None
        c = pattern[j]
    elif c in "-]":
        return None
    return c, j + 1


def _go_class(pattern: str, i: int) -> tuple[str, int] | None:
    """Translates a ``[...]`` class starting at ``pattern[i]``; ``None`` if malformed."""
    j = i + 1
    negate = j < len(pattern) and pattern[j] == "^"
    if negate:
        j += 1
    items: list[str] = []
    first = True
    while True:
        if j >= len(pattern):
            return None
        c = pattern[j]
        if c == "]" and not first:
            break
        first = False
        got = _class_char(pattern, j)
        if got is None:
            return None
        lo, j = got
        if j < len(pattern) and pattern[j] == "-":
            got = _class_char(pattern, j + 1)
            if got is None:
                return None
            hi, j = got
            if hi < lo:
                return None
            items.append(f"{re.escape(lo)}-{re.escape(hi)}")
        else:
            items.append(re.escape(lo))
    body = "".join(items)
    return (f"[^{body}]" if negate else f"[{body}]"), j + 1


def go_match_regex(pattern: str) -> re.Pattern[str] | None:
    r"""A regex equivalent to Go's ``filepath.Match(pattern, name)``; ``None`` if malformed.

    ``*`` matches any run of non-``/`` characters, ``?`` one, ``[...]`` /
    ``[^...]`` a class, ``\\`` escapes. A malformed pattern matches nothing
    (Go returns ``ErrBadPattern``, which OPA reads as no match).
    """
    out: list[str] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            cls = _go_class(pattern, i)
            if cls is None:
                return None
            out.append(cls[0])
            i = cls[1]
        elif c == "\\":
            if i + 1 >= len(pattern):
                return None
            out.append(re.escape(pattern[i + 1]))
            i += 2
        else:
            out.append(re.escape(c))
            i += 1
    return re.compile("".join(out), re.DOTALL)


def go_match(pattern: str, name: str) -> bool:
    """Go's ``filepath.Match`` on ``/``-separated names (malformed pattern: ``False``)."""
    rx = go_match_regex(pattern)
    return bool(rx is not None and rx.fullmatch(name))


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")
