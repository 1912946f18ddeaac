"""Calls in Rego source: which functions a module calls, and which calls are wrong.

Calls to functions that do not exist, or with the wrong number of arguments.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Mapping

from policysupply._internal.engines.base import RegoDiagnostic
from policysupply._internal.engines.rego_lexer import (
    _KEYWORDS,
    _call_args,
    _lines_first_tokens,
    _Tok,
    _tokens,
    line_of,
)


@functools.lru_cache(maxsize=1)
def opa_builtins() -> dict[str, int]:
    """OPA's builtin functions, name → argument count (-1: variadic or unknown)."""
    from importlib import resources

    raw = resources.files("policysupply._internal").joinpath("opa_builtins.json").read_text()
    table: dict[str, int] = json.loads(raw)["builtins"]
    return table


def _function_heads(toks: list[_Tok], firsts: set[int]) -> Iterator[int]:
    """Indexes of the names of function definitions: ``f(`` at the top level, starting a line."""
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
            yield i


def _function_definitions(source: str) -> set[str]:
    """Names of functions a module defines (``f(x) := ...`` at the start of a line)."""
    toks = list(_tokens(source))
    firsts = _lines_first_tokens(toks, source)
    return {toks[i].text for i in _function_heads(toks, firsts)}


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


def _call_sites(
    toks: list[_Tok], firsts: set[int], *, query: bool = False
) -> Iterator[tuple[list[str], int, int]]:
    """Each call: its dotted name's parts, the index of its first token and of its ``(``.

    A name at the start of a line at the top level is a definition, not a
    call, unless ``query`` (a query has no definitions).
    """
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
        if j < len(toks) and toks[j].text == "(" and (query or not (depth == 0 and i in firsts)):
            yield parts, i, j
        i = j if j > i + 1 else i + 1


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
    for parts, i, j in _call_sites(toks, firsts):
        tok = toks[i]
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
    for parts, i, _ in _call_sites(toks, firsts, query=query):
        yield ".".join(parts), toks[i].offset


def called_builtins(source: str, *, query: bool = False) -> set[str]:
    """Names of OPA builtins that ``source`` (a module, or a query) calls."""
    table = opa_builtins()
    return {name for name, _ in calls(source, query=query) if name in table}


_ARITIES: dict[tuple[str, ...], dict[str, set[int]]] = {}


def function_arities(modules: Mapping[str, str], packages: Mapping[str, tuple[str, ...]]) -> None:
    """Records the arity of every function the modules define (for ``_call_problems``)."""
    _ARITIES.clear()
    for name, source in modules.items():
        toks = list(_tokens(source))
        firsts = _lines_first_tokens(toks, source)
        for i in _function_heads(toks, firsts):
            n = len(_call_args(toks, i + 1))
            _ARITIES.setdefault(packages[name], {}).setdefault(toks[i].text, set()).add(n)


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
