"""Serving verified bundles over OPA's bundle HTTP protocol."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import threading
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import attrs

from policysupply._internal import fs
from policysupply._internal.oci import Reference
from policysupply.errors import (
    LoadError,
    PolicySupplyError,
)
from policysupply.loaders._common import _require_verified, logger
from policysupply.loaders._http import _handler, _listen
from policysupply.loaders.watch import BundleWatch
from policysupply.verifier import VerifiedBundle

if TYPE_CHECKING:
    import http.server

    from policysupply.registry import Registry
    from policysupply.trust_state import TrustState
    from policysupply.verifier import Verifier

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_STORED = re.compile(r"^(?P<name>.+)\.(?P<hex>[0-9a-f]{64})\.tar\.gz$")
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
            fs.atomic_write(self.directory / f"{served.name}.{hexd}.tar.gz", payload)
            fs.atomic_write(
                self.directory / f"{served.name}.json",
                json.dumps(meta, indent=1, sort_keys=True).encode(),
            )
            fs.fsync_dirs([self.directory])
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
        return {
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

    def opa_config_yaml(self, names: list[str] | None = None, **options: Any) -> str:
        """:meth:`opa_config` as YAML, ready for ``opa run --server -c``."""
        import yaml

        return str(yaml.safe_dump(self.opa_config(names, **options), sort_keys=False))
