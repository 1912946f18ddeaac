"""The admission configuration file: strict, relative paths, every field checked."""

from __future__ import annotations

import pytest

from policysupply.admission import AdmissionConfig, LabelSelector
from policysupply.errors import AdmissionConfigError


def write(tmp_path, text: str):
    p = tmp_path / "admission.yaml"
    p.write_text(text)
    return p


def test_full_file(tmp_path):
    (tmp_path / "hmac.key").write_text("x" * 32)
    cfg = AdmissionConfig.from_file(
        write(
            tmp_path,
            """
mode: warn
engine: embedded
trust_policy: policy/trust.yaml
rules: {directory: rules, state: state/rules.json}
settings: {allowed_registries: [ghcr.io/acme]}
mutate: true
scope:
  namespaces:
    selector:
      matchLabels: {policysupply: enabled}
      matchExpressions: [{key: tier, operator: In, values: [prod]}]
    exclude: [kube-system, gatekeeper-system]
  images: {include: ["ghcr.io/*"], exclude: ["ghcr.io/acme/base*"]}
registries: {insecure: ["127.0.0.1:5000"]}
cache:
  ttl: 10m
  entries: 500
  tag_ttl: 0
  redis: {url: "redis://redis:6379/0", hmac_key_file: hmac.key, timeout: 50ms}
limits:
  deadline: 8s
  registry_concurrency: 8
  registry_share: 3
  max_request_bytes: 1048576
  max_images: 50
server: {port: 9443, cert_file: tls/tls.crt, key_file: tls/tls.key}
""",
        )
    )
    assert cfg.mode == "warn"
    assert cfg.engine == "embedded"
    assert cfg.trust_policy == tmp_path / "policy" / "trust.yaml"
    assert cfg.rules_directory == tmp_path / "rules"
    assert cfg.rules_state == tmp_path / "state" / "rules.json"
    assert cfg.cache_ttl == 600
    assert cfg.tag_ttl == 0
    assert cfg.cache_entries == 500
    assert cfg.registry_concurrency == 8
    assert cfg.registry_share == 3
    assert cfg.redis is not None
    assert cfg.redis.timeout == 0.05
    assert cfg.redis.hmac_key == b"x" * 32
    assert cfg.namespace_selector == LabelSelector(
        match_labels={"policysupply": "enabled"}, match_expressions=(("tier", "In", ("prod",)),)
    )
    assert cfg.exclude_namespaces == ("kube-system", "gatekeeper-system")
    assert cfg.port == 9443
    assert cfg.cert_file == tmp_path / "tls" / "tls.crt"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("mode: enforse\ntrust_policy: t.yaml\n", "mode: must be one of"),
        ("trust_policy: t.yaml\nmutatee: true\n", "unknown key(s) ['mutatee']"),
        ("mode: warn\n", "trust_policy: is required"),
        ("trust_policy: t.yaml\nengine: rego\n", "engine: must be auto, opa or embedded"),
        ("trust_policy: t.yaml\nscope: {namespaces: {exlude: [a]}}\n", "unknown key(s) ['exlude']"),
        ("trust_policy: t.yaml\nlimits: {deadline: 45s}\n", "below the webhook timeout"),
        (
            "trust_policy: t.yaml\nlimits: {registry_concurrency: 4, registry_share: 5}\n",
            "limits.registry_share: must not exceed limits.registry_concurrency",
        ),
        ("trust_policy: t.yaml\nlimits: {registry_share: 0}\n", "limits.registry_share"),
        ("trust_policy: t.yaml\ncache: {redis: {url: 'http://x'}}\n", "must be a redis://"),
        # Attack: whoever can write to an unauthenticated shared cache plants
        # a "verified" result and has an unsigned image admitted.
        (
            "trust_policy: t.yaml\ncache: {redis: {url: 'redis://r:6379/0'}}\n",
            "hmac_key_file: is required with Redis",
        ),
        ("trust_policy: t.yaml\nserver: {cert_file: a.crt}\n", "go together"),
        ("trust_policy: t.yaml\nrules: {directory: a, image: b}\n", "give one of"),
        (
            "trust_policy: t.yaml\nscope: {namespaces: {selector: {matchExpressions: "
            "[{key: a, operator: Exists, values: [x]}]}}}\n",
            "Exists takes no values",
        ),
        ("trust_policy: t.yaml\nmutate: 'yes'\n", "must be true or false"),
        ("[1, 2", "not valid YAML"),
    ],
)
def test_mistakes_are_refused_with_the_field_named(tmp_path, text, message):
    with pytest.raises(AdmissionConfigError) as e:
        AdmissionConfig.from_file(write(tmp_path, text))
    assert message in str(e.value)


def test_selector_semantics_follow_kubernetes():
    s = LabelSelector(
        match_labels={"team": "shop"},
        match_expressions=(
            ("tier", "In", ("prod", "staging")),
            ("legacy", "DoesNotExist", ()),
            ("zone", "NotIn", ("eu",)),
            ("owner", "Exists", ()),
        ),
    )
    good = {"team": "shop", "tier": "prod", "owner": "x"}
    assert s.matches(good)
    assert not s.matches({**good, "legacy": "1"})
    assert not s.matches({**good, "zone": "eu"})
    assert s.matches({**good, "zone": "us"})
    assert not s.matches({k: v for k, v in good.items() if k != "owner"})
    assert not s.matches({**good, "tier": "dev"})
    assert s.to_kubernetes()["matchExpressions"][1] == {"key": "legacy", "operator": "DoesNotExist"}


def test_registry_share_defaults_to_half_the_workers():
    from policysupply._internal.admission.engine import registry_share

    assert registry_share(AdmissionConfig(trust_policy="t.yaml")) == 8
    assert registry_share(AdmissionConfig(trust_policy="t.yaml", registry_concurrency=1)) == 1
    assert registry_share(AdmissionConfig(trust_policy="t.yaml", registry_concurrency=5)) == 2
    given = AdmissionConfig(trust_policy="t.yaml", registry_concurrency=4, registry_share=9)
    assert registry_share(given) == 4
