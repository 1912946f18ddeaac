"""Rego source text, read without a Rego parser.

A small lexer and the static checks built on it: the package path of a
module, Rego v1's ``if`` before rule bodies, bracket nesting, and calls to
functions that do not exist or with the wrong number of arguments. The
embedded engine (``embedded``) runs these before rego-cpp sees a module; the
OPA engine does not need them.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
from collections.abc import Iterator, Mapping
from importlib import resources
from typing import Any

import attrs

from policysupply._internal.engines.base import RegoDiagnostic
from policysupply.errors import BundleError

# ---------------------------------------------------------------------------
# A tiny Rego lexer: enough to find the package path and rule bodies.

_TOKEN = re.compile(
    r"""
    (?P<ws>[ \t\r\n]+)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>:=|==|!=|<=|>=|[{}()\[\].,;:=<>+\-*/%|&!])
  | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)

# A "{" at the top level that follows one of these opens a value (object or
# set literal, comprehension), not a rule body.
_VALUE_OPENERS = frozenset(
    {
        ":=",
        "=",
        "==",
        "!=",
        "<=",
        ">=",
        "<",
        ">",
        ",",
        "(",
        "[",
        "{",
        ":",
        "|",
        "&",
        "+",
        "-",
        "*",
        "/",
        "%",
        "if",
        "contains",
        "in",
        "with",
        "as",
        "not",
        "some",
    }
)


@attrs.frozen
class _Tok:
    kind: str
    text: str
    offset: int


def _tokens(source: str) -> Iterator[_Tok]:
    for m in _TOKEN.finditer(source):
        kind = m.lastgroup or "other"
        if kind in ("ws", "comment"):
            continue
        yield _Tok(kind, m.group(), m.start())


def line_of(source: str, offset: int) -> int:
    """Returns the 1-based line of character ``offset`` in ``source``."""
    return source.count("\n", 0, offset) + 1


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
            if key is None or key.kind != "string" or close is None or close.text != "]":
                raise BundleError(
                    "malformed package path", entry=entry, line=line_of(source, tok.offset)
                )
            path.append(json.loads(key.text))
        else:
            break
    if not path or expect_name:
        raise BundleError("malformed package path", entry=entry, line=line_of(source, first.offset))
    return tuple(path)


def _opens_body(prev: _Tok) -> bool:
    if prev.text == "else":
        return True
    if prev.text in _VALUE_OPENERS:
        return False
    return prev.kind in ("ident", "string", "raw", "number") or prev.text in (")", "]", "}")


def v1_body_without_if(source: str) -> int | None:
    """Returns the offset of a top-level rule body not introduced by ``if``, if any.

    Rego v1 requires ``if`` before every rule body (and after ``else``); OPA
    refuses such modules but rego-cpp accepts them, so a v1 module would pass
    ``check()`` here and fail in OPA without this.
    """
    depth = 0
    prev: _Tok | None = None
    for tok in _tokens(source):
        if tok.text in ("(", "[", "{"):
            if tok.text == "{" and depth == 0 and prev is not None and _opens_body(prev):
                return tok.offset
            depth += 1
        elif tok.text in (")", "]", "}"):
            depth = max(0, depth - 1)
        prev = tok
    return None


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


_KEYWORDS = frozenset(
    {
        "if",
        "else",
        "not",
        "some",
        "every",
        "in",
        "contains",
        "with",
        "as",
        "default",
        "import",
        "package",
        "true",
        "false",
        "null",
    }
)


@functools.lru_cache(maxsize=1)
def opa_builtins() -> dict[str, int]:
    """OPA's builtin functions, name → argument count (-1: variadic or unknown)."""
    raw = resources.files("policysupply._internal").joinpath("opa_builtins.json").read_text()
    table: dict[str, int] = json.loads(raw)["builtins"]
    return table


def _lines_first_tokens(toks: list[_Tok], source: str) -> set[int]:
    """Indexes of the tokens that start a line."""
    firsts: set[int] = set()
    last_end = -1
    for i, tok in enumerate(toks):
        # A newline between the previous token and this one starts a line.
        if i == 0 or "\n" in source[last_end : tok.offset]:
            firsts.add(i)
        last_end = tok.offset + len(tok.text)
    return firsts


def _function_definitions(source: str) -> set[str]:
    """Names of functions a module defines (``f(x) := ...`` at the start of a line)."""
    toks = list(_tokens(source))
    firsts = _lines_first_tokens(toks, source)
    out: set[str] = set()
    depth = 0
    for i, tok in enumerate(toks):
        if tok.text in ("(", "[", "{"):
            depth += 1
        elif tok.text in (")", "]", "}"):
            depth = max(0, depth - 1)
        elif (
            depth == 0
            and i in firsts
            and tok.kind == "ident"
            and i + 1 < len(toks)
            and toks[i + 1].text == "("
        ):
            out.add(tok.text)
    return out


def _import_aliases(toks: list[_Tok]) -> dict[str, tuple[str, ...]]:
    """Import alias → imported path (``import data.lib as l`` → ``{"l": ("data", "lib")}``)."""
    aliases: dict[str, tuple[str, ...]] = {}
    for i, tok in enumerate(toks):
        if tok.text != "import":
            continue
        path: list[str] = []
        j = i + 1
        while j < len(toks) and toks[j].kind == "ident":
            path.append(toks[j].text)
            j += 1
            if j < len(toks) and toks[j].text == ".":
                j += 1
            else:
                break
        if not path:
            continue
        if j + 1 < len(toks) and toks[j].text == "as":
            aliases[toks[j + 1].text] = tuple(path)
        else:
            aliases[path[-1]] = tuple(path)
    return aliases


def _call_problems(
    entry: str,
    source: str,
    package: tuple[str, ...],
    defined: Mapping[tuple[str, ...], set[str]],
) -> list[RegoDiagnostic]:
    toks = list(_tokens(source))
    firsts = _lines_first_tokens(toks, source)
    aliases = _import_aliases(toks)
    builtins = opa_builtins()
    problems: list[RegoDiagnostic] = []
    depth = 0
    i = 0
    while i < len(toks):
        tok = toks[i]
        if tok.text in ("(", "[", "{"):
            depth += 1
        elif tok.text in (")", "]", "}"):
            depth = max(0, depth - 1)
        if tok.kind != "ident" or tok.text in _KEYWORDS or (i > 0 and toks[i - 1].text == "."):
            i += 1
            continue
        # Collect a dotted name (`a.b.c`) and see whether a call follows it.
        parts = [tok.text]
        j = i + 1
        while j + 1 < len(toks) and toks[j].text == "." and toks[j + 1].kind == "ident":
            parts.append(toks[j + 1].text)
            j += 2
        is_definition = depth == 0 and i in firsts
        if j < len(toks) and toks[j].text == "(" and not is_definition:
            if parts[0] in aliases:
                parts = [*aliases[parts[0]], *parts[1:]]
            full = ".".join(parts)
            if full == "set" and j + 1 < len(toks) and toks[j + 1].text == ")":
                problem = None  # `set()`: the empty set, not a call
            elif full in builtins:
                problem = _arity_problem(full, builtins[full], toks, j)
            elif (len(parts) == 1 and full in defined.get(package, set())) or (
                parts[0] == "data" and parts[-1] in defined.get(tuple(parts[1:-1]), set())
            ):
                pkg = package if len(parts) == 1 else tuple(parts[1:-1])
                problem = _user_arity_problem(pkg, parts[-1], toks, j)
            elif parts[0] == "input":
                problem = None  # refused by the parser or the evaluator, not a call
            else:
                problem = f"undefined function {full}"
            if problem:
                problems.append(
                    RegoDiagnostic(entry=entry, line=line_of(source, tok.offset), message=problem)
                )
        i = j if j > i + 1 else i + 1
    return problems


def _arity_problem(name: str, arity: int, toks: list[_Tok], open_idx: int) -> str | None:
    if arity < 0:
        return None
    if toks[open_idx + 1 : open_idx + 2] and toks[open_idx + 1].text == ")":
        count = 0
    else:
        depth = 0
        count = 1
        for k in range(open_idx, len(toks)):
            tok = toks[k]
            if tok.text in ("(", "[", "{"):
                depth += 1
            elif tok.text in (")", "]", "}"):
                depth -= 1
                if depth == 0:
                    break
            elif depth == 1 and tok.text == "," and toks[k + 1].text != ")":
                count += 1  # (a trailing comma adds no argument)
    # One extra argument is allowed: it binds the result (`count(xs, n)`).
    if count < arity or count > arity + 1:
        return f"{name}: arity mismatch: {count} argument(s) given, {arity} expected"
    return None


def calls(source: str, *, query: bool = False) -> Iterator[tuple[str, int]]:
    """Every function call in ``source``: (dotted name as written, offset).

    In a module, rule and function heads at the start of a line are
    definitions, not calls; a query has no definitions.
    """
    toks = list(_tokens(source))
    firsts = _lines_first_tokens(toks, source)
    depth = 0
    i = 0
    while i < len(toks):
        tok = toks[i]
        if tok.text in ("(", "[", "{"):
            depth += 1
        elif tok.text in (")", "]", "}"):
            depth = max(0, depth - 1)
        if tok.kind != "ident" or tok.text in _KEYWORDS or (i > 0 and toks[i - 1].text == "."):
            i += 1
            continue
        parts = [tok.text]
        j = i + 1
        while j + 1 < len(toks) and toks[j].text == "." and toks[j + 1].kind == "ident":
            parts.append(toks[j + 1].text)
            j += 2
        if j < len(toks) and toks[j].text == "(" and (query or not (depth == 0 and i in firsts)):
            yield ".".join(parts), tok.offset
        i = j if j > i + 1 else i + 1


def called_builtins(source: str, *, query: bool = False) -> set[str]:
    """Names of OPA builtins that ``source`` (a module, or a query) calls."""
    table = opa_builtins()
    return {name for name, _ in calls(source, query=query) if name in table}


# ---------------------------------------------------------------------------
# What the embedded engine (rego-cpp) would answer differently from OPA.

# Printable ASCII without the two characters JSON escapes. rego-cpp keeps a
# string in its escaped (JSON source) form and most builtins then work on
# the escapes: count("a\"b") is 4, upper("\n") is "\N", base64 and hashes
# encode the backslashes, `<` orders by them; upper/lower and hex.encode also
# mishandle non-ASCII letters. Strings outside this set are refused.
_PLAIN = re.compile(r"[ !#-\[\]-~]*\Z")

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


# Past 2^53 a float loses integers; OPA computes exactly, rego-cpp does not
# (1e30 + 1 is 1000000000000000019884624838657 there).
_EXACT_LIMIT = 2**53


def _too_big(text: str) -> bool:
    try:
        return abs(float(text)) >= _EXACT_LIMIT
    except (OverflowError, ValueError):
        return True


def first_inexact_number(value: Any, *, limit: int = 1_000_000) -> float | None:
    """The first float in a JSON-like value too large for rego-cpp to compute exactly."""
    stack: list[Any] = [value]
    seen = 0
    while stack and seen < limit:
        node = stack.pop()
        seen += 1
        if isinstance(node, float) and abs(node) >= _EXACT_LIMIT:
            return node
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


def _literal_text(tok: _Tok) -> str | None:
    """The text between the quotes of a plain literal; ``None`` if it has escapes."""
    body = tok.text[1:-1]
    if tok.kind == "string" and "\\" in body:
        return None
    return body


def _arg_index(toks: list[_Tok], i: int) -> tuple[str, int] | None:
    """(called function, argument index) if ``toks[i]`` is a whole call argument."""
    depth = 0
    index = 0
    k = i - 1
    while k >= 0:
        t = toks[k].text
        if t in (")", "]", "}"):
            depth += 1
        elif t in ("(", "[", "{"):
            if depth == 0:
                if t != "(" or k == 0 or toks[k - 1].kind != "ident":
                    return None
                parts = [toks[k - 1].text]
                m = k - 2
                while m >= 1 and toks[m].text == "." and toks[m - 1].kind == "ident":
                    parts.insert(0, toks[m - 1].text)
                    m -= 2
                nxt = toks[i + 1].text if i + 1 < len(toks) else ""
                if nxt not in (",", ")"):
                    return None
                return ".".join(parts), index
            depth -= 1
        elif t == "," and depth == 0:
            index += 1
        k -= 1
    return None


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
        elif text == "sprintf":
            nxt = toks[i + 2] if i + 2 < len(toks) else None
            if (
                toks[i + 1 : i + 2]
                and toks[i + 1].text == "("
                and (nxt is None or nxt.kind not in ("string", "raw"))
            ):
                problems.append((tok.offset, "sprintf with a format that is not a literal"))
        if tok.kind == "number" and ("e" in text or "E" in text) and _too_big(text):
            problems.append(
                (tok.offset, f"the number {text} (rego-cpp computes with it inexactly)")
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
    return problems


# ---------------------------------------------------------------------------
# Semantic checks OPA's compiler makes and rego-cpp does not (check() only;
# each reports only what it is sure of, so that a valid module is never refused).

_OPERATORS = {"+": "plus", "-": "minus", "*": "mul", "/": "div", "%": "rem"}


@functools.lru_cache(maxsize=1)
def opa_builtin_types() -> dict[str, list[list[str] | None]]:
    """Builtin -> JSON kinds each argument accepts (``None``: any)."""
    raw = resources.files("policysupply._internal.engines").joinpath("opa_builtin_types.json")
    table: dict[str, list[list[str] | None]] = json.loads(raw.read_text())["builtins"]
    return table


def _literal_kind(tok: _Tok) -> str | None:
    if tok.kind == "number":
        return "number"
    if tok.kind in ("string", "raw"):
        return "string"
    if tok.text in ("true", "false"):
        return "boolean"
    if tok.text == "null":
        return "null"
    return None


def _rules(toks: list[_Tok], firsts: set[int]) -> list[tuple[int, int]]:
    """Token ranges of the rules of a module (package and imports excluded)."""
    starts: list[int] = []
    depth = 0
    for i, tok in enumerate(toks):
        if depth == 0 and i in firsts and tok.kind == "ident" and tok.text not in ("else",):
            starts.append(i)
        if tok.text in ("(", "[", "{"):
            depth += 1
        elif tok.text in (")", "]", "}"):
            depth = max(0, depth - 1)
    starts.append(len(toks))
    return [
        (a, b) for a, b in itertools.pairwise(starts) if toks[a].text not in ("package", "import")
    ]


def _rule_names(source: str) -> set[str]:
    toks = list(_tokens(source))
    firsts = _lines_first_tokens(toks, source)
    return {
        toks[a].text if toks[a].text != "default" else toks[a + 1].text
        for a, _ in _rules(toks, firsts)
        if a < len(toks)
    }


def _call_args(toks: list[_Tok], open_idx: int) -> list[tuple[int, int]]:
    """Token ranges of the arguments of the call whose ``(`` is at ``open_idx``."""
    args: list[tuple[int, int]] = []
    depth = 0
    start = open_idx + 1
    for k in range(open_idx, len(toks)):
        t = toks[k].text
        if t in ("(", "[", "{"):
            depth += 1
        elif t in (")", "]", "}"):
            depth -= 1
            if depth == 0:
                if k > start:
                    args.append((start, k))
                return args
        elif t == "," and depth == 1:
            args.append((start, k))
            start = k + 1
    return args


def _unsafe_vars(
    entry: str, source: str, toks: list[_Tok], a: int, b: int, known: set[str]
) -> list[RegoDiagnostic]:
    """Variables used exactly once in a rule, in a place that cannot bind them."""
    counts: dict[str, list[int]] = {}
    for i in range(a, b):
        tok = toks[i]
        if tok.kind != "ident" or tok.text in _KEYWORDS or tok.text in known:
            continue
        if tok.text in ("_", "input", "data") or tok.text.startswith("__"):
            continue
        if i > a and toks[i - 1].text == ".":
            continue
        if i + 1 < b and toks[i + 1].text in (".", "("):
            continue  # a namespace or function, not a variable
        counts.setdefault(tok.text, []).append(i)
    problems = []
    for name, where in counts.items():
        if len(where) != 1:
            continue
        i = where[0]
        prev = toks[i - 1].text if i > a else ""
        nxt = toks[i + 1].text if i + 1 < b else ""
        if nxt in (":=", "=", ",", "as") or prev in ("=", "some", "every", ",", "with", "as"):
            continue  # assigned, unified, declared, or one of several names
        if prev == "[" and nxt == "]":
            # A ref index binds (iterates) unless negated.
            negated = any(
                toks[k].text == "not"
                for k in range(i - 1, a - 1, -1)
                if "\n" not in source[toks[k].offset : toks[i].offset]
            )
            if not negated:
                continue
        if prev == "(" or nxt == ")":
            continue  # possibly a call's output argument or a function head
        if nxt == ":" or prev == ":":
            continue  # object key/value: may be inside a comprehension head
        if nxt == "|" or prev == "|":
            continue
        problems.append(
            RegoDiagnostic(
                entry=entry,
                line=line_of(source, tok_offset(toks, i)),
                message=f"var {name} is unsafe",
            )
        )
    return problems


def tok_offset(toks: list[_Tok], i: int) -> int:
    return toks[i].offset


def semantic_problems(
    modules: Mapping[str, str], packages: Mapping[str, tuple[str, ...]]
) -> list[RegoDiagnostic]:
    """OPA compile errors found without a Rego parser.

    Undefined functions, arity, assignment to a call, re-assignment, unsafe
    variables and type errors of literal arguments.
    """
    defined: dict[tuple[str, ...], set[str]] = {}
    rules_in: dict[tuple[str, ...], set[str]] = {}
    for name, source in modules.items():
        defined.setdefault(packages[name], set()).update(_function_definitions(source))
        rules_in.setdefault(packages[name], set()).update(_rule_names(source))
    types = opa_builtin_types()
    function_arities(modules, packages)
    problems: list[RegoDiagnostic] = []
    for entry in sorted(modules):
        source = modules[entry]
        problems.extend(_call_problems(entry, source, packages[entry], defined))
        toks = list(_tokens(source))
        firsts = _lines_first_tokens(toks, source)
        aliases = set(_import_aliases(toks))
        known = rules_in.get(packages[entry], set()) | aliases
        for a, b in _rules(toks, firsts):
            if any(toks[k].text == "$" for k in range(a, b)):
                continue  # template strings: not read by this lexer
            problems.extend(_rule_problems(entry, source, toks, firsts, a, b, types))
            problems.extend(_unsafe_vars(entry, source, toks, a, b, known | _head_args(toks, a, b)))
    return problems


def _head_args(toks: list[_Tok], a: int, b: int) -> set[str]:
    """Argument names of a function definition (``f(x, y) := ...``)."""
    if a + 1 < b and toks[a + 1].text == "(":
        return {
            toks[k].text
            for s, e in _call_args(toks, a + 1)
            for k in range(s, e)
            if toks[k].kind == "ident"
        }
    return set()


def _rule_problems(
    entry: str,
    source: str,
    toks: list[_Tok],
    firsts: set[int],
    a: int,
    b: int,
    types: Mapping[str, list[list[str] | None]],
) -> list[RegoDiagnostic]:
    problems: list[RegoDiagnostic] = []
    assigned: dict[tuple[int, str], int] = {}
    depth_stack: list[int] = []
    for i in range(a, b):
        tok = toks[i]
        if tok.text in ("(", "[", "{"):
            depth_stack.append(i)
        elif tok.text in (")", "]", "}") and depth_stack:
            depth_stack.pop()
        scope = depth_stack[-1] if depth_stack else -1
        at_stmt_start = i == a or (
            toks[i - 1].text in (";", "{", "|")
            or "\n" in source[toks[i - 1].offset + len(toks[i - 1].text) : tok.offset]
        )
        # `f(x) := v` inside a body: OPA "cannot assign to call".
        if tok.text == ":=" and i > a and toks[i - 1].text == ")" and depth_stack:
            k, d = i - 1, 0
            while k >= a:
                t = toks[k].text
                if t in (")", "]", "}"):
                    d += 1
                elif t in ("(", "[", "{"):
                    d -= 1
                    if d == 0:
                        break
                k -= 1
            m = k - 1
            while m - 2 >= a and toks[m - 1].text == "." and toks[m - 2].kind == "ident":
                m -= 2
            if (
                k > a
                and toks[k - 1].kind == "ident"
                and m >= a
                and (
                    m == a
                    or toks[m - 1].text in (";", "{", "|")
                    or "\n" in source[toks[m - 1].offset + len(toks[m - 1].text) : toks[m].offset]
                )
            ):
                problems.append(
                    RegoDiagnostic(
                        entry=entry,
                        line=line_of(source, toks[m].offset),
                        message="cannot assign to call",
                    )
                )
        # `x := 1` twice in the same body: OPA "var x assigned above".
        if (
            tok.kind == "ident"
            and depth_stack
            and at_stmt_start
            and i + 1 < b
            and toks[i + 1].text == ":="
            and tok.text != "_"
        ):
            key = (scope, tok.text)
            if key in assigned:
                problems.append(
                    RegoDiagnostic(
                        entry=entry,
                        line=line_of(source, tok.offset),
                        message=f"var {tok.text} assigned above",
                    )
                )
            else:
                assigned[key] = i
        # Literal arguments of a builtin of the wrong JSON kind.
        if (
            tok.kind == "ident"
            and i + 1 < b
            and toks[i + 1].text == "("
            and not (i > a and toks[i - 1].text == ".")
        ):
            parts = [tok.text]
            name = tok.text
            if name in types and not (i in firsts and not depth_stack):
                for n, (s, e) in enumerate(_call_args(toks, i + 1)):
                    want = types[name][n] if n < len(types[name]) else None
                    kind = _literal_kind(toks[s]) if e == s + 1 else None
                    if want is not None and kind is not None and kind not in want:
                        problems.append(
                            RegoDiagnostic(
                                entry=entry,
                                line=line_of(source, tok.offset),
                                message=f"{name}: invalid argument(s)",
                            )
                        )
                        break
            del parts
        # A string, boolean or null literal as an arithmetic operand.
        if tok.text in _OPERATORS and i > a and i + 1 < b:
            left, right = toks[i - 1], toks[i + 1]
            kinds = {_literal_kind(left), _literal_kind(right)} - {None, "number"}
            # `-` also subtracts sets; only literal scalars are certain errors.
            if kinds and not (tok.text == "-" and right.kind == "number"):
                k = i - 1
                problems.append(
                    RegoDiagnostic(
                        entry=entry,
                        line=line_of(source, toks[k].offset),
                        message=f"{_OPERATORS[tok.text]}: invalid argument(s)",
                    )
                )
    return problems


_ARITIES: dict[tuple[str, ...], dict[str, set[int]]] = {}


def function_arities(modules: Mapping[str, str], packages: Mapping[str, tuple[str, ...]]) -> None:
    """Records the arity of every function the modules define (for ``_call_problems``)."""
    _ARITIES.clear()
    for name, source in modules.items():
        toks = list(_tokens(source))
        firsts = _lines_first_tokens(toks, source)
        depth = 0
        for i, tok in enumerate(toks):
            if (
                depth == 0
                and i in firsts
                and tok.kind == "ident"
                and i + 1 < len(toks)
                and toks[i + 1].text == "("
            ):
                n = len(_call_args(toks, i + 1))
                _ARITIES.setdefault(packages[name], {}).setdefault(tok.text, set()).add(n)
            if tok.text in ("(", "[", "{"):
                depth += 1
            elif tok.text in (")", "]", "}"):
                depth = max(0, depth - 1)


def _user_arity_problem(
    package: tuple[str, ...], name: str, toks: list[_Tok], open_idx: int
) -> str | None:
    arities = _ARITIES.get(package, {}).get(name)
    if not arities or len(arities) != 1:
        return None
    (arity,) = arities
    given = len(_call_args(toks, open_idx))
    # One extra argument binds the result (`f(x, y)` for `y := f(x)`).
    if given in (arity, arity + 1):
        return None
    full = ".".join(("data", *package, name))
    return f"function {full} has arity {arity}, got {given} arguments"


_INFIX = frozenset({"==", "!=", "<", ">", "<=", ">=", "+", "-", "*", "/", "%", ":=", "=", "|", "&"})
_HEAD_KEYWORDS = frozenset({"contains", "if", "else", "default", "import", "package"})


def syntax_problem(source: str) -> tuple[int, str] | None:
    """(line, OPA's message) for syntax errors found before rego-cpp parses."""
    toks = list(_tokens(source))
    if not toks or toks[0].text != "package":
        return (line_of(source, toks[0].offset) if toks else 1, "package expected")
    for tok in toks:
        if tok.kind == "other" and tok.text == '"':
            return (line_of(source, tok.offset), "non-terminated string")
    return None


def opa_error_line(source: str, byte_offset: int, message: str) -> int:
    """The line OPA reports for a parse error rego-cpp reports at ``byte_offset``.

    The parsers point at different tokens of the same mistake: OPA at the
    first token that cannot continue the statement.
    """
    offset = len(source.encode("utf-8")[:byte_offset].decode("utf-8", "ignore"))
    toks = list(_tokens(source))
    at = next((i for i, t in enumerate(toks) if t.offset >= offset), None)
    if at is None:
        return line_of(source, offset)
    tok = toks[at]
    if message == "this is unclosed" and tok.text == "{":
        # OPA reads on through the body until a rule-head keyword.
        depth = 0
        for t in toks[at:]:
            if t.text in ("(", "[", "{"):
                depth += 1
            elif t.text in (")", "]", "}"):
                depth -= 1
            elif depth == 1 and t.text in _HEAD_KEYWORDS:
                return line_of(source, t.offset)
        return line_of(source, len(source))
    if message == "Invalid import" and tok.text == "import":
        # `import x as` then a newline: OPA takes the next word as the alias
        # and fails on the token after it.
        k = at + 1
        while (
            k < len(toks)
            and toks[k].text != "as"
            and line_of(source, toks[k].offset) == line_of(source, tok.offset)
        ):
            k += 1
        if (
            k + 2 < len(toks)
            and toks[k].text == "as"
            and line_of(source, toks[k + 1].offset) != line_of(source, toks[k].offset)
        ):
            return line_of(source, toks[k + 2].offset)
    # An infix operator with its right operand missing: OPA skips the
    # newline and fails on the next token.
    for t, nxt in itertools.pairwise(toks[at:]):
        if (
            t.text in _INFIX
            and line_of(source, nxt.offset) > line_of(source, t.offset)
            and (nxt.text in (")", "]", "}") or nxt.kind == "other")
        ):
            return line_of(source, nxt.offset)
        if line_of(source, t.offset) > line_of(source, tok.offset):
            break
    return line_of(source, offset)
