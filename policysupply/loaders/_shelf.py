"""What a ``BundleServer`` serves, by name: in memory, and in its store on disk.

The server (publishing, answering OPA, writing its configuration) and its
watches (publishing what verifies, moving deadlines) both work on one
``Shelf``, so a watch needs nothing of the server itself and ``loaders``
has no import cycle.
"""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from policysupply.loaders.store import (
    BundleStore,
    ServedBundle,
    log_published,
    log_stored_expired,
    utcnow,
)

if TYPE_CHECKING:
    from policysupply.verifier import VerifiedBundle


class Shelf:
    """The served bundles of one store directory, and the lock that guards them.

    Args:
        directory: The store (created with mode 0700 if missing).

    Raises:
        LoadError: The directory cannot be created or read.
    """

    def __init__(self, directory: Path) -> None:
        # Also guards what the server keeps beside the entries (its watches);
        # long polls wait on `changed` for a new bundle or the server stopping.
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.stopping = False
        # Public keys that verified each published bundle: OPA needs them
        # in its config to load a bundle carrying an OPA-native signature.
        self.keys: dict[str, list[Any]] = {}
        self._store = BundleStore(directory)
        self.entries: dict[str, tuple[ServedBundle, bytes]] = self._store.load()
        self._store.sweep(s for s, _ in self.entries.values())
        now = utcnow()
        for served, _ in self.entries.values():
            if not served.live(now):
                log_stored_expired(served)

    def put(self, verified: VerifiedBundle, served: ServedBundle, payload: bytes) -> ServedBundle:
        """Serves ``served`` (the record of ``verified``, whose bytes are ``payload``) from now on.

        Stored durably before it is served; long polls for its name are
        answered at once. The same bytes again only update the signing time
        and deadline (OPA's ``ETag`` stays valid). See ``BundleServer.publish``.

        Returns:
            What is now served.

        Raises:
            LoadError: The store cannot be written (the previous bundle stays served).
        """
        name = served.name
        with self.changed:
            current = self.entries.get(name)
            if current is not None and current[0].etag == served.etag:
                # Same bytes: OPA's ETag stays valid; the signing time may be
                # newer, and the image and tag it was verified from may differ
                # (a tag a restarted watch seeds from must name this record).
                old = current[0]
                same_image = served.reference == old.reference
                record = attrs.evolve(
                    old,
                    reference=served.reference,
                    signed_at=served.signed_at,
                    expires=served.expires,
                    stream=old.stream if same_image and served.stream is None else served.stream,
                )
                if record == old:
                    return old
                self._update(record)
                return self.entries[name][0]
            self._store.persist(served, payload)
            self.entries[name] = (served, payload)
            self.keys[name] = [
                sig.public_key for sig in verified.artifact.signatures if sig.public_key is not None
            ]
            self._store.sweep(s for s, _ in self.entries.values())
            self.changed.notify_all()
        log_published(served)
        return served

    def _update(self, served: ServedBundle) -> None:
        """Replaces the record of an entry whose bytes stay the same (call with the lock held)."""
        self._store.persist(served, None)
        self.entries[served.name] = (served, self.entries[served.name][1])
        self.changed.notify_all()

    def stored(self, name: str) -> ServedBundle | None:
        """The entry for ``name``, served or expired."""
        with self.lock:
            entry = self.entries.get(name)
        return entry[0] if entry else None

    def set_expiry(self, name: str, expires: dt.datetime | None) -> ServedBundle | None:
        """Moves an entry's deadline (a watch withdrawing it, or following its policy)."""
        with self.changed:
            entry = self.entries.get(name)
            if entry is None or entry[0].expires == expires:
                return entry[0] if entry else None
            self._update(attrs.evolve(entry[0], expires=expires))
            return self.entries[name][0]

    def served(self, name: str) -> ServedBundle | None:
        """What is served as ``name``, or ``None`` (nothing, or it expired)."""
        served = self.stored(name)
        return served if served is not None and served.live(utcnow()) else None

    def names(self) -> list[str]:
        """Names of the bundles being served (not expired)."""
        now = utcnow()
        with self.lock:
            return sorted(n for n, (s, _) in self.entries.items() if s.live(now))

    def current(
        self, name: str, etag: str | None, wait: float
    ) -> tuple[ServedBundle, bytes] | None:
        """The live entry for ``name``; with ``wait`` and ``etag``, once it is no longer ``etag``.

        Long polling: the request is held (up to ``wait`` seconds) until the
        bundle changes, is withdrawn, or the server stops.
        """
        with self.changed:
            entry = self.entries.get(name)
            if wait > 0 and etag is not None:
                self.changed.wait_for(
                    lambda: (
                        self.stopping
                        or (self.entries.get(name) or (None, b""))[0] is None
                        or self.entries[name][0].etag != etag
                    ),
                    timeout=wait,
                )
                entry = self.entries.get(name)
            return entry if entry is not None and entry[0].live(utcnow()) else None
