"""Malformed signatures, attestations and referrers pushed by anyone with push access.

Each is skipped or counted as a failed candidate: verification never crashes
with a raw exception, and never passes because of one.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest

from policysupply import (
    Bundle,
    Gate,
    Registry,
    RegistryError,
    Signer,
    TrustPolicy,
    VerificationError,
    Verifier,
)
from policysupply._internal import cosign, keys, oci

REPO = "acme/p"
DEEP = "[" * 100_000 + "]" * 100_000


@pytest.fixture
def reg(tmp_path: Path) -> Registry:
    r = Registry.local(tmp_path / "oci")
    r.push(Bundle(modules={"a.rego": "package a\nallow := true\n"}), f"{REPO}:1")
    return r


def _statement(subject: object, predicate_type: str = cosign.SIGN_PREDICATE) -> bytes:
    doc = {"_type": cosign.STATEMENT_V1, "predicateType": predicate_type, "predicate": {}}
    if subject is not ...:
        doc["subject"] = subject
    return json.dumps(doc).encode()


def _signed_bundle_referrer(reg: Registry, signer: Signer, statement: bytes) -> None:
    """A Sigstore bundle referrer whose DSSE statement the (trusted) key really signed."""
    digest = reg.resolve(f"{REPO}:1")
    signature = signer.sign_bytes(cosign.pae(cosign.INTOTO, statement))
    spki = hashlib.sha256(keys.spki_der(keys.load_public_key(signer.public_key_pem, what="k")))
    bundle = cosign.key_bundle(statement, signature, spki.digest())
    subject = oci.Descriptor(media_type=oci.MANIFEST_V1, digest=digest, size=1)
    manifest, config = cosign.bundle_manifest(bundle, subject, "2024-01-01T00:00:00Z", "x")
    reg.put_blob(REPO, config, media_type=oci.EMPTY_V1)
    reg.put_blob(REPO, bundle, media_type=cosign.BUNDLE_V03)
    reg.put_manifest(REPO, manifest)


def _signed_att(reg: Registry, signer: Signer, statement: bytes) -> None:
    """A cosign ``.att`` DSSE envelope the (trusted) key really signed."""
    digest = reg.resolve(f"{REPO}:1")
    signature = signer.sign_bytes(cosign.pae(cosign.INTOTO, statement))
    env = json.dumps(
        {
            "payloadType": cosign.INTOTO,
            "payload": base64.b64encode(statement).decode(),
            "signatures": [{"sig": base64.b64encode(signature).decode()}],
        }
    ).encode()
    layer = reg.put_blob(REPO, env, media_type="application/vnd.dsse.envelope.v1+json")
    config = reg.put_blob(REPO, b"{}", media_type=oci.CONFIG_V1)
    manifest = {
        "schemaVersion": 2,
        "mediaType": oci.MANIFEST_V1,
        "config": config.to_json(),
        "layers": [layer.to_json()],
    }
    tag = cosign.sig_tag(digest)[: -len(".sig")] + ".att"
    reg.put_manifest(f"{REPO}:{tag}", json.dumps(manifest).encode())


MALFORMED_SUBJECTS = [
    ["x"],
    [{"digest": "abc"}],
    [{"digest": ["sha256"]}],
    [5, None],
    5,
    "abc",
    {"digest": {"sha256": "x"}},
    ...,  # no subject at all
]


@pytest.mark.parametrize("subject", MALFORMED_SUBJECTS)
def test_signed_bundle_statement_with_malformed_subject_fails_as_a_claim(
    reg: Registry, subject: object
) -> None:
    signer = Signer.generate()
    _signed_bundle_referrer(reg, signer, _statement(subject))
    with pytest.raises(VerificationError, match="does not name"):
        Verifier(TrustPolicy(keys=[signer.public_key_pem])).verify(reg, f"{REPO}:1")


@pytest.mark.parametrize("statement", [b"[1]", b'"x"', b"5", DEEP.encode()])
def test_signed_bundle_statement_that_is_no_object(reg: Registry, statement: bytes) -> None:
    signer = Signer.generate()
    _signed_bundle_referrer(reg, signer, statement)
    with pytest.raises(VerificationError):
        Verifier(TrustPolicy(keys=[signer.public_key_pem])).verify(reg, f"{REPO}:1")


def test_malformed_bundle_statement_beside_a_good_signature(reg: Registry) -> None:
    signer = Signer.generate()
    _signed_bundle_referrer(reg, signer, _statement(["x"]))
    signer.sign(reg, f"{REPO}:1", scheme="bundle")
    verified = Verifier(TrustPolicy(keys=[signer.public_key_pem])).verify(reg, f"{REPO}:1")
    assert len(verified.signatures) == 1


@pytest.mark.parametrize("subject", MALFORMED_SUBJECTS)
def test_attestation_with_malformed_subject_is_never_verified(
    reg: Registry, subject: object
) -> None:
    signer = Signer.generate()
    signer.sign(reg, f"{REPO}:1")
    _signed_att(reg, signer, _statement(subject, "https://example.com/p"))
    trusting = Verifier(TrustPolicy(keys=[signer.public_key_pem]))
    assert trusting.verify(reg, f"{REPO}:1", attestations=True).attestations == ()
    assert Gate(trusting, attestations=True).decide(reg, f"{REPO}:1").allowed
    requiring = Verifier(
        TrustPolicy(keys=[signer.public_key_pem], attestations=["https://example.com/p"])
    )
    with pytest.raises(VerificationError):
        requiring.verify(reg, f"{REPO}:1")
    decision = Gate(requiring, attestations=True).decide(reg, f"{REPO}:1")
    assert not decision.allowed


@pytest.mark.parametrize("envelope", [DEEP, "[1]", '{"payload": 5, "signatures": [1]}'])
def test_malformed_att_envelope_is_skipped(reg: Registry, envelope: str) -> None:
    signer = Signer.generate()
    signer.sign(reg, f"{REPO}:1")
    digest = reg.resolve(f"{REPO}:1")
    layer = reg.put_blob(
        REPO, envelope.encode(), media_type="application/vnd.dsse.envelope.v1+json"
    )
    config = reg.put_blob(REPO, b"{}", media_type=oci.CONFIG_V1)
    manifest = {"schemaVersion": 2, "config": config.to_json(), "layers": [layer.to_json()]}
    tag = cosign.sig_tag(digest)[: -len(".sig")] + ".att"
    reg.put_manifest(f"{REPO}:{tag}", json.dumps(manifest).encode())
    verified = Verifier(TrustPolicy(keys=[signer.public_key_pem])).verify(
        reg, f"{REPO}:1", attestations=True
    )
    assert verified.attestations == ()


@pytest.mark.parametrize(
    "fields",
    [
        {"annotations": 5},
        {"artifactType": 5},
        {"artifactType": cosign.BUNDLE_V03, "annotations": {"a": [1]}},
    ],
)
def test_malformed_referrer_beside_a_good_signature(
    reg: Registry, fields: dict[str, object]
) -> None:
    signer = Signer.generate()
    signer.sign(reg, f"{REPO}:1")
    digest = reg.resolve(f"{REPO}:1")
    empty = reg.put_blob(REPO, b"{}", media_type=oci.EMPTY_V1)
    manifest = {
        "schemaVersion": 2,
        "mediaType": oci.MANIFEST_V1,
        "config": empty.to_json(),
        "layers": [],
        "subject": {"mediaType": oci.MANIFEST_V1, "digest": digest, "size": 1},
        **fields,
    }
    reg.put_manifest(REPO, json.dumps(manifest).encode())
    verified = Verifier(TrustPolicy(keys=[signer.public_key_pem])).verify(reg, f"{REPO}:1")
    assert len(verified.signatures) == 1


def test_bundle_referrer_whose_manifest_is_gone_is_skipped(reg: Registry, tmp_path: Path) -> None:
    signer = Signer.generate()
    signer.sign(reg, f"{REPO}:1")
    _signed_bundle_referrer(reg, signer, _statement(["x"]))
    (found,) = reg.referrers(f"{REPO}:1", cosign.BUNDLE_V03)
    blob = tmp_path / "oci" / REPO / "blobs" / "sha256" / found.digest.split(":")[1]
    blob.unlink()  # listed in the index, but gone
    verified = Verifier(TrustPolicy(keys=[signer.public_key_pem])).verify(reg, f"{REPO}:1")
    assert len(verified.signatures) == 1


def test_blob_bundle_statement_with_malformed_subject(tmp_path: Path) -> None:
    signer = Signer.generate()
    good = json.loads(signer.sign_blob(b"hello").to_json())
    for payload in [_statement(["x"]), DEEP.encode(), b"[1]"]:
        good["dsseEnvelope"] = {
            "payloadType": cosign.INTOTO,
            "payload": base64.b64encode(payload).decode(),
            "signatures": [{"sig": base64.b64encode(b"x").decode()}],
        }
        with pytest.raises(VerificationError, match="does not name"):
            Verifier(TrustPolicy(keys=[signer.public_key_pem])).verify_blob(
                b"hello", bundle=json.dumps(good).encode()
            )


@pytest.mark.parametrize("how", ["blob gone", "blob too large"])
def test_junk_bundle_referrer_blocks_verification_of_a_good_signature(
    reg: Registry, tmp_path: Path, how: str
) -> None:
    # Anyone who can push adds a referrer whose bundle layer is missing (or
    # larger than a bundle may be): the good signature next to it must still
    # verify, as with a referrer whose manifest is gone.
    signer = Signer.generate()
    signer.sign(reg, f"{REPO}:1")
    digest = reg.resolve(f"{REPO}:1")
    empty = reg.put_blob(REPO, b"{}", media_type=oci.EMPTY_V1)
    body = b"x" * ((1 << 20) + 1) if how == "blob too large" else b"{}"
    layer = reg.put_blob(REPO, body, media_type=cosign.BUNDLE_V03)
    manifest = {
        "schemaVersion": 2,
        "mediaType": oci.MANIFEST_V1,
        "artifactType": cosign.BUNDLE_V03,
        "config": empty.to_json(),
        "layers": [layer.to_json()],
        "subject": {"mediaType": oci.MANIFEST_V1, "digest": digest, "size": 1},
    }
    reg.put_manifest(REPO, json.dumps(manifest).encode())
    if how == "blob gone":
        (tmp_path / "oci" / REPO / "blobs" / "sha256" / layer.digest.split(":")[1]).unlink()
    verified = Verifier(TrustPolicy(keys=[signer.public_key_pem])).verify(reg, f"{REPO}:1")
    assert len(verified.signatures) == 1


def test_signature_layers_of_a_megabyte_each_fill_memory(reg: Registry) -> None:
    # cosign's limit of 1000 layers with payloads of up to 1 MiB each lets
    # anyone with push access make every verifier hold a gigabyte. The
    # signature material read for one artifact is bounded in total.
    signer = Signer.generate()
    signer.sign(reg, f"{REPO}:1")
    tag = cosign.sig_tag(reg.resolve(f"{REPO}:1"))
    manifest = json.loads(reg.get_manifest(f"{REPO}:{tag}")[0])
    for i in range(20):
        junk = reg.put_blob(REPO, bytes([i]) * (1 << 20), media_type=cosign.SIMPLESIGNING)
        layer = junk.to_json()
        layer["annotations"] = {cosign.ANN_SIGNATURE: base64.b64encode(b"x").decode()}
        manifest["layers"].append(layer)
    reg.put_manifest(f"{REPO}:{tag}", json.dumps(manifest).encode())
    with pytest.raises(RegistryError, match="signature material"):
        Verifier(TrustPolicy(keys=[signer.public_key_pem])).verify(reg, f"{REPO}:1")


def test_bundle_referrers_of_a_megabyte_each_fill_memory(reg: Registry) -> None:
    signer = Signer.generate()
    signer.sign(reg, f"{REPO}:1")
    digest = reg.resolve(f"{REPO}:1")
    empty = reg.put_blob(REPO, b"{}", media_type=oci.EMPTY_V1)
    for i in range(20):
        layer = reg.put_blob(REPO, bytes([i]) * (1 << 20), media_type=cosign.BUNDLE_V03)
        manifest = {
            "schemaVersion": 2,
            "mediaType": oci.MANIFEST_V1,
            "artifactType": cosign.BUNDLE_V03,
            "config": empty.to_json(),
            "layers": [layer.to_json()],
            "subject": {"mediaType": oci.MANIFEST_V1, "digest": digest, "size": 1},
        }
        reg.put_manifest(REPO, json.dumps(manifest).encode())
    with pytest.raises(RegistryError, match="signature material"):
        Verifier(TrustPolicy(keys=[signer.public_key_pem])).verify(reg, f"{REPO}:1")
