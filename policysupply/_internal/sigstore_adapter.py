"""The Sigstore services adapter: the one place that reaches into sigstore-python's internals.

sigstore-python's public API verifies whole bundles against its own policy;
policysupply verifies cosign's storage forms too (legacy annotations with only
a signed entry timestamp, key-signed bundles), so it reuses the building blocks
underneath: keyrings and key ids, the Merkle inclusion, checkpoint and SCT
checks, the trusted root's model, and, for signing, the clients of a
``SigningContext`` (to bound every request with a timeout) and the raw DSSE
statement and envelope. Nothing else in policysupply imports
``sigstore._internal``/``sigstore._utils`` or touches a private attribute of a
sigstore object; each use here is pinned by
``tests/unit/_internal/test_sigstore_adapter.py`` (and the timeouts by
``tests/unit/test_signer.py``), so an upgrade that changes one fails there.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from policysupply.errors import SigningError

# -- trust material ----------------------------------------------------------------


def trusted_root_model(root: Any) -> Any:
    """The ``sigstore_models`` trusted root inside a ``sigstore.models.TrustedRoot``."""
    return root._inner


def log_key_usable(public_key: Any) -> bool:
    """Whether sigstore-python can load a log's public key (an unusable key is no trusted key)."""
    from sigstore._internal.trust import Key
    from sigstore.errors import Error as SigstoreError

    try:
        Key(public_key)
    except (SigstoreError, ValueError):
        return False
    return True


def keyring(public_keys: Sequence[Any]) -> Any:
    """A sigstore keyring over log public keys (``sigstore_models`` ``PublicKey`` values)."""
    from sigstore._internal.trust import Keyring

    return Keyring(list(public_keys))


def verify_by_log_id(ring: Any, log_id: bytes, signature: bytes, data: bytes) -> None:
    """Verifies ``signature`` over ``data`` with the key of ``ring`` whose id is ``log_id``.

    Raises:
        sigstore.errors.VerificationError: No such key, or it does not verify.
    """
    from sigstore._utils import KeyID

    ring.verify(key_id=KeyID(log_id), signature=signature, data=data)


def ca_certificates(trusted_root: Any) -> list[list[Any]]:
    """Each certificate authority's chain (leaf-most first) of a sigstore ``TrustedRoot``."""
    from sigstore._internal.trust import CertificateAuthority

    return [
        CertificateAuthority(authority).certificates(allow_expired=True)
        for authority in trusted_root_model(trusted_root).certificate_authorities
    ]


# -- transparency logs and certificates ---------------------------------------------


def verify_inclusion(entry_json: Any) -> Any:
    """Checks a log entry's Merkle inclusion proof; returns sigstore's entry for the checkpoint.

    Args:
        entry_json: The entry as a bundle's ``tlogEntries`` item (a dict).

    Raises:
        sigstore.errors.VerificationError: The proof does not hold.
        Exception: The entry is malformed (pydantic, ``ValueError``).
    """
    from sigstore._internal.merkle import verify_merkle_inclusion
    from sigstore.models import TransparencyLogEntry
    from sigstore_models.rekor.v1 import TransparencyLogEntry as _Entry

    entry = TransparencyLogEntry(_Entry.from_dict(entry_json))
    verify_merkle_inclusion(entry)
    return entry


def verify_checkpoint(ring: Any, entry: Any) -> None:
    """Checks the signed checkpoint of an entry from :func:`verify_inclusion` with ``ring``."""
    from sigstore._internal.rekor.checkpoint import verify_checkpoint as _verify_checkpoint

    _verify_checkpoint(ring, entry)


def verify_sct(cert: Any, chain: list[Any], ring: Any) -> None:
    """Checks the certificate's embedded SCT with the CT log keys of ``ring``."""
    from sigstore._internal.sct import verify_sct as _verify_sct

    _verify_sct(cert, chain, ring)


# -- signing ---------------------------------------------------------------------------


def raw_statement(statement: bytes) -> Any:
    """A ``sigstore.dsse.Statement`` holding exactly ``statement``.

    sigstore-python's model insists on ``subject[].name``, which cosign v3's
    signing statement omits; signing only needs the bytes, so the model check
    is skipped (the bytes are ours, built by ``cosign.sign_statement``).
    """
    from sigstore import dsse

    raw = dsse.Statement.__new__(dsse.Statement)
    raw._contents = statement
    return raw


def envelope_json(bundle: Any) -> bytes:
    """The exact DSSE envelope JSON of a sigstore ``Bundle`` (what a dsse log entry hashes)."""
    envelope = bundle._dsse_envelope
    assert envelope is not None  # noqa: S101 - sign_dsse makes one
    return envelope.to_json().encode()  # type: ignore[no-any-return]


def timestamp_clients(context: Any) -> list[Any]:
    """The RFC 3161 timestamp authority clients of a ``SigningContext``."""
    return list(getattr(context, "_tsa_clients", None) or [])


def _timed_adapter(timeout: float) -> Any:
    """A requests transport adapter that gives every request without one a timeout."""
    from requests.adapters import HTTPAdapter

    class TimeoutAdapter(HTTPAdapter):
        def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
            if kwargs.get("timeout") is None:
                kwargs["timeout"] = timeout
            return super().send(request, *args, **kwargs)

    return TimeoutAdapter()


def _time_session(session: Any, timeout: float) -> Any:
    adapter = _timed_adapter(timeout)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def apply_timeouts(context: Any, timeout: float) -> None:
    """Gives every HTTP request of a sigstore ``SigningContext`` a default timeout.

    sigstore-python posts to Fulcio and Rekor with no timeout (its TSA client
    passes 5 s), so a service that accepts a connection and never answers
    would hang signing forever. Its Fulcio client holds one ``requests``
    session; its Rekor and TSA clients create a session per thread on first
    use. Each gets a transport adapter that supplies ``timeout`` (connect and
    read, in seconds) to requests that set none.

    Raises:
        SigningError: A client of an unexpected shape (a sigstore-python
            version whose requests could not be bounded): refused rather
            than risk an unbounded wait.
    """
    import requests

    class TimedLocal(threading.local):
        # sigstore checks hasattr(local, "session"), then stores a new Session.
        def __setattr__(self, name: str, value: Any) -> None:
            if name == "session" and isinstance(value, requests.Session):
                _time_session(value, timeout)
            super().__setattr__(name, value)

    clients = [
        ("Fulcio", getattr(context, "_fulcio", None)),
        ("Rekor", getattr(context, "_rekor", None)),
        *(("TSA", c) for c in timestamp_clients(context)),
    ]
    for name, client in clients:
        if isinstance(getattr(client, "session", None), requests.Session):
            _time_session(client.session, timeout)
        elif isinstance(getattr(client, "_thread_local", None), threading.local):
            client._thread_local = TimedLocal()
        else:
            raise SigningError(
                f"cannot set a timeout on sigstore's {name} client "
                f"({type(client).__name__}); unsupported sigstore-python version"
            )


def timed_out(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a timeout of a sigstore request."""
    import requests

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, requests.Timeout | TimeoutError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
