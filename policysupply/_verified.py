"""What verification produces: sealed results only the Verifier creates.

Re-exported by ``policysupply.verifier``, where they are documented.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from policysupply._internal import oci
from policysupply._internal.oci import Reference
from policysupply.identity import Identity

if TYPE_CHECKING:
    from policysupply.bundle import Bundle

__all__ = [
    "VerifiedArtifact",
    "VerifiedAttestation",
    "VerifiedBundle",
    "VerifiedSignature",
]


@attrs.frozen(kw_only=True)
class VerifiedSignature:
    """One signature that passed every check.

    Attributes:
        key_id: The trusted key that made it.
        scheme: ``legacy`` or ``bundle``.
        annotations: The signed annotations.
        signed_at: A lower bound on the signing time that only the signer
            could produce, or None: for key signatures the signed
            ``dev.policysupply/signed-at`` claim; for keyless signatures the
            Fulcio certificate's start of validity (its key did not exist
            before), or the signed claim when it is later but not after the
            log or timestamp saw the signature. Freeze limits and rollback
            ordering use this time only.
        witnessed_at: The earliest verified transparency-log or RFC 3161
            timestamp time: the signature existed by then (an upper bound on
            the signing time). Anyone can log an old signature again, so this
            never makes a signature look newer; it is evidence only.
        identity: The trusted identity that matched, for keyless signatures.
        subject: The certificate's subject (first SAN), for keyless signatures.
        issuer: The certificate's OIDC issuer, for keyless signatures.
        log_index: The transparency log entry's index, when one was verified.
        public_key: The trusted public key that verified it (key signatures;
            ``None`` for keyless ones and shared secrets).
    """

    key_id: str
    scheme: str
    annotations: Mapping[str, str]
    signed_at: dt.datetime | None = None
    witnessed_at: dt.datetime | None = None
    identity: Identity | None = None
    subject: str | None = None
    issuer: str | None = None
    log_index: int | None = None
    public_key: Any = attrs.field(default=None, eq=False, repr=False)

    @property
    def keyless(self) -> bool:
        """Whether a Fulcio certificate (not a key) made this signature."""
        return self.identity is not None

    @property
    def signer(self) -> str:
        """The trusted signer it counts for: a key id, or ``identity:<description>``."""
        return f"identity:{self.identity.describe()}" if self.identity else self.key_id


@attrs.frozen(kw_only=True)
class VerifiedAttestation:
    """An in-toto attestation about the artifact, signed by a trusted signer.

    Attributes:
        predicate_type: The statement's predicate type URI.
        predicate: The predicate (parsed JSON).
        statement: The exact signed in-toto statement bytes.
        signature: Who signed it, and how.
    """

    predicate_type: str
    predicate: Mapping[str, Any]
    statement: bytes = attrs.field(repr=False)
    signature: VerifiedSignature


class _Seal:
    """Issued by the Verifier for exactly one set of field values.

    ``attrs.evolve`` copies private fields, so a plain token would let
    ``evolve(verified, bundle=other)`` wrap unverified content; a seal only
    accepts the very objects it was issued for.
    """

    __slots__ = ("_values",)

    def __init__(self, *values: object) -> None:
        self._values = values

    @staticmethod
    def check(token: object, what: str, *values: object) -> None:
        ok = (
            isinstance(token, _Seal)
            and len(token._values) == len(values)
            and all(a is b for a, b in zip(token._values, values, strict=True))
        )
        if not ok:
            raise TypeError(f"{what} is created by Verifier only, and cannot be altered")


def _sealed_artifact(
    reference: Reference,
    signatures: tuple[VerifiedSignature, ...],
    attestations: tuple[VerifiedAttestation, ...] = (),
) -> VerifiedArtifact:
    return VerifiedArtifact(
        reference=reference,
        signatures=signatures,
        attestations=attestations,
        _token=_Seal(reference, signatures, attestations),
    )


@attrs.frozen(kw_only=True)
class VerifiedArtifact:
    """An artifact digest whose signatures satisfied a trust policy.

    Only :class:`Verifier` creates these.

    Attributes:
        reference: The verified artifact, pinned to its digest (for a plain
            file: its name, no host, and its SHA-256).
        signatures: The signatures that counted.
        attestations: Attestations verified from trusted signers (when the
            policy requires some, or ``verify(..., attestations=True)``).
    """

    reference: Reference
    signatures: tuple[VerifiedSignature, ...]
    attestations: tuple[VerifiedAttestation, ...] = ()
    _token: object = attrs.field(alias="_token", repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        _Seal.check(
            self._token, "VerifiedArtifact", self.reference, self.signatures, self.attestations
        )

    @property
    def digest(self) -> str:
        """The verified manifest digest."""
        return str(self.reference.digest)

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Distinct trusted keys that signed."""
        return tuple(sorted({s.key_id for s in self.signatures}))

    @property
    def signers(self) -> tuple[str, ...]:
        """Distinct trusted signers (key ids and ``identity:...``) that signed."""
        return tuple(sorted({s.signer for s in self.signatures}))

    def predicates(self, predicate_type: str) -> tuple[Mapping[str, Any], ...]:
        """The verified predicates of one type."""
        return tuple(a.predicate for a in self.attestations if a.predicate_type == predicate_type)

    @property
    def signed_at(self) -> dt.datetime | None:
        """The newest signer-produced signing time among the counted signatures.

        Each is a lower bound (:attr:`VerifiedSignature.signed_at`); log and
        timestamp times never count.
        """
        times = [s.signed_at for s in self.signatures if s.signed_at is not None]
        return max(times) if times else None

    def age_from(self, *, witnessed: bool = False, threshold: int = 1) -> dt.datetime | None:
        """The time the artifact's age counts from, for freeze limits (``max_signature_age``).

        Each distinct signer's newest signer-produced time (its signatures'
        :attr:`~VerifiedSignature.signed_at`); of those, the ``threshold``-th
        newest: as many signers as the policy requires must vouch for the
        material being current, so one stolen key re-signing an old release
        cannot make it look fresh. With ``witnessed`` (the policy's
        ``insecure_witnessed_age``), a signature without a signer-produced
        time counts from its verified log or timestamp time instead. The
        verifier, the bundle server and the gate all judge age from this
        time, with one rule: too old from this time plus the limit on.

        Args:
            witnessed: Let signatures without a signer-produced time count
                from their ``witnessed_at``.
            threshold: How many distinct signers must have signed by then
                (the policy's ``threshold``).

        Returns:
            The time, or ``None`` when fewer than ``threshold`` signers have one.
        """
        newest: dict[str, dt.datetime] = {}
        for s in self.signatures:
            t = s.signed_at if s.signed_at is not None or not witnessed else s.witnessed_at
            if t is not None and (s.signer not in newest or t > newest[s.signer]):
                newest[s.signer] = t
        times = sorted(newest.values(), reverse=True)
        return times[threshold - 1] if 0 < threshold <= len(times) else None

    def _repr_html_(self) -> str:
        import html

        rows = "".join(
            f"<tr><td>{html.escape(s.signer if s.keyless else s.key_id[:19] + '…')}</td>"
            f"<td>{s.scheme}</td></tr>"
            for s in self.signatures
        )
        return (
            f"<b>Verified</b> <code>{html.escape(str(self.reference))}</code>"
            f"<table><tr><th>key</th><th>scheme</th></tr>{rows}</table>"
        )


@attrs.frozen(kw_only=True)
class VerifiedBundle:
    """A policy bundle whose image digest was verified before it was pulled.

    Only :class:`Verifier` creates these; loaders accept nothing else.

    Attributes:
        artifact: The verification result.
        bundle: The bundle, pulled by the verified digest.
    """

    artifact: VerifiedArtifact
    bundle: Bundle
    _tarball: bytes = attrs.field(alias="_tarball", repr=False, eq=False)
    _token: object = attrs.field(alias="_token", repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        _Seal.check(self._token, "VerifiedBundle", self.artifact, self.bundle, self._tarball)

    @property
    def reference(self) -> Reference:
        """The verified image reference (by digest)."""
        return self.artifact.reference

    @property
    def tarball(self) -> bytes:
        """The bundle layer exactly as the registry served it.

        These are the bytes whose digest the signed manifest names (checked
        as they streamed in); :attr:`bundle` was read from them. A bundle
        built by ``opa build`` or any other tool keeps its own bytes here,
        which :meth:`Bundle.to_bytes` (a deterministic re-encoding) would not.
        """
        return self._tarball

    @property
    def tarball_digest(self) -> str:
        """``sha256:<hex>`` of :attr:`tarball` (the layer digest in the signed manifest)."""
        return oci.sha256_digest(self._tarball)

    def _repr_html_(self) -> str:
        return self.artifact._repr_html_() + self.bundle._repr_html_()

    def extract(self, directory: str | os.PathLike[str]) -> Path:
        """Writes the bundle's files into ``directory`` atomically, for file-based loaders.

        See :func:`policysupply.loaders.extract_verified`.

        Raises:
            LoadError: An entry is not a safe relative path, or writing failed.
        """
        from policysupply._internal.extraction import write_tree

        return write_tree(self.bundle.entries(), directory)
