"""A real control plane for the admission tests: etcd and kube-apiserver on loopback.

etcd is Debian's ``etcd-server``; kube-apiserver is built from the Go module
proxy by ``scripts/install-peers.sh kube-apiserver``. Both listen on loopback
ports chosen at runtime, keep their data in a temporary directory and are
stopped (then killed if need be) when the fixture ends, or sent SIGTERM when
the test process dies without teardown. The tests talk to the API server
over HTTPS with a static bearer token (``--token-auth-file``), so no kubectl
or kubeconfig is needed. No controller manager or scheduler runs:
objects are stored and admitted, never scheduled.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.conftest import peers_bin_dir
from tests.interop._admission_fixtures import write_certificate
from tests.interop._sigstore_fixtures import _die_with_parent
from tests.interop.conftest import _stop, free_port

TOKEN = "policysupply-test-admin-token"
# Environment variables that would send the API server's webhook calls (or
# etcd's client traffic) through a proxy instead of straight to loopback.
_PROXY_VARS = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}


def control_plane_binary(name: str) -> Path:
    """Path of ``etcd`` or ``kube-apiserver``.

    Missing binaries fail the test when ``POLICYSUPPLY_NO_SKIP=1`` (as CI
    runs) and skip it otherwise: kube-apiserver is built by
    ``scripts/install-peers.sh`` (in its default list), etcd comes from
    Debian's ``etcd-server`` package.
    """
    candidate = peers_bin_dir() / name
    if candidate.exists():
        return candidate
    for d in ("/usr/bin", "/usr/local/bin"):
        if (Path(d) / name).exists():
            return Path(d) / name
    hint = (
        "scripts/install-peers.sh kube-apiserver"
        if name == "kube-apiserver"
        else "apt-get install etcd-server"
    )
    message = f"{name} is not installed; run {hint}"
    if os.environ.get("POLICYSUPPLY_NO_SKIP") == "1":
        pytest.fail(f"{message} (POLICYSUPPLY_NO_SKIP=1: not skipping)")
    pytest.skip(message)


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.lower() not in _PROXY_VARS}


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class ControlPlane:
    """A running etcd + kube-apiserver pair, and an HTTPS client for the API."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []
        self.etcd_log = tmp / "etcd.log"
        self.apiserver_log = tmp / "kube-apiserver.log"
        self.port = 0
        self.ca = tmp / "pki" / "tls.crt"

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def client(self) -> httpx.Client:
        """An httpx client authenticated as a ``system:masters`` user."""
        return httpx.Client(
            base_url=self.url,
            verify=ssl.create_default_context(cafile=str(self.ca)),
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=60,
        )

    # -- processes ------------------------------------------------------------

    def _spawn(self, log: Path, args: list[str]) -> subprocess.Popen[bytes]:
        """Starts ``args`` with its output in ``log``; stopped with the control plane."""
        with log.open("wb") as out:
            proc = subprocess.Popen(
                args,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=_clean_env(),
                # A killed test run runs no teardown: they die with it.
                preexec_fn=_die_with_parent,
            )
        self.procs.append(proc)
        return proc

    def start(self) -> None:
        etcd = control_plane_binary("etcd")
        apiserver = control_plane_binary("kube-apiserver")
        self.tmp.mkdir(parents=True, exist_ok=True)
        etcd_url = self._start_etcd(etcd)
        self._start_apiserver(apiserver, etcd_url)

    def _start_etcd(self, binary: Path) -> str:
        client, peer_port = free_port(), free_port()
        client_url = f"http://127.0.0.1:{client}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        proc = self._spawn(
            self.etcd_log,
            [
                str(binary),
                "--name=policysupply-test",
                f"--data-dir={self.tmp / 'etcd-data'}",
                f"--listen-client-urls={client_url}",
                f"--advertise-client-urls={client_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=policysupply-test={peer_url}",
                "--initial-cluster-state=new",
                "--log-level=warn",
            ],
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"etcd exited with {proc.returncode}:\n{_tail(self.etcd_log)}")
            try:
                if httpx.get(f"{client_url}/health", timeout=2).status_code == 200:
                    return client_url
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        pytest.fail(f"etcd did not become healthy:\n{_tail(self.etcd_log)}")

    def _start_apiserver(self, binary: Path, etcd_url: str) -> None:
        pki = self.tmp / "pki"
        write_certificate(pki, cn="kube-apiserver")
        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        (pki / "sa.key").write_bytes(
            sa_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        (pki / "sa.pub").write_bytes(
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        (pki / "tokens.csv").write_text(f'{TOKEN},admin,admin-uid,"system:masters"\n')
        self.port = free_port()
        proc = self._spawn(
            self.apiserver_log,
            [
                str(binary),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.port}",
                f"--cert-dir={pki}",
                f"--tls-cert-file={pki / 'tls.crt'}",
                f"--tls-private-key-file={pki / 'tls.key'}",
                f"--token-auth-file={pki / 'tokens.csv'}",
                "--authorization-mode=RBAC",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc",
                # Addresses for Service objects, allocated in etcd only:
                # nothing is routed to them.
                "--service-cluster-ip-range=10.96.0.0/24",
                # The ServiceAccount plugin refuses Pods until a controller
                # manager has created each namespace's default account;
                # none runs here. The webhook plugins stay on (default).
                "--disable-admission-plugins=ServiceAccount",
                "--enable-priority-and-fairness=false",
                # No Endpoints for the "kubernetes" Service: its address
                # would be loopback, which the API refuses (log noise).
                "--endpoint-reconciler-type=none",
                "--profiling=false",
                "--v=1",
            ],
        )
        deadline = time.monotonic() + 180
        last = ""
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(
                    f"kube-apiserver exited with {proc.returncode}:\n{_tail(self.apiserver_log)}"
                )
            try:
                with self.client() as c:
                    r = c.get("/readyz", timeout=5)
                    if r.status_code == 200:
                        return
                    last = r.text
            except httpx.HTTPError as e:
                last = repr(e)
            time.sleep(0.25)
        pytest.fail(f"kube-apiserver did not become ready ({last}):\n{_tail(self.apiserver_log)}")

    def stop(self) -> None:
        for proc in reversed(self.procs):
            _stop(proc, timeout=20)

    # -- API helpers ------------------------------------------------------------

    def create(self, path: str, body: dict[str, Any], *, dry_run: bool = False) -> httpx.Response:
        """POSTs ``body`` to ``path`` (``/api/v1/namespaces/x/pods`` ...)."""
        params = {"dryRun": "All"} if dry_run else {}
        with self.client() as c:
            return c.post(path, json=body, params=params)

    def merge_patch(self, path: str, patch: dict[str, Any]) -> httpx.Response:
        """PATCHes ``path`` with a JSON merge patch (an UPDATE for admission)."""
        with self.client() as c:
            return c.patch(
                path, json=patch, headers={"Content-Type": "application/merge-patch+json"}
            )

    def get(self, path: str) -> httpx.Response:
        with self.client() as c:
            return c.get(path)

    def apply(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """Creates ``body`` under the collection ``path``, or replaces an existing one."""
        name = body["metadata"]["name"]
        with self.client() as c:
            r = c.post(path, json=body)
            if r.status_code == 409:
                current = c.get(f"{path}/{name}").json()
                body = {
                    **body,
                    "metadata": {
                        **body["metadata"],
                        "resourceVersion": current["metadata"]["resourceVersion"],
                    },
                }
                r = c.put(f"{path}/{name}", json=body)
            assert r.status_code in (200, 201), r.text
            out: dict[str, Any] = r.json()
            return out


def start_control_plane(tmp: Path) -> Iterator[ControlPlane]:
    """Starts etcd and kube-apiserver under ``tmp``; stops both afterwards."""
    plane = ControlPlane(tmp)
    try:
        plane.start()
        yield plane
    finally:
        plane.stop()


def webhook_configurations(
    name: str, *, ca_bundle: bytes, url: str, namespaces: list[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Mutating- and ValidatingWebhookConfiguration of deploy/admission/webhooks.yaml.

    Same rules, failure policy and namespace exclusions, but the client
    config is a URL (the service runs on loopback, not behind a Service) and
    only ``namespaces`` are sent, so several services can share one API server.
    """
    import base64

    bundle = base64.b64encode(ca_bundle).decode()
    selector = {
        "matchExpressions": [
            {
                "key": "kubernetes.io/metadata.name",
                "operator": "NotIn",
                "values": ["kube-system", "kube-public", "kube-node-lease", "policysupply-system"],
            },
            {"key": "kubernetes.io/metadata.name", "operator": "In", "values": namespaces},
        ]
    }
    rules = [
        {
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "operations": ["CREATE", "UPDATE"],
            "resources": ["pods", "pods/ephemeralcontainers", "replicationcontrollers"],
            "scope": "Namespaced",
        },
        {
            "apiGroups": ["apps"],
            "apiVersions": ["v1"],
            "operations": ["CREATE", "UPDATE"],
            "resources": ["deployments", "replicasets", "statefulsets", "daemonsets"],
            "scope": "Namespaced",
        },
        {
            "apiGroups": ["batch"],
            "apiVersions": ["v1"],
            "operations": ["CREATE", "UPDATE"],
            "resources": ["jobs", "cronjobs"],
            "scope": "Namespaced",
        },
    ]

    def hook(hook_name: str, path: str, **extra: Any) -> dict[str, Any]:
        return {
            "name": hook_name,
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": "Fail",
            "timeoutSeconds": 10,
            "clientConfig": {"url": f"{url}{path}", "caBundle": bundle},
            "namespaceSelector": selector,
            "rules": rules,
            **extra,
        }

    mutating = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [hook("pin.policysupply.dev", "/mutate", reinvocationPolicy="IfNeeded")],
    }
    validating = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [hook("verify.policysupply.dev", "/validate")],
    }
    return mutating, validating


def pod(name: str, *images: str) -> dict[str, Any]:
    """A minimal v1 Pod manifest."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "containers": [{"name": f"c{i}", "image": image} for i, image in enumerate(images)]
        },
    }


def deployment(name: str, *images: str) -> dict[str, Any]:
    """A minimal apps/v1 Deployment manifest."""
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": pod(name, *images)["spec"]},
        },
    }
