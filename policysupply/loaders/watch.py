"""Following a registry tag and publishing what verifies."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from policysupply._internal.oci import Reference
from policysupply.errors import (
    BundleError,
    RegistryError,
    VerificationError,
)
from policysupply.loaders._common import logger

if TYPE_CHECKING:
    from policysupply.loaders.server import BundleServer
    from policysupply.registry import Registry
    from policysupply.trust_state import TrustState
    from policysupply.verifier import Verifier


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
