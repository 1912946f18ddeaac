"""The trust policy: what a signature must satisfy (re-exported by ``policysupply.verifier``)."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import attrs

from policysupply._internal import keys
from policysupply.errors import VerificationError
from policysupply.identity import Identity

if TYPE_CHECKING:
    from policysupply._verified import VerifiedArtifact
    from policysupply.native import NativeTrust

__all__ = ["DockerReferenceCheck", "TrustPolicy"]

DockerReferenceCheck = Literal["repository", "exact", "any", "off"]


def _load_keys(value: Iterable[Any]) -> tuple[Any, ...]:
    out = []
    for item in value:
        if isinstance(item, (str, os.PathLike)) and not str(item).lstrip().startswith("-----"):
            path = Path(item)
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise VerificationError(f"cannot read public key {path}: {exc.strerror}") from None
            out.append(keys.load_public_key(data, what=str(path)))
        elif isinstance(item, (bytes, str)):
            raw = item.encode() if isinstance(item, str) else item
            out.append(keys.load_public_key(raw, what="public key"))
        else:
            out.append(item)  # already a cryptography public key
    return tuple(out)


def _strings(value: str | Iterable[str]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(str(v) for v in value)


def _identities(value: Identity | Iterable[Identity]) -> tuple[Identity, ...]:
    items = (value,) if isinstance(value, Identity) else tuple(value)
    for item in items:
        if not isinstance(item, Identity):
            raise VerificationError(f"identities must be Identity values, not {item!r}")
    return items


@attrs.frozen(kw_only=True)
class TrustPolicy:
    """What a signature must satisfy to be trusted.

    Attributes:
        keys: Trusted public keys: PEM bytes/str, paths to ``cosign.pub``
            files, or ``cryptography`` public keys.
        identities: Trusted keyless signers (:class:`~policysupply.identity.Identity`):
            OIDC issuer, subject (exact or full-match regex), certificate claims.
        threshold: How many *distinct* trusted signers must have signed: each
            key and each identity counts once (k of the n keys + identities).
        annotations: Claims every counted signature must carry (``cosign -a``).
        docker_reference: How the repository a signature names (the legacy
            payload's ``docker-reference``; a bundle statement's subject
            ``name``) must match the verified reference: ``repository``
            (default: same repository path, any host, so it survives
            mirroring), ``exact`` (host too), or ``any`` (not checked, as
            cosign; ``off`` is the same). With ``repository`` or ``exact`` a
            signature that names no repository is refused: cosign 3 signs
            images with a statement that names only the digest, so its
            signatures need ``any`` (bind the repository another way, e.g. a
            required annotation ``cosign sign -a``).
        max_signature_age: Refuse material whose newest trusted signature is
            older than this (freeze protection: an attacker replaying old but
            valid signatures). The age is measured from a lower bound on the
            signing time that only the signer could produce (see
            :attr:`VerifiedSignature.signed_at`). A transparency log's or
            timestamp authority's time never counts: it proves only that a
            signature existed by then, and anyone can log an old signature
            again. Material without a signer-produced time is refused while
            this is set, unless ``insecure_witnessed_age`` is set.
        insecure_witnessed_age: Opt out of the rule above for signatures with
            no signer-produced time (cosign 3's ``sign --key``): judge their
            age by the earliest verified log or timestamp time instead. Anyone
            who logs an old signature again (or its malleated ECDSA twin)
            renews that time, so this stops only replays by attackers who do
            not bother to; prefer signing with policysupply (a signed
            ``signed-at`` claim) or keyless. Never affects signatures that
            carry a signer-produced time, nor rollback ordering.
        require_tlog: Whether signatures need a verified transparency log entry.
            ``None`` (default): keyless signatures do, key signatures do not
            (cosign's ``--insecure-ignore-tlog`` for keys). ``True``: every
            signature does (needs the trusted root). ``False``: none does;
            keyless signatures then need an RFC 3161 timestamp for their time.
        require_sct: Whether Fulcio certificates need a valid embedded SCT
            (cosign's default; ``False`` is ``--insecure-ignore-sct``).
        attestations: Predicate types (e.g. ``https://slsa.dev/provenance/v1``)
            of which a trusted signer must have attested the artifact.
        native: Also require a valid OPA-native signature (``/.signatures.json``)
            inside policy bundles (:meth:`Verifier.verify_bundle`), under
            this :class:`~policysupply.native.NativeTrust`. With no ``keys``
            and no ``identities`` it is the only requirement: bundles then
            need no cosign signature (and :meth:`Verifier.verify` refuses
            everything, having nothing to check images with).
        allowed_registries: When set, only artifacts under these hosts or
            ``host/repository`` prefixes (whole path components; a local
            layout's repository has no host) verify; anything else fails
            before any lookup with a ``ClaimMismatchError``.
    """

    keys: tuple[Any, ...] = attrs.field(default=(), converter=_load_keys)
    identities: tuple[Identity, ...] = attrs.field(default=(), converter=_identities)
    threshold: int = 1
    annotations: Mapping[str, str] = attrs.field(factory=dict)
    docker_reference: DockerReferenceCheck = "repository"
    max_signature_age: dt.timedelta | None = None
    insecure_witnessed_age: bool = False
    require_tlog: bool | None = None
    require_sct: bool = True
    attestations: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    native: NativeTrust | None = None
    allowed_registries: tuple[str, ...] = attrs.field(default=(), converter=_strings)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], **overrides: Any) -> TrustPolicy:
        """Reads a trust policy file (YAML, or JSON when the name ends in ``.json``).

        The format (keys, identities, threshold, annotations, docker_reference,
        attestations, allowed_registries, signing_time.max_age,
        transparency_log, require_sct) is described by the JSON Schema shipped
        as ``policysupply/schemas/trust-policy.schema.json``; key paths are
        relative to the file. Unknown fields are refused, so a typo cannot
        drop a requirement.

        Args:
            path: The policy file.
            **overrides: Fields to set instead of the file's (e.g. ``threshold=2``).

        Raises:
            VerificationError: The file is unreadable or malformed, or a key
                in it cannot be read.
        """
        from policysupply._internal import policy_file

        fields = policy_file.read(path)
        fields.update(overrides)
        return cls(**fields)

    def allows_location(self, name: str) -> bool:
        """Whether ``name`` (``host/repository``) is under an allowed registry (or none are set)."""
        if not self.allowed_registries:
            return True
        for entry in self.allowed_registries:
            prefix = entry.rstrip("/")
            if name == prefix or name.startswith(prefix + "/"):
                return True
        return False

    def __attrs_post_init__(self) -> None:
        if not self.keys and not self.identities and self.native is None:
            raise VerificationError(
                "a trust policy needs at least one key or identity (or an OPA-native trust)"
            )
        n = len(self.keys) + len(self.identities)
        if n == 0 and (self.annotations or self.attestations):
            raise VerificationError(
                "required annotations and attestations are checked on cosign signatures, "
                "and this policy trusts no key or identity to check them with (OPA-native "
                "tokens carry neither)"
            )
        if n == 0 and self.threshold != 1:
            raise VerificationError(
                "threshold counts cosign signers, and this policy trusts none; "
                "set NativeTrust.threshold for OPA-native signatures"
            )
        if n and not 1 <= self.threshold <= n:
            raise VerificationError(
                f"threshold {self.threshold} cannot be met by {n} trusted signer(s) "
                f"({len(self.keys)} key(s), {len(self.identities)} identity(ies))"
            )

    def key_ids(self) -> dict[str, Any]:
        """Trusted keys by key id."""
        return {keys.key_id(k): k for k in self.keys}

    def age_from(self, artifact: VerifiedArtifact) -> dt.datetime | None:
        """The time ``artifact``'s age counts from under this policy (freeze limits).

        :meth:`VerifiedArtifact.age_from` with this policy's
        ``insecure_witnessed_age`` and ``threshold``.
        """
        return artifact.age_from(witnessed=self.insecure_witnessed_age, threshold=self.threshold)
