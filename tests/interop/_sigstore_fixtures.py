"""A Sigstore stack on loopback for keyless signing tests.

``sigstore_stack`` (session scope) starts, on loopback ports chosen at run time,
the real Sigstore services built by ``scripts/install-sigstore-stack.sh``
(see docs/adr/0007-sigstore-test-stack.md):

* an OIDC issuer (in this module: discovery document + JWKS, RS256 tokens),
* Fulcio with a file CA (root + intermediate made here), trusting that issuer,
* TesseraCT, the certificate transparency log Fulcio gets SCTs from,
* Rekor v2 (rekor-tiles, POSIX tile storage; seeded with one entry),
* an RFC 3161 timestamp authority (Rekor v2 entries carry no signed time, so
  clients take the signing time from the TSA),

and yields a :class:`SigstoreStack`. To use it in a test module (assign it
rather than import it by name, so ruff sees no redefinition)::

    from tests.interop import _sigstore_fixtures
    from tests.interop._sigstore_fixtures import SigstoreStack

    sigstore_stack = _sigstore_fixtures.sigstore_stack

    def test_x(sigstore_stack: SigstoreStack) -> None:
        token = sigstore_stack.mint_token()        # e-mail identity DEFAULT_EMAIL
        trust = sigstore_stack.trust_config()      # sigstore.models.ClientTrustConfig
        sigstore_stack.trusted_root_path           # TrustedRoot JSON
        sigstore_stack.signing_config_path         # SigningConfig v0.2 JSON
        sigstore_stack.trust_config_path           # ClientTrustConfig JSON
        sigstore_stack.fulcio_url, .rekor_url, .tsa_url, .ct_url
        sigstore_stack.fulcio_chain_path, .ct_public_key_path, .tsa_chain_path (PEM)

Identities: ``mint_token(subject)`` signs a token from ``oidc_issuer`` (Fulcio
type "email": the certificate's SAN is the e-mail address, and its issuer
extension is ``oidc_issuer``). ``github_token(repository, workflow, ref)`` signs
a GitHub-Actions-shaped token from ``github_issuer`` (Fulcio type
"github-workflow") and returns it with the certificate identity Fulcio will
write, ``https://github.com/<repo>/<workflow>@<ref>``. ``mint_token(issuer=...,
audience=..., claims=..., lifetime=...)`` makes any other token (for negative
tests: an issuer Fulcio does not trust, a wrong audience, an expired token).

Clients:

* sigstore-python: ``SigningContext.from_trust_config(stack.trust_config())``
  and ``Verifier(trusted_root=stack.trust_config().trusted_root)``. Keep the
  signer's default ``cache=True`` (``cache=False`` is broken in sigstore 4.5).
* cosign 3: sign with ``--identity-token T --signing-config
  stack.signing_config_path --trusted-root stack.trusted_root_path``; verify
  with ``--trusted-root``, ``--certificate-identity``,
  ``--certificate-oidc-issuer``.
* cosign 2: the same plus ``--new-bundle-format`` (and
  ``--use-signed-timestamps`` to verify); it cannot sign *images* against
  Rekor v2, only blobs. Its classic keyless ``.sig`` works without a log:
  ``sign --fulcio-url stack.fulcio_url --tlog-upload=false
  --timestamp-server-url stack.tsa_url``.
* Run cosign with ``env=stack.cosign_env(home)``, which keeps it off the
  public-good TUF repository.

The CA, CT log, Rekor and TSA keys are new for each session: nothing signed
against one stack verifies against another's trusted root.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests._x509 import ca_certificate, spki_der
from tests.conftest import peer
from tests.interop.conftest import free_port

if TYPE_CHECKING:
    from sigstore.models import ClientTrustConfig

__all__ = [
    "DEFAULT_EMAIL",
    "OidcIssuer",
    "SigstoreStack",
    "sigstore_stack",
    "start_sigstore_stack",
]

DEFAULT_EMAIL = "signer@example.com"
AUDIENCE = "sigstore"  # Fulcio's client id and sigstore-python's default audience
OPERATOR = "policysupply-test"
TRUSTED_ROOT_MEDIA_TYPE = "application/vnd.dev.sigstore.trustedroot+json;version=0.1"
SIGNING_CONFIG_MEDIA_TYPE = "application/vnd.dev.sigstore.signingconfig.v0.2+json"
CLIENT_TRUST_CONFIG_MEDIA_TYPE = "application/vnd.dev.sigstore.clienttrustconfig.v0.1+json"
_START_TIMEOUT = 60.0


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _b64url_uint(n: int) -> str:
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _rfc3339(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- OIDC issuer -------------------------------------------------------------------


@dataclass
class OidcIssuer:
    """A loopback OpenID provider: discovery documents and JWKS, tokens minted on demand.

    Every path prefix is an issuer of its own (``<url>`` and ``<url>/github`` are
    the two Fulcio is configured with); all share one RS256 signing key.
    """

    url: str = ""
    key: rsa.RSAPrivateKey = field(default_factory=lambda: rsa.generate_private_key(65537, 2048))
    kid: str = "policysupply-test-key"

    def jwks(self) -> dict[str, Any]:
        numbers = self.key.public_key().public_numbers()
        return {
            "keys": [
                {
                    "kty": "RSA",
                    "alg": "RS256",
                    "use": "sig",
                    "kid": self.kid,
                    "n": _b64url_uint(numbers.n),
                    "e": _b64url_uint(numbers.e),
                }
            ]
        }

    def discovery(self, issuer: str) -> dict[str, Any]:
        return {
            "issuer": issuer,
            "jwks_uri": f"{self.url}/jwks",
            "authorization_endpoint": f"{issuer}/auth",
            "token_endpoint": f"{issuer}/token",
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        }

    def sign(self, claims: Mapping[str, Any]) -> str:
        import jwt  # PyJWT, installed with sigstore

        return jwt.encode(dict(claims), self.key, algorithm="RS256", headers={"kid": self.kid})

    @contextmanager
    def serve(self) -> Iterator[OidcIssuer]:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                suffix = "/.well-known/openid-configuration"
                if path == "/jwks":
                    body: dict[str, Any] = issuer.jwks()
                elif path.endswith(suffix):
                    body = issuer.discovery(issuer.url + path[: -len(suffix)])
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)


# -- the stack -------------------------------------------------------------------------


@dataclass(frozen=True)
class SigstoreStack:
    """URLs, trust material and token minting for one running Sigstore stack."""

    oidc: OidcIssuer
    fulcio_url: str
    rekor_url: str
    tsa_url: str  # the RFC 3161 endpoint clients POST to
    ct_url: str
    trusted_root_path: Path
    signing_config_path: Path
    trust_config_path: Path
    workdir: Path

    @property
    def fulcio_chain_path(self) -> Path:
        """PEM: Fulcio's intermediate then root (cosign's ``SIGSTORE_ROOT_FILE``)."""
        return self.workdir / "fulcio-chain.pem"

    @property
    def ct_public_key_path(self) -> Path:
        """PEM public key of the CT log (cosign's ``SIGSTORE_CT_LOG_PUBLIC_KEY_FILE``)."""
        return self.workdir / "ct.pub"

    @property
    def rekor_public_key_path(self) -> Path:
        """PEM public key of Rekor."""
        return self.workdir / "rekor.pub"

    @property
    def tsa_chain_path(self) -> Path:
        """PEM: the TSA's leaf, intermediate and root (``--timestamp-certificate-chain``)."""
        return self.workdir / "tsa-chain.pem"

    @property
    def oidc_issuer(self) -> str:
        """Issuer of e-mail identities (Fulcio type "email")."""
        return self.oidc.url

    @property
    def github_issuer(self) -> str:
        """Issuer of GitHub-Actions-shaped identities (Fulcio type "github-workflow")."""
        return f"{self.oidc.url}/github"

    def mint_token(
        self,
        subject: str = DEFAULT_EMAIL,
        *,
        issuer: str | None = None,
        audience: str = AUDIENCE,
        claims: Mapping[str, Any] | None = None,
        lifetime: int = 600,
    ) -> str:
        """An ID token signed by the stack's OIDC key.

        Args:
            subject: the ``sub`` claim; for the e-mail issuer also the ``email``
                claim (verified), which Fulcio puts in the certificate SAN.
            issuer: the ``iss`` claim; default the e-mail issuer. Any URL works
                (Fulcio rejects issuers it is not configured with).
            audience: the ``aud`` claim.
            claims: extra claims, overriding the defaults.
            lifetime: seconds until ``exp`` (negative for an expired token).
        """
        now = int(time.time())
        iss = issuer or self.oidc_issuer
        body: dict[str, Any] = {
            "iss": iss,
            "sub": subject,
            "aud": audience,
            "iat": now - 5,
            "nbf": now - 5,
            "exp": now + lifetime,
        }
        if iss == self.oidc_issuer:
            body.update(email=subject, email_verified=True)
        body.update(claims or {})
        return self.oidc.sign(body)

    def github_token(
        self,
        repository: str = "acme/policies",
        workflow: str = ".github/workflows/release.yml",
        ref: str = "refs/heads/main",
        **claims: Any,
    ) -> tuple[str, str]:
        """A GitHub-Actions-shaped token and the certificate identity Fulcio derives from it.

        Returns:
            ``(token, identity)`` where identity is
            ``https://github.com/<repository>/<workflow>@<ref>``.
        """
        owner = repository.split("/", 1)[0]
        sha = "0" * 40
        body: dict[str, Any] = {
            "job_workflow_ref": f"{repository}/{workflow}@{ref}",
            "job_workflow_sha": sha,
            "sha": sha,
            "event_name": "push",
            "repository": repository,
            "repository_id": "1",
            "repository_owner": owner,
            "repository_owner_id": "2",
            "repository_visibility": "public",
            "workflow": "release",
            "workflow_ref": f"{repository}/{workflow}@{ref}",
            "workflow_sha": sha,
            "ref": ref,
            "runner_environment": "github-hosted",
            "run_id": "3",
            "run_attempt": "1",
        }
        body.update(claims)
        token = self.mint_token(
            f"repo:{repository}:ref:{ref}", issuer=self.github_issuer, claims=body
        )
        return token, f"https://github.com/{body['job_workflow_ref']}"

    def trust_config(self) -> ClientTrustConfig:
        """The stack as sigstore-python's ``ClientTrustConfig`` (trusted root + signing config)."""
        from sigstore.models import ClientTrustConfig

        return ClientTrustConfig.from_json(self.trust_config_path.read_text())

    def cosign_env(self, home: Path) -> dict[str, str]:
        """Environment for running cosign against this stack with ``home`` as its home."""
        return {
            **os.environ,
            "HOME": str(home),
            "DOCKER_CONFIG": str(home / ".docker"),
            "TUF_ROOT": str(home / ".sigstore"),
            "COSIGN_YES": "true",
            # Where cosign's legacy (pre-bundle) code paths would otherwise ask
            # the public-good TUF repository for Fulcio's roots and the CT key.
            "SIGSTORE_ROOT_FILE": str(self.fulcio_chain_path),
            "SIGSTORE_CT_LOG_PUBLIC_KEY_FILE": str(self.ct_public_key_path),
            "SIGSTORE_REKOR_PUBLIC_KEY": str(self.rekor_public_key_path),
        }


def _die_with_parent() -> None:
    # A killed test run (timeout, ^C) runs no teardown: have Linux send the
    # services SIGTERM when the Python process that started them goes away.
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


class _Process:
    def __init__(self, name: str, args: list[str], workdir: Path, env: dict[str, str]) -> None:
        self.name = name
        self.log = workdir / f"{name}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                args,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=workdir,
                env=env,
                preexec_fn=_die_with_parent,
            )

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def wait_http(self, url: str, *, method: str = "GET") -> bytes:
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                req = urllib.request.Request(url, method=method)
                with urllib.request.urlopen(req, timeout=2) as resp:
                    return bytes(resp.read())
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.1)
        pytest.fail(f"{self.name} did not answer {url}:\n{self.log_tail()}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _ec_key_pem(path: Path, *, pkcs8: bool) -> ec.EllipticCurvePrivateKey:
    key = ec.generate_private_key(ec.SECP256R1())
    fmt = (
        serialization.PrivateFormat.PKCS8
        if pkcs8
        else serialization.PrivateFormat.TraditionalOpenSSL
    )
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())
    )
    path.chmod(0o600)
    return key


def _public_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _log_instance(url: str, spki: bytes, start: str) -> dict[str, Any]:
    return {
        "baseUrl": url,
        "hashAlgorithm": "SHA2_256",
        "publicKey": {
            "rawBytes": _b64(spki),
            "keyDetails": "PKIX_ECDSA_P256_SHA_256",
            "validFor": {"start": start},
        },
        # Rekor v2 and CT both name an ECDSA log by SHA-256 of its SPKI.
        "logId": {"keyId": _b64(hashlib.sha256(spki).digest())},
    }


def _cert_authority(url: str, chain: list[x509.Certificate], start: str) -> dict[str, Any]:
    subject = chain[-1].subject
    orgs = subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)
    cns = subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return {
        "subject": {
            "organization": str(orgs[0].value) if orgs else "",
            "commonName": str(cns[0].value) if cns else "",
        },
        "uri": url,
        "certChain": {
            "certificates": [
                {"rawBytes": _b64(c.public_bytes(serialization.Encoding.DER))} for c in chain
            ]
        },
        "validFor": {"start": start},
    }


def _service(url: str, version: int, start: str) -> dict[str, Any]:
    return {
        "url": url,
        "majorApiVersion": version,
        "validFor": {"start": start},
        "operator": OPERATOR,
    }


def _seed_rekor(rekor_url: str) -> None:
    """Adds one key-signed entry, so that no test's entry is the log's first.

    The public logs are never empty, and clients have edge cases there: cosign
    2.x writes an entry at index 0 without ``logIndex`` (protobuf JSON drops
    zero values), which sigstore-python then refuses to load.
    """
    from cryptography.hazmat.primitives import hashes

    key = ec.generate_private_key(ec.SECP256R1())
    data = b"policysupply test stack: seed entry"
    body = {
        "hashedRekordRequestV002": {
            "digest": _b64(hashlib.sha256(data).digest()),
            "signature": {
                "content": _b64(key.sign(data, ec.ECDSA(hashes.SHA256()))),
                "verifier": {
                    "publicKey": {"rawBytes": _b64(spki_der(key))},
                    "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                },
            },
        }
    }
    req = urllib.request.Request(
        f"{rekor_url}/api/v2/log/entries",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        entry = json.loads(resp.read())
    assert "inclusionProof" in entry, entry


def _fulcio_ca(workdir: Path) -> list[x509.Certificate]:
    """A root and a code-signing intermediate for Fulcio's file CA, shaped like production's.

    Writes ``fulcio-chain.pem`` (intermediate, root), ``fulcio-ca.key`` (the
    intermediate's key) and ``fulcio-roots.pem`` (the root, for the CT log).
    """
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.timezone.utc)

    def name(cn: str) -> x509.Name:
        return x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "policysupply-test"),
                x509.NameAttribute(NameOID.COMMON_NAME, cn),
            ]
        )

    def ca_cert(
        subject: str,
        key: ec.EllipticCurvePrivateKey,
        issuer: str,
        signer: ec.EllipticCurvePrivateKey,
        path_length: int,
        eku: bool,
    ) -> x509.Certificate:
        return ca_certificate(
            name(subject),
            key,
            name(issuer),
            signer,
            path_length=path_length,
            not_before=now - dt.timedelta(days=1),
            not_after=now + dt.timedelta(days=30),
            algorithm=hashes.SHA256(),
            code_signing=eku,  # Fulcio requires code signing on an intermediate
        )

    root_key = ec.generate_private_key(ec.SECP384R1())
    root = ca_cert("policysupply-test-root", root_key, "policysupply-test-root", root_key, 1, False)
    inter_key = _ec_key_pem(workdir / "fulcio-ca.key", pkcs8=True)
    inter = ca_cert(
        "policysupply-test-intermediate", inter_key, "policysupply-test-root", root_key, 0, True
    )
    pem = serialization.Encoding.PEM
    (workdir / "fulcio-chain.pem").write_bytes(inter.public_bytes(pem) + root.public_bytes(pem))
    (workdir / "fulcio-roots.pem").write_bytes(root.public_bytes(pem))
    return [inter, root]


@contextmanager
def start_sigstore_stack(workdir: Path) -> Iterator[SigstoreStack]:
    """Starts OIDC issuer, Fulcio, TesseraCT, Rekor v2 and a TSA; stops them on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    # Go services read no proxy settings for loopback, but be explicit, and keep
    # OpenTelemetry exporters (TesseraCT) from trying to reach a collector.
    env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "OTEL_SDK_DISABLED": "true"}
    # Valid from a day back, so clock skew between services never matters.
    start = _rfc3339(dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1))
    with ExitStack() as stack:
        oidc = stack.enter_context(OidcIssuer().serve())

        # CT log key and Fulcio's view of the CT log, chosen before either starts.
        ct_port = free_port()
        ct_url = f"http://127.0.0.1:{ct_port}"
        ct_key = _ec_key_pem(workdir / "ct.key", pkcs8=False)
        (workdir / "ct.pub").write_bytes(_public_pem(ct_key))

        fulcio_port = free_port()
        fulcio_url = f"http://127.0.0.1:{fulcio_port}"
        fulcio_config = {
            "OIDCIssuers": {
                oidc.url: {"IssuerURL": oidc.url, "ClientID": AUDIENCE, "Type": "email"},
                f"{oidc.url}/github": {
                    "IssuerURL": f"{oidc.url}/github",
                    "ClientID": AUDIENCE,
                    "Type": "github-workflow",
                },
            }
        }
        (workdir / "fulcio.json").write_text(json.dumps(fulcio_config))
        fulcio_chain = _fulcio_ca(workdir)
        fulcio = _Process(
            "fulcio",
            [
                str(peer("fulcio")),
                "serve",
                "--ca=fileca",
                f"--fileca-cert={workdir / 'fulcio-chain.pem'}",
                f"--fileca-key={workdir / 'fulcio-ca.key'}",
                "--fileca-key-passwd=unused",  # the key file is not encrypted
                "--fileca-watch=false",
                "--host=127.0.0.1",
                f"--port={fulcio_port}",
                "--grpc-host=127.0.0.1",
                # Not the HTTP port: Fulcio 1.8.8's single-port duplex mode panics
                # registering its gRPC metrics twice.
                f"--grpc-port={free_port()}",
                f"--metrics-port={free_port()}",
                # The default is one abstract socket name shared by every Fulcio.
                f"--legacy-unix-domain-socket={workdir / 'fulcio-legacy.sock'}",
                f"--config-path={workdir / 'fulcio.json'}",
                f"--ct-log-url={ct_url}",
                f"--ct-log-public-key-path={workdir / 'ct.pub'}",
            ],
            workdir,
            env,
        )
        stack.callback(fulcio.stop)

        ct = _Process(
            "tesseract",
            [
                str(peer("tesseract")),
                f"--http_endpoint=127.0.0.1:{ct_port}",
                f"--private_key={workdir / 'ct.key'}",
                "--origin=policysupply-test-ct",
                f"--storage_dir={workdir / 'ct-storage'}",
                f"--roots_pem_file={workdir / 'fulcio-roots.pem'}",
                "--ext_key_usages=CodeSigning",
                "--checkpoint_interval=200ms",
            ],
            workdir,
            env,
        )
        stack.callback(ct.stop)

        rekor_port, rekor_grpc = free_port(), free_port()
        rekor_url = f"http://127.0.0.1:{rekor_port}"
        rekor_key = _ec_key_pem(workdir / "rekor.key", pkcs8=True)
        (workdir / "rekor.pub").write_bytes(_public_pem(rekor_key))
        rekor = _Process(
            "rekor",
            [
                str(peer("rekor-tiles")),
                "serve",
                "--http-address=127.0.0.1",
                f"--http-port={rekor_port}",
                "--grpc-address=127.0.0.1",
                f"--grpc-port={rekor_grpc}",
                f"--http-metrics-port={free_port()}",
                # Clients (sigstore-go) expect the checkpoint origin to be the host
                # of the log URL, without its port.
                "--hostname=127.0.0.1",
                f"--storage-dir={workdir / 'rekor-storage'}",
                f"--signer-filepath={workdir / 'rekor.key'}",
                "--checkpoint-interval=200ms",
                "--tlog-timeout=2s",  # its wait for the queue on SIGTERM; 30 s by default
                "--log-level=warn",
            ],
            workdir,
            env,
        )
        stack.callback(rekor.stop)

        tsa_port = free_port()
        tsa_base = f"http://127.0.0.1:{tsa_port}"
        tsa = _Process(
            "tsa",
            [str(peer("tsa")), "--host=127.0.0.1", f"--port={tsa_port}"],
            workdir,
            env,
        )
        stack.callback(tsa.stop)

        # All four start at once; now wait for each to answer.
        fulcio.wait_http(f"{fulcio_url}/api/v2/trustBundle")
        ct.wait_http(f"{ct_url}/ct/v1/get-roots")
        rekor.wait_http(f"{rekor_url}/healthz")
        _seed_rekor(rekor_url)
        tsa_chain = x509.load_pem_x509_certificates(
            tsa.wait_http(f"{tsa_base}/api/v1/timestamp/certchain")
        )
        tsa_url = f"{tsa_base}/api/v1/timestamp"
        (workdir / "tsa-chain.pem").write_bytes(
            b"".join(c.public_bytes(serialization.Encoding.PEM) for c in tsa_chain)
        )

        trusted_root = {
            "mediaType": TRUSTED_ROOT_MEDIA_TYPE,
            "tlogs": [_log_instance(rekor_url, spki_der(rekor_key), start)],
            "certificateAuthorities": [_cert_authority(fulcio_url, fulcio_chain, start)],
            "ctlogs": [_log_instance(ct_url, spki_der(ct_key), start)],
            "timestampAuthorities": [_cert_authority(tsa_url, tsa_chain, start)],
        }
        signing_config = {
            "mediaType": SIGNING_CONFIG_MEDIA_TYPE,
            "caUrls": [_service(fulcio_url, 1, start)],
            "oidcUrls": [_service(oidc.url, 1, start)],
            "rekorTlogUrls": [_service(rekor_url, 2, start)],
            "rekorTlogConfig": {"selector": "ANY"},
            "tsaUrls": [_service(tsa_url, 1, start)],
            "tsaConfig": {"selector": "ANY"},
        }
        paths = {
            "trusted_root": workdir / "trusted_root.json",
            "signing_config": workdir / "signing_config.json",
            "trust_config": workdir / "trust_config.json",
        }
        paths["trusted_root"].write_text(json.dumps(trusted_root, indent=2))
        paths["signing_config"].write_text(json.dumps(signing_config, indent=2))
        paths["trust_config"].write_text(
            json.dumps(
                {
                    "mediaType": CLIENT_TRUST_CONFIG_MEDIA_TYPE,
                    "trustedRoot": trusted_root,
                    "signingConfig": signing_config,
                },
                indent=2,
            )
        )
        yield SigstoreStack(
            oidc=oidc,
            fulcio_url=fulcio_url,
            rekor_url=rekor_url,
            tsa_url=tsa_url,
            ct_url=ct_url,
            trusted_root_path=paths["trusted_root"],
            signing_config_path=paths["signing_config"],
            trust_config_path=paths["trust_config"],
            workdir=workdir,
        )


@pytest.fixture(scope="session")
def sigstore_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SigstoreStack]:
    """A running Sigstore stack for the whole test session (see the module docstring)."""
    with start_sigstore_stack(tmp_path_factory.mktemp("sigstore")) as stack:
        yield stack
