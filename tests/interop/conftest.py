"""Fixtures that start real peer servers on loopback ports chosen at runtime."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests._ports import free_port
from tests.conftest import peer

pytestmark = pytest.mark.interop


class OpaServer:
    """A running `opa run --server` process on loopback."""

    def __init__(self, proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
        self.proc = proc
        self.url = url
        self.log = log

    def post(self, path: str, body: Any) -> Any:
        req = urllib.request.Request(
            f"{self.url}{path}",
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=10) as resp:
            return json.loads(resp.read())


@pytest.fixture
def start_opa(opa_bin: Path, tmp_path: Path) -> Iterator[Callable[..., OpaServer]]:
    """Starts `opa run --server` with extra args; waits until healthy; stops it afterwards."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> OpaServer:
        port = free_port()
        log = tmp_path / f"opa-{port}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [
                    str(opa_bin),
                    "run",
                    "--server",
                    "--addr",
                    f"127.0.0.1:{port}",
                    "--log-level",
                    "error",
                    *args,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=tmp_path,
            )
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"opa exited with {proc.returncode}: {log.read_text()}")
            try:
                with urllib.request.urlopen(f"{url}/health?bundles", timeout=1):
                    return OpaServer(proc, url, log)
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.1)
        pytest.fail(f"opa did not become healthy: {log.read_text()}")

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_opa(
    opa_bin: Path, *args: str, cwd: Path | None = None, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [str(opa_bin), *args], cwd=cwd, input=stdin, capture_output=True, timeout=120, check=False
    )


# -- registries -----------------------------------------------------------------


class RegistryServer:
    """A registry process on loopback (``host`` is ``127.0.0.1:<port>``)."""

    def __init__(self, proc: subprocess.Popen[bytes], host: str, log: Path, kind: str) -> None:
        self.proc = proc
        self.host = host
        self.log = log
        self.kind = kind

    @property
    def url(self) -> str:
        return f"http://{self.host}"


def _wait_for_registry(proc: subprocess.Popen[bytes], host: str, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"registry exited with {proc.returncode}: {log.read_text()}")
        try:
            with urllib.request.urlopen(f"http://{host}/v2/", timeout=1):
                return
        except urllib.error.HTTPError as exc:
            if exc.code == 401:  # up, and asking for credentials
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.05)
    pytest.fail(f"registry on {host} did not come up: {log.read_text()}")


def _stop(proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    proc.terminate()  # a no-op once the process has exited
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


REGISTRY_USER = "ci-user"
REGISTRY_PASSWORD = "s3cret-Passw0rd-xyz"


def _start_distribution(
    tmp: Path,
    *,
    htpasswd: bool = False,
    token_realm: str = "",
    token_cert: Path | None = None,
    notifications: dict[str, Any] | None = None,
) -> Iterator[RegistryServer]:
    binary = peer("docker-registry")
    port = free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    auth = ""
    if htpasswd:
        pw = subprocess.run(
            [str(peer("htpasswd")), "-Bbn", REGISTRY_USER, REGISTRY_PASSWORD],
            capture_output=True,
            check=True,
            timeout=30,
        )
        (tmp / "htpasswd").write_bytes(pw.stdout)
        auth = f"auth:\n  htpasswd:\n    realm: policysupply-test\n    path: {tmp / 'htpasswd'}\n"
    if token_realm:
        from tests.interop.tokenserver import ISSUER, SERVICE

        auth = (
            f"auth:\n  token:\n    realm: {token_realm}\n    service: {SERVICE}\n"
            f"    issuer: {ISSUER}\n    rootcertbundle: {token_cert}\n"
        )
    config = tmp / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {tmp / 'data'}\n"
        "  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
        + auth
        # JSON is YAML: the notifications section as given
        + (f"notifications: {json.dumps(notifications)}\n" if notifications else "")
    )
    log = tmp / "registry.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(binary), "serve", str(config)], stdout=out, stderr=subprocess.STDOUT
        )
    host = f"127.0.0.1:{port}"
    try:
        _wait_for_registry(proc, host, log)
        yield RegistryServer(
            proc, host, log, "distribution-htpasswd" if htpasswd else "distribution"
        )
    finally:
        _stop(proc)


@pytest.fixture
def distribution(tmp_path: Path) -> Iterator[RegistryServer]:
    """Debian's docker-registry (distribution 2.8), anonymous, deletes enabled."""
    yield from _start_distribution(tmp_path / "distribution", htpasswd=False)


@pytest.fixture
def distribution_auth(tmp_path: Path) -> Iterator[RegistryServer]:
    """Debian's docker-registry with htpasswd basic auth (REGISTRY_USER/REGISTRY_PASSWORD)."""
    yield from _start_distribution(tmp_path / "distribution-auth", htpasswd=True)


@pytest.fixture
def distribution_token(tmp_path: Path) -> Iterator[tuple[RegistryServer, Any]]:
    """Debian's docker-registry with bearer-token auth from a loopback token service."""
    from tests.interop import tokenserver

    d = tmp_path / "distribution-token"
    d.mkdir()
    service = tokenserver.TokenServer(REGISTRY_USER, REGISTRY_PASSWORD, d / "token.pem")
    for running in tokenserver.start(service):
        for server in _start_distribution(d, token_realm=running.url, token_cert=running.cert_path):
            yield server, running


@pytest.fixture
def referrers_registry(tmp_path: Path) -> Iterator[RegistryServer]:
    """go-containerregistry's registry with the OCI 1.1 referrers API (in memory)."""
    port = free_port()
    host = f"127.0.0.1:{port}"
    log = tmp_path / f"ggcr-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(peer("registry-referrers")), "-addr", host], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        _wait_for_registry(proc, host, log)
        yield RegistryServer(proc, host, log, "ggcr-referrers")
    finally:
        _stop(proc)


@pytest.fixture(params=["distribution", "referrers_registry"])
def any_registry(request: pytest.FixtureRequest) -> RegistryServer:
    """Each real registry in turn."""
    server: RegistryServer = request.getfixturevalue(request.param)
    return server
