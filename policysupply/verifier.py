"""Verifying cosign signatures against an explicit trust policy, before anything loads.

Both storage schemes are read: cosign's legacy ``sha256-<hex>.sig`` tag
(cosign 2.x, and ours by default) and Sigstore bundles attached as OCI
referrers (cosign 3.x); signatures made with keys and keyless (Fulcio
certificate + transparency log) alike, and attestations (``.att`` and bundle
referrers). Plain files verify against a Sigstore bundle (``verify_blob``).
Verification raises; it never returns ``False``.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from policysupply import _verdict
from policysupply._checks import Checks, reference_mismatch, subjects_naming
from policysupply._internal import cosign_storage as storage
from policysupply._internal import oci
from policysupply._internal.cosign_storage import Candidate
from policysupply._internal.oci import Reference
from policysupply._trust_policy import DockerReferenceCheck as DockerReferenceCheck
from policysupply._trust_policy import TrustPolicy
from policysupply._verified import (
    VerifiedArtifact,
    VerifiedAttestation,
    VerifiedBundle,
    VerifiedSignature,
    _Seal,
    _sealed_artifact,
)
from policysupply.errors import (
    ClaimMismatchError,
    DigestMismatchError,
    MissingAttestationError,
    NoSignatureError,
    RegistryError,
    VerificationError,
)
from policysupply.registry import Registry

if TYPE_CHECKING:
    from policysupply._internal import sigstore_bundle as sb
    from policysupply._internal.keyless import TrustMaterial
    from policysupply.signer import SigstoreBundle
    from policysupply.trust_state import TrustState

__all__ = [
    "TrustPolicy",
    "VerifiedArtifact",
    "VerifiedAttestation",
    "VerifiedBundle",
    "VerifiedSignature",
    "Verifier",
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
        self._trusted_root = trusted_root
        self._trust: TrustMaterial | None = None
        self._checks = Checks(
            policy, trusted_root=trusted_root, trust_material=self._trust_material
        )

    def _trust_material(self) -> TrustMaterial:
        if self._trust is None:
            from policysupply._internal.keyless import TrustMaterial

            self._trust = TrustMaterial.load(self._trusted_root)
        return self._trust

    def _without_age_limit(self) -> Verifier:
        """This verifier without ``max_signature_age``, sharing its trust material.

        For a record of where a stream stood (a watch seeding its rollback
        protection from a stored bundle): an expired signature is still a
        trusted signer's.
        """
        if self.policy.max_signature_age is None:
            return self
        import attrs

        other = Verifier(
            attrs.evolve(self.policy, max_signature_age=None), trusted_root=self._trusted_root
        )
        other._checks = Checks(
            other.policy, trusted_root=self._trusted_root, trust_material=self._trust_material
        )
        return other

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
        bundles = _pool().submit(storage.read_bundles, registry, r.repository, digest)
        try:
            candidates = storage.read_legacy_signatures(registry, r.repository, digest)
        except BaseException:
            bundles.exception()  # wait: no lookup keeps running behind an error
            raise
        candidates += bundles.result()
        statements = [c for c in candidates if c.attestation]
        candidates = [c for c in candidates if not c.attestation]
        if not candidates:
            raise NoSignatureError(f"{pinned}: no signatures found (neither .sig tag nor bundle)")
        signatures = _verdict.trusted_signatures(
            self._checks, pinned, candidates, claims=True, label=pinned
        )
        verified_attestations: tuple[VerifiedAttestation, ...] = ()
        # What the policy requires is always checked; ``attestations=False``
        # only skips reading the ones it does not require.
        if attestations or self.policy.attestations:
            statements += storage.read_legacy_attestations(registry, r.repository, digest)
            verified_attestations = _verdict.attestations(self._checks, pinned, statements)
        return _verdict.conclude(self.policy, pinned, signatures, verified_attestations)

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
        from policysupply._internal import sigstore_bundle as sb

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
            signed: object = {}  # a messageSignature signs no annotations
            candidates = [
                Candidate(
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
                named = subjects_naming(json.loads(env.payload), digest)
            except (ValueError, RecursionError):
                named = []
            if env.payload_type != storage.INTOTO or not named:
                raise DigestMismatchError(f"{name}: the bundle's statement does not name {digest}")
            signed = named[0].get("annotations") or {}
            candidates = storage.envelope_candidates("blob", parsed, env)
        signatures = _verdict.trusted_signatures(
            self._checks, ref, candidates, claims=False, label=name, blob_annotations=signed
        )
        return _verdict.conclude(self.policy, ref, signatures)

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
            why = reference_mismatch(self.policy.docker_reference, [], r)
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
            artifact = _verdict.with_native(self.policy, artifact, bundle, native)
        stream = Reference(host=registry.host or r.host, repository=r.repository, tag=r.tag)
        _verdict.accept(self.policy, state, stream, artifact, bundle.manifest.revision)
        return VerifiedBundle(
            artifact=artifact,
            bundle=bundle,
            _tarball=tarball,
            _token=_Seal(artifact, bundle, tarball),
        )


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


def _blob(data: bytes | str | os.PathLike[str]) -> tuple[str, bytes]:
    if isinstance(data, bytes):
        return "blob", data
    p = Path(data)
    try:
        return p.name, p.read_bytes()
    except OSError as exc:
        raise VerificationError(f"cannot read {p}: {exc.strerror}") from None


def _parse_bundle_arg(bundle: Any) -> sb.ParsedBundle:
    from policysupply._internal import sigstore_bundle as sb
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
