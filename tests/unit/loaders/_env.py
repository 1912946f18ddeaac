"""Verified bundles for the loader tests: a local registry, a signer, a verifier trusting it."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

from policysupply import (
    Bundle,
    Manifest,
    Registry,
    Signer,
    TrustPolicy,
    Verifier,
)
from policysupply.loaders import (
    fetch_verified,
    publish,
)
from policysupply.verifier import VerifiedBundle

MODULE = "package acme.authz\n\ndefault allow := false\n\nallow if input.user in data.acme.users\n"


def make_bundle(revision: str, users: list[str], extra: str = "") -> Bundle:
    modules = {"acme/authz.rego": MODULE}
    if extra:
        modules["acme/extra.rego"] = extra
    return Bundle.from_bytes(
        Bundle(
            manifest=Manifest(revision=revision, roots=["acme"]),
            modules=modules,
            data={"acme": {"users": users}},
        ).to_bytes()
    )


class Env:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.registry = Registry.local(tmp / "oci")
        self.signer = Signer.generate()
        self.verifier = Verifier(TrustPolicy(keys=[self.signer.public_key_pem]))

    def release(self, revision: str, users: list[str]) -> VerifiedBundle:
        publish(make_bundle(revision, users), self.registry, "acme/policy:prod", self.signer)
        return fetch_verified(self.registry, "acme/policy:prod", self.verifier)

    def push_unsigned(self, revision: str, users: list[str]) -> None:
        self.registry.push(make_bundle(revision, users), "acme/policy:prod")


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()
