"""Repository binding: a signature made for one repository never verifies for another.

The legacy payload names the repository (``docker-reference``); a Sigstore
bundle names it in the in-toto statement's subject ``name`` when policysupply
signs, and not at all when cosign 3 signs (its statement names only the
digest). A policy that asks for a repository (``repository``, the default, or
``exact``) refuses a signature that names none, and says how to opt out.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from policysupply import Bundle, ClaimMismatchError, Registry, Signer, TrustPolicy, Verifier
from policysupply._internal import cosign, keys, oci


@pytest.fixture
def reg(tmp_path: Path, fixtures_dir: Path) -> Registry:
    registry = Registry.local(tmp_path / "oci")
    registry.push(Bundle.from_directory(fixtures_dir / "pinned"), "acme/policy:1")
    return registry


def verifier(signer: Signer, **policy: Any) -> Verifier:
    return Verifier(TrustPolicy(keys=[signer.public_key_pem], **policy))


def copy_to(reg: Registry, tmp_path: Path, ref: str, *, host_dir: str = "copy") -> Registry:
    """The signed image and its signatures, re-published under another name."""
    target = Registry.local(tmp_path / host_dir)
    reg.copy("acme/policy:1", to=target, to_ref=ref)
    return target


def cosign3_statement(digest: str, annotations: dict[str, str] | None = None) -> bytes:
    """What cosign 3 signs for an image: the digest (and -a annotations), no name."""
    subject: dict[str, Any] = {"digest": {"sha256": digest.split(":", 1)[1]}}
    if annotations:
        subject["annotations"] = annotations
    return json.dumps(
        {
            "_type": cosign.STATEMENT_V1,
            "subject": [subject],
            "predicateType": cosign.SIGN_PREDICATE,
            "predicate": {},
        },
        separators=(",", ":"),
    ).encode()


def attach_cosign3_signature(reg: Registry, signer: Signer, ref: str, statement: bytes) -> None:
    """A key-signed bundle referrer exactly as cosign 3 attaches one (no tlog)."""
    pinned = oci.Reference.parse(ref).with_digest(reg.resolve(ref))
    signature = signer.sign_bytes(cosign.pae(cosign.INTOTO, statement))
    bundle = cosign.key_bundle(
        statement, signature, hashlib.sha256(keys.spki_der(signer._key)).digest()
    )
    Signer._attach_bundle(reg, pinned, bundle, cosign.SIGN_PREDICATE)


# -- our bundle signatures name the repository ----------------------------------------------


def test_bundle_signature_names_its_repository(reg: Registry) -> None:
    signer = Signer.generate()
    sig = signer.sign(reg, "acme/policy:1", scheme="bundle")
    (subject,) = json.loads(sig.payload)["subject"]
    assert subject["name"] == "acme/policy"
    for mode in ("repository", "exact", "any"):
        assert verifier(signer, docker_reference=mode).verify(reg, "acme/policy:1")


@pytest.mark.parametrize("mode", ["repository", "exact"])
@pytest.mark.parametrize("scheme", ["legacy", "bundle"])
def test_signature_for_another_repository_is_refused(
    reg: Registry, tmp_path: Path, scheme: str, mode: str
) -> None:
    signer = Signer.generate()
    signer.sign(reg, "acme/policy:1", scheme=scheme)  # type: ignore[arg-type]
    target = copy_to(reg, tmp_path, "acme/prod-policy:1")
    with pytest.raises(ClaimMismatchError, match="names 'acme/policy', not 'acme/prod-policy'"):
        verifier(signer, docker_reference=mode).verify(target, "acme/prod-policy:1")
    # An explicit opt-out accepts it (cosign's own behaviour).
    assert verifier(signer, docker_reference="any").verify(target, "acme/prod-policy:1")
    assert verifier(signer, docker_reference="off").verify(target, "acme/prod-policy:1")


def test_bundle_signature_survives_mirroring_but_not_exact(tmp_path: Path, reg: Registry) -> None:
    # A statement naming the repository on a registry host (as signing a remote image does).
    signer = Signer.generate()
    digest = reg.resolve("acme/policy:1")
    statement = cosign.sign_statement(digest, None, name="registry.example/acme/policy")
    attach_cosign3_signature(reg, signer, "acme/policy:1", statement)
    assert verifier(signer).verify(reg, "acme/policy:1")  # repository: any host
    with pytest.raises(ClaimMismatchError, match="not 'acme/policy'"):
        verifier(signer, docker_reference="exact").verify(reg, "acme/policy:1")


# -- cosign 3's bundle signatures name no repository --------------------------------------


@pytest.mark.parametrize("mode", ["repository", "exact"])
def test_signature_naming_no_repository_is_refused_with_the_opt_out(
    reg: Registry, mode: str
) -> None:
    signer = Signer.generate()
    digest = reg.resolve("acme/policy:1")
    attach_cosign3_signature(reg, signer, "acme/policy:1", cosign3_statement(digest))
    with pytest.raises(ClaimMismatchError, match=r'names no repository.*docker_reference="any"'):
        verifier(signer, docker_reference=mode).verify(reg, "acme/policy:1")


def test_cosign3_signature_for_another_repository_passes_only_when_opted_out(
    reg: Registry, tmp_path: Path
) -> None:
    # The attack: signed for acme/policy, presented as acme/prod-policy.
    signer = Signer.generate()
    digest = reg.resolve("acme/policy:1")
    attach_cosign3_signature(reg, signer, "acme/policy:1", cosign3_statement(digest))
    target = copy_to(reg, tmp_path, "acme/prod-policy:1")
    with pytest.raises(ClaimMismatchError, match="names no repository"):
        verifier(signer).verify(target, "acme/prod-policy:1")
    with pytest.raises(ClaimMismatchError, match="names no repository"):
        verifier(signer, docker_reference="exact").verify(target, "acme/prod-policy:1")
    # Opted out, a required annotation can bind the repository instead.
    assert verifier(signer, docker_reference="any").verify(target, "acme/prod-policy:1")


def test_cosign3_annotation_binding_under_any(reg: Registry, tmp_path: Path) -> None:
    signer = Signer.generate()
    digest = reg.resolve("acme/policy:1")
    statement = cosign3_statement(digest, {"repository": "acme/policy"})
    attach_cosign3_signature(reg, signer, "acme/policy:1", statement)
    target = copy_to(reg, tmp_path, "acme/prod-policy:1")
    strict = verifier(signer, docker_reference="any", annotations={"repository": "acme/policy"})
    assert strict.verify(reg, "acme/policy:1")
    wanted = verifier(
        signer, docker_reference="any", annotations={"repository": "acme/prod-policy"}
    )
    with pytest.raises(ClaimMismatchError, match="required annotation"):
        wanted.verify(target, "acme/prod-policy:1")


def test_legacy_signature_with_empty_docker_reference_is_refused(reg: Registry) -> None:
    signer = Signer.generate()
    digest = reg.resolve("acme/policy:1")
    payload = cosign.simple_signing_payload("", digest, None)
    signature = signer.sign_bytes(payload)
    layer = reg.put_blob("acme/policy", payload, media_type=cosign.SIMPLESIGNING)
    layers = [
        {
            **layer.to_json(),
            "annotations": {cosign.ANN_SIGNATURE: base64.b64encode(signature).decode()},
        }
    ]
    config = cosign.signature_config([str(layer.digest)])
    reg.put_blob("acme/policy", config, media_type=oci.CONFIG_V1)
    reg.put_manifest(
        f"acme/policy:{cosign.sig_tag(digest)}", cosign.signature_manifest(config, layers)
    )
    with pytest.raises(ClaimMismatchError, match="names no repository"):
        verifier(signer).verify(reg, "acme/policy:1")
    assert verifier(signer, docker_reference="any").verify(reg, "acme/policy:1")
