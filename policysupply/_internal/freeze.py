"""The one freeze rule: when material is too old, for the verifier and the bundle server alike.

The age counts from ``VerifiedArtifact.age_from`` (a signer-produced time, or
with ``insecure_witnessed_age`` a witnessed one); material is fresh strictly
before that time plus the limit, and too old from that instant on.
"""

from __future__ import annotations

import datetime as dt


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
