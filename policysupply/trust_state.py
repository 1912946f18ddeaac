"""Rollback protection: what was last accepted for each reference, kept on disk.

A valid signature only says *someone trusted signed this*; it does not say
*this is the newest*. An attacker who controls the registry (or a mirror)
can serve an older, correctly signed bundle with a known hole in it. The
:class:`TrustState` remembers, per reference, the last accepted revision,
digest and signing time, plus the digests it superseded, and refuses to go
backwards.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from policysupply.errors import RollbackError, VerificationError

__all__ = ["AcceptedRecord", "TrustState"]

_FORMAT = 1
# Superseded digests remembered per reference; enough for years of releases
# while keeping the file small.
_HISTORY = 256
# v?N(.N)* with an optional -pre-release and +build metadata (semver's shape,
# any number of numeric components).
_VERSION = re.compile(r"v?(\d+(?:\.\d+)*)(?:-([^+]*))?(?:\+(.*))?", re.DOTALL)
# `git describe` output: <tag>-<commits since the tag>-g<abbreviated sha>[-dirty].
_DESCRIBE = re.compile(r"(?:(.*)-)?(\d+)-g[0-9a-f]{4,40}(?:-dirty)?", re.DOTALL)
_HUGE_NUMBER = re.compile(r"\d{64}")
# A release sorts after all of its pre-releases (semver 2.0.0, section 11).
_RELEASE = (1,)

VersionKey = tuple[tuple[int, ...], tuple[Any, ...], int]


def _version_key(revision: str | None) -> VersionKey | None:
    """A comparable key for version-like revisions (``1.2.3``, ``v2``, ``1.2.3-rc.1``), else None.

    Semver precedence: numeric components compare as numbers; a pre-release
    (``-rc.1``) sorts before its release, its dot-separated identifiers
    compare numerically when all digits, else as ASCII, numeric before
    alphanumeric, fewer before more; build metadata (``+build.5``) is ignored.
    ``git describe`` output (``v1.4.0-3-gabc1234``: 3 commits after the tag,
    the revision the CI how-to uses) sorts after its tag, by commit count.
    Other revisions (git SHAs, build ids) have no order; for those the signing
    time and the superseded-digest history do the work.
    """
    if not revision or _HUGE_NUMBER.search(revision):
        return None  # not a version, on every Python (int()'s digit limit varies)
    m = _VERSION.fullmatch(revision)
    if not m:
        return None
    pre: str | None = m.group(2)
    commits = 0
    described = _DESCRIBE.fullmatch(pre) if pre is not None else None
    try:
        if described is not None:
            pre, commits = described.group(1), int(described.group(2))
        numbers = tuple(int(p) for p in m.group(1).split("."))
        if pre is None:
            return numbers, _RELEASE, commits
        ids = tuple((0, int(i)) if i.isdigit() else (1, i) for i in pre.split("."))
    except ValueError:  # a component beyond int()'s digit limit: not a version
        return None
    return numbers, (0, ids), commits


def _iso(t: dt.datetime | None) -> str | None:
    return None if t is None else t.astimezone(dt.timezone.utc).isoformat()


def _parse_time(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    parsed = dt.datetime.fromisoformat(str(value))
    if parsed.tzinfo is None:
        raise ValueError(f"time {str(value)[:40]!r} has no UTC offset")
    return parsed


@attrs.frozen(kw_only=True)
class AcceptedRecord:
    """What a :class:`TrustState` holds for one reference.

    Attributes:
        digest: The last accepted manifest digest.
        revision: Its bundle revision (``None`` when the bundle has none; an
            empty revision is recorded as none).
        signed_at: The newest signer-produced signing time (a lower bound)
            accepted on this stream, if any: material without one keeps the
            time before it, so it cannot reset the "must not go back" rule.
        accepted_at: When it was accepted on this machine.
        superseded: Digests accepted earlier and replaced since (newest last).
    """

    digest: str
    revision: str | None
    signed_at: dt.datetime | None
    accepted_at: dt.datetime
    superseded: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The record as stored in the state file."""
        return {
            "digest": self.digest,
            "revision": self.revision,
            "signed_at": _iso(self.signed_at),
            "accepted_at": _iso(self.accepted_at),
            "superseded": list(self.superseded),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> AcceptedRecord:
        """Reads a stored record (raises ``KeyError``/``ValueError``/``TypeError`` if malformed)."""
        revision = doc.get("revision")
        accepted = _parse_time(doc["accepted_at"])
        if accepted is None:
            raise ValueError("accepted_at is missing")
        superseded = doc.get("superseded") or []
        if not isinstance(superseded, list):
            raise TypeError("superseded is not a list")
        return cls(
            digest=str(doc["digest"]),
            revision=None if revision is None else str(revision),
            signed_at=_parse_time(doc.get("signed_at")),
            accepted_at=accepted,
            superseded=tuple(str(d) for d in superseded),
        )


class TrustState:
    """A file-backed record of accepted material, for rollback protection.

    Every update happens under an exclusive file lock and is written with a
    temp file, fsync and rename, so concurrent verifiers on one machine see a
    consistent file and a crash never leaves it half-written. A missing file
    is an empty state (trust on first use); a corrupt one fails closed.

    Example:
        >>> state = TrustState("~/.local/state/policysupply/trust.json")  # doctest: +SKIP
        >>> verifier.verify_bundle(reg, "acme/policy:stable", state=state)  # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        """Args: path: the JSON file to keep the state in (created on first accept)."""
        self.path = Path(path).expanduser()

    def __repr__(self) -> str:
        return f"TrustState({str(self.path)!r})"

    # -- file -----------------------------------------------------------------

    def _read(self) -> dict[str, AcceptedRecord]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise VerificationError(
                f"cannot read trust state {self.path}: {exc.strerror}"
            ) from None
        try:
            doc = json.loads(raw)
            if doc.get("format") != _FORMAT:
                raise ValueError(f"unknown format {doc.get('format')!r}")
            return {str(k): AcceptedRecord.from_json(v) for k, v in dict(doc["references"]).items()}
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            raise VerificationError(
                f"trust state {self.path} is corrupt ({str(exc)[:200]}); restore it from a backup, "
                "or delete it to trust the next verified material on first use"
            ) from None

    def _write(self, records: Mapping[str, AcceptedRecord]) -> None:
        doc = {
            "format": _FORMAT,
            "references": {k: records[k].to_json() for k in sorted(records)},
        }
        from policysupply._internal import fs

        try:
            fs.atomic_write(self.path, json.dumps(doc, indent=2).encode() + b"\n")
        except OSError as exc:
            raise VerificationError(
                f"cannot write trust state {self.path}: {exc.strerror or exc}; "
                "it was left as it was, and nothing was accepted"
            ) from None

    @contextlib.contextmanager
    def _lock(self) -> Any:
        from policysupply._internal import fs

        lock_path = self.path.with_name(self.path.name + ".lock")
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(fs.locked(lock_path))
            except OSError as exc:
                raise VerificationError(
                    f"cannot lock trust state {self.path} ({lock_path}): {exc.strerror or exc}"
                ) from None
            yield

    # -- API ------------------------------------------------------------------

    def get(self, reference: str) -> AcceptedRecord | None:
        """The last accepted record for ``reference``, if any."""
        with self._lock():
            return self._read().get(reference)

    def records(self) -> dict[str, AcceptedRecord]:
        """Every reference and its last accepted record."""
        with self._lock():
            return self._read()

    def accept(
        self,
        reference: str,
        *,
        digest: str,
        revision: str | None,
        signed_at: dt.datetime | None,
    ) -> AcceptedRecord:
        """Checks that new material does not go backwards, then records it.

        The check and the write happen under one lock, so two processes
        cannot both accept conflicting material.

        Args:
            reference: The stream the material belongs to (e.g. ``host/repo:tag``).
            digest: The verified manifest digest.
            revision: The bundle's revision, if it has one (``""`` is none).
            signed_at: The newest signer-produced signing time (a lower bound:
                ``VerifiedArtifact.signed_at``), if there is one.

        Returns:
            The record now stored.

        Raises:
            RollbackError: ``digest`` was accepted before and superseded; or it
                claims the accepted revision with different content; or its
                revision or signing time is older than what was accepted.
            VerificationError: The state file is unreadable, corrupt, or cannot
                be written (it is then left as it was).
            ValueError: ``signed_at`` has no time zone.
        """
        if signed_at is not None and signed_at.utcoffset() is None:
            raise ValueError("signed_at must be a timezone-aware datetime")
        revision = revision or None  # a bundle without a revision: "" and None alike
        with self._lock():
            records = self._read()
            old = records.get(reference)
            now = dt.datetime.now(dt.timezone.utc)
            if old is not None and old.digest == digest:
                return old  # the same material again: nothing to record
            if old is not None:
                _refuse_rollback(reference, old, digest, revision, signed_at)
            superseded: tuple[str, ...] = ()
            if old is not None:
                superseded = (*old.superseded, old.digest)[-_HISTORY:]
                if signed_at is None:
                    # Material without a signing time (an old cosign signature)
                    # must not erase the accepted one: after it, an older timed
                    # release would pass "signing time must not go back".
                    signed_at = old.signed_at
            record = AcceptedRecord(
                digest=digest,
                revision=revision,
                signed_at=signed_at,
                accepted_at=now,
                superseded=superseded,
            )
            records[reference] = record
            self._write(records)
            return record


class _MemoryTrustState(TrustState):
    """A :class:`TrustState` kept in memory: rollback protection for one process's lifetime.

    For a follower (``BundleWatch``) given no state file: what it has itself
    seen replaced must not come back within its run.
    """

    def __init__(self) -> None:
        self.path = Path("<memory>")
        self._records: dict[str, AcceptedRecord] = {}
        self._mutex = threading.Lock()

    def __repr__(self) -> str:
        return "TrustState(<memory>)"

    def _read(self) -> dict[str, AcceptedRecord]:
        return dict(self._records)

    def _write(self, records: Mapping[str, AcceptedRecord]) -> None:
        self._records = dict(records)

    @contextlib.contextmanager
    def _lock(self) -> Any:
        with self._mutex:
            yield


def in_memory() -> TrustState:
    """A trust state that lives as long as the process (see ``_MemoryTrustState``)."""
    return _MemoryTrustState()


def _refuse_rollback(
    reference: str,
    old: AcceptedRecord,
    digest: str,
    revision: str | None,
    signed_at: dt.datetime | None,
) -> None:
    if digest in old.superseded:
        raise RollbackError(
            f"{reference}: {digest} was accepted before and has since been replaced by "
            f"{old.digest} (revision {old.revision!r}); refusing to roll back"
        )
    # No revision (None, or "" as older versions recorded it) is never "the same
    # revision" and has no order: only the digest history and signing time apply.
    if revision is not None and revision == old.revision:
        raise RollbackError(
            f"{reference}: revision {revision!r} was accepted as {old.digest}; "
            f"{digest} claims the same revision with different content"
        )
    new_v, old_v = _version_key(revision), _version_key(old.revision)
    if new_v is not None and old_v is not None and new_v < old_v:
        raise RollbackError(
            f"{reference}: revision {revision!r} is older than the accepted {old.revision!r}"
        )
    if signed_at is not None and old.signed_at is not None and signed_at < old.signed_at:
        raise RollbackError(
            f"{reference}: signed at {_iso(signed_at)}, before the accepted material "
            f"(signed at {_iso(old.signed_at)})"
        )
