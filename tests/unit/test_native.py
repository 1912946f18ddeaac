"""OPA-native bundle signatures: vectors made by real OPA, our signer, and attacks on verification.

The vectors in tests/fixtures/opa_signed/out were written by ``opa build
--signing-key`` / ``opa sign`` (OPA v1.22.2, see regen.sh there); the live
two-way tests against OPA are in tests/interop/test_opa_native.py.
"""

from __future__ import annotations

import base64
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import attrs
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from policysupply import Bundle, Manifest
from policysupply._internal import opa_signatures as osig
from policysupply._internal.tarball import read_entries, write_entries
from policysupply.errors import (
    ClaimMismatchError,
    DigestMismatchError,
    FileDigestMismatchError,
    MalformedSignatureError,
    MissingSignedFileError,
    NoSignatureError,
    ScopeMismatchError,
    SignedContentError,
    SigningError,
    ThresholdNotMetError,
    UnsafeExclusionError,
    UnsignedFileError,
    UntrustedSignatureError,
    VerificationError,
)
from policysupply.native import NativeKey, NativeTrust, verify_entries, verify_native

VECTORS = Path(__file__).resolve().parents[1] / "fixtures" / "opa_signed"
KEYS = VECTORS / "keys"
OUT = VECTORS / "out"


def _pem(key: Any) -> bytes:
    return key.private_bytes(  # type: ignore[no-any-return]
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def rsa_key2() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_keys() -> dict[str, ec.EllipticCurvePrivateKey]:
    return {
        "ES256": ec.generate_private_key(ec.SECP256R1()),
        "ES384": ec.generate_private_key(ec.SECP384R1()),
        "ES512": ec.generate_private_key(ec.SECP521R1()),
    }


@pytest.fixture
def bundle() -> Bundle:
    return Bundle(
        manifest=Manifest(revision="r1", roots=("k8s", "lib")),
        modules={
            "k8s/deny.rego": 'package k8s\n\ndeny contains "x" if input.bad\n',
            "lib/util.rego": "package lib\n\nlimit := data.lib.max\n",
        },
        data={"lib": {"max": 1.5, "sep": "a\u2028b", "html": "<&>"}},
    )


def trust_for(key: Any, kid: str = "k1", alg: str = "RS256", **kw: Any) -> NativeTrust:
    material = key if isinstance(key, bytes) else key.public_key()
    return NativeTrust(keys={kid: NativeKey(key=material, algorithm=alg)}, **kw)


def sigs_of(b: Bundle) -> dict[str, Any]:
    return json.loads(b.files[".signatures.json"])  # type: ignore[no-any-return]


def payload_of(token: str) -> dict[str, Any]:
    p = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))  # type: ignore[no-any-return]


def retar(entries: dict[str, bytes]) -> bytes:
    return write_entries(entries)


def signatures_file_of(path: Path) -> bytes:
    with tarfile.open(path) as tf:
        f = tf.extractfile("/.signatures.json")
        assert f is not None
        return f.read()


# -- vectors written by real OPA ------------------------------------------------------


VECTOR_CASES = {
    "rs256": ("default", "rsa.pub", "RS256", {}),
    "rs512-kid": ("ci-2026", "rsa.pub", "RS512", {}),
    "rs256-claims": ("ci", "rsa.pub", "RS256", {"key_id": "ci", "scope": "prod"}),
    "ps256": ("default", "rsa.pub", "PS256", {}),
    "es256": ("default", "ec-P-256.pub", "ES256", {}),
    "es384": ("default", "ec-P-384.pub", "ES384", {}),
    "es512": ("default", "ec-P-521.pub", "ES512", {}),
    "hs256": ("default", "hmac.secret", "HS256", {}),
    "opa-sign": ("ci", "rsa.pub", "RS256", {"key_id": "ci"}),
    "plain-rs256": ("default", "rsa.pub", "RS256", {}),
    "plain-hs512": ("hk", "hmac.secret", "HS512", {}),
}


def vector_trust(name: str) -> NativeTrust:
    kid, keyfile, alg, kw = VECTOR_CASES[name]
    raw = (KEYS / keyfile).read_bytes()
    return NativeTrust(keys={kid: NativeKey(key=raw, algorithm=alg)}, **kw)


@pytest.mark.parametrize("name", sorted(VECTOR_CASES))
def test_bundles_signed_by_opa_verify(name: str) -> None:
    trust = vector_trust(name)
    result = verify_native(OUT / f"{name}.tar.gz", trust)
    assert len(result.signatures) == 1
    b = Bundle.from_file(OUT / f"{name}.tar.gz", native=trust)
    assert b.verify_native(trust).key_ids == result.key_ids
    # Written again, the bundle still carries a signature OPA accepts.
    assert verify_native(b.to_bytes(), trust).key_ids == result.key_ids


def test_opa_claims_vector_reports_claims_and_scope() -> None:
    r = verify_native(OUT / "rs256-claims.tar.gz", vector_trust("rs256-claims"))
    sig = r.signatures[0]
    assert sig.scope == "prod"
    assert sig.claims["iss"] == "ci<&>"
    assert sig.claims["iat"] == 1700000000
    assert "keyid" not in sig.claims  # opa build leaves it out when claims are given


def test_opa_sign_yaml_vector_is_hashed_as_opa_converts_yaml() -> None:
    # 1.0 -> 1, 2.5e-7 -> 2.5e-7, keys sorted: what OPA's YAML-to-JSON step makes.
    verify_native(OUT / "opa-sign.tar.gz", vector_trust("opa-sign"))


def test_yaml_1_1_spellings_fail_closed() -> None:
    # PyYAML reads `yes` as true and `1e3` as a string; OPA (go-yaml v3) reads
    # "yes" and 1000. The hashes then differ and we refuse rather than accept
    # data that OPA would read differently.
    with pytest.raises(FileDigestMismatchError) as err:
        verify_native(OUT / "opa-sign-yaml11.tar.gz", vector_trust("opa-sign"))
    assert err.value.entry == "x/data.yaml"


@pytest.mark.parametrize(
    ("vector", "kwargs"),
    [
        ("plain-rs256", {"key": "rsa.pem", "key_id": "default"}),
        ("plain-hs512", {"key": "hmac.secret", "alg": "HS512", "key_id": "hk"}),
        ("plain-rs256-claims", {"key": "rsa.pem", "claims": "claims.json"}),
    ],
)
def test_our_signature_is_byte_identical_to_opa_build(vector: str, kwargs: dict[str, Any]) -> None:
    unsigned = Bundle.from_file(OUT / "plain-unsigned.tar.gz")
    key = (KEYS / kwargs.pop("key")).read_bytes()
    if "claims" in kwargs:
        kwargs["claims"] = osig.parse_claims((VECTORS / kwargs["claims"]).read_bytes())
    signed = unsigned.sign(key, **kwargs)
    assert signed.files[".signatures.json"] == signatures_file_of(OUT / f"{vector}.tar.gz")


# -- our signer ------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"])
def test_sign_verify_rsa_algorithms(bundle: Bundle, rsa_key: rsa.RSAPrivateKey, alg: str) -> None:
    signed = bundle.sign(rsa_key, alg=alg, key_id="k1")
    r = signed.verify_native(trust_for(rsa_key, alg=alg))
    assert r.signatures[0].algorithm == alg


@pytest.mark.parametrize("alg", ["ES256", "ES384", "ES512"])
def test_sign_verify_ecdsa_algorithms(
    bundle: Bundle, ec_keys: dict[str, ec.EllipticCurvePrivateKey], alg: str
) -> None:
    signed = bundle.sign(_pem(ec_keys[alg]), key_id="k1")  # alg from the curve
    token = sigs_of(signed)["signatures"][0]
    assert json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))["alg"] == alg
    signed.verify_native(trust_for(ec_keys[alg], alg=alg))


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_sign_verify_hmac_algorithms(bundle: Bundle, alg: str) -> None:
    signed = bundle.sign(b"s3cret", alg=alg, key_id="k1")
    signed.verify_native(trust_for(b"s3cret", alg=alg))
    with pytest.raises(UntrustedSignatureError):
        signed.verify_native(trust_for(b"other", alg=alg))


def test_signing_changes_nothing_but_the_signatures_file(
    bundle: Bundle, rsa_key: rsa.RSAPrivateKey
) -> None:
    signed = bundle.sign(rsa_key, key_id="k1")
    before = read_entries(bundle.to_bytes())
    after = read_entries(signed.to_bytes())
    assert set(after) == set(before) | {".signatures.json"}
    assert all(after[n] == before[n] for n in before)


def test_deterministic_algorithms_give_identical_bytes(
    bundle: Bundle, rsa_key: rsa.RSAPrivateKey, ec_keys: dict[str, ec.EllipticCurvePrivateKey]
) -> None:
    for key, alg in ((rsa_key, "RS256"), (b"k", "HS256")):
        assert bundle.sign(key, alg=alg).to_bytes() == bundle.sign(key, alg=alg).to_bytes()
    if osig._deterministic_ecdsa():
        k = ec_keys["ES256"]
        assert bundle.sign(k).to_bytes() == bundle.sign(k).to_bytes()
    # PSS salts are random: same content, same file list, different signature.
    a, b = (sigs_of(bundle.sign(rsa_key, alg="PS256")) for _ in range(2))
    assert a != b
    assert payload_of(a["signatures"][0]) == payload_of(b["signatures"][0])


def test_token_shape_matches_opa_build(bundle: Bundle, rsa_key: rsa.RSAPrivateKey) -> None:
    sigfile = bundle.sign(rsa_key, key_id="ci").files[".signatures.json"].decode()
    assert sigfile.startswith('{\n "signatures": [\n  "ey')
    assert sigfile.endswith('"\n ],\n "plugin": "_default"\n}')
    token = json.loads(sigfile)["signatures"][0]
    header = base64.urlsafe_b64decode(token.split(".")[0] + "==")
    assert header == b'{"alg":"RS256","kid":"ci","typ":"JWT"}'
    payload = payload_of(token)
    assert payload["keyid"] == "ci"
    assert [f["name"] for f in payload["files"]] == [
        "k8s/deny.rego",
        "lib/util.rego",
        "data.json",
        ".manifest",
    ]
    assert all(f["algorithm"] == "SHA-256" and len(f["hash"]) == 64 for f in payload["files"])
    assert all(f["hash"] == f["hash"].lower() for f in payload["files"])


def test_without_key_id_no_kid_is_written(bundle: Bundle, rsa_key: rsa.RSAPrivateKey) -> None:
    token = sigs_of(bundle.sign(rsa_key))["signatures"][0]
    assert b"kid" not in base64.urlsafe_b64decode(token.split(".")[0] + "==")
    assert "keyid" not in payload_of(token)
    # A verifier then needs to be told the key, as OPA's signing.keyid does.
    with pytest.raises(UntrustedSignatureError, match="names no key"):
        bundle.sign(rsa_key).verify_native(trust_for(rsa_key))
    bundle.sign(rsa_key).verify_native(trust_for(rsa_key, key_id="k1"))


def test_scope_and_claims(bundle: Bundle, rsa_key: rsa.RSAPrivateKey) -> None:
    signed = bundle.sign(rsa_key, key_id="k1", scope="prod", claims={"iss": "ci", "aud": "opa"})
    payload = payload_of(sigs_of(signed)["signatures"][0])
    assert payload["scope"] == "prod"
    assert payload["aud"] == ["opa"]  # as OPA's token builder normalises it
    assert "keyid" not in payload
    assert signed.verify_native(trust_for(rsa_key, scope="prod")).signatures[0].scope == "prod"


@pytest.mark.parametrize(
    "claims",
    [{"files": []}, {"iat": "yesterday"}, {"iat": 1.5}, {"iss": 3}, {"aud": [1]}],
)
def test_claims_opa_would_write_differently_are_refused(
    bundle: Bundle, rsa_key: rsa.RSAPrivateKey, claims: dict[str, Any]
) -> None:
    with pytest.raises(SigningError):
        bundle.sign(rsa_key, claims=claims)


def test_key_that_does_not_fit_the_algorithm_is_refused(
    bundle: Bundle, rsa_key: rsa.RSAPrivateKey, ec_keys: dict[str, ec.EllipticCurvePrivateKey]
) -> None:
    with pytest.raises(SigningError):
        bundle.sign(rsa_key, alg="ES256")
    with pytest.raises(SigningError):
        bundle.sign(ec_keys["ES384"], alg="ES256")  # RFC 7518: ES256 is P-256 only
    with pytest.raises(SigningError):
        bundle.sign(rsa_key, alg="none")
    with pytest.raises(SigningError):
        bundle.sign("/no/such/key.pem")


def test_sign_with_a_cosign_signer_and_a_pem_path(bundle: Bundle, tmp_path: Path) -> None:
    from policysupply import Signer

    signer = Signer.generate()
    signed = bundle.sign(signer, key_id="cosign")
    key = NativeKey(key=signer.public_key_pem, algorithm="ES256")
    signed.verify_native(NativeTrust(keys={"cosign": key}))
    pem = tmp_path / "k.pem"
    pem.write_bytes(_pem(signer._key))
    bundle.sign(str(pem), key_id="cosign").verify_native(NativeTrust(keys={"cosign": key}))


def test_signed_bundle_round_trips_byte_identically(
    bundle: Bundle, rsa_key: rsa.RSAPrivateKey
) -> None:
    signed = bundle.sign(rsa_key, key_id="k1")
    again = Bundle.from_bytes(signed.to_bytes(), native=trust_for(rsa_key))
    assert again.to_bytes() == signed.to_bytes()
    assert again.digest == signed.digest


def test_resigning_replaces_and_append_adds(bundle: Bundle, rsa_key: rsa.RSAPrivateKey) -> None:
    once = bundle.sign(rsa_key, key_id="k1")
    assert len(sigs_of(once.sign(rsa_key, key_id="k1"))["signatures"]) == 1
    assert len(sigs_of(once.sign(rsa_key, key_id="k2", append=True))["signatures"]) == 2


def test_bundle_with_exotic_numbers_keeps_its_signed_bytes() -> None:
    # OPA keeps number text (1.50, 1e2, -0) in data.json; rewriting it as
    # Python floats would change the canonical hash. The bundle keeps its
    # entries as read, so what it writes still verifies.
    raw = (OUT / "rs256.tar.gz").read_bytes()
    trust = vector_trust("rs256")
    b = Bundle.from_bytes(raw, native=trust)
    assert b"1.50" in b.entries()["data.json"]
    verify_native(b.to_bytes(), trust)
    # Changing the bundle drops the source: the old signature no longer fits.
    changed = attrs.evolve(b, manifest=Manifest(revision="other"))
    with pytest.raises(FileDigestMismatchError):
        changed.verify_native(trust)


def test_resigning_an_opa_built_bundle_keeps_its_bytes(rsa_key: rsa.RSAPrivateKey) -> None:
    b = Bundle.from_file(OUT / "rs256.tar.gz")
    resigned = b.sign(rsa_key, key_id="k1")
    resigned.verify_native(trust_for(rsa_key))
    assert resigned.entries()["data.json"] == b.entries()["data.json"]
    Bundle.from_bytes(resigned.to_bytes()).verify_native(trust_for(rsa_key))


# -- key rotation and thresholds -----------------------------------------------------


def test_rotation_trusts_old_and_new_keys_at_once(
    bundle: Bundle, rsa_key: rsa.RSAPrivateKey, rsa_key2: rsa.RSAPrivateKey
) -> None:
    trust = NativeTrust(
        keys={
            "2025": NativeKey(key=rsa_key.public_key()),
            "2026": NativeKey(key=rsa_key2.public_key()),
        }
    )
    assert bundle.sign(rsa_key, key_id="2025").verify_native(trust).key_ids == ("2025",)
    assert bundle.sign(rsa_key2, key_id="2026").verify_native(trust).key_ids == ("2026",)
    # signing.keyid pins one key, whatever the token's kid says.
    pinned = attrs.evolve(trust, key_id="2026")
    with pytest.raises(UntrustedSignatureError):
        bundle.sign(rsa_key, key_id="2026").verify_native(pinned)


def test_threshold_across_keys(
    bundle: Bundle, rsa_key: rsa.RSAPrivateKey, rsa_key2: rsa.RSAPrivateKey
) -> None:
    trust = NativeTrust(
        keys={"a": NativeKey(key=rsa_key.public_key()), "b": NativeKey(key=rsa_key2.public_key())},
        threshold=2,
    )
    one = bundle.sign(rsa_key, key_id="a")
    with pytest.raises(ThresholdNotMetError):
        one.verify_native(trust)
    both = one.sign(rsa_key2, key_id="b", append=True)
    assert both.verify_native(trust).key_ids == ("a", "b")
    # Two tokens by the same key count once.
    twice = one.sign(rsa_key, key_id="a", append=True)
    with pytest.raises(ThresholdNotMetError):
        twice.verify_native(trust)
    with pytest.raises(VerificationError):
        NativeTrust(keys={"a": NativeKey(key=rsa_key.public_key())}, threshold=2)


def test_token_by_an_unknown_key_is_ignored_not_counted(
    bundle: Bundle, rsa_key: rsa.RSAPrivateKey, rsa_key2: rsa.RSAPrivateKey
) -> None:
    both = bundle.sign(rsa_key, key_id="a").sign(rsa_key2, key_id="retired", append=True)
    r = both.verify_native(trust_for(rsa_key, kid="a"))
    assert r.key_ids == ("a",)
    assert any("retired" in i for i in r.ignored)


# -- attacks ---------------------------------------------------------------------------


def signed_entries(bundle: Bundle, key: Any, **kw: Any) -> dict[str, bytes]:
    return read_entries(bundle.sign(key, key_id="k1", **kw).to_bytes())


def test_attack_file_added_after_signing(bundle: Bundle, rsa_key: rsa.RSAPrivateKey) -> None:
    e = signed_entries(bundle, rsa_key)
    e["k8s/backdoor.rego"] = b"package k8s\n\nallow := true\n"
    with pytest.raises(UnsignedFileError) as err:
        verify_native(retar(e), trust_for(rsa_key))
    assert err.value.entry == "k8s/backdoor.rego"
    assert isinstance(err.value, SignedContentError)


def test_attack_signed_file_removed(bundle: Bundle, rsa_key: rsa.RSAPrivateKey) -> None:
    e = signed_entries(bundle, rsa_key)
    del e["k8s/deny.rego"]
    with pytest.raises(MissingSignedFileError) as err:
        verify_native(retar(e), trust_for(rsa_key))
    assert err.value.entry == "k8s/deny.rego"


def test_attack_one_file_changed(bundle: Bundle, rsa_key: rsa.RSAPrivateKey) -> None:
    e = signed_entries(bundle, rsa_key)
    e["k8s/deny.rego"] = e["k8s/deny.rego"].replace(b"input.bad", b"false")
    with pytest.raises(FileDigestMismatchError) as err:
        verify_native(retar(e), trust_for(rsa_key))
    assert isinstance(err.value, DigestMismatchError)
    assert err.value.entry == "k8s/deny.rego"


def test_attack_data_changed(bundle: Bundle, rsa_key: rsa.RSAPrivateKey) -> None:
    e = signed_entries(bundle, rsa_key)
    e["data.json"] = e["data.json"].replace(b"1.5", b"9.5")
    with pytest.raises(FileDigestMismatchError):
        Bundle.from_bytes(retar(e), native=trust_for(rsa_key))


def test_attack_signature_by_untrusted_key(
    bundle: Bundle, rsa_key: rsa.RSAPrivateKey, rsa_key2: rsa.RSAPrivateKey
) -> None:
    forged = bundle.sign(rsa_key2, key_id="k1")  # the attacker's key, the trusted kid
    with pytest.raises(UntrustedSignatureError, match="forged"):
        Bundle.from_bytes(forged.to_bytes(), native=trust_for(rsa_key))
    other = bundle.sign(rsa_key2, key_id="attacker")
    with pytest.raises(UntrustedSignatureError, match="not trusted"):
        other.verify_native(trust_for(rsa_key))


def test_attack_scope_mismatch(bundle: Bundle, rsa_key: rsa.RSAPrivateKey) -> None:
    staging = bundle.sign(rsa_key, key_id="k1", scope="staging")
    with pytest.raises(ScopeMismatchError) as err:
        staging.verify_native(trust_for(rsa_key, scope="prod"))
    assert isinstance(err.value, ClaimMismatchError)
    # No scope required: a scoped token does not match either (OPA compares equal).
    with pytest.raises(ScopeMismatchError):
        staging.verify_native(trust_for(rsa_key))
    # The key's own scope applies when the trust sets none.
    key_scoped = NativeTrust(keys={"k1": NativeKey(key=rsa_key.public_key(), scope="staging")})
    staging.verify_native(key_scoped)


def test_attack_two_tokens_one_forged(
    bundle: Bundle, rsa_key: rsa.RSAPrivateKey, rsa_key2: rsa.RSAPrivateKey
) -> None:
    good = bundle.sign(rsa_key, key_id="k1")
    forged = bundle.sign(rsa_key2, key_id="k1")  # claims the trusted kid
    tokens = [sigs_of(good)["signatures"][0], sigs_of(forged)["signatures"][0]]
    for order in (tokens, tokens[::-1]):
        e = read_entries(good.to_bytes())
        e[".signatures.json"] = osig.encode_signatures_file(order)
        with pytest.raises(UntrustedSignatureError, match="forged"):
            verify_native(retar(e), trust_for(rsa_key))


def test_attack_second_token_lists_a_smuggled_file(
    bundle: Bundle, rsa_key: rsa.RSAPrivateKey, rsa_key2: rsa.RSAPrivateKey
) -> None:
    # A valid token by a trusted key covers the original files; an extra
    # token by an untrusted key lists a smuggled module too. The valid token
    # is checked against everything in the bundle, so the extra file fails.
    evil = attrs.evolve(bundle, modules={**bundle.modules, "k8s/evil.rego": "package k8s\n"})
    good = sigs_of(bundle.sign(rsa_key, key_id="k1"))["signatures"][0]
    extra = sigs_of(evil.sign(rsa_key2, key_id="attacker"))["signatures"][0]
    e = read_entries(evil.to_bytes())
    e[".signatures.json"] = osig.encode_signatures_file([extra, good])
    with pytest.raises(UnsignedFileError):
        verify_native(retar(e), trust_for(rsa_key))


def test_attack_exclude_files_slips_rego_past_verification(
    bundle: Bundle, rsa_key: rsa.RSAPrivateKey
) -> None:
    e = signed_entries(bundle, rsa_key)
    e["k8s/deny.rego"] = b"package k8s\n\ndeny := set()\n"
    refuse = trust_for(rsa_key, exclude_files=("k8s/*",))
    with pytest.raises(UnsafeExclusionError, match=r"k8s/deny\.rego"):
        verify_native(retar(e), refuse)
    warn = attrs.evolve(refuse, excluded_content="warn")
    r = verify_native(retar(e), warn)  # what OPA itself does with this config
    assert r.excluded == ("k8s/deny.rego",)
    assert r.warnings
    # Excluding files OPA ignores is fine either way.
    e2 = signed_entries(bundle, rsa_key)
    e2["README.md"] = b"unsigned notes"
    verify_native(retar(e2), trust_for(rsa_key, exclude_files=("*.md",)))


def test_attack_canonical_form_matches_but_bytes_differ(
    bundle: Bundle, rsa_key: rsa.RSAPrivateKey
) -> None:
    e = signed_entries(bundle, rsa_key)
    original = json.loads(e["data.json"])
    # Reformatted, keys reordered, an escape spelled differently: the same
    # document, so OPA's hash matches and OPA loads exactly this value...
    pretty = json.dumps(original, indent=3, ensure_ascii=True)[::1]
    reordered = json.dumps(dict(reversed(list(json.loads(pretty).items()))), indent=1)
    e["data.json"] = reordered.replace("<", "\\u003c").encode()
    b = Bundle.from_bytes(retar(e), native=trust_for(rsa_key))
    assert b.data == bundle.data  # ...and so do we.
    # The same number written differently is another document to OPA
    # (1.5 vs 1.50): refused, though both are the same Python float.
    e["data.json"] = e["data.json"].replace(b"1.5", b"1.50")
    assert json.loads(e["data.json"]) == original
    with pytest.raises(FileDigestMismatchError):
        verify_native(retar(e), trust_for(rsa_key))


def test_attack_algorithm_confusion(bundle: Bundle, rsa_key: rsa.RSAPrivateKey) -> None:
    # HS256 "signed" with the RSA public key's PEM as the HMAC secret.
    pub_pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    forged = bundle.sign(pub_pem, alg="HS256", key_id="k1")
    with pytest.raises(UntrustedSignatureError):
        forged.verify_native(trust_for(rsa_key))


def test_attack_field_spelled_differently(bundle: Bundle, rsa_key: rsa.RSAPrivateKey) -> None:
    # Go's decoder reads "Scope" as scope; a payload with both spellings is ambiguous.
    with pytest.raises(MalformedSignatureError, match="Scope"):
        bundle.sign(rsa_key, key_id="k1", claims={"Scope": "prod"}).verify_native(
            trust_for(rsa_key)
        )


def test_attack_weak_file_hash(bundle: Bundle, rsa_key: rsa.RSAPrivateKey) -> None:
    import hashlib

    entries = bundle.entries()
    files = [
        (n, hashlib.md5(osig.canonical_form(n, entries[n])).hexdigest())  # noqa: S324
        for n in osig.signing_order(entries)
    ]
    token = osig.make_token(files, alg="RS256", key=rsa_key, key_id="k1", claims=None)
    token = _resign_with_alg(token, rsa_key, "MD5")
    entries[".signatures.json"] = osig.encode_signatures_file([token])
    with pytest.raises(MalformedSignatureError, match="MD5"):
        verify_entries(entries, trust_for(rsa_key))
    verify_entries(entries, trust_for(rsa_key, allow_weak_hashes=True))


def _resign_with_alg(token: str, key: Any, hash_name: str) -> str:
    h64, p64, _ = token.split(".")
    payload = payload_of(token)
    for f in payload["files"]:
        f["algorithm"] = hash_name
    p64 = osig.b64url(json.dumps(payload, separators=(",", ":")).encode())
    si = f"{h64}.{p64}".encode()
    return f"{h64}.{p64}.{osig.b64url(osig.jws_sign('RS256', key, si))}"


def test_attack_second_signatures_file(bundle: Bundle, rsa_key: rsa.RSAPrivateKey) -> None:
    e = signed_entries(bundle, rsa_key)
    e["k8s/.signatures.json"] = e[".signatures.json"]
    with pytest.raises(MalformedSignatureError, match="more than one"):
        verify_native(retar(e), trust_for(rsa_key))


def test_unsigned_bundle_is_refused_when_a_signature_is_required(
    bundle: Bundle, rsa_key: rsa.RSAPrivateKey
) -> None:
    with pytest.raises(NoSignatureError):
        Bundle.from_bytes(bundle.to_bytes(), native=trust_for(rsa_key))
    e = bundle.entries()
    e[".signatures.json"] = b"{}"
    with pytest.raises(NoSignatureError):
        verify_entries(e, trust_for(rsa_key))
    e[".signatures.json"] = b'{"signatures": []}'
    with pytest.raises(NoSignatureError):
        verify_entries(e, trust_for(rsa_key))


@pytest.mark.parametrize(
    "content",
    [
        b"not json",
        b"[]",
        b'{"signatures": "x"}',
        b'{"signatures": ["a.b"]}',
        b'{"signatures": ["!!.e30.AA"]}',
        b'{"signatures": ["e30.e30.AA"], "plugin": "custom"}',
    ],
)
def test_malformed_signatures_file(
    bundle: Bundle, rsa_key: rsa.RSAPrivateKey, content: bytes
) -> None:
    e = bundle.entries()
    e[".signatures.json"] = content
    with pytest.raises(MalformedSignatureError):
        verify_entries(e, trust_for(rsa_key))


def test_trust_from_and_to_opa_config(rsa_key: rsa.RSAPrivateKey) -> None:
    pem = (
        rsa_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    config = {
        "keys": {"ci": {"key": pem, "algorithm": "PS256", "scope": "write"}},
        "bundles": {"authz": {"signing": {"keyid": "ci", "exclude_files": ["*.md"]}}},
    }
    trust = NativeTrust.from_opa_config(config, "authz")
    assert trust.key_id == "ci"
    assert trust.keys["ci"].algorithm == "PS256"
    assert trust.exclude_files == ("*.md",)
    assert trust.to_opa_config("authz") == config
    hmac = NativeTrust(keys={"h": NativeKey(key="secret", algorithm="HS256")})
    with pytest.raises(VerificationError, match="secret"):
        hmac.to_opa_config("authz")
    assert hmac.to_opa_config("authz", include_secrets=True)["keys"]["h"]["key"] == "secret"


# -- format details --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "name", "match"),
    [
        ("*.md", "README.md", True),
        ("*.md", "docs/README.md", False),  # * stops at /
        ("docs/*", "docs/a/b", False),
        ("?.rego", "a.rego", True),
        ("[ab].rego", "b.rego", True),
        ("[^ab].rego", "c.rego", True),
        ("[^ab].rego", "a.rego", False),
        ("[a-c]*", "b/x", False),
        ("\\*", "*", True),
        ("[", "[", False),  # malformed: matches nothing
        ("[]a]", "]", False),
        ("data.json", "data.json", True),
    ],
)
def test_exclude_patterns_follow_go_filepath_match(pattern: str, name: str, match: bool) -> None:
    assert osig.go_match(pattern, name) is match


def test_canonical_json_matches_opa_hashing_rules() -> None:
    raw = b'{"b": [1.50, 1e2, -0, 10], "a": "<&>\\u2028\\u0001\\b\\ud800", "a": "x"}'
    assert osig.canonical_json(raw, entry="data.json") == b'{"a":"x","b":[1.50,1e2,-0,10]}'
    raw = b'{"s": "<&>\\u2028\\u0001\\b\\t\\ud800\\u00e9", "n": 0.5}'
    assert (
        osig.canonical_json(raw, entry="data.json")
        == '{"n":0.5,"s":"<&>\\u2028\\u0001\\b\\t\ufffd\u00e9"}'.encode()
    )


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1.0, "1"),
        (2.5e-7, "2.5e-7"),
        (1e21, "1e+21"),
        (1e20, "100000000000000000000"),
        (0.000001, "0.000001"),
        (-0.0, "-0"),
        (123.456, "123.456"),
    ],
)
def test_go_float_formatting(value: float, text: str) -> None:
    assert osig.go_float(value) == text


def test_payload_strings_are_html_escaped_like_go() -> None:
    assert osig.go_string("<a&b>\u2028", html=True) == '"\\u003ca\\u0026b\\u003e\\u2028"'
    assert osig.go_string("<a&b>\u2028", html=False) == '"<a&b>\\u2028"'


def test_signed_tarball_reads_with_tar_root_entry(tmp_path: Path) -> None:
    # `tar -C dir -czf x .` writes a "./" entry for the root itself.
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        d = tarfile.TarInfo("./")
        d.type = tarfile.DIRTYPE
        tf.addfile(d)
        body = b'{"revision": "x"}'
        f = tarfile.TarInfo("./.manifest")
        f.size = len(body)
        tf.addfile(f, io.BytesIO(body))
    assert Bundle.from_bytes(buf.getvalue()).manifest.revision == "x"


def test_trust_from_cosign_keys(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    from policysupply import Signer

    signer = Signer.generate()
    pub = tmp_path / "cosign.pub"
    pub.write_bytes(signer.public_key_pem)
    for given in (str(pub), pub, signer.public_key_pem, signer._key.public_key()):
        trust = NativeTrust.from_cosign_keys([given, rsa_key.public_key()])
        assert trust.keys[signer.key_id].algorithm == "ES256"
        assert len(trust.keys) == 2
    from cryptography.hazmat.primitives.asymmetric import ed25519

    with pytest.raises(VerificationError, match="none of the keys"):
        NativeTrust.from_cosign_keys([ed25519.Ed25519PrivateKey.generate().public_key()])


def test_from_directory_keeps_a_signature_only_for_unchanged_content(
    bundle: Bundle, rsa_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    signed = bundle.sign(rsa_key, key_id="k1")
    for name, body in signed.entries().items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(body)
    again = Bundle.from_directory(tmp_path)
    assert again == signed
    again.verify_native(trust_for(rsa_key))
    assert again.to_bytes() == signed.to_bytes()
    overridden = Bundle.from_directory(tmp_path, revision="other")
    assert ".signatures.json" not in overridden.files  # it would be stale
