"""Writing a bundle's entries into a directory atomically, for file-based loaders.

Used by :func:`policysupply.loaders.extract_verified` and
:meth:`policysupply.verifier.VerifiedBundle.extract`; it imports neither, so
the verifier does not depend on the loaders.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from policysupply._internal import fs
from policysupply.errors import LoadError


def safe_entry(name: str) -> Path:
    """``name`` as a relative path that stays inside the target directory.

    Raises:
        LoadError: Absolute, with ``..``/``.``/empty segments or backslashes.
    """
    if (
        not name
        or name.startswith("/")
        or "\\" in name
        or any(part in ("", ".", "..") for part in name.split("/"))
    ):
        raise LoadError(f"bundle entry {name!r} is not a safe relative path; nothing extracted")
    return Path(name)


def write_tree(entries: Mapping[str, bytes], directory: str | os.PathLike[str]) -> Path:
    """Writes ``entries`` (bundle path -> bytes) as ``directory``, replacing it atomically.

    See :func:`policysupply.loaders.extract_verified` for the guarantees.

    Returns:
        The target directory.

    Raises:
        LoadError: An entry name is unsafe, the target is something other than
            an absent or empty directory or a previous extraction, or writing failed
            (the old tree is kept).
    """
    target = Path(directory)
    for name in entries:
        safe_entry(name)
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise LoadError(f"{target} exists and is not a directory; nothing extracted")
    if target.is_dir() and any(target.iterdir()) and not (target / ".manifest").is_file():
        raise LoadError(
            f"{target} is not empty and is not a previous extraction (no .manifest); "
            "refusing to replace it"
        )
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LoadError(f"cannot create a directory next to {target}: {exc.strerror}") from None

    def fill(tmp: Path) -> None:
        for name, content in sorted(entries.items()):
            fs.write_file(tmp / safe_entry(name), content, 0o644)

    try:
        fs.swap_in_tree(target, fill)
    except OSError as exc:
        raise LoadError(f"cannot extract into {target}: {exc.strerror or exc}") from None
    return target
