"""Writing a bundle's entries into a directory atomically, for file-based loaders.

Used by :func:`policysupply.loaders.extract_verified` and
:meth:`policysupply.verifier.VerifiedBundle.extract`; it imports neither, so
the verifier does not depend on the loaders.
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Iterable, Mapping
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


def _check_collisions(names: Iterable[str]) -> None:
    """Refuses names that one file system could fold into one path.

    macOS and Windows file systems ignore case (and macOS Unicode
    normalisation): ``deny.rego`` and ``DENY.rego`` would be one file there,
    the second silently replacing the first, so the directory would not hold
    the bundle that was verified. Every path prefix is compared, so a
    directory spelt two ways collides too.

    Raises:
        LoadError: Two entries fold into one path.
    """
    seen: dict[str, str] = {}
    for name in names:
        parts = name.split("/")
        for i in range(1, len(parts) + 1):
            path = "/".join(parts[:i])
            folded = unicodedata.normalize("NFC", path).casefold()
            other = seen.setdefault(folded, path)
            if other != path:
                raise LoadError(
                    f"bundle entries {other!r} and {path!r} differ only in case or Unicode "
                    "normalisation: a case-insensitive file system would keep one of them; "
                    "nothing extracted"
                )


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
    _check_collisions(entries)
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
