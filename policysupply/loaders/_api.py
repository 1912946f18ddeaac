"""The seam between the REST loader and OPA: the calls a load makes, as a protocol.

The loader's logic (roots, snapshots, the undo log, convergence) is written
against :class:`OpaApi` only. One adapter, :class:`~policysupply.loaders._opa_http.HttpOpa`,
speaks HTTP to a real OPA; the unit tests use an in-memory fake that can refuse
a write or lose an answer part-way through a load.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, Final, Protocol

DataPath = tuple[str, ...]  # a data path, split into segments


class _Missing(enum.Enum):
    MISSING = "MISSING"


MISSING: Final = _Missing.MISSING  # "no document here" (distinct from JSON null)


class Rejected(Exception):
    """OPA answered a call with an error (compile, parse, conflict, auth).

    Attributes:
        status: The HTTP status.
        code: OPA's error code (``invalid_parameter``, ``resource_not_found``, ...).
        message: OPA's message (secrets redacted).
        parse: Whether OPA could not parse a module (retrying cannot help).
    """

    def __init__(self, status: int, code: str, message: str, parse: bool) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.parse = parse

    @property
    def retryable(self) -> bool:
        """A compile error that another module's write may resolve (not a parse error)."""
        return not self.parse and self.code in ("invalid_parameter", "invalid_operation")


class OpaApi(Protocol):
    """What a load needs from OPA.

    Every method raises :class:`Rejected` when OPA answers with an error, and
    :class:`~policysupply.errors.LoadError` when no usable answer came back
    (connection lost, timeout, a body that is not JSON): then a write may or
    may not have been applied.
    """

    def list_policies(self) -> list[Mapping[str, Any]]:
        """``GET /v1/policies``: each policy's ``id``, ``raw`` source and ``ast``."""
        ...

    def get_data(self, path: DataPath) -> Any:
        """``GET /v1/data/<path>``: base data merged with rule values, or ``MISSING``."""
        ...

    def put_data(self, path: DataPath, value: Any) -> None:
        """``PUT /v1/data/<path>``."""
        ...

    def delete_data(self, path: DataPath) -> None:
        """``DELETE /v1/data/<path>``; a document that is not there is already gone."""
        ...

    def put_policy(self, pid: str, raw: str) -> None:
        """``PUT /v1/policies/<id>`` with the module source, unchanged."""
        ...

    def delete_policy(self, pid: str) -> None:
        """``DELETE /v1/policies/<id>``; a policy that is not there is already gone."""
        ...

    def query(self, path: DataPath, input: Any) -> Any:
        """``POST /v1/data/<path>`` with ``input`` (omitted when ``None``); the result."""
        ...

    def healthy(self) -> bool:
        """Whether ``GET /health`` answers 200 (never raises)."""
        ...

    def close(self) -> None:
        """Releases connections."""
        ...
