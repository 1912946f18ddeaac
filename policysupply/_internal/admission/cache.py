"""The verification cache: only verified results, never past ``max_signature_age``.

Key: the subject (``host/repository`` and digest), the trust policy's hash,
the trust root's version and whether attestations were asked for. A result
that did not verify is never stored, so a cache can only save work, never
turn a NO into a YES it would not otherwise be. An entry expires at the
earlier of its TTL and the moment its newest trusted signature becomes
older than the policy's ``max_signature_age``.

Two layers: an in-process LRU with TTL (always), and Redis shared by the
replicas (when configured). Redis entries carry an HMAC when a key is
configured, so a writer to Redis who lacks the key cannot plant a "verified".
Redis being down is never a reason to allow: lookups fall back to verifying.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import json
import time
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from policysupply.verifier import TrustPolicy

KEY_PREFIX = "policysupply:verify:v1:"


def _canon(value: Any) -> Any:
    if attrs.has(type(value)):
        return {
            k: _canon(v)
            for k, v in sorted(attrs.asdict(value, recurse=False).items())
            if not k.startswith("_")
        }
    if isinstance(value, Mapping):
        return {str(k): _canon(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_canon(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)


def policy_hash(policy: TrustPolicy) -> str:
    """A stable hash of everything in a trust policy that decides verification."""
    doc = {
        f.name: _canon(getattr(policy, f.name))
        for f in attrs.fields(type(policy))
        if f.name != "keys" and not f.name.startswith("_")
    }
    doc["keys"] = sorted(policy.key_ids())
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def trust_root_version(trusted_root: Any) -> str:
    """What identifies the trust root's contents: the file's hash, or its name."""
    if trusted_root is None:
        return "none"
    if isinstance(trusted_root, (str, Path)) and Path(trusted_root).is_file():
        return "sha256:" + hashlib.sha256(Path(trusted_root).read_bytes()).hexdigest()
    return str(trusted_root)


def cache_key(name: str, digest: str, *, policy: str, root: str, attestations: bool | None) -> str:
    """The cache key of one verification (a hex digest, safe in Redis and logs)."""
    text = json.dumps([name, digest, policy, root, attestations], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _parse_time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def expiry(
    verification: Mapping[str, Any],
    *,
    ttl: float,
    max_age: dt.timedelta | None,
    witnessed: bool,
    threshold: int = 1,
    now: float | None = None,
) -> float:
    """When a verified result stops being reusable (epoch seconds).

    Never later than ``now + ttl``; with ``max_age`` never later than the
    moment the verifier itself would start refusing it, by its own rule
    (``policysupply._internal.freeze``: the ``threshold``-th newest signer's
    time plus ``max_age``).
    """
    from policysupply._internal import freeze

    now = time.time() if now is None else now
    until = now + ttl
    if max_age is not None:
        since = freeze.age_from(
            (
                (
                    _signer(sig),
                    _parse_time(sig.get("signed_at")),
                    _parse_time(sig.get("witnessed_at")),
                )
                for sig in verification.get("signatures") or ()
                if isinstance(sig, Mapping)
            ),
            witnessed=witnessed,
            threshold=threshold,
        )
        end = freeze.deadline(since, max_age)
        if end is None:
            return now  # nothing to bound the age by: do not reuse it
        until = min(until, end.timestamp())
    return until


def _signer(sig: Mapping[str, Any]) -> str:
    """The signer a signature document counts for (as ``VerifiedSignature.signer``)."""
    identity = sig.get("identity")
    if isinstance(identity, Mapping) and identity.get("matched") is not None:
        return f"identity:{identity['matched']}"
    return str(sig.get("key_id"))


@attrs.frozen(kw_only=True)
class Entry:
    """A cached verified result."""

    verification: Mapping[str, Any]
    expires: float

    def to_bytes(self) -> bytes:
        return json.dumps(
            {"verification": self.verification, "expires": self.expires},
            separators=(",", ":"),
            sort_keys=True,
        ).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Entry | None:
        try:
            doc = json.loads(data)
            verification, expires = doc["verification"], float(doc["expires"])
        except (ValueError, KeyError, TypeError):
            return None
        if not isinstance(verification, dict) or verification.get("verified") is not True:
            return None  # only verified results are ever cached
        return cls(verification=verification, expires=expires)


class LocalCache:
    """An LRU of entries with expiry; used from the event loop thread only."""

    def __init__(self, max_entries: int) -> None:
        self._max = max_entries
        self._items: OrderedDict[str, Entry] = OrderedDict()

    def get(self, key: str, now: float | None = None) -> Entry | None:
        entry = self._items.get(key)
        if entry is None:
            return None
        if entry.expires <= (time.time() if now is None else now):
            del self._items[key]
            return None
        self._items.move_to_end(key)
        return entry

    def put(self, key: str, entry: Entry) -> None:
        if self._max <= 0 or entry.expires <= time.time():
            return
        self._items[key] = entry
        self._items.move_to_end(key)
        while len(self._items) > self._max:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


class CacheUnavailableError(Exception):
    """Redis could not be asked (down, slow, refused); the caller verifies instead."""


class RedisCache:
    """Verified results shared by replicas, in Redis (``redis.asyncio``).

    After a failure Redis is skipped for ``retry_after`` seconds, so an
    outage costs one timeout per window, not one per request.
    """

    def __init__(
        self, url: str, *, hmac_key: bytes, timeout: float, retry_after: float = 5.0
    ) -> None:
        if len(hmac_key) < 16:
            # Unauthenticated entries would let anyone who can write to Redis
            # plant a "verified" result.
            raise ValueError("the shared cache needs an HMAC key of at least 16 bytes")
        import redis.asyncio as aioredis

        self._client: Any = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry_on_timeout=False,
            health_check_interval=0,
        )
        self._key = hmac_key
        self._retry_after = retry_after
        self._down_until = 0.0
        self.url = url

    @property
    def available(self) -> bool:
        """False while a recent failure is being waited out."""
        return time.monotonic() >= self._down_until

    def _failed(self) -> CacheUnavailableError:
        self._down_until = time.monotonic() + self._retry_after
        return CacheUnavailableError(f"redis at {self.url} is unavailable")

    def _mac(self, key: str, data: bytes) -> bytes:
        # The cache key is bound into the MAC: an entry cannot be moved to another key.
        return hmac.new(self._key, key.encode() + b"\0" + data, hashlib.sha256).hexdigest().encode()

    def _seal(self, key: str, data: bytes) -> bytes:
        mac = self._mac(key, data)
        return mac + b"." + data

    def _open(self, key: str, stored: bytes) -> bytes | None:
        mac, _, data = stored.partition(b".")
        want = self._mac(key, data)
        return data if hmac.compare_digest(mac, want) else None

    async def get(self, key: str) -> Entry | None:
        """The entry under ``key``, ``None`` if absent, expired or not authentic.

        Raises:
            CacheUnavailableError: Redis did not answer (or is being skipped).
        """
        if not self.available:
            raise CacheUnavailableError("redis is being skipped after a failure")
        try:
            stored = await self._client.get(KEY_PREFIX + key)
        except Exception as exc:  # any client or socket error: fall back to verifying
            raise self._failed() from exc
        if stored is None:
            return None
        data = self._open(key, stored)
        entry = Entry.from_bytes(data) if data is not None else None
        if entry is None or entry.expires <= time.time():
            return None
        return entry

    async def put(self, key: str, entry: Entry) -> None:
        """Stores ``entry`` until it expires.

        Raises:
            CacheUnavailableError: Redis did not answer (or is being skipped).
        """
        if not self.available:
            raise CacheUnavailableError("redis is being skipped after a failure")
        ttl_ms = int((entry.expires - time.time()) * 1000)
        if ttl_ms <= 0:
            return
        try:
            await self._client.set(KEY_PREFIX + key, self._seal(key, entry.to_bytes()), px=ttl_ms)
        except Exception as exc:
            raise self._failed() from exc

    async def ping(self) -> bool:
        try:
            return bool(await self._client.ping())
        except Exception:
            return False

    async def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a broken connection is best effort
            await self._client.aclose()
