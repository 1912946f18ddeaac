"""Signing OCI artifacts and files the way cosign does: with keys, or keyless through Sigstore."""

from __future__ import annotations

import base64
import datetime as dt
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import attrs

from policysupply._internal import cosign, keys
from policysupply._internal import cosign_storage as storage
from policysupply._internal import sigstore_bundle as sb
from policysupply._internal.oci import Reference
from policysupply._internal.signing import KeylessSigning, KeySigning, Signed, Signing
from policysupply._internal.transfer import now_rfc3339 as _now_rfc3339
from policysupply.errors import SigningError, VerificationError
from policysupply.registry import Registry

__all__ = ["Signature", "Signer", "SigstoreBundle"]

Scheme = Literal["legacy", "bundle"]


@attrs.frozen(kw_only=True)
class SigstoreBundle:
    """A Sigstore bundle (``.sigstore.json``), as ``cosign sign-blob --bundle`` writes it.

    Holds the exact JSON bytes; :meth:`write` stores them unchanged.

    Attributes:
        data: The bundle JSON.
    """

    data: bytes = attrs.field(repr=False)

    @classmethod
    def from_json(cls, data: bytes | str) -> SigstoreBundle:
        """Wraps bundle JSON after checking it parses.

        Raises:
            VerificationError: Not a Sigstore bundle.
        """
        raw = data.encode() if isinstance(data, str) else data
        sb.parse_bundle(raw)
        return cls(data=raw)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> SigstoreBundle:
        """Reads a ``.sigstore.json`` file.

        Raises:
            VerificationError: Unreadable, or not a Sigstore bundle.
        """
        p = Path(path)
        try:
            data = p.read_bytes()
        except OSError as exc:
            raise VerificationError(f"cannot read bundle {p}: {exc.strerror}") from None
        sb.parse_bundle(data, what=str(p))
        return cls(data=data)

    @property
    def media_type(self) -> str:
        """The bundle's media type (format version)."""
        return sb.parse_bundle(self.data).media_type

    @property
    def keyless(self) -> bool:
        """Whether a certificate (not a key) signed it."""
        return sb.parse_bundle(self.data).certificate is not None

    def to_json(self) -> bytes:
        """The bundle JSON."""
        return self.data

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Writes the bundle to ``path`` (conventionally ``<file>.sigstore.json``).

        Atomic: the bytes go to a temporary file in the same directory, which is
        fsynced and renamed over ``path``; on any failure ``path`` keeps its old
        content (or stays absent) and the temporary file is removed.

        Raises:
            SigningError: The file cannot be written.
        """
        p = Path(path)
        _publish([(p, self.data, 0o666)], overwrite=True)
        return p


@attrs.frozen(kw_only=True)
class Signature:
    """A signature stored in a registry.

    Attributes:
        reference: The signed artifact, pinned to its digest.
        key_id: ``sha256:<hex>`` of the signer's public key (SubjectPublicKeyInfo DER);
            for keyless signatures, of the certificate's ephemeral key.
        scheme: ``legacy`` (cosign's ``.sig`` tag) or ``bundle`` (Sigstore bundle referrer).
        payload: The exact bytes that were signed (payload or in-toto statement).
        signature: The raw signature bytes.
        location: Where it was stored (the ``.sig`` tag or the referrer's digest).
        certificate: PEM of the Fulcio certificate, for keyless signatures.
        log_index: The transparency log entry's index, for keyless signatures.
    """

    reference: Reference
    key_id: str
    scheme: Scheme
    payload: bytes = attrs.field(repr=False)
    signature: bytes = attrs.field(repr=False)
    location: str
    certificate: bytes | None = attrs.field(default=None, repr=False)
    log_index: int | None = None


class Signer:
    """Signs artifacts cosign-compatibly: with a private key, or keyless through Sigstore.

    Create one with :meth:`generate` or :meth:`from_key_file` (ECDSA P-256 by
    default), or :meth:`keyless` (an ephemeral key certified by Fulcio for an
    OIDC identity, each signature logged in Rekor). The private key never
    appears in ``repr``.
    """

    def __init__(self, key: Any) -> None:
        """Use :meth:`generate`, :meth:`from_key_file` or :meth:`keyless`."""
        self._key = key
        self._signing: Signing = KeySigning(key)

    @classmethod
    def keyless(
        cls, *, identity_token: str, trust: Any = "production", timeout: float = 60.0
    ) -> Signer:
        """A keyless signer: Fulcio certificate + Rekor entry through sigstore-python.

        Nothing touches the network until the first signature. The certificate
        (about 10 minutes) and its ephemeral key are reused for every signature
        this signer makes.

        Args:
            identity_token: A raw OIDC identity token (JWT) with audience
                ``sigstore`` (e.g. from GitHub Actions, or ``sigstore``'s
                interactive flow).
            trust: ``"production"`` (public-good Sigstore), ``"staging"``, a
                ``sigstore.models.ClientTrustConfig``, or a path to a client
                trust config JSON (a private Sigstore deployment: its trusted
                root plus Fulcio/Rekor URLs).
            timeout: Seconds each request to Fulcio, Rekor or a timestamp
                authority may take to connect, and to deliver each part of its
                answer (sigstore-python itself sets none for Fulcio and Rekor).
                Rekor v2 answers only once the entry is in the log, so keep it
                well above the log's integration time.

        Raises:
            ValueError: ``timeout`` is not positive.
            SigningError: sigstore-python is not installed (the ``keyless``
                extra); later, at the first signature, if the token, Fulcio,
                Rekor or the TSA fail, or do not answer within ``timeout``.
        """
        from policysupply._internal import extras
        from policysupply._internal.keyless import KeylessSession

        extras.require("sigstore", "keyless signing", SigningError)

        return cls._with_keyless(KeylessSession(identity_token, trust, timeout=timeout))

    @classmethod
    def _with_keyless(cls, session: Any) -> Signer:
        # Also the seam unit tests use to sign with an in-process CA and log.
        signer = cls(None)
        signer._signing = KeylessSigning(session)
        return signer

    @property
    def is_keyless(self) -> bool:
        """Whether this signer signs keylessly (certificate + transparency log)."""
        return isinstance(self._signing, KeylessSigning)

    def _need_key(self, what: str) -> Any:
        if self._key is None:
            raise SigningError(f"{what}: a keyless signer has no long-lived key")
        return self._key

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
        return f"Signer({self._signing.describe()})"

    @property
    def key_id(self) -> str:
        """``sha256:<hex>`` of the public key's SubjectPublicKeyInfo DER.

        Raises:
            SigningError: A keyless signer has no long-lived key.
        """
        return keys.key_id(self._need_key("key_id"))

    @property
    def public_key_pem(self) -> bytes:
        """The public key as ``cosign.pub`` holds it.

        Raises:
            SigningError: A keyless signer has no long-lived key.
        """
        return keys.public_pem(self._need_key("public_key_pem"))

    def write_key_pair(
        self, directory: str | os.PathLike[str], *, password: str | bytes, name: str = "cosign"
    ) -> tuple[Path, Path]:
        """Writes ``<name>.key`` (encrypted like cosign's, mode 0600) and ``<name>.pub``.

        Existing files are never overwritten. Each file is written in full to a
        temporary file in ``directory`` (the key's created with mode 0600) and
        fsynced, then hard-linked under its final name, which fails rather
        than replace a file that appeared meanwhile. Both files or neither: if
        anything fails, what this call created is removed, so a retry starts
        clean.

        Returns:
            ``(private key path, public key path)``.

        Raises:
            SigningError: A file already exists or cannot be written (the
                message names the file).
        """
        from cryptography.hazmat.primitives import serialization

        self._need_key("write_key_pair")
        d = Path(directory)
        key_path, pub_path = d / f"{name}.key", d / f"{name}.pub"
        pw = password.encode() if isinstance(password, str) else password
        der = self._key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        pem = keys.encrypt_private_key(der, pw)
        _publish([(key_path, pem, 0o600), (pub_path, self.public_key_pem, 0o666)], overwrite=False)
        return key_path, pub_path

    def sign_bytes(self, message: bytes) -> bytes:
        """Signs raw bytes (ECDSA: ASN.1 DER), as cosign does.

        Raises:
            SigningError: A keyless signer has no long-lived key.
        """
        return keys.sign(self._need_key("sign_bytes"), message)

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
        Both bind the repository: the payload's ``docker-reference``, or the
        bundle statement's subject ``name`` (which cosign 3 itself leaves out,
        and ignores when it verifies).

        Args:
            registry: Where the artifact lives.
            ref: Tag or digest reference.
            annotations: Extra claims signed with the payload (``cosign -a``).
            scheme: ``legacy`` (default) or ``bundle``.
            timestamp: Add the signing time as the signed annotation
                ``dev.policysupply/signed-at``, which verifiers use for rollback
                ordering and maximum-age (freeze) checks. cosign ignores it.

        Keyless signers store what cosign's keyless mode stores: ``legacy`` adds
        the certificate, its chain and the Rekor entry (signed entry timestamp)
        as layer annotations; ``bundle`` attaches a Sigstore bundle holding the
        certificate and the Rekor entry with its inclusion proof.

        Raises:
            NotFoundError: No such artifact.
            RegistryError: Storing the signature failed.
            SigningError: Keyless signing failed (token, Fulcio, Rekor).
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
        payload = cosign.simple_signing_payload(pinned.name, digest, annotations)
        signed, extra = self._signing.sign_payload(payload)
        b64 = base64.b64encode(signed.signature).decode()
        tag = storage.sig_tag(digest)
        storage.append_layer(
            registry,
            r.repository,
            tag,
            payload,
            storage.SIMPLESIGNING,
            {storage.ANN_SIGNATURE: b64, **extra},
        )
        return _signature(pinned, "legacy", payload, signed, tag)

    def _sign_bundle(
        self, registry: Registry, pinned: Reference, annotations: Mapping[str, str] | None
    ) -> Signature:
        assert pinned.digest  # noqa: S101 - resolved by the caller
        # Binds the repository as the legacy payload's docker-reference does.
        statement = cosign.sign_statement(pinned.digest, annotations, name=pinned.name)
        signed, bundle = self._signing.sign_bundle(statement)
        location = self._attach_bundle(registry, pinned, bundle, cosign.SIGN_PREDICATE)
        return _signature(pinned, "bundle", statement, signed, location)

    @staticmethod
    def _attach_bundle(
        registry: Registry, pinned: Reference, bundle: bytes, predicate_type: str
    ) -> str:
        """Attaches a Sigstore bundle to ``pinned`` as an OCI referrer, as cosign v3 does."""
        return storage.attach_bundle(registry, pinned, bundle, predicate_type, _now_rfc3339())

    def attest(
        self,
        registry: Registry,
        ref: str | Reference,
        *,
        predicate_type: str,
        predicate: Mapping[str, Any],
        scheme: Scheme = "legacy",
    ) -> Signature:
        """Attaches a signed in-toto attestation about an artifact, as ``cosign attest`` does.

        The statement (in-toto v1) names the artifact's digest as its subject
        and is signed as a DSSE envelope. ``legacy`` appends it to cosign's
        ``sha256-<hex>.att`` manifest; ``bundle`` attaches a Sigstore bundle
        referrer (cosign v3).

        Args:
            registry: Where the artifact lives.
            ref: Tag or digest reference.
            predicate_type: The predicate's type URI (e.g. ``https://slsa.dev/provenance/v1``).
            predicate: The predicate (a JSON object).
            scheme: ``legacy`` (default) or ``bundle``.

        Returns:
            The stored attestation; ``payload`` is the signed statement.

        Raises:
            NotFoundError: No such artifact.
            RegistryError: Storing the attestation failed.
            SigningError: Keyless signing failed, or the predicate is not JSON.
        """
        r = Reference.parse(ref) if isinstance(ref, str) else ref
        digest = registry.resolve(r)
        pinned = Reference(host=registry.host or r.host, repository=r.repository, digest=digest)
        subject = {"name": pinned.name, "digest": {"sha256": digest.split(":", 1)[1]}}
        try:
            statement = sb.statement(predicate_type, predicate, [subject])
        except (TypeError, ValueError) as exc:
            raise SigningError(f"predicate is not a JSON object: {exc}") from None
        if scheme == "bundle":
            signed, bundle = self._signing.sign_bundle(statement)
            location = self._attach_bundle(registry, pinned, bundle, predicate_type)
        else:
            signed, envelope_json, annotations = self._signing.sign_envelope(statement)
            annotations = {storage.ANN_PREDICATE_TYPE: predicate_type, **annotations}
            location = storage.att_tag(digest)
            storage.append_layer(
                registry, r.repository, location, envelope_json, storage.DSSE_ENVELOPE, annotations
            )
        return _signature(pinned, scheme, statement, signed, location)

    def sign_blob(self, data: bytes | str | os.PathLike[str]) -> SigstoreBundle:
        """Signs a plain file (e.g. a policy tarball served over HTTP) into a Sigstore bundle.

        Writes what ``cosign sign-blob --bundle`` (v3) and ``sigstore sign``
        write: a v0.3 bundle with a ``messageSignature`` over the file's
        SHA-256, plus, keyless, the certificate and the Rekor entry; with a
        key, the key's hint and no log entry. Save it with
        ``bundle.write("<file>.sigstore.json")``.

        Args:
            data: The file's bytes, or a path to it.

        Raises:
            SigningError: The file cannot be read, or keyless signing failed.
        """
        return SigstoreBundle(data=self._signing.sign_blob(_read_blob(data)))


def _read_blob(data: bytes | str | os.PathLike[str]) -> bytes:
    if isinstance(data, bytes):
        return data
    p = Path(data)
    try:
        return p.read_bytes()
    except OSError as exc:
        raise SigningError(f"cannot read {p}: {exc.strerror}") from None


def _signature(
    pinned: Reference, scheme: Scheme, payload: bytes, signed: Signed, location: str
) -> Signature:
    return Signature(
        reference=pinned,
        key_id=signed.key_id,
        scheme=scheme,
        payload=payload,
        signature=signed.signature,
        location=location,
        certificate=signed.certificate,
        log_index=signed.log_index,
    )


def _publish(files: list[tuple[Path, bytes, int]], *, overwrite: bool) -> None:
    """Puts each ``(path, data, mode)`` in place whole, or leaves every path as it was.

    See :func:`policysupply._internal.fs.place_files`.

    Raises:
        SigningError: A path exists (without ``overwrite``) or a write failed;
            the message names the file.
    """
    from policysupply._internal import fs

    try:
        fs.place_files(files, overwrite=overwrite)
    except FileExistsError as exc:
        raise SigningError(f"{exc.filename} exists; refusing to overwrite it") from None
    except OSError as exc:
        raise SigningError(f"cannot write {exc.filename}: {exc.strerror or exc}") from None
