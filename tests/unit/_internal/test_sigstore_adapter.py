"""Pins what ``_internal/sigstore_adapter.py`` relies on inside sigstore-python.

Each test exercises one internal (a private module, class or attribute) the way
the adapter uses it, with in-process Sigstore material (``tests/unit/_sigstore_pki.py``),
so a sigstore-python upgrade that changes it fails here, by name. The request
timeouts (``SigningContext._fulcio``/``_rekor``/``_tsa_clients``,
``_thread_local``) are pinned in ``tests/unit/test_signer.py``.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from policysupply._internal import sigstore_adapter
from policysupply._internal import sigstore_bundle as sb
from tests.unit._sigstore_pki import FakeBackend, FakeSigstore

pytest.importorskip("sigstore")


@pytest.fixture
def fake() -> FakeSigstore:
    return FakeSigstore()


def _root(fake: FakeSigstore, tmp_path: Path, **kwargs: Any) -> Any:
    from sigstore.models import TrustedRoot

    return TrustedRoot.from_file(str(fake.write_trusted_root(tmp_path / "root.json", **kwargs)))


def test_trusted_root_model_lists_the_services(fake: FakeSigstore, tmp_path: Path) -> None:
    model = sigstore_adapter.trusted_root_model(_root(fake, tmp_path))
    assert len(model.certificate_authorities) == 1
    assert len(model.tlogs) == 1
    assert len(model.ctlogs) == 1
    assert len(model.timestamp_authorities) == 1


def test_ca_certificates_are_each_authoritys_chain(fake: FakeSigstore, tmp_path: Path) -> None:
    chains = sigstore_adapter.ca_certificates(_root(fake, tmp_path))
    wanted = [x509.load_der_x509_certificate(d) for d in fake.ca.chain_der()]
    assert chains == [wanted]


def test_a_log_key_sigstore_cannot_load_is_unusable(fake: FakeSigstore, tmp_path: Path) -> None:
    model = sigstore_adapter.trusted_root_model(_root(fake, tmp_path))
    key = model.tlogs[0].public_key
    assert sigstore_adapter.log_key_usable(key)
    broken = key.model_copy(update={"raw_bytes": b"not a key"})
    assert not sigstore_adapter.log_key_usable(broken)


def test_keyring_verifies_by_log_id(fake: FakeSigstore, tmp_path: Path) -> None:
    from sigstore.errors import VerificationError as SigstoreVerificationError

    model = sigstore_adapter.trusted_root_model(_root(fake, tmp_path))
    ring = sigstore_adapter.keyring([log.public_key for log in model.tlogs])
    data = b"signed entry timestamp payload"
    signature = fake.log_key.sign(data, ec.ECDSA(hashes.SHA256()))
    sigstore_adapter.verify_by_log_id(ring, fake.log_id, signature, data)
    with pytest.raises(SigstoreVerificationError):
        sigstore_adapter.verify_by_log_id(ring, fake.log_id, signature, data + b"!")
    # the key id is only a hint: with no key of that id, every key of the ring is tried
    sigstore_adapter.verify_by_log_id(ring, b"\0" * 32, signature, data)
    stranger = ec.generate_private_key(ec.SECP256R1()).sign(data, ec.ECDSA(hashes.SHA256()))
    with pytest.raises(SigstoreVerificationError):
        sigstore_adapter.verify_by_log_id(ring, fake.log_id, stranger, data)


def test_inclusion_proof_and_checkpoint(fake: FakeSigstore, tmp_path: Path) -> None:
    from sigstore.errors import VerificationError as SigstoreVerificationError

    made = FakeBackend(fake).sign_artifact(b"artifact")
    entry = made.tlog_entries[0].to_json()
    checked = sigstore_adapter.verify_inclusion(entry)
    model = sigstore_adapter.trusted_root_model(_root(fake, tmp_path))
    ring = sigstore_adapter.keyring([log.public_key for log in model.tlogs])
    sigstore_adapter.verify_checkpoint(ring, checked)
    other = sigstore_adapter.keyring([log.public_key for log in model.ctlogs])
    with pytest.raises(SigstoreVerificationError):
        sigstore_adapter.verify_checkpoint(other, checked)
    tampered = json.loads(json.dumps(entry))
    tampered["inclusionProof"]["rootHash"] = base64.b64encode(b"\1" * 32).decode()
    with pytest.raises(SigstoreVerificationError):
        sigstore_adapter.verify_inclusion(tampered)


def test_embedded_sct_is_checked_with_the_ct_keys(fake: FakeSigstore, tmp_path: Path) -> None:
    from sigstore.errors import VerificationError as SigstoreVerificationError

    _, der = fake.issue()
    cert = x509.load_der_x509_certificate(der)
    chain = [x509.load_der_x509_certificate(d) for d in fake.ca.chain_der()]
    model = sigstore_adapter.trusted_root_model(_root(fake, tmp_path))
    sigstore_adapter.verify_sct(
        cert, chain, sigstore_adapter.keyring([log.public_key for log in model.ctlogs])
    )
    with pytest.raises(SigstoreVerificationError):
        sigstore_adapter.verify_sct(
            cert, chain, sigstore_adapter.keyring([log.public_key for log in model.tlogs])
        )


def test_raw_statement_is_signed_byte_for_byte() -> None:
    from sigstore import dsse

    # cosign 3's statement: no subject name, which sigstore's model would refuse
    statement = (
        b'{"_type":"https://in-toto.io/Statement/v1","subject":[{"digest":{"sha256":"ab"}}]}'
    )
    key = ec.generate_private_key(ec.SECP256R1())
    envelope = dsse._sign(key, sigstore_adapter.raw_statement(statement))
    doc = json.loads(envelope.to_json())
    parsed = sb.Envelope.from_json(doc)
    assert parsed.payload == statement
    assert parsed.payload_type == sb.INTOTO
    key.public_key().verify(parsed.signatures[0], parsed.pae(), ec.ECDSA(hashes.SHA256()))


def test_envelope_json_is_the_bundles_envelope(fake: FakeSigstore) -> None:
    from sigstore.models import Bundle

    made, envelope = FakeBackend(fake).sign_dsse_envelope(b'{"_type":"x"}')
    bundle = Bundle.from_json(made.to_json())
    got = sigstore_adapter.envelope_json(bundle)
    assert json.loads(got) == json.loads(envelope)


def test_timestamp_clients_of_a_context_without_tsa() -> None:
    class Context:
        _tsa_clients = None

    assert sigstore_adapter.timestamp_clients(Context()) == []


def test_timed_out_follows_the_cause_chain() -> None:
    import requests

    outer = RuntimeError("fulcio failed")
    outer.__cause__ = requests.ReadTimeout("read timeout=1")
    assert sigstore_adapter.timed_out(outer)
    assert not sigstore_adapter.timed_out(RuntimeError("refused"))
