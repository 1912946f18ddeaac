"""The control-plane fixtures themselves (``tests/interop/_kube_fixtures.py``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.interop._kube_fixtures import control_plane_binary

pytestmark = pytest.mark.interop

ROOT = Path(__file__).resolve().parents[2]

# Starts etcd as the fixture does, prints its pid, then waits to be killed.
_CHILD = """
import sys, time
from pathlib import Path
from tests.interop._kube_fixtures import ControlPlane, control_plane_binary
plane = ControlPlane(Path(sys.argv[1]))
plane.tmp.mkdir(parents=True, exist_ok=True)
plane._start_etcd(control_plane_binary("etcd"))
print(plane.procs[0].pid, flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_a_killed_test_run_leaves_no_etcd_behind(tmp_path: Path) -> None:
    # A test run killed outright (CI timeout, SIGKILL) runs no teardown: the
    # control plane must not outlive it, holding its ports and memory.
    control_plane_binary("etcd")
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(tmp_path / "plane")],
        stdout=subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    etcd = 0
    try:
        assert child.stdout is not None
        etcd = int(child.stdout.readline() or 0)
        assert etcd, "the child did not start etcd"
        child.kill()
        child.wait()
        deadline = time.monotonic() + 20
        while _alive(etcd) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(etcd), "etcd outlived the test process that started it"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if etcd and _alive(etcd):
            os.kill(etcd, signal.SIGKILL)
