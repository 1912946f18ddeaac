"""Writing to a device or a pipe writes into it; it never replaces the node.

`policysupply build -o /dev/null` (a common way to only check) used to
rename a regular file over /dev/null: as root that replaced the system's
/dev/null with a file. `opa build -o /dev/null` writes into the device.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from policysupply._internal import fs


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[tuple[Path, list[bytes]]]:
    """A named pipe with a reader collecting what is written into it."""
    path = tmp_path / "pipe"
    os.mkfifo(path)
    got: list[bytes] = []

    def read() -> None:
        with open(path, "rb") as f:
            got.append(f.read())

    t = threading.Thread(target=read, daemon=True)
    t.start()
    yield path, got
    t.join(timeout=10)


def test_atomic_write_writes_into_a_pipe_and_keeps_it(fifo: tuple[Path, list[bytes]]) -> None:
    path, got = fifo
    fs.atomic_write(path, b"bundle bytes")
    assert stat.S_ISFIFO(os.stat(path).st_mode)
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    for _ in range(100):
        if got:
            break
        threading.Event().wait(0.05)
    assert got == [b"bundle bytes"]


def test_a_character_device_stays_a_device(tmp_path: Path) -> None:
    # A private copy of /dev/null where the system allows creating one (root);
    # elsewhere the system's own (safe to write into with this code).
    node = tmp_path / "null"
    try:
        os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError:
        node = Path(os.devnull)
    fs.atomic_write(node, b"x" * 4096)
    assert stat.S_ISCHR(os.stat(node).st_mode)


def test_a_block_device_or_socket_target_is_refused(tmp_path: Path) -> None:
    import socket

    path = tmp_path / "sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))
        with pytest.raises(OSError, match="not a regular file") as info:
            fs.atomic_write(path, b"data")
        assert info.value.filename == str(path)
        assert stat.S_ISSOCK(os.stat(path).st_mode)


def test_signing_keys_are_never_written_over_a_device(tmp_path: Path) -> None:
    path = tmp_path / "pipe.key"
    os.mkfifo(path)
    with pytest.raises(OSError, match="not a regular file"):
        fs.place_files([(path, b"key", 0o600)], overwrite=True)
    assert stat.S_ISFIFO(os.stat(path).st_mode)


def test_a_bundle_written_to_a_pipe_arrives_whole(
    fifo: tuple[Path, list[bytes]], example_dir: Path
) -> None:
    from policysupply import Bundle

    path, got = fifo
    bundle = Bundle.from_directory(example_dir)
    bundle.write(path)
    for _ in range(100):
        if got:
            break
        threading.Event().wait(0.05)
    assert got == [bundle.to_bytes()]
    assert stat.S_ISFIFO(os.stat(path).st_mode)
