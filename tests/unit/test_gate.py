"""The deployment gate on local OCI layouts with our own signatures."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import attrs
import pytest

from policysupply import (
    Bundle,
    BundleError,
    NoSignatureError,
    NotFoundError,
    Registry,
    Signer,
    TrustPolicy,
    Verifier,
)
from policysupply._internal import cosign
from policysupply.errors import UnsupportedByEngineError
from policysupply.gate import DEFAULT_QUERY, INPUT_SCHEMA, Decision, Gate
from policysupply.identity import GITHUB_ACTIONS_ISSUER, Identity
from tests.interop._gate_fixtures import push_image
from tests.unit._sigstore_pki import FakeBackend, FakeSigstore

KEYLESS = {
    "issuer": "https://token.actions.githubusercontent.com",
    "subject": "https://github.com/acme/app/.github/workflows/release.yml@refs/tags/v1",
}


@pytest.fixture
def reg(tmp_path: Path) -> Registry:
    return Registry.local(tmp_path / "oci")


@pytest.fixture
def signer() -> Signer:
    return Signer.generate()


def gate_for(*signers: Signer, threshold: int = 1, **kw: Any) -> Gate:
    policy = TrustPolicy(keys=[s.public_key_pem for s in signers], threshold=threshold)
    return Gate(Verifier(policy), **kw)


def verified_input(**over: Any) -> dict[str, Any]:
    """A hand-written input document as the gate builds it, for rule tests."""
    doc: dict[str, Any] = {
        "schema": INPUT_SCHEMA,
        "image": {
            "reference": "ghcr.io/acme/app:1",
            "registry": "ghcr.io",
            "repository": "acme/app",
            "name": "ghcr.io/acme/app",
            "tag": "1",
            "digest": "sha256:" + "a" * 64,
        },
        "verification": {
            "verified": True,
            "error": None,
            "message": "",
            "key_ids": [],
            "signatures": [
                {"key_id": None, "scheme": "bundle", "annotations": {}, "identity": KEYLESS}
            ],
            "attestations": [],
        },
        "context": {},
    }
    doc["verification"].update(over)
    return doc


# -- the verdicts -------------------------------------------------------------------------


def test_unsigned_image_is_denied_with_no_signature(reg: Registry, signer: Signer) -> None:
    pinned = push_image(reg, "acme/app:1")
    d = gate_for(signer).decide(reg, "acme/app:1")
    assert not d.allowed
    assert d.reasons == ("unsigned: no signature on acme/app:1",)
    assert d.fired == ("unsigned",)
    assert d.reference == str(pinned)
    v = d.input["verification"]
    assert v["verified"] is False
    assert v["error"] == "no_signature"
    assert v["error_type"] == "NoSignatureError"
    assert "no signatures found" in v["message"]


@pytest.mark.parametrize("scheme", ["legacy", "bundle"])
def test_image_signed_by_trusted_key_is_allowed(reg: Registry, signer: Signer, scheme: str) -> None:
    pinned = push_image(reg, "acme/app:1")
    signer.sign(reg, "acme/app:1", annotations={"team": "payments"}, scheme=scheme)  # type: ignore[arg-type]
    d = gate_for(signer).decide(reg, "acme/app:1", context={"env": "prod"})
    assert d.allowed, d.reasons
    assert d.reasons == ()
    doc = d.input
    assert doc["schema"] == INPUT_SCHEMA
    assert doc["image"] == {
        "reference": "acme/app:1",
        "registry": "",
        "repository": "acme/app",
        "name": "acme/app",
        "tag": "1",
        "digest": pinned.digest,
    }
    assert doc["context"] == {"env": "prod"}
    (sig,) = doc["verification"]["signatures"]
    assert sig["key_id"] == signer.key_id
    assert sig["scheme"] == scheme
    assert sig["annotations"]["team"] == "payments"
    assert sig["identity"] is None
    assert doc["verification"]["key_ids"] == [signer.key_id]
    assert doc["verification"]["attestations"] == []


def test_untrusted_signer_is_denied(reg: Registry, signer: Signer) -> None:
    push_image(reg, "acme/app:1")
    Signer.generate().sign(reg, "acme/app:1")
    d = gate_for(signer).decide(reg, "acme/app:1")
    assert not d.allowed
    assert d.fired == ("untrusted_signer",)
    assert d.reasons[0].startswith("untrusted_signer: untrusted signer: ")
    assert d.input["verification"]["error"] == "untrusted_signature"


def test_threshold_not_met_is_denied(reg: Registry, signer: Signer) -> None:
    push_image(reg, "acme/app:1")
    signer.sign(reg, "acme/app:1")
    d = gate_for(signer, Signer.generate(), threshold=2).decide(reg, "acme/app:1")
    assert not d.allowed
    assert d.fired == ("signature_threshold",)
    assert "2 required" in d.reasons[0]


def test_signature_copied_from_another_image_is_denied(reg: Registry, signer: Signer) -> None:
    a = push_image(reg, "acme/app:a", seed="a")
    b = push_image(reg, "acme/app:b", seed="b")
    signer.sign(reg, "acme/app:a")
    data, media_type = reg.get_manifest(f"acme/app:{cosign.sig_tag(str(a.digest))}")
    reg.put_manifest(f"acme/app:{cosign.sig_tag(str(b.digest))}", data, media_type=media_type)
    d = gate_for(signer).decide(reg, "acme/app:b")
    assert not d.allowed
    assert d.fired == ("verification",)
    assert d.input["verification"]["error"] == "verification_failed"
    assert f"signature is for {a.digest}" in d.reasons[0]


def test_missing_image_is_an_error_not_a_verdict(reg: Registry, signer: Signer) -> None:
    push_image(reg, "acme/app:1")
    with pytest.raises(NotFoundError):
        gate_for(signer).decide(reg, "acme/app:nope")


# -- default rules and settings ---------------------------------------------------------------


def test_allowed_registries_names_the_rule(reg: Registry, signer: Signer) -> None:
    push_image(reg, "acme/app:1")
    signer.sign(reg, "acme/app:1")
    # A local layout has no host; the reference may still name one.
    ref = "ghcr.io/acme/app:1"
    allowed = gate_for(signer, settings={"allowed_registries": ["ghcr.io"]})
    assert allowed.decide(reg, ref).allowed
    assert (
        gate_for(signer, settings={"allowed_registries": ["ghcr.io/acme/"]})
        .decide(reg, ref)
        .allowed
    )
    for entries in (["quay.io"], ["ghcr.io/acm"], ["ghcr.io/acme/app/x"]):
        d = gate_for(signer, settings={"allowed_registries": entries}).decide(reg, ref)
        assert not d.allowed, entries
        assert d.fired == ("allowed_registries",)
        assert d.reasons[0].startswith(
            "allowed_registries: ghcr.io/acme/app is not from an allowed registry"
        )


def test_reasons_accumulate_across_rules(reg: Registry, signer: Signer) -> None:
    push_image(reg, "acme/app:1")
    d = gate_for(signer, settings={"allowed_registries": ["quay.io"]}).decide(
        reg, "ghcr.io/acme/app:1"
    )
    assert d.fired == ("allowed_registries", "unsigned")
    assert len(d.reasons) == 2
    assert [v["rule"] for v in d.evidence["violations"]] == ["allowed_registries", "unsigned"]


def test_required_identities_deny_key_only_signatures(reg: Registry, signer: Signer) -> None:
    push_image(reg, "acme/app:1")
    signer.sign(reg, "acme/app:1")
    gate = gate_for(signer, settings={"required_identities": [KEYLESS]})
    d = gate.decide(reg, "acme/app:1")
    assert not d.allowed
    assert d.fired == ("required_identities",)
    assert f"signed by: key {signer.key_id}" in d.reasons[0]


@pytest.mark.parametrize(
    ("want", "ok"),
    [
        (KEYLESS, True),
        ({**KEYLESS, "subject": "https://github.com/acme/other/x@refs/tags/v1"}, False),
        ({**KEYLESS, "issuer": "https://accounts.google.com"}, False),
        (
            {
                "issuer": KEYLESS["issuer"],
                "subject_regex": r"https://github\.com/acme/app/\.github/workflows/.*@refs/tags/v.*",
            },
            True,
        ),
        # Regexes match the whole subject: a prefix or suffix match is not enough.
        ({"issuer": KEYLESS["issuer"], "subject_regex": r"https://github\.com/acme/app"}, False),
        ({"issuer": KEYLESS["issuer"], "subject_regex": r"github\.com/acme/app/.*"}, False),
        ({"issuer_regex": r"https://token\.actions\..*", "subject": KEYLESS["subject"]}, True),
    ],
)
def test_required_identity_matching(want: dict[str, str], ok: bool, signer: Signer) -> None:
    gate = gate_for(signer, settings={"required_identities": [want]})
    result = gate.evaluate(verified_input())
    assert result["allow"] is ok, result
    if not ok:
        assert [v["rule"] for v in result["deny"]] == ["required_identities"]


def test_required_identity_matches_any_san(signer: Signer) -> None:
    gate = gate_for(
        signer, settings={"required_identities": [{"issuer": "https://i", "subject": "b@x"}]}
    )
    sig = {
        "key_id": None,
        "scheme": "bundle",
        "annotations": {},
        "identity": {"issuer": "https://i", "subject": "a@x", "sans": ["a@x", "b@x"]},
    }
    assert gate.evaluate(verified_input(signatures=[sig]))["allow"] is True
    evil = {"issuer": "https://evil.example/github.com/acme/app"}
    sig["identity"] = {**sig["identity"], **evil}
    assert gate.evaluate(verified_input(signatures=[sig]))["allow"] is False


def test_identity_objects_are_accepted_as_settings(signer: Signer) -> None:
    identity = Identity(issuer=KEYLESS["issuer"], subject=KEYLESS["subject"])
    gate = gate_for(signer, settings={"required_identities": [identity]})
    assert gate.rules.data["policysupply"]["gate"]["settings"]["required_identities"] == [KEYLESS]
    assert gate.evaluate(verified_input())["allow"] is True
    with pytest.raises(BundleError, match="extension claims"):
        gate_for(signer, settings={"required_identities": [Identity.github("acme/app")]})


def test_required_attestations(reg: Registry, signer: Signer) -> None:
    slsa = "https://slsa.dev/provenance/v1"
    gate = gate_for(signer, settings={"required_attestations": [slsa]})
    att = {"predicate_type": slsa, "predicate": {"buildType": "x"}, "key_id": "k", "identity": None}
    assert gate.evaluate(verified_input(attestations=[att]))["allow"] is True
    other = {**att, "predicate_type": "https://spdx.dev/Document"}
    result = gate.evaluate(verified_input(attestations=[other]))
    assert result["deny"] == [
        {"rule": "required_attestations", "message": f"no verified attestation of type {slsa}"}
    ]
    push_image(reg, "acme/app:1")
    signer.sign(reg, "acme/app:1")
    d = gate.decide(reg, "acme/app:1")
    assert d.fired == ("required_attestations",)


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"allowed_registry": ["ghcr.io"]}, "unknown gate setting"),
        ({"allowed_registries": "ghcr.io"}, "must be a list"),
        ({"allowed_registries": [""]}, "non-empty strings"),
        ({"required_attestations": [1]}, "non-empty strings"),
        ({"required_identities": [{"issuer": "https://i"}]}, "subject / subject_regex"),
        (
            {"required_identities": [{"subject": "s", "issuer": "i", "issuer_regex": "i"}]},
            "issuer / issuer_regex",
        ),
        ({"required_identities": ["me"]}, "is not an identity"),
    ],
)
def test_settings_are_validated_for_the_default_rules(
    settings: dict[str, Any], match: str, signer: Signer
) -> None:
    with pytest.raises(BundleError, match=match):
        gate_for(signer, settings=settings)


def test_default_rules_bundle(signer: Signer) -> None:
    rules = Gate.default_rules()
    rules.check()
    assert rules.manifest.roots == ("policysupply/gate",)
    assert rules.manifest.revision.startswith("policysupply-")
    assert set(rules.data["policysupply"]["gate"]["settings"]) == {
        "allowed_registries",
        "required_identities",
        "required_attestations",
    }
    gate = gate_for(signer)
    assert gate.rules is rules  # no settings: the shared bundle, compiled per gate
    assert gate.query == DEFAULT_QUERY


# -- custom rules ----------------------------------------------------------------------------

CUSTOM = """package acme.gate

import rego.v1

deny contains msg if {
	input.context.env == "prod"
	input.image.tag == null
	msg := "pin-by-tag: production images need a release tag"
}

deny contains {"rule": "team", "message": msg} if {
	input.context.team in data.acme.gate.blocked_teams
	msg := concat("", ["team ", input.context.team, " may not deploy"])
}
"""


def custom_rules() -> Bundle:
    return Bundle(
        modules={"acme/gate.rego": CUSTOM}, data={"acme": {"gate": {"blocked_teams": ["intern"]}}}
    )


def test_custom_rules_replace_the_defaults(reg: Registry, signer: Signer) -> None:
    pinned = push_image(reg, "acme/app:1")
    signer.sign(reg, "acme/app:1")
    gate = gate_for(signer, rules=custom_rules(), query="data.acme.gate")
    assert gate.decide(reg, "acme/app:1", context={"env": "prod"}).allowed
    by_digest = f"acme/app@{pinned.digest}"
    d = gate.decide(reg, by_digest, context={"env": "prod", "team": "intern"})
    assert not d.allowed
    assert d.reasons == (
        "deny: pin-by-tag: production images need a release tag",
        "team: team intern may not deploy",
    )
    assert d.fired == ("deny", "team")
    # Settings for the defaults do not exist here: an allowed_registries list is just data.
    assert (
        gate_for(signer, rules=custom_rules(), query="data.acme.gate")
        .decide(reg, "quay.io/acme/app:1")
        .allowed
    )


def test_custom_rules_cannot_allow_an_unverified_image(reg: Registry, signer: Signer) -> None:
    push_image(reg, "acme/app:1")
    gate = gate_for(signer, rules=custom_rules(), query="data.acme.gate")
    d = gate.decide(reg, "acme/app:1")
    assert not d.allowed
    assert d.fired == ("verification",)
    assert "no signatures found" in d.reasons[0]
    # Unless the gate is told to leave it to the rules (which then see the failure).
    lax = gate_for(signer, rules=custom_rules(), query="data.acme.gate", require_verification=False)
    d = lax.decide(reg, "acme/app:1")
    assert d.allowed
    assert d.input["verification"]["error"] == "no_signature"


def test_custom_settings_are_overlaid_without_validation(signer: Signer) -> None:
    module = (
        "package policysupply.gate\n\nimport rego.v1\n\n"
        "allow if input.context.n < data.policysupply.gate.settings.limit\n"
    )
    rules = Bundle(modules={"g.rego": module}, manifest=Gate.default_rules().manifest)
    gate = gate_for(
        signer, rules=rules, query="data.policysupply.gate.allow", settings={"limit": 3}
    )
    assert gate.evaluate({"context": {"n": 2}}) is True
    assert gate.evaluate({"context": {"n": 5}}) is None  # undefined: no default


@pytest.mark.parametrize(
    ("module", "query", "allowed", "fired"),
    [
        ("allow := true", "data.t.allow", True, ()),
        ("allow := false", "data.t.allow", False, ("default_deny",)),
        ("allow if input.nothing", "data.t.allow", False, ("default_deny",)),  # undefined
        ('deny contains "x: y" if true', "data.t.deny", False, ("deny",)),
        ("deny contains 1 if true", "data.t.deny", False, ("deny",)),
        ("allow := false\ndeny := set()", "data.t", False, ("default_deny",)),
        ('allow := true\ndeny contains "no" if true', "data.t", False, ("deny",)),
        ("deny := set()", "data.t", True, ()),
    ],
)
def test_result_contract(
    reg: Registry, signer: Signer, module: str, query: str, allowed: bool, fired: tuple[str, ...]
) -> None:
    push_image(reg, "acme/app:1")
    signer.sign(reg, "acme/app:1")
    rules = Bundle(modules={"t.rego": f"package t\n\nimport rego.v1\n\n{module}\n"})
    d = gate_for(signer, rules=rules, query=query).decide(reg, "acme/app:1")
    assert (d.allowed, d.fired) == (allowed, fired), d.reasons
    assert bool(d.reasons) is not allowed


@pytest.mark.parametrize(
    ("module", "query", "match"),
    [
        ('allow := "yes"', "data.t", "allow must be a boolean"),
        ("x := 3", "data.t.x", "must give a boolean"),
        ('x := {"a": 1}', "data.t.x", "must give a boolean"),
        ("allow := input.context.a\nallow := input.context.b", "data.t.allow", "failed"),
        ("allow := true", "data.t.allow +", r"data\.t\.allow \+"),
    ],
)
def test_rules_outside_the_contract_raise(
    reg: Registry, signer: Signer, module: str, query: str, match: str
) -> None:
    push_image(reg, "acme/app:1")
    signer.sign(reg, "acme/app:1")
    rules = Bundle(modules={"t.rego": f"package t\n\nimport rego.v1\n\n{module}\n"})
    with pytest.raises(BundleError, match=match):
        gate_for(signer, rules=rules, query=query).decide(
            reg, "acme/app:1", context={"a": 1, "b": 2}
        )


@pytest.mark.parametrize("engine", ["opa", "embedded"])
def test_malformed_rule_is_a_bundle_error_when_the_gate_is_built(
    signer: Signer, engine: str
) -> None:
    # The in-process engine died with SIGSEGV on `input.x ==` then a newline.
    for source in ("package t\n\nallow if {\n", "package t\n\nallow if input.x ==\n"):
        broken = Bundle(modules={"bad.rego": source})
        with pytest.raises(BundleError) as info:
            gate_for(signer, rules=broken, query="data.t.allow", engine=engine)
        assert info.value.entry == "bad.rego"


def test_v0_rules_are_judged_by_opa_and_refused_by_embedded(signer: Signer) -> None:
    legacy = Bundle(
        modules={"old.rego": "package t\n\nallow { input.verification.verified }\n"},
        manifest=attrs.evolve(Gate.default_rules().manifest, roots=None, rego_version=0),
    )
    with pytest.raises(BundleError, match="v0") as info:
        gate_for(signer, rules=legacy, query="data.t.allow", engine="embedded")
    assert info.value.entry == "old.rego"
    gate = gate_for(signer, rules=legacy, query="data.t.allow", engine="opa")
    assert gate.evaluate(verified_input()) is True


@pytest.mark.parametrize("engine", ["opa", "embedded"])
def test_the_decision_names_the_engine_that_decided(
    reg: Registry, signer: Signer, engine: str
) -> None:
    push_image(reg, "acme/app:1")
    signer.sign(reg, "acme/app:1")
    gate = gate_for(signer, engine=engine)
    assert gate.engine == engine
    assert engine in repr(gate)
    d = gate.decide(reg, "acme/app:1")
    assert d.allowed
    assert d.evidence["engine"] == engine
    push_image(reg, "acme/unsigned:1")
    unsigned = gate.decide(reg, "acme/unsigned:1")
    assert not unsigned.allowed
    assert unsigned.evidence["engine"] == engine


def test_opa_engine_decisions_equal_opa_eval_of_the_same_rules_and_input(
    reg: Registry, signer: Signer, tmp_path: Path
) -> None:
    import subprocess

    from tests.conftest import peer

    push_image(reg, "acme/app:1")
    signer.sign(reg, "acme/app:1")
    push_image(reg, "docker.io/library/evil:1")
    gate = gate_for(signer, engine="opa", settings={"allowed_registries": ["acme/"]})
    bundle_file = tmp_path / "rules.tar.gz"
    gate.rules.write(bundle_file)
    for image in ("acme/app:1", "docker.io/library/evil:1"):
        d = gate.decide(reg, image)
        (tmp_path / "input.json").write_text(json.dumps(d.to_json()["evidence"]["input"]))
        out = subprocess.run(
            [str(peer("opa")), "eval", "--format=json", "-b", str(bundle_file),
             "-i", str(tmp_path / "input.json"), DEFAULT_QUERY],
            capture_output=True, text=True, check=True, timeout=60,
        )  # fmt: skip
        want = json.loads(out.stdout)["result"][0]["expressions"][0]["value"]
        assert d.to_json()["evidence"]["result"] == want, image


# -- context and evidence ------------------------------------------------------------------


def test_context_strings_reach_the_rules_intact(reg: Registry, signer: Signer) -> None:
    push_image(reg, "acme/app:1")
    signer.sign(reg, "acme/app:1")
    echo = 'deny contains {"rule": "echo", "message": input.context.s} if true'
    rules = Bundle(modules={"t.rego": f"package t\n\nimport rego.v1\n\n{echo}\n"})
    tricky = 'quote " backslash \\ newline \n unicode é ☃ <script>'
    d = gate_for(signer, rules=rules, query="data.t.deny").decide(
        reg, "acme/app:1", context={"s": tricky}
    )
    assert d.reasons == (f"echo: {tricky}",)
    assert "<script>" not in d._repr_html_()
    with pytest.raises(TypeError, match="JSON"):
        gate_for(signer).decide(reg, "acme/app:1", context={"when": object()})


def test_decision_value_and_json(reg: Registry, signer: Signer) -> None:
    push_image(reg, "acme/app:1")
    d = gate_for(signer, settings={"allowed_registries": ["ghcr.io"]}).decide(reg, "acme/app:1")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        d.allowed = True  # type: ignore[misc]
    out = d.to_json()
    assert json.loads(json.dumps(out)) == out
    assert out["decision"] == "deny"
    assert out["reasons"] == list(d.reasons)
    assert out["evidence"]["fired"] == ["allowed_registries", "unsigned"]
    assert out["evidence"]["query"] == DEFAULT_QUERY
    assert out["evidence"]["rules"]["digest"].startswith("sha256:")
    assert out["evidence"]["result"]["allow"] is False
    assert str(d).startswith("DENY acme/app@sha256:")
    page = d._repr_html_()
    for part in ("DENY", "allowed_registries", "Rego input"):
        assert part in page
    assert isinstance(d, Decision)


def test_signed_decision_html_lists_signers(reg: Registry, signer: Signer) -> None:
    push_image(reg, "acme/app:1")
    signer.sign(reg, "acme/app:1")
    page = gate_for(signer).decide(reg, "acme/app:1")._repr_html_()
    for part in ("ALLOW", signer.key_id[:23], "verified"):
        assert part in page


# -- rules from a signed policy image ---------------------------------------------------------


def test_rules_from_a_signed_policy_image(reg: Registry, signer: Signer) -> None:
    rules_signer = Signer.generate()
    pushed = reg.push(custom_rules(), "acme/gate-rules:1")
    rules_verifier = Verifier(TrustPolicy(keys=[rules_signer.public_key_pem]))
    images = Verifier(TrustPolicy(keys=[signer.public_key_pem]))
    with pytest.raises(NoSignatureError):
        Gate.from_registry(reg, "acme/gate-rules:1", images, rules_verifier=rules_verifier)
    rules_signer.sign(reg, "acme/gate-rules:1")
    gate = Gate.from_registry(
        reg, "acme/gate-rules:1", images, rules_verifier=rules_verifier, query="data.acme.gate"
    )
    push_image(reg, "acme/app:1")
    signer.sign(reg, "acme/app:1")
    d = gate.decide(reg, "acme/app:1", context={"team": "intern"})
    assert d.fired == ("team",)
    assert d.evidence["rules"]["reference"] == f"acme/gate-rules@{pushed.digest}"
    assert d.evidence["rules"]["digest"] == custom_rules().digest


# -- freshness, caching, threads ----------------------------------------------------------------


class CountingRegistry(Registry):
    """Counts reads that reach the store (a spy, not a fake: the store is real)."""

    def __init__(self, inner: Registry) -> None:
        super().__init__(inner._store, host=inner.host)
        self.blob_reads = 0

    def get_blob(self, repository: str, digest: str, *, limit: int = 64 << 20) -> bytes:
        self.blob_reads += 1
        return super().get_blob(repository, digest, limit=limit)


def test_tags_and_signatures_are_read_fresh_every_decision(reg: Registry, signer: Signer) -> None:
    gate = gate_for(signer)
    first = push_image(reg, "acme/app:1", seed="one")
    signer.sign(reg, "acme/app:1")
    assert gate.decide(reg, "acme/app:1").allowed
    # The tag moves to an unsigned image: the gate sees the new digest.
    second = push_image(reg, "acme/app:1", seed="two")
    d = gate.decide(reg, "acme/app:1")
    assert d.reference.endswith(str(second.digest))
    assert d.fired == ("unsigned",)
    # Signatures removed from the first image: denied again.
    reg.delete(f"acme/app:{cosign.sig_tag(str(first.digest))}")
    assert gate.decide(reg, f"acme/app@{first.digest}").fired == ("unsigned",)


def test_signature_payloads_are_reused_by_digest(reg: Registry, signer: Signer) -> None:
    push_image(reg, "acme/app:1")
    signer.sign(reg, "acme/app:1")
    counting = CountingRegistry(reg)
    gate = gate_for(signer)
    for _ in range(5):
        assert gate.decide(counting, "acme/app:1").allowed
    assert counting.blob_reads == 1


def test_concurrent_decisions(reg: Registry, signer: Signer) -> None:
    push_image(reg, "acme/app:good", seed="good")
    push_image(reg, "acme/app:bad", seed="bad")
    signer.sign(reg, "acme/app:good")
    gate = gate_for(signer)
    results: list[tuple[str, bool]] = []
    lock = threading.Lock()

    def work(tag: str) -> None:
        for _ in range(10):
            d = gate.decide(reg, f"acme/app:{tag}")
            with lock:
                results.append((tag, d.allowed))

    threads = [threading.Thread(target=work, args=(t,)) for t in ["good", "bad"] * 4]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 80
    assert all(allowed is (tag == "good") for tag, allowed in results)


# -- keyless signers and attestations (offline Sigstore) ----------------------------------------

WORKFLOW = "https://github.com/acme/app/.github/workflows/release.yml@refs/heads/main"
SLSA = "https://slsa.dev/provenance/v1"


@pytest.fixture(scope="module")
def sigstore() -> FakeSigstore:
    return FakeSigstore()


@pytest.fixture
def trusted_root(sigstore: FakeSigstore, tmp_path: Path) -> Path:
    return sigstore.write_trusted_root(tmp_path / "trusted_root.json")


def keyless(sigstore: FakeSigstore, subject: str = WORKFLOW) -> Signer:
    return Signer._with_keyless(FakeBackend(sigstore, subject=subject))


@pytest.mark.parametrize("scheme", ["legacy", "bundle"])
def test_keyless_signature_reaches_the_rules(
    reg: Registry, sigstore: FakeSigstore, trusted_root: Path, scheme: str
) -> None:
    push_image(reg, "acme/app:1")
    keyless(sigstore).sign(reg, "acme/app:1", scheme=scheme)  # type: ignore[arg-type]
    trusted = Identity(issuer=GITHUB_ACTIONS_ISSUER, subject_regex=r"https://github\.com/acme/.*")
    verifier = Verifier(TrustPolicy(identities=[trusted]), trusted_root=trusted_root)
    d = Gate(verifier).decide(reg, "acme/app:1")
    assert d.allowed, d.reasons
    (sig,) = d.input["verification"]["signatures"]
    assert sig["identity"] == {
        "issuer": GITHUB_ACTIONS_ISSUER,
        "subject": WORKFLOW,
        "matched": trusted.describe(),
    }
    assert sig["signed_at"].endswith("Z")
    assert isinstance(sig["log_index"], int)
    # The gate can narrow what the trust policy accepts.
    release_only = {"issuer": GITHUB_ACTIONS_ISSUER, "subject_regex": r".*@refs/tags/v.*"}
    d = Gate(verifier, settings={"required_identities": [release_only]}).decide(reg, "acme/app:1")
    assert d.fired == ("required_identities",)
    assert f"signed by: {WORKFLOW} from {GITHUB_ACTIONS_ISSUER}" in d.reasons[0]
    # An identity the trust policy does not know is an untrusted signer.
    stranger = Identity(issuer=GITHUB_ACTIONS_ISSUER, subject="https://github.com/evil/x")
    strict = Verifier(TrustPolicy(identities=[stranger]), trusted_root=trusted_root)
    d = Gate(strict).decide(reg, "acme/app:1")
    assert d.fired == ("untrusted_signer",)
    assert d.input["verification"]["error_type"] == "IdentityMismatchError"


@pytest.mark.parametrize("scheme", ["legacy", "bundle"])
def test_required_attestations_from_verified_statements(
    reg: Registry, signer: Signer, scheme: str
) -> None:
    push_image(reg, "acme/app:1")
    signer.sign(reg, "acme/app:1", scheme=scheme)  # type: ignore[arg-type]
    gate = gate_for(signer, settings={"required_attestations": [SLSA]})
    assert gate.attestations is True
    assert gate.decide(reg, "acme/app:1").fired == ("required_attestations",)
    predicate = {"buildDefinition": {"buildType": "https://example/build"}}
    signer.attest(reg, "acme/app:1", predicate_type=SLSA, predicate=predicate, scheme=scheme)  # type: ignore[arg-type]
    d = gate.decide(reg, "acme/app:1")
    assert d.allowed, d.reasons
    (att,) = d.input["verification"]["attestations"]
    assert att == {
        "predicate_type": SLSA,
        "predicate": predicate,
        "key_id": signer.key_id,
        "identity": None,
    }
    # An attestation by an untrusted key does not count.
    other = Signer.generate()
    push_image(reg, "acme/app:2", seed="two")
    signer.sign(reg, "acme/app:2")
    other.attest(reg, "acme/app:2", predicate_type=SLSA, predicate=predicate)
    assert gate.decide(reg, "acme/app:2").fired == ("required_attestations",)
    # Without the setting, attestations are not read (one registry read fewer).
    assert gate_for(signer).decide(reg, "acme/app:1").input["verification"]["attestations"] == []


def test_missing_required_attestation_is_denied_as_such(tmp_path: Path) -> None:
    from policysupply import Bundle, Gate, Registry, Signer, TrustPolicy, Verifier

    slsa = "https://slsa.dev/provenance/v1"
    reg = Registry.local(tmp_path / "oci")
    reg.push(Bundle(modules={}, data={"x": 1}), "acme/app:1")
    signer = Signer.generate()
    signer.sign(reg, "acme/app:1")
    gate = Gate(Verifier(TrustPolicy(keys=[signer.public_key_pem], attestations=[slsa])))
    decision = gate.decide(reg, "acme/app:1")
    assert not decision.allowed
    assert decision.evidence["input"]["verification"]["error"] == "missing_attestation"
    assert any("no attestation of type" in r for r in decision.reasons)
    assert not any(r.startswith("unsigned:") for r in decision.reasons)
    signer.attest(reg, "acme/app:1", predicate_type=slsa, predicate={"builder": {"id": "ci"}})
    assert gate.decide(reg, "acme/app:1").allowed


def test_deeply_nested_context_is_refused_before_the_engine(tmp_path: Path) -> None:
    from policysupply import Bundle, BundleError, Gate, Registry, Signer, TrustPolicy, Verifier

    reg = Registry.local(tmp_path / "oci")
    reg.push(Bundle(modules={}, data={"x": 1}), "acme/app:1")
    signer = Signer.generate()
    signer.sign(reg, "acme/app:1")
    deep: object = "bottom"
    for _ in range(20_000):  # past both Python's recursion limit and rego-cpp's stack
        deep = [deep]
    gate = Gate(Verifier(TrustPolicy(keys=[signer.public_key_pem])))
    with pytest.raises(BundleError, match="nest"):
        gate.decide(reg, "acme/app:1", context={"deep": deep})
    assert gate.decide(reg, "acme/app:1", context={"shallow": [[1]]}).allowed


def test_unverified_image_is_denied_even_when_the_engine_cannot_judge_its_input(
    reg: Registry, signer: Signer
) -> None:
    # The embedded engine refuses strings with quotes; the context carries one.
    # Verification alone decides an unsigned image: DENY, never an error or ALLOW.
    push_image(reg, "acme/unsigned:1")
    gate = gate_for(signer, engine="embedded")
    tricky = {"note": 'a "quoted" value'}
    d = gate.decide(reg, "acme/unsigned:1", context=tricky)
    assert not d.allowed
    assert d.fired == ("verification",)
    assert d.evidence["engine_error"]["type"] == "UnsupportedByEngineError"
    # A verified image with the same input needs the rules: a refusal, not a verdict.
    push_image(reg, "acme/app:1")
    signer.sign(reg, "acme/app:1")
    with pytest.raises(UnsupportedByEngineError, match="OPA engine"):
        gate.decide(reg, "acme/app:1", context=tricky)
    assert gate_for(signer, engine="opa").decide(reg, "acme/app:1", context=tricky).allowed
