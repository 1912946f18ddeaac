"""Serving verified bundles over OPA's bundle HTTP protocol."""

from __future__ import annotations

import datetime as dt
import os
import threading
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import policysupply.loaders._configs as _configs
from policysupply._internal.oci import Reference
from policysupply.errors import LoadError
from policysupply.loaders._common import _require_verified
from policysupply.loaders._http import _handler, _listen
from policysupply.loaders._shelf import Shelf
from policysupply.loaders.store import (
    ServedBundle,
    check_bundle_name,
    served_record,
)
from policysupply.loaders.watch import BundleWatch, OnExpiry
from policysupply.verifier import VerifiedBundle

if TYPE_CHECKING:
    import http.server

    from policysupply.native import NativeTrust
    from policysupply.registry import Registry
    from policysupply.trust_state import TrustState
    from policysupply.verifier import TrustPolicy, Verifier


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
        events_token: str | None = None,
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
            events_token: Enables the push-notification receiver: a registry
                posting its events to ``<url>/registry/events`` with
                ``Authorization: Bearer <events_token>`` wakes the watches on
                the pushed repositories at once (see
                :meth:`registry_notifications`). An event only wakes a watch:
                what is served is still decided by verification.

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
        self._events_token = events_token
        self._timeout = float(timeout)
        self._httpd: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._watches: list[BundleWatch] = []  # guarded by the shelf's lock
        self._shelf = Shelf(self.directory)

    def __repr__(self) -> str:
        where = self.url if self._httpd else "not started"
        return f"BundleServer({str(self.directory)!r}, {where})"

    # -- publishing ---------------------------------------------------------------

    def publish(
        self,
        verified: VerifiedBundle,
        name: str,
        *,
        max_age: dt.timedelta | None = None,
        policy: TrustPolicy | None = None,
    ) -> ServedBundle:
        """Serves ``verified`` as bundle ``name`` from now on (and after restarts).

        What OPA downloads is the verified layer exactly as the registry
        served it (:attr:`VerifiedBundle.tarball`), and its ``ETag`` is that
        layer's SHA-256. The new bundle is stored durably before it is served; waiting
        long-polling requests for ``name`` are answered at once. With
        ``max_age`` it is served only until it is that old, by the verifier's
        own rule (:meth:`VerifiedArtifact.age_from
        <policysupply.verifier.VerifiedArtifact.age_from>` plus ``max_age``:
        :attr:`ServedBundle.expires`), here and after restarts.

        Args:
            verified: The bundle (only a :class:`VerifiedBundle` is accepted).
            name: Bundle name: OPA's ``bundles.<name>`` and the URL path.
            max_age: Usually the trust policy's ``max_signature_age``.
            policy: The trust policy that verified it, whose age rule
                (``threshold``, ``insecure_witnessed_age``) applies; default:
                the newest signed time of any one signer.

        Returns:
            What is now served.

        Raises:
            TypeError: ``verified`` is not a :class:`VerifiedBundle`.
            LoadError: Invalid name, no time to count the age from with ``max_age``, or the
                store cannot be written (the previous bundle stays served).
        """
        verified = _require_verified(verified, "BundleServer.publish")
        check_bundle_name(name)
        served, payload = served_record(verified, name, max_age=max_age, policy=policy)
        return self._shelf.put(verified, served, payload)

    def served(self, name: str) -> ServedBundle | None:
        """What is served as ``name``, or ``None`` (nothing, or it expired)."""
        return self._shelf.served(name)

    def names(self) -> list[str]:
        """Names of the bundles being served (not expired)."""
        return self._shelf.names()

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
        on_expiry: OnExpiry = "withdraw",
    ) -> BundleWatch:
        """Starts a thread that publishes each new digest of ``ref`` that verifies.

        Every ``interval`` seconds the tag is resolved; a digest different
        from the one served is verified with ``verifier.verify_bundle`` (and
        ``state``, for rollback protection). A bundle that verifies replaces
        the served one atomically; one that does not is logged (logger
        ``policysupply.loaders``, ``extra`` fields ``event``,
        ``bundle``, ``reference``, ``digest``, ``reason``, ``detail``) and the
        old bundle stays served.

        Freeze protection: when the verifier's policy has a
        ``max_signature_age``, the served bundle's age is checked now (before
        any network call) and every round, whether or not the tag moved. A
        bundle whose newest signed signing time is older than that is
        reported (event ``policysupply.bundle_expired``, :attr:`BundleWatch.last_error`,
        :attr:`BundleWatch.expired`) and, with ``on_expiry="withdraw"`` (the
        default), no longer served until a fresh signature verifies; with
        ``"serve"`` it stays served (and is still reported).

        Args:
            registry: Where the image lives.
            ref: The tag to follow.
            verifier: The trust policy.
            name: Bundle name (default: the repository's last component).
            interval: Seconds between checks.
            state: Rollback protection across restarts. Without it the watch
                still refuses, while it runs, a release it has itself seen
                replaced (the tag moved back to an older, validly signed one),
                and starts from the stored bundle of this name if a watch
                stored it from the same tag and it verifies under
                ``verifier``'s policy: an older release is refused after a
                restart too.
            on_expiry: ``"withdraw"`` or ``"serve"`` a bundle past its maximum age.

        Returns:
            The running watch (stopped by :meth:`stop`).

        Raises:
            ValueError: ``on_expiry`` is neither ``"withdraw"`` nor ``"serve"``.
        """
        r = Reference.parse(ref) if isinstance(ref, str) else ref
        bundle_name = check_bundle_name(name or r.repository.rsplit("/", 1)[-1])
        w = BundleWatch(
            shelf=self._shelf,
            registry=registry,
            ref=r,
            verifier=verifier,
            name=bundle_name,
            interval=interval,
            state=state,
            on_expiry=on_expiry,
        )
        w.check_age()  # at once: a stored bundle may already be too old for this policy
        with self._shelf.lock:
            self._watches.append(w)
        w.start()
        return w

    def _wake_watches(self, repositories: set[str]) -> int:
        """Wakes the watches following a tag in one of ``repositories``; how many."""
        with self._shelf.lock:
            watches = [w for w in self._watches if w.reference.repository in repositories]
        for w in watches:
            w.wake()
        return len(watches)

    def registry_notifications(
        self, *, name: str = "policysupply", timeout: str = "1s", backoff: str = "1s"
    ) -> dict[str, Any]:
        """The ``notifications`` section for a distribution (``docker-registry``) config.

        With it the registry posts an event for every push to this server,
        which wakes the watches on that repository at once; polling every
        ``interval`` stays as the fallback for events that never arrive. The
        section contains the ``events_token`` (distribution has no variable
        substitution there): keep the registry's config file private.

        Args:
            name: The endpoint's name in the registry's config.
            timeout: How long the registry waits for this server per delivery.
            backoff: How long it waits after a failed delivery before retrying.

        Returns:
            A dict to put under the registry config's top-level ``notifications`` key.

        Raises:
            LoadError: No ``events_token`` was configured, or the server has no port yet.
        """
        if self._events_token is None:
            raise LoadError("BundleServer was created without events_token: no receiver")
        return _configs.registry_notifications(
            url=self.url,
            events_token=self._events_token,
            name=name,
            timeout=timeout,
            backoff=backoff,
        )

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
        handler = _handler(
            self._token,
            self._timeout,
            self._shelf.served,
            self._shelf.current,
            self._events_token,
            self._wake_watches,
        )
        try:
            httpd = _listen(self.host, self._port, handler)
        except OSError as exc:
            raise LoadError(f"cannot listen on {self.host}:{self._port}: {exc.strerror}") from None
        self._shelf.stopping = False
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, name="policysupply-bundle-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops the watches and the HTTP server (the store stays on disk)."""
        with self._shelf.changed:
            watches, self._watches = self._watches, []
            self._shelf.stopping = True
            self._shelf.changed.notify_all()
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
            signing: Make OPA require and verify OPA-native signatures
                itself: its ``keys`` and a ``signing`` block on every bundle,
                so OPA refuses a served bundle that is unsigned or changed.
                Without it, the config still carries ``keys`` (the public keys
                of the trust policy of each watch and of each published
                bundle's signatures): OPA refuses a natively signed bundle
                whose key it does not have, and verifies one it has.

        Returns:
            A dict; :meth:`opa_config_yaml` renders it.

        Raises:
            LoadError: No bundle names given or served, or a served bundle
                carries an OPA-native signature by a key this server does not
                know (pass ``signing=`` with that key).
        """
        chosen = names if names is not None else self.names()
        if not chosen:
            raise LoadError("no bundles to configure: publish one or pass names=")
        return _configs.opa_config(
            chosen,
            url=self.url,
            has_token=self._token is not None,
            service=service,
            min_delay_seconds=min_delay_seconds,
            max_delay_seconds=max_delay_seconds,
            long_polling_timeout_seconds=long_polling_timeout_seconds,
            token_env=token_env,
            signing=signing,
            native_keys=self._opa_keys,
        )

    def _opa_keys(self, names: list[str]) -> dict[str, Any]:
        """OPA ``keys`` for ``names``: every public key that may have signed them natively.

        Keys without a ``signing`` block do not make OPA require signatures;
        they let it load (and verify) a bundle that carries one.
        """
        shelf = self._shelf
        with shelf.lock:
            watches = list(self._watches)
            served = {n: shelf.entries.get(n) for n in names}
            published = {n: list(shelf.keys.get(n, ())) for n in names}
        return _configs.native_keys(
            names,
            watches=watches,
            served={n: None if e is None else e[1] for n, e in served.items()},
            published=published,
        )

    def opa_config_yaml(self, names: list[str] | None = None, **options: Any) -> str:
        """:meth:`opa_config` as YAML, ready for ``opa run --server -c``."""
        import yaml

        return str(yaml.safe_dump(self.opa_config(names, **options), sort_keys=False))
