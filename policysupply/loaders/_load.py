"""One load or unload, as a function over :class:`~policysupply.loaders._api.OpaApi`.

:func:`apply` reads what OPA holds, checks the roots, takes the rollback
snapshot, then makes the writes through a :class:`~policysupply.loaders._plan.Plan`
(the undo log); on any failure it replays the log backwards and raises one
:class:`~policysupply.errors.LoadError` that says whether OPA is back where it was.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

import attrs

from policysupply.errors import BundleError, LoadError
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

# What an OPA object last wrote for a load name: the record, the data at each
# root, and the module sources. While OPA's record still matches, this is the
# exact rollback snapshot, and OPA need not evaluate (and send) its data or
# modules: a load then reads one document (the load records) before writing.
Held = tuple[dict[str, Any], dict[DataPath, Any], dict[str, str]]

# Sends a root's document as given bytes (the bundle's own), or None: encode the value.
Bodies = Callable[[DataPath], "bytes | None"]


def _no_bodies(_: DataPath) -> bytes | None:
    return None


@attrs.frozen(kw_only=True)
class Change:
    """What a load name should hold in OPA afterwards.

    Attributes:
        name: The load name (checked).
        roots: The data roots it owns.
        modules: Policy id -> module source.
        data: The bundle's data document.
        record: The load record to write, or ``None`` to unload.
        bodies: Per root, the document's bytes to send as they are (the
            verified bundle's own), or ``None`` to encode it from ``data``.
    """

    name: str
    roots: tuple[DataPath, ...] = ()
    modules: Mapping[str, str] = attrs.field(factory=dict)
    data: Mapping[str, Any] = attrs.field(factory=dict)
    record: Mapping[str, Any] | None = None
    bodies: Bodies = _no_bodies


@attrs.frozen(kw_only=True)
class _Before:
    """What OPA held before the first write (read once, never re-read).

    Only what this load touches: its own policy ids, its record, the data at
    its roots; never everything OPA holds.
    """

    current: dict[str, str]  # this load's policy ids that exist -> source
    created: DataPath | None  # the highest absent ancestor of the records, if absent
    asts: dict[str, Mapping[str, Any]]  # policy id -> OPA's AST, where it was read
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
    ours = set(before.current)
    removed = tuple(sorted(ours - set(change.modules)))
    plan = Plan(api)
    try:
        _Writes(plan, change, before, ours, api).run(removed)
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
            dict(change.modules),
        )
    return removed, plan.writes


def _read(api: OpaApi, change: Change, held: Mapping[str, Held], where: str) -> _Before:
    """Reads what this load replaces, and nothing else OPA holds.

    The load record names the policy ids and roots this name owns (a load
    first widens it to every id it is about to write, so even an incomplete
    rollback leaves them findable). While it matches what this object last
    wrote, that memory is the snapshot; otherwise each recorded policy is
    read by its id and the data at each root from OPA.
    """
    try:
        records = api.get_data(RECORDS)
    except Rejected as exc:
        raise LoadError(f"OPA at {where}: cannot read its state: {exc}") from None
    created: DataPath | None = None
    if records is MISSING:
        # The first load into this OPA: writing a record creates its parents;
        # a rollback removes whatever it created.
        created = RECORDS
        try:
            for depth in (1, 2):
                if api.get_data(RECORDS[:depth]) is MISSING:
                    created = RECORDS[:depth]
                    break
        except Rejected as exc:
            raise LoadError(f"OPA at {where}: cannot read its state: {exc}") from None
    records = records if isinstance(records, dict) else {}
    check_overlaps(change.name, change.roots, records, where)
    record = records.get(record_key(change.name))
    old = record if isinstance(record, dict) else None
    for key in ("modules", "roots"):
        if not isinstance((old or {}).get(key) or [], list):
            # Then what this name owns is unknown: better no load than a guess.
            raise LoadError(
                f"OPA at {where}: the load record of {change.name} has {key!r} that is not "
                f"a list (it was not written by policysupply); nothing changed"
            )
    old_roots = [tuple(r.split("/")) for r in _strings(old, "roots")]
    remembered = held.get(change.name)
    if remembered is not None and old == remembered[0]:
        return _Before(
            current=dict(remembered[2]),
            created=created,
            asts={},
            old=old,
            snapshot=dict(remembered[1]),
        )
    current: dict[str, str] = {}
    asts: dict[str, Mapping[str, Any]] = {}
    prefix = module_prefix(change.name)
    try:
        for pid in _strings(old, "modules"):
            if not pid.startswith(prefix):
                continue  # a record names only its own ids; anything else is not ours
            policy = api.get_policy(pid)
            if policy is not None:
                current[pid] = str(policy.get("raw", ""))
                asts[pid] = policy
        # Rules of this load's modules are merged into GET /v1/data answers:
        # their ASTs tell which paths to take out again.
        virtual = virtual_paths(list(asts.values()))
        snapshot = {
            r: base_only(api.get_data(r), r, virtual)
            for r in dict.fromkeys([*change.roots, *old_roots])
        }
    except Rejected as exc:
        raise LoadError(
            f"OPA at {where}: cannot read the data it holds now ({exc}); nothing changed"
        ) from None
    return _Before(current=current, created=created, asts=asts, old=old, snapshot=snapshot)


def _strings(record: Mapping[str, Any] | None, key: str) -> list[str]:
    """The strings a record lists under ``key`` (a list, checked by :func:`_read`).

    Anything else in it was not written by this library and names nothing
    this load owns, as an id outside its prefix does not.
    """
    return [v for v in (record or {}).get(key) or [] if isinstance(v, str)]


class _Writes:
    """The writes of one load, in the order that lets OPA's compiler accept each."""

    def __init__(
        self, plan: Plan, change: Change, before: _Before, ours: set[str], api: OpaApi
    ) -> None:
        self.plan = plan
        self.change = change
        self.before = before
        self.ours = ours
        self.api = api
        # What each of this load's policy ids holds in OPA as the writes go on.
        self.state: dict[str, str | None] = {pid: before.current[pid] for pid in ours}
        self.record_now: dict[str, Any] | None = before.old  # the record in OPA now

    def run(self, removed: tuple[str, ...]) -> None:
        modules = self.change.modules
        self._widen_record()
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

    def _widen_record(self) -> None:
        """Before writing policy ids or roots the record does not list yet, lists them.

        The record is how the next load finds what this name owns without
        reading all of OPA. Written first (and restored on rollback), so ids
        a failed load wrote stay findable even if the rollback cannot finish.
        """
        record, old = self.change.record, self.before.old
        if record is None:
            return
        listed = set(_strings(old, "modules"))
        roots = _strings(old, "roots")
        new_ids = sorted(set(self.change.modules) - listed)
        new_roots = [r for r in record.get("roots") or [] if r not in roots]
        if not new_ids and not new_roots:
            return
        # A first load's widened record names no revision yet: the record
        # written last, after everything else, is what says it is loaded.
        wider = {
            **(old or {"name": record.get("name", self.change.name)}),
            "modules": sorted(listed | set(new_ids)),
            "roots": roots + new_roots,
        }
        path = (*RECORDS, record_key(self.change.name))
        self.plan.set_data(path, wider, old or MISSING, created=self.before.created)
        self.record_now = wider

    def _colliding(self) -> list[tuple[str, str]]:
        # An old module whose rules sit where new data goes would make the
        # data write conflict: take it out first (its new version follows).
        # Only modules whose package holds new data can collide; only their
        # ASTs are read.
        from policysupply._internal.engines.rego_source import package_path

        modules, data = self.change.modules, self.change.data
        out = []
        for pid in sorted(self.ours & set(modules)):
            old_source = self.before.current[pid]
            if old_source == modules[pid]:
                continue
            try:
                package = package_path(old_source, entry=pid)
            except BundleError:
                package = ()  # not readable here: ask OPA for its AST
            if package and value_at(data, package) is MISSING:
                continue
            ast = self.before.asts.get(pid)
            if ast is None:
                try:
                    ast = self.api.get_policy(pid)
                except Rejected:
                    ast = None
            if ast is not None and any(
                value_at(data, v) is not MISSING for v in virtual_paths([ast])
            ):
                out.append(("delete", pid))
        return out

    def _write_data(self) -> None:
        snapshot = self.before.snapshot
        for r in snapshot:
            value = value_at(self.change.data, r) if r in self.change.roots else MISSING
            if value == snapshot[r]:
                continue
            body = None if value is MISSING else self.change.bodies(r)
            try:
                self.plan.set_data(r, value, snapshot[r], body)
            except Rejected as exc:
                if not exc.retryable:
                    raise
                self._clear()
                self.plan.set_data(r, value, snapshot[r], body)

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
            # Named, as a put that never passes is: OPA's answer names only the module
            # that still needs this one.
            (_, pid), why = next(iter(stuck.items()))
            raise Rejected(why.status, why.code, f"removing {pid}: {why.message}", False)

    def _write_record(self) -> None:
        path = (*RECORDS, record_key(self.change.name))
        old, record = self.record_now, self.change.record
        if record is None:
            if old is not None:
                self.plan.set_data(path, MISSING, old)
        elif old != record:
            self.plan.set_data(
                path, dict(record), old if old else MISSING, created=self.before.created
            )


def _failed(name: str, where: str, exc: Exception, steps: int, failures: list[str]) -> LoadError:
    cause = f"OPA refused it: {exc.code}: {exc.message}" if isinstance(exc, Rejected) else str(exc)
    undone = (
        f"the {steps} step(s) taken were rolled back; OPA serves what it served before"
        if not failures
        else f"ROLLBACK INCOMPLETE, OPA may serve a mix of revisions "
        f"({'; '.join(failures[:3])}); load the previous bundle again"
    )
    return LoadError(f"loading {name} into {where} failed: {cause}; {undone}")
