"""The undo log: one load (or unload) as writes through :class:`OpaApi`, each with its inverse."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from policysupply.errors import LoadError
from policysupply.loaders._api import MISSING, DataPath, OpaApi, Rejected


class Plan:
    """One load (or unload) as a sequence of writes, each with its exact inverse."""

    def __init__(self, api: OpaApi) -> None:
        self.api = api
        self.undo: list[tuple[str, Callable[[], None]]] = []
        self.writes = 0

    def put_module(self, pid: str, raw: str, before: str | None) -> None:
        self._push(f"restore policy {pid}", self._module_restorer(pid, before))
        self.api.put_policy(pid, raw)
        self.writes += 1

    def delete_module(self, pid: str, before: str | None) -> None:
        self._push(f"restore policy {pid}", self._module_restorer(pid, before))
        self.api.delete_policy(pid)
        self.writes += 1

    def set_data(self, path: DataPath, value: Any, before: Any) -> None:
        self._push(f"restore data/{'/'.join(path)}", self._data_restorer(path, before))
        if value is MISSING:
            self.api.delete_data(path)
        else:
            self.api.put_data(path, value)
        self.writes += 1

    def converge(
        self,
        ops: list[tuple[str, str]],
        modules: Mapping[str, str],
        state: dict[str, str | None],
    ) -> dict[tuple[str, str], Rejected]:
        """Runs module deletes/puts in rounds until all pass or a round passes none.

        OPA compiles every module on each write, so one may be refused until
        another is written or removed (a function it calls, a module that
        calls it): order is found by retrying.

        Returns:
            The operations that kept failing, with OPA's answer.
        """
        pending = list(dict.fromkeys(ops))
        while pending:
            errors: dict[tuple[str, str], Rejected] = {}
            for op in pending:
                kind, pid = op
                try:
                    if kind == "delete":
                        if state.get(pid) is not None:
                            self.delete_module(pid, state[pid])
                            state[pid] = None
                    else:
                        self.put_module(pid, modules[pid], state.get(pid))
                        state[pid] = modules[pid]
                except Rejected as exc:
                    if not exc.retryable:
                        raise
                    errors[op] = exc
            if len(errors) == len(pending):
                return errors
            pending = [op for op in pending if op in errors]
        return {}

    # The inverse is registered before the write: if the write reached OPA but
    # its answer was lost, restoring is still right (each inverse is an
    # idempotent "set back to what it was").
    def _push(self, what: str, fn: Callable[[], None]) -> None:
        self.undo.append((what, fn))

    def _module_restorer(self, pid: str, before: str | None) -> Callable[[], None]:
        if before is None:
            return lambda: self.api.delete_policy(pid)
        return lambda: self.api.put_policy(pid, before)

    def _data_restorer(self, path: DataPath, before: Any) -> Callable[[], None]:
        if before is MISSING:
            return lambda: self.api.delete_data(path)
        return lambda: self.api.put_data(path, before)

    def rollback(self) -> list[str]:
        failures = []
        for what, fn in reversed(self.undo):
            try:
                fn()
            except (Rejected, LoadError) as exc:
                failures.append(f"{what}: {exc}")
        return failures
