"""Verifying cosign signatures against an explicit trust policy, before anything loads.

Both storage schemes are read: cosign's legacy ``sha256-<hex>.sig`` tag
(cosign 2.x, and ours by default) and Sigstore bundles attached as OCI
referrers (cosign 3.x); signatures made with keys and keyless (Fulcio
certificate + transparency log) alike, and attestations (``.att`` and bundle
referrers). Plain files verify against a Sigstore bundle (``verify_blob``).
Verification raises; it never returns ``False``.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import json
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import attrs

from policysupply._internal import cosign, keys, oci
from policysupply._internal import sigstore_bundle as sb
from policysupply._internal.oci import Reference
from policysupply.errors import (
    ClaimMismatchError,
    DigestMismatchError,
    FutureSigningTimeError,
    IdentityMismatchError,
    MissingAttestationError,
    NoSignatureError,
    NotFoundError,
    RegistryError,
    StaleSignatureError,
    ThresholdNotMetError,
    UntrustedSignatureError,
    VerificationError,
)
from policysupply.identity import Identity
from policysupply.registry import Registry
from policysupply.trust_state import TrustState

if TYPE_CHECKING:
    from policysupply._internal.keyless import TrustMaterial
    from policysupply.bundle import Bundle
    from policysupply.native import NativeTrust
    from policysupply.signer import SigstoreBundle

__all__ = [
    "TrustPolicy",
    "VerifiedArtifact",
    "VerifiedAttestation",
    "VerifiedBundle",
    "VerifiedSignature",
    "Verifier",
]

# cosign's legacy keyless annotations (as policysupply.signer writes them)
_ANN_CERTIFICATE = "dev.sigstore.cosign/certificate"
_ANN_CHAIN = "dev.sigstore.cosign/chain"
_ANN_BUNDLE = "dev.sigstore.cosign/bundle"
_ANN_TIMESTAMP = "dev.sigstore.cosign/rfc3161timestamp"
_DSSE_ENVELOPE = "application/vnd.dsse.envelope.v1+json"

DockerReferenceCheck = Literal["repository", "exact", "any", "off"]

# How far ahead of our clock a signed signing time may be: clocks differ by
# seconds to minutes; a time further ahead is false, and would outlive a
# freeze limit and block TrustState's "signing time must not go back" rule.
MAX_SIGNED_TIME_SKEW = dt.timedelta(minutes=5)


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


@attrs.frozen
class _Candidate:
    scheme: str
    message: bytes  # the exact signed bytes
    signature: bytes
    claims: bytes  # payload (legacy) or in-toto statement (bundle)
    certificate: bytes | None = None  # DER, keyless only
    chain: tuple[bytes, ...] = ()
    tlog: tuple[sb.TlogEntry, ...] = ()
    timestamps: tuple[bytes, ...] = ()
    envelope: sb.Envelope | None = None
    envelope_blob: bytes | None = None  # cosign .att layer bytes
    artifact_sha256: bytes | None = None  # what a hashedrekord entry hashes
    attestation: bool = False


def _envelope_candidates(
    scheme: str, parsed: sb.ParsedBundle, env: sb.Envelope, *, attestation: bool = False
) -> list[_Candidate]:
    """One candidate per signature on a Sigstore bundle's DSSE envelope ``env``.

    Each carries ``parsed``'s certificate, chain, log entries and timestamps.
    """
    return [
        _Candidate(
            scheme,
            env.pae(),
            sig,
            env.payload,
            certificate=parsed.certificate,
            chain=parsed.chain,
            tlog=parsed.tlog_entries,
            timestamps=parsed.timestamps,
            envelope=env,
            attestation=attestation,
        )
        for sig in env.signatures
    ]


class Verifier:
    """Checks signatures on artifacts against a :class:`TrustPolicy`."""

    def __init__(self, policy: TrustPolicy, *, trusted_root: Any = None) -> None:
        """Creates a verifier; nothing is read or fetched until it is needed.

        Args:
            policy: What counts as a trusted signature.
            trusted_root: For keyless signatures and transparency logs: a
                Sigstore ``trusted_root.json`` path (offline), ``"staging"``,
                a ``sigstore.models.TrustedRoot``, or ``None`` for the
                public-good root through sigstore's TUF client (network,
                cached). When given, key signatures carrying log entries or
                RFC 3161 timestamps (cosign 3's default ``sign --key``) get
                their verified time as ``signed_at``; with ``None`` key
                signatures are checked against the key alone (no network)
                unless the policy sets ``require_tlog``.

        Raises:
            PolicySupplyError: The policy trusts identities, needs transparency
                logs or was given a trusted root, and sigstore-python (the
                ``keyless`` extra) is not installed.
        """
        if policy.identities or policy.require_tlog or trusted_root is not None:
            from policysupply._internal import extras

            extras.require("sigstore", "verifying keyless signatures or transparency logs")
        self.policy = policy
        self._keys = policy.key_ids()
        self._trusted_root = trusted_root
        self._trust: TrustMaterial | None = None

    def _trust_material(self) -> TrustMaterial:
        if self._trust is None:
            from policysupply._internal.keyless import TrustMaterial

            self._trust = TrustMaterial.load(self._trusted_root)
        return self._trust

    # -- discovery ------------------------------------------------------------

    def _legacy(self, registry: Registry, repo: str, digest: str) -> list[_Candidate]:
        try:
            data, _ = registry.get_manifest(f"{repo}:{cosign.sig_tag(digest)}")
        except NotFoundError:
            return []
        manifest = oci.parse_manifest(data, what=cosign.sig_tag(digest))
        out = []
        for layer in (manifest.get("layers") or [])[: cosign.MAX_LAYERS]:
            desc = oci.Descriptor.from_json(layer)
            b64 = desc.annotations.get(cosign.ANN_SIGNATURE)
            if desc.media_type != cosign.SIMPLESIGNING or not b64:
                continue
            try:
                signature = base64.b64decode(b64, validate=True)
            except ValueError:
                continue
            payload = registry.get_blob(repo, desc.digest, limit=1 << 20)
            out.append(
                _Candidate(
                    "legacy",
                    payload,
                    signature,
                    payload,
                    artifact_sha256=hashlib.sha256(payload).digest(),
                    **_keyless_annotations(desc.annotations),
                )
            )
        return out

    def _legacy_attestations(self, registry: Registry, repo: str, digest: str) -> list[_Candidate]:
        tag = cosign.sig_tag(digest)[: -len(".sig")] + ".att"
        try:
            data, _ = registry.get_manifest(f"{repo}:{tag}")
        except NotFoundError:
            return []
        out: list[_Candidate] = []
        for layer in (oci.parse_manifest(data, what=tag).get("layers") or [])[: cosign.MAX_LAYERS]:
            desc = oci.Descriptor.from_json(layer)
            if desc.media_type != _DSSE_ENVELOPE:
                continue
            blob = registry.get_blob(repo, desc.digest, limit=1 << 20)
            try:
                env = sb.Envelope.from_json(json.loads(blob))
            except (ValueError, RecursionError, VerificationError):
                continue
            if env.payload_type != cosign.INTOTO:
                continue
            extra = _keyless_annotations(desc.annotations)
            out.extend(
                _Candidate(
                    "legacy",
                    env.pae(),
                    sig,
                    env.payload,
                    envelope=env,
                    envelope_blob=blob,
                    attestation=True,
                    **extra,
                )
                for sig in env.signatures
            )
        return out

    def _bundles(self, registry: Registry, repo: str, digest: str) -> list[_Candidate]:
        out: list[_Candidate] = []
        for desc in registry.referrers(f"{repo}@{digest}"):
            if not (desc.artifact_type or "").startswith(cosign.BUNDLE_PREFIX):
                continue
            # Anyone who can push may add referrers: one that is gone or
            # malformed is skipped, as cosign does, and cannot fail the rest.
            try:
                data, _ = registry.get_manifest(f"{repo}@{desc.digest}")
            except NotFoundError:
                continue
            try:
                layers = oci.parse_manifest(data, what=desc.digest).get("layers") or []
            except RegistryError:
                continue
            if len(layers) != 1 or not str(layers[0].get("mediaType", "")).startswith(
                cosign.BUNDLE_PREFIX
            ):
                continue
            layer = oci.Descriptor.from_json(layers[0])
            raw = registry.get_blob(repo, layer.digest, limit=1 << 20)
            try:
                parsed = sb.parse_bundle(raw, what=f"bundle {layer.digest}")
            except VerificationError:
                continue  # malformed: cosign skips these too
            env = parsed.content
            if not isinstance(env, sb.Envelope) or env.payload_type != cosign.INTOTO:
                continue  # cosign's OCI path only takes DSSE statements
            try:
                predicate_type = json.loads(env.payload).get("predicateType")
            except (ValueError, RecursionError, AttributeError):
                predicate_type = None
            out.extend(
                _envelope_candidates(
                    "bundle", parsed, env, attestation=predicate_type != cosign.SIGN_PREDICATE
                )
            )
        return out

    # -- claims ---------------------------------------------------------------

    def _claims_ok(
        self, c: _Candidate, ref: Reference, digest: str
    ) -> tuple[bool, str, dict[str, str]]:
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
            match = _subjects_naming(doc, digest)
            if doc.get("predicateType") != cosign.SIGN_PREDICATE:
                return False, "bundle is an attestation, not a signature", {}
            if not match:
                return False, f"bundle statement does not name {digest}", {}
            annotations = match[0].get("annotations") or {}
            # The subject's name is the repository, as policysupply signs (cosign 3: none).
            names = [m["name"] for m in match if isinstance(m.get("name"), str) and m["name"]]
        why = _reference_mismatch(self.policy.docker_reference, names, ref)
        if why is not None:
            return False, why, {}
        return True, "", self._annotations_ok(annotations, keyless=c.certificate is not None)

    def _annotations_ok(self, annotations: object, *, keyless: bool) -> dict[str, str]:
        """A signature's signed annotations, once the policy's claims on them hold.

        A keyless signature's claimed time never exceeds its log or timestamp
        time (see ``_lower_bound``), so a future claim is ignored there; for a
        key signature the claim is the signing time, and a future one refused.

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
            when = _signed_time(signed_at)
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

    def _signer_checks(self, c: _Candidate) -> list[VerifiedSignature]:
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
            signature=c.signature,
            message=c.message,
            tlog_entries=c.tlog,
            timestamps=c.timestamps,
            artifact_sha256=c.artifact_sha256,
            envelope=c.envelope,
            envelope_blob=c.envelope_blob,
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

    def _key_checks(self, c: _Candidate) -> list[VerifiedSignature]:
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
                    signature=c.signature,
                    tlog_entries=c.tlog,
                    timestamps=c.timestamps,
                    artifact_sha256=c.artifact_sha256,
                    envelope=c.envelope,
                    envelope_blob=c.envelope_blob,
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

    def _signature_id(self, c: _Candidate, s: VerifiedSignature) -> str:
        """One identity for a signature and its malleated twin (see ``keys.signature_identity``)."""
        if s.keyless and c.certificate is not None:
            from policysupply._internal import keyless

            key = keyless.load_certificate(c.certificate).public_key()
        else:
            key = self._keys[s.key_id]
        return f"{s.signer}|" + keys.signature_identity(key, c.signature, c.message)

    # -- API ------------------------------------------------------------------

    def verify(
        self, registry: Registry, ref: str | Reference, *, attestations: bool | None = None
    ) -> VerifiedArtifact:
        """Verifies the signatures on any OCI artifact (policy images, container images).

        ``ref`` is resolved to a digest once; every lookup after that uses it.

        Args:
            registry: Where the artifact lives.
            ref: Tag or digest reference.
            attestations: Also verify attestations and expose them on the
                result. ``None`` (default): only when the policy requires some.
                The policy's required attestations are verified whatever this
                says: ``False`` cannot turn that requirement off.

        Raises:
            NoSignatureError: The artifact has no signatures at all (or no
                attestation of a required predicate type).
            UntrustedSignatureError: Signatures exist, but none by a trusted
                key or identity (``IdentityMismatchError`` when a valid
                certificate names another identity).
            CertificateError: A keyless certificate does not chain to the
                trusted root (``CertificateExpiredError``: signed outside its
                validity).
            TransparencyLogError: A keyless signature's log entry is missing
                or does not match.
            VerificationError: Trusted signatures exist but fail a claim (digest,
                docker-reference, required annotations): e.g. a signature copied
                from another image.
            ThresholdNotMetError: Fewer distinct trusted signers than the threshold.
        """
        r = Reference.parse(ref) if isinstance(ref, str) else ref
        self._check_location(registry, r)
        if not self.policy.keys and not self.policy.identities:
            raise VerificationError(
                f"{r}: this trust policy trusts only OPA-native signatures, which live "
                "inside policy bundles (verify_bundle); it has no key or identity to "
                "check other artifacts with"
            )
        digest = registry.resolve(r)
        pinned = Reference(host=registry.host or r.host, repository=r.repository, digest=digest)
        return self._verify_pinned(registry, pinned, attestations)

    def _check_location(self, registry: Registry, r: Reference) -> None:
        """Refuses, before any lookup, what is not under an allowed registry of the policy."""
        host = registry.host or r.host
        name = f"{host}/{r.repository}" if host else r.repository
        if not self.policy.allows_location(name):
            raise ClaimMismatchError(
                f"{name} is not under an allowed registry of the trust policy "
                f"(allowed: {', '.join(self.policy.allowed_registries)})"
            )

    def _verify_pinned(
        self, registry: Registry, pinned: Reference, attestations: bool | None
    ) -> VerifiedArtifact:
        """:meth:`verify` of a digest that exists: discovery and every check.

        One lookup per storage scheme for the subject, shared by every key
        and identity of the policy.
        """
        r, digest = pinned, str(pinned.digest)
        # Both storage schemes are looked up at once: on a remote registry each
        # is two round trips, and they do not depend on each other.
        bundles = _pool().submit(self._bundles, registry, r.repository, digest)
        try:
            candidates = self._legacy(registry, r.repository, digest)
        except BaseException:
            bundles.exception()  # wait: no lookup keeps running behind an error
            raise
        candidates += bundles.result()
        statements = [c for c in candidates if c.attestation]
        candidates = [c for c in candidates if not c.attestation]
        if not candidates:
            raise NoSignatureError(f"{pinned}: no signatures found (neither .sig tag nor bundle)")
        good = _OneEach()
        errors: list[VerificationError] = []
        for c in candidates:
            try:
                signers = self._signer_checks(c)
            except VerificationError as exc:
                errors.append(exc)
                continue
            try:
                ok, why, annotations = self._claims_ok(c, pinned, digest)
            except ClaimMismatchError as exc:
                ok, why, kind = False, str(exc), type(exc)
            else:
                kind = ClaimMismatchError
            if not ok:
                errors.append(kind(f"{signers[0].signer[:28]}…: {why}"))
                continue
            claimed = _signed_time(annotations.get(cosign.ANN_SIGNED_AT))
            for s in signers:
                good.add(
                    self._signature_id(c, s),
                    attrs.evolve(s, annotations=annotations, signed_at=_lower_bound(s, claimed)),
                )
        if not good:
            raise _combined(pinned, len(candidates), errors)
        distinct = {s.signer for s in good}
        if len(distinct) < self.policy.threshold:
            raise ThresholdNotMetError(
                f"{pinned}: {len(distinct)} distinct trusted signer(s) signed, "
                f"{self.policy.threshold} required"
            )
        verified_attestations: tuple[VerifiedAttestation, ...] = ()
        # What the policy requires is always checked; ``attestations=False``
        # only skips reading the ones it does not require.
        if attestations or self.policy.attestations:
            statements += self._legacy_attestations(registry, r.repository, digest)
            verified_attestations = self._attestations(pinned, statements)
        artifact = _sealed_artifact(pinned, good.values(), verified_attestations)
        self._check_age(artifact)
        return artifact

    def _attestations(
        self, pinned: Reference, statements: list[_Candidate]
    ) -> tuple[VerifiedAttestation, ...]:
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
                if not _subjects_naming(doc, str(pinned.digest)):
                    raise VerificationError(f"attestation statement does not name {pinned.digest}")
                signers = self._signer_checks(c)
            except VerificationError as exc:
                errors.setdefault(predicate_type, []).append(exc)
                continue
            one = (predicate_type, self._signature_id(c, signers[0]))
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
        for wanted in self.policy.attestations:
            if any(a.predicate_type == wanted for a in good):
                continue
            if wanted not in seen:
                raise MissingAttestationError(
                    f"{pinned}: no attestation of type {wanted!r} (the trust policy requires one)"
                )
            raise _combined(pinned, len(errors.get(wanted, [])), errors.get(wanted, []), wanted)
        return tuple(good)

    def verify_blob(
        self,
        data: bytes | str | os.PathLike[str],
        *,
        bundle: SigstoreBundle | bytes | str | os.PathLike[str],
    ) -> VerifiedArtifact:
        """Verifies a plain file against its Sigstore bundle, under the same policy.

        For bundles from ``cosign sign-blob --bundle``, ``sigstore sign`` or
        :meth:`Signer.sign_blob <policysupply.signer.Signer.sign_blob>`:
        keyless or key-signed, ``messageSignature`` or DSSE content (whose
        in-toto statement must name the file's SHA-256).

        Args:
            data: The file's bytes, or a path to it.
            bundle: A :class:`~policysupply.signer.SigstoreBundle`, its JSON,
                or a path to a ``.sigstore.json`` file.

        Returns:
            The result; ``reference`` names the file (no host) and its digest.

        Raises:
            DigestMismatchError: The bundle records another file's digest.
            ClaimMismatchError: The policy requires annotations the bundle does
                not sign (a ``messageSignature`` signs none; a DSSE statement's
                subject may carry them), or a signed time is malformed or in
                the future (``FutureSigningTimeError``).
            MissingAttestationError: The policy requires attestations: a file's
                bundle carries none, so such a policy cannot verify files.
            VerificationError: As :meth:`verify` (and its subclasses).
        """
        name, content = _blob(data)
        if self.policy.attestations:
            raise MissingAttestationError(
                f"{name}: the trust policy requires attestations "
                f"({', '.join(self.policy.attestations)}), and a Sigstore bundle for a file "
                "carries none; verify files with a policy that does not require them"
            )
        parsed = _parse_bundle_arg(bundle)
        sha = hashlib.sha256(content).digest()
        digest = "sha256:" + sha.hex()
        ref = Reference(host="", repository=name, digest=digest)
        if isinstance(parsed.content, sb.MessageSignature):
            ms = parsed.content
            if ms.digest is not None and (ms.algorithm != "sha256" or ms.digest != sha):
                raise DigestMismatchError(
                    f"{name}: the bundle signs content with digest "
                    f"{ms.algorithm}:{ms.digest.hex()}, not this file ({digest})"
                )
            statement: object = {}
            candidates = [
                _Candidate(
                    "blob",
                    content,
                    ms.signature,
                    b"",
                    certificate=parsed.certificate,
                    chain=parsed.chain,
                    tlog=parsed.tlog_entries,
                    timestamps=parsed.timestamps,
                    artifact_sha256=sha,
                )
            ]
        else:
            env = parsed.content
            try:
                statement = json.loads(env.payload)
            except (ValueError, RecursionError):
                statement = {}
            named = _subjects_naming(statement, digest)
            if env.payload_type != cosign.INTOTO or not named:
                raise DigestMismatchError(f"{name}: the bundle's statement does not name {digest}")
            statement = named[0].get("annotations") or {}
            candidates = _envelope_candidates("blob", parsed, env)
        good = _OneEach()
        errors: list[VerificationError] = []
        for c in candidates:
            try:
                signers = self._signer_checks(c)
            except VerificationError as exc:
                errors.append(exc)
                continue
            # The same claims as for images: a messageSignature signs none, so a
            # policy requiring annotations refuses it.
            try:
                annotations = self._annotations_ok(statement, keyless=c.certificate is not None)
            except ClaimMismatchError as exc:
                errors.append(type(exc)(f"{signers[0].signer[:28]}…: {exc}"))
                continue
            claimed = _signed_time(annotations.get(cosign.ANN_SIGNED_AT))
            for s in signers:
                good.add(
                    self._signature_id(c, s),
                    attrs.evolve(s, annotations=annotations, signed_at=_lower_bound(s, claimed)),
                )
        if not good:
            raise _combined(ref, len(candidates), errors)
        distinct = {s.signer for s in good}
        if len(distinct) < self.policy.threshold:
            raise ThresholdNotMetError(
                f"{name}: {len(distinct)} distinct trusted signer(s) signed, "
                f"{self.policy.threshold} required"
            )
        artifact = _sealed_artifact(ref, good.values())
        self._check_age(artifact)
        return artifact

    def _check_age(self, artifact: VerifiedArtifact) -> None:
        limit = self.policy.max_signature_age
        if limit is None:
            return
        from policysupply._internal import freeze

        newest = self.policy.age_from(artifact)
        k = self.policy.threshold
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

    def verify_bundle(
        self,
        registry: Registry,
        ref: str | Reference,
        *,
        state: TrustState | None = None,
    ) -> VerifiedBundle:
        """Verifies a policy image and returns its bundle, read only once verification passed.

        The manifest is fetched once (by tag or digest) and its digest is
        computed from the bytes received; the signatures are verified for
        that digest, and the bundle layer the same manifest names streams in
        meanwhile, checked against its digest and size. A tag moved in
        between cannot swap content. Nothing from the layer is parsed or
        returned unless verification passes; if it fails, the download is
        cancelled and the verification error raised. With ``state``
        the result must also move forward from what was last accepted for
        this reference (``host/repository:tag``), and is recorded there.

        Args:
            registry: Where the policy image lives.
            ref: Tag or digest reference.
            state: Rollback protection; ``None`` skips it.

        Raises:
            VerificationError: As :meth:`verify` (and its subclasses).
            RollbackError: Older or conflicting material than ``state`` accepted.
            RegistryError: The image cannot be pulled.
            BundleError: The verified image does not hold a valid bundle.
            SignedContentError: With ``TrustPolicy.native``: the bundle's files
                differ from what its OPA-native signature lists (and the other
                errors of :meth:`Bundle.verify_native`: no, untrusted, forged or
                mis-scoped native signature).
        """
        from policysupply.bundle import Bundle, Limits
        from policysupply.registry import DownloadCancelled

        r = Reference.parse(ref) if isinstance(ref, str) else ref
        self._check_location(registry, r)
        if not self.policy.keys and not self.policy.identities:
            # An OPA-native token names files and a scope, never a repository.
            why = _reference_mismatch(self.policy.docker_reference, [], r)
            if why is not None:
                raise ClaimMismatchError(
                    f"{r}: this trust policy trusts only OPA-native signatures, which name no "
                    f"repository, and its docker_reference={self.policy.docker_reference!r} "
                    'needs one; set docker_reference="any" and bind the bundle with the '
                    "native signature's scope (NativeTrust(scope=...)) instead"
                )
        # One GET by tag (or digest): the body is hashed here (and checked
        # against the registry's Docker-Content-Digest), so the digest that is
        # verified is the digest of the very manifest that names the layer.
        manifest_bytes, _ = registry.get_manifest(r)
        digest = oci.sha256_digest(manifest_bytes)
        if r.digest and r.digest != digest:
            raise DigestMismatchError(f"{r}: manifest hashes to {digest}; refusing it")
        pinned = Reference(host=registry.host or r.host, repository=r.repository, digest=digest)
        limits = Limits()
        layer: oci.Descriptor | None = None
        not_a_bundle: RegistryError | None = None
        try:
            manifest = oci.parse_manifest(manifest_bytes, what=str(pinned))
            layer = oci.bundle_layer(manifest, what=str(pinned))
            if layer.size > limits.max_compressed:
                raise RegistryError(
                    f"{pinned}: bundle layer is {layer.size} bytes, over the limit of "
                    f"{limits.max_compressed}"
                )
        except RegistryError as exc:
            layer, not_a_bundle = None, exc  # reported only once the signatures verified
        # The layer streams into a hasher while the signatures are looked up
        # and checked. Nothing is parsed or returned before they pass; if they
        # fail, the download is cancelled and its bytes dropped.
        cancel = threading.Event()
        download = (
            _pool().submit(registry.layer_bytes, r.repository, layer, cancel=cancel)
            if layer is not None
            else None
        )
        native = self.policy.native
        try:
            if self.policy.keys or self.policy.identities:
                artifact = self._verify_pinned(registry, pinned, None)
            else:  # OPA-native signatures only: checked below, before the bundle is parsed
                artifact = _sealed_artifact(pinned, ())
        except BaseException:
            cancel.set()
            if download is not None:
                download.exception()  # wait: no download keeps running behind an error
            raise
        if not_a_bundle is not None or download is None:
            raise not_a_bundle or RegistryError(f"{pinned}: not a policy image")
        try:
            tarball = download.result()
        except DownloadCancelled:  # pragma: no cover - only cancelled on failure above
            raise RegistryError(f"{pinned}: bundle download was cancelled") from None
        bundle = Bundle.from_bytes(
            tarball, limits=limits, native=native if not artifact.signatures else None
        )
        if native is not None:
            artifact = self._with_native(artifact, bundle, native)
        if state is not None:
            stream = Reference(host=registry.host or r.host, repository=r.repository, tag=r.tag)
            state.accept(
                str(stream),
                digest=artifact.digest,
                revision=bundle.manifest.revision,
                # As many signers as the policy requires must vouch for the time
                # (one stolen key re-signing an older release today cannot); a
                # witnessed time never counts here.
                signed_at=artifact.age_from(threshold=self.policy.threshold),
            )
        return VerifiedBundle(
            artifact=artifact,
            bundle=bundle,
            _tarball=tarball,
            _token=_Seal(artifact, bundle, tarball),
        )

    def _with_native(
        self, artifact: VerifiedArtifact, bundle: Bundle, native: NativeTrust
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
        combined = _sealed_artifact(
            artifact.reference, artifact.signatures + extra, artifact.attestations
        )
        if not artifact.signatures:
            self._check_age(combined)
        return combined


def _reference_mismatch(mode: DockerReferenceCheck, names: list[str], ref: Reference) -> str | None:
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


def _subjects_naming(statement: object, digest: str) -> list[dict[str, Any]]:
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


class _OneEach:
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


def _lower_bound(s: VerifiedSignature, claimed: dt.datetime | None) -> dt.datetime | None:
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


def _signed_time(value: object) -> dt.datetime | None:
    """Parses a signed RFC 3339 UTC time (``...Z``); None if absent or malformed."""
    if not isinstance(value, str) or not value.endswith("Z"):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value[:-1])
    except ValueError:
        return None
    return parsed.replace(tzinfo=dt.timezone.utc) if parsed.tzinfo is None else None


_POOL: Any = None
_POOL_LOCK = threading.Lock()


def _pool() -> Any:
    """A small shared thread pool for concurrent registry lookups."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            from concurrent.futures import ThreadPoolExecutor

            # Each verification may hold two workers (the bundle referrers
            # lookup, a layer download) while its caller's thread does the rest.
            _POOL = ThreadPoolExecutor(max_workers=16, thread_name_prefix="policysupply-verify")
        return _POOL


def _keyless_annotations(annotations: Mapping[str, str]) -> dict[str, Any]:
    """Certificate, chain, Rekor entry and timestamp from cosign's legacy layer annotations.

    Key-signed layers carry no certificate, but may carry a Rekor entry and
    an RFC 3161 timestamp (cosign ``sign --key`` with a log or a TSA).
    Malformed parts are dropped (verification then fails for lack of them).
    """
    out: dict[str, Any] = {}
    rekor = annotations.get(_ANN_BUNDLE)
    if rekor:
        with contextlib.suppress(VerificationError):
            out["tlog"] = (sb.TlogEntry.from_cosign_annotation(rekor),)
    stamp = annotations.get(_ANN_TIMESTAMP)
    if stamp:
        try:
            raw = json.loads(stamp)["SignedRFC3161Timestamp"]
            out["timestamps"] = (base64.b64decode(raw, validate=True),)
        except (ValueError, RecursionError, KeyError, TypeError):
            pass
    cert = annotations.get(_ANN_CERTIFICATE)
    if not cert:
        return out  # a key signature: no need to load the keyless machinery
    from policysupply._internal import keyless

    ders = keyless.pem_chain(cert)
    if not ders:
        return {}
    out["certificate"] = ders[0]
    out["chain"] = tuple(keyless.pem_chain(annotations.get(_ANN_CHAIN) or ""))
    return out


def _combined(
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


def _blob(data: bytes | str | os.PathLike[str]) -> tuple[str, bytes]:
    if isinstance(data, bytes):
        return "blob", data
    p = Path(data)
    try:
        return p.name, p.read_bytes()
    except OSError as exc:
        raise VerificationError(f"cannot read {p}: {exc.strerror}") from None


def _parse_bundle_arg(bundle: Any) -> sb.ParsedBundle:
    from policysupply.signer import SigstoreBundle

    if isinstance(bundle, SigstoreBundle):
        return sb.parse_bundle(bundle.data)
    if isinstance(bundle, bytes):
        return sb.parse_bundle(bundle)
    if isinstance(bundle, str) and bundle.lstrip().startswith("{"):
        return sb.parse_bundle(bundle)
    p = Path(bundle)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise VerificationError(f"cannot read bundle {p}: {exc.strerror}") from None
    return sb.parse_bundle(raw, what=str(p))
