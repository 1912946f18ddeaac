"""Loading verified bundles into a real OPA: REST loads with rollback, and the bundle server.

Everything runs against real parts on loopback: Debian's distribution registry,
OPA (REST API and its bundle plugin), real cosign 2.x / 3.x signing with key
files, and our fault-injecting proxy in front of OPA for failures part-way
through a load.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from policysupply import (
    Bundle,
    DigestMismatchError,
    LoadError,
    NoSignatureError,
    Registry,
    Signer,
    TrustPolicy,
    UntrustedSignatureError,
    Verifier,
)
from policysupply.loaders import OPA, BundleServer, fetch_verified, publish
from policysupply.verifier import VerifiedBundle
from tests.interop import faultproxy
from tests.interop._cosign import COSIGN_SIGN_FLAGS, run_cosign
from tests.interop._loader_fixtures import (
    CASES,
    answers,
    fetch,
    k8s_revision,
    opa_proxy_fixture,  # noqa: F401
    opa_revision,
    state,
    wait_for,
)
from tests.interop.conftest import OpaServer, RegistryServer, free_port, run_opa

pytestmark = pytest.mark.interop

EXPECTED = [case["expected"] for case in CASES]


class Pipeline:
    """A registry, a key, and a verifier that trusts only that key."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.signer = Signer.generate()
        self.verifier = Verifier(TrustPolicy(keys=[self.signer.public_key_pem]))

    def release(self, bundle: Bundle, ref: str = "acme/policy:prod") -> VerifiedBundle:
        publish(bundle, self.registry, ref, self.signer)
        return fetch_verified(self.registry, ref, self.verifier)


@pytest.fixture
def local(tmp_path: Path) -> Pipeline:
    return Pipeline(Registry.local(tmp_path / "oci"))


# -- scenario 1: build, sign, push, refuse what is not genuine, load what is -----------


def _release_bundle(tmp: Path, name: str, signed_by: str) -> Bundle:
    """A small policy under root ``release/<name>`` that says who signed it.

    Its root does not overlap the example's ``k8s``, so it loads next to it.
    """
    root = tmp / f"release-{name}"
    (root / "release" / name).mkdir(parents=True, exist_ok=True)
    (root / "release" / name / "policy.rego").write_text(
        f"package release.{name}\n\n"
        f"signed_by := {json.dumps(signed_by)}\n\n"
        "default allow := false\n\n"
        'allow if input.user == "alice"\n'
    )
    (root / "release" / name / "data.json").write_text(json.dumps({"owners": ["alice"]}))
    return Bundle.from_directory(root, roots=[f"release/{name}"], revision=f"{name}-1")


def _cosign_keys(tmp: Path, name: str) -> Path:
    """A cosign key pair made by real cosign 2 in ``tmp/name``; returns the directory."""
    d = tmp / name
    d.mkdir()
    run_cosign("2", "generate-key-pair", cwd=d)
    return d


def _cosign_sign(version: str, keys: Path, server: RegistryServer, digest_ref: str) -> None:
    """Real cosign ``version`` signs ``digest_ref`` (``repo@sha256:...``) with ``keys``.

    cosign 2 stores a legacy ``.sig`` tag; cosign 3 (its default) a Sigstore
    bundle as a referrer (the ``sha256-<hex>`` fallback tag on distribution 2.8).
    """
    run_cosign(
        version,
        "sign",
        "--key",
        str(keys / "cosign.key"),
        *COSIGN_SIGN_FLAGS[version],
        f"{server.host}/{digest_ref}",
        cwd=keys,
    )


def _layer_blob_file(storage: Path, registry: Registry, ref: str) -> tuple[str, Path]:
    """The digest of ``ref``'s one layer and the file distribution stores it in."""
    raw, _ = registry.get_manifest(ref)
    (layer,) = json.loads(raw)["layers"]
    digest: str = layer["digest"]
    hexd = digest.removeprefix("sha256:")
    path = storage / "docker" / "registry" / "v2" / "blobs" / "sha256" / hexd[:2] / hexd / "data"
    assert path.is_file(), path
    return digest, path


def test_end_to_end_only_the_genuine_bundle_reaches_opa(
    distribution: RegistryServer,
    start_opa: Callable[..., OpaServer],
    example_dir: Path,
    tmp_path: Path,
) -> None:
    registry = Registry.remote(distribution.host, insecure=True)
    pipe = Pipeline(registry)
    genuine = Bundle.from_directory(example_dir)
    rest_opa = start_opa()
    opa = OPA(rest_opa.url)
    server = BundleServer(tmp_path / "served").start()
    try:
        # An unsigned bundle under the production tag is refused.
        evil = Bundle.from_directory(example_dir, revision="evil", metadata={"x": "unsigned"})
        registry.push(evil, "acme/policy:prod")
        with pytest.raises(NoSignatureError):
            fetch_verified(registry, "acme/policy:prod", pipe.verifier)
        # So is one signed by a key nobody trusts.
        publish(evil, registry, "acme/policy:prod", Signer.generate())
        with pytest.raises(UntrustedSignatureError):
            fetch_verified(registry, "acme/policy:prod", pipe.verifier)
        # ...and the watch refuses both, so OPA never sees them.
        watch = server.watch(registry, "acme/policy:prod", pipe.verifier, name="authz")
        watch.stop()
        assert watch.check() is False
        assert server.served("authz") is None
        assert opa.loaded() == {}
        assert rest_opa.get("/v1/policies")["result"] == []
        assert rest_opa.get("/v1/data/k8s") == {}

        # The genuine one: published, verified, loaded over REST.
        ref = publish(genuine, registry, "acme/policy:prod", pipe.signer)
        verified = fetch_verified(registry, "acme/policy:prod", pipe.verifier)
        assert verified.reference.digest == ref.digest
        result = opa.load(verified)
        assert result.reference == verified.reference
        assert set(opa.loaded()) == {f"{distribution.host}/acme/policy"}
        assert answers(rest_opa) == EXPECTED
        assert opa.query("k8s.admission.allow", CASES[0]["input"]) is CASES[0]["expected"]
        before = state(rest_opa)

        # Tampering after the genuine load changes nothing in OPA either.
        registry.push(Bundle.from_directory(example_dir, revision="evil-2"), "acme/policy:prod")
        with pytest.raises(NoSignatureError):
            fetch_verified(registry, "acme/policy:prod", pipe.verifier)
        assert state(rest_opa) == before
        publish(genuine, registry, "acme/policy:prod", pipe.signer)

        # Bundles signed by real cosign with a key file the release team keeps:
        # cosign 2's legacy .sig tag and cosign 3's default Sigstore bundle.
        trusted = _cosign_keys(tmp_path, "cosign-trusted")
        cosigned: dict[str, VerifiedBundle] = {}
        for version, scheme in (("2", "legacy"), ("3", "bundle")):
            # cosign 3's bundle names no repository: waiving that check is explicit.
            mode = "any" if version == "3" else "repository"
            release = Verifier(TrustPolicy(keys=[trusted / "cosign.pub"], docker_reference=mode))
            name = f"cosign{version}"
            pushed = registry.push(
                _release_bundle(tmp_path, name, f"cosign {version}"), f"acme/{name}:1"
            )
            _cosign_sign(version, trusted, distribution, f"acme/{name}@{pushed.digest}")
            v = fetch_verified(registry, f"acme/{name}:1", release)
            assert v.reference.digest == pushed.digest
            assert [s.scheme for s in v.artifact.signatures] == [scheme]
            assert opa.load(v).reference == v.reference
            assert opa.query(f"release/{name}/signed_by") == f"cosign {version}"
            assert opa.query(f"release/{name}/allow", {"user": "alice"}) is True
            assert opa.query(f"release/{name}/allow", {"user": "mallory"}) is False
            assert opa.query(f"release/{name}/owners") == ["alice"]
            cosigned[name] = v
        assert set(opa.loaded()) == {
            f"{distribution.host}/acme/{n}" for n in ("policy", "cosign2", "cosign3")
        }
        assert answers(rest_opa) == EXPECTED
        loaded_state = state(rest_opa)

        # From here on, the release team's key over either cosign's signatures.
        release = Verifier(TrustPolicy(keys=[trusted / "cosign.pub"], docker_reference="any"))
        # An unsigned copy of a cosign-signed bundle (same bytes, same digest,
        # in a repository its signature does not live in) is refused...
        copy = registry.copy(
            cosigned["cosign2"].reference,
            to=registry,
            to_ref="acme/mirror:1",
            with_signatures=False,
        )
        assert copy.digest == cosigned["cosign2"].reference.digest
        with pytest.raises(NoSignatureError):
            fetch_verified(registry, "acme/mirror:1", release)
        # ...and so is a changed bundle under the release tag, signed by real
        # cosign with a key nobody trusts.
        untrusted = _cosign_keys(tmp_path, "cosign-untrusted")
        for version in ("2", "3"):
            forged = Bundle(
                manifest=cosigned["cosign2"].bundle.manifest,
                modules={
                    "release/cosign2/policy.rego": (
                        "package release.cosign2\n\n"
                        f'signed_by := "mallory with cosign {version}"\n\nallow := true\n'
                    )
                },
                data=cosigned["cosign2"].bundle.data,
            )
            moved = registry.push(forged, "acme/cosign2:1")
            _cosign_sign(version, untrusted, distribution, f"acme/cosign2@{moved.digest}")
            with pytest.raises(UntrustedSignatureError):
                fetch_verified(registry, "acme/cosign2:1", release)
            forged_watch = server.watch(registry, "acme/cosign2:1", release, name="forged")
            forged_watch.stop()
            assert forged_watch.check() is False
            assert (forged_watch.last_error or "").startswith("UntrustedSignatureError")
            assert server.served("forged") is None
        assert state(rest_opa) == loaded_state
        assert opa.query("release/cosign2/allow", {"user": "mallory"}) is False

        # ...and served to OPA's bundle plugin, the cosign-signed ones too.
        assert watch.check() is True
        for name, v in cosigned.items():
            assert server.publish(v, name).reference == v.reference
        config = tmp_path / "opa-bundles.yaml"
        config.write_text(
            server.opa_config_yaml(["authz", "cosign2", "cosign3"], long_polling_timeout_seconds=5)
        )
        bundle_opa = start_opa("-c", str(config))  # healthy only once every bundle is active
        assert opa_revision(bundle_opa, "authz") == "example-1"
        assert answers(bundle_opa) == EXPECTED
        for name in cosigned:
            assert opa_revision(bundle_opa, name) == f"{name}-1"
            allow = bundle_opa.post(f"/v1/data/release/{name}/allow", {"input": {"user": "alice"}})
            assert allow["result"] is True
        served_answers = answers(bundle_opa)

        # Real tampering behind the signed digest: the registry's own storage
        # now holds other bytes (a bundle allowing everything) under the layer
        # digest the signed manifest names. The tag, manifest and signature are
        # untouched, so only the layer's hash can tell.
        storage = tmp_path / "distribution" / "data"
        layer, blob = _layer_blob_file(storage, registry, "acme/policy:prod")
        # The layer is the bundle's .tar.gz (as published: signed natively too).
        assert layer == registry.pull("acme/policy:prod").digest
        allow_all = Bundle(
            manifest=genuine.manifest,
            modules={"k8s/admission/admission.rego": "package k8s.admission\n\nallow := true\n"},
            data={},
        )
        blob.write_bytes(allow_all.to_bytes())
        status, _, served_bytes = fetch(f"{distribution.url}/v2/acme/policy/blobs/{layer}")
        assert (status, served_bytes) == (200, allow_all.to_bytes())  # really served
        with pytest.raises(DigestMismatchError, match=layer):
            fetch_verified(registry, "acme/policy:prod", pipe.verifier)
        with pytest.raises(DigestMismatchError):
            pipe.verifier.verify_bundle(registry, f"acme/policy@{ref.digest}")
        # A fresh bundle server following the tag refuses it too.
        fresh = BundleServer(tmp_path / "fresh").start()
        try:
            tampered_watch = fresh.watch(registry, "acme/policy:prod", pipe.verifier, name="authz")
            tampered_watch.stop()
            assert tampered_watch.check() is False
            assert (tampered_watch.last_error or "").startswith("DigestMismatchError")
            assert fresh.served("authz") is None
        finally:
            fresh.stop()
        # Neither OPA ever saw those bytes.
        assert state(rest_opa) == loaded_state
        assert answers(rest_opa) == EXPECTED
        assert answers(bundle_opa) == served_answers == EXPECTED
        assert opa_revision(bundle_opa, "authz") == "example-1"
    finally:
        server.stop()
        opa.close()
        registry.close()


# -- REST loads: replacing revisions ------------------------------------------------------


def test_revisions_replace_their_own_modules_and_data(
    local: Pipeline, start_opa: Callable[..., OpaServer], example_dir: Path, tmp_path: Path
) -> None:
    server = start_opa()
    # Someone else's policy and data outside our roots must survive every load.
    server_put = OPA(server.url)._api()
    server_put.put_policy("theirs.rego", "package theirs\n\nok := true\n")
    server_put.put_data(("other",), {"keep": [1, 2]})
    opa = OPA(server.url)
    v1 = local.release(k8s_revision(example_dir, tmp_path, "v1"))
    v2 = local.release(k8s_revision(example_dir, tmp_path, "v2"))

    first = opa.load(v1)
    assert answers(server) == EXPECTED
    v1_state = state(server)
    assert opa.load(v1).changed == 0  # idempotent: nothing to write

    second = opa.load(v2)
    assert second.removed == ("policysupply/acme/policy/~/k8s/security/security.rego",)
    assert "policysupply/acme/policy/~/k8s/extra/extra.rego" in second.modules
    assert opa.query("k8s/extra/note") == "v2"
    assert opa.query("k8s/labels/revision") == "v2"
    assert opa.query("k8s/admission/allow", CASES[0]["input"]) is False
    policies, data = state(server)
    assert set(policies) == {"theirs.rego", *second.modules}
    assert data["other"] == {"keep": [1, 2]}
    assert data["k8s"]["images"]["allowed_registries"] == ["gcr.io/distroless/"]
    assert opa.loaded()["acme/policy"]["revision"] == "v2"

    # Back to v1: exactly the state v1 left.
    assert opa.load(v1).modules == first.modules
    assert state(server) == v1_state
    assert answers(server) == EXPECTED

    opa.unload("acme/policy")
    policies, data = state(server)
    assert set(policies) == {"theirs.rego"}
    assert "k8s" not in data
    assert opa.loaded() == {}


def test_rules_becoming_data_and_renamed_functions(
    local: Pipeline, start_opa: Callable[..., OpaServer], tmp_path: Path
) -> None:
    """Transitions one write at a time cannot do in a naive order."""

    def tree(name: str, files: dict[str, str]) -> Bundle:
        root = tmp_path / name
        for rel, text in files.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(text)
        return Bundle.from_directory(root, roots=["app"], revision=name)

    a = tree(
        "a",
        {
            "app/lib/lib.rego": "package app.lib\n\nf(x) := x + 1\n",
            "app/main/main.rego": "package app.main\n\nimport data.app.lib\n\nout := lib.f(1)\n",
            "app/cfg/cfg.rego": 'package app.cfg\n\nmode := "strict"\n',
        },
    )
    b = tree(
        "b",
        {
            "app/lib/lib.rego": "package app.lib\n\ng(x) := x + 10\n",
            "app/main/main.rego": "package app.main\n\nimport data.app.lib\n\nout := lib.g(1)\n",
            "app/cfg/cfg.rego": "package app.cfg\n\nother := 1\n",
            "app/cfg/data.json": '{"mode": "lenient"}',
        },
    )
    server = start_opa()
    opa = OPA(server.url)
    va, vb = local.release(a), local.release(b)
    opa.load(va)
    assert (opa.query("app/main/out"), opa.query("app/cfg/mode")) == (2, "strict")
    opa.load(vb)  # f → g across two modules; a rule turns into data
    assert (opa.query("app/main/out"), opa.query("app/cfg/mode")) == (11, "lenient")
    opa.load(va)  # and back: data turns into a rule
    assert (opa.query("app/main/out"), opa.query("app/cfg/mode")) == (2, "strict")


def test_overlapping_roots_are_refused_before_anything_changes(
    local: Pipeline, start_opa: Callable[..., OpaServer], example_dir: Path, tmp_path: Path
) -> None:
    server = start_opa()
    opa = OPA(server.url)
    opa.load(local.release(Bundle.from_directory(example_dir)))
    before = state(server)
    other = local.release(Bundle.from_directory(example_dir), "acme/other:1")
    with pytest.raises(LoadError, match="overlaps root 'k8s' of acme/policy"):
        opa.load(other)
    assert state(server) == before


def test_rego_v0_modules_are_refused_over_rest(
    local: Pipeline, start_opa: Callable[..., OpaServer], tmp_path: Path
) -> None:
    (tmp_path / "v0").mkdir()
    (tmp_path / "v0" / "p.rego").write_text("package legacy\n\nallow { true }\n")
    verified = local.release(Bundle.from_directory(tmp_path / "v0", rego_version=0))
    server = start_opa()
    with pytest.raises(LoadError, match=r"Rego v0.*BundleServer"):
        OPA(server.url).load(verified)
    assert server.get("/v1/policies")["result"] == []


def test_wasm_entrypoints_are_refused_over_rest(
    local: Pipeline, start_opa: Callable[..., OpaServer], opa_bin: Path, tmp_path: Path
) -> None:
    # The REST API takes Rego and data only: OPA would answer the Wasm
    # entrypoint from the Rego, which its bundle plugin would not.
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.rego").write_text("package a\n\nx := 1\n")
    out = tmp_path / "w.tar.gz"
    proc = run_opa(
        opa_bin, "build", "-t", "wasm", "-e", "a/x", "-b", "d", "-o", str(out), cwd=tmp_path
    )
    assert proc.returncode == 0
    verified = local.release(Bundle.from_file(out))
    server = start_opa()
    with pytest.raises(LoadError, match=r"Wasm.*BundleServer"):
        OPA(server.url).load(verified)
    assert server.get("/v1/policies")["result"] == []


# -- REST loads: failures part-way leave the previous bundle serving -----------------------


def test_a_module_opa_rejects_part_way_rolls_everything_back(
    local: Pipeline, start_opa: Callable[..., OpaServer], example_dir: Path, tmp_path: Path
) -> None:
    server = start_opa()
    opa = OPA(server.url)
    opa.load(local.release(k8s_revision(example_dir, tmp_path, "v1")))
    before, before_answers = state(server), answers(server)

    v2 = k8s_revision(example_dir, tmp_path, "v2")
    # Our reader accepts it (it parses); OPA's compiler does not. Its id sorts
    # last, so every other change has been written when OPA refuses it.
    broken = Bundle(
        manifest=v2.manifest,
        modules={**v2.modules, "k8s/zz/broken.rego": "package k8s.zz\n\nx := nope(1)\n"},
        data=v2.data,
    )
    with pytest.raises(LoadError) as err:
        opa.load(local.release(broken))
    message = str(err.value)
    assert "k8s/zz/broken.rego" in message
    assert "nope" in message
    assert "rolled back" in message
    assert state(server) == before
    assert answers(server) == before_answers == EXPECTED


def _writes(proxy: Any) -> list[tuple[str, str]]:
    return [(m, p) for m, p, _ in proxy.log if m in ("PUT", "DELETE", "PATCH")]


@pytest.mark.parametrize("fault", ["status", "truncate", "reset"])
def test_each_write_failing_in_turn_leaves_opa_serving_the_old_bundle(
    fault: str,
    local: Pipeline,
    opa_proxy: tuple[OpaServer, Any],
    example_dir: Path,
    tmp_path: Path,
) -> None:
    """The proxy fails the 1st, 2nd, ... write of a v1 → v2 load, one per round.

    ``status``: a 503 the client does not retry, so the load must fail and
    roll back. ``truncate``: OPA applies the write but the answer is cut
    off, so the rollback must undo a write it never saw succeed. ``reset``:
    the connection drops before OPA sees the write; the client's retry
    policy repeats it, so the load succeeds.
    """
    server, proxy = opa_proxy
    direct = OPA(server.url)
    via_proxy = OPA(f"http://{proxy.host}", retries=2)
    v1 = local.release(k8s_revision(example_dir, tmp_path, "v1"))
    v2 = local.release(k8s_revision(example_dir, tmp_path, "v2"))
    direct.load(v1)
    v1_state, v1_answers = state(server), answers(server)
    via_proxy.load(v2)
    v2_state = state(server)
    writes = _writes(proxy)
    assert len(writes) >= 5  # delete, data, modules, record
    direct.load(v1)
    assert state(server) == v1_state

    outcomes = []
    for method, path in writes:
        proxy.log.clear()
        proxy.rules[:] = [faultproxy.Rule(method, "^" + re.escape(path) + "$", fault, times=1)]
        error: LoadError | None = None
        try:
            via_proxy.load(v2)
        except LoadError as exc:
            error = exc
        if error is not None:
            assert "rolled back" in str(error), str(error)
            assert state(server) == v1_state, (method, path)
            assert answers(server) == v1_answers
            outcomes.append("rolled back")
        else:
            assert state(server) == v2_state, (method, path)
            outcomes.append("loaded")
            direct.load(v1)
        assert proxy.rules[0].hits == 1, (method, path)
    if fault == "status":
        assert set(outcomes) == {"rolled back"}
    elif fault == "reset":
        assert set(outcomes) == {"loaded"}
    else:
        # Writes answered with a body (policies) fail after OPA applied them.
        assert "rolled back" in outcomes


def test_opa_lost_mid_load_says_the_rollback_is_incomplete(
    local: Pipeline, opa_proxy: tuple[OpaServer, Any], example_dir: Path, tmp_path: Path
) -> None:
    server, proxy = opa_proxy
    token = "s3cret-opa-token-value"
    direct = OPA(server.url)
    via_proxy = OPA(f"http://{proxy.host}", token=token)
    v1 = local.release(k8s_revision(example_dir, tmp_path, "v1"))
    v2 = local.release(k8s_revision(example_dir, tmp_path, "v2"))
    direct.load(v1)
    v1_state = state(server)
    # Part-way through, OPA stops accepting modules: the record, the delete of
    # a dropped module and the data land, the first module PUT (and every
    # PUT that would restore one) fails.
    proxy.add(faultproxy.Rule("PUT", "/v1/policies/", "status", times=-1, status=503))
    with pytest.raises(LoadError) as err:
        via_proxy.load(v2)
    message = str(err.value)
    assert "ROLLBACK INCOMPLETE" in message
    assert token not in message
    assert state(server) != v1_state
    # Once OPA is back, loading the previous bundle again restores it.
    proxy.rules.clear()
    via_proxy.load(v1)
    assert state(server) == v1_state


# -- the bundle server in front of OPA's bundle plugin -----------------------------------


def test_bundle_server_watch_serves_only_verified_revisions_across_restarts(
    distribution: RegistryServer,
    start_opa: Callable[..., OpaServer],
    example_dir: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = Registry.remote(distribution.host, insecure=True)
    pipe = Pipeline(registry)
    store = tmp_path / "store"
    v1 = k8s_revision(example_dir, tmp_path, "v1")
    v2 = k8s_revision(example_dir, tmp_path, "v2")
    v3 = Bundle.from_directory(example_dir, revision="v3-unsigned")
    publish(v1, registry, "acme/policy:prod", pipe.signer)

    server = BundleServer(store).start()
    watch = server.watch(registry, "acme/policy:prod", pipe.verifier, name="authz", interval=0.2)
    wait_for(lambda: server.served("authz") is not None, what="first publication")
    config = tmp_path / "opa.yaml"
    config.write_text(
        server.opa_config_yaml(
            min_delay_seconds=1, max_delay_seconds=1, long_polling_timeout_seconds=2
        )
    )
    opa = start_opa("-c", str(config))
    assert opa_revision(opa, "authz") == "v1"
    assert answers(opa) == EXPECTED

    # v2, signed: served, and OPA activates it.
    publish(v2, registry, "acme/policy:prod", pipe.signer)
    wait_for(lambda: opa_revision(opa, "authz") == "v2", what="OPA activating v2")
    assert opa.post("/v1/data/k8s/extra/note", {})["result"] == "v2"

    # v3, unsigned: rejected with a structured log record; v2 stays served.
    with caplog.at_level(logging.WARNING, logger="policysupply.loaders"):
        registry.push(v3, "acme/policy:prod")
        v3_digest = registry.resolve("acme/policy:prod")
        wait_for(lambda: watch.last_error is not None, what="the rejection")
    # (v2 may have been seen once between its push and its signature: that
    # rejection is logged too, and v2 was served once signed.)
    rejected: list[Any] = [
        r
        for r in caplog.records
        if getattr(r, "event", "") == "policysupply.bundle_rejected"
        and getattr(r, "digest", "") == v3_digest
    ]
    assert len(rejected) == 1
    assert rejected[0].reason == "NoSignatureError"
    assert rejected[0].bundle == "authz"
    served = server.served("authz")
    assert served is not None
    assert served.revision == "v2"
    assert opa_revision(opa, "authz") == "v2"

    # Restart on the same port (OPA's config names it): v2 is served from disk.
    port = server.port
    server.stop()
    assert not watch.running
    restarted = BundleServer(store, port=port).start()
    try:
        again = restarted.served("authz")
        assert again == served
        status, headers, body = fetch(f"{restarted.url}/bundles/authz")
        assert status == 200
        assert headers["ETag"] == served.etag
        assert Bundle.from_bytes(body).manifest.revision == "v2"
        # OPA's next poll carries v2's ETag: nothing new to download.
        assert fetch(f"{restarted.url}/bundles/authz", {"If-None-Match": served.etag})[0] == 304
        wait_for(lambda: opa_revision(opa, "authz") == "v2", what="OPA still on v2")
        assert (
            opa.post("/v1/data/k8s/admission/allow", {"input": CASES[0]["input"]})["result"]
            is False
        )
    finally:
        restarted.stop()
        registry.close()


def test_opa_keeps_its_bundle_while_the_server_is_down(
    local: Pipeline, start_opa: Callable[..., OpaServer], example_dir: Path, tmp_path: Path
) -> None:
    server = BundleServer(tmp_path / "store").start()
    server.publish(local.release(Bundle.from_directory(example_dir)), "authz")
    config = tmp_path / "opa.yaml"
    config.write_text(server.opa_config_yaml(min_delay_seconds=1, max_delay_seconds=1))
    opa = start_opa("-c", str(config))
    server.stop()
    shutil.rmtree(tmp_path / "store")
    # OPA's polls now fail; it keeps answering with the bundle it activated.
    import time

    time.sleep(2.5)
    assert answers(opa) == EXPECTED


# -- freeze: the clock ends a bundle's life, with real OPA and the CLI ----------------------


def _serve(tmp_path: Path, ref: str, pub: Path, *extra: str) -> tuple[subprocess.Popen[str], str]:
    """Runs ``policysupply serve`` on a free port; returns it and the OPA config it printed."""
    port = free_port()
    err = (tmp_path / f"serve-{port}.err").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "policysupply",
            "serve",
            ref,
            "-k",
            str(pub),
            "--max-signature-age",
            "1h",
            "--addr",
            f"127.0.0.1:{port}",
            "--interval",
            "0.3",
            "-d",
            str(tmp_path / "store"),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=err,
        text=True,
    )
    assert proc.stdout is not None
    config = ""
    while "resource:" not in config:
        line = proc.stdout.readline()
        if not line:
            pytest.fail((tmp_path / f"serve-{port}.err").read_text())
        config += line
    return proc, config


def test_freeze_attack_an_expired_bundle_is_withdrawn_and_never_reaches_a_new_opa(
    opa_bin: Path, start_opa: Callable[..., OpaServer], example_dir: Path, tmp_path: Path
) -> None:
    """The tag never moves; the signature just grows old. ``serve --on-expiry exit`` stops
    with status 1 at the deadline; restarted (default: withdraw), it no longer hands the
    persisted bundle to an OPA that starts now. (An OPA that activated it earlier keeps
    it in memory: OPA's bundle protocol has no "withdraw"; hence the exit status.)"""
    layout = tmp_path / "oci"
    signer = Signer.generate()
    pub = tmp_path / "cosign.pub"
    pub.write_bytes(signer.public_key_pem)
    left = 15  # seconds until the signature is older than the 1h maximum
    signed = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1, seconds=-left)
    deadline = time.monotonic() + left
    publish(
        Bundle.from_directory(example_dir, revision="frozen"),
        Registry.local(layout),
        "acme/policy:prod",
        signer,
        annotations={"dev.policysupply/signed-at": signed.strftime("%Y-%m-%dT%H:%M:%SZ")},
    )
    ref = f"oci:{layout}:acme/policy:prod"

    first, config = _serve(tmp_path, ref, pub, "--on-expiry", "exit")
    try:
        (tmp_path / "opa1.yaml").write_text(config)
        opa = start_opa("-c", str(tmp_path / "opa1.yaml"))
        assert opa_revision(opa, "policy") == "frozen"
        assert first.wait(timeout=left + 60) == 1
        assert time.monotonic() >= deadline - 1
    finally:
        first.kill()
        first.wait()
    errors = "".join(p.read_text() for p in tmp_path.glob("serve-*.err"))
    assert "StaleSignatureError" in errors
    assert "expired" in errors

    second, config = _serve(tmp_path, ref, pub)
    try:
        url = re.search(r"url: (\S+)", config)
        assert url is not None
        assert fetch(f"{url.group(1)}/bundles/policy")[0] == 404
        (tmp_path / "opa2.yaml").write_text(config)
        port = free_port()
        opa2 = subprocess.Popen(
            [
                str(opa_bin),
                "run",
                "--server",
                "--addr",
                f"127.0.0.1:{port}",
                "-c",
                str(tmp_path / "opa2.yaml"),
                "--log-level",
                "error",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            base = f"http://127.0.0.1:{port}"

            def up() -> bool:
                try:
                    return fetch(f"{base}/health")[0] == 200
                except OSError:
                    return False

            wait_for(up, what="OPA up")
            time.sleep(2)  # its first download has been answered by now
            assert fetch(f"{base}/health?bundles")[0] != 200  # OPA has no bundle
            bundles = json.loads(fetch(f"{base}/v1/data/system/bundles")[2])
            assert not bundles.get("result")
        finally:
            opa2.terminate()
            opa2.wait(timeout=30)
    finally:
        second.terminate()
        assert second.wait(timeout=30) == 1  # stopped while a bundle is expired
