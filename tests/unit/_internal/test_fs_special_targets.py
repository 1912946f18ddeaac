"""A device or a pipe is never replaced by a file.

`policysupply build -o /dev/null` (a common way to only check) used to
rename a regular file over /dev/null: as root that replaced the system's
/dev/null with a file. Complete, verified content (a bundle) is written into
the device or pipe, as `opa build -o /dev/null` does; everything else (state
files, stores, streamed downloads that a reader would see before they are
verified) refuses such a target.
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


def test_a_complete_output_is_written_into_a_pipe(fifo: tuple[Path, list[bytes]]) -> None:
    path, got = fifo
    with fs.atomic_file(path, into_device=True) as f:
        f.write(b"bundle bytes")
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
    with fs.atomic_file(node, into_device=True) as f:
        f.write(b"x" * 4096)
    assert stat.S_ISCHR(os.stat(node).st_mode)


@pytest.mark.parametrize("kind", ["fifo", "chardev"])
def test_state_and_store_files_refuse_a_device_or_pipe(kind: str, tmp_path: Path) -> None:
    # --state /dev/null must not silently drop rollback protection, nor
    # replace the device: it is refused.
    node = tmp_path / "state.json"
    if kind == "fifo":
        os.mkfifo(node)
    else:
        try:
            os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        except PermissionError:
            node = Path(os.devnull)
    before = os.stat(node)
    with pytest.raises(OSError, match="not a regular file"):
        fs.atomic_write(node, b"{}")
    after = os.stat(node)
    assert (after.st_mode, after.st_ino) == (before.st_mode, before.st_ino)


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
