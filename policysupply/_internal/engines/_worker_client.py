"""The parent's side of the embedded engine's worker process.

One ``WorkerProcess`` is one child running ``_embedded_worker``. It is
started on first use, answers one request at a time (callers hold
``lock``), and is killed by ``close()``, by garbage collection of its owner
or at interpreter exit. A child that dies (SIGSEGV, abort, out of memory)
or stops answering raises ``WorkerDiedError``; the next request starts a
fresh child.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import selectors
import signal
import struct
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import Any

_HEADER = struct.Struct(">I")


class WorkerDiedError(Exception):
    """The worker process died or stopped answering during a request."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _search_path() -> list[str]:
    """Directories the child needs on ``sys.path``: ours and regopy's.

    The child runs isolated (``-I``: no PYTHONPATH, no current directory), so
    it sees exactly the policysupply and regopy this process would load.
    """
    ours = str(Path(__file__).resolve().parents[3])
    paths = [ours]
    spec = importlib.util.find_spec("regopy")
    if spec is not None and spec.origin:
        paths.append(str(Path(spec.origin).resolve().parents[1]))
    return paths


_BOOT = (
    "import sys; sys.path[:0] = {paths!r}; "
    "from policysupply._internal.engines._embedded_worker import main; main()"
)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def describe_exit(returncode: int | None) -> str:
    """``killed by SIGSEGV`` / ``exited with status 3`` / ``stopped answering``."""
    if returncode is None:
        return "stopped answering"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with status {returncode}"


class WorkerProcess:
    """A lazily started worker; ``request`` sends one message and waits for the answer."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self.starts = 0

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _start(self) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-c", _BOOT.format(paths=_search_path())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            close_fds=True,
        )
        self._proc = proc
        self.starts += 1
        # Killed with its owner: on close(), garbage collection or exit.
        self._finalizer = weakref.finalize(self, _kill, proc)
        return proc

    def close(self) -> None:
        """Kills the child, if any (idempotent)."""
        with self.lock:
            if self._finalizer is not None:
                self._finalizer()
                self._finalizer = None
            self._proc = None

    def request(self, message: dict[str, Any], *, timeout: float | None) -> dict[str, Any]:
        """Sends ``message``; returns the answer.

        Raises:
            WorkerDiedError: The child died or did not answer within ``timeout``
                (it is killed; the next request starts a new one).
        """
        with self.lock:
            proc = self._proc if self.running else None
            if proc is None:
                self.close()
                proc = self._start()
            body = json.dumps(message, ensure_ascii=False, allow_nan=False).encode("utf-8")
            if proc.stdin is None or proc.stdout is None:  # pragma: no cover - always piped
                raise WorkerDiedError("no pipe to the worker")
            try:
                proc.stdin.write(_HEADER.pack(len(body)) + body)
                proc.stdin.flush()
                raw = self._read_answer(proc, timeout)
            except (BrokenPipeError, ConnectionResetError, OSError):
                raw = None
            if raw is None:
                try:
                    code = proc.wait(timeout=0.5)
                except subprocess.TimeoutExpired:
                    code = None
                self.close()
                raise WorkerDiedError(describe_exit(code))
            answer: dict[str, Any] = json.loads(raw)
            return answer

    @staticmethod
    def _read_answer(proc: subprocess.Popen[bytes], timeout: float | None) -> bytes | None:
        if proc.stdout is None:  # pragma: no cover - always piped
            return None
        fd = proc.stdout.fileno()
        deadline = None if timeout is None else time.monotonic() + timeout
        buf = bytearray()
        need = _HEADER.size
        size: int | None = None
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while True:
                if len(buf) >= need:
                    if size is None:
                        (size,) = _HEADER.unpack(bytes(buf[: _HEADER.size]))
                        need = _HEADER.size + size
                        continue
                    return bytes(buf[_HEADER.size : need])
                wait = None if deadline is None else deadline - time.monotonic()
                if wait is not None and wait <= 0:
                    return None
                if not sel.select(wait):
                    continue
                chunk = os.read(fd, max(65536, need - len(buf)))
                if not chunk:
                    return None
                buf += chunk
