"""Scenario 2, the deployment gate, against a real registry, real cosign and real OPA.

Container images are pushed to Debian's distribution registry on loopback and
signed by cosign 2.x (legacy ``.sig`` tag) and 3.x (Sigstore bundle referrer,
stored under the fallback tag on distribution), with keys and keylessly
against the loopback Sigstore stack (Fulcio, Rekor v2, TSA). Every decision
the embedded engine makes is replayed with ``opa eval`` on the same rules and
input.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from policysupply import Bundle, Registry, TrustPolicy, Verifier
from policysupply.gate import DEFAULT_QUERY, Decision, Gate
from policysupply.identity import Identity
from tests.conftest import peer
from tests.interop import _sigstore_fixtures
from tests.interop._cosign import (
    COSIGN_SIGN_FLAGS,
    COSIGN_VERIFY_FLAGS,
    bundle_signing_flags,
    keyless_cosign,
    run_cosign,
)
from tests.interop._gate_fixtures import push_image
from tests.interop._sigstore_fixtures import SigstoreStack
from tests.interop.conftest import RegistryServer

pytestmark = pytest.mark.interop
sigstore_stack = _sigstore_fixtures.sigstore_stack

VERSIONS = ["2", "3"]


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    """Two cosign key pairs made by cosign itself: the trusted one and another."""
    out = {}
    for name in ("trusted", "other"):
        d = tmp_path / f"keys-{name}"
        d.mkdir()
        run_cosign("2", "generate-key-pair", cwd=d)
        out[name] = d
    return out


def trusting(key_dir: Path, version: str) -> Verifier:
    """A verifier trusting ``key_dir``'s key for signatures by cosign ``version``.

    cosign 3's bundle signatures name no repository, so checking it is waived
    explicitly; cosign 2's legacy payloads name it, and it is checked.
    """
    mode = "any" if version == "3" else "repository"
    return Verifier(TrustPolicy(keys=[key_dir / "cosign.pub"], docker_reference=mode))


def cosign_sign(version: str, key_dir: Path, image: str, *extra: str) -> None:
    run_cosign(
        version,
        "sign",
        "--key",
        str(key_dir / "cosign.key"),
        *COSIGN_SIGN_FLAGS[version],
        *extra,
        image,
        cwd=key_dir,
    )


def opa_agrees(rules: Bundle, query: str, decision: Decision, tmp_path: Path) -> None:
    """``opa eval`` of the same rules on the decision's input gives the same answer."""
    bundle = rules.write(tmp_path / "rules.tar.gz")
    proc = subprocess.run(
        [
            str(peer("opa")),
            "eval",
            "--format",
            "json",
            "--bundle",
            str(bundle),
            "--stdin-input",
            query,
        ],
        input=json.dumps(decision.evidence["input"]),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    value = json.loads(proc.stdout)["result"][0]["expressions"][0]["value"]
    assert value == decision.evidence["result"]


@pytest.mark.parametrize("version", VERSIONS)
def test_gate_with_cosign_signatures(
    version: str, distribution: RegistryServer, keys: dict[str, Path], tmp_path: Path
) -> None:
    reg = Registry.remote(distribution.host, insecure=True)
    trusted = trusting(keys["trusted"], version)
    gate = Gate(trusted)
    host = distribution.host
    unsigned = push_image(reg, "shop/unsigned:1.0", seed="unsigned")
    good = push_image(reg, "shop/web:1.0", seed="web")
    rogue = push_image(reg, "shop/rogue:1.0", seed="rogue")
    cosign_sign(version, keys["trusted"], f"{host}/shop/web@{good.digest}")
    cosign_sign(version, keys["other"], f"{host}/shop/rogue@{rogue.digest}")
    decisions: list[tuple[Bundle, Decision]] = []

    # An unsigned image: DENY, "no signature".
    d = gate.decide(reg, f"{host}/shop/unsigned:1.0")
    decisions.append((gate.rules, d))
    assert not d.allowed
    assert d.reasons == (f"unsigned: no signature on {host}/shop/unsigned:1.0",)
    assert d.reference == str(unsigned)

    # Signed by cosign with the trusted key: ALLOW, and cosign agrees.
    d = gate.decide(reg, f"{host}/shop/web:1.0", context={"env": "prod"})
    decisions.append((gate.rules, d))
    assert d.allowed, d.reasons
    (sig,) = d.input["verification"]["signatures"]
    assert sig["scheme"] == ("legacy" if version == "2" else "bundle")
    assert d.input["image"]["registry"] == host
    assert d.input["image"]["digest"] == good.digest
    run_cosign(
        version,
        "verify",
        "--key",
        str(keys["trusted"] / "cosign.pub"),
        *COSIGN_VERIFY_FLAGS,
        f"{host}/shop/web:1.0",
        cwd=keys["trusted"],
    )

    # Signed by another key: DENY, untrusted signer.
    d = gate.decide(reg, f"{host}/shop/rogue:1.0")
    decisions.append((gate.rules, d))
    assert not d.allowed
    assert d.fired == ("untrusted_signer",)
    assert "untrusted signer" in d.reasons[0]

    # Signed by the trusted key but from a registry the rules do not allow.
    strict = Gate(trusted, settings={"allowed_registries": ["registry.acme.example"]})
    d = strict.decide(reg, f"{host}/shop/web:1.0")
    decisions.append((strict.rules, d))
    assert not d.allowed
    assert d.fired == ("allowed_registries",)
    assert d.reasons == (
        f"allowed_registries: {host}/shop/web is not from an allowed registry "
        "(allowed: registry.acme.example)",
    )
    assert (
        Gate(trusted, settings={"allowed_registries": [f"{host}/shop"]})
        .decide(reg, f"{host}/shop/web:1.0")
        .allowed
    )

    for rules, decision in decisions:
        opa_agrees(rules, DEFAULT_QUERY, decision, tmp_path)


PROD_ONLY = """package acme.deploy

import rego.v1

# Production deployments need a signature that says it was built for production.
deny contains {"rule": "prod_build", "message": msg} if {
	input.context.env == "prod"
	not prod_signed
	msg := concat("", [input.image.name, " has no signature with env=prod"])
}

prod_signed if {
	some sig in input.verification.signatures
	sig.annotations.env == "prod"
}
"""


@pytest.mark.parametrize("version", VERSIONS)
def test_custom_rules_replace_the_defaults(
    version: str, distribution: RegistryServer, keys: dict[str, Path], tmp_path: Path
) -> None:
    reg = Registry.remote(distribution.host, insecure=True)
    host = distribution.host
    staging = push_image(reg, "shop/api:staging", seed="staging")
    release = push_image(reg, "shop/api:release", seed="release")
    cosign_sign(version, keys["trusted"], f"{host}/shop/api@{staging.digest}", "-a", "env=staging")
    cosign_sign(version, keys["trusted"], f"{host}/shop/api@{release.digest}", "-a", "env=prod")
    rules = Bundle(modules={"acme/deploy.rego": PROD_ONLY})
    gate = Gate(trusting(keys["trusted"], version), rules, query="data.acme.deploy")
    ok = gate.decide(reg, f"{host}/shop/api:release", context={"env": "prod"})
    assert ok.allowed, ok.reasons
    denied = gate.decide(reg, f"{host}/shop/api:staging", context={"env": "prod"})
    assert denied.reasons == (f"prod_build: {host}/shop/api has no signature with env=prod",)
    assert gate.decide(reg, f"{host}/shop/api:staging", context={"env": "dev"}).allowed
    # The defaults are gone (no allowed_registries here), but verification is not:
    unsigned = push_image(reg, "shop/api:unsigned", seed="unsigned")
    d = gate.decide(reg, f"{host}/shop/api@{unsigned.digest}", context={"env": "dev"})
    assert d.fired == ("verification",)
    for decision in (ok, denied):
        opa_agrees(rules, "data.acme.deploy", decision, tmp_path)


def test_gate_rules_from_a_cosign_signed_policy_image(
    distribution: RegistryServer, keys: dict[str, Path]
) -> None:
    """The gate's own rules travel the same pipeline: pushed, cosign-signed, verified."""
    reg = Registry.remote(distribution.host, insecure=True)
    host = distribution.host
    rules = Gate(
        Verifier(TrustPolicy(keys=[keys["trusted"] / "cosign.pub"])),
        settings={"allowed_registries": ["registry.acme.example"]},
    ).rules
    pushed = reg.push(rules, "platform/gate-rules:1")
    policy_keys = Verifier(TrustPolicy(keys=[keys["other"] / "cosign.pub"]))
    images = Verifier(TrustPolicy(keys=[keys["trusted"] / "cosign.pub"]))
    cosign_sign("2", keys["other"], f"{host}/platform/gate-rules@{pushed.digest}")
    gate = Gate.from_registry(reg, "platform/gate-rules:1", images, rules_verifier=policy_keys)
    assert gate.rules.digest == rules.digest
    web = push_image(reg, "shop/web:1.0")
    cosign_sign("2", keys["trusted"], f"{host}/shop/web@{web.digest}")
    d = gate.decide(reg, f"{host}/shop/web:1.0")
    assert d.fired == ("allowed_registries",)
    assert d.evidence["rules"]["reference"] == f"{host}/platform/gate-rules@{pushed.digest}"


# -- keyless: cosign signs with an identity from the loopback Sigstore stack --------------

SLSA = "https://slsa.dev/provenance/v1"


def test_gate_with_cosign_keyless_identities_and_attestations(
    distribution: RegistryServer, sigstore_stack: SigstoreStack, tmp_path: Path
) -> None:
    stack = sigstore_stack
    reg = Registry.remote(distribution.host, insecure=True)
    host = distribution.host
    stack_flags = [*bundle_signing_flags(stack), "--allow-http-registry"]
    release = push_image(reg, "shop/web:1.0", seed="release")
    laptop = push_image(reg, "shop/web:dev", seed="laptop")
    ref = f"{host}/shop/web@{release.digest}"
    token, workflow = stack.github_token("acme/shop", ref="refs/tags/v1.0")
    keyless_cosign("3", stack, "sign", "--identity-token", token, *stack_flags, ref, cwd=tmp_path)
    predicate = tmp_path / "provenance.json"
    predicate.write_text(json.dumps({"buildDefinition": {"buildType": "https://acme/build"}}))
    token, _ = stack.github_token("acme/shop", ref="refs/tags/v1.0")
    keyless_cosign(
        "3",
        stack,
        "attest",
        "--type",
        SLSA,
        "--predicate",
        str(predicate),
        "--identity-token",
        token,
        *stack_flags,
        ref,
        cwd=tmp_path,
    )
    # Someone signs the other image from their laptop with an e-mail identity.
    keyless_cosign(
        "3",
        stack,
        "sign",
        "--identity-token",
        stack.mint_token("dev@acme.example"),
        *stack_flags,
        f"{host}/shop/web@{laptop.digest}",
        cwd=tmp_path,
    )

    builders = Identity(
        issuer=stack.github_issuer, subject_regex=r"https://github\.com/acme/shop/.*"
    )
    # cosign 3's signatures name no repository: binding it is explicitly waived.
    verifier = Verifier(
        TrustPolicy(identities=[builders], docker_reference="any"),
        trusted_root=stack.trusted_root_path,
    )
    gate = Gate(
        verifier,
        settings={
            "required_identities": [
                {"issuer": stack.github_issuer, "subject_regex": r".*@refs/tags/v.*"}
            ],
            "required_attestations": [SLSA],
        },
    )
    d = gate.decide(reg, f"{host}/shop/web:1.0")
    assert d.allowed, d.reasons
    (sig,) = d.input["verification"]["signatures"]
    assert sig["identity"]["subject"] == workflow
    assert sig["identity"]["issuer"] == stack.github_issuer
    (att,) = d.input["verification"]["attestations"]
    assert att["predicate"]["buildDefinition"]["buildType"] == "https://acme/build"
    opa_agrees(gate.rules, DEFAULT_QUERY, d, tmp_path)

    denied = gate.decide(reg, f"{host}/shop/web:dev")
    assert denied.fired == ("untrusted_signer",)
    opa_agrees(gate.rules, DEFAULT_QUERY, denied, tmp_path)
