"""Signature material in a registry, as the verifier reads it (``policysupply.verifier``).

Anyone who can push may store signatures, attestations and referrers next to
an artifact. Each input becomes such material in a real OCI image layout
(on tmpfs), then ``Verifier.verify`` (or ``verify_blob``) runs over it:
cosign simple-signing payloads and their annotations (certificate, chain,
Rekor bundle, RFC 3161 timestamp, signed time), Sigstore bundle referrers
(DSSE envelopes, in-toto statements), cosign ``.att`` attestations, and plain
blobs with their Sigstore bundle.

Input layout (``tests/fuzz/make_seeds.py`` writes seeds in it)::

    flags(1 byte) claims 0x1e annotations 0x1e signature 0x1e blob

flags: bits 0-1 the mode (0 ``.sig`` payload, 1 bundle referrer, 2 ``.att``
attestation, 3 ``verify_blob``); bits 2-6 policy switches; bit 7 set: the
harness signs ``claims`` with the trusted key itself (so the fuzzer reaches
the claim checks behind the signature), clear: ``signature`` is used as is.
Annotations are ``key 0x1f value`` items separated by ``0x1d``.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import shutil
import tempfile
from pathlib import Path

from tests.fuzz import _harness

with _harness.instrumented():
    from policysupply import Bundle, Registry, TrustPolicy, Verifier
    from policysupply._internal import cosign, keys, oci
    from policysupply.bundle import Manifest
    from policysupply.identity import Identity
    from policysupply.signer import SigstoreBundle

MATERIAL = Path(__file__).parent / "material"
REPO = "acme/policy"
KEYLESS = Identity(
    issuer="https://token.actions.githubusercontent.com",
    subject_regex=r"https://github\.com/acme/.*",
)
_KEY = keys.load_private_key((MATERIAL / "fuzz-only.key").read_bytes(), None, what="fuzz key")
_PUB = keys.public_pem(_KEY)
_SPKI_SHA256 = hashlib.sha256(keys.spki_der(_KEY.public_key())).digest()
_ROOT = MATERIAL / "trusted_root.json"
# The subject every input's material is attached to: a fixed bundle.
_SUBJECT = Bundle(
    modules={"a.rego": "package a\n\nallow := true\n"}, manifest=Manifest(revision="1.0.0")
)
_TMP = Path(
    tempfile.mkdtemp(prefix="fuzz-verifier-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None)
)
_BASE = _TMP / "base"
_DIGEST = Registry.local(_BASE).push(_SUBJECT, f"{REPO}:1", created="2024-01-01T00:00:00Z").digest
# A genuine legacy signature of the subject (attestations are only looked at
# once the artifact's signatures pass).
_GOOD_PAYLOAD = cosign.simple_signing_payload(REPO, _DIGEST, None)


def _annotations(raw: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in raw.split(b"\x1d")[:8]:
        key, _, value = item.partition(b"\x1f")
        if key:
            out[key.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
    return out


def _sig_layer(reg: Registry, payload: bytes, signature: str, ann: dict[str, str]) -> dict:  # type: ignore[type-arg]
    desc = reg.put_blob(REPO, payload, media_type=cosign.SIMPLESIGNING)
    return oci.Descriptor(
        media_type=cosign.SIMPLESIGNING,
        digest=desc.digest,
        size=desc.size,
        annotations={**ann, cosign.ANN_SIGNATURE: signature},
    ).to_json()


def _put_sig_manifest(reg: Registry, suffix: str, layers: list[dict]) -> None:  # type: ignore[type-arg]
    config = cosign.signature_config([layer["digest"] for layer in layers])
    reg.put_blob(REPO, config, media_type=oci.CONFIG_V1)
    tag = cosign.sig_tag(_DIGEST)[: -len(".sig")] + suffix
    reg.put_manifest(f"{REPO}:{tag}", cosign.signature_manifest(config, layers))


def _b64sig(message: bytes) -> str:
    return base64.b64encode(keys.sign(_KEY, message)).decode()


def one_input(data: bytes) -> None:
    if not data:
        return
    flags = data[0]
    claims, ann_raw, signature, blob = (data[1:].split(b"\x1e") + [b""] * 4)[:4]
    mode, sign_here = flags & 3, bool(flags & 0x80)
    ann = _annotations(ann_raw)
    policy = TrustPolicy(
        keys=[_PUB],
        identities=[KEYLESS] if flags & 0x40 else [],
        docker_reference="repository" if flags & 4 else "off",
        annotations={"env": "prod"} if flags & 8 else {},
        max_signature_age=dt.timedelta(days=30) if flags & 0x10 else None,
        require_tlog=True if flags & 0x20 else None,
        attestations=("https://slsa.dev/provenance/v1",) if mode == 2 else (),
    )
    verifier = Verifier(policy, trusted_root=_ROOT)
    if mode == 3:
        verifier.verify_blob(blob, bundle=SigstoreBundle.from_json(claims))
        return
    root = _TMP / "reg"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(_BASE, root)
    reg = Registry.local(root)
    try:
        if mode == 0:
            sig = _b64sig(claims) if sign_here else signature.decode("utf-8", "replace")
            _put_sig_manifest(reg, ".sig", [_sig_layer(reg, claims, sig, ann)])
        elif mode == 1:
            bundle = claims
            if sign_here:
                pae = cosign.pae(cosign.INTOTO, claims)
                bundle = cosign.key_bundle(claims, keys.sign(_KEY, pae), _SPKI_SHA256)
            subject = oci.Descriptor(media_type=oci.MANIFEST_V1, digest=_DIGEST, size=1)
            manifest, config = cosign.bundle_manifest(
                bundle, subject, "2024-01-01T00:00:00Z", cosign.SIGN_PREDICATE
            )
            reg.put_blob(REPO, config, media_type=oci.EMPTY_V1)
            reg.put_blob(REPO, bundle, media_type=cosign.BUNDLE_V03)
            reg.put_manifest(REPO, manifest)
        else:
            good = _sig_layer(reg, _GOOD_PAYLOAD, _b64sig(_GOOD_PAYLOAD), {})
            _put_sig_manifest(reg, ".sig", [good])
            envelope = claims
            if sign_here:
                env = {
                    "payloadType": cosign.INTOTO,
                    "payload": base64.b64encode(claims).decode(),
                    "signatures": [{"sig": _b64sig(cosign.pae(cosign.INTOTO, claims))}],
                }
                envelope = json.dumps(env).encode()
            layer = reg.put_blob(REPO, envelope, media_type="application/vnd.dsse.envelope.v1+json")
            layer_json = {**layer.to_json(), "annotations": ann} if ann else layer.to_json()
            _put_sig_manifest(reg, ".att", [layer_json])
        verifier.verify(reg, f"{REPO}:1")
    finally:
        reg.close()


if __name__ == "__main__":
    _harness.run(one_input)
