"""The checks on one found signature, as pure functions over bytes already fetched.

Nothing here reads a registry (``policysupply._internal.cosign_storage`` found
the material). The only outside input is the Sigstore trust material
(trusted root), which :class:`Checks` asks its caller for when a keyless
signature or a log entry needs it; the cryptography itself is in
``policysupply._internal.keys`` and ``policysupply._internal.keyless``.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from policysupply._internal import cosign, keys
from policysupply._internal.cosign_storage import Candidate
from policysupply._internal.oci import Reference
from policysupply._trust_policy import DockerReferenceCheck, TrustPolicy
from policysupply._verified import VerifiedSignature
from policysupply.errors import (
    ClaimMismatchError,
    FutureSigningTimeError,
    IdentityMismatchError,
    RegistryError,
    UntrustedSignatureError,
)

if TYPE_CHECKING:
    from policysupply._internal.keyless import Evidence, TrustMaterial

# How far ahead of our clock a signed signing time may be: clocks differ by
# seconds to minutes; a time further ahead is false, and would outlive a
# freeze limit and block TrustState's "signing time must not go back" rule.
MAX_SIGNED_TIME_SKEW = dt.timedelta(minutes=5)


class Checks:
    """The checks a trust policy puts on each signature: signer, cryptography, claims.

    Args:
        policy: The trust policy.
        trusted_root: What the verifier was given as its trusted root (only
            whether one was given matters here).
        trust_material: Returns the Sigstore trust material, loading it on
            first use.
    """

    def __init__(
        self,
        policy: TrustPolicy,
        *,
        trusted_root: object,
        trust_material: Callable[[], TrustMaterial],
    ) -> None:
        self.policy = policy
        self._keys = policy.key_ids()
        self._trusted_root = trusted_root
        self._trust_material = trust_material

    # -- claims ---------------------------------------------------------------

    def claims(self, c: Candidate, ref: Reference, digest: str) -> tuple[bool, str, dict[str, str]]:
        try:
            doc = json.loads(c.claims)
        except (ValueError, RecursionError):
            return False, "signed payload is not JSON", {}
        if not isinstance(doc, dict):
            return False, "signed payload is not a JSON object", {}
        if c.scheme == "legacy":
            try:
                critical = doc["critical"]
                signed_digest = critical["image"]["docker-manifest-digest"]
                signed_ref = critical["identity"]["docker-reference"]
                kind = critical["type"]
            except (KeyError, TypeError):
                return False, "signed payload lacks cosign's critical fields", {}
            annotations = doc.get("optional") or {}
            if kind != cosign.SIGNATURE_TYPE:
                return False, f"signed payload has type {kind!r}", {}
            if signed_digest != digest:
                return False, f"signature is for {signed_digest}, not {digest}", {}
            names = [signed_ref] if isinstance(signed_ref, str) and signed_ref else []
        else:
            match = subjects_naming(doc, digest)
            if doc.get("predicateType") != cosign.SIGN_PREDICATE:
                return False, "bundle is an attestation, not a signature", {}
            if not match:
                return False, f"bundle statement does not name {digest}", {}
            annotations = match[0].get("annotations") or {}
            # The subject's name is the repository, as policysupply signs (cosign 3: none).
            names = [m["name"] for m in match if isinstance(m.get("name"), str) and m["name"]]
        why = reference_mismatch(self.policy.docker_reference, names, ref)
        if why is not None:
            return False, why, {}
        return True, "", self.annotations(annotations, keyless=c.certificate is not None)

    def annotations(self, annotations: object, *, keyless: bool) -> dict[str, str]:
        """A signature's signed annotations, once the policy's claims on them hold.

        A keyless signature's claimed time never exceeds its log or timestamp
        time (see :func:`lower_bound`), so a future claim is ignored there;
        for a key signature the claim is the signing time, and a future one
        is refused.

        Raises:
            ClaimMismatchError: A required annotation is missing or differs, or
                the signed time is malformed (``FutureSigningTimeError``: a key
                signature's, more than :data:`MAX_SIGNED_TIME_SKEW` ahead of our clock).
        """
        if not isinstance(annotations, dict):
            annotations = {}
        for k, v in self.policy.annotations.items():
            if annotations.get(k) != v:
                raise ClaimMismatchError(f"required annotation {k}={v!r} missing")
        signed_at = annotations.get(cosign.ANN_SIGNED_AT)
        if signed_at is not None:
            when = signed_time(signed_at)
            if when is None:
                raise ClaimMismatchError(
                    f"signed time {str(signed_at)[:40]!r} is not an RFC 3339 UTC time"
                )
            latest = dt.datetime.now(dt.timezone.utc) + MAX_SIGNED_TIME_SKEW
            if when > latest and not keyless:
                raise FutureSigningTimeError(
                    f"signed time {when.isoformat()} is in the future (more than "
                    f"{MAX_SIGNED_TIME_SKEW} ahead of this clock); a false time would outlive "
                    "max_signature_age and block later releases: fix the signer's clock and "
                    "re-sign"
                )
        return {str(k): str(v) for k, v in annotations.items()}

    # -- one candidate ----------------------------------------------------------

    def signers(self, c: Candidate) -> list[VerifiedSignature]:
        """The trusted signers behind one signature (crypto, log, certificate, identity).

        Claims are not checked here. Returns the signer(s) with empty annotations.

        Raises:
            VerificationError: Not by a trusted signer (the most precise subclass).
        """
        if c.certificate is None:
            return self._key_checks(c)
        from policysupply._internal import keyless

        if not self.policy.identities:
            raise UntrustedSignatureError("keyless signature, but the policy trusts no identity")
        check = keyless.verify_keyless(
            trust=self._trust_material(),
            certificate=c.certificate,
            chain_hints=c.chain,
            message=c.message,
            evidence=_evidence(c),
            require_tlog=self.policy.require_tlog is not False,
            require_sct=self.policy.require_sct,
        )
        reasons = []
        for identity in self.policy.identities:
            why = identity.mismatch(check.identity)
            if why is None:
                cert = keyless.load_certificate(check.certificate_der)
                return [
                    VerifiedSignature(
                        key_id=keys.key_id(cert.public_key()),
                        scheme=c.scheme,
                        annotations={},
                        # Fulcio issued the certificate for a fresh key at its start:
                        # no signature by that key is older. The log's time is only
                        # evidence that the signature existed by then.
                        signed_at=check.identity.not_before,
                        witnessed_at=check.signed_time,
                        identity=identity,
                        subject=check.identity.subject,
                        issuer=check.identity.issuer,
                        log_index=check.log_index,
                    )
                ]
            reasons.append(why)
        raise IdentityMismatchError(
            f"certificate for {check.identity.subject!r} (issuer {check.identity.issuer!r}) "
            "matches no trusted identity: " + "; ".join(reasons)
        )

    def _key_checks(self, c: Candidate) -> list[VerifiedSignature]:
        """The trusted keys behind one signature, with its witnessed time.

        The witnessed time comes only from verified material: the log entry's
        signed entry timestamp or an RFC 3161 timestamp, checked against the
        trusted root. That needs trust material: with ``require_tlog`` (which
        also demands a matching log entry), or when a trusted root was given
        and the signature carries log entries or timestamps. Otherwise
        nothing beyond the key is read, and nothing is fetched. It is never
        a signing time (``signed_at``): only the signed claim is.
        """
        found = []
        for kid, key in self._keys.items():
            if not keys.verify(key, c.signature, c.message):
                continue
            witnessed_at = None
            log_index = None
            if self.policy.require_tlog or (
                self._trusted_root is not None and (c.tlog or c.timestamps)
            ):
                from policysupply._internal import keyless

                check = keyless.verify_key_times(
                    trust=self._trust_material(),
                    key=key,
                    evidence=_evidence(c),
                    require_tlog=bool(self.policy.require_tlog),
                )
                witnessed_at, log_index = check.signed_time, check.log_index
            found.append(
                VerifiedSignature(
                    key_id=kid,
                    scheme=c.scheme,
                    annotations={},
                    witnessed_at=witnessed_at,
                    log_index=log_index,
                    public_key=key,
                )
            )
        if not found:
            raise UntrustedSignatureError("not signed by a trusted key")
        return found

    def signature_id(self, c: Candidate, s: VerifiedSignature) -> str:
        """One identity for a signature and its malleated twin (see ``keys.signature_identity``)."""
        if s.keyless and c.certificate is not None:
            from policysupply._internal import keyless

            key = keyless.load_certificate(c.certificate).public_key()
        else:
            key = self._keys[s.key_id]
        return f"{s.signer}|" + keys.signature_identity(key, c.signature, c.message)


def _evidence(c: Candidate) -> Evidence:
    """What a stored signature offers the log and timestamp checks."""
    from policysupply._internal.keyless import Evidence

    return Evidence(
        signature=c.signature,
        tlog_entries=c.tlog,
        timestamps=c.timestamps,
        artifact_sha256=c.artifact_sha256,
        envelope=c.envelope,
        envelope_blob=c.envelope_blob,
    )


def reference_mismatch(mode: DockerReferenceCheck, names: list[str], ref: Reference) -> str | None:
    """Why no repository a signature names satisfies ``mode`` for ``ref``; None if one does.

    A signature that names no repository never satisfies ``repository`` or
    ``exact``: the check is refused, never skipped.
    """
    if mode in ("any", "off"):
        return None
    wanted = ref.name if mode == "exact" else ref.repository
    if not names:
        return (
            f"signature names no repository, and the trust policy's "
            f"docker_reference={mode!r} needs it to name {wanted!r} (cosign 3 signs only "
            "the digest); to accept signatures that name no repository, set "
            'docker_reference="any" (CLI: --docker-reference any) and bind the '
            "repository otherwise, e.g. with a required annotation"
        )
    for name in names:
        got = name
        if mode == "repository":
            try:
                got = Reference.parse(name).repository
            except RegistryError:
                got = ""
        if got == wanted:
            return None
    return f"signature names {names[0]!r}, not {wanted!r}"


def subjects_naming(statement: object, digest: str) -> list[dict[str, Any]]:
    """The subjects of an in-toto statement that name ``digest`` (``sha256:<hex>``).

    Signed statements come from anyone who can push: a statement that is not
    an object, a ``subject`` that is not a list, or entries that are not
    objects with a ``digest`` object name nothing.
    """
    if not isinstance(statement, dict):
        return []
    subjects = statement.get("subject")
    if not isinstance(subjects, list):
        return []
    hexd = digest.split(":", 1)[1]
    return [
        s
        for s in subjects
        if isinstance(s, dict)
        and isinstance(s.get("digest"), dict)
        and s["digest"].get("sha256") == hexd
    ]


def lower_bound(s: VerifiedSignature, claimed: dt.datetime | None) -> dt.datetime | None:
    """The signer-produced lower bound on when ``s`` was made (see ``VerifiedSignature``).

    Key signatures: the signed claim. Keyless: the certificate's start, or a
    signed claim that is later but not after a log or timestamp saw the
    signature (such a claim is false, and cannot make it look newer).
    """
    if not s.keyless:
        return claimed
    start = s.signed_at
    if claimed is None or start is None or claimed <= start:
        return start
    if s.witnessed_at is not None and claimed > s.witnessed_at:
        return start
    return claimed


def signed_time(value: object) -> dt.datetime | None:
    """Parses a signed RFC 3339 UTC time (``...Z``); None if absent or malformed."""
    if not isinstance(value, str) or not value.endswith("Z"):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value[:-1])
    except ValueError:
        return None
    return parsed.replace(tzinfo=dt.timezone.utc) if parsed.tzinfo is None else None
