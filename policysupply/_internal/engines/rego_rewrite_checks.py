r"""Rewrite stage ``checks``: run-time guards where rego-cpp would answer differently.

Some differences depend on values known only at evaluation, so they cannot
be refused when a module is loaded. This stage wraps the values concerned in
helper functions (named ``__psc...``, appended to the module) that pass a
value through unchanged when rego-cpp treats it as OPA does, and otherwise
fail with an error naming the reason (``__psc_refused_<reason>``), which the
engine reports as ``UnsupportedByEngineError``. Guarded today:

* ``sprintf``: OPA (Go's fmt) writes ``%!s(int64=7)`` for a number given to
  ``%s``, and ``%!v(MISSING)`` / ``%!(EXTRA ...)`` when verbs and arguments
  do not pair up; rego-cpp writes ``7`` and ignores the mismatch, and writes
  ``null`` and collections given to ``%s`` wrongly. Every ``%s`` becomes
  ``%v`` (the same text for strings, and OPA's text for every other value but
  numbers), and numbers given to it fail. An argument array given by
  reference is counted against the verbs.
* Strings holding quotes: rego-cpp keeps the quotes ``sprintf`` writes for
  strings inside a collection escaped (``\"``), so builtins that read a
  string's characters (``count``, ``indexof``, ``substring``, hashes,
  encodings, regexes, ``sort`` ...) see the backslashes. Their arguments fail
  when they are such a string; what reads it consistently (output, equality,
  ``concat``, ``upper``, ``split`` on a literal separator) is not guarded.
  Plain literals and collection literals are not wrapped.
* Divisions: OPA divides in arbitrary precision, rego-cpp keeps 16
  significant digits of the quotient (``-1 / 7``, ``1 / 3 == 0.333...``).
  ``a / b`` becomes ``__psc_div(a, b)``, which fails unless rego-cpp's
  quotient has at most 15 significant digits and no exponent (then it is the
  exact quotient, which OPA also has), e.g. ``10 / 4``, ``x / 1024``.
"""

from __future__ import annotations

import re

from policysupply._internal.engines.base import UnsupportedByEngineError
from policysupply._internal.engines.embedded_refusals import ADVICE
from policysupply._internal.engines.rego_lexer import _KEYWORDS, _call_args, _Tok, _tokens

# Reason code (in the error a guard raises) -> what the refusal says.
REASONS = {
    "sprintf_s_number": (
        "sprintf given a number for %s (OPA writes it as %!s(int64=...) or %!s(float64=...))"
    ),
    "quoted": (
        "a builtin reading the characters of a string that holds quotes sprintf wrote "
        "for strings inside a collection (rego-cpp keeps them escaped, so lengths, "
        "positions, bytes and order differ)"
    ),
    "quotient": (
        "a division whose quotient has more significant digits than rego-cpp keeps "
        "(16; OPA divides exactly: -1 / 7 is -0.14285714285714285 there)"
    ),
    "sprintf_count": (
        "sprintf given a number of arguments other than the number of its verbs "
        "(OPA writes %!v(MISSING) or %!(EXTRA ...))"
    ),
}

_MARK = "__psc_refused_"
_MARK_RE = re.compile(_MARK + r"([a-z_]+)")


def _fail(reason: str) -> str:
    # time.parse_duration_ns puts its argument into its error message, which
    # is how the engine recognises the refusal (see ``refusal_reason``).
    return f'time.parse_duration_ns("{_MARK}{reason}")'


_HELPERS = {
    "__psc_s": (
        "__psc_s(x) := x if not is_number(x)\n"
        f"__psc_s(x) := {_fail('sprintf_s_number')} if is_number(x)\n"
    ),
    "__psc_div": (
        "__psc_div(a, b) := q if {\n\tq := a / b\n\t__psc_short(q)\n}\n"
        f"__psc_div(a, b) := {_fail('quotient')} if {{\n\tq := a / b\n"
        "\tnot __psc_short(q)\n}\n"
        # At most 15 significant digits, no exponent: the quotient is exact.
        '__psc_short(q) if {\n\ts := sprintf("%v", [q])\n'
        '\tnot contains(s, "e")\n'
        '\tcount(trim_left(replace(replace(s, "-", ""), ".", ""), "0")) < 16\n}\n'
    ),
    "__psc_q": (
        "__psc_q(x) := x if not __psc_qs(x)\n"
        f"__psc_q(x) := {_fail('quoted')} if __psc_qs(x)\n"
        '__psc_qs(x) if {\n\tis_string(x)\n\tcontains(x, "\\"")\n}\n'
    ),
    "__psc_qa": (
        "__psc_qa(xs) := xs if not __psc_qe(xs)\n"
        f"__psc_qa(xs) := {_fail('quoted')} if __psc_qe(xs)\n"
        "__psc_qe(xs) if {\n\tnot is_string(xs)\n\tsome x in xs\n\tis_string(x)\n"
        '\tcontains(x, "\\"")\n}\n'
    ),
    "__psc_sa": (
        # The array is rebuilt: rego-cpp quotes the strings of an array it
        # is given by reference (`sprintf("%v", input.xs)`). A set is an
        # error in OPA, not in rego-cpp: array.concat raises OPA's type error.
        "__psc_sa(xs, n, ps) := [x | some x in xs] if {\n\tis_array(xs)\n"
        "\tcount(xs) == n\n\tnot __psc_sn(xs, ps)\n}\n"
        "__psc_sa(xs, n, ps) := array.concat(xs, []) if not is_array(xs)\n"
        f"__psc_sa(xs, n, ps) := {_fail('sprintf_count')} if {{\n\tis_array(xs)\n"
        "\tcount(xs) != n\n}\n"
        f"__psc_sa(xs, n, ps) := {_fail('sprintf_s_number')} if __psc_sn(xs, ps)\n"
        "__psc_sn(xs, ps) if {\n\tsome i in ps\n\tis_number(xs[i])\n}\n"
    ),
}

# Builtins that read the characters of a string (its length, positions,
# bytes, order): rego-cpp keeps the quotes sprintf writes for strings inside
# a collection escaped (``\\"``), and these builtins see the backslashes.
# Builtin -> indexes of the arguments guarded.
_QUOTED_ARGS: dict[str, tuple[int, ...]] = {
    "count": (0,),
    "indexof": (0,),
    "substring": (0,),
    "trim": (0, 1),
    "trim_left": (0, 1),
    "trim_right": (0, 1),
    "trim_space": (0,),
    "strings.reverse": (0,),
    "crypto.md5": (0,),
    "crypto.sha1": (0,),
    "crypto.sha256": (0,),
    "crypto.sha512": (0,),
    "crypto.hmac.md5": (0, 1),
    "crypto.hmac.sha1": (0, 1),
    "crypto.hmac.sha256": (0, 1),
    "crypto.hmac.sha512": (0, 1),
    "base64.encode": (0,),
    "base64url.encode": (0,),
    "base64url.encode_no_pad": (0,),
    "hex.encode": (0,),
    "urlquery.encode": (0,),
    "regex.match": (0, 1),
    "regex.find_n": (0, 1),
    "regex.find_all_string_submatch_n": (0, 1),
    "regex.split": (0, 1),
    "regex.replace": (0, 1, 2),
    "regex.globs_match": (0, 1),
    "regex.template_match": (0, 1),
    "glob.match": (0, 2),
    "split": (0,),
    "replace": (0,),
    "strings.count": (0,),
    "sort": (0,),
}
# Guarded only when the separator (second argument) may be empty: an empty
# one splits the escapes apart.
_UNLESS_SEPARATOR = frozenset({"split", "replace", "strings.count"})

_VERB = re.compile(r"%[%sv]")


def refusal_reason(error_text: str) -> str | None:
    """What a guard of this stage refused, if ``error_text`` is its error."""
    m = _MARK_RE.search(error_text)
    return REASONS.get(m.group(1)) if m else None


def _is_comprehension(toks: list[_Tok], s: int, e: int) -> bool:
    depth = 0
    for k in range(s, e):
        t = toks[k].text
        if t in ("(", "[", "{"):
            depth += 1
        elif t in (")", "]", "}"):
            depth -= 1
        elif t == "|" and depth == 1:
            return True
    return False


def _closing(toks: list[_Tok], s: int) -> int | None:
    """Index of the ``]`` closing an array literal opened at ``toks[s]``."""
    if toks[s].text != "[":
        return None
    depth = 0
    for k in range(s, len(toks)):
        if toks[k].text in ("(", "[", "{"):
            depth += 1
        elif toks[k].text in (")", "]", "}"):
            depth -= 1
            if depth == 0:
                return k
    return None


def _end(tok: _Tok) -> int:
    return tok.offset + len(tok.text)


class _Edits:
    """Insertions and replacements at offsets of the original source."""

    def __init__(self) -> None:
        # (start, rank, inner, stop, text), applied from the end of the
        # source. At one offset closers (rank 0) end up before openers
        # (rank 1); of the openers, the inner ones (a shorter span; a
        # division before another wrap of the same span) are applied first,
        # so that they end up last.
        self.edits: list[tuple[int, int, tuple[int, int], int, str]] = []
        self.used: set[str] = set()

    def wrap(
        self,
        toks: list[_Tok],
        a: int,
        b: int,
        helper: str,
        tail: str = "",
        *,
        start: int | None = None,
    ) -> None:
        at = toks[a].offset if start is None else start
        end = _end(toks[b - 1])
        inner = (-end, 1 if helper == "__psc_div" else 0)
        self.edits.append((at, 1, inner, at, f"{helper}("))
        self.edits.append((end, 0, (0, 0), end, f"{tail})"))
        self.used.add(helper)

    def replace(self, tok: _Tok, text: str) -> None:
        self.edits.append((tok.offset, 2, (0, 0), _end(tok), text))

    def apply(self, source: str) -> str:
        if not self.edits:
            return source
        out = source
        for start, _, _, stop, text in sorted(
            self.edits, key=lambda x: (x[0], x[1], x[2]), reverse=True
        ):
            out = out[:start] + text + out[stop:]
        helpers = "".join(_HELPERS[name] for name in sorted(self.used))
        return out + ("" if out.endswith("\n") else "\n") + "\n" + helpers


def _sprintf(toks: list[_Tok], args: list[tuple[int, int]], edits: _Edits) -> None:
    if len(args) < 2 or args[0][1] != args[0][0] + 1:
        return  # not a literal format: refused by the static checks
    fmt = toks[args[0][0]]
    if fmt.kind not in ("string", "raw"):
        return
    verbs = [m.group() for m in _VERB.finditer(fmt.text) if m.group() != "%%"]
    s_at = [n for n, v in enumerate(verbs) if v == "%s"]
    s, e = args[1]
    if _closing(toks, s) == e - 1 and not _is_comprehension(toks, s, e):
        for n, (a, b) in enumerate(_call_args(toks, s)):
            if n in s_at and not (b == a + 1 and toks[a].kind in ("string", "raw")):
                edits.wrap(toks, a, b, "__psc_s")
    else:
        edits.wrap(toks, s, e, "__psc_sa", f", {len(verbs)}, {s_at}")
    if s_at:
        edits.replace(fmt, _VERB.sub(lambda m: "%v" if m.group() == "%s" else m.group(), fmt.text))


def _may_be_quoted(toks: list[_Tok], a: int, b: int) -> bool:
    """Whether the argument ``toks[a:b]`` may be a string holding a quote.

    Not a literal (a plain string, a number, a collection). A reference into
    ``input`` may: ``with input as`` can put such a string there.
    """
    if b == a + 1 and toks[a].kind in ("string", "raw", "number"):
        return False
    return not (toks[a].text in ("[", "{") and _closing_any(toks, a) == b - 1)


def _closing_any(toks: list[_Tok], s: int) -> int | None:
    depth = 0
    for k in range(s, len(toks)):
        if toks[k].text in ("(", "[", "{"):
            depth += 1
        elif toks[k].text in (")", "]", "}"):
            depth -= 1
            if depth == 0:
                return k
    return None


def _quoted(name: str, toks: list[_Tok], args: list[tuple[int, int]], edits: _Edits) -> None:
    at = _QUOTED_ARGS[name]
    if name in _UNLESS_SEPARATOR and len(args) > 1:
        a, b = args[1]
        sep = toks[a]
        if b == a + 1 and sep.kind in ("string", "raw") and len(sep.text) > 2:
            return  # a non-empty literal separator reads the escapes consistently
    for n, (a, b) in enumerate(args):
        if n not in at:
            continue
        if name == "sort":
            # Its elements are read: a collection literal may hold such strings.
            edits.wrap(toks, a, b, "__psc_qa")
        elif _may_be_quoted(toks, a, b):
            edits.wrap(toks, a, b, "__psc_q")


_TERM_ENDS = (")", "]", "}")


def _open_of(toks: list[_Tok], close: int) -> int | None:
    depth = 0
    for k in range(close, -1, -1):
        if toks[k].text in _TERM_ENDS:
            depth += 1
        elif toks[k].text in ("(", "[", "{"):
            depth -= 1
            if depth == 0:
                return k
    return None


def _term_start(toks: list[_Tok], end: int) -> int | None:
    """Index of the first token of the term (ref, call, literal, group) ending at ``end``."""
    j = end
    while j >= 0:
        t = toks[j]
        if t.text in _TERM_ENDS:
            k = _open_of(toks, j)
            if k is None:
                return None
            j = k
            prev = toks[j - 1] if j > 0 else None
            if (
                t.text in (")", "]")
                and prev is not None
                and (
                    (prev.kind == "ident" and prev.text not in _KEYWORDS) or prev.text in (")", "]")
                )
            ):
                j -= 1  # a call or an index: its callee or collection
                continue
            return j
        if t.kind == "ident" and t.text not in _KEYWORDS:
            if (
                j >= 2
                and toks[j - 1].text == "."
                and (toks[j - 2].kind == "ident" or toks[j - 2].text in (")", "]"))
            ):
                j -= 2
                continue
            return j
        if t.kind in ("number", "string", "raw") or t.text in ("true", "false", "null"):
            return j
        return None
    return None


def _term_end(toks: list[_Tok], start: int) -> int | None:
    """Index of the last token of the term starting at ``start``."""
    j = start
    if j < len(toks) and toks[j].text == "-":
        j += 1
    if j >= len(toks):
        return None
    t = toks[j]
    if t.text in ("(", "[", "{"):
        close = _closing_any(toks, j)
        if close is None:
            return None
        j = close
    elif not (
        t.kind in ("number", "string", "raw") or (t.kind == "ident" and t.text not in _KEYWORDS)
    ):
        return None
    while j + 1 < len(toks):
        nxt = toks[j + 1].text
        if nxt == "." and j + 2 < len(toks) and toks[j + 2].kind == "ident":
            j += 2
        elif nxt in ("[", "(") and toks[j].kind != "number" and toks[j].kind != "string":
            close = _closing_any(toks, j + 1)
            if close is None:
                return None
            j = close
        else:
            break
    return j


def _division(toks: list[_Tok], k: int, edits: _Edits) -> bool:
    """Wraps ``left / right`` (``toks[k]`` is the ``/``) in ``__psc_div``; False if unsure."""
    if k == 0:
        return False
    start = _term_start(toks, k - 1)
    while start is not None and start >= 2 and toks[start - 1].text in ("*", "/", "%"):
        start = _term_start(toks, start - 2)  # `a * b / c` is `(a * b) / c`
    end = _term_end(toks, k + 1)
    if start is None or end is None:
        return False
    at = toks[start].offset
    first = toks[start]
    prev = toks[start - 1] if start > 0 else None
    if (
        first.kind == "number"
        and first.text.startswith("-")
        and prev is not None
        and (
            prev.kind in ("number", "string", "raw")
            or (prev.kind == "ident" and prev.text not in _KEYWORDS)
            or prev.text in _TERM_ENDS
        )
    ):
        at += 1  # `a -1 / 7` is `a - (1 / 7)`: the lexer read `-1` as one token
    edits.wrap(toks, start, end + 1, "__psc_div", start=at)
    edits.replace(toks[k], ",")
    return True


def rewrite_checks(source: str) -> str:
    """Returns ``source`` with the run-time guards of this stage (see the module doc).

    Raises:
        UnsupportedByEngineError: A division whose operands this stage
            cannot delimit.
    """
    toks = list(_tokens(source))
    edits = _Edits()
    for k, tok in enumerate(toks):
        if tok.text == "/" and not _division(toks, k, edits):
            raise UnsupportedByEngineError(
                "the embedded engine cannot evaluate this division exactly as OPA does "
                "(rego-cpp keeps 16 significant digits of a quotient); put its operands "
                f"in variables, or {ADVICE}",
                line=source.count("\n", 0, tok.offset) + 1,
            )
    for i, tok in enumerate(toks):
        if tok.kind != "ident" or (i > 0 and toks[i - 1].text == "."):
            continue
        j = i + 1
        while j + 1 < len(toks) and toks[j].text == "." and toks[j + 1].kind == "ident":
            j += 2
        if j >= len(toks) or toks[j].text != "(":
            continue
        name = ".".join(toks[k].text for k in range(i, j, 2))
        if name == "sprintf":
            _sprintf(toks, _call_args(toks, j), edits)
        elif name in _QUOTED_ARGS:
            _quoted(name, toks, _call_args(toks, j), edits)
    return edits.apply(source)
