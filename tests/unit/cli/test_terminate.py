"""SIGTERM (a CI job cancelled, a pod stopped) cleans up as Ctrl-C does."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest


def _fake_opa(tmp_path: Path) -> tuple[Path, Path]:
    started = tmp_path / "started"
    fake = tmp_path / "opa"
    fake.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = version ]; then echo "Version: 1.22.2"; exit 0; fi\n'
        f"echo $$ > {started}.pid\ntouch {started}\nexec sleep 30\n"
    )
    fake.chmod(0o755)
    return fake, started


@pytest.mark.parametrize(
    "extra", [[], ["--json"], ["--revision", "r1"]], ids=["lean", "lean-json", "click"]
)
def test_sigterm_while_building_removes_its_temporary_files_and_writes_nothing(
    tmp_path: Path, example_dir: Path, extra: list[str], request: pytest.FixtureRequest
) -> None:
    fake, started = _fake_opa(tmp_path)
    # Short: a longer $TMPDIR is passed over for /tmp (Unix socket path limits).
    scratch = Path(tempfile.mkdtemp(prefix="ps-term-", dir="/tmp"))
    request.addfinalizer(lambda: shutil.rmtree(scratch, ignore_errors=True))
    out = tmp_path / "out.tar.gz"
    env = {**os.environ, "POLICYSUPPLY_OPA": str(fake), "TMPDIR": str(scratch)}
    env.pop("POLICYSUPPLY_ENGINE", None)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "policysupply",
            "build",
            str(example_dir),
            "-o",
            str(out),
            *extra,
            "--engine",
            "opa",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert started.exists()
        assert list(scratch.iterdir())  # the check's copy of the tree is there
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # 128 + SIGTERM, as a shell reports a command it terminated.
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert not out.exists()
    assert list(scratch.iterdir()) == []
    assert b"Traceback" not in err
    # ... and `opa check`, which SIGTERM did not reach, was stopped with it.
    pid = int(Path(f"{started}.pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
