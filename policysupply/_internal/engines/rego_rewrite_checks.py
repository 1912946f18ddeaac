"""Rewrite stage ``checks``: run-time guards where rego-cpp would answer differently.

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
  numbers), and numbers given to it fail.
"""

from __future__ import annotations

import re

from policysupply._internal.engines.rego_lexer import _call_args, _Tok, _tokens

# Reason code (in the error a guard raises) -> what the refusal says.
REASONS = {
    "sprintf_s_number": (
        "sprintf given a number for %s (OPA writes it as %!s(int64=...) or %!s(float64=...))"
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


def rewrite_checks(source: str) -> str:
    """Returns ``source`` with the run-time guards of this stage (see the module doc)."""
    if "sprintf" not in source:
        return source
    toks = list(_tokens(source))
    # (offset, rank, text): at one offset, openers (rank 1) go after closers.
    inserts: list[tuple[int, int, str]] = []
    replaces: list[tuple[int, int, str]] = []
    used: set[str] = set()
    for i, tok in enumerate(toks):
        if not (
            tok.text == "sprintf"
            and (i == 0 or toks[i - 1].text != ".")
            and i + 1 < len(toks)
            and toks[i + 1].text == "("
        ):
            continue
        args = _call_args(toks, i + 1)
        if len(args) < 2 or args[0][1] != args[0][0] + 1:
            continue  # not a literal format: refused by the static checks
        fmt = toks[args[0][0]]
        if fmt.kind not in ("string", "raw"):
            continue
        verbs = [m.group() for m in _VERB.finditer(fmt.text) if m.group() != "%%"]
        s_at = [n for n, v in enumerate(verbs) if v == "%s"]
        s, e = args[1]
        if _closing(toks, s) == e - 1 and not _is_comprehension(toks, s, e):
            items = _call_args(toks, s)
            for n, (a, b) in enumerate(items):
                if n in s_at and not (b == a + 1 and toks[a].kind in ("string", "raw")):
                    inserts.append((toks[a].offset, 1, "__psc_s("))
                    inserts.append((_end(toks[b - 1]), 0, ")"))
                    used.add("__psc_s")
        else:
            inserts.append((toks[s].offset, 1, "__psc_sa("))
            inserts.append((_end(toks[e - 1]), 0, f", {len(verbs)}, {s_at})"))
            used.add("__psc_sa")
        if s_at:
            text = _VERB.sub(lambda m: "%v" if m.group() == "%s" else m.group(), fmt.text)
            replaces.append((fmt.offset, _end(fmt), text))
    if not inserts and not replaces:
        return source
    out = source
    edits = [(off, rank, off, text) for off, rank, text in inserts]
    edits += [(a, 2, b, text) for a, b, text in replaces]
    for start, _, stop, text in sorted(edits, key=lambda x: (x[0], x[1]), reverse=True):
        out = out[:start] + text + out[stop:]
    helpers = "".join(_HELPERS[name] for name in sorted(used))
    return out + ("" if out.endswith("\n") else "\n") + "\n" + helpers
