"""Real admission service processes (uvicorn), real redis-server, TLS certificates."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests._x509 import self_signed_tls
from tests.conftest import ROOT, peer
from tests.interop.conftest import free_port


def write_certificate(directory: Path, *, cn: str = "policysupply-admission") -> Path:
    """A self-signed certificate for 127.0.0.1 (``tls.crt``/``tls.key``); returns the cert."""
    cert, key = self_signed_tls(cn=cn)
    directory.mkdir(parents=True, exist_ok=True)
    # Written to temporary names and renamed: the service never reads half a pair.
    (directory / ".tls.key").write_bytes(key)
    (directory / ".tls.crt").write_bytes(cert)
    os.replace(directory / ".tls.key", directory / "tls.key")
    os.replace(directory / ".tls.crt", directory / "tls.crt")
    return directory / "tls.crt"


class RedisServer:
    def __init__(self, proc: subprocess.Popen[bytes], port: int) -> None:
        self.proc = proc
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"

    def client(self) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def start_redis(tmp: Path) -> RedisServer:
    port = free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    log = tmp / "redis.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                str(peer("redis-server")),
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(tmp),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = RedisServer(proc, port)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"redis-server exited: {log.read_text()}")
        try:
            if server.client().ping():
                return server
        except Exception:
            time.sleep(0.05)
    server.stop()
    pytest.fail(f"redis-server did not come up: {log.read_text()}")


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """Debian's redis-server on a loopback port chosen at runtime, no persistence."""
    server = start_redis(tmp_path / "redis")
    try:
        yield server
    finally:
        server.stop()


class Service:
    """One ``policysupply admission serve`` process."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path, cert: Path | None):
        self.proc = proc
        self.port = port
        self.log = log
        self.cert = cert
        scheme = "https" if cert else "http"
        self.url = f"{scheme}://127.0.0.1:{port}"

    def client(self) -> httpx.Client:
        verify: Any = ssl.create_default_context(cafile=str(self.cert)) if self.cert else False
        return httpx.Client(base_url=self.url, verify=verify, timeout=30)

    def post(self, path: str, doc: Any) -> httpx.Response:
        with self.client() as c:
            return c.post(path, json=doc)

    def review(self, doc: dict[str, Any], path: str = "/validate") -> dict[str, Any]:
        resp = self.post(path, doc)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["response"]["uid"] == doc["request"]["uid"]
        out: dict[str, Any] = body["response"]
        return out

    def metrics(self) -> str:
        with self.client() as c:
            return c.get("/metrics").text

    def logs(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log.read_text().splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)


def start_service(tmp: Path, config: dict[str, Any], *, tls: bool = True) -> Service:
    """Writes ``config`` (plus server settings) and starts the service; waits for /readyz."""
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cert = write_certificate(tmp / "tls") if tls else None
    server: dict[str, Any] = {"host": "127.0.0.1", "port": port, "cert_reload_interval": "1s"}
    if tls:
        server.update(cert_file="tls/tls.crt", key_file="tls/tls.key")
    else:
        server["allow_http"] = True
    path = tmp / "admission.yaml"
    path.write_text(yaml.safe_dump({**config, "server": {**server, **config.get("server", {})}}))
    log = tmp / "service.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "policysupply", "admission", "serve", "--config", str(path)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp,
            env=env,
        )
    service = Service(proc, port, log, cert)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"admission service exited with {proc.returncode}: {log.read_text()}")
        try:
            with service.client() as c:
                if c.get("/readyz").status_code == 200:
                    return service
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    service.stop()
    pytest.fail(f"admission service did not become ready: {log.read_text()}")
