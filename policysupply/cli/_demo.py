"""``policysupply demo``: the whole story on embedded defaults, narrated.

build → keygen → sign → push → verify → load → gate, then the attacks the
verifier exists for (unsigned, untrusted, rollback, swapped bytes), all on a
local OCI image layout in a temporary directory and the embedded Rego engine.
When an ``opa`` binary is available (``--opa``, ``$POLICYSUPPLY_OPA`` or
``PATH``) the verified bundle is also loaded into a real OPA on loopback.
Every step checks its own outcome; the exit code is 1 if any misbehaves.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import click

from policysupply.bundle import Bundle
from policysupply.errors import PolicySupplyError

if TYPE_CHECKING:
    from policysupply.registry import Registry

_GOOD_POD: dict[str, Any] = {
    "request": {
        "kind": {"kind": "Pod"},
        "object": {
            "metadata": {
                "name": "web",
                "labels": {"app.kubernetes.io/name": "web", "owner": "team-web"},
                "annotations": {"policysupply.dev/base-image": "gcr.io/distroless/static"},
            },
            "spec": {
                "containers": [
                    {
                        "name": "web",
                        "image": "registry.example.com/web:1.4.2",
                        "securityContext": {"privileged": False, "allowPrivilegeEscalation": False},
                    },
                ]
            },
        },
    }
}

_BAD_POD: dict[str, Any] = {
    "request": {
        "kind": {"kind": "Pod"},
        "object": {
            "metadata": {"name": "miner", "labels": {"app.kubernetes.io/name": "miner"}},
            "spec": {
                "containers": [
                    {
                        "name": "miner",
                        "image": "docker.io/evil/miner:latest",
                        "securityContext": {"privileged": True},
                    },
                ]
            },
        },
    }
}


@attrs.define
class _Narration:
    """What the demo says: printed as it goes, or kept for one JSON document (--json)."""

    quiet: bool = False
    steps: list[dict[str, Any]] = attrs.Factory(list)
    intro: list[str] = attrs.Factory(list)

    def line(self, text: str = "", **style: Any) -> None:
        plain = click.unstyle(text)
        if self.steps:
            self.steps[-1]["lines"].append(plain.strip())
        elif plain.strip():
            self.intro.append(plain.strip())
        if not self.quiet:
            click.secho(text, **style)


_SAY = _Narration()


def _step(n: int, title: str) -> None:
    if not _SAY.quiet:
        click.echo()
    _SAY.steps.append({"step": n, "title": title, "ok": True, "lines": []})
    _SAY.line(f"[{n}] {title}", bold=True)


def _ok(msg: str) -> None:
    _SAY.line(click.style("    ✓ ", fg="green") + msg)


class _StepFailed(Exception):
    """A demo step did not behave as the story says it should."""


def _expect(condition: bool, failure: str) -> None:
    if not condition:
        raise _StepFailed(failure)


def _info(msg: str) -> None:
    _SAY.line(f"    {msg}")


def run_demo(workdir: str | None, opa: str | None = None, *, as_json: bool = False) -> int:
    """Runs the demo; returns 0 when every step behaved, else 1.

    With ``as_json`` nothing is printed while it runs; one JSON document
    (``ok``, ``steps`` with their lines, ``error``) is printed at the end.
    """
    global _SAY
    _SAY = _Narration(quiet=as_json)
    code = _run(workdir, opa)
    if as_json:
        doc: dict[str, Any] = {"ok": code == 0, "steps": _SAY.steps, "summary": _SAY.intro}
        if code:
            failed = next((s for s in reversed(_SAY.steps) if not s["ok"]), None)
            doc["error"] = {
                "type": "DemoStepFailed",
                "message": failed["lines"][-1] if failed and failed["lines"] else "demo failed",
                "exit_code": 4,
            }
        click.echo(json.dumps(doc, sort_keys=True))
    return code


def _run(workdir: str | None, opa: str | None) -> int:
    with ExitStack() as stack:
        work = (
            Path(workdir)
            if workdir
            else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="policysupply-demo-")))
        )
        work.mkdir(parents=True, exist_ok=True)
        example = stack.enter_context(
            resources.as_file(resources.files("policysupply") / "examples" / "kubernetes")
        )
        try:
            return _story(example, work, opa)
        except (_StepFailed, PolicySupplyError) as exc:
            if _SAY.steps:
                _SAY.steps[-1]["ok"] = False
            _SAY.line(f"    ✗ {exc}", fg="red")
            return 1


def _image(reg: Registry, ref: str, content: bytes) -> str:
    """Pushes a tiny OCI container image (config + one layer); returns its digest."""
    repo = ref.rsplit(":", 1)[0]
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}},
        separators=(",", ":"),
    ).encode()
    cfg = reg.put_blob(repo, config, media_type="application/vnd.oci.image.config.v1+json")
    layer = reg.put_blob(repo, content, media_type="application/vnd.oci.image.layer.v1.tar+gzip")
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": cfg.to_json(),
        "layers": [layer.to_json()],
    }
    return reg.put_manifest(ref, json.dumps(manifest, separators=(",", ":")).encode())


def _find_opa(opa: str | None) -> str | None:
    if opa:
        return opa
    return os.environ.get("POLICYSUPPLY_OPA") or shutil.which("opa")


@contextlib.contextmanager
def _opa_server(opa: str, work: Path) -> Iterator[str]:
    """Runs ``opa run --server`` on a free loopback port for the demo's load step."""
    log_path = work / "opa.log"
    # The port is free when chosen but may be taken before OPA binds it: then
    # OPA exits saying so, and another port is tried.
    for _attempt in range(3):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [opa, "run", "--server", f"--addr=127.0.0.1:{port}", "--log-level=error"],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        url = f"http://127.0.0.1:{port}"
        try:
            if _healthy(url, proc):
                yield url
                return
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if "address already in use" not in log_path.read_text(errors="replace"):
            break
    raise _StepFailed(f"OPA did not start (see {log_path})")


def _healthy(url: str, proc: subprocess.Popen[bytes]) -> bool:
    """Waits for OPA's health endpoint; False if the process exits or 20 s pass."""
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1):  # noqa: S310 - loopback
                return True
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                return False
            time.sleep(0.1)


def _refused(what: str, fn: Callable[[], object], error: type[Exception]) -> None:
    try:
        fn()
    except error as exc:
        _ok(f"{what}: refused with {type(exc).__name__}")
        _info(f"  {exc}")
    else:
        raise _StepFailed(f"{what} was accepted")


def _verdict(allowed: bool) -> str:
    return click.style("ALLOW", fg="green") if allowed else click.style("DENY", fg="red")


def _story(example: Path, work: Path, opa: str | None) -> int:
    from policysupply import (
        DigestMismatchError,
        Gate,
        NoSignatureError,
        Registry,
        RollbackError,
        Signer,
        TrustPolicy,
        TrustState,
        UntrustedSignatureError,
        Verifier,
    )
    from policysupply.loaders import OPA, extract_verified, publish
    from policysupply.native import NativeTrust

    _SAY.line("policysupply demo: a policy bundle from source to decision", bold=True)
    _info(f"example policies: {example}")
    _info(f"working directory: {work}")

    _step(1, "Build a deterministic bundle from the example Kubernetes admission policies")
    bundle = Bundle.from_directory(example, revision="1.0.0")
    again = Bundle.from_directory(example, revision="1.0.0")
    _expect(again.digest == bundle.digest, "two builds of the same tree differ")
    bundle.check(engine="embedded")
    _ok(
        f"{len(bundle.modules)} Rego modules, roots {list(bundle.manifest.effective_roots)}, "
        f"every module compiles; two builds are both {bundle.digest[:19]}…"
    )

    _step(2, "Generate a cosign key pair (cosign.key is encrypted, cosign.pub is public)")
    password = secrets.token_urlsafe(12)
    (work / "keys").mkdir(parents=True, exist_ok=True)
    key_path, pub_path = Signer.generate().write_key_pair(work / "keys", password=password)
    signer = Signer.from_key_file(key_path, password=password)
    _ok(f"{key_path} (0600, scrypt + secretbox, as cosign writes it) and {pub_path.name}")
    _info(f"key id {signer.key_id[:23]}…")

    _step(3, "Push the bundle as an OCI image and sign its digest (cosign's .sig scheme)")
    reg = Registry.local(work / "oci")
    ref = "acme/k8s-policy:stable"
    pushed = publish(bundle, reg, ref, signer)
    _ok(f"pushed and signed {pushed}")
    _info(f"an OCI image layout at {work / 'oci'}; oras, skopeo and OPA read this format")

    _step(4, "Verify before use: signature, digest, trust policy, rollback state")
    verifier = Verifier(TrustPolicy(keys=[pub_path]))
    state = TrustState(work / "trust-state.json")
    verified = verifier.verify_bundle(reg, ref, state=state)
    _expect(verified.reference.digest == pushed.digest, "the verified image is not the pushed one")
    # publish also signed the bundle OPA-natively with the same key (defence in depth).
    native = verified.bundle.verify_native(NativeTrust.from_cosign_keys([signer.public_key_pem]))
    _expect(
        verified.bundle.modules == bundle.modules and verified.bundle.data == bundle.data,
        "the verified bundle differs from the pushed one",
    )
    _ok(
        f"{verified.artifact.digest[:19]}… signed by {verified.artifact.key_ids[0][:19]}…, "
        f"revision {verified.bundle.manifest.revision!r} recorded in {state.path.name}"
    )
    _info(
        f"the bundle also carries an OPA-native signature ({native.signatures[0].algorithm}, "
        "same key) that OPA checks itself when configured with the key"
    )

    _step(5, "Load the verified bundle (only a VerifiedBundle is accepted)")
    target = extract_verified(verified, work / "loaded")
    _ok(f"extracted atomically to {target} (for file-based OPA loaders)")
    verdicts = {}
    for label, pod in (("compliant pod", _GOOD_POD), ("privileged pod from docker.io", _BAD_POD)):
        allowed = bool(verified.bundle.evaluate("data.k8s.admission.allow", pod, engine="embedded"))
        verdicts[label] = allowed
        _SAY.line(f"    embedded engine, {label}: {_verdict(allowed)}")
        for reason in (
            verified.bundle.evaluate("data.k8s.admission.deny", pod, engine="embedded") or []
        ):
            _info(f"  - {reason}")
    _expect(
        verdicts == {"compliant pod": True, "privileged pod from docker.io": False},
        "decisions are not what the example policies intend",
    )
    opa_path = _find_opa(opa)
    from policysupply._internal import extras

    if opa_path and not extras.available("opa_client"):
        _info(f"(found {opa_path}, but loading into OPA needs {extras.hint('opa_client')})")
        opa_path = None
    opa_ctx: contextlib.AbstractContextManager[str | None] = (
        _opa_server(opa_path, work) if opa_path else contextlib.nullcontext(None)
    )
    with opa_ctx as opa_url:
        server = OPA(opa_url) if opa_url else None
        if server is not None:
            result = server.load(verified)
            answer = server.query("k8s/admission/allow", _BAD_POD)
            _expect(answer is False, f"OPA answered {answer!r} for the privileged pod")
            _ok(f"loaded into OPA at {opa_url} ({len(result.modules)} policies)")
            _ok("OPA's REST API answers: the privileged pod is denied")
        else:
            _info("(no `opa` on PATH: skipping the load into a running OPA; pass --opa PATH)")

        _step(6, "Deployment gate: container images judged by their cosign signatures + Rego")
        _image(reg, "acme/web:1.4.2", b"web")
        signer.sign(reg, "acme/web:1.4.2")
        _image(reg, "acme/miner:latest", b"miner")
        _image(reg, "mirror/web:1.4.2", b"web-mirror")
        signer.sign(reg, "mirror/web:1.4.2")
        # The zero-install story: the embedded engine decides (engine="auto" would pick OPA).
        gate = Gate(verifier, settings={"allowed_registries": ["acme/"]}, engine="embedded")
        expected = {"acme/web:1.4.2": True, "acme/miner:latest": False, "mirror/web:1.4.2": False}
        for image, want in expected.items():
            decision = gate.decide(reg, image)
            _SAY.line(f"    {image}: {_verdict(decision.allowed)}")
            for reason in decision.reasons:
                _info(f"  - {reason}")
            _expect(decision.allowed == want, f"the gate decided {decision.allowed} for {image}")

        _step(7, "Attacks are refused, and nothing unverified is loaded")
        evil = Bundle(
            manifest=attrs.evolve(bundle.manifest, revision="1.0.1"),
            modules={},
            data={"k8s": {"admission": {"allow": True}}},
        )
        reg.push(evil, ref)  # an attacker with registry access moves the tag
        _refused(
            "an unsigned bundle under the trusted tag",
            lambda: verifier.verify_bundle(reg, ref, state=state),
            NoSignatureError,
        )
        Signer.generate().sign(reg, ref)
        _refused(
            "the same bundle signed by an unknown key",
            lambda: verifier.verify_bundle(reg, ref, state=state),
            UntrustedSignatureError,
        )
        newer = Bundle.from_directory(example, revision="1.1.0")
        publish(newer, reg, ref, signer)
        verifier.verify_bundle(reg, ref, state=state)
        _ok("a genuine 1.1.0 is published, verified and accepted")
        reg.put_manifest(ref, reg.get_manifest(pushed)[0])  # roll the tag back to 1.0.0
        _refused(
            "a rollback to the older, correctly signed 1.0.0",
            lambda: verifier.verify_bundle(reg, ref, state=state),
            RollbackError,
        )
        blob = work / "oci" / "acme" / "k8s-policy" / "blobs" / "sha256"
        victim = blob / verified.bundle.digest.split(":", 1)[1]  # what the tag points at now
        victim.write_bytes(evil.to_bytes())  # swap the bundle bytes behind a signed digest
        _refused(
            "bundle bytes replaced behind the signed digest",
            lambda: verifier.verify_bundle(reg, ref, state=TrustState(work / "fresh-state.json")),
            DigestMismatchError,
        )
        if server is not None:
            answer = server.query("k8s/admission/allow", _BAD_POD)
            _expect(answer is False, "OPA's answer changed after refused bundles")
            _ok("OPA still serves the verified 1.0.0 policies")

    if not _SAY.quiet:
        click.echo()
    _SAY.line(
        "Done: build → keygen → sign → push → verify → load → gate, attacks refused.", bold=True
    )
    _info(json.dumps({"bundle": bundle.digest, "image": str(pushed), "workdir": str(work)}))
    return 0
