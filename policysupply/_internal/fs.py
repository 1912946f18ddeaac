"""The disk adapter: every write that must be whole or absent goes through here.

One implementation each of: a temporary file beside its target, an atomic
replace (:func:`atomic_file`, :func:`atomic_write`), placing several files
all-or-nothing without overwriting (:func:`place_files`), an advisory lock
(:func:`locked`), swapping a whole directory tree in (:func:`swap_in_tree`,
with ``renameat2``/``renamex_np`` where the platform has them), directory
fsync, and a background writer for large downloads. Callers turn ``OSError``
into their own typed errors; ``OSError.filename`` names the final path, never
a temporary one.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

# -- files ------------------------------------------------------------------------


def _temp_beside(path: Path, mode: int) -> tuple[int, Path]:
    """A new file ``.<name>.<random>.tmp`` in ``path``'s directory, opened for writing.

    ``O_EXCL | O_NOFOLLOW``: never an existing file or a symlink planted there.
    Created with ``mode`` less the umask.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    flags |= getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    return os.open(tmp, flags, mode), tmp


def _named(exc: OSError, path: Path) -> OSError:
    """``exc`` as the same kind of error, naming ``path`` (not a temporary file)."""
    return type(exc)(exc.errno, exc.strerror or str(exc), str(path))


@contextlib.contextmanager
def atomic_file(
    target: Path,
    *,
    durable: bool = True,
    mode: int | None = None,
    parents: bool = True,
    into_device: bool = False,
) -> Iterator[IO[bytes]]:
    """A binary file that replaces ``target`` only if the block completes.

    Args:
        target: The final path.
        durable: fsync the data before the rename, so a crash cannot leave an
            empty or partial file under the final name.
        mode: Exact permissions of the new file (whatever the umask);
            ``None``: 0600 less the umask.
        parents: Create missing parent directories.
        into_device: Where ``target`` is a character device or a pipe
            (``-o /dev/null``, ``/dev/stdout``), write into it as ``opa build
            -o`` does; only for complete, already-verified content, since a
            reader sees the bytes as they are written. Otherwise such a
            target is refused: renaming over it would replace the node
            (as root, the system's ``/dev/null``).

    Raises:
        OSError: ``target`` exists and is neither a regular file nor (with
            ``into_device``) a character device or pipe.
    """
    if _streams(target, allowed=into_device):
        with open(target, "wb") as stream:
            yield stream
        return
    if parents:
        target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _temp_beside(target, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            if mode is not None:
                os.fchmod(f.fileno(), mode)
            yield f
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _streams(target: Path, *, allowed: bool) -> bool:
    """Whether ``target`` is an existing character device or pipe (symlinks followed).

    Raises:
        OSError: ``target`` is another kind of node (socket, block device), or
            a device or pipe where that is not ``allowed``: nothing is written.
    """
    try:
        st = os.stat(target)
    except OSError:
        return False
    if stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode):
        return False
    if allowed and (stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode)):
        return True
    raise OSError(errno.EINVAL, "not a regular file", str(target))


def atomic_write(target: Path, data: bytes, *, mode: int | None = None) -> None:
    """Writes ``data`` to ``target`` via a temp file and rename (fsynced): :func:`atomic_file`."""
    with atomic_file(target, mode=mode) as f:
        f.write(data)


def write_temp(path: Path, data: bytes, mode: int) -> Path:
    """``data`` in a new, fsynced temporary file beside ``path`` (``mode`` less the umask).

    Raises:
        OSError: Naming ``path``; no temporary file is left behind.
    """
    try:
        fd, tmp = _temp_beside(path, mode)
    except OSError as exc:
        raise _named(exc, path) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _named(exc, path) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def place_files(files: Sequence[tuple[Path, bytes, int]], *, overwrite: bool) -> None:
    """Puts each ``(path, data, mode)`` in place whole, or leaves every path as it was.

    Each file is written to a temporary file beside it (:func:`write_temp`),
    and then renamed over ``path`` (``overwrite``) or hard-linked to it, which
    fails if ``path`` exists. On failure the temporary files, and any file
    this call already put in place, are removed.

    Raises:
        FileExistsError: A path exists (without ``overwrite``); ``filename`` names it.
        OSError: A write failed; ``filename`` names the path.
    """
    temps: list[Path] = []
    placed: list[Path] = []
    done = False
    try:
        for path, data, mode in files:
            if not overwrite and os.path.lexists(path):
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path))
            _streams(path, allowed=False)  # raises for a device, pipe or socket
            temps.append(write_temp(path, data, mode))
        for (path, _, _), tmp in zip(files, temps, strict=True):
            try:
                if overwrite:
                    os.replace(tmp, path)
                else:
                    link_new(tmp, path)
            except OSError as exc:
                raise _named(exc, path) from None
            placed.append(path)
        fsync_dirs({p.parent for p, _, _ in files})
        done = True
    finally:
        for tmp in temps:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
        if not done and not overwrite:
            for path in placed:
                with contextlib.suppress(OSError):
                    path.unlink()


# Hard links unsupported by the file system (e.g. FAT, some network and FUSE mounts).
_NO_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EXDEV}


def link_new(tmp: Path, path: Path) -> None:
    """Gives ``tmp``'s file the name ``path``; FileExistsError if ``path`` exists.

    A hard link cannot replace an existing file. Where the file system has
    none, the fallback (check, then rename) has a small race with another
    writer creating ``path`` meanwhile.
    """
    try:
        os.link(tmp, path, follow_symlinks=False)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in _NO_LINKS:
            raise
        if os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path)) from None
        os.rename(tmp, path)


def fsync_dirs(directories: Iterable[Path]) -> None:
    """Makes new names durable (best effort: not every platform can fsync a directory)."""
    for d in directories:
        try:
            fd = os.open(d, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except OSError:
            continue
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)


@contextlib.contextmanager
def locked(lock_path: Path) -> Iterator[None]:
    """An exclusive advisory lock (fcntl) held for the block."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a+b") as f:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - non-POSIX: best effort, no lock
            yield
            return
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


# -- directory trees ------------------------------------------------------------------


def swap_in_tree(target: Path, fill: Callable[[Path], None]) -> None:
    """Builds a new tree beside ``target`` with ``fill``, then puts it in ``target``'s place.

    ``fill`` writes into a fresh temporary sibling directory (mode 0755).
    Absent or empty ``target``: one rename. Otherwise the two trees swap names
    in one atomic step where the platform can (:func:`exchange`), else the old
    tree moves aside and the new one in (never a mix; for an instant, no
    ``target``). The old tree is then deleted; on failure ``target`` is left
    as it was and the temporary tree removed.

    Raises:
        OSError: Creating, filling or renaming failed.
    """
    import shutil  # only trees are swapped with these
    import tempfile

    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent))
    old: Path | None = None
    try:
        os.chmod(tmp, 0o755)  # noqa: S103 - policy is not secret; OPA may run as another user
        fill(tmp)
        occupied = target.is_dir() and any(target.iterdir())
        if occupied and exchange(tmp, target):
            old = tmp  # one atomic step: the old tree now has the temporary name
        elif occupied:
            # Two renames: the old tree moves aside only once the new one is complete.
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=parent))
            os.rmdir(old)
            os.rename(target, old)
            os.rename(tmp, target)
        else:
            os.rename(tmp, target)  # absent, or an empty directory (replaced atomically)
        fsync_dirs([parent])
    except BaseException:
        if old is not None and not target.exists():
            with contextlib.suppress(OSError):
                os.rename(old, target)
            old = None
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def write_file(path: Path, data: bytes, mode: int) -> None:
    """Creates ``path`` (never an existing file or symlink) with ``data``, fsynced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "xb") as f:  # "x": never follow or reuse anything
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(path, mode)


# renameat2(2) flag and the *at() "current directory" descriptor (Linux).
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
# renamex_np(2) flag (macOS).
_RENAME_SWAP = 2
# Errors meaning "this system or file system cannot swap two names".
_NO_EXCHANGE = {errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP}


def exchange(a: Path, b: Path) -> bool:
    """Atomically swaps the names of two existing paths; False if the platform cannot.

    Raises:
        OSError: The swap was possible but failed (e.g. permissions).
    """
    import ctypes
    import sys

    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return False
    fa, fb = os.fsencode(a), os.fsencode(b)
    if sys.platform.startswith("linux") and hasattr(libc, "renameat2"):  # glibc >= 2.28, musl
        rc = libc.renameat2(_AT_FDCWD, fa, _AT_FDCWD, fb, ctypes.c_uint(_RENAME_EXCHANGE))
    elif sys.platform == "darwin" and hasattr(libc, "renamex_np"):
        rc = libc.renamex_np(fa, fb, ctypes.c_uint(_RENAME_SWAP))
    else:
        return False
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in _NO_EXCHANGE:
        return False
    raise OSError(err, os.strerror(err), str(b))


# -- large downloads ----------------------------------------------------------------------


class BackgroundWriter:
    """Writes chunks to a file from a worker thread, flushing to disk as it goes.

    Hashing and network reads stay on the caller's thread; writing and
    ``fdatasync`` (which release the GIL) overlap with them, so the final
    fsync of a big download has little left to do. Memory is bounded by the
    queue (a few chunks).
    """

    _SYNC_EVERY = 16 * 1024 * 1024

    def __init__(self, f: Any, *, durable: bool = True) -> None:
        import queue
        import threading

        self._f = f
        self._durable = durable
        self._q: queue.Queue[bytes | None] = queue.Queue(maxsize=8)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        unsynced = 0
        while True:
            chunk = self._q.get()
            try:
                if chunk is None:
                    return
                if self._error is None:
                    self._f.write(chunk)
                    unsynced += len(chunk)
                    if self._durable and unsynced >= self._SYNC_EVERY:
                        self._f.flush()
                        os.fdatasync(self._f.fileno())
                        unsynced = 0
            except BaseException as exc:  # re-raised on the caller's thread
                self._error = exc
            finally:
                self._q.task_done()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def write(self, chunk: bytes) -> None:
        """Queues ``chunk`` (blocks while the queue is full)."""
        self._raise()
        self._q.put(chunk)

    def drain(self) -> None:
        """Waits until every queued chunk is written."""
        self._q.join()
        self._raise()

    def reset(self) -> None:
        """Drains, then empties the file (a retried download starts over)."""
        self._q.join()
        self._error = None
        self._f.seek(0)
        self._f.truncate()

    def close(self) -> None:
        """Stops the worker thread."""
        self._q.put(None)
        self._thread.join()
