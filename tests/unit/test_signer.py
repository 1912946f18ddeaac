"""Signer construction: plain PEM key files, unsupported key types, and keyless trust selection.

Keyless signers are built without touching the network; sigstore's
``ClientTrustConfig.production``/``staging`` (TUF fetches) and its signing
context are replaced here, so only the choice of trust configuration is tested.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

from policysupply import Signer, TrustPolicy, Verifier
from policysupply.errors import SigningError

PLAIN = serialization.NoEncryption()


def write_pem(path: Path, key: Any, fmt: serialization.PrivateFormat) -> Path:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, fmt, PLAIN))
    return path


@pytest.mark.parametrize(
    ("make", "fmt", "header"),
    [
        (lambda: ec.generate_private_key(ec.SECP256R1()), "PKCS8", b"PRIVATE KEY"),
        (lambda: ec.generate_private_key(ec.SECP384R1()), "PKCS8", b"PRIVATE KEY"),
        (lambda: ec.generate_private_key(ec.SECP256R1()), "TraditionalOpenSSL", b"EC PRIVATE KEY"),
        (lambda: rsa.generate_private_key(65537, 2048), "PKCS8", b"PRIVATE KEY"),
        (lambda: rsa.generate_private_key(65537, 2048), "TraditionalOpenSSL", b"RSA PRIVATE KEY"),
        (ed25519.Ed25519PrivateKey.generate, "PKCS8", b"PRIVATE KEY"),
    ],
    ids=["p256-pkcs8", "p384-pkcs8", "p256-sec1", "rsa-pkcs8", "rsa-pkcs1", "ed25519-pkcs8"],
)
def test_plain_unencrypted_pem_keys_load_and_sign(
    make: Any, fmt: str, header: bytes, tmp_path: Path
) -> None:
    key = make()
    path = write_pem(tmp_path / "key.pem", key, getattr(serialization.PrivateFormat, fmt))
    assert b"-----BEGIN " + header + b"-----" in path.read_bytes()
    signer = Signer.from_key_file(path)  # no password: the file is not encrypted
    pub = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert signer.public_key_pem == pub
    # a password given for a plain key is not needed, and not an error
    assert Signer.from_key_file(path, password="unused").key_id == signer.key_id
    verified = Verifier(TrustPolicy(keys=[pub])).verify_blob(b"x", bundle=signer.sign_blob(b"x"))
    assert verified.key_ids == (signer.key_id,)


@pytest.mark.parametrize(
    ("make", "what"),
    [
        (ed448.Ed448PrivateKey.generate, "Ed448PrivateKey"),
        (lambda: dsa.generate_private_key(2048), "DSAPrivateKey"),
        (lambda: ec.generate_private_key(ec.SECP256K1()), "curve secp256k1"),
    ],
    ids=["ed448", "dsa", "secp256k1"],
)
def test_unsupported_key_types_are_a_clear_signing_error(
    make: Any, what: str, tmp_path: Path
) -> None:
    path = write_pem(tmp_path / "key.pem", make(), serialization.PrivateFormat.PKCS8)
    with pytest.raises(SigningError, match=f"key.pem: unsupported (key type )?{what}"):
        Signer.from_key_file(path)


def test_a_public_key_or_certificate_is_not_a_private_key(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "cosign.pub"
    path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    # Says what it is and what to use instead (it said "unsupported PEM block" before).
    with pytest.raises(SigningError, match="that is a public key; signing needs the private key"):
        Signer.from_key_file(path)


# -- keyless trust selection ------------------------------------------------------------


def _token() -> str:
    import jwt  # PyJWT, installed with sigstore

    now = int(time.time())
    claims = {
        "iss": "https://oauth2.sigstore.dev/auth",
        "sub": "signer@example.com",
        "email": "signer@example.com",
        "email_verified": True,
        "aud": "sigstore",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
    }
    return jwt.encode(claims, "not-verified-by-the-client-" * 2, algorithm="HS256")


class _Stop(Exception):
    pass


@pytest.fixture
def configs(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Fake production/staging trust configs; records which one signing starts with."""
    from sigstore.models import ClientTrustConfig
    from sigstore.sign import SigningContext

    made = {"production": object(), "staging": object()}
    calls: dict[str, Any] = {"fetched": [], "used": None}

    def fetch(name: str) -> Any:
        def fetcher(*args: Any, **kwargs: Any) -> Any:
            calls["fetched"].append(name)
            return made[name]

        return classmethod(lambda cls, *a, **kw: fetcher(*a, **kw))

    def from_trust_config(config: Any) -> Any:
        calls["used"] = config
        raise _Stop("no network in unit tests")

    monkeypatch.setattr(ClientTrustConfig, "production", fetch("production"))
    monkeypatch.setattr(ClientTrustConfig, "staging", fetch("staging"))
    monkeypatch.setattr(SigningContext, "from_trust_config", staticmethod(from_trust_config))
    return {"made": made, "calls": calls}


@pytest.mark.parametrize("trust", ["production", "staging", None])
def test_keyless_trust_selects_the_sigstore_instance(
    trust: str | None, configs: dict[str, Any]
) -> None:
    kwargs = {} if trust is None else {"trust": trust}
    signer = Signer.keyless(identity_token=_token(), **kwargs)
    assert configs["calls"]["fetched"] == []  # nothing fetched until the first signature
    assert signer.is_keyless
    with pytest.raises(SigningError, match="cannot get a Fulcio signing certificate"):
        signer.sign_blob(b"data")
    wanted = trust or "production"
    assert configs["calls"]["fetched"] == [wanted]
    assert configs["calls"]["used"] is configs["made"][wanted]


def test_keyless_trust_fetch_failure_is_a_signing_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from sigstore.models import ClientTrustConfig

    def offline(cls: Any, *args: Any, **kwargs: Any) -> Any:
        raise OSError("network unreachable")

    monkeypatch.setattr(ClientTrustConfig, "staging", classmethod(offline))
    signer = Signer.keyless(identity_token=_token(), trust="staging")
    with pytest.raises(SigningError, match="cannot fetch Sigstore's staging trust config"):
        signer.sign_blob(b"data")


# -- writing key pairs and bundles ------------------------------------------------------

_FSIZE_SCRIPT = """
import os, resource, signal, sys
from policysupply import Signer, SigstoreBundle
from policysupply.errors import SigningError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
d = sys.argv[1]
signer = Signer.generate()
bundle = signer.sign_blob(b"x")
hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
resource.setrlimit(resource.RLIMIT_FSIZE, (100, hard))
for what, call in [
    ("pair", lambda: signer.write_key_pair(d, password="pw")),
    ("bundle", lambda: bundle.write(os.path.join(d, "b.sigstore.json"))),
]:
    try:
        call()
        print(what, "wrote")
    except SigningError as exc:
        print(what, "SigningError", exc)
resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
signer.write_key_pair(d, password="pw")
bundle.write(os.path.join(d, "b.sigstore.json"))
print("retry ok")
"""


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="POSIX only")
def test_writes_that_hit_a_file_size_limit_leave_no_partial_files(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "b.sigstore.json").write_bytes(b"GOOD-OLD-CONTENT" * 100)
    out = subprocess.run(
        [sys.executable, "-c", _FSIZE_SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == f"pair SigningError cannot write {tmp_path / 'cosign.key'}: File too large"
    assert lines[1].startswith(f"bundle SigningError cannot write {tmp_path / 'b.sigstore.json'}")
    assert lines[2] == "retry ok"  # nothing truncated was left behind to refuse the retry
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "b.sigstore.json",
        "cosign.key",
        "cosign.pub",
    ]
    assert Signer.from_key_file(tmp_path / "cosign.key", password="pw")


def _failing_fsync(monkeypatch: pytest.MonkeyPatch, fail_on: int) -> None:
    import os

    real = os.fsync
    calls = {"n": 0}

    def fsync(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] == fail_on:
            raise OSError(28, "No space left on device")
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def test_write_key_pair_failure_on_the_public_key_removes_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    signer = Signer.generate()
    _failing_fsync(monkeypatch, fail_on=2)  # the key's temp file syncs; the .pub's does not
    with pytest.raises(SigningError, match=r"cannot write .*cosign\.pub: No space left"):
        signer.write_key_pair(tmp_path, password="pw")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    key, pub = signer.write_key_pair(tmp_path, password="pw")
    assert Signer.from_key_file(key, password="pw").key_id == signer.key_id
    assert pub.read_bytes() == signer.public_key_pem


def test_write_key_pair_modes_and_no_temp_files(tmp_path: Path) -> None:
    import os
    import stat

    old = os.umask(0o022)
    try:
        key, pub = Signer.generate().write_key_pair(tmp_path, password="pw", name="k")
    finally:
        os.umask(old)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(pub.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.key", "k.pub"]


@pytest.mark.parametrize("existing", ["cosign.key", "cosign.pub"])
def test_write_key_pair_never_overwrites(existing: str, tmp_path: Path) -> None:
    (tmp_path / existing).write_bytes(b"someone else's")
    with pytest.raises(SigningError, match=f"{existing} exists; refusing to overwrite"):
        Signer.generate().write_key_pair(tmp_path, password="pw")
    assert [p.name for p in tmp_path.iterdir()] == [existing]
    assert (tmp_path / existing).read_bytes() == b"someone else's"


def test_write_key_pair_loses_a_race_without_overwriting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key file that appears after the existence check is still not replaced."""
    from policysupply._internal import fs

    real = fs.write_temp

    def racing(path: Path, data: bytes, mode: int) -> Path:
        tmp = real(path, data, mode)
        if path.name == "cosign.pub":
            (tmp_path / "cosign.key").write_bytes(b"raced in")
        return tmp

    monkeypatch.setattr(fs, "write_temp", racing)
    with pytest.raises(SigningError, match=r"cosign\.key exists; refusing to overwrite"):
        Signer.generate().write_key_pair(tmp_path, password="pw")
    assert [p.name for p in tmp_path.iterdir()] == ["cosign.key"]
    assert (tmp_path / "cosign.key").read_bytes() == b"raced in"


def test_write_key_pair_missing_directory_is_a_signing_error(tmp_path: Path) -> None:
    with pytest.raises(SigningError, match=r"cannot write .*nope/cosign\.key"):
        Signer.generate().write_key_pair(tmp_path / "nope", password="pw")


def test_sigstore_bundle_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "b.sigstore.json"
    target.write_bytes(b"previous good bundle")
    bundle = Signer.generate().sign_blob(b"x")
    _failing_fsync(monkeypatch, fail_on=1)
    with pytest.raises(SigningError, match=r"cannot write .*b\.sigstore\.json: No space left"):
        bundle.write(target)
    assert target.read_bytes() == b"previous good bundle"
    assert [p.name for p in tmp_path.iterdir()] == ["b.sigstore.json"]
    monkeypatch.undo()
    assert bundle.write(target) == target
    assert target.read_bytes() == bundle.to_json()
    assert [p.name for p in tmp_path.iterdir()] == ["b.sigstore.json"]


# -- keyless timeouts -------------------------------------------------------------------


@pytest.fixture
def black_hole() -> Any:
    """A loopback port that accepts connections (kernel backlog) and never answers."""
    import socket

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


def _trust_config(fulcio: str, rekor: str) -> Any:
    from sigstore.models import ClientTrustConfig

    from tests.unit._sigstore_pki import FakeSigstore

    def service(url: str) -> dict[str, Any]:
        start = {"start": "2020-01-01T00:00:00Z"}
        return {"url": url, "majorApiVersion": 1, "validFor": start, "operator": "test"}

    config = {
        "mediaType": "application/vnd.dev.sigstore.clienttrustconfig.v0.1+json",
        "trustedRoot": FakeSigstore().trusted_root(),
        "signingConfig": {
            "mediaType": "application/vnd.dev.sigstore.signingconfig.v0.2+json",
            "caUrls": [service(fulcio)],
            "oidcUrls": [],
            "rekorTlogUrls": [service(rekor)],
            "rekorTlogConfig": {"selector": "ANY"},
            "tsaUrls": [],
            "tsaConfig": {"selector": "ANY"},
        },
    }
    import json

    return ClientTrustConfig.from_json(json.dumps(config))


def test_keyless_signing_times_out_on_a_fulcio_that_never_answers(black_hole: str) -> None:
    signer = Signer.keyless(
        identity_token=_token(), trust=_trust_config(black_hole, black_hole), timeout=1
    )
    started = time.monotonic()
    with pytest.raises(SigningError, match=r"certificate: timed out .*read timeout=1\b"):
        signer.sign_blob(b"data")
    assert time.monotonic() - started < 5


def test_keyless_timeouts_reach_every_sigstore_session(black_hole: str) -> None:
    """Fulcio's session and the per-thread Rekor sessions made later all carry the timeout."""
    import threading

    from sigstore.sign import SigningContext

    from policysupply._internal.keyless import apply_timeouts

    context = SigningContext.from_trust_config(_trust_config(black_hole, black_hole))
    apply_timeouts(context, 2.5)

    def timeout_of(session: Any) -> Any:
        return session.get_adapter("https://example.invalid/")

    seen: list[Any] = [timeout_of(context._fulcio.session), timeout_of(context._rekor._session)]
    worker = threading.Thread(target=lambda: seen.append(timeout_of(context._rekor._session)))
    worker.start()
    worker.join()
    assert len(seen) == 3
    assert all(type(a).__name__ == "TimeoutAdapter" for a in seen)
    assert seen[1] is not seen[2]  # one session per thread, as sigstore intends


def test_keyless_timeouts_refuse_an_unknown_client_shape() -> None:
    from policysupply._internal.keyless import apply_timeouts

    class Context:
        _fulcio = object()
        _rekor = object()
        _tsa_clients = ()

    with pytest.raises(SigningError, match="cannot set a timeout on sigstore's Fulcio client"):
        apply_timeouts(Context(), 1)


def test_keyless_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="timeout must be positive"):
        Signer.keyless(identity_token=_token(), timeout=0)
