"""Writing a verified bundle to a directory atomically, for file-based loaders."""

from __future__ import annotations

import os
from pathlib import Path

from policysupply._internal.extraction import write_tree
from policysupply.loaders._common import _require_verified
from policysupply.verifier import VerifiedBundle


def extract_verified(verified: VerifiedBundle, directory: str | os.PathLike[str]) -> Path:
    """Writes a verified bundle's entries into ``directory``, atomically.

    The entries (``.manifest``, ``data.json``, the Rego modules and any other
    bundle files, as :meth:`Bundle.to_bytes` would archive them) are written
    to a temporary sibling directory and flushed to disk; only then does the
    complete tree take ``directory``'s place. Only the bundle's own entries
    are written; entry names are re-checked (no absolute paths, no ``..``,
    no two names that differ only in case or Unicode normalisation, which a
    case-insensitive file system would fold into one file).

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
        LoadError: The target cannot be replaced or written, or two entries
            would fold into one path.
    """
    verified = _require_verified(verified, "extract_verified")
    return write_tree(verified.bundle.entries(), directory)
