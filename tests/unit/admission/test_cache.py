"""The verification cache: what it keys on, what it keeps, and for how long."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time

import pytest

from policysupply import Signer, TrustPolicy
from policysupply._internal.admission import cache as vcache
from policysupply._internal.admission.memo import SingleFlight as _SingleFlight

NOW = 1_800_000_000.0


def verified(*signed_at: str | None, witnessed_at: str | None = None) -> dict[str, object]:
    return {
        "verified": True,
        "signers": ["k"],
        "signatures": [{"signed_at": s, "witnessed_at": witnessed_at} for s in signed_at],
    }


def iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat().replace("+00:00", "Z")


def test_expiry_is_the_ttl_without_a_max_age():
    assert (
        vcache.expiry(verified(None), ttl=300, max_age=None, witnessed=False, now=NOW) == NOW + 300
    )


def test_expiry_never_outlives_max_signature_age():
    """A result must not be reused once the verifier itself would call it stale."""
    doc = verified(iso(NOW - 3500), iso(NOW - 7000))
    until = vcache.expiry(doc, ttl=300, max_age=dt.timedelta(hours=1), witnessed=False, now=NOW)
    assert until == pytest.approx(NOW + 100)


def test_without_a_signing_time_a_max_age_result_is_not_reused():
    doc = verified(None, witnessed_at=iso(NOW - 10))
    assert (
        vcache.expiry(doc, ttl=300, max_age=dt.timedelta(hours=1), witnessed=False, now=NOW) == NOW
    )
    # ... unless the policy judges such signatures by their witnessed time.
    until = vcache.expiry(doc, ttl=300, max_age=dt.timedelta(hours=1), witnessed=True, now=NOW)
    assert until == NOW + 300


def test_keys_change_with_policy_root_subject_and_attestations():
    a, b = Signer.generate(), Signer.generate()
    pa, pb = TrustPolicy(keys=[a.public_key_pem]), TrustPolicy(keys=[b.public_key_pem])
    h = vcache.policy_hash(pa)
    assert h == vcache.policy_hash(TrustPolicy(keys=[a.public_key_pem]))
    assert h != vcache.policy_hash(pb)
    assert h != vcache.policy_hash(
        TrustPolicy(keys=[a.public_key_pem], threshold=1, annotations={"x": "y"})
    )
    assert h != vcache.policy_hash(
        TrustPolicy(keys=[a.public_key_pem], max_signature_age=dt.timedelta(days=1))
    )
    d = "sha256:" + "a" * 64
    base = vcache.cache_key("r/x", d, policy=h, root="none", attestations=None)
    assert base != vcache.cache_key("r/y", d, policy=h, root="none", attestations=None)
    assert base != vcache.cache_key("r/x", d, policy=h, root="sha256:1", attestations=None)
    assert base != vcache.cache_key("r/x", d, policy=h, root="none", attestations=True)


def test_trust_root_version_is_the_file_hash(tmp_path):
    root = tmp_path / "trusted_root.json"
    root.write_text("{}")
    first = vcache.trust_root_version(root)
    root.write_text('{"v": 2}')
    assert vcache.trust_root_version(root) != first
    assert vcache.trust_root_version(None) == "none"


def test_local_cache_is_lru_and_drops_expired_entries():
    c = vcache.LocalCache(2)
    e = vcache.Entry(verification=verified(None), expires=time.time() + 60)
    c.put("a", e)
    c.put("b", e)
    assert c.get("a") is e
    c.put("c", e)  # evicts b, the least recently used
    assert c.get("b") is None
    assert c.get("a") is e
    assert c.get("c") is e
    c.put("old", vcache.Entry(verification=verified(None), expires=time.time() + 1))
    assert c.get("old", now=time.time() + 2) is None


def test_entries_that_are_not_verified_are_never_read_back():
    doc = {"verification": {"verified": False}, "expires": time.time() + 60}
    assert vcache.Entry.from_bytes(json.dumps(doc).encode()) is None
    assert vcache.Entry.from_bytes(b"{not json") is None


def test_single_flight_shares_one_call_and_survives_a_caller_giving_up():
    calls = 0

    async def slow() -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return "digest"

    async def main() -> list[str]:
        flight = _SingleFlight()
        impatient = asyncio.ensure_future(flight.do("k", slow))
        others = [asyncio.ensure_future(flight.do("k", slow)) for _ in range(9)]
        await asyncio.sleep(0)
        impatient.cancel()
        out = await asyncio.gather(*others)
        assert flight.shared == 9
        return out

    assert asyncio.run(main()) == ["digest"] * 9
    assert calls == 1


def test_cached_result_outlives_the_threshold_freeze_rule():
    # 2-of-n: the verifier counts the age from the second-newest signer's time
    # (one stolen key re-signing cannot refresh it). The cache must stop
    # reusing the result when the verifier would refuse it, not later.
    doc = {
        "verified": True,
        "signers": ["k1", "k2"],
        "signatures": [
            {"key_id": "k1", "identity": None, "signed_at": iso(NOW - 10), "witnessed_at": None},
            {"key_id": "k2", "identity": None, "signed_at": iso(NOW - 3500), "witnessed_at": None},
        ],
    }
    hour = dt.timedelta(hours=1)
    until = vcache.expiry(doc, ttl=300, max_age=hour, witnessed=False, threshold=2, now=NOW)
    assert until == pytest.approx(NOW + 100)
    assert vcache.expiry(doc, ttl=300, max_age=hour, witnessed=False, now=NOW) == NOW + 300
