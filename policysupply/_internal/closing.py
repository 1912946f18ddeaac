"""``with`` support for the public objects that hold connections (``Registry``, ``OPA``)."""

from __future__ import annotations

from typing import TypeVar

_C = TypeVar("_C", bound="Closing")


class Closing:
    """A mixin: ``with obj:`` gives ``obj`` and calls its ``close()`` on the way out."""

    __slots__ = ()

    def close(self) -> None:
        """Releases what the object holds (defined by each class)."""
        raise NotImplementedError

    def __enter__(self: _C) -> _C:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
