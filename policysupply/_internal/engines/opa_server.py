"""The OPA engine's server process: ``opa run --server`` on a Unix socket.

Started behind a ``/bin/sh`` watchdog that kills OPA when our pipe to it
closes (``close()``, garbage collection, interpreter exit, or this process
dying); spoken to over HTTP on the socket with a small pool of kept-alive
connections. See docs/adr/0011-opa-engine.md.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from policysupply._internal.engines.opa_bundle import (
    _BundleDir,
)
from policysupply.errors import BundleError

if TYPE_CHECKING:
    import http.client


# `sh` between OPA and us: it reports OPA's pid, exits when OPA exits, and
# kills OPA when our end of its stdin closes. A stop of ours writes a line
# first; a bare end of input means this process died (SIGKILL, OOM), and then
# nobody else would remove the private directory, so the watchdog does. The
# remover ignores the TERM the main shell sends once OPA is gone.
_WATCHDOG = """\
log=$1; dir=$2; shift 2
"$@" >"$log" 2>&1 </dev/null &
p=$!
echo "$p"
exec 3<&0
(
  if read -r _ <&3; then
    kill -9 "$p" 2>/dev/null
  else
    trap '' TERM
    kill -9 "$p" 2>/dev/null
    rm -rf -- "$dir"
  fi
) &
r=$!
exec 3<&-
wait "$p"
kill "$r" 2>/dev/null
exit 0
"""


class _Server:
    """One ``opa run --server`` process behind a watchdog; no reference to its owner."""

    def __init__(self, proc: subprocess.Popen[bytes], opa_pid: int, socket_path: str) -> None:
        self.proc = proc
        self.opa_pid = opa_pid
        self.socket_path = socket_path
        self.pool: list[http.client.HTTPConnection] = []
        self.pool_lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self.proc.poll() is None and _alive(self.opa_pid)

    def stop(self) -> None:
        with self.pool_lock:
            conns, self.pool = self.pool, []
        for conn in conns:
            conn.close()
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            # The line says "stopped by its owner": the directory stays (a
            # restarted server reuses it; _cleanup removes it).
            with contextlib.suppress(OSError):
                self.proc.stdin.write(b"stop\n")
                self.proc.stdin.flush()
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@functools.cache
def _unix_connection_class() -> type[http.client.HTTPConnection]:
    """``HTTPConnection`` over a Unix socket (http.client is imported on first use)."""
    import http.client
    import socket

    class UnixConnection(http.client.HTTPConnection):
        def __init__(self, path: str, *, timeout: float) -> None:
            super().__init__("localhost", timeout=timeout)
            self.socket_path = path

        def connect(self) -> None:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(self.timeout)
            s.connect(self.socket_path)
            self.sock = s

    return UnixConnection


def _cleanup(holder: list[_Server], root: Path) -> None:
    """Stops the server (if any) and removes the private directory."""
    while holder:
        holder.pop().stop()
    shutil.rmtree(root, ignore_errors=True)


def start_server(*, opa: str, root: Path, bundle: _BundleDir, timeout: float) -> _Server:
    """Starts ``opa run --server`` on the bundle behind the watchdog; returns it once healthy."""
    sock = str(root / "opa.sock")
    if os.path.exists(sock):
        os.unlink(sock)
    log = root / "opa.log"
    args = [
        opa,
        "run",
        "--server",
        "--addr",
        f"unix://{sock}",
        "--log-level",
        "error",
        "--skip-version-check",
        "--disable-telemetry",
        "--bundle",
        str(bundle.root),
    ]
    if bundle.v0:
        args.append("--v0-compatible")
    proc = subprocess.Popen(
        ["/bin/sh", "-c", _WATCHDOG, "sh", str(log), str(root), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        cwd=root,
    )
    line = proc.stdout.readline() if proc.stdout is not None else b""
    try:
        pid = int(line)
    except ValueError:
        proc.kill()
        proc.wait()
        raise BundleError("could not start `opa run --server`") from None
    server = _Server(proc, pid, sock)
    deadline = time.monotonic() + timeout
    while True:
        if not server.running:
            server.stop()
            text = log.read_text(errors="replace").strip() if log.exists() else ""
            raise BundleError(
                "`opa run --server` exited: " + bundle.clean(text[-2000:] or "no output")
            )
        if os.path.exists(sock):
            try:
                status, _ = request(server, "GET", "/health", None, timeout=timeout, pool=False)
                if status == 200:
                    return server
            except OSError:
                pass
        if time.monotonic() > deadline:
            server.stop()
            raise BundleError(f"`opa run --server` was not healthy within {timeout} s")
        time.sleep(0.003)


def request(
    server: _Server,
    method: str,
    path: str,
    body: bytes | None,
    *,
    timeout: float,
    pool: bool = True,
) -> tuple[int, bytes]:
    """One HTTP request to the server: ``(status, body)``, over a pooled connection."""
    import http.client

    conn: http.client.HTTPConnection | None = None
    reused = False
    if pool:
        with server.pool_lock:
            if server.pool:
                conn = server.pool.pop()
                reused = True
    if conn is None:
        conn = _unix_connection_class()(server.socket_path, timeout=timeout)
    headers = {"Content-Type": "application/json"} if body is not None else {}
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        payload = resp.read()
    except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
        conn.close()
        if reused:
            # A kept-alive connection the server closed: once more, fresh.
            return request(server, method, path, body, timeout=timeout, pool=False)
        raise
    except BaseException:
        conn.close()
        raise
    if pool and not resp.will_close:
        with server.pool_lock:
            server.pool.append(conn)
    else:
        conn.close()
    return resp.status, payload
