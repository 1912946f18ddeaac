"""Signing OCI artifacts the way cosign does, with keys cosign reads and writes."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import attrs

from policysupply._internal import cosign, keys, oci
from policysupply._internal.oci import Reference
from policysupply.errors import NotFoundError, SigningError
from policysupply.registry import Registry, _now_rfc3339

__all__ = ["Signature", "Signer"]

Scheme = Literal["legacy", "bundle"]


@attrs.frozen(kw_only=True)
class Signature:
    """A signature stored in a registry.

    Attributes:
        reference: The signed artifact, pinned to its digest.
        key_id: ``sha256:<hex>`` of the signer's public key (SubjectPublicKeyInfo DER).
        scheme: ``legacy`` (cosign's ``.sig`` tag) or ``bundle`` (Sigstore bundle referrer).
        payload: The exact bytes that were signed (payload or in-toto statement).
        signature: The raw signature bytes.
        location: Where it was stored (the ``.sig`` tag or the referrer's digest).
    """

    reference: Reference
    key_id: str
    scheme: Scheme
    payload: bytes = attrs.field(repr=False)
    signature: bytes = attrs.field(repr=False)
    location: str


class Signer:
    """Signs artifacts with a private key (ECDSA P-256 by default), cosign-compatibly.

    Create one with :meth:`generate` or :meth:`from_key_file`. The private key
    never appears in ``repr``.
    """

    def __init__(self, key: Any) -> None:
        """Use :meth:`generate` or :meth:`from_key_file`."""
        self._key = key

    @classmethod
    def generate(cls) -> Signer:
        """A new ECDSA P-256 key (cosign's default)."""
        from cryptography.hazmat.primitives.asymmetric import ec

        return cls(ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def from_key_file(
        cls, path: str | os.PathLike[str], *, password: str | bytes | None = None
    ) -> Signer:
        """Reads a cosign ``cosign.key`` (encrypted) or a plain PKCS#8/SEC1 PEM key.

        Raises:
            SigningError: Missing file, wrong password, corrupt file or
                unsupported key type.
        """
        p = Path(path)
        try:
            data = p.read_bytes()
        except OSError as exc:
            raise SigningError(f"cannot read key file {p}: {exc.strerror}") from None
        pw = password.encode() if isinstance(password, str) else password
        return cls(keys.load_private_key(data, pw, what=str(p)))

    def __repr__(self) -> str:
        return f"Signer(key_id={self.key_id!r})"

    @property
    def key_id(self) -> str:
        """``sha256:<hex>`` of the public key's SubjectPublicKeyInfo DER."""
        return keys.key_id(self._key)

    @property
    def public_key_pem(self) -> bytes:
        """The public key as ``cosign.pub`` holds it."""
        return keys.public_pem(self._key)

    def write_key_pair(
        self, directory: str | os.PathLike[str], *, password: str | bytes, name: str = "cosign"
    ) -> tuple[Path, Path]:
        """Writes ``<name>.key`` (encrypted like cosign's, mode 0600) and ``<name>.pub``.

        Existing files are not overwritten.

        Returns:
            ``(private key path, public key path)``.

        Raises:
            SigningError: A file already exists or cannot be written.
        """
        from cryptography.hazmat.primitives import serialization

        d = Path(directory)
        key_path, pub_path = d / f"{name}.key", d / f"{name}.pub"
        pw = password.encode() if isinstance(password, str) else password
        der = self._key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        pem = keys.encrypt_private_key(der, pw)
        try:
            fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise SigningError(f"{key_path} exists; refusing to overwrite a key") from None
        except OSError as exc:
            raise SigningError(f"cannot write {key_path}: {exc.strerror}") from None
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        try:
            with pub_path.open("xb") as f:
                f.write(self.public_key_pem)
        except FileExistsError:
            key_path.unlink()
            raise SigningError(f"{pub_path} exists; refusing to overwrite a key") from None
        return key_path, pub_path

    def sign_bytes(self, message: bytes) -> bytes:
        """Signs raw bytes (ECDSA: ASN.1 DER), as cosign does."""
        return keys.sign(self._key, message)

    def sign(
        self,
        registry: Registry,
        ref: str | Reference,
        *,
        annotations: Mapping[str, str] | None = None,
        scheme: Scheme = "legacy",
        timestamp: bool = True,
    ) -> Signature:
        """Signs an artifact in ``registry`` and stores the signature where cosign looks.

        ``ref`` is resolved to a digest once; the signature covers that digest.
        ``legacy`` appends to the ``sha256-<hex>.sig`` manifest (other signers'
        signatures are kept); ``bundle`` attaches a Sigstore bundle as an OCI
        referrer the way cosign 3 does (referrers API, or the fallback tag).

        Args:
            registry: Where the artifact lives.
            ref: Tag or digest reference.
            annotations: Extra claims signed with the payload (``cosign -a``).
            scheme: ``legacy`` (default) or ``bundle``.
            timestamp: Add the signing time as the signed annotation
                ``dev.policysupply/signed-at``, which verifiers use for rollback
                ordering and maximum-age (freeze) checks. cosign ignores it.

        Raises:
            NotFoundError: No such artifact.
            RegistryError: Storing the signature failed.
        """
        r = Reference.parse(ref) if isinstance(ref, str) else ref
        digest = registry.resolve(r)
        pinned = Reference(host=registry.host or r.host, repository=r.repository, digest=digest)
        if timestamp and cosign.ANN_SIGNED_AT not in (annotations or {}):
            # Wall-clock time, never SOURCE_DATE_EPOCH: this claim is about the signature.
            now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            annotations = {**(annotations or {}), cosign.ANN_SIGNED_AT: now}
        if scheme == "bundle":
            return self._sign_bundle(registry, pinned, annotations)
        docker_reference = pinned.name
        payload = cosign.simple_signing_payload(docker_reference, digest, annotations)
        signature = keys.sign(self._key, payload)
        layer = registry.put_blob(r.repository, payload, media_type=cosign.SIMPLESIGNING)
        tag = cosign.sig_tag(digest)
        layers: list[dict[str, Any]] = []
        try:
            existing, _ = registry.get_manifest(f"{r.repository}:{tag}")
            layers = list(oci.parse_manifest(existing, what=tag).get("layers") or [])
        except NotFoundError:
            pass
        b64 = base64.b64encode(signature).decode()
        entry = {**layer.to_json(), "annotations": {cosign.ANN_SIGNATURE: b64}}
        layers.append(entry)
        config = cosign.signature_config([str(d["digest"]) for d in layers])
        registry.put_blob(r.repository, config, media_type=oci.CONFIG_V1)
        registry.put_manifest(f"{r.repository}:{tag}", cosign.signature_manifest(config, layers))
        return Signature(
            reference=pinned,
            key_id=self.key_id,
            scheme="legacy",
            payload=payload,
            signature=signature,
            location=tag,
        )

    def _sign_bundle(
        self, registry: Registry, pinned: Reference, annotations: Mapping[str, str] | None
    ) -> Signature:
        assert pinned.digest  # noqa: S101 - resolved by the caller
        data, media_type = registry.get_manifest(pinned)
        subject = oci.Descriptor(media_type=media_type, digest=pinned.digest, size=len(data))
        statement = cosign.sign_statement(pinned.digest, annotations)
        signature = keys.sign(self._key, cosign.pae(cosign.INTOTO, statement))
        bundle = cosign.key_bundle(
            statement, signature, hashlib.sha256(keys.spki_der(self._key)).digest()
        )
        manifest, config = cosign.bundle_manifest(
            bundle, subject, _now_rfc3339(), cosign.SIGN_PREDICATE
        )
        registry.put_blob(pinned.repository, config, media_type=oci.EMPTY_V1)
        registry.put_blob(pinned.repository, bundle, media_type=cosign.BUNDLE_V03)
        location = registry.put_manifest(pinned.repository, manifest)
        return Signature(
            reference=pinned,
            key_id=self.key_id,
            scheme="bundle",
            payload=statement,
            signature=signature,
            location=location,
        )
