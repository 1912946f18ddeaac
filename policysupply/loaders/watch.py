"""Following a registry tag and publishing what verifies."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from typing import TYPE_CHECKING, Literal

from policysupply import _verdict, trust_state
from policysupply._internal import freeze
from policysupply._internal.oci import Reference
from policysupply.errors import (
    BundleError,
    NotFoundError,
    RegistryError,
    RollbackError,
    StaleSignatureError,
    VerificationError,
)
from policysupply.loaders._common import logger
from policysupply.loaders.store import ServedBundle, served_record, utcnow

if TYPE_CHECKING:
    from policysupply.loaders._shelf import Shelf
    from policysupply.registry import Registry
    from policysupply.trust_state import TrustState
    from policysupply.verifier import VerifiedBundle, Verifier

OnExpiry = Literal["withdraw", "serve"]

# Seconds between the quick re-checks that follow a wake-up (about 3 s in all).
_SETTLE = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6)


class BundleWatch:
    """A thread that follows a registry tag and publishes what verifies.

    Created by :meth:`BundleServer.watch`. :meth:`check` runs one round
    (useful from a scheduler or a test).

    Attributes:
        name: The bundle name it publishes.
        reference: The tag it follows.
        last_error: The last rejection or failure, or ``None`` after a good round.
        on_expiry: ``"withdraw"`` or ``"serve"`` an expired bundle.
    """

    def __init__(
        self,
        *,
        shelf: Shelf,
        registry: Registry,
        ref: Reference,
        verifier: Verifier,
        name: str,
        interval: float,
        state: TrustState | None,
        on_expiry: OnExpiry = "withdraw",
    ) -> None:
        """Use :meth:`BundleServer.watch`."""
        if on_expiry not in ("withdraw", "serve"):
            raise ValueError(f"on_expiry must be 'withdraw' or 'serve', not {on_expiry!r}")
        self.on_expiry: OnExpiry = on_expiry
        self._shelf = shelf
        self.registry = registry
        self.reference = ref
        self.verifier = verifier
        self.name = name
        self.interval = interval
        self.state = state
        # Without a state file, the watch still refuses, for as long as it
        # runs, what it has itself seen replaced (a tag moved back to an
        # older, validly signed release); the file carries that across restarts.
        # The in-memory state starts from the stored bundle of this tag (_seed).
        self._state = state if state is not None else trust_state.in_memory()
        self._seeded = state is not None
        self.last_error: str | None = None
        self._expiry: str | None = None
        # The stored digest this watch verified under its policy (a stored
        # bundle may come from a restart under another policy), and one that
        # failed to: withdrawn until it verifies.
        self._verified: str | None = None
        self._distrusted: str | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
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

    def wake(self) -> None:
        """Runs the next check now instead of at the end of the interval.

        For push notifications: a registry event says only *that* something
        changed; the check decides what, and verification whether it is served.
        Wake-ups during a check run one more check right after it.
        """
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Stops the thread, waiting for a running check to finish."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        """Whether the thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        settle = 0  # quick re-checks left after a wake-up
        while not self._stop.is_set():
            self._wake.clear()  # a wake-up from here on means: check again
            published = False
            try:
                published = self.check()
            except Exception:  # keep watching whatever one round did
                logger.exception(
                    "watch of %s failed unexpectedly",
                    self.reference,
                    extra={"event": "policysupply.watch_error", "bundle": self.name},
                )
            # A registry may announce a push before the tag points at it
            # (distribution links the tag after its event), and a signature
            # often follows its image: after a wake-up, look again shortly.
            settle = 0 if published else settle
            delay = self.interval if not settle else _SETTLE[len(_SETTLE) - settle]
            settle = max(0, settle - 1)
            if self._wake.wait(delay):  # polling is the fallback for missed events
                settle = len(_SETTLE)

    def _reject(self, digest: str, exc: BaseException, event: str) -> None:
        reason = type(exc).__name__
        self.last_error = f"{reason}: {exc}"
        key = (digest, f"{reason}: {exc}")
        # Re-checked every round (a signature may arrive later), logged once.
        level = logging.WARNING if key not in self._reported else logging.DEBUG
        self._reported.add(key)
        served = self._shelf.served(self.name)
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
        """One round: check the served bundle's age; resolve; verify + publish what is new.

        A digest is verified again when it differs from the stored one, or
        when the stored one expired (a fresh signature may have arrived). A
        stored bundle this watch has not verified yet (one persisted before
        a restart, perhaps under another trust policy) is verified on the
        first round it can be; if it does not verify under this policy it is
        withdrawn, whatever the tag names now. Without a state file, the first
        round that can check the stored bundle seeds the in-memory rollback
        protection from it first (see :meth:`BundleServer.watch`).

        Returns:
            Whether a bundle was published (new, or the same bytes re-signed).
        """
        with self._round:
            expired = self.check_age()
            try:
                digest = self.registry.resolve(self.reference)
            except RegistryError as exc:
                self._reject("", exc, "policysupply.watch_registry_error")
                return self._failed(expired)
            if not self._seeded:
                try:
                    self._seed()
                except RegistryError as exc:  # nothing new is trusted before the seed
                    self._reject("", exc, "policysupply.watch_registry_error")
                    return self._failed(expired)
                self._seeded = True
            stored = self._shelf.stored(self.name)
            if (
                stored is not None
                and stored.reference.digest == digest
                and not expired
                and self._verified == digest
            ):
                self.last_error = None
                return False
            try:
                verified = self.verifier.verify_bundle(
                    self.registry, self.reference, state=self._state
                )
            except (VerificationError, BundleError) as exc:
                self._reject(digest, exc, "policysupply.bundle_rejected")
                if stored is not None and self._verified != stored.reference.digest:
                    self._recheck_stored(stored, digest, exc)
                return self._failed(expired)
            except RegistryError as exc:
                self._reject(digest, exc, "policysupply.watch_registry_error")
                return self._failed(expired)
            first = self._verified != verified.reference.digest
            self._verified, self._distrusted = verified.reference.digest, None
            current = self._shelf.stored(self.name)
            if (
                not expired
                and current is not None
                and current.reference.digest == verified.reference.digest
            ):
                if first:  # the same bytes: their age as this policy counts it
                    self._publish(verified)
                return False
            self._publish(verified)
            self.last_error = None
            return True

    def _publish(self, verified: VerifiedBundle) -> None:
        # What BundleServer.publish does, less its argument checks: verify_bundle
        # made `verified`, and BundleServer.watch checked the name.
        served, payload = served_record(
            verified,
            self.name,
            max_age=self._max_age(),
            policy=self.verifier.policy,
            stream=str(self._stream()),
        )
        self._shelf.put(verified, served, payload)

    def _stream(self) -> Reference:
        """The stream as verify_bundle names it in a TrustState (host/repository:tag)."""
        r = self.reference
        return Reference(host=self.registry.host or r.host, repository=r.repository, tag=r.tag)

    def _seed(self) -> None:
        """Seeds the in-memory trust state from the stored bundle of this stream.

        Called until it returns; the caller then marks the watch seeded.

        Without a state file, the store is the only record of where the
        stream stood before a restart. Its bundle counts only if a watch
        published it from this very tag and it verifies under this policy
        (the record may be from another one); then it is accepted as this
        policy's verification counts it (digest, revision, signing time), so
        an older release is refused from the first round. Its age does not
        matter: an expired bundle still bounds what may follow it.

        Raises:
            RegistryError: The stored image cannot be checked now (the round
                fails and the next one tries again).
        """
        stored = self._shelf.stored(self.name)
        stream = self._stream()
        if stored is None or stored.stream != str(stream):
            return  # nothing of this tag's history is known
        try:
            verified = self.verifier._without_age_limit().verify_bundle(
                self.registry, stored.reference
            )
        except (NotFoundError, VerificationError, BundleError) as exc:
            logger.warning(
                "%s: the stored bundle %s cannot be verified under the current trust policy "
                "(%s); rollback protection starts from the first bundle accepted (use a trust "
                "state file to keep it across restarts)",
                self.name,
                stored.reference,
                type(exc).__name__,
                extra=self._stored_event("policysupply.trust_not_seeded", stored, exc),
            )
            return
        revision = verified.bundle.manifest.revision
        _verdict.accept(self.verifier.policy, self._state, stream, verified.artifact, revision)
        logger.info(
            "%s: rollback protection starts from the stored bundle %s (revision %r)",
            self.name,
            stored.reference,
            revision,
            extra={
                "event": "policysupply.trust_seeded",
                "bundle": self.name,
                "reference": str(self.reference),
                "digest": stored.reference.digest,
                "revision": revision,
            },
        )

    def _superseded(self, stored: ServedBundle) -> RollbackError | None:
        """A rollback error if this machine's TrustState has replaced ``stored`` on the stream."""
        stream = str(self._stream())
        record = self._state.get(stream)
        if record is None or stored.reference.digest not in record.superseded:
            return None
        return RollbackError(
            f"{stream}: the stored {stored.reference.digest} has since been replaced by "
            f"{record.digest} in the trust state; refusing to fall back to it"
        )

    def _recheck_stored(self, stored: ServedBundle, digest: str, failure: BaseException) -> None:
        """Verifies a stored bundle this watch never verified; withdraws it if it fails.

        ``failure`` is why the tag's digest (``digest``) was refused: when the
        tag still names the stored bundle, that is its verdict already.
        """
        if stored.reference.digest == digest and isinstance(failure, StaleSignatureError):
            return  # trusted but old: age is check_age's to judge (and on_expiry's)
        superseded = self._superseded(stored)
        if superseded is not None:
            failure = superseded
        elif stored.reference.digest != digest:
            try:
                verified = self.verifier.verify_bundle(self.registry, stored.reference)
            except StaleSignatureError:
                return
            except (VerificationError, BundleError) as exc:
                failure = exc
            except RegistryError:
                return  # cannot tell now; the next round tries again
            else:
                if verified.reference.digest == stored.reference.digest:
                    self._verified, self._distrusted = stored.reference.digest, None
                    self._publish(verified)  # its deadline, by this policy
                    return
        self._distrusted = stored.reference.digest
        self._shelf.set_expiry(self.name, utcnow())
        logger.error(
            "%s: the stored bundle %s does not verify under the current trust policy (%s); "
            "no longer served",
            self.name,
            stored.reference,
            type(failure).__name__,
            extra={
                **self._stored_event("policysupply.bundle_distrusted", stored, failure),
                "serving": None,
            },
        )

    def _stored_event(
        self, event: str, stored: ServedBundle, failure: BaseException
    ) -> dict[str, str | None]:
        """The log fields of an event about the stored bundle and why it failed."""
        return {
            "event": event,
            "bundle": self.name,
            "reference": str(self.reference),
            "digest": stored.reference.digest,
            "reason": type(failure).__name__,
            "detail": str(failure),
        }

    @property
    def expired(self) -> bool:
        """Whether the bundle stored under :attr:`name` is older than the policy allows now.

        Such a bundle is withdrawn (unless ``on_expiry="serve"``) until a
        fresh signature verifies.
        """
        stored = self._shelf.stored(self.name)
        limit = self.verifier.policy.max_signature_age
        return stored is not None and limit is not None and _too_old(stored, limit, utcnow())

    def _max_age(self) -> dt.timedelta | None:
        return self.verifier.policy.max_signature_age if self.on_expiry == "withdraw" else None

    def _failed(self, expired: bool) -> bool:
        if expired and self._expiry is not None:
            self.last_error = self._expiry  # the clock's verdict outranks a failed refresh
        return False

    def check_age(self) -> bool:
        """Re-evaluates the stored bundle's age under the verifier's policy (no network).

        Keeps the server's deadline for the bundle in line with the policy;
        an expired bundle is reported and, unless ``on_expiry="serve"``,
        withdrawn.

        Returns:
            Whether the stored bundle is past the policy's ``max_signature_age``.
        """
        stored = self._shelf.stored(self.name)
        limit = self.verifier.policy.max_signature_age
        self._expiry = None
        if stored is not None and stored.reference.digest == self._distrusted:
            self._shelf.set_expiry(self.name, utcnow())  # stays withdrawn until it verifies
            return True
        if stored is None or limit is None:
            return False
        now = utcnow()
        if stored.signed_at is not None and not _too_old(stored, limit, now):
            # Follow this policy: it may be stricter or laxer than the one it was published under.
            deadline = stored.signed_at + limit if self.on_expiry == "withdraw" else None
            self._shelf.set_expiry(self.name, deadline)
            return False
        withdraw = self.on_expiry == "withdraw"
        self._shelf.set_expiry(self.name, now if withdraw else None)
        when = stored.signed_at.isoformat() if stored.signed_at else "an unknown time"
        self._expiry = (
            f"StaleSignatureError: {self.name}: {stored.reference} was signed at {when}, "
            f"longer ago than the policy's max_signature_age ({limit}); "
            + ("no longer served" if withdraw else "still served (on_expiry='serve')")
            + "; re-sign it, or suspect a freeze attack"
        )
        self.last_error = self._expiry
        key = (str(stored.reference.digest), f"expired:{self.on_expiry}")
        level = logging.ERROR if withdraw else logging.WARNING
        logger.log(
            level if key not in self._reported else logging.DEBUG,
            "%s",
            self._expiry,
            extra={
                "event": "policysupply.bundle_expired",
                "bundle": self.name,
                "reference": str(self.reference),
                "digest": stored.reference.digest,
                "reason": "StaleSignatureError",
                "detail": self._expiry,
                "serving": None if withdraw else str(stored.reference),
            },
        )
        self._reported.add(key)
        return True


def _too_old(stored: ServedBundle, limit: dt.timedelta, now: dt.datetime) -> bool:
    """Past ``limit`` since its age counts (or no such time is known): the verifier's rule."""
    return freeze.expired(stored.signed_at, limit, now)
