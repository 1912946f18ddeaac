"""Getting verified bundles to a policy engine: OPA's REST API, a bundle server, a directory.

Every loader here accepts only a :class:`~policysupply.verifier.VerifiedBundle`,
which only a :class:`~policysupply.verifier.Verifier` can create, so nothing
reaches OPA without passing verification first.

- :class:`OPA` pushes a bundle's modules and data into a running OPA through
  its REST API and rolls back to what was there if any step fails.
- :class:`BundleServer` serves verified bundles over OPA's bundle HTTP
  protocol (ETag, ``304``, long polling), so OPA activates each bundle
  atomically; it can watch a registry tag and publish only what verifies.
- :func:`extract_verified` writes a bundle to a directory atomically, for
  file-based loaders (``opa run -b DIR``, sidecars).
- :func:`publish` and :func:`fetch_verified` are the pipeline in one call each.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import hashlib
import hmac
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import threading
import urllib.parse
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import attrs

from policysupply._internal.oci import Reference
from policysupply._internal.stores import atomic_write  # temp file (0600), fsync, rename
from policysupply.errors import (
    BundleError,
    LoadError,
    PolicySupplyError,
    RegistryError,
    VerificationError,
)
from policysupply.verifier import VerifiedBundle

if TYPE_CHECKING:
    import http.server

    from policysupply.bundle import Bundle
    from policysupply.native import NativeTrust
    from policysupply.registry import Registry
    from policysupply.signer import Signer
    from policysupply.trust_state import TrustState
    from policysupply.verifier import Verifier

__all__ = [
    "OPA",
    "BundleServer",
    "BundleWatch",
    "LoadResult",
    "ServedBundle",
    "extract_verified",
    "fetch_verified",
    "publish",
]

logger = logging.getLogger("policysupply.loaders")

_MISSING = object()  # "no document here" (distinct from JSON null)
Path_ = tuple[str, ...]  # a data path, split into segments


def _require_verified(value: object, where: str) -> VerifiedBundle:
    if not isinstance(value, VerifiedBundle):
        raise TypeError(
            f"{where} accepts only a VerifiedBundle (from Verifier.verify_bundle or "
            f"fetch_verified), not {type(value).__name__}"
        )
    return value


# -- pipeline helpers -----------------------------------------------------------


def publish(
    bundle: Bundle,
    registry: Registry,
    ref: str | Reference,
    signer: Signer,
    *,
    annotations: Mapping[str, str] | None = None,
    native: bool | None = None,
) -> Reference:
    """Pushes ``bundle`` as a policy image, then signs the pushed digest.

    Defence in depth: with a key-based signer the bundle first gets an
    OPA-native signature by the same key (``kid`` = the cosign key id), so
    OPA verifies it itself even when it pulls the image without policysupply
    (configure it with :meth:`NativeTrust.from_cosign_keys
    <policysupply.native.NativeTrust.from_cosign_keys>` ``.to_opa_config``).

    Args:
        bundle: The bundle to publish.
        registry: Where to push it.
        ref: Target reference (its tag is moved to the new image).
        signer: Signs the digest that was pushed (never a tag).
        annotations: Extra signed claims (``cosign sign -a``).
        native: Add the OPA-native signature. ``None`` (default): yes for a
            key-based signer whose key OPA can verify, unless the bundle
            already carries one (kept as it is); ``True``: always (replacing
            an existing one; an error for keyless signers); ``False``: never.

    Returns:
        The digest reference of the pushed image.

    Raises:
        RegistryError: The push or storing the signature failed.
        SigningError: A signature could not be made.
    """
    from policysupply._internal.opa_signatures import SIGNATURES_FILE
    from policysupply.native import native_algorithm

    if native is None:
        native = (
            not signer.is_keyless
            and SIGNATURES_FILE not in bundle.files
            and native_algorithm(signer._need_key("publish")) is not None
        )
    if native:
        bundle = bundle.sign(signer, key_id=signer.key_id)
    pushed = registry.push(bundle, ref)
    signer.sign(registry, pushed, annotations=annotations)
    return pushed


def fetch_verified(
    registry: Registry,
    ref: str | Reference,
    verifier: Verifier,
    *,
    state: TrustState | None = None,
) -> VerifiedBundle:
    """Resolves, verifies and pulls a policy image: :meth:`Verifier.verify_bundle`.

    Args:
        registry: Where the image lives.
        ref: Tag or digest reference.
        verifier: The trust policy to apply.
        state: Rollback protection (last accepted revision per reference).

    Raises:
        VerificationError: Unsigned, untrusted, below threshold, or a rollback.
        RegistryError: The image cannot be resolved or pulled.
        BundleError: The verified image does not hold a valid bundle.
    """
    return verifier.verify_bundle(registry, ref, state=state)


# -- extraction -----------------------------------------------------------------


def _safe_entry(name: str) -> Path:
    p = Path(name)
    if (
        not name
        or name.startswith("/")
        or "\\" in name
        or any(part in ("", ".", "..") for part in name.split("/"))
    ):
        raise LoadError(f"bundle entry {name!r} is not a safe relative path; nothing extracted")
    return p


def extract_verified(verified: VerifiedBundle, directory: str | os.PathLike[str]) -> Path:
    """Writes a verified bundle's entries into ``directory``, atomically.

    The entries (``.manifest``, ``data.json``, the Rego modules and any other
    bundle files, as :meth:`Bundle.to_bytes` would archive them) are written
    to a temporary sibling directory and flushed to disk; only then does the
    complete tree take ``directory``'s place. Only the bundle's own entries
    are written; entry names are re-checked (no absolute paths, no ``..``).

    How it takes the old tree's place:

    - Absent or empty ``directory``: one ``rename``.
    - A previous extraction, on Linux (``renameat2(RENAME_EXCHANGE)``, most
      local file systems since Linux 3.15) and macOS (``renamex_np(RENAME_SWAP)``):
      the new tree and the old one swap names in one atomic step, so a
      reader resolving a path under ``directory`` finds the old tree or the
      new one, never a mix and never no directory. The old tree is then
      deleted (a process holding files of it open keeps reading them).
    - Elsewhere, or where the file system cannot swap (``EINVAL``,
      ``ENOTSUP``, ``ENOSYS``): two renames, old tree aside then new tree in.
      Never a mix, but between the two a reader finds no ``directory`` for
      an instant.

    ``directory`` stays a real directory, not a symlink to versioned trees:
    OPA does not follow a symlink given as ``opa run -b DIRECTORY`` (without a
    trailing ``/`` it loads an empty bundle), so a symlink swap would risk
    silently serving no policy.

    ``directory`` may be absent, empty, or a previous extraction (it holds a
    ``.manifest``); anything else is refused rather than replaced.

    Args:
        verified: The bundle to write.
        directory: The target directory (``opa run -b DIRECTORY`` loads it).

    Returns:
        The target directory.

    Raises:
        TypeError: ``verified`` is not a :class:`VerifiedBundle`.
        LoadError: The target cannot be replaced or written.
    """
    verified = _require_verified(verified, "extract_verified")
    target = Path(directory)
    entries = verified.bundle.entries()
    for name in entries:
        _safe_entry(name)
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise LoadError(f"{target} exists and is not a directory; nothing extracted")
    if target.is_dir() and any(target.iterdir()) and not (target / ".manifest").is_file():
        raise LoadError(
            f"{target} is not empty and is not a previous extraction (no .manifest); "
            "refusing to replace it"
        )
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent))
    except OSError as exc:
        raise LoadError(f"cannot create a directory next to {target}: {exc.strerror}") from None
    old: Path | None = None
    try:
        os.chmod(tmp, 0o755)  # noqa: S103 - policy is not secret; OPA may run as another user
        for name, content in sorted(entries.items()):
            path = tmp / _safe_entry(name)
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "xb") as f:  # "x": never follow or reuse anything
                f.write(content)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(path, 0o644)
        occupied = target.is_dir() and any(target.iterdir())
        if occupied and _exchange(tmp, target):
            old = tmp  # one atomic step: the old tree now has the temporary name
        elif occupied:
            # Two renames: the old tree moves aside only once the new one is complete.
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=parent))
            os.rmdir(old)
            os.rename(target, old)
            os.rename(tmp, target)
        else:
            os.rename(tmp, target)  # absent, or an empty directory (replaced atomically)
        _fsync_dir(parent)
    except OSError as exc:
        if old is not None and not target.exists():
            with contextlib.suppress(OSError):
                os.rename(old, target)
            old = None
        shutil.rmtree(tmp, ignore_errors=True)
        raise LoadError(f"cannot extract into {target}: {exc.strerror or exc}") from None
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return target


# renameat2(2) flag and the *at() "current directory" descriptor (Linux).
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
# renamex_np(2) flag (macOS).
_RENAME_SWAP = 2
# Errors meaning "this system or file system cannot swap two names".
_NO_EXCHANGE = {errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP}


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swaps the names of two existing paths; False if the platform cannot.

    Raises:
        OSError: The swap was possible but failed (e.g. permissions).
    """
    import ctypes
    import sys

    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return False
    fa, fb = os.fsencode(a), os.fsencode(b)
    if sys.platform.startswith("linux") and hasattr(libc, "renameat2"):  # glibc >= 2.28, musl
        rc = libc.renameat2(_AT_FDCWD, fa, _AT_FDCWD, fb, ctypes.c_uint(_RENAME_EXCHANGE))
    elif sys.platform == "darwin" and hasattr(libc, "renamex_np"):
        rc = libc.renamex_np(fa, fb, ctypes.c_uint(_RENAME_SWAP))
    else:
        return False
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in _NO_EXCHANGE:
        return False
    raise OSError(err, os.strerror(err), str(b))


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# -- pure helpers for the REST loader ------------------------------------------


def _split(path: str) -> Path_:
    p = path.strip().strip("/")
    if p.startswith("data."):
        p = p[5:]
    elif p == "data":
        p = ""
    sep = "/" if "/" in p else "."
    return tuple(s for s in p.split(sep) if s) if p else ()


def _url_path(path: Path_) -> str:
    return "/".join(urllib.parse.quote(s, safe="") for s in path)


def _module_prefix(name: str) -> str:
    # "~" cannot occur in a registry reference, so no bundle's prefix is a
    # prefix of another's, whatever its module paths are.
    return f"policysupply/{name}/~/"


def _record_key(name: str) -> str:
    return name.replace("/", "~")


def _check_load_name(name: str) -> str:
    if not name or "~" in name or any(c.isspace() or ord(c) < 32 for c in name):
        raise LoadError(
            f"invalid load name {name!r}: use a reference name like host/repo "
            "(no '~', spaces or control characters)"
        )
    return name.strip("/")


def _effective_roots(bundle: Bundle) -> tuple[Path_, ...]:
    """Roots as data paths; a bundle that owns all of ``data`` gets its top-level keys.

    OPA's bundle plugin would wipe every other document for such a bundle; over
    the REST API we replace only the top-level documents the bundle writes (and,
    via the load record, those its previous revision wrote).
    """
    roots = bundle.manifest.effective_roots
    if "" not in roots:
        return tuple(tuple(r.split("/")) for r in roots)
    from policysupply._internal.rego import package_path

    tops = set(bundle.data)
    for path, source in bundle.modules.items():
        pkg = package_path(source, entry=path)
        if pkg:
            tops.add(pkg[0])
    return tuple((t,) for t in sorted(tops))


def _overlap(a: Path_, b: Path_) -> bool:
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def _value_at(doc: Any, path: Path_) -> Any:
    node = doc
    for seg in path:
        if not isinstance(node, Mapping) or seg not in node:
            return _MISSING
        node = node[seg]
    return node


def _virtual_paths(policies: list[Mapping[str, Any]]) -> list[Path_]:
    """Data paths that rules define, from ``GET /v1/policies`` ASTs.

    Each is the package path plus the ground prefix of the rule's head
    reference (``q.r := 1`` in ``package a`` → ``a/q/r``; ``p[x] ...`` → ``a/p``).
    OPA refuses base data at or under such a path, so removing them from a
    ``GET /v1/data`` answer leaves the base documents.
    """
    out: set[Path_] = set()
    for policy in policies:
        ast = policy.get("ast") or {}
        pkg_terms = (ast.get("package") or {}).get("path") or []
        pkg = tuple(str(t.get("value")) for t in pkg_terms[1:])
        for rule in ast.get("rules") or []:
            head = rule.get("head") or {}
            ref = head.get("ref") or [{"type": "var", "value": head.get("name")}]
            ground = [str(ref[0].get("value"))] if ref else []
            for term in ref[1:]:
                if term.get("type") != "string":
                    break
                ground.append(str(term.get("value")))
            if ground and ground[0] != "None":
                out.add(pkg + tuple(ground))
    return sorted(out)


def _base_only(merged: Any, root: Path_, virtual: list[Path_]) -> Any:
    """The base document at ``root`` from a merged (base + rules) ``GET /v1/data`` answer."""
    if merged is _MISSING:
        return _MISSING
    if any(root[: len(v)] == v for v in virtual):
        return _MISSING  # a rule defines this path or one above it: no base data can live here
    rels = [v[len(root) :] for v in virtual if v[: len(root)] == root]
    if not rels:
        return merged
    doc = json.loads(json.dumps(merged))  # a private copy to prune
    for rel in rels:
        trail: list[tuple[dict[str, Any], str]] = []
        node = doc
        for seg in rel:
            if not isinstance(node, dict) or seg not in node:
                trail = []
                break
            trail.append((node, seg))
            node = node[seg]
        if not trail:
            continue
        parent, key = trail.pop()
        del parent[key]
        # Package containers exist only because of the rules: drop those left empty.
        while trail and not parent:
            parent, key = trail.pop()
            if not parent[key]:
                del parent[key]
    if isinstance(doc, dict) and not doc and isinstance(merged, dict) and merged:
        return _MISSING
    return doc


def _redact(text: str, secret: str | None) -> str:
    return text.replace(secret, "<redacted>") if secret else text


@attrs.frozen(kw_only=True)
class LoadResult:
    """What :meth:`OPA.load` did.

    Attributes:
        name: The load name (module ids and the load record are keyed by it).
        reference: The verified image, by digest.
        revision: The bundle's manifest revision.
        roots: The data roots the bundle owns in OPA.
        modules: Policy ids that now hold the bundle's modules.
        removed: Policy ids deleted because the new revision no longer has them.
        changed: Number of writes OPA accepted (0 when it already held this bundle).
    """

    name: str
    reference: Reference
    revision: str
    roots: tuple[str, ...]
    modules: tuple[str, ...]
    removed: tuple[str, ...]
    changed: int


class _Rejected(Exception):
    """OPA answered a write with an error (compile, parse, conflict, auth)."""

    def __init__(self, status: int, code: str, message: str, parse: bool) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.parse = parse

    @property
    def retryable(self) -> bool:
        """A compile error that another module's write may resolve (not a parse error)."""
        return not self.parse and self.code in ("invalid_parameter", "invalid_operation")


class _Rest:
    """The REST calls the loader needs, over opa-python-client's session.

    opa-python-client's methods are used where they fit (module PUT/DELETE,
    data DELETE); reads, data writes and queries go over the same ``requests``
    session (ADR 0008 says why).
    """

    def __init__(
        self, url: str, token: str | None, timeout: float, retries: int, verify: Any
    ) -> None:
        from opa_client import OpaClient

        parts = urllib.parse.urlsplit(url)
        https = parts.scheme == "https"
        self.client = OpaClient(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or (443 if https else 80),
            ssl=https,
            token=token,
            timeout=timeout,
            retries=retries,
        )
        # OpaClient builds "scheme://host:port/v1"; a path prefix (OPA behind a
        # gateway) or an IPv6 host need the URL as given.
        self.base = url.rstrip("/")
        self.client.root_url = f"{self.base}/v1"
        self.session = self.client._session
        if https:
            self.session.verify = verify
        self.timeout = timeout
        self.token = token

    def close(self) -> None:
        self.client.close_connection()

    # Every request funnels through here so transport errors become LoadError.
    def call(self, what: str, fn: Callable[[], Any]) -> Any:
        import requests
        from opa_client import errors as oe

        try:
            return fn()
        except _Rejected:
            raise
        except oe.RegoParseError as exc:
            details = [e.get("message", "") for e in (exc.errors or []) if isinstance(e, Mapping)]
            parse = any(
                isinstance(e, Mapping) and e.get("code") == "rego_parse_error"
                for e in exc.errors or []
            )
            msg = "; ".join(d for d in details if d) or str(exc.message)
            raise _Rejected(400, str(exc.expression), msg, parse) from None
        except (
            oe.DeletePolicyError,
            oe.DeleteDataError,
            oe.PolicyNotFoundError,
            oe.TypeException,
        ) as exc:
            raise _Rejected(400, str(exc.expression), str(exc.message), False) from None
        except requests.RequestException as exc:
            raise LoadError(
                f"OPA at {self.base}: {what} failed: {type(exc).__name__}: "
                f"{_redact(str(exc), self.token)}"
            ) from None
        except ValueError as exc:  # a body that is not JSON (a proxy's error page)
            raise LoadError(
                f"OPA at {self.base}: {what}: unreadable answer ({_redact(str(exc), self.token)})"
            ) from None

    def _check(self, resp: Any, ok: tuple[int, ...]) -> Any:
        if resp.status_code in ok:
            return resp
        try:
            body = resp.json()
        except ValueError:
            body = {}
        code = str(body.get("code") or resp.status_code)
        errs = body.get("errors") or []
        detail = "; ".join(str(e.get("message", "")) for e in errs if isinstance(e, Mapping))
        message = detail or str(body.get("message") or resp.reason or "")
        raise _Rejected(
            resp.status_code,
            code,
            _redact(message, self.token),
            any(isinstance(e, Mapping) and e.get("code") == "rego_parse_error" for e in errs),
        )

    def list_policies(self) -> list[Mapping[str, Any]]:
        def go() -> list[Mapping[str, Any]]:
            resp = self._check(
                self.session.get(f"{self.base}/v1/policies", timeout=self.timeout), (200,)
            )
            return list(resp.json().get("result") or [])

        return list(self.call("listing policies", go))

    def get_data(self, path: Path_) -> Any:
        def go() -> Any:
            resp = self._check(
                self.session.get(f"{self.base}/v1/data/{_url_path(path)}", timeout=self.timeout),
                (200,),
            )
            body = resp.json()
            return body.get("result", _MISSING)

        return self.call(f"reading data/{'/'.join(path)}", go)

    def put_data(self, path: Path_, value: Any) -> None:
        # Not OpaClient.update_or_create_data: it takes objects only and sends
        # spaced JSON; a compact body is smaller for OPA to read.
        where = _url_path(path)
        body = json.dumps(value, separators=(",", ":")).encode()  # ASCII: the fastest path
        self.call(
            f"writing data/{'/'.join(path)}", lambda: self._send_json("PUT", where, body, (204,))
        )

    def delete_data(self, path: Path_) -> None:
        self._delete(
            f"deleting data/{'/'.join(path)}",
            lambda: self.client.delete_data(_url_path(path)),
        )

    def put_policy(self, pid: str, raw: str) -> None:
        quoted = urllib.parse.quote(pid, safe="/:~@")
        self.call(
            f"writing policy {pid}",
            # rego_compat=False: the client would otherwise rewrite "v0" syntax
            # and upload something other than the verified module.
            lambda: self.client.update_policy_from_string(raw, quoted, rego_compat=False),
        )

    def delete_policy(self, pid: str) -> None:
        quoted = urllib.parse.quote(pid, safe="/:~@")
        self._delete(f"deleting policy {pid}", lambda: self.client.delete_policy(quoted))

    def query(self, path: Path_, input: Any) -> Any:
        payload = {} if input is None else {"input": input}
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()

        def go() -> Any:
            resp = self._send_json("POST", _url_path(path), body, (200,))
            return resp.json().get("result")

        return self.call(f"querying data/{'/'.join(path)}", go)

    def _send_json(self, method: str, where: str, body: bytes, ok: tuple[int, ...]) -> Any:
        """Sends JSON ``body`` to ``/v1/data/<where>``; the response if its status is in ``ok``."""
        return self._check(
            self.session.request(
                method,
                f"{self.base}/v1/data/{where}",
                data=body,
                headers={"Content-Type": "application/json"},
                timeout=self.timeout,
            ),
            ok,
        )

    def _delete(self, what: str, fn: Callable[[], Any]) -> None:
        """``call(what, fn)`` for a delete: what OPA does not have is already gone."""
        try:
            self.call(what, fn)
        except _Rejected as exc:
            if exc.code != "resource_not_found":
                raise

    def healthy(self) -> bool:
        import requests

        try:
            resp = self.session.get(f"{self.base}/health", timeout=self.timeout)
        except requests.RequestException:
            return False
        return bool(resp.status_code == 200)


_RECORDS: Path_ = ("system", "policysupply", "bundles")


class _Plan:
    """One load (or unload) as a sequence of writes, each with its exact inverse."""

    def __init__(self, rest: _Rest) -> None:
        self.rest = rest
        self.undo: list[tuple[str, Callable[[], None]]] = []
        self.writes = 0

    def put_module(self, pid: str, raw: str, before: str | None) -> None:
        self._push(f"restore policy {pid}", self._module_restorer(pid, before))
        self.rest.put_policy(pid, raw)
        self.writes += 1

    def delete_module(self, pid: str, before: str | None) -> None:
        self._push(f"restore policy {pid}", self._module_restorer(pid, before))
        self.rest.delete_policy(pid)
        self.writes += 1

    def set_data(self, path: Path_, value: Any, before: Any) -> None:
        self._push(f"restore data/{'/'.join(path)}", self._data_restorer(path, before))
        if value is _MISSING:
            self.rest.delete_data(path)
        else:
            self.rest.put_data(path, value)
        self.writes += 1

    def converge(
        self,
        ops: list[tuple[str, str]],
        modules: Mapping[str, str],
        state: dict[str, str | None],
    ) -> dict[tuple[str, str], _Rejected]:
        """Runs module deletes/puts in rounds until all pass or a round passes none.

        OPA compiles every module on each write, so one may be refused until
        another is written or removed (a function it calls, a module that
        calls it): order is found by retrying.

        Returns:
            The operations that kept failing, with OPA's answer.
        """
        pending = list(dict.fromkeys(ops))
        while pending:
            errors: dict[tuple[str, str], _Rejected] = {}
            for op in pending:
                kind, pid = op
                try:
                    if kind == "delete":
                        if state.get(pid) is not None:
                            self.delete_module(pid, state[pid])
                            state[pid] = None
                    else:
                        self.put_module(pid, modules[pid], state.get(pid))
                        state[pid] = modules[pid]
                except _Rejected as exc:
                    if not exc.retryable:
                        raise
                    errors[op] = exc
            if len(errors) == len(pending):
                return errors
            pending = [op for op in pending if op in errors]
        return {}

    # The inverse is registered before the write: if the write reached OPA but
    # its answer was lost, restoring is still right (each inverse is an
    # idempotent "set back to what it was").
    def _push(self, what: str, fn: Callable[[], None]) -> None:
        self.undo.append((what, fn))

    def _module_restorer(self, pid: str, before: str | None) -> Callable[[], None]:
        if before is None:
            return lambda: self.rest.delete_policy(pid)
        return lambda: self.rest.put_policy(pid, before)

    def _data_restorer(self, path: Path_, before: Any) -> Callable[[], None]:
        if before is _MISSING:
            return lambda: self.rest.delete_data(path)
        return lambda: self.rest.put_data(path, before)

    def rollback(self) -> list[str]:
        failures = []
        for what, fn in reversed(self.undo):
            try:
                fn()
            except (_Rejected, LoadError) as exc:
                failures.append(f"{what}: {exc}")
        return failures


class OPA:
    """A running OPA server, loaded through its REST API.

    ``load`` puts a verified bundle's modules (as policies with ids derived
    from the image and the module path) and its data (one document per
    manifest root) into OPA, removes what the bundle's previous revision had
    and this one does not, and records the load under
    ``data.system.policysupply.bundles``. If any step fails, every step already
    taken is undone, so OPA keeps serving the previous bundle.

    The REST API has no multi-request transaction: while a load runs,
    queries can see some modules of the new revision and some of the old.
    For atomic activation use :class:`BundleServer`.

    Example:
        >>> opa = OPA("http://127.0.0.1:8181")                      # doctest: +SKIP
        >>> opa.load(fetch_verified(registry, "acme/policy:1", verifier))  # doctest: +SKIP
        >>> opa.query("k8s/admission/allow", {"kind": "Pod"})      # doctest: +SKIP
        True
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        timeout: float = 10.0,
        retries: int = 2,
        verify: bool | str = True,
    ) -> None:
        """Describes the server; no connection is made until the first call.

        Args:
            url: OPA's base URL (``http://127.0.0.1:8181``; a path prefix is kept).
            token: Bearer token for OPA's ``--authentication=token``; never
                shown in ``repr`` or error messages.
            timeout: Seconds for each request (connect and read).
            retries: Retries of a request after a connection error or a
                500/502/504 answer (opa-python-client's policy).
            verify: For ``https``: ``False``, or a CA bundle path.

        Raises:
            LoadError: ``url`` is not an ``http``/``https`` URL, or carries
                credentials (use ``token=``).
        """
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise LoadError(f"OPA URL must be http:// or https://host[:port]; got {url!r}")
        if parts.username or parts.password:
            raise LoadError("OPA URL must not carry credentials; pass token= instead")
        if parts.query or parts.fragment:
            raise LoadError("OPA URL must not have a query or fragment")
        self.url = url.rstrip("/")
        self._token = token
        self._timeout = timeout
        self._retries = retries
        self._verify = verify
        self._client: _Rest | None = None
        self._lock = threading.Lock()
        # What this object last loaded per name: the load record and the data
        # at each root. While OPA's record still matches, this is the exact
        # rollback snapshot, and OPA need not evaluate (and send) its data.
        self._held: dict[str, tuple[dict[str, Any], dict[Path_, Any]]] = {}

    def __repr__(self) -> str:
        return f"OPA({self.url!r})"

    def _rest(self) -> _Rest:
        if self._client is None:
            self._client = _Rest(self.url, self._token, self._timeout, self._retries, self._verify)
        return self._client

    def close(self) -> None:
        """Closes the HTTP session."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> OPA:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def healthy(self) -> bool:
        """Whether OPA answers ``GET /health`` with 200."""
        return self._rest().healthy()

    def query(self, path: str, input: Any = None) -> Any:
        """Evaluates a document: ``POST /v1/data/<path>`` with ``input``.

        Args:
            path: ``k8s/admission/allow``, ``k8s.admission.allow`` or
                ``data.k8s.admission.allow``.
            input: The input document (omitted when ``None``).

        Returns:
            The result, or ``None`` when the document is undefined.

        Raises:
            LoadError: OPA is unreachable or refused the query.
        """
        rest = self._rest()
        try:
            return rest.query(_split(path), input)
        except _Rejected as exc:
            raise LoadError(
                f"OPA at {self.url} refused the query for {path!r}: {exc.code}: {exc.message}"
            ) from None

    def loaded(self) -> dict[str, dict[str, Any]]:
        """The load records OPA holds, by load name (reference, digest, revision, roots)."""
        rest = self._rest()
        try:
            records = rest.get_data(_RECORDS)
        except _Rejected as exc:
            raise LoadError(f"OPA at {self.url}: cannot read load records: {exc}") from None
        if not isinstance(records, dict):
            return {}
        return {str(r.get("name", k)): r for k, r in records.items() if isinstance(r, dict)}

    def load(self, verified: VerifiedBundle, *, name: str | None = None) -> LoadResult:
        """Loads a verified bundle; on any failure, OPA is put back as it was.

        Steps (each undone in reverse order if a later one fails):

        1. read OPA's policies and load records; take the data at every root
           involved as the rollback snapshot (from this object's memory of
           its last load when OPA's record still matches it, else from OPA);
        2. delete this bundle's modules that the new revision dropped (and
           old modules whose rules sit where the new data goes);
        3. write each root's data document (or delete it);
        4. write changed modules, retrying ones that depend on modules not
           yet written or removed;
        5. write the load record.

        The roots belong to the load, as bundle roots do in OPA: writes
        there by anyone else may be overwritten or lost on rollback.

        Args:
            verified: The bundle (only a :class:`VerifiedBundle` is accepted).
            name: Load name; revisions with the same name replace each other.
                Default: the image's ``host/repository``.

        Returns:
            What was done.

        Raises:
            TypeError: ``verified`` is not a :class:`VerifiedBundle`.
            LoadError: OPA refused or failed a step (the message says which,
                and whether the rollback completed), or the bundle cannot be
                loaded over REST (Rego v0 modules; roots overlapping another
                load).
        """
        verified = _require_verified(verified, "OPA.load")
        bundle = verified.bundle
        load_name = _check_load_name(name or verified.reference.name)
        v0 = sorted(m for m in bundle.modules if bundle.rego_version_of(m) == 0)
        if v0:
            raise LoadError(
                f"{verified.reference}: module {v0[0]} is Rego v0; OPA's REST API parses "
                "modules as the server's Rego version. Serve it with BundleServer, "
                "where OPA honours the manifest's rego_version"
            )
        roots = _effective_roots(bundle)
        for r in roots:
            if _overlap(r, _RECORDS):
                raise LoadError(
                    f"{verified.reference}: root {'/'.join(r) or '(all of data)'!r} overlaps "
                    f"data.{'.'.join(_RECORDS)}, where loads are recorded; declare narrower "
                    "roots in the bundle's .manifest"
                )
        prefix = _module_prefix(load_name)
        modules = {prefix + path: src for path, src in bundle.modules.items()}
        record = {
            "name": load_name,
            "reference": str(verified.reference),
            "digest": verified.artifact.digest,
            "revision": bundle.manifest.revision,
            "roots": ["/".join(r) for r in roots],
            "modules": sorted(modules),
        }
        with self._lock:
            removed, writes = self._apply(load_name, roots, modules, bundle.data, record)
        return LoadResult(
            name=load_name,
            reference=verified.reference,
            revision=bundle.manifest.revision,
            roots=tuple(record["roots"]),
            modules=tuple(sorted(modules)),
            removed=removed,
            changed=writes,
        )

    def unload(self, name: str) -> None:
        """Removes a load: its modules, the data at its roots and its record.

        Raises:
            LoadError: OPA refused or failed a step (rolled back as in :meth:`load`).
        """
        with self._lock:
            self._apply(_check_load_name(name), (), {}, {}, None)

    def _apply(
        self,
        name: str,
        roots: tuple[Path_, ...],
        modules: Mapping[str, str],
        data: Mapping[str, Any],
        record: Mapping[str, Any] | None,
    ) -> tuple[tuple[str, ...], int]:
        rest = self._rest()
        prefix = _module_prefix(name)
        key = _record_key(name)
        try:
            policies = rest.list_policies()
            records = rest.get_data(_RECORDS)
        except _Rejected as exc:
            raise LoadError(f"OPA at {self.url}: cannot read its state: {exc}") from None
        records = records if isinstance(records, dict) else {}
        for other_key, other in records.items():
            if other_key == key or not isinstance(other, dict):
                continue
            for r in roots:
                for o in other.get("roots") or []:
                    if _overlap(r, tuple(str(o).split("/")) if o else ()):
                        raise LoadError(
                            f"root {'/'.join(r)!r} of {name} overlaps root {o!r} of "
                            f"{other.get('name', other_key)}, already loaded in {self.url}; "
                            "nothing changed"
                        )
        current = {str(p.get("id")): str(p.get("raw", "")) for p in policies}
        old = records.get(key) if isinstance(records.get(key), dict) else None
        old_roots = [tuple(str(r).split("/")) for r in (old or {}).get("roots") or []]
        data_roots = list(dict.fromkeys([*roots, *old_roots]))
        held = self._held.get(name)
        known = held[1] if held is not None and old == held[0] else {}
        virtual = _virtual_paths(policies)
        try:
            snapshot = {
                r: known[r] if r in known else _base_only(rest.get_data(r), r, virtual)
                for r in data_roots
            }
        except _Rejected as exc:
            raise LoadError(
                f"OPA at {self.url}: cannot read the data it holds now ({exc}); nothing changed"
            ) from None
        ours = {pid for pid in current if pid.startswith(prefix)}
        state: dict[str, str | None] = {pid: current[pid] for pid in ours}
        plan = _Plan(rest)
        removed = tuple(sorted(ours - set(modules)))

        def stale() -> list[tuple[str, str]]:
            return [
                ("delete", p)
                for p in sorted(ours)
                if state.get(p) is not None and state.get(p) != modules.get(p)
            ]

        def clear() -> None:
            # Old versions can block new ones (a renamed function, a rule where
            # data goes): take every old module of this load out, dependents first.
            stuck = plan.converge(stale(), modules, state)
            if stuck:
                raise next(iter(stuck.values()))

        try:
            # An old module whose rules sit where new data goes would make the
            # data write conflict: take it out first (its new version follows).
            by_id = {str(p.get("id")): p for p in policies}
            colliding = [
                ("delete", pid)
                for pid in sorted(ours & set(modules))
                if current[pid] != modules[pid]
                and any(_value_at(data, v) is not _MISSING for v in _virtual_paths([by_id[pid]]))
            ]
            deferred = plan.converge([("delete", p) for p in removed] + colliding, modules, state)
            for r in data_roots:
                value = _value_at(data, r) if r in roots else _MISSING
                if value == snapshot[r]:
                    continue
                try:
                    plan.set_data(r, value, snapshot[r])
                except _Rejected as exc:
                    if not exc.retryable:
                        raise
                    clear()
                    plan.set_data(r, value, snapshot[r])
            writes = [("put", p) for p in sorted(modules) if state.get(p) != modules[p]]
            stuck = plan.converge([*deferred, *writes], modules, state)
            if stuck:
                clear()
                writes = [("put", p) for p in sorted(modules) if state.get(p) != modules[p]]
                stuck = plan.converge(writes, modules, state)
            if stuck:
                (_, pid), why = next(iter(stuck.items()))
                raise _Rejected(why.status, why.code, f"{pid}: {why.message}", False)
            if record is None:
                if old is not None:
                    plan.set_data((*_RECORDS, key), _MISSING, old)
            elif old != record:
                plan.set_data((*_RECORDS, key), dict(record), old if old else _MISSING)
        except BaseException as exc:
            failures = plan.rollback()
            if failures:
                self._held.pop(name, None)
            if not isinstance(exc, Exception):
                raise  # interrupted: put back, then let the interrupt through
            cause = (
                f"OPA refused it: {exc.code}: {exc.message}"
                if isinstance(exc, _Rejected)
                else str(exc)
            )
            undone = (
                f"the {len(plan.undo)} step(s) taken were rolled back; OPA serves what it "
                "served before"
                if not failures
                else f"ROLLBACK INCOMPLETE, OPA may serve a mix of revisions "
                f"({'; '.join(failures[:3])}); load the previous bundle again"
            )
            raise LoadError(f"loading {name} into {self.url} failed: {cause}; {undone}") from (
                None if isinstance(exc, (_Rejected, LoadError)) else exc
            )
        if record is None:
            self._held.pop(name, None)
        else:
            self._held[name] = (dict(record), {r: _value_at(data, r) for r in roots})
        return removed, plan.writes


# -- bundle server --------------------------------------------------------------

BUNDLE_MEDIA_TYPE = "application/vnd.openpolicyagent.bundles"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_STORED = re.compile(r"^(?P<name>.+)\.(?P<hex>[0-9a-f]{64})\.tar\.gz$")
_WAIT = re.compile(r"(?:^|[;,\s])wait=(\d+)")
_MAX_LONG_POLL = 300.0  # seconds a request is held at most, whatever OPA asks
_STORE_FORMAT = 1


def _check_bundle_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise LoadError(
            f"invalid bundle name {name!r}: use letters, digits, '.', '_' and '-' "
            "(it becomes a file name and the URL path bundles/<name>)"
        )
    return name


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@attrs.frozen(kw_only=True)
class ServedBundle:
    """A bundle a :class:`BundleServer` is serving.

    Attributes:
        name: The bundle name (URL path ``bundles/<name>``).
        reference: The verified image it came from, by digest.
        revision: The manifest revision.
        etag: The ``ETag`` OPA sees (``"<sha256 hex of the tarball>"``).
        size: Tarball size in bytes.
        published: When it was published (RFC 3339, UTC).
    """

    name: str
    reference: Reference
    revision: str
    etag: str
    size: int
    published: str


class BundleServer:
    """Serves verified bundles to OPA's bundle plugin over HTTP.

    OPA polls ``GET <url>/bundles/<name>``; the server answers ``200`` with
    the tarball and an ``ETag``, ``304`` when OPA's ``If-None-Match`` is
    current, and holds long-polling requests (``Prefer: wait=N``) until a new
    bundle is published. OPA activates each download atomically and keeps its
    last good bundle if anything fails, which the REST API cannot offer.

    Only :class:`VerifiedBundle` values are served (:meth:`publish`,
    :meth:`watch`). The last bundle of each name is kept in ``directory``
    (written atomically, checked against its hash when read back) so a
    restarted server serves it again at once.

    Example:
        >>> with BundleServer("/var/lib/policysupply") as server:   # doctest: +SKIP
        ...     server.watch(registry, "acme/policy:prod", verifier, name="authz")
        ...     print(server.opa_config_yaml())
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        """Opens the store directory and reads the bundles persisted there.

        Args:
            directory: Where the last good bundle of each name is kept
                (created with mode 0700 if missing).
            host: Address to listen on.
            port: Port to listen on; 0 picks a free one at :meth:`start`.
            token: If set, requests must carry ``Authorization: Bearer <token>``.
            timeout: Seconds each read from or write to a connection may
                block. An idle keep-alive connection, or a client that stops
                sending its request or reading the answer, is closed after
                that long, freeing its thread. Long polls are not cut short:
                the server holds them without touching the socket, for up to
                the ``wait`` the client asked (at most 300 s).

        Raises:
            ValueError: ``timeout`` is not positive.
            LoadError: The directory cannot be created or read.
        """
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, not {timeout!r}")
        self.directory = Path(directory)
        self.host = host
        self._port = port
        self._token = token
        self._timeout = float(timeout)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._served: dict[str, tuple[ServedBundle, bytes]] = {}
        self._httpd: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._watches: list[BundleWatch] = []
        self._stopping = False
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise LoadError(f"cannot create {self.directory}: {exc.strerror}") from None
        self._load_store()

    def __repr__(self) -> str:
        where = self.url if self._httpd else "not started"
        return f"BundleServer({str(self.directory)!r}, {where})"

    # -- store ------------------------------------------------------------------

    def _load_store(self) -> None:
        try:
            metas = sorted(self.directory.glob("*.json"))
        except OSError as exc:
            raise LoadError(f"cannot read {self.directory}: {exc.strerror}") from None
        for meta_path in metas:
            try:
                meta = json.loads(meta_path.read_bytes())
                name = _check_bundle_name(str(meta["name"]))
                if meta_path.name != f"{name}.json" or meta.get("format") != _STORE_FORMAT:
                    raise ValueError("unexpected file name or format")
                hexd = str(meta["sha256"])
                payload = (self.directory / f"{name}.{hexd}.tar.gz").read_bytes()
                if hashlib.sha256(payload).hexdigest() != hexd:
                    raise ValueError("tarball does not match its recorded sha256")
                served = ServedBundle(
                    name=name,
                    reference=Reference.parse(str(meta["reference"])),
                    revision=str(meta.get("revision", "")),
                    etag=f'"{hexd}"',
                    size=len(payload),
                    published=str(meta.get("published", "")),
                )
            except (OSError, ValueError, KeyError, TypeError, PolicySupplyError) as exc:
                logger.error(
                    "stored bundle %s is unreadable; not serving it",
                    meta_path.name,
                    extra={
                        "event": "policysupply.bundle_store_unreadable",
                        "file": str(meta_path),
                        "detail": str(exc),
                    },
                )
                continue
            self._served[name] = (served, payload)
        self._sweep()

    def _sweep(self) -> None:
        keep = {f"{s.name}.{s.etag.strip(chr(34))}.tar.gz" for s, _ in self._served.values()}
        with contextlib.suppress(OSError):
            for p in self.directory.iterdir():
                m = _STORED.match(p.name)
                stale_tar = m is not None and p.name not in keep and m["name"] in self._served
                if stale_tar or (p.name.startswith(".") and p.name.endswith(".tmp")):
                    p.unlink(missing_ok=True)

    def _persist(self, served: ServedBundle, payload: bytes) -> None:
        hexd = served.etag.strip('"')
        meta = {
            "format": _STORE_FORMAT,
            "name": served.name,
            "reference": str(served.reference),
            "revision": served.revision,
            "sha256": hexd,
            "size": served.size,
            "published": served.published,
        }
        try:
            # Tarball first, under a content-addressed name, then the record
            # that points at it: a crash in between leaves the old pair intact.
            atomic_write(self.directory / f"{served.name}.{hexd}.tar.gz", payload)
            atomic_write(
                self.directory / f"{served.name}.json",
                json.dumps(meta, indent=1, sort_keys=True).encode(),
            )
            _fsync_dir(self.directory)
        except OSError as exc:
            raise LoadError(
                f"cannot store bundle {served.name} in {self.directory}: {exc.strerror}; "
                "still serving the previous one"
            ) from None

    # -- publishing ---------------------------------------------------------------

    def publish(self, verified: VerifiedBundle, name: str) -> ServedBundle:
        """Serves ``verified`` as bundle ``name`` from now on (and after restarts).

        The new bundle is stored durably before it is served; waiting
        long-polling requests for ``name`` are answered at once.

        Args:
            verified: The bundle (only a :class:`VerifiedBundle` is accepted).
            name: Bundle name: OPA's ``bundles.<name>`` and the URL path.

        Returns:
            What is now served.

        Raises:
            TypeError: ``verified`` is not a :class:`VerifiedBundle`.
            LoadError: Invalid name, or the store cannot be written (the
                previous bundle stays served).
        """
        verified = _require_verified(verified, "BundleServer.publish")
        _check_bundle_name(name)
        payload = verified.bundle.to_bytes()
        hexd = hashlib.sha256(payload).hexdigest()
        served = ServedBundle(
            name=name,
            reference=verified.reference,
            revision=verified.bundle.manifest.revision,
            etag=f'"{hexd}"',
            size=len(payload),
            published=_now(),
        )
        with self._changed:
            current = self._served.get(name)
            if current is not None and current[0].etag == served.etag:
                return current[0]  # same bytes: OPA's ETag stays valid
            self._persist(served, payload)
            self._served[name] = (served, payload)
            self._sweep()
            self._changed.notify_all()
        logger.info(
            "serving bundle %s revision %r from %s",
            name,
            served.revision,
            served.reference,
            extra={
                "event": "policysupply.bundle_published",
                "bundle": name,
                "reference": str(served.reference),
                "digest": served.reference.digest,
                "revision": served.revision,
                "etag": served.etag,
            },
        )
        return served

    def served(self, name: str) -> ServedBundle | None:
        """What is served as ``name``, or ``None``."""
        with self._lock:
            entry = self._served.get(name)
        return entry[0] if entry else None

    def names(self) -> list[str]:
        """Names of the bundles being served."""
        with self._lock:
            return sorted(self._served)

    def _current(
        self, name: str, etag: str | None, wait: float
    ) -> tuple[ServedBundle, bytes] | None:
        with self._changed:
            entry = self._served.get(name)
            if wait > 0 and etag is not None:
                # Long polling: hold the request until the bundle changes.
                self._changed.wait_for(
                    lambda: (
                        self._stopping
                        or (self._served.get(name) or (None, b""))[0] is None
                        or self._served[name][0].etag != etag
                    ),
                    timeout=wait,
                )
                entry = self._served.get(name)
            return entry

    # -- watching -------------------------------------------------------------------

    def watch(
        self,
        registry: Registry,
        ref: str | Reference,
        verifier: Verifier,
        *,
        name: str | None = None,
        interval: float = 30.0,
        state: TrustState | None = None,
    ) -> BundleWatch:
        """Starts a thread that publishes each new digest of ``ref`` that verifies.

        Every ``interval`` seconds the tag is resolved; a digest different
        from the one served is verified with ``verifier.verify_bundle`` (and
        ``state``, for rollback protection). A bundle that verifies replaces
        the served one atomically; one that does not is logged (logger
        ``policysupply.loaders``, ``extra`` fields ``event``,
        ``bundle``, ``reference``, ``digest``, ``reason``, ``detail``) and the
        old bundle stays served.

        Args:
            registry: Where the image lives.
            ref: The tag to follow.
            verifier: The trust policy.
            name: Bundle name (default: the repository's last component).
            interval: Seconds between checks.
            state: Rollback protection across restarts.

        Returns:
            The running watch (stopped by :meth:`stop`).
        """
        r = Reference.parse(ref) if isinstance(ref, str) else ref
        bundle_name = _check_bundle_name(name or r.repository.rsplit("/", 1)[-1])
        w = BundleWatch(
            server=self,
            registry=registry,
            ref=r,
            verifier=verifier,
            name=bundle_name,
            interval=interval,
            state=state,
        )
        with self._lock:
            self._watches.append(w)
        w.start()
        return w

    # -- HTTP -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port (after :meth:`start`), else the requested one."""
        if self._httpd is not None:
            return int(self._httpd.server_address[1])
        return self._port

    @property
    def url(self) -> str:
        """Base URL for OPA's ``services.<name>.url``.

        Raises:
            LoadError: The server has not been started (its port is not known).
        """
        if self._httpd is None and self._port == 0:
            raise LoadError("BundleServer has no port yet: call start() first")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> BundleServer:
        """Starts serving in a background thread.

        Raises:
            LoadError: The address cannot be bound.
        """
        if self._httpd is not None:
            return self
        handler = _handler(self)
        try:
            httpd = _listen(self.host, self._port, handler)
        except OSError as exc:
            raise LoadError(f"cannot listen on {self.host}:{self._port}: {exc.strerror}") from None
        self._stopping = False
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, name="policysupply-bundle-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops the watches and the HTTP server (the store stays on disk)."""
        with self._changed:
            watches, self._watches = self._watches, []
            self._stopping = True
            self._changed.notify_all()
        for w in watches:
            w.stop()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> BundleServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- OPA configuration ----------------------------------------------------------

    def opa_config(
        self,
        names: list[str] | None = None,
        *,
        service: str = "policysupply",
        min_delay_seconds: int = 10,
        max_delay_seconds: int = 20,
        long_polling_timeout_seconds: int | None = None,
        token_env: str = "POLICYSUPPLY_BUNDLE_TOKEN",  # noqa: S107 - a variable name
        signing: NativeTrust | None = None,
    ) -> dict[str, Any]:
        """The ``services``/``bundles`` part of an OPA config for this server.

        Args:
            names: Bundles to configure (default: all served now).
            service: The service name in OPA's config.
            min_delay_seconds: OPA's polling minimum.
            max_delay_seconds: OPA's polling maximum.
            long_polling_timeout_seconds: Enables long polling (OPA then learns
                of a new bundle within a request round trip).
            token_env: With a server token, the config refers to this
                environment variable (OPA substitutes ``${VAR}``) instead of
                containing the secret.
            signing: Also make OPA verify OPA-native signatures itself:
                adds ``keys`` and a ``signing`` block to every bundle, so OPA
                refuses a served bundle that is unsigned or changed.

        Returns:
            A dict; :meth:`opa_config_yaml` renders it.

        Raises:
            LoadError: No bundle names given or served.
        """
        chosen = names if names is not None else self.names()
        if not chosen:
            raise LoadError("no bundles to configure: publish one or pass names=")
        svc: dict[str, Any] = {"url": self.url}
        if self._token is not None:
            svc["credentials"] = {"bearer": {"token": f"${{{token_env}}}"}}
        polling: dict[str, Any] = {
            "min_delay_seconds": min_delay_seconds,
            "max_delay_seconds": max_delay_seconds,
        }
        if long_polling_timeout_seconds is not None:
            polling["long_polling_timeout_seconds"] = long_polling_timeout_seconds
        config: dict[str, Any] = {
            "services": {service: svc},
            "bundles": {
                _check_bundle_name(n): {
                    "service": service,
                    "resource": f"bundles/{n}",
                    "polling": dict(polling),
                }
                for n in chosen
            },
        }
        if signing is not None:
            fragment = signing.to_opa_config(chosen[0])
            config["keys"] = fragment["keys"]
            for source in config["bundles"].values():
                source["signing"] = dict(fragment["bundles"][chosen[0]]["signing"])
        return config

    def opa_config_yaml(self, names: list[str] | None = None, **options: Any) -> str:
        """:meth:`opa_config` as YAML, ready for ``opa run --server -c``."""
        import yaml

        return str(yaml.safe_dump(self.opa_config(names, **options), sort_keys=False))


def _listen(host: str, port: int, handler: Any) -> http.server.ThreadingHTTPServer:
    import http.server  # lazily: only a running server needs it

    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    return Server((host, port), handler)


def _etags(header: str | None) -> set[str]:
    out = set()
    for part in (header or "").split(","):
        tag = part.strip()
        if tag.startswith("W/"):
            tag = tag[2:]
        if tag:
            out.add(tag if tag.startswith('"') else f'"{tag}"')
    return out


def _handler(server: BundleServer) -> type[http.server.BaseHTTPRequestHandler]:
    import http.server

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "policysupply-bundle-server"
        sys_version = ""
        # The socket timeout for every read and write (StreamRequestHandler.setup):
        # a timed-out read or write ends the request and closes the connection.
        timeout = server._timeout

        def log_message(self, format: str, *args: Any) -> None:
            logger.debug("bundle server: " + format, *args)

        def _plain(self, status: int, text: str, extra: Mapping[str, str] | None = None) -> None:
            body = text.encode()
            self.send_response(status)
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _authorized(self) -> bool:
            token = server._token
            if token is None:
                return True
            got = self.headers.get("Authorization") or ""
            return hmac.compare_digest(got.encode(), f"Bearer {token}".encode())

        def _serve(self) -> None:
            if not self._authorized():
                self._plain(401, "unauthorized\n", {"WWW-Authenticate": "Bearer"})
                return
            path = urllib.parse.urlsplit(self.path).path
            m = re.fullmatch(r"/bundles/([^/]+)", path)
            if m is None:
                self._plain(404, "not found\n")
                return
            name = urllib.parse.unquote(m.group(1))
            tags = _etags(self.headers.get("If-None-Match"))
            prefer = self.headers.get("Prefer") or ""
            wm = _WAIT.search(prefer)
            wait = min(float(wm.group(1)), _MAX_LONG_POLL) if wm else 0.0
            current = server.served(name)
            held = current.etag if current is not None and current.etag in tags else None
            entry = server._current(name, held, wait)
            if entry is None:
                self._plain(404, f"no bundle named {name}\n")
                return
            served, payload = entry
            if served.etag in tags:
                self.send_response(304)
                self.send_header("ETag", served.etag)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("ETag", served.etag)
            # OPA keeps long polling only while 200s carry its bundle media type.
            self.send_header("Content-Type", BUNDLE_MEDIA_TYPE if wm else "application/gzip")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        do_GET = do_HEAD = _serve

        def _refuse(self) -> None:
            self._plain(405, "method not allowed\n", {"Allow": "GET, HEAD"})

        do_POST = do_PUT = do_DELETE = do_PATCH = _refuse

    return Handler


class BundleWatch:
    """A thread that follows a registry tag and publishes what verifies.

    Created by :meth:`BundleServer.watch`. :meth:`check` runs one round
    (useful from a scheduler or a test).

    Attributes:
        name: The bundle name it publishes.
        reference: The tag it follows.
        last_error: The last rejection or failure, or ``None`` after a good round.
    """

    def __init__(
        self,
        *,
        server: BundleServer,
        registry: Registry,
        ref: Reference,
        verifier: Verifier,
        name: str,
        interval: float,
        state: TrustState | None,
    ) -> None:
        """Use :meth:`BundleServer.watch`."""
        self.server = server
        self.registry = registry
        self.reference = ref
        self.verifier = verifier
        self.name = name
        self.interval = interval
        self.state = state
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._reported: set[tuple[str, str]] = set()
        self._round = threading.Lock()

    def __repr__(self) -> str:
        return f"BundleWatch({str(self.reference)!r} -> {self.name!r})"

    def start(self) -> None:
        """Starts the thread (the first check runs at once)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._run, name=f"policysupply-watch-{self.name}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stops the thread, waiting for a running check to finish."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        """Whether the thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.check()
            except Exception:  # keep watching whatever one round did
                logger.exception(
                    "watch of %s failed unexpectedly",
                    self.reference,
                    extra={"event": "policysupply.watch_error", "bundle": self.name},
                )
            self._stop.wait(self.interval)

    def _reject(self, digest: str, exc: BaseException, event: str) -> None:
        reason = type(exc).__name__
        self.last_error = f"{reason}: {exc}"
        key = (digest, f"{reason}: {exc}")
        # Re-checked every round (a signature may arrive later), logged once.
        level = logging.WARNING if key not in self._reported else logging.DEBUG
        self._reported.add(key)
        served = self.server.served(self.name)
        logger.log(
            level,
            "%s: not serving %s@%s (%s); still serving %s",
            self.name,
            self.reference,
            digest or "?",
            reason,
            served.reference if served else "nothing",
            extra={
                "event": event,
                "bundle": self.name,
                "reference": str(self.reference),
                "digest": digest,
                "reason": reason,
                "detail": str(exc),
                "serving": str(served.reference) if served else None,
            },
        )

    def check(self) -> bool:
        """One round: resolve, and verify + publish if the digest changed.

        Returns:
            Whether a new bundle was published.
        """
        with self._round:
            try:
                digest = self.registry.resolve(self.reference)
            except RegistryError as exc:
                self._reject("", exc, "policysupply.watch_registry_error")
                return False
            served = self.server.served(self.name)
            if served is not None and served.reference.digest == digest:
                self.last_error = None
                return False
            try:
                verified = self.verifier.verify_bundle(
                    self.registry, self.reference, state=self.state
                )
            except (VerificationError, BundleError) as exc:
                self._reject(digest, exc, "policysupply.bundle_rejected")
                return False
            except RegistryError as exc:
                self._reject(digest, exc, "policysupply.watch_registry_error")
                return False
            current = self.server.served(self.name)
            if current is not None and current.reference.digest == verified.reference.digest:
                return False
            self.server.publish(verified, self.name)
            self.last_error = None
            return True
