"""Keyless signing through sigstore-python: ephemeral key, Fulcio certificate, Rekor entry."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from policysupply._internal import sigstore_adapter
from policysupply._internal.fulcio import load_certificate
from policysupply._internal.sigstore_adapter import apply_timeouts as apply_timeouts
from policysupply._internal.sigstore_bundle import ParsedBundle
from policysupply.errors import (
    SigningError,
)

if TYPE_CHECKING:
    pass

# -- signing ------------------------------------------------------------------


def _parse_sigstore_bundle(bundle: Any) -> ParsedBundle:
    from policysupply._internal.sigstore_bundle import parse_bundle

    return parse_bundle(bundle.to_json(), what="bundle from sigstore")


DEFAULT_TIMEOUT = 60.0


def _failure(what: str, exc: Exception) -> SigningError:
    if sigstore_adapter.timed_out(exc):  # sigstore's message is requests', e.g. "(read timeout=60)"
        return SigningError(f"{what}: timed out ({exc})")
    return SigningError(f"{what}: {exc}")


class KeylessSession:
    """Signs through sigstore-python: an ephemeral key, a Fulcio certificate, a Rekor entry.

    Nothing touches the network until the first signature. Every request to
    Fulcio, Rekor and the TSA has a timeout (see :func:`apply_timeouts`).
    """

    def __init__(
        self, identity_token: str, trust: Any, *, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        """A session; nothing is fetched yet.

        Args:
            identity_token: A raw OIDC JWT.
            trust: See :func:`client_trust_config`.
            timeout: Seconds each Fulcio/Rekor/TSA request may take to connect,
                and to deliver each part of its answer.
        """
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, not {timeout!r}")
        self._token = identity_token
        self._trust = trust
        self._timeout = float(timeout)
        self._signer: Any = None
        self._context: Any = None

    def _get(self) -> Any:
        if self._signer is None:
            from sigstore.oidc import IdentityError, IdentityToken
            from sigstore.sign import SigningContext

            config = client_trust_config(self._trust)
            try:
                token = IdentityToken(self._token)
            except IdentityError as exc:
                raise SigningError(f"identity token rejected: {exc}") from None
            try:
                context = SigningContext.from_trust_config(config)
            except Exception as exc:
                raise SigningError(f"cannot get a Fulcio signing certificate: {exc}") from None
            sigstore_adapter.apply_timeouts(context, self._timeout)
            self._context = context
            try:
                self._signer = context.signer(token, cache=True).__enter__()
            except Exception as exc:  # Fulcio errors, network errors, expired tokens
                raise _failure("cannot get a Fulcio signing certificate", exc) from None
        return self._signer

    @property
    def identity(self) -> str:
        """The identity (token subject or email) the certificate will carry."""
        from sigstore.oidc import IdentityError, IdentityToken

        try:
            return str(IdentityToken(self._token).identity)
        except IdentityError as exc:
            raise SigningError(f"identity token rejected: {exc}") from None

    def sign_artifact(self, data: bytes) -> ParsedBundle:
        """A ``messageSignature`` bundle (hashedrekord entry) over ``data``.

        Raises:
            SigningError: Fulcio, Rekor or the token failed.
        """
        signer = self._get()
        try:
            return _parse_sigstore_bundle(signer.sign_artifact(data))
        except Exception as exc:
            raise _failure("keyless signing failed", exc) from None

    def sign_dsse(self, statement: bytes) -> ParsedBundle:
        """A ``dsseEnvelope`` bundle (dsse entry) over an in-toto statement.

        Raises:
            SigningError: Fulcio, Rekor or the token failed, or not a v1 statement.
        """
        return self.sign_dsse_envelope(statement)[0]

    def sign_dsse_envelope(self, statement: bytes) -> tuple[ParsedBundle, bytes]:
        """As :meth:`sign_dsse`, plus the exact envelope JSON the log entry hashed.

        cosign's legacy ``.att`` layer stores that envelope, and verifiers compare
        the entry's envelope hash with the stored bytes.

        Raises:
            SigningError: Fulcio, Rekor or the token failed, or not a v1 statement.
        """
        signer = self._get()
        try:
            bundle = signer.sign_dsse(sigstore_adapter.raw_statement(statement))
            return _parse_sigstore_bundle(bundle), sigstore_adapter.envelope_json(bundle)
        except Exception as exc:
            raise _failure("keyless signing failed", exc) from None

    def timestamp(self, data: bytes) -> bytes | None:
        """An RFC 3161 timestamp (DER) over ``data`` from the first configured TSA, if any.

        cosign's legacy attestations are timestamped over the stored envelope
        rather than over the signature, which sigstore-python stamps.

        Raises:
            SigningError: The timestamp authority failed.
        """
        self._get()
        clients = sigstore_adapter.timestamp_clients(self._context)
        if not clients:
            return None
        try:
            return bytes(clients[0].request_timestamp(data).as_bytes())
        except Exception as exc:  # sigstore's TimestampError, network errors
            raise _failure("timestamp authority failed", exc) from None

    def chain_pem(self, leaf_der: bytes) -> bytes:
        """The issuing chain (intermediates, root) from the trusted root, as cosign stores it."""
        config = client_trust_config(self._trust)
        return issuing_chain_pem(leaf_der, config.trusted_root)


def issuing_chain_pem(leaf_der: bytes, trusted_root: Any) -> bytes:
    """PEM of the trusted-root CA chain whose first certificate issued ``leaf_der``."""
    from cryptography.hazmat.primitives import serialization

    leaf = load_certificate(leaf_der)
    for certs in sigstore_adapter.ca_certificates(trusted_root):
        if certs and certs[0].subject == leaf.issuer:
            return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)
    return b""


def client_trust_config(trust: Any) -> Any:
    """A ``sigstore.models.ClientTrustConfig`` for signing.

    ``trust`` is ``"production"``, ``"staging"``, a ``ClientTrustConfig``, or a
    path to a client trust config JSON file (private deployments).

    Raises:
        SigningError: Unreadable or invalid configuration, or TUF failure.
    """
    from sigstore.models import ClientTrustConfig

    if isinstance(trust, ClientTrustConfig):
        return trust
    if trust in ("production", "staging"):
        try:
            return getattr(ClientTrustConfig, str(trust))()
        except Exception as exc:
            raise SigningError(f"cannot fetch Sigstore's {trust} trust config: {exc}") from None
    path = Path(os.fspath(trust))
    try:
        return ClientTrustConfig.from_json(path.read_text())
    except OSError as exc:
        raise SigningError(f"cannot read trust config {path}: {exc.strerror}") from None
    except Exception as exc:
        raise SigningError(f"{path}: not a Sigstore client trust config ({exc})") from None
