"""Verifying cosign signatures against an explicit trust policy, before anything loads.

Both storage schemes are read: cosign's legacy ``sha256-<hex>.sig`` tag
(cosign 2.x, and ours by default) and Sigstore bundles attached as OCI
referrers (cosign 3.x). Verification raises; it never returns ``False``.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import attrs

from policysupply._internal import cosign, keys, oci
from policysupply._internal.oci import Reference
from policysupply.bundle import Bundle
from policysupply.errors import (
    NoSignatureError,
    NotFoundError,
    RegistryError,
    StaleSignatureError,
    ThresholdNotMetError,
    UntrustedSignatureError,
    VerificationError,
)
from policysupply.registry import Registry
from policysupply.trust_state import TrustState

__all__ = ["TrustPolicy", "VerifiedArtifact", "VerifiedBundle", "VerifiedSignature", "Verifier"]

DockerReferenceCheck = Literal["repository", "exact", "off"]


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


@attrs.frozen(kw_only=True)
class TrustPolicy:
    """What a signature must satisfy to be trusted.

    Attributes:
        keys: Trusted public keys: PEM bytes/str, paths to ``cosign.pub``
            files, or ``cryptography`` public keys.
        threshold: How many *distinct* trusted keys must have signed.
        annotations: Claims every counted signature must carry (``cosign -a``).
        docker_reference: How the signed ``docker-reference`` must match the
            verified reference: ``repository`` (same repository path, any host:
            survives mirroring), ``exact`` (host too), or ``off`` (as cosign).
        max_signature_age: Refuse material whose newest trusted signature is
            older than this (freeze protection: an attacker replaying old but
            valid signatures). Needs a signed time: our ``signed-at``
            annotation or, for keyless signatures, the transparency-log time;
            material without one is refused while this is set.
    """

    keys: tuple[Any, ...] = attrs.field(converter=_load_keys)
    threshold: int = 1
    annotations: Mapping[str, str] = attrs.field(factory=dict)
    docker_reference: DockerReferenceCheck = "repository"
    max_signature_age: dt.timedelta | None = None

    def __attrs_post_init__(self) -> None:
        if not self.keys:
            raise VerificationError("a trust policy needs at least one key")
        if not 1 <= self.threshold <= len(self.keys):
            raise VerificationError(
                f"threshold {self.threshold} cannot be met by {len(self.keys)} trusted key(s)"
            )

    def key_ids(self) -> dict[str, Any]:
        """Trusted keys by key id."""
        return {keys.key_id(k): k for k in self.keys}


@attrs.frozen(kw_only=True)
class VerifiedSignature:
    """One signature that passed every check.

    Attributes:
        key_id: The trusted key that made it.
        scheme: ``legacy`` or ``bundle``.
        annotations: The signed annotations.
        signed_at: The signed signing time, if the signature carries one.
    """

    key_id: str
    scheme: str
    annotations: Mapping[str, str]
    signed_at: dt.datetime | None = None


_TOKEN = object()


@attrs.frozen(kw_only=True)
class VerifiedArtifact:
    """An artifact digest whose signatures satisfied a trust policy.

    Only :class:`Verifier` creates these.

    Attributes:
        reference: The verified artifact, pinned to its digest.
        signatures: The signatures that counted.
    """

    reference: Reference
    signatures: tuple[VerifiedSignature, ...]
    _token: object = attrs.field(alias="_token", repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        if self._token is not _TOKEN:
            raise TypeError("VerifiedArtifact is created by Verifier only")

    @property
    def digest(self) -> str:
        """The verified manifest digest."""
        return str(self.reference.digest)

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Distinct trusted keys that signed."""
        return tuple(sorted({s.key_id for s in self.signatures}))

    @property
    def signed_at(self) -> dt.datetime | None:
        """The newest signed signing time among the counted signatures."""
        times = [s.signed_at for s in self.signatures if s.signed_at is not None]
        return max(times) if times else None

    def _repr_html_(self) -> str:
        import html

        rows = "".join(
            f"<tr><td>{html.escape(s.key_id[:19])}…</td><td>{s.scheme}</td></tr>"
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
    _token: object = attrs.field(alias="_token", repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        if self._token is not _TOKEN:
            raise TypeError("VerifiedBundle is created by Verifier only")

    @property
    def reference(self) -> Reference:
        """The verified image reference (by digest)."""
        return self.artifact.reference

    def _repr_html_(self) -> str:
        return self.artifact._repr_html_() + self.bundle._repr_html_()


@attrs.frozen
class _Candidate:
    scheme: str
    message: bytes  # the exact signed bytes
    signature: bytes
    claims: bytes  # payload (legacy) or in-toto statement (bundle)


class Verifier:
    """Checks signatures on artifacts against a :class:`TrustPolicy`."""

    def __init__(self, policy: TrustPolicy) -> None:
        """Args: policy: what counts as a trusted signature."""
        self.policy = policy
        self._keys = policy.key_ids()

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
            out.append(_Candidate("legacy", payload, signature, payload))
        return out

    def _bundles(self, registry: Registry, repo: str, digest: str) -> list[_Candidate]:
        out: list[_Candidate] = []
        for desc in registry.referrers(f"{repo}@{digest}"):
            if not (desc.artifact_type or "").startswith(cosign.BUNDLE_PREFIX):
                continue
            data, _ = registry.get_manifest(f"{repo}@{desc.digest}")
            layers = oci.parse_manifest(data, what=desc.digest).get("layers") or []
            if len(layers) != 1 or not str(layers[0].get("mediaType", "")).startswith(
                cosign.BUNDLE_PREFIX
            ):
                continue
            layer = oci.Descriptor.from_json(layers[0])
            raw = registry.get_blob(repo, layer.digest, limit=1 << 20)
            try:
                env = json.loads(raw)["dsseEnvelope"]
                statement = base64.b64decode(env["payload"], validate=True)
                payload_type = env["payloadType"]
                sigs = [base64.b64decode(s["sig"], validate=True) for s in env["signatures"]]
            except (ValueError, KeyError, TypeError):
                continue  # not a DSSE bundle: cosign skips these too
            if payload_type != cosign.INTOTO:
                continue
            message = cosign.pae(payload_type, statement)
            out.extend(_Candidate("bundle", message, s, statement) for s in sigs)
        return out

    # -- claims ---------------------------------------------------------------

    def _claims_ok(
        self, c: _Candidate, ref: Reference, digest: str
    ) -> tuple[bool, str, dict[str, str]]:
        try:
            doc = json.loads(c.claims)
        except ValueError:
            return False, "signed payload is not JSON", {}
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
            mode = self.policy.docker_reference
            if mode != "off":
                wanted = ref.name if mode == "exact" else ref.repository
                got = str(signed_ref)
                if mode == "repository":
                    try:
                        got = Reference.parse(got).repository if got else ""
                    except RegistryError:
                        got = ""
                if got != wanted:
                    return False, f"signature names {signed_ref!r}, not {wanted!r}", {}
        else:
            subjects = doc.get("subject") or []
            hexd = digest.split(":", 1)[1]
            match = [s for s in subjects if (s.get("digest") or {}).get("sha256") == hexd]
            if doc.get("predicateType") != cosign.SIGN_PREDICATE:
                return False, "bundle is an attestation, not a signature", {}
            if not match:
                return False, f"bundle statement does not name {digest}", {}
            annotations = match[0].get("annotations") or {}
        if not isinstance(annotations, dict):
            annotations = {}
        for k, v in self.policy.annotations.items():
            if annotations.get(k) != v:
                return False, f"required annotation {k}={v!r} missing", {}
        signed_at = annotations.get(cosign.ANN_SIGNED_AT)
        if signed_at is not None and _signed_time(signed_at) is None:
            return False, f"signed time {str(signed_at)[:40]!r} is not an RFC 3339 UTC time", {}
        return True, "", {str(k): str(v) for k, v in annotations.items()}

    # -- API ------------------------------------------------------------------

    def verify(self, registry: Registry, ref: str | Reference) -> VerifiedArtifact:
        """Verifies the signatures on any OCI artifact (policy images, container images).

        ``ref`` is resolved to a digest once; every lookup after that uses it.

        Raises:
            NoSignatureError: The artifact has no signatures at all.
            UntrustedSignatureError: Signatures exist, but none by a trusted key.
            VerificationError: Trusted signatures exist but fail a claim (digest,
                docker-reference, required annotations): e.g. a signature copied
                from another image.
            ThresholdNotMetError: Fewer distinct trusted keys than the threshold.
        """
        r = Reference.parse(ref) if isinstance(ref, str) else ref
        digest = registry.resolve(r)
        pinned = Reference(host=registry.host or r.host, repository=r.repository, digest=digest)
        candidates = self._legacy(registry, r.repository, digest)
        candidates += self._bundles(registry, r.repository, digest)
        if not candidates:
            raise NoSignatureError(f"{pinned}: no signatures found (neither .sig tag nor bundle)")
        good: list[VerifiedSignature] = []
        failures: list[str] = []
        trusted_hit = False
        for c in candidates:
            for kid, key in self._keys.items():
                if not keys.verify(key, c.signature, c.message):
                    continue
                trusted_hit = True
                ok, why, annotations = self._claims_ok(c, pinned, digest)
                if ok:
                    good.append(
                        VerifiedSignature(
                            key_id=kid,
                            scheme=c.scheme,
                            annotations=annotations,
                            signed_at=_signed_time(annotations.get(cosign.ANN_SIGNED_AT)),
                        )
                    )
                else:
                    failures.append(f"key {kid[:19]}…: {why}")
        if not trusted_hit:
            raise UntrustedSignatureError(
                f"{pinned}: {len(candidates)} signature(s) found, none by a trusted key"
            )
        distinct = {s.key_id for s in good}
        if not good:
            raise VerificationError(
                f"{pinned}: trusted signatures failed their claims: " + "; ".join(failures)
            )
        if len(distinct) < self.policy.threshold:
            raise ThresholdNotMetError(
                f"{pinned}: {len(distinct)} distinct trusted key(s) signed, "
                f"{self.policy.threshold} required"
            )
        artifact = VerifiedArtifact(reference=pinned, signatures=tuple(good), _token=_TOKEN)
        self._check_age(artifact)
        return artifact

    def _check_age(self, artifact: VerifiedArtifact) -> None:
        limit = self.policy.max_signature_age
        if limit is None:
            return
        newest = artifact.signed_at
        if newest is None:
            raise StaleSignatureError(
                f"{artifact.reference}: no trusted signature carries a signed time, and the "
                f"policy refuses material older than {limit}; sign with policysupply "
                "(signed-at annotation) or keyless (transparency-log time)"
            )
        age = dt.datetime.now(dt.timezone.utc) - newest
        if age > limit:
            raise StaleSignatureError(
                f"{artifact.reference}: newest trusted signature is from "
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
        """Verifies a policy image, then pulls its bundle **by the verified digest**.

        A tag moved between verification and pull cannot swap content: the
        pull uses the digest, and every byte is digest-checked. With ``state``
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
        """
        r = Reference.parse(ref) if isinstance(ref, str) else ref
        artifact = self.verify(registry, r)
        bundle = registry.pull(artifact.reference)
        if state is not None:
            stream = Reference(host=registry.host or r.host, repository=r.repository, tag=r.tag)
            state.accept(
                str(stream),
                digest=artifact.digest,
                revision=bundle.manifest.revision,
                signed_at=artifact.signed_at,
            )
        return VerifiedBundle(artifact=artifact, bundle=bundle, _token=_TOKEN)


def _signed_time(value: object) -> dt.datetime | None:
    """Parses a signed RFC 3339 UTC time (``...Z``); None if absent or malformed."""
    if not isinstance(value, str) or not value.endswith("Z"):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value[:-1])
    except ValueError:
        return None
    return parsed.replace(tzinfo=dt.timezone.utc) if parsed.tzinfo is None else None
