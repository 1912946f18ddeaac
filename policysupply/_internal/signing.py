"""The two ways a ``Signer`` signs, behind one interface: a long-lived key, or keyless.

Each strategy turns what cosign signs (a simple-signing payload, an in-toto
statement, a file) into a signature plus the material cosign stores with it;
``policysupply.signer`` decides what to sign and
:mod:`policysupply._internal.cosign_storage` where it goes.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from policysupply._internal import cosign, keys
from policysupply._internal import cosign_storage as storage
from policysupply._internal import sigstore_bundle as sb

if TYPE_CHECKING:
    from policysupply._internal.keyless import KeylessSession


@attrs.frozen(kw_only=True)
class Signed:
    """One signature and who made it.

    Attributes:
        signature: The raw signature bytes.
        key_id: ``sha256:<hex>`` of the signing key (keyless: the certificate's key).
        certificate: PEM of the Fulcio certificate (keyless only).
        log_index: The transparency log entry's index (keyless only).
    """

    signature: bytes
    key_id: str
    certificate: bytes | None = None
    log_index: int | None = None


class Signing(Protocol):
    """How a signer signs each thing cosign stores."""

    def describe(self) -> str:
        """How the signer shows in ``repr``."""
        ...

    def sign_payload(self, payload: bytes) -> tuple[Signed, dict[str, str]]:
        """Signs a legacy ``.sig`` payload; returns the layer annotations to store besides it."""
        ...

    def sign_bundle(self, statement: bytes) -> tuple[Signed, bytes]:
        """Signs an in-toto statement into a Sigstore bundle (JSON) for a referrer."""
        ...

    def sign_envelope(self, statement: bytes) -> tuple[Signed, bytes, dict[str, str]]:
        """Signs an in-toto statement into a DSSE envelope blob for a legacy ``.att`` layer.

        Returns the signature, the envelope blob, and its layer annotations.
        """
        ...

    def sign_blob(self, content: bytes) -> bytes:
        """Signs a file into a Sigstore bundle (JSON) with a ``messageSignature``."""
        ...


class KeySigning:
    """Signs with a long-lived private key (cosign ``--key``)."""

    def __init__(self, key: Any) -> None:
        self.key = key

    @property
    def key_id(self) -> str:
        """``sha256:<hex>`` of the public key's SubjectPublicKeyInfo DER."""
        return keys.key_id(self.key)

    def describe(self) -> str:
        return f"key_id={self.key_id!r}"

    def _sign(self, message: bytes) -> Signed:
        return Signed(signature=keys.sign(self.key, message), key_id=self.key_id)

    def sign_payload(self, payload: bytes) -> tuple[Signed, dict[str, str]]:
        return self._sign(payload), {}

    def sign_bundle(self, statement: bytes) -> tuple[Signed, bytes]:
        signed = self._sign(cosign.pae(cosign.INTOTO, statement))
        bundle = cosign.key_bundle(
            statement, signed.signature, hashlib.sha256(keys.spki_der(self.key)).digest()
        )
        return signed, bundle

    def sign_envelope(self, statement: bytes) -> tuple[Signed, bytes, dict[str, str]]:
        signed = self._sign(cosign.pae(cosign.INTOTO, statement))
        env = sb.Envelope(
            payload_type=cosign.INTOTO, payload=statement, signatures=(signed.signature,)
        )
        doc = env.to_json()
        doc["signatures"] = [{"keyid": "", "sig": s["sig"]} for s in doc["signatures"]]
        blob = json.dumps(doc, separators=(",", ":")).encode()
        return signed, blob, {storage.ANN_SIGNATURE: ""}

    def sign_blob(self, content: bytes) -> bytes:
        signature = keys.sign(self.key, content)
        bundle = sb.ParsedBundle(
            media_type=sb.BUNDLE_V03,
            certificate=None,
            key_hint=sb.key_hint(keys.spki_der(self.key)),
            content=sb.MessageSignature(
                algorithm="sha256", digest=hashlib.sha256(content).digest(), signature=signature
            ),
        )
        return bundle.to_json()


class KeylessSigning:
    """Signs with an ephemeral key certified by Fulcio, each signature logged (Sigstore).

    Args:
        session: A :class:`~policysupply._internal.keyless.KeylessSession`
            (or a stand-in with the same methods: unit tests use an
            in-process CA and log).
    """

    def __init__(self, session: KeylessSession) -> None:
        self.session = session

    def describe(self) -> str:
        return "keyless"

    def _signed(self, made: sb.ParsedBundle, signature: bytes) -> Signed:
        from policysupply._internal import keyless

        assert made.certificate is not None  # noqa: S101 - keyless bundles carry one
        entry = made.tlog_entries[0] if made.tlog_entries else None
        return Signed(
            signature=signature,
            key_id=keys.key_id(keyless.load_certificate(made.certificate).public_key()),
            certificate=keyless.certificate_pem(made.certificate),
            log_index=entry.log_index if entry else None,
        )

    def _layer_annotations(self, made: sb.ParsedBundle, signed: Signed) -> dict[str, str]:
        """Cosign's keyless layer annotations; the log index is that of the entry they carry."""
        assert made.certificate is not None  # noqa: S101 - keyless bundles carry one
        assert signed.certificate is not None  # noqa: S101 - see _signed
        annotations, _ = storage.keyless_layer_annotations(
            made, signed.certificate, self.session.chain_pem(made.certificate)
        )
        return annotations

    def sign_payload(self, payload: bytes) -> tuple[Signed, dict[str, str]]:
        made = self.session.sign_artifact(payload)
        assert isinstance(made.content, sb.MessageSignature)  # noqa: S101 - sign_artifact
        signed = self._signed(made, made.content.signature)
        return signed, self._layer_annotations(made, signed)

    def sign_bundle(self, statement: bytes) -> tuple[Signed, bytes]:
        made = self.session.sign_dsse(statement)
        assert isinstance(made.content, sb.Envelope)  # noqa: S101 - sign_dsse
        return self._signed(made, made.content.signatures[0]), made.to_json()

    def sign_envelope(self, statement: bytes) -> tuple[Signed, bytes, dict[str, str]]:
        made, blob = self.session.sign_dsse_envelope(statement)
        signed_envelope = made.content
        assert isinstance(signed_envelope, sb.Envelope)  # noqa: S101 - sign_dsse
        if made.timestamps:
            # cosign's .att convention: the timestamp covers the stored envelope
            stamp = self.session.timestamp(blob)
            made = attrs.evolve(made, timestamps=(stamp,) if stamp else made.timestamps)
        signed = self._signed(made, signed_envelope.signatures[0])
        # cosign leaves the signature annotation empty: the signature is in the envelope
        return signed, blob, {storage.ANN_SIGNATURE: "", **self._layer_annotations(made, signed)}

    def sign_blob(self, content: bytes) -> bytes:
        return self.session.sign_artifact(content).to_json()
