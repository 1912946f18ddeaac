"""The one freeze rule: when material is too old, for the verifier and the bundle server alike.

The age counts from ``VerifiedArtifact.age_from`` (a signer-produced time, or
with ``insecure_witnessed_age`` a witnessed one); material is fresh strictly
before that time plus the limit, and too old from that instant on.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable


def age_from(
    signatures: Iterable[tuple[str, dt.datetime | None, dt.datetime | None]],
    *,
    witnessed: bool,
    threshold: int,
) -> dt.datetime | None:
    """The time material's age counts from, given its signatures.

    Args:
        signatures: ``(signer, signed_at, witnessed_at)`` for each counted signature.
        witnessed: Signatures without ``signed_at`` count from ``witnessed_at``
            (``insecure_witnessed_age``).
        threshold: Each signer's newest time counts; of those, the
            ``threshold``-th newest is the answer (``None`` if fewer signers
            have a time), so as many signers as the policy requires vouch for it.
    """
    newest: dict[str, dt.datetime] = {}
    for signer, signed_at, witnessed_at in signatures:
        t = signed_at if signed_at is not None or not witnessed else witnessed_at
        if t is not None and (signer not in newest or t > newest[signer]):
            newest[signer] = t
    times = sorted(newest.values(), reverse=True)
    return times[threshold - 1] if 0 < threshold <= len(times) else None


def deadline(since: dt.datetime | None, limit: dt.timedelta) -> dt.datetime | None:
    """The instant from which material whose age counts from ``since`` is too old."""
    return None if since is None else since + limit


def past(end: dt.datetime, now: dt.datetime) -> bool:
    """Whether ``now`` is at or after the deadline ``end``."""
    return now >= end


def expired(since: dt.datetime | None, limit: dt.timedelta, now: dt.datetime) -> bool:
    """Whether such material is too old at ``now`` (no time to count from: it is)."""
    end = deadline(since, limit)
    return end is None or past(end, now)
