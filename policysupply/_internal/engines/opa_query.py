"""Which transport answers an OPA engine query, and the ``opa eval`` path.

The server answers what it answers exactly as ``opa eval --format json``
(a ``data`` reference, a binding of one, and without strict builtin errors
any one-line, one-expression query); everything else is one ``opa eval``
over the bundle directory. See docs/adr/0011-opa-engine.md.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from policysupply._internal.engines.base import (
    EngineUnavailableError,
    ResultSet,
)
from policysupply._internal.engines.opa_bundle import (
    _BundleDir,
    _location,
    _opa_errors,
    _stderr_tail,
)
from policysupply.errors import BundleError

_DATA_REF = re.compile(r"data(?:\.[A-Za-z_][A-Za-z0-9_]*)+\Z")


_BIND = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)[ \t]*(:?=)[ \t]*(.*)\Z", re.DOTALL)


# `data.a.b = x`: unification the other way round.
_RBIND = re.compile(r"(data(?:\.[A-Za-z_][A-Za-z0-9_]*)+)[ \t]*=[ \t]*([A-Za-z_][A-Za-z0-9_]*)\Z")


_KEYWORDS = frozenset(
    {
        "as",
        "contains",
        "data",
        "default",
        "else",
        "every",
        "false",
        "if",
        "import",
        "in",
        "input",
        "not",
        "null",
        "package",
        "some",
        "true",
        "with",
    }
)


_WRAP_VAR = "__policysupply_value__"


def _split(query: str) -> tuple[str, int, int] | None:
    """The query's one expression text and its row/col, if it is one line of one expression."""
    lead = len(query) - len(query.lstrip(" \t\r\n"))
    text = query.strip(" \t\r\n")
    if not text or any(c in text for c in "\n\r;#"):
        return None
    before = query[:lead]
    row = before.count("\n") + 1
    col = lead - (before.rfind("\n") + 1) + 1
    return text, row, col


def _data_path(ref: str) -> str | None:
    if not _DATA_REF.match(ref):
        return None
    segments = ref.split(".")[1:]
    if any(s in _KEYWORDS for s in segments) or segments[0] == "system":
        return None
    return "/".join(segments)


def _top_level_plain(text: str) -> bool:
    """No top-level keyword, assignment, comparison chain breaker or `with`."""
    from policysupply._internal.engines import rego_source as src

    toks = list(src._tokens(text))
    if not toks or toks[0].text in ("not", "some", "every", "import", "package", "default"):
        return False
    depth = 0
    for tok in toks:
        if tok.kind == "other":
            return False
        if tok.text in ("(", "[", "{"):
            depth += 1
        elif tok.text in (")", "]", "}"):
            depth -= 1
        elif depth == 0 and tok.text in (":=", "=", "with", "some", "every", "not", "in", ","):
            return False
    return depth == 0


def run_eval(
    query: str,
    input_json: bytes | None,
    *,
    opa: str,
    root: Path,
    bundle: _BundleDir,
    timeout: float,
    strict: bool,
) -> list[ResultSet]:
    """The answer of one ``opa eval --format json`` over the bundle directory."""
    args = [opa, "eval", "--format", "json", "--bundle", str(bundle.root)]
    if strict:
        args.append("--strict-builtin-errors")
    if bundle.v0:
        args.append("--v0-compatible")
    work = Path(tempfile.mkdtemp(dir=root))
    try:
        if input_json is not None:
            (work / "input.json").write_bytes(input_json)
            args += ["--input", str(work / "input.json")]
        args += ["--", query]
        try:
            proc = subprocess.run(
                args,
                capture_output=True,
                timeout=timeout,
                check=False,
                stdin=subprocess.DEVNULL,
                cwd=work,
            )
        except subprocess.TimeoutExpired:
            raise BundleError(f"the query took longer than {timeout} s") from None
        except OSError as exc:
            raise EngineUnavailableError(f"{opa} does not run: {exc}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if proc.returncode != 0:
        raise _eval_error(query, proc, bundle)
    try:
        doc = json.loads(proc.stdout)
    except ValueError:
        raise BundleError(f"query {query!r}: unreadable output from opa eval") from None
    return list(doc.get("result") or [])


def _eval_error(
    query: str, proc: subprocess.CompletedProcess[bytes], bundle: _BundleDir
) -> BundleError:
    errors = _opa_errors(proc)
    if not errors:
        return BundleError(f"query {query!r} failed: {bundle.clean(_stderr_tail(proc))}")
    text = "; ".join(
        f"{e.get('code') or 'error'}: {bundle.clean(str(e.get('message') or ''))}" for e in errors
    )
    file, row, col = _location(errors[0])
    entry = bundle.entry_of(file)
    return BundleError(
        f"query {query!r} failed: {text}",
        entry=entry,
        line=row if entry else None,
        column=col if entry else None,
    )
