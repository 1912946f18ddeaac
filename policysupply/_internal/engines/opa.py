"""The OPA engine: the real ``opa`` binary behind the engine seam.

* ``check`` runs ``opa check --format json`` (with ``--strict`` when asked)
  on the modules and data written as a bundle directory (a ``.manifest``
  carries each module's Rego version), so diagnostics are OPA's own, with
  the capabilities of the binary.
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

The bundle directory (``opa_bundle``), the preparation's queries
(``opa_prepared``), the server process (``opa_server``) and the choice of
transport with the ``opa eval`` path (``opa_query``) are in their own
modules. See docs/adr/0011-opa-engine.md.
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Callable, Mapping
from typing import Any

from policysupply._internal.engines.base import (
    CheckRequest,
    EngineUnavailableError,
    RegoDiagnostic,
    RegoVersions,
)
from policysupply._internal.engines.opa_bundle import (
    _BundleDir,
    _data_json,
    _data_paths_json,
    _digest,
    _location,
    _opa_errors,
    _private_dir,
    _size,
    _stderr_tail,
)
from policysupply._internal.engines.opa_prepared import OpaPrepared
from policysupply.errors import BundleError

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
            EngineUnavailableError: The binary does not run, or ends without a verdict.
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

    def _start(self, args: list[str]) -> subprocess.Popen[bytes]:
        try:
            return subprocess.Popen(
                [self._opa, *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        except OSError as exc:
            raise EngineUnavailableError(f"{self._opa} does not run: {exc}") from None

    def _collect(
        self, proc: subprocess.Popen[bytes], what: str
    ) -> subprocess.CompletedProcess[bytes]:
        """Waits for ``proc`` as ``subprocess.run`` does (killed after the timeout)."""
        try:
            out, err = proc.communicate(timeout=self._timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise BundleError(f"{what} took longer than {self._timeout} s") from None
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    # -- check -------------------------------------------------------------

    def check(self, request: CheckRequest) -> list[RegoDiagnostic]:
        """Every problem ``opa check --strict`` (``opa check`` when not ``strict``) reports.

        ``refuse`` changes nothing: OPA evaluates whatever it checks.

        Raises:
            EngineUnavailableError: The binary does not run, or ends without a verdict.
            BundleError: ``opa check`` failed without diagnostics, or timed out.
        """
        return self.start_check(request)()

    def start_check(self, request: CheckRequest) -> Callable[[], list[RegoDiagnostic]]:
        """Starts :meth:`check`: ``opa check`` runs while the caller goes on.

        The function returned waits for it and returns the diagnostics; it
        must be called on every path (it removes the temporary bundle).

        ``opa check`` reads data only to find rules that conflict with it,
        which depends on the paths the data has, not on its values: it is
        given the data's objects with their keys and every other value as
        ``null`` (a large data document is neither written nor parsed again);
        with ``request.data_is_json`` it is not serialised to find out whether
        it is JSON.

        Raises:
            EngineUnavailableError: The binary does not run, or ends without a verdict.
            BundleError: The data is not JSON, or a Rego version is not 0 or 1.
        """
        modules, data, rego_versions = request.modules, request.data, request.rego_versions
        if not request.data_is_json:
            _data_json(data)  # raises as check always has for data that is not JSON
        paths_json = _data_paths_json(data)
        root = _private_dir(_size(modules, paths_json))
        try:
            bundle = _BundleDir(root / "b", modules, paths_json, rego_versions)
            proc = self._start(self._check_args(bundle, strict=request.strict))
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise

        def finish() -> list[RegoDiagnostic]:
            try:
                diags = self._check_result(bundle, self._collect(proc, "opa check"))
            finally:
                shutil.rmtree(root, ignore_errors=True)
            if not diags:
                self._remember_compiled(_digest(modules, paths_json, rego_versions))
            return diags

        return finish

    def _remember_compiled(self, digest: bytes) -> None:
        with self._compiled_lock:
            self._compiled[digest] = None
            self._compiled.move_to_end(digest)
            while len(self._compiled) > 64:
                self._compiled.popitem(last=False)

    def _check_args(self, bundle: _BundleDir, *, strict: bool) -> list[str]:
        args = ["check", "--format", "json", "--bundle", str(bundle.root)]
        if strict:
            args.insert(1, "--strict")
        if bundle.v0:
            args.append("--v0-compatible")
        return args

    def _check_dir(self, bundle: _BundleDir, *, strict: bool) -> list[RegoDiagnostic]:
        proc = self._start(self._check_args(bundle, strict=strict))
        return self._check_result(bundle, self._collect(proc, "opa check"))

    def _check_result(
        self, bundle: _BundleDir, proc: subprocess.CompletedProcess[bytes]
    ) -> list[RegoDiagnostic]:
        if proc.returncode == 0:
            return []
        errors = _opa_errors(proc)
        if not errors and proc.returncode != 1:
            # `opa check` reports problems with status 1; anything else (a
            # crash, a signal, a binary that is not OPA) is no verdict on the bundle.
            raise EngineUnavailableError(
                f"opa check did not run: {bundle.clean(_stderr_tail(proc))}"
                f" (exit status {proc.returncode})"
            )
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
            EngineUnavailableError: The binary does not run, or ends without a verdict.
        """
        data_json = _data_json(data)
        # What `opa check` compiled depends on the data's paths only (see start_check).
        digest = _digest(modules, _data_paths_json(data), rego_versions)
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
