"""Fixtures that start real peer servers on loopback ports chosen at runtime."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.interop


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OpaServer:
    """A running `opa run --server` process on loopback."""

    def __init__(self, proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
        self.proc = proc
        self.url = url
        self.log = log

    def post(self, path: str, body: Any) -> Any:
        req = urllib.request.Request(
            f"{self.url}{path}", data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json"})
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
                [str(opa_bin), "run", "--server", "--addr", f"127.0.0.1:{port}",
                 "--log-level", "error", *args],
                stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
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


def run_opa(opa_bin: Path, *args: str, cwd: Path | None = None,
            stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(opa_bin), *args], cwd=cwd, input=stdin, capture_output=True,
                          timeout=120, check=False)
