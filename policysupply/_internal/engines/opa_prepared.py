"""A bundle prepared by the OPA engine: queries to a managed ``opa run --server``.

``OpaEngine.prepare`` (in ``opa``) compiles the bundle directory and returns
an ``OpaPrepared``. It starts the server (``opa_server``) on the first query
and asks its REST API what it answers exactly as ``opa eval --format json``
does (``data.a.b``, ``x := data.a.b``, ``x = data.a.b`` and ``data.a.b = x``
to ``POST /v1/data``; without strict builtin errors, any one-line,
one-expression query to ``POST /v1/query``); every other query, and every
query the server refuses, is answered by one ``opa eval`` (``opa_query``).
"""

from __future__ import annotations

import json
import threading
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from policysupply._internal.engines.base import ResultSet
from policysupply.errors import BundleError

if TYPE_CHECKING:
    from policysupply._internal.engines.opa_bundle import _BundleDir

    # The server and the query transport load with the first query.
    from policysupply._internal.engines.opa_server import _Server


class OpaPrepared:
    """A bundle loaded into a managed ``opa run --server`` on a Unix socket.

    Thread-safe. ``close()`` stops the server and removes the private
    directory; garbage collection and interpreter exit do too, and the
    server dies with this process (a watchdog holds a pipe from it).
    """

    def __init__(
        self, *, opa: str, root: Path, bundle: _BundleDir, timeout: float, strict: bool
    ) -> None:
        self._opa = opa
        self._root = root
        self._bundle = bundle
        self._timeout = timeout
        self._strict = strict
        self._lock = threading.Lock()
        self._holder: list[_Server] = []
        self._closed = False
        from policysupply._internal.engines.opa_server import _cleanup

        self._finalizer = weakref.finalize(self, _cleanup, self._holder, root)
        # Queries answered by the server and by `opa eval` (tests, benchmarks).
        self.stats = {"server": 0, "eval": 0}

    @property
    def engine(self) -> str:
        return "opa"

    @property
    def server_pid(self) -> int | None:
        """The ``opa run`` process id while it runs (for tests and diagnostics)."""
        with self._lock:
            return self._holder[0].opa_pid if self._holder else None

    def __repr__(self) -> str:
        return (
            f"OpaPrepared(opa={self._opa!r}, modules={len(self._bundle.files)}, "
            f"server_pid={self.server_pid}, strict_builtin_errors={self._strict})"
        )

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._finalizer()

    # -- the server --------------------------------------------------------

    def _server(self) -> _Server:
        with self._lock:
            if self._closed:
                raise BundleError("this preparation was closed")
            if self._holder and self._holder[0].running:
                return self._holder[0]
            while self._holder:
                self._holder.pop().stop()
            server = self._start()
            self._holder.append(server)
            return server

    def _start(self) -> _Server:
        from policysupply._internal.engines.opa_server import start_server

        return start_server(
            opa=self._opa, root=self._root, bundle=self._bundle, timeout=self._timeout
        )

    def _request(
        self, server: _Server, method: str, path: str, body: bytes | None, *, pool: bool = True
    ) -> tuple[int, bytes]:
        from policysupply._internal.engines.opa_server import request

        return request(server, method, path, body, timeout=self._timeout, pool=pool)

    # -- queries -----------------------------------------------------------

    def query(self, query: str, input: Any = None) -> Sequence[ResultSet]:
        """Evaluates ``query`` as ``opa eval --format json`` would.

        Returns:
            OPA's result sets (``expressions`` with ``value``, ``text`` and
            ``location``, and ``bindings`` when the query binds variables);
            empty when undefined.

        Raises:
            BundleError: The query does not parse or compile, evaluation
                failed (conflicts always; builtin errors when strict), it
                timed out, or ``opa`` failed.
        """
        input_json: bytes | None = None
        if input is not None:
            try:
                input_json = json.dumps(input, ensure_ascii=False, allow_nan=False).encode()
            except (TypeError, ValueError, RecursionError) as exc:
                raise BundleError(f"input is not JSON: {exc}") from None
        fast = self._via_server(query, input_json)
        if fast is not None:
            self.stats["server"] += 1
            return fast
        self.stats["eval"] += 1
        return self._via_eval(query, input_json)

    def _via_server(self, query: str, input_json: bytes | None) -> list[ResultSet] | None:
        """The answer from the server, or ``None`` when ``opa eval`` must answer."""
        from policysupply._internal.engines.opa_query import (
            _BIND,
            _KEYWORDS,
            _RBIND,
            _WRAP_VAR,
            _data_path,
            _split,
            _top_level_plain,
        )

        split = _split(query)
        if split is None:
            return None
        text, row, col = split
        location = {"row": row, "col": col}
        path = _data_path(text)
        bind: str | None = None
        if path is None:
            m = _BIND.match(text)
            r = _RBIND.match(text)
            if m and m.group(1) not in _KEYWORDS and m.group(1) != "_":
                path = _data_path(m.group(3).strip(" \t"))
                bind = m.group(1) if path is not None else None
            elif r and r.group(2) not in _KEYWORDS and r.group(2) != "_":
                path = _data_path(r.group(1))
                bind = r.group(2) if path is not None else None
        if path is not None:
            body = b'{"input":' + input_json + b"}" if input_json is not None else b"{}"
            strict = "true" if self._strict else "false"
            doc = self._post(f"/v1/data/{path}?strict-builtin-errors={strict}", body)
            if doc is None:
                return None
            if "result" not in doc:
                return []
            if bind is None:
                return [
                    {"expressions": [{"value": doc["result"], "text": text, "location": location}]}
                ]
            return [
                {
                    "expressions": [{"value": True, "text": text, "location": location}],
                    "bindings": {bind: doc["result"]},
                }
            ]
        if self._strict:
            # /v1/query has no strict builtin errors.
            return None
        m = _BIND.match(text)
        if m and m.group(1) not in _KEYWORDS and _top_level_plain(m.group(3)):
            wrapped, var = text, None
        elif _top_level_plain(text):
            wrapped, var = f"{_WRAP_VAR} := ({text})", _WRAP_VAR
        else:
            return None
        body = b'{"query":' + json.dumps(wrapped).encode()
        body += b',"input":' + input_json + b"}" if input_json is not None else b"}"
        doc = self._post("/v1/query", body)
        if doc is None:
            return None
        rows = doc.get("result") or []
        out: list[ResultSet] = []
        for row_ in rows:
            bindings = dict(row_)
            value = bindings.pop(var) if var is not None else True
            result: dict[str, Any] = {
                "expressions": [{"value": value, "text": text, "location": location}]
            }
            if bindings:
                result["bindings"] = bindings
            out.append(result)
        return out

    def _post(self, path: str, body: bytes) -> Mapping[str, Any] | None:
        """A 200 answer's JSON, or ``None`` (any error: ``opa eval`` says what it is)."""
        server = self._server()
        try:
            status, payload = self._request(server, "POST", path, body)
        except TimeoutError:
            # The server may still be evaluating: stop it rather than let it
            # burn CPU; the next query starts a fresh one.
            with self._lock:
                if self._holder and self._holder[0] is server:
                    self._holder.pop()
            server.stop()
            raise BundleError(f"the query took longer than {self._timeout} s") from None
        except OSError:
            return None
        if status != 200:
            return None
        try:
            doc = json.loads(payload)
        except ValueError:
            return None
        return doc if isinstance(doc, Mapping) else None

    def _via_eval(self, query: str, input_json: bytes | None) -> list[ResultSet]:
        from policysupply._internal.engines.opa_query import run_eval

        with self._lock:
            if self._closed:
                raise BundleError("this preparation was closed")
        return run_eval(
            query,
            input_json,
            opa=self._opa,
            root=self._root,
            bundle=self._bundle,
            timeout=self._timeout,
            strict=self._strict,
        )
