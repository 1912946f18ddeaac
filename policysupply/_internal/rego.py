"""The in-process embedded engine, kept for callers not yet on the engine seam.

New code uses :class:`policysupply._internal.engines.embedded.EmbeddedEngine`,
which runs rego-cpp in a worker process (a crash there is a ``BundleError``,
not the death of this process) and refuses what rego-cpp answers wrongly.
This module re-exports the source helpers that moved to
``engines.rego_source`` and keeps :class:`Engine` (in-process rego-cpp) for
``Gate`` until it evaluates through the seam. ``compile_diagnostics`` is the
embedded engine's ``check``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from policysupply._internal.engines.base import RegoDiagnostic
from policysupply._internal.engines.rego_source import (
    MAX_NESTING,
    RESULT_VAR,
    _nesting_message,
    check_value_nesting,
    excessive_nesting,
    line_of,
    opa_builtins,
    package_path,
    v1_body_without_if,
    wrap_single_expression,
)
from policysupply.errors import BundleError

if TYPE_CHECKING:
    import regopy

__all__ = [
    "MAX_NESTING",
    "RESULT_VAR",
    "Engine",
    "RegoDiagnostic",
    "check_value_nesting",
    "compile_diagnostics",
    "excessive_nesting",
    "line_of",
    "opa_builtins",
    "package_path",
    "v1_body_without_if",
    "wrap_single_expression",
]

# ---------------------------------------------------------------------------
# The embedded engine.

_ENGINE_LOCK = threading.RLock()


@contextlib.contextmanager
def _captured_c_stdout() -> Iterator[None]:
    """Diverts C-level stdout while rego-cpp runs.

    rego-cpp prints a banner for every parse error straight to file
    descriptor 1; the same error reaches us as an exception, so the print is
    only noise in a user's terminal or notebook server log.
    """
    try:
        fd = sys.__stdout__.fileno() if sys.__stdout__ is not None else 1
    except (AttributeError, OSError, ValueError):
        yield
        return
    with tempfile.TemporaryFile() as sink:
        sys.stdout.flush()
        saved = os.dup(fd)
        os.dup2(sink.fileno(), fd)
        try:
            yield
        finally:
            os.dup2(saved, fd)
            os.close(saved)


def _regopy() -> Any:
    import regopy

    return regopy


_ERR_LOC = re.compile(r"\(error \d+:([^|\n]*)\|(\d+)\|(\d+)")
_ERR_MSG = re.compile(r"\(errormsg (\d+):")


def _first_error_message(text: str) -> str:
    m = _ERR_MSG.search(text)
    if not m:
        return text.strip()
    start = m.end()
    return text[start : start + int(m.group(1))]


def _diagnostic_from_parse_error(text: str, sources: Mapping[str, str]) -> RegoDiagnostic:
    msg = _first_error_message(text)
    loc = _ERR_LOC.search(text)
    if loc and loc.group(1) in sources:
        src = sources[loc.group(1)]
        # rego-cpp reports byte offsets into the UTF-8 source.
        byte_off = int(loc.group(2))
        char_off = len(src.encode("utf-8")[:byte_off].decode("utf-8", "ignore"))
        return RegoDiagnostic(entry=loc.group(1), line=line_of(src, char_off), message=msg)
    name = next(iter(sources), "<module>")
    return RegoDiagnostic(entry=name, line=None, message=msg)


class Engine:
    """A compiled set of modules and data, ready to answer queries.

    Instances are not thread-safe on their own; callers hold ``lock``.
    """

    def __init__(self, modules: Mapping[str, str], data: Mapping[str, Any]) -> None:
        rp = _regopy()
        self.lock = threading.Lock()
        self._interp: regopy.Interpreter = rp.Interpreter()
        for name in sorted(modules):
            off = excessive_nesting(modules[name])
            if off is not None:
                raise BundleError(_nesting_message(), entry=name, line=line_of(modules[name], off))
        check_value_nesting(data, what="data", entry="data.json")
        with _ENGINE_LOCK, _captured_c_stdout():
            for name in sorted(modules):
                try:
                    self._interp.add_module(name, modules[name])
                except rp.RegoError as exc:
                    d = _diagnostic_from_parse_error(str(exc), {name: modules[name]})
                    raise BundleError(d.message, entry=d.entry, line=d.line) from None
            self._interp.add_data_json(json.dumps(dict(data)))

    def query(self, query: str, input: Any = None) -> list[dict[str, Any]]:
        """Runs ``query`` and returns rego-cpp's results (expressions, bindings).

        Raises:
            BundleError: The query failed to parse or evaluate.
        """
        from regopy.rego_shared import (
            rego_free_output,
            rego_output_ok,
            rego_output_string,
            rego_query,
        )

        rp = _regopy()
        check_value_nesting(input, what="input")
        if excessive_nesting(query) is not None:
            raise BundleError(f"query: {_nesting_message()}")
        with self.lock, _ENGINE_LOCK, _captured_c_stdout():
            try:
                # regopy.Input keeps string values exact (set_input_term would keep
                # JSON escapes inside strings and break count(), upper() and co).
                self._interp.set_input(rp.Input(input if input is not None else {}))
                out = rego_query(self._interp._impl, query)
            except rp.RegoError as exc:
                raise BundleError(
                    f"query {query!r} failed: {_first_error_message(str(exc))}"
                ) from None
            try:
                ok = rego_output_ok(out)
                text = rego_output_string(out)
            finally:
                rego_free_output(out)
        if not ok or text.lstrip().startswith("(error") or text == "<error>":
            detail = (
                _first_error_message(text)
                if text != "<error>"
                else ("evaluation error (for example conflicting values for a complete rule)")
            )
            raise BundleError(f"query {query!r} failed: {detail}")
        if text == "undefined":
            return []
        try:
            parsed = json.loads(text)
        except RecursionError:
            raise BundleError(
                f"query {query!r}: the result is nested too deeply to be read back"
            ) from None
        except ValueError:
            # rego-cpp does not escape quotes or backslashes in the strings it
            # prints; such a result cannot be read back unambiguously.
            raise BundleError(
                f"query {query!r}: the embedded engine cannot return strings containing "
                'quotes or backslashes; return them through OPA, or avoid " and \\ in results'
            ) from None
        return parsed if isinstance(parsed, list) else [parsed]


def compile_diagnostics(
    modules: Mapping[str, str],
    *,
    v1_modules: frozenset[str],
    packages: Mapping[str, tuple[str, ...]],
) -> list[RegoDiagnostic]:
    """Every problem the embedded engine's check finds, without its refusals.

    ``Bundle.check`` checks bundles that OPA may evaluate, so builtins the
    embedded engine refuses are not problems here (``EmbeddedEngine.check``
    refuses them).
    """
    del packages  # derived again from the sources
    from policysupply._internal.engines.embedded import default_engine

    versions = {name: (1 if name in v1_modules else 0) for name in modules}
    return default_engine().diagnostics(modules, rego_versions=versions, refuse=False)
