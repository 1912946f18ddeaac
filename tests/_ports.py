"""Loopback ports for the servers tests start, chosen at runtime.

Binding port 0 and closing the socket hands back a port from the kernel's
ephemeral range, the same range every outgoing connection takes its local port
from. Between the test closing it and the server binding it, a client
connection (or the next ``bind(0)``) can take it: a Sigstore stack once failed
in CI with "address already in use". So ports come from below the ephemeral
range, where the kernel never allocates on its own, are checked free, and are
never handed out twice in one session.
"""

from __future__ import annotations

import random
import socket
import threading
from pathlib import Path

_LOW = 20000
_lock = threading.Lock()
_given: set[int] = set()


def _ephemeral_floor() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A loopback TCP port nothing listens on, not handed out before in this process."""
    high = _ephemeral_floor() - 1
    if high - _LOW < 1000:  # an unusual range: fall back to the kernel's choice
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])
    with _lock:
        for _ in range(200):
            port = random.randint(_LOW, high)
            if port in _given:
                continue
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _given.add(port)
            return port
    raise RuntimeError("no free loopback port found")
