"""OPA: URL checks, secrets, and what is refused before any request."""

from __future__ import annotations

from pathlib import Path

import pytest

from policysupply import (
    Bundle,
    LoadError,
    Manifest,
)
from policysupply.loaders import (
    OPA,
    fetch_verified,
    publish,
)
from tests.unit.loaders._env import Env


def test_opa_url_checks_and_secrets(tmp_path: Path) -> None:
    for bad in ("ftp://x", "127.0.0.1:8181", "http://u:p@127.0.0.1:8181", "http://h/?q=1"):
        with pytest.raises(LoadError):
            OPA(bad)
    opa = OPA("http://127.0.0.1:1/", token="sekr1t-token")
    assert "sekr1t" not in repr(opa)
    with pytest.raises(LoadError) as err:
        opa.query("x")
    assert "sekr1t" not in str(err.value)
    assert "127.0.0.1:1" in str(err.value)
    assert opa.healthy() is False


def test_rest_loads_refuse_roots_over_the_load_records(env: Env, tmp_path: Path) -> None:
    bundle = Bundle(
        manifest=Manifest(revision="1", roots=["system"]),
        modules={"authz.rego": "package system.authz\n\ndefault allow := true\n"},
    )
    publish(bundle, env.registry, "acme/sys:1", env.signer)
    verified = fetch_verified(env.registry, "acme/sys:1", env.verifier)
    # Refused before any request is made (nothing listens on port 1).
    with pytest.raises(LoadError, match=r"data\.system\.policysupply\.bundles"):
        OPA("http://127.0.0.1:1").load(verified)
