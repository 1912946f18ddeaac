"""What the trusted signatures add up to: threshold, attestations, age and state, decided once.

``Verifier.verify``, ``verify_bundle`` and ``verify_blob`` end here: each hands
over the candidates it found, and gets back a sealed result or the error.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import attrs

from policysupply._checks import Checks, lower_bound, signed_time, subjects_naming
from policysupply._internal import cosign
from policysupply._internal.cosign_storage import Candidate
from policysupply._internal.oci import Reference
from policysupply._trust_policy import TrustPolicy
from policysupply._verified import (
    VerifiedArtifact,
    VerifiedAttestation,
    VerifiedSignature,
    _sealed_artifact,
)
from policysupply.errors import (
    ClaimMismatchError,
    MissingAttestationError,
    StaleSignatureError,
    ThresholdNotMetError,
    UntrustedSignatureError,
    VerificationError,
)

if TYPE_CHECKING:
    from policysupply.bundle import Bundle
    from policysupply.native import NativeTrust
    from policysupply.trust_state import TrustState


def trusted_signatures(
    checks: Checks,
    ref: Reference,
    candidates: Sequence[Candidate],
    *,
    claims: bool,
    label: object,
    blob_annotations: object = None,
) -> tuple[VerifiedSignature, ...]:
    """The trusted signatures among ``candidates``, one per act of signing.

    Args:
        checks: The policy's checks.
        ref: What was signed, pinned to its digest.
        candidates: The signatures found for it.
        claims: Check each signature's signed claims (digest, repository,
            required annotations, signed time) against ``ref``. ``False`` for
            a plain file's bundle (its digest was checked when it was read):
            only ``blob_annotations`` are checked then.
        label: How the threshold error names the artifact.
        blob_annotations: With ``claims=False``, the annotations the file's
            bundle signs (a DSSE statement subject's; a ``messageSignature``
            signs none), held to the same rules (required annotations, signed
            time).

    Raises:
        VerificationError: No trusted signature (the most precise subclass
            their failures share).
        ThresholdNotMetError: Fewer distinct trusted signers than the policy's threshold.
    """
    digest = str(ref.digest)
    good = OneEach()
    errors: list[VerificationError] = []
    for c in candidates:
        try:
            signers = checks.signers(c)
        except VerificationError as exc:
            errors.append(exc)
            continue
        kind: type[ClaimMismatchError] = ClaimMismatchError
        try:
            if claims:
                ok, why, annotations = checks.claims(c, ref, digest)
            else:
                keyless = c.certificate is not None
                ok, why = True, ""
                annotations = checks.annotations(blob_annotations or {}, keyless=keyless)
        except ClaimMismatchError as exc:
            ok, why, kind = False, str(exc), type(exc)
        if not ok:
            errors.append(kind(f"{signers[0].signer[:28]}…: {why}"))
            continue
        claimed = signed_time(annotations.get(cosign.ANN_SIGNED_AT))
        signers = [
            attrs.evolve(s, annotations=annotations, signed_at=lower_bound(s, claimed))
            for s in signers
        ]
        for s in signers:
            good.add(checks.signature_id(c, s), s)
    if not good:
        raise combined(ref, len(candidates), errors)
    distinct = {s.signer for s in good}
    if len(distinct) < checks.policy.threshold:
        raise ThresholdNotMetError(
            f"{label}: {len(distinct)} distinct trusted signer(s) signed, "
            f"{checks.policy.threshold} required"
        )
    return good.values()


def conclude(
    policy: TrustPolicy,
    ref: Reference,
    signatures: tuple[VerifiedSignature, ...],
    attested: tuple[VerifiedAttestation, ...] = (),
) -> VerifiedArtifact:
    """The sealed result for ``ref``, once its signatures are recent enough.

    Raises:
        StaleSignatureError: See :func:`check_age`.
    """
    artifact = _sealed_artifact(ref, signatures, attested)
    check_age(policy, artifact)
    return artifact


def accept(
    policy: TrustPolicy,
    state: TrustState | None,
    stream: Reference,
    artifact: VerifiedArtifact,
    revision: str | None,
) -> None:
    """Records ``artifact`` as the newest accepted for ``stream`` (``host/repository:tag``).

    Its signing time is the one freeze uses without witnessed times: as many
    signers as the policy requires must vouch for it, so one stolen key
    re-signing an older release today cannot pass "must not go back".

    Raises:
        RollbackError: Older or conflicting material than ``state`` accepted.
    """
    if state is not None:
        state.accept(
            str(stream),
            digest=artifact.digest,
            revision=revision,
            signed_at=artifact.age_from(threshold=policy.threshold),
        )


def attestations(
    checks: Checks, pinned: Reference, statements: list[Candidate]
) -> tuple[VerifiedAttestation, ...]:
    """The attestations among ``statements`` by trusted signers; every required type present.

    Raises:
        MissingAttestationError: No attestation of a required type was found.
        VerificationError: Attestations of a required type exist, but none
            passes (the most precise type their failures share).
    """
    good: list[VerifiedAttestation] = []
    counted: set[tuple[str, str]] = set()
    errors: dict[str, list[VerificationError]] = {}
    seen: set[str] = set()
    for c in statements:
        try:
            doc = json.loads(c.claims)
            predicate_type = str(doc["predicateType"])
            predicate = doc.get("predicate") or {}
        except (ValueError, RecursionError, KeyError, TypeError, AttributeError):
            continue
        seen.add(predicate_type)
        try:
            if not subjects_naming(doc, str(pinned.digest)):
                raise VerificationError(f"attestation statement does not name {pinned.digest}")
            signers = checks.signers(c)
        except VerificationError as exc:
            errors.setdefault(predicate_type, []).append(exc)
            continue
        one = (predicate_type, checks.signature_id(c, signers[0]))
        if one in counted:
            continue  # the same signature again (or its malleated twin)
        counted.add(one)
        good.append(
            VerifiedAttestation(
                predicate_type=predicate_type,
                predicate=predicate if isinstance(predicate, dict) else {"value": predicate},
                statement=c.claims,
                signature=signers[0],
            )
        )
    for wanted in checks.policy.attestations:
        if any(a.predicate_type == wanted for a in good):
            continue
        if wanted not in seen:
            raise MissingAttestationError(
                f"{pinned}: no attestation of type {wanted!r} (the trust policy requires one)"
            )
        raise combined(pinned, len(errors.get(wanted, [])), errors.get(wanted, []), wanted)
    return tuple(good)


def check_age(policy: TrustPolicy, artifact: VerifiedArtifact) -> None:
    """Refuses ``artifact`` when it is past the policy's maximum age (``TrustPolicy.age_from``).

    Raises:
        StaleSignatureError: Too old, or no signature has a usable time.
    """
    limit = policy.max_signature_age
    if limit is None:
        return
    from policysupply._internal import freeze

    newest = policy.age_from(artifact)
    k = policy.threshold
    who = "trusted signature" if k == 1 else f"signature of {k} distinct trusted signers"
    if newest is None:
        witness = any(s.witnessed_at is not None for s in artifact.signatures)
        raise StaleSignatureError(
            f"{artifact.reference}: no {who} carries a signing time its signer "
            f"produced, and the policy refuses material older than {limit}"
            + (
                " (a transparency log or timestamp time proves only that a signature "
                "existed by then: anyone can log an old signature again)"
                if witness
                else ""
            )
            + "; sign with policysupply (signed signed-at claim) or keyless, or set "
            "insecure_witnessed_age=True in the trust policy (CLI: --insecure-witnessed-age) "
            "to judge such signatures by their verified log or timestamp time"
        )
    now = dt.datetime.now(dt.timezone.utc)
    age = now - newest
    if freeze.expired(newest, limit, now):
        raise StaleSignatureError(
            f"{artifact.reference}: newest {who} is from "
            f"{newest.isoformat()}, {age - limit} past the {limit} limit; re-sign "
            "current material, or suspect a replay of old signatures"
        )


def with_native(
    policy: TrustPolicy, artifact: VerifiedArtifact, bundle: Bundle, native: NativeTrust
) -> VerifiedArtifact:
    """``artifact`` plus the bundle's verified OPA-native signatures (raises if they fail)."""
    result = bundle.verify_native(native)
    extra = tuple(
        VerifiedSignature(
            key_id=s.key_id,
            scheme="opa-native",
            annotations={},
            public_key=None
            if isinstance(native.keys[s.key_id].material, bytes)
            else native.keys[s.key_id].material,
        )
        for s in result.signatures
    )
    together = _sealed_artifact(
        artifact.reference, artifact.signatures + extra, artifact.attestations
    )
    if not artifact.signatures:
        check_age(policy, together)
    return together


class OneEach:
    """Verified signatures, one per act of signing, in the order first seen.

    The same signature stored twice, or its malleated ECDSA twin ``(r, n - s)``
    (a different byte string, and a new transparency-log entry, that anyone
    can make), is one signature: it is listed, counted and reported once,
    with the earliest time any copy was witnessed.
    """

    def __init__(self) -> None:
        self._by_id: dict[str, VerifiedSignature] = {}

    def add(self, signature_id: str, s: VerifiedSignature) -> None:
        first = self._by_id.get(signature_id)
        if first is None:
            self._by_id[signature_id] = s
            return
        # Each copy's lower bound is sound on its own; the lower one holds for both.
        bounds = [t for t in (first.signed_at, s.signed_at) if t is not None]
        merged = attrs.evolve(first, signed_at=min(bounds) if bounds else None)
        if s.witnessed_at is not None and (
            first.witnessed_at is None or s.witnessed_at < first.witnessed_at
        ):
            merged = attrs.evolve(merged, witnessed_at=s.witnessed_at, log_index=s.log_index)
        self._by_id[signature_id] = merged

    def __bool__(self) -> bool:
        return bool(self._by_id)

    def __iter__(self) -> Iterator[VerifiedSignature]:
        return iter(self._by_id.values())

    def values(self) -> tuple[VerifiedSignature, ...]:
        return tuple(self._by_id.values())


def combined(
    ref: Reference, count: int, errors: list[VerificationError], what: str = "signature"
) -> VerificationError:
    """One error for several failed signatures: the most precise type they share.

    Signatures by unknown keys are noise when others fail for a clearer
    reason (an expired certificate, a claim), so those decide the type.
    """
    plain = [e for e in errors if type(e) is UntrustedSignatureError]
    telling = [e for e in errors if type(e) is not UntrustedSignatureError] or plain
    if not telling:
        return UntrustedSignatureError(f"{ref}: no trusted {what} found")
    if telling is plain and all("trusted key" in str(e) for e in plain):
        return UntrustedSignatureError(
            f"{ref}: {count} {what}(s) found, none by a trusted key or identity"
        )
    kind: type[VerificationError] = VerificationError
    for cls in type(telling[0]).__mro__:
        if issubclass(cls, VerificationError) and all(isinstance(e, cls) for e in telling):
            kind = cls
            break
    label = what if what == "signature" else f"attestation {what!r}"
    return kind(f"{ref}: no trusted {label}: " + "; ".join(dict.fromkeys(map(str, telling))))
