"""TrustState: ordering rules, persistence, corruption and concurrent writers."""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
from pathlib import Path

import pytest

from policysupply import RollbackError, TrustState, VerificationError

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
HOUR = dt.timedelta(hours=1)


def test_first_use_then_forward_only(tmp_path: Path) -> None:
    state = TrustState(tmp_path / "s.json")
    assert state.get("r") is None
    state.accept("r", digest="sha256:a", revision="1.0", signed_at=T0)
    state.accept("r", digest="sha256:a", revision="1.0", signed_at=T0)  # idempotent
    state.accept("r", digest="sha256:b", revision="1.1", signed_at=T0 + HOUR)
    with pytest.raises(RollbackError, match="replaced"):
        state.accept("r", digest="sha256:a", revision="1.0", signed_at=T0)
    with pytest.raises(RollbackError, match="older than the accepted"):
        state.accept("r", digest="sha256:c", revision="1.0.9", signed_at=T0 + 2 * HOUR)
    with pytest.raises(RollbackError, match="signed at"):  # unordered revisions: time decides
        state.accept("r", digest="sha256:d", revision="3f2a9c1", signed_at=T0)
    record = state.accept("r", digest="sha256:e", revision="3f2a9c1", signed_at=T0 + 3 * HOUR)
    assert record.superseded == ("sha256:a", "sha256:b")
    # Other references are independent streams.
    state.accept("other", digest="sha256:a", revision="0.1", signed_at=None)
    assert set(state.records()) == {"r", "other"}


def test_persisted_across_instances(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "s.json"
    TrustState(path).accept("r", digest="sha256:a", revision="2", signed_at=T0)
    again = TrustState(path)
    record = again.get("r")
    assert record is not None
    assert (record.digest, record.revision, record.signed_at) == ("sha256:a", "2", T0)
    with pytest.raises(RollbackError):
        again.accept("r", digest="sha256:b", revision="1", signed_at=None)
    assert json.loads(path.read_text())["references"]["r"]["digest"] == "sha256:a"


@pytest.mark.parametrize(
    "body", [b"{", b"[]", b'{"format": 9, "references": {}}', b'{"format": 1}']
)
def test_corrupt_state_fails_closed_and_is_kept(tmp_path: Path, body: bytes) -> None:
    path = tmp_path / "s.json"
    path.write_bytes(body)
    with pytest.raises(VerificationError, match="corrupt"):
        TrustState(path).accept("r", digest="sha256:a", revision=None, signed_at=None)
    assert path.read_bytes() == body  # nothing overwritten


def test_failed_write_leaves_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    path = tmp_path / "s.json"
    state = TrustState(path)
    state.accept("r", digest="sha256:a", revision="1", signed_at=None)
    before = path.read_bytes()

    def boom(*_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(VerificationError, match=f"cannot write trust state {path}: No space"):
        state.accept("r", digest="sha256:b", revision="2", signed_at=None)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []


def _record(**fields: object) -> bytes:
    record = {
        "digest": "sha256:a",
        "revision": "1",
        "signed_at": "2024-01-01T00:00:00+00:00",
        "accepted_at": "2024-01-01T00:00:00+00:00",
        "superseded": [],
    }
    return json.dumps({"format": 1, "references": {"r": record | fields}}).encode()


@pytest.mark.parametrize(
    "body",
    [
        _record(signed_at="2024-01-01T00:00:00"),  # no UTC offset: cannot be ordered
        _record(accepted_at="2024-01-01T00:00:00"),
        _record(superseded="abc"),
        _record(superseded=5),
        b'{"format": 1, "references": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    ],
)
def test_hostile_state_files_are_corrupt(tmp_path: Path, body: bytes) -> None:
    path = tmp_path / "s.json"
    path.write_bytes(body)
    with pytest.raises(VerificationError, match="corrupt"):
        TrustState(path).accept("r", digest="sha256:b", revision="2", signed_at=T0)
    assert path.read_bytes() == body


def test_revisions_beyond_the_int_digit_limit_are_not_versions(tmp_path: Path) -> None:
    huge = "9" * 5000
    path = tmp_path / "s.json"
    path.write_bytes(_record(revision=huge))
    state = TrustState(path)
    # Not a version, so no revision order: the signing time decides.
    record = state.accept("r", digest="sha256:b", revision="2", signed_at=T0)
    assert record.revision == "2"
    assert state.accept("r", digest="sha256:c", revision=huge, signed_at=T0 + HOUR).revision == huge


@pytest.mark.parametrize(
    "huge", ["1.0.0-" + "9" * 5000, "1.0.0-" + "9" * 5000 + "-gabcdef1", "1.0.0-rc." + "9" * 5000]
)
def test_huge_version_components_are_not_versions(tmp_path: Path, huge: str) -> None:
    state = TrustState(tmp_path / "s.json")
    state.accept("r", digest="sha256:a", revision="2.0.0", signed_at=T0)
    assert state.accept("r", digest="sha256:b", revision=huge, signed_at=T0 + HOUR).revision == huge


def test_naive_signed_at_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        TrustState(tmp_path / "s.json").accept(
            "r", digest="sha256:a", revision=None, signed_at=dt.datetime(2026, 1, 1)
        )
    assert not (tmp_path / "s.json").exists()


def test_unwritable_lock_is_a_verification_error(tmp_path: Path) -> None:
    (tmp_path / "s.json.lock").mkdir()  # cannot be opened as the lock file
    with pytest.raises(VerificationError, match="cannot lock trust state"):
        TrustState(tmp_path / "s.json").records()


def _accept_many(path: str, worker: int) -> None:
    state = TrustState(path)
    for i in range(20):
        state.accept(
            f"ref-{worker}-{i}", digest=f"sha256:{worker}{i}", revision="1", signed_at=None
        )


def test_concurrent_processes_lose_no_update(tmp_path: Path) -> None:
    path = str(tmp_path / "s.json")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_accept_many, args=(path, w)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert len(TrustState(path).records()) == 80


# -- revision order: semver precedence --------------------------------------------------

SEMVER_SPEC_ORDER = [  # semver.org, section 11, in increasing precedence
    "1.0.0-alpha",
    "1.0.0-alpha.1",
    "1.0.0-alpha.beta",
    "1.0.0-beta",
    "1.0.0-beta.2",
    "1.0.0-beta.11",
    "1.0.0-rc.1",
    "1.0.0",
    "1.0.1",
    "1.1.0",
    "2.0.0-rc1",
    "v2.0.0-rc1-2-g1a2b3c4",  # git describe: 2 commits after the tag
    "v2.0.0",
    "v2.0.0-3-gabc1234",
    "v2.0.0-12-g0fedcba-dirty",
    "v2.0.1-rc.1",
]


def test_prerelease_after_its_release_is_rollback(tmp_path: Path) -> None:
    state = TrustState(tmp_path / "s.json")
    state.accept("r", digest="sha256:a", revision="1.2.3-rc1", signed_at=None)
    state.accept("r", digest="sha256:b", revision="1.2.3", signed_at=None)
    with pytest.raises(RollbackError, match="older than the accepted"):
        state.accept("r", digest="sha256:c", revision="1.2.3-rc2", signed_at=None)
    with pytest.raises(RollbackError, match="older than the accepted"):
        state.accept("r", digest="sha256:d", revision="v1.2.3-rc.9", signed_at=T0)


@pytest.mark.parametrize("i", range(len(SEMVER_SPEC_ORDER) - 1))
def test_semver_precedence_goes_forward_only(tmp_path: Path, i: int) -> None:
    lower, higher = SEMVER_SPEC_ORDER[i], SEMVER_SPEC_ORDER[i + 1]
    state = TrustState(tmp_path / "s.json")
    state.accept("r", digest="sha256:a", revision=lower, signed_at=None)
    state.accept("r", digest="sha256:b", revision=higher, signed_at=None)
    other = TrustState(tmp_path / "other.json")
    other.accept("r", digest="sha256:b", revision=higher, signed_at=None)
    with pytest.raises(RollbackError, match="older than the accepted"):
        other.accept("r", digest="sha256:a", revision=lower, signed_at=None)


def test_build_metadata_is_ignored_for_precedence(tmp_path: Path) -> None:
    state = TrustState(tmp_path / "s.json")
    state.accept("r", digest="sha256:a", revision="1.2.3+build.9", signed_at=T0)
    # Same precedence, another build: not older by revision; the signing time decides.
    state.accept("r", digest="sha256:b", revision="1.2.3+build.10", signed_at=T0 + HOUR)
    with pytest.raises(RollbackError, match="signed at"):
        state.accept("r", digest="sha256:c", revision="1.2.3+build.11", signed_at=T0)
    with pytest.raises(RollbackError, match="older than the accepted"):
        state.accept("r", digest="sha256:d", revision="1.2.2+build.99", signed_at=T0 + 2 * HOUR)
    state.accept("r", digest="sha256:e", revision="1.2.4+build.1", signed_at=T0 + 2 * HOUR)


def test_non_semver_revisions_keep_their_rules(tmp_path: Path) -> None:
    state = TrustState(tmp_path / "s.json")
    state.accept("r", digest="sha256:a", revision="v2", signed_at=None)
    with pytest.raises(RollbackError, match="older than the accepted"):
        state.accept("r", digest="sha256:b", revision="1.9.9.9", signed_at=None)
    state.accept("r", digest="sha256:c", revision="2.0.1", signed_at=None)
    # Unordered revisions (git SHAs, build ids): only digests and signing times order them.
    state.accept("r", digest="sha256:d", revision="3f2a9c1", signed_at=T0)
    with pytest.raises(RollbackError, match="signed at"):
        state.accept("r", digest="sha256:e", revision="release_2024", signed_at=T0 - HOUR)


# -- bundles without a revision -------------------------------------------------------


@pytest.mark.parametrize("empty", ["", None])
def test_bundle_without_revision_is_updatable(tmp_path: Path, empty: str | None) -> None:
    state = TrustState(tmp_path / "s.json")
    state.accept("r", digest="sha256:a", revision=empty, signed_at=T0)
    record = state.accept("r", digest="sha256:b", revision=empty, signed_at=T0 + HOUR)
    assert (record.digest, record.revision) == ("sha256:b", None)
    state.accept("r", digest="sha256:c", revision="", signed_at=None)
    # The other rules still hold: superseded digests, and an older signing time.
    with pytest.raises(RollbackError, match="replaced"):
        state.accept("r", digest="sha256:a", revision=empty, signed_at=T0 + 2 * HOUR)
    state.accept("r", digest="sha256:d", revision=empty, signed_at=T0 + 2 * HOUR)
    with pytest.raises(RollbackError, match="signed at"):
        state.accept("r", digest="sha256:e", revision=empty, signed_at=T0)


def test_empty_revision_recorded_by_an_older_version_is_updatable(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_bytes(_record(revision=""))
    record = TrustState(path).accept("r", digest="sha256:b", revision="", signed_at=T0 + HOUR)
    assert record.digest == "sha256:b"


def test_release_without_signing_time_launders_the_time_rule(tmp_path: Path) -> None:
    # Unordered revisions: only the signing time orders releases. The attacker
    # first serves a validly signed release that carries no signing time (an
    # old cosign signature), which erased the accepted time; then an older
    # release with a time passed "must not go back".
    state = TrustState(tmp_path / "s.json")
    state.accept("r", digest="sha256:new", revision="9bd04e7", signed_at=T0 + 2 * HOUR)
    record = state.accept("r", digest="sha256:untimed", revision="77ac0de", signed_at=None)
    assert record.signed_at == T0 + 2 * HOUR  # the newest accepted time is kept
    with pytest.raises(RollbackError, match="signed at"):
        state.accept("r", digest="sha256:old", revision="3f2a9c1", signed_at=T0)
