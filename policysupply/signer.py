"""Signing OCI artifacts and files the way cosign does: with keys, or keyless through Sigstore."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import attrs

from policysupply._internal import cosign, keys
from policysupply._internal import cosign_storage as storage
from policysupply._internal import sigstore_bundle as sb
from policysupply._internal.oci import Reference
from policysupply.errors import SigningError, VerificationError
from policysupply.registry import Registry, _now_rfc3339

if TYPE_CHECKING:
    from policysupply._internal.keyless import KeylessSession

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
        self._keyless: KeylessSession | None = None

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
        signer._keyless = session
        return signer

    @property
    def is_keyless(self) -> bool:
        """Whether this signer signs keylessly (certificate + transparency log)."""
        return self._keyless is not None

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
        if self._keyless is not None:
            return "Signer(keyless)"
        return f"Signer(key_id={self.key_id!r})"

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
        docker_reference = pinned.name
        payload = cosign.simple_signing_payload(docker_reference, digest, annotations)
        cert: bytes | None = None
        log_index: int | None = None
        if self._keyless is not None:
            made = self._keyless.sign_artifact(payload)
            assert isinstance(made.content, sb.MessageSignature)  # noqa: S101 - sign_artifact
            signature = made.content.signature
            extra, cert, log_index = self._keyless_annotations(made)
            key_id = _cert_key_id(made)
        else:
            signature = keys.sign(self._key, payload)
            extra, key_id = {}, self.key_id
        b64 = base64.b64encode(signature).decode()
        tag = storage.sig_tag(digest)
        self._append_layer(
            registry,
            r.repository,
            tag,
            payload,
            storage.SIMPLESIGNING,
            {storage.ANN_SIGNATURE: b64, **extra},
        )
        return Signature(
            reference=pinned,
            key_id=key_id,
            scheme="legacy",
            payload=payload,
            signature=signature,
            location=tag,
            certificate=cert,
            log_index=log_index,
        )

    def _keyless_annotations(
        self, made: sb.ParsedBundle
    ) -> tuple[dict[str, str], bytes, int | None]:
        """Cosign's keyless layer annotations for a signature made through Sigstore."""
        from policysupply._internal import keyless

        assert self._keyless is not None  # noqa: S101 - keyless signers only
        assert made.certificate is not None  # noqa: S101 - keyless bundles carry one
        cert = keyless.certificate_pem(made.certificate)
        annotations, log_index = storage.keyless_layer_annotations(
            made, cert, self._keyless.chain_pem(made.certificate)
        )
        return annotations, cert, log_index

    @staticmethod
    def _append_layer(
        registry: Registry,
        repository: str,
        tag: str,
        blob: bytes,
        media_type: str,
        annotations: Mapping[str, str],
    ) -> None:
        """Adds one layer to cosign's ``.sig``/``.att`` manifest, keeping the others."""
        storage.append_layer(registry, repository, tag, blob, media_type, annotations)

    def _sign_bundle(
        self, registry: Registry, pinned: Reference, annotations: Mapping[str, str] | None
    ) -> Signature:
        assert pinned.digest  # noqa: S101 - resolved by the caller
        # Binds the repository as the legacy payload's docker-reference does.
        statement = cosign.sign_statement(pinned.digest, annotations, name=pinned.name)
        bundle, signature, key_id, cert, log_index = self._sign_statement(statement)
        location = self._attach_bundle(registry, pinned, bundle, cosign.SIGN_PREDICATE)
        return Signature(
            reference=pinned,
            key_id=key_id,
            scheme="bundle",
            payload=statement,
            signature=signature,
            location=location,
            certificate=cert,
            log_index=log_index,
        )

    def _sign_statement(
        self, statement: bytes
    ) -> tuple[bytes, bytes, str, bytes | None, int | None]:
        """``(bundle JSON, signature, key id, certificate PEM, log index)`` for a DSSE statement."""
        if self._keyless is None:
            signature = keys.sign(self._key, cosign.pae(cosign.INTOTO, statement))
            bundle = cosign.key_bundle(
                statement, signature, hashlib.sha256(keys.spki_der(self._key)).digest()
            )
            return bundle, signature, self.key_id, None, None
        from policysupply._internal import keyless

        made = self._keyless.sign_dsse(statement)
        assert isinstance(made.content, sb.Envelope)  # noqa: S101 - sign_dsse
        assert made.certificate is not None  # noqa: S101 - keyless bundles carry one
        entry = made.tlog_entries[0] if made.tlog_entries else None
        return (
            made.to_json(),
            made.content.signatures[0],
            _cert_key_id(made),
            keyless.certificate_pem(made.certificate),
            entry.log_index if entry else None,
        )

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
            bundle, signature, key_id, cert, log_index = self._sign_statement(statement)
            location = self._attach_bundle(registry, pinned, bundle, predicate_type)
        else:
            envelope_json, signature, key_id, annotations, cert, log_index = self._envelope(
                statement
            )
            annotations = {storage.ANN_PREDICATE_TYPE: predicate_type, **annotations}
            location = storage.att_tag(digest)
            self._append_layer(
                registry, r.repository, location, envelope_json, storage.DSSE_ENVELOPE, annotations
            )
        return Signature(
            reference=pinned,
            key_id=key_id,
            scheme=scheme,
            payload=statement,
            signature=signature,
            location=location,
            certificate=cert,
            log_index=log_index,
        )

    def _envelope(
        self, statement: bytes
    ) -> tuple[bytes, bytes, str, dict[str, str], bytes | None, int | None]:
        """A DSSE envelope blob for cosign's ``.att`` layer, with its layer annotations."""
        if self._keyless is None:
            signature = keys.sign(self._key, cosign.pae(cosign.INTOTO, statement))
            env = sb.Envelope(
                payload_type=cosign.INTOTO, payload=statement, signatures=(signature,)
            )
            doc = env.to_json()
            doc["signatures"] = [{"keyid": "", "sig": s["sig"]} for s in doc["signatures"]]
            blob = json.dumps(doc, separators=(",", ":")).encode()
            return blob, signature, self.key_id, {storage.ANN_SIGNATURE: ""}, None, None
        made, blob = self._keyless.sign_dsse_envelope(statement)
        signed = made.content
        assert isinstance(signed, sb.Envelope)  # noqa: S101 - sign_dsse
        if made.timestamps:
            # cosign's .att convention: the timestamp covers the stored envelope
            stamp = self._keyless.timestamp(blob)
            made = attrs.evolve(made, timestamps=(stamp,) if stamp else made.timestamps)
        extra, cert, log_index = self._keyless_annotations(made)
        # cosign leaves the signature annotation empty: the signature is in the envelope
        annotations = {storage.ANN_SIGNATURE: "", **extra}
        return blob, signed.signatures[0], _cert_key_id(made), annotations, cert, log_index

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
        content = _read_blob(data)
        if self._keyless is not None:
            made = self._keyless.sign_artifact(content)
            return SigstoreBundle(data=made.to_json())
        signature = keys.sign(self._key, content)
        bundle = sb.ParsedBundle(
            media_type=sb.BUNDLE_V03,
            certificate=None,
            key_hint=sb.key_hint(keys.spki_der(self._key)),
            content=sb.MessageSignature(
                algorithm="sha256", digest=hashlib.sha256(content).digest(), signature=signature
            ),
        )
        return SigstoreBundle(data=bundle.to_json())


def _read_blob(data: bytes | str | os.PathLike[str]) -> bytes:
    if isinstance(data, bytes):
        return data
    p = Path(data)
    try:
        return p.read_bytes()
    except OSError as exc:
        raise SigningError(f"cannot read {p}: {exc.strerror}") from None


def _cert_key_id(made: sb.ParsedBundle) -> str:
    """Key id of a keyless signature's (ephemeral) certificate key."""
    from policysupply._internal import keyless

    assert made.certificate is not None  # noqa: S101 - keyless bundles carry one
    return keys.key_id(keyless.load_certificate(made.certificate).public_key())


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
