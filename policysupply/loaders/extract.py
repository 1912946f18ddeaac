"""Writing a verified bundle to a directory atomically, for file-based loaders."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path

from policysupply.errors import LoadError
from policysupply.loaders._common import _require_verified
from policysupply.verifier import VerifiedBundle


def _safe_entry(name: str) -> Path:
    p = Path(name)
    if (
        not name
        or name.startswith("/")
        or "\\" in name
        or any(part in ("", ".", "..") for part in name.split("/"))
    ):
        raise LoadError(f"bundle entry {name!r} is not a safe relative path; nothing extracted")
    return p


def extract_verified(verified: VerifiedBundle, directory: str | os.PathLike[str]) -> Path:
    """Writes a verified bundle's entries into ``directory``, atomically.

    The entries (``.manifest``, ``data.json``, the Rego modules and any other
    bundle files, as :meth:`Bundle.to_bytes` would archive them) are written
    to a temporary sibling directory and flushed to disk; only then does the
    complete tree take ``directory``'s place. Only the bundle's own entries
    are written; entry names are re-checked (no absolute paths, no ``..``).

    How it takes the old tree's place:

    - Absent or empty ``directory``: one ``rename``.
    - A previous extraction, on Linux (``renameat2(RENAME_EXCHANGE)``, most
      local file systems since Linux 3.15) and macOS (``renamex_np(RENAME_SWAP)``):
      the new tree and the old one swap names in one atomic step, so a
      reader resolving a path under ``directory`` finds the old tree or the
      new one, never a mix and never no directory. The old tree is then
      deleted (a process holding files of it open keeps reading them).
    - Elsewhere, or where the file system cannot swap (``EINVAL``,
      ``ENOTSUP``, ``ENOSYS``): two renames, old tree aside then new tree in.
      Never a mix, but between the two a reader finds no ``directory`` for
      an instant.

    ``directory`` stays a real directory, not a symlink to versioned trees:
    OPA does not follow a symlink given as ``opa run -b DIRECTORY`` (without a
    trailing ``/`` it loads an empty bundle), so a symlink swap would risk
    silently serving no policy.

    ``directory`` may be absent, empty, or a previous extraction (it holds a
    ``.manifest``); anything else is refused rather than replaced.

    Args:
        verified: The bundle to write.
        directory: The target directory (``opa run -b DIRECTORY`` loads it).

    Returns:
        The target directory.

    Raises:
        TypeError: ``verified`` is not a :class:`VerifiedBundle`.
        LoadError: The target cannot be replaced or written.
    """
    verified = _require_verified(verified, "extract_verified")
    target = Path(directory)
    entries = verified.bundle.entries()
    for name in entries:
        _safe_entry(name)
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise LoadError(f"{target} exists and is not a directory; nothing extracted")
    if target.is_dir() and any(target.iterdir()) and not (target / ".manifest").is_file():
        raise LoadError(
            f"{target} is not empty and is not a previous extraction (no .manifest); "
            "refusing to replace it"
        )
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent))
    except OSError as exc:
        raise LoadError(f"cannot create a directory next to {target}: {exc.strerror}") from None
    old: Path | None = None
    try:
        os.chmod(tmp, 0o755)  # noqa: S103 - policy is not secret; OPA may run as another user
        for name, content in sorted(entries.items()):
            path = tmp / _safe_entry(name)
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "xb") as f:  # "x": never follow or reuse anything
                f.write(content)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(path, 0o644)
        occupied = target.is_dir() and any(target.iterdir())
        if occupied and _exchange(tmp, target):
            old = tmp  # one atomic step: the old tree now has the temporary name
        elif occupied:
            # Two renames: the old tree moves aside only once the new one is complete.
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=parent))
            os.rmdir(old)
            os.rename(target, old)
            os.rename(tmp, target)
        else:
            os.rename(tmp, target)  # absent, or an empty directory (replaced atomically)
        _fsync_dir(parent)
    except OSError as exc:
        if old is not None and not target.exists():
            with contextlib.suppress(OSError):
                os.rename(old, target)
            old = None
        shutil.rmtree(tmp, ignore_errors=True)
        raise LoadError(f"cannot extract into {target}: {exc.strerror or exc}") from None
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return target


# renameat2(2) flag and the *at() "current directory" descriptor (Linux).
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
# renamex_np(2) flag (macOS).
_RENAME_SWAP = 2
# Errors meaning "this system or file system cannot swap two names".
_NO_EXCHANGE = {errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP}


def _exchange(a: Path, b: Path) -> bool:
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


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
