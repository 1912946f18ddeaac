"""Constructs the embedded engine (rego-cpp) would answer differently from OPA."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from policysupply._internal.engines.rego_calls import (
    calls,
)
from policysupply._internal.engines.rego_lexer import (
    _call_args,
    _enclosing_open,
    _ref_start,
    _Tok,
    _tokens,
)
from policysupply._internal.engines.rego_values import (
    _too_big,
    is_plain_string,
    too_many_digits,
)

# Where a pattern with backslashes reaches rego-cpp's regex engine, which
# reads escapes as OPA does: builtin name -> index of its pattern argument.
_PATTERN_ARGS = {
    "regex.match": 0,
    "regex.is_valid": 0,
    "regex.find_n": 0,
    "regex.find_all_string_submatch_n": 0,
    "regex.split": 0,
    "regex.replace": 1,
}


# sprintf verbs whose output matches OPA's for every value (%d overflows at
# 2^31, %q and the width/precision forms are not implemented alike).
_SPRINTF_SAFE = re.compile(r"(?:[^%]|%[sv%])*\Z")


def _sprintf_arity_mismatch(toks: list[_Tok], i: int, fmt: str) -> str | None:
    """Why ``sprintf(fmt, [...])`` at ``toks[i]`` (the format) is refused, if it is.

    OPA (Go's fmt) writes ``%!(EXTRA ...)`` for arguments past the verbs and
    ``%!v(MISSING)`` for verbs past the arguments; rego-cpp does not. Only a
    literal array (not a comprehension) has a count known here.
    """
    if i + 2 >= len(toks) or toks[i + 1].text != "," or toks[i + 2].text != "[":
        return None
    items = _call_args(toks, i + 2)
    if any(
        toks[k].text == "|" and _enclosing_open(toks, k) == i + 2
        for s, e in items
        for k in range(s, e)
    ):
        return None
    verbs = len(re.findall(r"%[sv]", fmt.replace("%%", "")))
    if verbs == len(items):
        return None
    noun = "verb" if verbs == 1 else "verbs"
    return f"sprintf with {verbs} {noun} and {len(items)} argument(s)"


def _is_negative_zero(toks: list[_Tok], i: int) -> bool:
    """``toks[i]`` is a ``-0`` literal (``-0``, ``-0.0``, ``-0e5``), not ``x-0``."""
    text = toks[i].text
    if not text.startswith("-"):
        return False
    try:
        if float(text) != 0:
            return False
    except ValueError:
        return False
    # The lexer reads `a-0` as `a` then `-0`: after a term it is a subtraction.
    prev = toks[i - 1] if i > 0 else None
    return not (
        prev is not None
        and (prev.kind in ("ident", "number", "string", "raw") or prev.text in (")", "]", "}"))
        and prev.text not in ("in", "if", "else", "contains", "some", "not", "with", "as")
    )


def _literal_text(tok: _Tok) -> str | None:
    """The text between the quotes of a plain literal; ``None`` if it has escapes."""
    body = tok.text[1:-1]
    if tok.kind == "string" and "\\" in body:
        return None
    return body


def _arg_index(toks: list[_Tok], i: int) -> tuple[str, int] | None:
    """(called function, argument index) if ``toks[i]`` ends a call argument."""
    k = _enclosing_open(toks, i)
    if k is None or toks[k].text != "(" or k == 0 or toks[k - 1].kind != "ident":
        return None
    if i + 1 >= len(toks) or toks[i + 1].text not in (",", ")"):
        return None
    index = next((n for n, (s, e) in enumerate(_call_args(toks, k)) if s <= i < e), None)
    if index is None:
        return None
    name = ".".join(toks[j].text for j in range(_ref_start(toks, k - 1), k, 2))
    return name, index


def unsupported_constructs(
    source: str, *, unsupported_builtins: Mapping[str, str], query: bool = False
) -> list[tuple[int, str]]:
    """(offset, reason) for everything in ``source`` the embedded engine refuses.

    ``unsupported_builtins`` maps builtin names to why rego-cpp gets them
    wrong. The reasons name the construct; callers add the advice.
    """
    toks = list(_tokens(source))
    problems: list[tuple[int, str]] = []
    for name, off in calls(source, query=query):
        if name in unsupported_builtins:
            problems.append((off, f"builtin {name} ({unsupported_builtins[name]})"))
    # Bracket stack: (opening token index, saw `|` at this level).
    stack: list[list[Any]] = []
    stmt_start = 0
    for i, tok in enumerate(toks):
        text = tok.text
        if tok.kind in ("string", "raw"):
            body = _literal_text(tok)
            plain = body is not None and is_plain_string(body)
            if not plain:
                where = _arg_index(toks, i)
                if not (where and _PATTERN_ARGS.get(where[0]) == where[1]):
                    problems.append(
                        (
                            tok.offset,
                            "a string literal with escapes, quotes, control or non-ASCII "
                            "characters (the embedded engine applies builtins to its escaped form)",
                        )
                    )
            where = _arg_index(toks, i)
            if where == ("sprintf", 0) and body is not None and not _SPRINTF_SAFE.match(body):
                problems.append((tok.offset, "sprintf with verbs other than %s and %v"))
            elif where == ("sprintf", 0) and body is not None:
                mismatch = _sprintf_arity_mismatch(toks, i, body)
                if mismatch:
                    problems.append((tok.offset, mismatch))
        elif text == "sprintf":
            nxt = toks[i + 2] if i + 2 < len(toks) else None
            if (
                toks[i + 1 : i + 2]
                and toks[i + 1].text == "("
                and (nxt is None or nxt.kind not in ("string", "raw"))
            ):
                problems.append((tok.offset, "sprintf with a format that is not a literal"))
        elif (
            text == "walk"
            and toks[i + 1 : i + 2]
            and toks[i + 1].text == "("
            and (i == 0 or toks[i - 1].text != ".")
            and len(_call_args(toks, i + 1)) == 1
        ):
            # OPA's walk is a relation: `x := walk(v)` yields one [path, value]
            # per solution (a complete rule conflicts); rego-cpp collects them
            # all into one array.
            problems.append(
                (tok.offset, "walk(x) with its output as a value (use walk(x, [p, v]))")
            )
        if tok.kind == "number" and _is_negative_zero(toks, i):
            problems.append(
                (
                    tok.offset,
                    f"the number {text} (rego-cpp keeps -0 apart from 0: 0 in {{-0}} is false)",
                )
            )
        if tok.kind == "number" and _too_big(text):
            # Integers too: rego-cpp divides and takes remainders of them as
            # doubles (12345678901234567890 % 7 is 5 there, 1 in OPA).
            problems.append(
                (tok.offset, f"the number {text} (rego-cpp computes with it inexactly)")
            )
        elif (
            tok.kind == "number" and ("." in text or "e" in text.lower()) and too_many_digits(text)
        ):
            problems.append(
                (tok.offset, f"the number {text} (rego-cpp keeps 16 significant digits)")
            )
        if text in ("(", "[", "{"):
            stack.append([i, False])
            stmt_start = i + 1
        elif text in (")", "]", "}"):
            if stack:
                stack.pop()
            stmt_start = i + 1
        elif text == "|" and stack:
            stack[-1][1] = True
            stmt_start = i + 1
        elif text == ";":
            stmt_start = i + 1
        elif text == "$" and i + 1 < len(toks) and toks[i + 1].text.startswith('"'):
            problems.append((tok.offset, 'template strings ($"...")'))
        elif text == "with":
            target = toks[i + 1].text if i + 1 < len(toks) else ""
            if target not in ("input", "data"):
                problems.append(
                    (tok.offset, f"`with` replacing {target or 'a function'} (only input and data)")
                )
        elif text == "some" and stack and stack[-1][1]:
            # `some k, v in xs` in an array or set comprehension: rego-cpp
            # reads the comma as separating collection items.
            opener = toks[stack[-1][0]].text
            j = i + 1
            comma = False
            while j < len(toks) and toks[j].text not in ("in", ";", "|", ")", "]", "}"):
                comma = comma or toks[j].text == ","
                j += 1
            # An object comprehension (`{k: v | ...}`) parses fine.
            is_object = opener == "{" and any(
                toks[m].text == ":" for m in range(stack[-1][0] + 1, i)
            )
            if comma and j < len(toks) and toks[j].text == "in" and not is_object:
                problems.append((tok.offset, "`some k, v in ...` inside a comprehension"))
        elif text == "in" and i > 0:
            # `k, v in xs` as a membership test (not after `some`/`every`).
            first = toks[stmt_start].text if stmt_start < len(toks) else ""
            line_first = stmt_start
            k = i - 1
            comma = False
            depth = 0
            while k >= line_first:
                t = toks[k].text
                if t in (")", "]", "}"):
                    depth += 1
                elif t in ("(", "[", "{"):
                    depth -= 1
                elif t == "," and depth == 0:
                    comma = True
                if (
                    depth == 0
                    and k > line_first
                    and "\n" in source[toks[k - 1].offset : toks[k].offset]
                ):
                    first = toks[k].text
                    break
                k -= 1
            inside_call = stack and toks[stack[-1][0]].text in ("(", "[") and not stack[-1][1]
            if comma and first not in ("some", "every") and not inside_call:
                problems.append((tok.offset, "a two-value membership test `k, v in xs`"))
    if "|" in source:
        problems.extend(lost_comprehension_errors(source))
    return problems


def _rule_key(toks: list[_Tok], a: int) -> str:
    return toks[a + 1].text if toks[a].text == "default" and a + 1 < len(toks) else toks[a].text


def _referenced(
    toks: list[_Tok],
    a: int,
    b: int,
    package: tuple[str, ...],
    aliases: Mapping[str, tuple[str, ...]],
    rules: set[tuple[tuple[str, ...], str]],
) -> set[tuple[tuple[str, ...], str]]:
    """Rules the tokens ``toks[a:b]`` may refer to (more, never fewer)."""
    found: set[tuple[tuple[str, ...], str]] = set()
    for i in range(a, b):
        tok = toks[i]
        if tok.kind != "ident" or (i > a and toks[i - 1].text == "."):
            continue
        parts = [tok.text]
        j = i + 1
        while j + 1 < b and toks[j].text == "." and toks[j + 1].kind == "ident":
            parts.append(toks[j + 1].text)
            j += 2
        if parts[0] in aliases and aliases[parts[0]][:1] == ("data",):
            parts = [*aliases[parts[0]], *parts[1:]]
        if parts[0] != "data":
            if (package, parts[0]) in rules:
                found.add((package, parts[0]))
            continue
        path = tuple(parts[1:])
        for pkg, name in rules:
            full = (*pkg, name)
            if full[: len(path)] == path or path[: len(full)] == full:
                found.add((pkg, name))
    return found


def nested_with_data(
    modules: Mapping[str, str], packages: Mapping[str, tuple[str, ...]]
) -> tuple[str, int] | None:
    """(module, offset) of a ``with data...`` whose evaluation reaches another ``with``.

    rego-cpp evaluates an expression under an inner ``with`` (of input or
    data) against the original data, dropping the override of an outer
    ``with data.x as`` (OPA keeps it). The rules reached are found from the
    names the rule holding the outer ``with`` refers to, transitively.
    """
    from policysupply._internal.engines.rego_calls import _import_aliases
    from policysupply._internal.engines.rego_lexer import _lines_first_tokens
    from policysupply._internal.engines.rego_semantics import _rules

    if not any("with" in s for s in modules.values()):
        return None
    parsed: dict[str, tuple[list[_Tok], list[tuple[int, int]], dict[str, tuple[str, ...]]]] = {}
    rules: set[tuple[tuple[str, ...], str]] = set()
    for name, source in modules.items():
        toks = list(_tokens(source))
        ranges = [(a, b) for a, b in _rules(toks, _lines_first_tokens(toks, source)) if a < b]
        parsed[name] = (toks, ranges, _import_aliases(toks))
        rules.update((packages[name], _rule_key(toks, a)) for a, _ in ranges)
    edges: dict[tuple[tuple[str, ...], str], set[tuple[tuple[str, ...], str]]] = {}
    with_rules: set[tuple[tuple[str, ...], str]] = set()
    outer: list[tuple[str, int, tuple[tuple[str, ...], str]]] = []
    for name in sorted(modules):
        toks, ranges, aliases = parsed[name]
        pkg = packages[name]
        for a, b in ranges:
            key = (pkg, _rule_key(toks, a))
            head = a + 2 if toks[a].text == "default" else a + 1  # past the rule's name
            edges.setdefault(key, set()).update(_referenced(toks, head, b, pkg, aliases, rules))
            for k in range(a, b):
                if toks[k].text != "with":
                    continue
                with_rules.add(key)
                if k + 1 < b and toks[k + 1].text == "data":
                    outer.append((name, toks[k].offset, key))
    for name, offset, key in outer:
        seen: set[tuple[tuple[str, ...], str]] = set()
        todo = list(edges.get(key, ()))
        while todo:
            rule = todo.pop()
            if rule in seen:
                continue
            seen.add(rule)
            if rule in with_rules and rule != key:
                return name, offset
            todo.extend(edges.get(rule, ()))
        if key in seen:
            return name, offset  # recursive through its own `with`
    return None


_LOST_ERROR = (
    "an expression that does not use the variables of a `some ... in` before it "
    "in a comprehension, after a call that may fail (rego-cpp evaluates it "
    "first, so an error OPA raises would be lost when it fails)"
)


def _statements(toks: list[_Tok], source: str, s: int, e: int) -> list[tuple[int, int]]:
    """Token ranges of the expressions of the body ``toks[s:e]`` (split at ``;`` and lines)."""
    out: list[tuple[int, int]] = []
    depth = 0
    start = s
    for k in range(s, e):
        t = toks[k].text
        newline = k > start and "\n" in source[_tok_end(toks[k - 1]) : toks[k].offset]
        if depth == 0 and (t == ";" or newline):
            if k > start:
                out.append((start, k))
            start = k + 1 if t == ";" else k
        if t in ("(", "[", "{"):
            depth += 1
        elif t in (")", "]", "}"):
            depth -= 1
    if e > start:
        out.append((start, e))
    return out


def _tok_end(tok: _Tok) -> int:
    return tok.offset + len(tok.text)


def _names(toks: list[_Tok], a: int, b: int) -> set[str]:
    """Variable-like names in ``toks[a:b]`` (not fields, functions, keywords or roots)."""
    from policysupply._internal.engines.rego_lexer import _KEYWORDS

    return {
        toks[k].text
        for k in range(a, b)
        if toks[k].kind == "ident"
        and toks[k].text not in _KEYWORDS
        and toks[k].text not in ("input", "data", "_")
        and not (k > a and toks[k - 1].text == ".")
        and not (k + 1 < b and toks[k + 1].text in ("(", "."))
    }


# Builtins that accept any value and never fail.
_NEVER_FAIL = frozenset(
    {
        "is_string",
        "is_number",
        "is_boolean",
        "is_array",
        "is_set",
        "is_object",
        "is_null",
        "type_name",
    }
)


def _may_fail(toks: list[_Tok], a: int, b: int) -> bool:
    """A call or an operator that may raise an error (type, division by zero)."""
    return any(
        (
            toks[k].kind == "ident"
            and k + 1 < b
            and toks[k + 1].text == "("
            and toks[k].text not in _NEVER_FAIL
        )
        or toks[k].text in ("/", "%")
        for k in range(a, b)
    )


def lost_comprehension_errors(source: str) -> list[tuple[int, str]]:
    """(offset, reason) of expressions rego-cpp hoists past a failing call in a comprehension.

    In a comprehension's body with an iteration (``some x in xs``, ``xs[_]``),
    rego-cpp evaluates the expressions that do not depend on the iteration
    before everything else. OPA evaluates them in order: when an earlier
    call fails (a builtin's type error), OPA raises it, rego-cpp answers
    without it if the hoisted expression is false or undefined.
    """
    toks = list(_tokens(source))
    found: list[tuple[int, str]] = []
    for i, tok in enumerate(toks):
        if tok.text != "|":
            continue
        opener = _enclosing_open(toks, i)
        if opener is None or toks[opener].text not in ("[", "{"):
            continue
        depth = 0
        close = None
        for k in range(opener, len(toks)):
            if toks[k].text in ("(", "[", "{"):
                depth += 1
            elif toks[k].text in (")", "]", "}"):
                depth -= 1
                if depth == 0:
                    close = k
                    break
        if close is None:
            continue
        dependent: set[str] = set()
        iterated = False
        failing = False
        for a, b in _statements(toks, source, i + 1, close):
            texts = [t.text for t in toks[a:b]]
            names = _names(toks, a, b)
            enumerates = (texts[0] == "some" and "in" in texts) or any(
                texts[k : k + 3] == ["[", "_", "]"] for k in range(len(texts))
            )
            if enumerates:
                dependent |= names
                iterated = True
            elif names & dependent:
                dependent |= names
            elif (
                iterated
                and failing
                and not (
                    len(texts) == 3
                    and texts[1] == ":="
                    and toks[a + 2].kind in ("string", "number")
                )
            ):
                found.append((toks[a].offset, _LOST_ERROR))
                break
            failing = failing or _may_fail(toks, a, b)
    return found
