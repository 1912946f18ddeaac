"""The OPA engine: the real ``opa`` binary behind the engine seam.

* ``check`` runs ``opa check --strict --format json`` on the modules and data
  written as a bundle directory (a ``.manifest`` carries each module's Rego
  version), so diagnostics are OPA's own, with the capabilities of the binary.
* ``prepare`` compiles once (``opa check`` without ``--strict``, as the server
  compiles) and returns an ``OpaPrepared``: a managed ``opa run --server``
  listening on a Unix socket in a private 0700 directory (no TCP port),
  started on the first query, the bundle loaded once, health-checked, and
  stopped with its owner (``close()``, garbage collection, interpreter exit,
  and a watchdog that kills it when this process dies).
* Queries the server answers exactly as ``opa eval --format json`` does go to
  its REST API (``data.a.b``, ``x := data.a.b``, ``x = data.a.b`` and
  ``data.a.b = x`` to ``POST /v1/data``, with ``strict-builtin-errors`` as
  configured; without strict errors, any one-line, one-expression query to
  ``POST /v1/query``); every other query, and every query the server
  refuses, is answered by one ``opa eval`` over the same bundle directory,
  so results and errors are OPA's exactly.

See docs/adr/0011-opa-engine.md.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from policysupply._internal.engines.base import (
    EngineUnavailableError,
    RegoDiagnostic,
    RegoVersions,
    ResultSet,
)
from policysupply.errors import BundleError

if TYPE_CHECKING:
    import http.client

ENV_VAR = "POLICYSUPPLY_OPA"

_INSTALL_HINT = (
    "install OPA (https://www.openpolicyagent.org/docs/#running-opa) and put `opa` on "
    f"PATH, set {ENV_VAR} to its path, or use engine='embedded'"
)


def find_opa(explicit: str | os.PathLike[str] | None = None) -> str | None:
    """Finds the ``opa`` binary: ``explicit``, else ``$POLICYSUPPLY_OPA``, else ``PATH``.

    Args:
        explicit: A path given by the caller; it must exist.

    Returns:
        The binary's path, or ``None`` when neither is set and ``opa`` is not
        on ``PATH``.

    Raises:
        EngineUnavailableError: ``explicit`` or ``$POLICYSUPPLY_OPA`` names a
            file that does not exist or is not executable.
    """
    for given, what in ((explicit, "the given opa path"), (os.environ.get(ENV_VAR), ENV_VAR)):
        if given is None or given == "":
            continue
        path = os.fspath(given)
        if not os.path.isfile(path) or not os.access(path, os.X_OK):
            raise EngineUnavailableError(
                f"{what} {path!r} is not an executable file; {_INSTALL_HINT}"
            )
        return os.path.abspath(path)
    return shutil.which("opa")


# -- the bundle directory ------------------------------------------------------

_SAFE_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+@=,-]*\Z")


def _file_name(entry: str, index: int) -> str:
    """The file a module is written to: its entry name when that is a plain path."""
    parts = PurePosixPath(entry).parts
    if (
        entry.endswith(".rego")
        and parts
        and not entry.startswith("/")
        and all(_SAFE_SEGMENT.match(p) for p in parts)
        and "/".join(parts) == entry
    ):
        return entry
    return f"__policysupply_module_{index}.rego"


class _BundleDir:
    """Modules and data written as a bundle directory that ``opa`` reads."""

    def __init__(
        self,
        root: Path,
        modules: Mapping[str, str],
        data_json: str,
        rego_versions: RegoVersions,
    ) -> None:
        self.root = root
        self.files: dict[str, str] = {}  # file name -> entry
        root.mkdir(parents=True, exist_ok=True)
        names = sorted(modules)
        versions = {name: rego_versions.get(name, 1) for name in names}
        for i, name in enumerate(names):
            if versions[name] not in (0, 1):
                raise BundleError("Rego version must be 0 or 1", entry=name)
            file = _file_name(name, i)
            self.files[file] = name
            path = root / file
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(modules[name], encoding="utf-8")
        # Every module v0: OPA's --v0-compatible mode (the query is read as v0
        # too, as `opa eval --v0-compatible` reads it).
        self.v0 = bool(names) and all(v == 0 for v in versions.values())
        manifest: dict[str, Any] = {"rego_version": 0 if self.v0 else 1}
        other = 1 if self.v0 else 0
        per_file = {"/" + f: other for f, n in self.files.items() if versions[n] == other}
        if per_file:
            manifest["file_rego_versions"] = per_file
        (root / ".manifest").write_text(json.dumps(manifest))
        (root / "data.json").write_text(data_json, encoding="utf-8")

    def entry_of(self, file: str | None) -> str | None:
        """The entry a file named in OPA's output is, if it is one of ours."""
        if not file:
            return None
        prefix = str(self.root) + os.sep
        rel = file[len(prefix) :] if file.startswith(prefix) else file
        if rel == "data.json":
            return "data.json"
        if rel == ".manifest":
            return ".manifest"
        return self.files.get(rel)

    def clean(self, message: str) -> str:
        """``message`` with our temporary paths replaced by entry names."""
        prefix = str(self.root) + os.sep
        if prefix not in message:
            return message
        for file, entry in self.files.items():
            message = message.replace(prefix + file, entry)
        return message.replace(prefix, "")


_SHM = "/dev/shm"  # noqa: S108 - mkdtemp inside it, 0700


def _private_dir(size_hint: int = 0) -> Path:
    """A new 0700 directory for one bundle (and the server's socket).

    Without ``$TMPDIR``, Linux's ``/dev/shm`` (memory) when it has room:
    writing and removing a tree there costs a fraction of a disk's
    directory operations, which otherwise dominate a small ``check``.
    """
    base = tempfile.gettempdir()
    if not os.environ.get("TMPDIR") and os.path.isdir(_SHM) and os.access(_SHM, os.W_OK):
        try:
            st = os.statvfs(_SHM)
            if st.f_bavail * st.f_frsize > 4 * size_hint + (64 << 20):
                base = _SHM
        except OSError:
            pass
    # A Unix socket path must stay under ~100 bytes: prefer a short base.
    if len(base) > 60 and os.path.isdir("/tmp"):  # noqa: S108 - mkdtemp below, 0700
        base = "/tmp"  # noqa: S108
    path = Path(tempfile.mkdtemp(prefix="policysupply-opa-", dir=base))
    path.chmod(0o700)
    return path


def _data_json(data: Mapping[str, Any]) -> str:
    try:
        return json.dumps(dict(data), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise BundleError(f"data is not JSON: {exc}", entry="data.json") from None


def _digest(modules: Mapping[str, str], data_json: str, versions: RegoVersions) -> bytes:
    h = hashlib.sha256()
    for name in sorted(modules):
        for part in (name, str(versions.get(name, 1)), modules[name]):
            raw = part.encode("utf-8", "surrogatepass")
            h.update(len(raw).to_bytes(8, "big") + raw)
    h.update(data_json.encode("utf-8", "surrogatepass"))
    return h.digest()


def _size(modules: Mapping[str, str], data_json: str) -> int:
    return sum(len(s) for s in modules.values()) * 4 + len(data_json) * 4


def _opa_errors(proc: subprocess.CompletedProcess[bytes]) -> list[Mapping[str, Any]]:
    """OPA's ``--format json`` errors from either stream (empty if none could be read)."""
    for stream in (proc.stdout, proc.stderr):
        try:
            doc = json.loads(stream)
        except ValueError:
            continue
        if isinstance(doc, Mapping) and isinstance(doc.get("errors"), list):
            return [e for e in doc["errors"] if isinstance(e, Mapping)]
    return []


def _location(error: Mapping[str, Any]) -> tuple[str | None, int | None, int | None]:
    loc = error.get("location")
    if not isinstance(loc, Mapping):
        return None, None, None
    file = loc.get("file")
    row = loc.get("row")
    col = loc.get("col")
    return (
        str(file) if file else None,
        row if isinstance(row, int) else None,
        col if isinstance(col, int) else None,
    )


def _stderr_tail(proc: subprocess.CompletedProcess[bytes]) -> str:
    text = (proc.stderr or proc.stdout or b"").decode("utf-8", "replace").strip()
    return text[-2000:] or f"exit status {proc.returncode}"


class OpaEngine:
    """The real ``opa`` binary behind the engine seam.

    Args:
        opa: Path of the binary; default ``$POLICYSUPPLY_OPA``, then ``PATH``.
        timeout: Seconds one check, server start or query may take.
        strict_builtin_errors: Builtin errors (type errors, division by zero,
            failing builtins) raise ``BundleError`` as with
            ``opa eval --strict-builtin-errors``; when false they are
            undefined, exactly OPA's default.

    Raises:
        EngineUnavailableError: No ``opa`` binary was found, or it does not run.
    """

    def __init__(
        self,
        *,
        opa: str | os.PathLike[str] | None = None,
        timeout: float = 60.0,
        strict_builtin_errors: bool = True,
    ) -> None:
        path = find_opa(opa)
        if path is None:
            raise EngineUnavailableError(f"no `opa` binary found; {_INSTALL_HINT}")
        self._opa = path
        self._timeout = timeout
        self._strict = strict_builtin_errors
        self._version: str | None = None
        # Digests of modules + data that `opa check` passed (prepare skips
        # compiling them again: `policysupply eval DIR` checks, then prepares).
        self._compiled: collections.OrderedDict[bytes, None] = collections.OrderedDict()
        self._compiled_lock = threading.Lock()

    @property
    def name(self) -> str:
        return "opa"

    @property
    def path(self) -> str:
        """The ``opa`` binary this engine runs."""
        return self._opa

    @property
    def version(self) -> str:
        """The binary's version (``opa version``), e.g. ``"1.22.2"``.

        Raises:
            EngineUnavailableError: The binary does not run.
        """
        if self._version is None:
            try:
                proc = subprocess.run(
                    [self._opa, "version"],
                    capture_output=True,
                    timeout=self._timeout,
                    check=False,
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise EngineUnavailableError(f"{self._opa} does not run: {exc}") from None
            match = re.search(rb"^Version:\s*(\S+)", proc.stdout, re.MULTILINE)
            if proc.returncode != 0 or match is None:
                raise EngineUnavailableError(f"{self._opa} does not run: {_stderr_tail(proc)}")
            self._version = match.group(1).decode()
        return self._version

    def __repr__(self) -> str:
        try:
            version = self.version
        except EngineUnavailableError:
            version = "unknown"
        strict = "" if self._strict else ", strict_builtin_errors=False"
        return f"OpaEngine(opa={self._opa!r}, version={version!r}{strict})"

    def _run(self, args: list[str], what: str) -> subprocess.CompletedProcess[bytes]:
        try:
            return subprocess.run(
                [self._opa, *args],
                capture_output=True,
                timeout=self._timeout,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            raise BundleError(f"{what} took longer than {self._timeout} s") from None
        except OSError as exc:
            raise EngineUnavailableError(f"{self._opa} does not run: {exc}") from None

    # -- check -------------------------------------------------------------

    def check(
        self,
        modules: Mapping[str, str],
        data: Mapping[str, Any],
        *,
        rego_versions: RegoVersions,
        strict: bool = True,
    ) -> list[RegoDiagnostic]:
        """Every problem ``opa check --strict`` (``opa check`` when not ``strict``) reports.

        Raises:
            EngineUnavailableError: The binary does not run.
            BundleError: ``opa check`` failed without diagnostics, or timed out.
        """
        return self._check(modules, data, rego_versions=rego_versions, strict=strict)

    def _check(
        self,
        modules: Mapping[str, str],
        data: Mapping[str, Any],
        *,
        rego_versions: RegoVersions,
        strict: bool,
    ) -> list[RegoDiagnostic]:
        data_json = _data_json(data)
        root = _private_dir(_size(modules, data_json))
        try:
            bundle = _BundleDir(root / "b", modules, data_json, rego_versions)
            diags = self._check_dir(bundle, strict=strict)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        if not diags:
            self._remember_compiled(_digest(modules, data_json, rego_versions))
        return diags

    def _remember_compiled(self, digest: bytes) -> None:
        with self._compiled_lock:
            self._compiled[digest] = None
            self._compiled.move_to_end(digest)
            while len(self._compiled) > 64:
                self._compiled.popitem(last=False)

    def _check_dir(self, bundle: _BundleDir, *, strict: bool) -> list[RegoDiagnostic]:
        args = ["check", "--format", "json", "--bundle", str(bundle.root)]
        if strict:
            args.insert(1, "--strict")
        if bundle.v0:
            args.append("--v0-compatible")
        proc = self._run(args, "opa check")
        if proc.returncode == 0:
            return []
        errors = _opa_errors(proc)
        if not errors:
            raise BundleError(f"opa check failed: {bundle.clean(_stderr_tail(proc))}")
        diags = []
        for error in errors:
            file, row, _ = _location(error)
            entry = bundle.entry_of(file) or (bundle.clean(file) if file else "")
            message = bundle.clean(str(error.get("message") or error.get("code") or "error"))
            diags.append(RegoDiagnostic(entry=entry, line=row, message=message))
        return diags

    # -- prepare -----------------------------------------------------------

    def prepare(
        self, modules: Mapping[str, str], data: Mapping[str, Any], *, rego_versions: RegoVersions
    ) -> OpaPrepared:
        """Compiles the modules and data (as ``opa run`` will) for repeated queries.

        The server starts on the first query.

        Raises:
            BundleError: A module does not compile (first problem, on OPA's
                line; the message counts the rest), or the data is not JSON.
            EngineUnavailableError: The binary does not run.
        """
        data_json = _data_json(data)
        digest = _digest(modules, data_json, rego_versions)
        with self._compiled_lock:
            compiled = digest in self._compiled
        root = _private_dir(_size(modules, data_json))
        try:
            bundle = _BundleDir(root / "bundle", modules, data_json, rego_versions)
            # Just checked without problems by this engine: it compiles.
            diags = [] if compiled else self._check_dir(bundle, strict=False)
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
        if diags:
            shutil.rmtree(root, ignore_errors=True)
            first = diags[0]
            more = f" ({len(diags) - 1} more problem(s))" if len(diags) > 1 else ""
            raise BundleError(first.message + more, entry=first.entry or None, line=first.line)
        return OpaPrepared(
            opa=self._opa, root=root, bundle=bundle, timeout=self._timeout, strict=self._strict
        )


# -- the server ----------------------------------------------------------------

# `sh` between OPA and us: it reports OPA's pid, exits when OPA exits, and
# kills OPA when our end of its stdin closes (close(), or this process died).
_WATCHDOG = """\
log=$1; shift
"$@" >"$log" 2>&1 </dev/null &
p=$!
echo "$p"
exec 3<&0
(read -r _ <&3; kill -9 "$p" 2>/dev/null) &
r=$!
exec 3<&-
wait "$p"
kill "$r" 2>/dev/null
exit 0
"""


class _Server:
    """One ``opa run --server`` process behind a watchdog; no reference to its owner."""

    def __init__(self, proc: subprocess.Popen[bytes], opa_pid: int, socket_path: str) -> None:
        self.proc = proc
        self.opa_pid = opa_pid
        self.socket_path = socket_path
        self.pool: list[http.client.HTTPConnection] = []
        self.pool_lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self.proc.poll() is None and _alive(self.opa_pid)

    def stop(self) -> None:
        with self.pool_lock:
            conns, self.pool = self.pool, []
        for conn in conns:
            conn.close()
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@functools.cache
def _unix_connection_class() -> type[http.client.HTTPConnection]:
    """``HTTPConnection`` over a Unix socket (http.client is imported on first use)."""
    import http.client
    import socket

    class UnixConnection(http.client.HTTPConnection):
        def __init__(self, path: str, *, timeout: float) -> None:
            super().__init__("localhost", timeout=timeout)
            self.socket_path = path

        def connect(self) -> None:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(self.timeout)
            s.connect(self.socket_path)
            self.sock = s

    return UnixConnection


def _cleanup(holder: list[_Server], root: Path) -> None:
    """Stops the server (if any) and removes the private directory."""
    while holder:
        holder.pop().stop()
    shutil.rmtree(root, ignore_errors=True)


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
        sock = str(self._root / "opa.sock")
        if os.path.exists(sock):
            os.unlink(sock)
        log = self._root / "opa.log"
        args = [
            self._opa,
            "run",
            "--server",
            "--addr",
            f"unix://{sock}",
            "--log-level",
            "error",
            "--skip-version-check",
            "--disable-telemetry",
            "--bundle",
            str(self._bundle.root),
        ]
        if self._bundle.v0:
            args.append("--v0-compatible")
        proc = subprocess.Popen(
            ["/bin/sh", "-c", _WATCHDOG, "sh", str(log), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            cwd=self._root,
        )
        line = proc.stdout.readline() if proc.stdout is not None else b""
        try:
            pid = int(line)
        except ValueError:
            proc.kill()
            proc.wait()
            raise BundleError("could not start `opa run --server`") from None
        server = _Server(proc, pid, sock)
        deadline = time.monotonic() + self._timeout
        while True:
            if not server.running:
                server.stop()
                text = log.read_text(errors="replace").strip() if log.exists() else ""
                raise BundleError(
                    "`opa run --server` exited: " + self._bundle.clean(text[-2000:] or "no output")
                )
            if os.path.exists(sock):
                try:
                    status, _ = self._request(server, "GET", "/health", None, pool=False)
                    if status == 200:
                        return server
                except OSError:
                    pass
            if time.monotonic() > deadline:
                server.stop()
                raise BundleError(f"`opa run --server` was not healthy within {self._timeout} s")
            time.sleep(0.003)

    def _request(
        self, server: _Server, method: str, path: str, body: bytes | None, *, pool: bool = True
    ) -> tuple[int, bytes]:
        import http.client

        conn: http.client.HTTPConnection | None = None
        reused = False
        if pool:
            with server.pool_lock:
                if server.pool:
                    conn = server.pool.pop()
                    reused = True
        if conn is None:
            conn = _unix_connection_class()(server.socket_path, timeout=self._timeout)
        headers = {"Content-Type": "application/json"} if body is not None else {}
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            payload = resp.read()
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
            conn.close()
            if reused:
                # A kept-alive connection the server closed: once more, fresh.
                return self._request(server, method, path, body, pool=False)
            raise
        except BaseException:
            conn.close()
            raise
        if pool and not resp.will_close:
            with server.pool_lock:
                server.pool.append(conn)
        else:
            conn.close()
        return resp.status, payload

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
        with self._lock:
            if self._closed:
                raise BundleError("this preparation was closed")
        args = [self._opa, "eval", "--format", "json", "--bundle", str(self._bundle.root)]
        if self._strict:
            args.append("--strict-builtin-errors")
        if self._bundle.v0:
            args.append("--v0-compatible")
        work = Path(tempfile.mkdtemp(dir=self._root))
        try:
            if input_json is not None:
                (work / "input.json").write_bytes(input_json)
                args += ["--input", str(work / "input.json")]
            args += ["--", query]
            try:
                proc = subprocess.run(
                    args,
                    capture_output=True,
                    timeout=self._timeout,
                    check=False,
                    stdin=subprocess.DEVNULL,
                    cwd=work,
                )
            except subprocess.TimeoutExpired:
                raise BundleError(f"the query took longer than {self._timeout} s") from None
            except OSError as exc:
                raise EngineUnavailableError(f"{self._opa} does not run: {exc}") from None
        finally:
            shutil.rmtree(work, ignore_errors=True)
        if proc.returncode != 0:
            raise self._error(query, proc)
        try:
            doc = json.loads(proc.stdout)
        except ValueError:
            raise BundleError(f"query {query!r}: unreadable output from opa eval") from None
        return list(doc.get("result") or [])

    def _error(self, query: str, proc: subprocess.CompletedProcess[bytes]) -> BundleError:
        errors = _opa_errors(proc)
        if not errors:
            return BundleError(f"query {query!r} failed: {self._bundle.clean(_stderr_tail(proc))}")
        text = "; ".join(
            f"{e.get('code') or 'error'}: {self._bundle.clean(str(e.get('message') or ''))}"
            for e in errors
        )
        file, row, col = _location(errors[0])
        entry = self._bundle.entry_of(file)
        return BundleError(
            f"query {query!r} failed: {text}",
            entry=entry,
            line=row if entry else None,
            column=col if entry else None,
        )
