"""What a bundle server serves, and the directory that keeps it across restarts."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from policysupply._internal import freeze, fs
from policysupply._internal.oci import Reference
from policysupply.errors import LoadError, PolicySupplyError
from policysupply.loaders._common import logger
from policysupply.trust_state import _iso, _parse_time  # one RFC 3339 format for stored times

if TYPE_CHECKING:
    from policysupply.verifier import TrustPolicy, VerifiedBundle

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_STORED = re.compile(r"^(?P<name>.+)\.(?P<hex>[0-9a-f]{64})\.tar\.gz$")
_STORE_FORMAT = 1


def check_bundle_name(name: str) -> str:
    """``name`` if it can be a file name and the URL path ``bundles/<name>``.

    Raises:
        LoadError: It cannot.
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise LoadError(
            f"invalid bundle name {name!r}: use letters, digits, '.', '_' and '-' "
            "(it becomes a file name and the URL path bundles/<name>)"
        )
    return name


def utcnow() -> dt.datetime:
    """The current time, UTC."""
    return dt.datetime.now(dt.timezone.utc)


@attrs.frozen(kw_only=True)
class ServedBundle:
    """A bundle a :class:`~policysupply.loaders.BundleServer` is serving.

    Attributes:
        name: The bundle name (URL path ``bundles/<name>``).
        reference: The verified image it came from, by digest.
        revision: The manifest revision.
        etag: The ``ETag`` OPA sees (``"<sha256 hex of the tarball>"``).
        size: Tarball size in bytes.
        published: When it was published (RFC 3339, UTC).
        signed_at: The time its age counts from (``VerifiedArtifact.age_from``
            under the trust policy that verified it: the newest signed
            signing time), if any.
        expires: From this instant it is no longer served (``signed_at`` plus
            the trust policy's ``max_signature_age``); ``None``: never.
        stream: The tag it was verified from (``host/repository:tag``, as a
            ``TrustState`` names it) when a watch published it; ``None`` when
            published directly. A watch restarted without a trust state file
            seeds its rollback protection from the stored bundle of its stream.
    """

    name: str
    reference: Reference
    revision: str
    etag: str
    size: int
    published: str
    signed_at: dt.datetime | None = None
    expires: dt.datetime | None = None
    stream: str | None = None

    def live(self, now: dt.datetime) -> bool:
        """Whether it may be served at ``now``."""
        return self.expires is None or now < self.expires


class BundleStore:
    """One directory: per name, a content-addressed tarball and a JSON record pointing at it."""

    def __init__(self, directory: Path) -> None:
        """Creates ``directory`` (mode 0700) if missing.

        Raises:
            LoadError: It cannot be created.
        """
        self.directory = directory
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise LoadError(f"cannot create {self.directory}: {exc.strerror}") from None

    def load(self) -> dict[str, tuple[ServedBundle, bytes]]:
        """Every readable, intact bundle; what is not is logged and skipped.

        Raises:
            LoadError: The directory cannot be listed.
        """
        try:
            metas = sorted(self.directory.glob("*.json"))
        except OSError as exc:
            raise LoadError(f"cannot read {self.directory}: {exc.strerror}") from None
        out: dict[str, tuple[ServedBundle, bytes]] = {}
        for meta_path in metas:
            try:
                served, payload = self._read(meta_path)
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
            out[served.name] = (served, payload)
        return out

    def _read(self, meta_path: Path) -> tuple[ServedBundle, bytes]:
        meta = json.loads(meta_path.read_bytes())
        name = check_bundle_name(str(meta["name"]))
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
            signed_at=_parse_time(meta.get("signed_at")),
            expires=_parse_time(meta.get("expires")),
            stream=None if meta.get("stream") is None else str(meta["stream"]),
        )
        return served, payload

    def persist(self, served: ServedBundle, payload: bytes | None) -> None:
        """Stores the tarball (unless ``None``: already stored), then the record pointing at it.

        Tarball first, under a content-addressed name, then the record: a
        crash in between leaves the old pair intact.

        Raises:
            LoadError: Writing failed; the previous pair is intact.
        """
        hexd = served.etag.strip('"')
        meta = {
            "format": _STORE_FORMAT,
            "name": served.name,
            "reference": str(served.reference),
            "revision": served.revision,
            "sha256": hexd,
            "size": served.size,
            "published": served.published,
            "signed_at": _iso(served.signed_at),
            "expires": _iso(served.expires),
            "stream": served.stream,
        }
        try:
            if payload is not None:
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

    def sweep(self, current: Iterable[ServedBundle]) -> None:
        """Removes superseded tarballs of the names in ``current`` and stray temporary files."""
        kept = {s.name: f"{s.name}.{s.etag.strip(chr(34))}.tar.gz" for s in current}
        with contextlib.suppress(OSError):
            for p in self.directory.iterdir():
                m = _STORED.match(p.name)
                stale_tar = m is not None and m["name"] in kept and p.name != kept[m["name"]]
                if stale_tar or (p.name.startswith(".") and p.name.endswith(".tmp")):
                    p.unlink(missing_ok=True)


def served_record(
    verified: VerifiedBundle,
    name: str,
    *,
    max_age: dt.timedelta | None,
    policy: TrustPolicy | None,
    stream: str | None = None,
) -> tuple[ServedBundle, bytes]:
    """What ``verified`` is served as under ``name``, and the bytes served.

    See ``BundleServer.publish``; ``stream`` is the tag a watch verified it from.

    Raises:
        LoadError: ``max_age`` is given and no signature carries a signed time.
    """
    signed_at = (
        policy.age_from(verified.artifact) if policy is not None else verified.artifact.age_from()
    )
    if max_age is not None and signed_at is None:
        raise LoadError(
            f"{verified.reference}: no signature carries a signed time, so it cannot be "
            f"served for at most {max_age}"
        )
    expires = None if max_age is None else freeze.deadline(signed_at, max_age)
    # The verified layer itself, byte for byte (not a re-encoding): its
    # hash is the layer digest the signed manifest names, and the ETag.
    payload = verified.tarball
    served = ServedBundle(
        name=name,
        reference=verified.reference,
        revision=verified.bundle.manifest.revision,
        etag=f'"{hashlib.sha256(payload).hexdigest()}"',
        size=len(payload),
        published=utcnow().strftime("%Y-%m-%dT%H:%M:%SZ"),
        signed_at=signed_at,
        expires=expires,
        stream=stream,
    )
    return served, payload


def log_published(served: ServedBundle) -> None:
    """Logs event ``policysupply.bundle_published``: ``served`` is now served."""
    logger.info(
        "serving bundle %s revision %r from %s",
        served.name,
        served.revision,
        served.reference,
        extra={
            "event": "policysupply.bundle_published",
            "bundle": served.name,
            "reference": str(served.reference),
            "digest": served.reference.digest,
            "revision": served.revision,
            "etag": served.etag,
            "expires": None if served.expires is None else served.expires.isoformat(),
        },
    )


def log_stored_expired(served: ServedBundle) -> None:
    """Logs event ``policysupply.bundle_expired`` for a stored bundle found too old at start."""
    logger.error(
        "stored bundle %s expired at %s (its signature is too old); not serving it",
        served.name,
        served.expires,
        extra={
            "event": "policysupply.bundle_expired",
            "bundle": served.name,
            "reference": str(served.reference),
            "digest": served.reference.digest,
            "reason": "StaleSignatureError",
            "detail": f"expired at {served.expires}",
            "serving": None,
        },
    )
