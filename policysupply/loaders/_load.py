"""One load or unload, as a function over :class:`~policysupply.loaders._api.OpaApi`.

:func:`apply` reads what OPA holds, checks the roots, takes the rollback
snapshot, then makes the writes through a :class:`~policysupply.loaders._plan.Plan`
(the undo log); on any failure it replays the log backwards and raises one
:class:`~policysupply.errors.LoadError` that says whether OPA is back where it was.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

import attrs

from policysupply.errors import LoadError
from policysupply.loaders._api import MISSING, DataPath, OpaApi, Rejected
from policysupply.loaders._core import (
    RECORDS,
    base_only,
    check_overlaps,
    module_prefix,
    record_key,
    value_at,
    virtual_paths,
)
from policysupply.loaders._plan import Plan

# What an OPA object last wrote for a load name: the record, and the data at each
# root. While OPA's record still matches, this is the exact rollback snapshot,
# and OPA need not evaluate (and send) its data.
Held = tuple[dict[str, Any], dict[DataPath, Any]]


@attrs.frozen(kw_only=True)
class Change:
    """What a load name should hold in OPA afterwards.

    Attributes:
        name: The load name (checked).
        roots: The data roots it owns.
        modules: Policy id -> module source.
        data: The bundle's data document.
        record: The load record to write, or ``None`` to unload.
    """

    name: str
    roots: tuple[DataPath, ...] = ()
    modules: Mapping[str, str] = attrs.field(factory=dict)
    data: Mapping[str, Any] = attrs.field(factory=dict)
    record: Mapping[str, Any] | None = None


@attrs.frozen(kw_only=True)
class _Before:
    """What OPA held before the first write (read once, never re-read)."""

    policies: list[Mapping[str, Any]]
    current: dict[str, str]  # policy id -> source
    old: dict[str, Any] | None  # this name's load record
    snapshot: dict[DataPath, Any]  # base data at every root involved


def apply(
    api: OpaApi, change: Change, held: MutableMapping[str, Held], where: str
) -> tuple[tuple[str, ...], int]:
    """Makes OPA hold ``change``; on failure puts OPA back as it was.

    Args:
        api: The OPA to write to.
        change: What the load name should hold.
        held: Per load name, what was last written (read and updated).
        where: OPA's URL, for messages.

    Returns:
        ``(policy ids removed, number of writes OPA accepted)``.

    Raises:
        LoadError: OPA's state could not be read (nothing changed), a root
            overlaps another load's, or a write failed (rolled back; the
            message says whether completely).
    """
    before = _read(api, change, held, where)
    ours = {pid for pid in before.current if pid.startswith(module_prefix(change.name))}
    removed = tuple(sorted(ours - set(change.modules)))
    plan = Plan(api)
    try:
        _Writes(plan, change, before, ours).run(removed)
    except BaseException as exc:
        failures = plan.rollback()
        if failures:
            held.pop(change.name, None)
        if not isinstance(exc, Exception):
            raise  # interrupted: put back, then let the interrupt through
        raise _failed(change.name, where, exc, len(plan.undo), failures) from (
            None if isinstance(exc, (Rejected, LoadError)) else exc
        )
    if change.record is None:
        held.pop(change.name, None)
    else:
        held[change.name] = (
            dict(change.record),
            {r: value_at(change.data, r) for r in change.roots},
        )
    return removed, plan.writes


def _read(api: OpaApi, change: Change, held: Mapping[str, Held], where: str) -> _Before:
    try:
        policies = api.list_policies()
        records = api.get_data(RECORDS)
    except Rejected as exc:
        raise LoadError(f"OPA at {where}: cannot read its state: {exc}") from None
    records = records if isinstance(records, dict) else {}
    check_overlaps(change.name, change.roots, records, where)
    record = records.get(record_key(change.name))
    old = record if isinstance(record, dict) else None
    old_roots = [tuple(str(r).split("/")) for r in (old or {}).get("roots") or []]
    remembered = held.get(change.name)
    known = remembered[1] if remembered is not None and old == remembered[0] else {}
    virtual = virtual_paths(policies)
    try:
        snapshot = {
            r: known[r] if r in known else base_only(api.get_data(r), r, virtual)
            for r in dict.fromkeys([*change.roots, *old_roots])
        }
    except Rejected as exc:
        raise LoadError(
            f"OPA at {where}: cannot read the data it holds now ({exc}); nothing changed"
        ) from None
    return _Before(
        policies=policies,
        current={str(p.get("id")): str(p.get("raw", "")) for p in policies},
        old=old,
        snapshot=snapshot,
    )


class _Writes:
    """The writes of one load, in the order that lets OPA's compiler accept each."""

    def __init__(self, plan: Plan, change: Change, before: _Before, ours: set[str]) -> None:
        self.plan = plan
        self.change = change
        self.before = before
        self.ours = ours
        # What each of this load's policy ids holds in OPA as the writes go on.
        self.state: dict[str, str | None] = {pid: before.current[pid] for pid in ours}

    def run(self, removed: tuple[str, ...]) -> None:
        modules = self.change.modules
        deferred = self.plan.converge(
            [("delete", p) for p in removed] + self._colliding(), modules, self.state
        )
        self._write_data()
        stuck = self.plan.converge([*deferred, *self._puts()], modules, self.state)
        if stuck:
            self._clear()
            stuck = self.plan.converge(self._puts(), modules, self.state)
        if stuck:
            (_, pid), why = next(iter(stuck.items()))
            raise Rejected(why.status, why.code, f"{pid}: {why.message}", False)
        self._write_record()

    def _colliding(self) -> list[tuple[str, str]]:
        # An old module whose rules sit where new data goes would make the
        # data write conflict: take it out first (its new version follows).
        by_id = {str(p.get("id")): p for p in self.before.policies}
        modules, data = self.change.modules, self.change.data
        return [
            ("delete", pid)
            for pid in sorted(self.ours & set(modules))
            if self.before.current[pid] != modules[pid]
            and any(value_at(data, v) is not MISSING for v in virtual_paths([by_id[pid]]))
        ]

    def _write_data(self) -> None:
        snapshot = self.before.snapshot
        for r in snapshot:
            value = value_at(self.change.data, r) if r in self.change.roots else MISSING
            if value == snapshot[r]:
                continue
            try:
                self.plan.set_data(r, value, snapshot[r])
            except Rejected as exc:
                if not exc.retryable:
                    raise
                self._clear()
                self.plan.set_data(r, value, snapshot[r])

    def _puts(self) -> list[tuple[str, str]]:
        modules = self.change.modules
        return [("put", p) for p in sorted(modules) if self.state.get(p) != modules[p]]

    def _clear(self) -> None:
        # Old versions can block new ones (a renamed function, a rule where
        # data goes): take every old module of this load out, dependents first.
        modules = self.change.modules
        stale = [
            ("delete", p)
            for p in sorted(self.ours)
            if self.state.get(p) is not None and self.state.get(p) != modules.get(p)
        ]
        stuck = self.plan.converge(stale, modules, self.state)
        if stuck:
            raise next(iter(stuck.values()))

    def _write_record(self) -> None:
        path = (*RECORDS, record_key(self.change.name))
        old, record = self.before.old, self.change.record
        if record is None:
            if old is not None:
                self.plan.set_data(path, MISSING, old)
        elif old != record:
            self.plan.set_data(path, dict(record), old if old else MISSING)


def _failed(name: str, where: str, exc: Exception, steps: int, failures: list[str]) -> LoadError:
    cause = f"OPA refused it: {exc.code}: {exc.message}" if isinstance(exc, Rejected) else str(exc)
    undone = (
        f"the {steps} step(s) taken were rolled back; OPA serves what it served before"
        if not failures
        else f"ROLLBACK INCOMPLETE, OPA may serve a mix of revisions "
        f"({'; '.join(failures[:3])}); load the previous bundle again"
    )
    return LoadError(f"loading {name} into {where} failed: {cause}; {undone}")
