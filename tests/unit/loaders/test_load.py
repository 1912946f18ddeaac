"""The REST loader against FakeOpa: every rollback path, without a real OPA.

tests/interop/test_loaders_opa.py runs the same kinds of failure against a
real OPA behind a fault-injecting proxy; here each write of a load fails in
turn in every way the fake knows, quickly and deterministically.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest

from policysupply import Bundle, BundleError, LoadError, Manifest
from policysupply.loaders import OPA, fetch_verified, publish
from policysupply.loaders._load import Change, apply
from policysupply.verifier import VerifiedBundle
from tests.unit.loaders._env import Env, push_tarball
from tests.unit.loaders.fake_opa import FakeOpa

NAME = "acme/app"
PREFIX = f"policysupply/{NAME}/~/"

V1 = {
    "app/lib/lib.rego": "package app.lib\n\nf(x) := x + 1\n",
    "app/main/main.rego": "package app.main\n\nimport data.app.lib\n\nout := lib.f(1)\n",
    "app/cfg/cfg.rego": 'package app.cfg\n\nmode := "strict"\n',
    "app/old/old.rego": "package app.old\n\nx := 1\n",
}
# A renamed function used from another module, a rule that becomes data, a
# module dropped and one added: no single write order works without retries.
V2 = {
    "app/lib/lib.rego": "package app.lib\n\ng(x) := x + 10\n",
    "app/main/main.rego": "package app.main\n\nimport data.app.lib\n\nout := lib.g(1)\n",
    "app/cfg/cfg.rego": "package app.cfg\n\nother := 1\n",
    "app/new/new.rego": "package app.new\n\ny := 2\n",
}


def release(
    env: Env, revision: str, modules: dict[str, str], data: dict[str, object]
) -> VerifiedBundle:
    bundle = Bundle(manifest=Manifest(revision=revision, roots=["app"]), modules=modules, data=data)

    publish(bundle, env.registry, f"acme/app:{revision}", env.signer)
    return fetch_verified(env.registry, f"acme/app:{revision}", env.verifier)


@pytest.fixture
def revisions(env: Env) -> tuple[VerifiedBundle, VerifiedBundle]:
    v1 = release(env, "1", V1, {"app": {"users": ["alice"]}})
    v2 = release(env, "2", V2, {"app": {"users": ["bob"], "cfg": {"mode": "lenient"}}})
    return v1, v2


def opa_over(fake: FakeOpa) -> OPA:
    opa = OPA("http://fake.invalid:8181")
    opa._client = fake  # the seam: everything below OPA goes through OpaApi
    return opa


def with_neighbours() -> FakeOpa:
    """An OPA that already holds someone else's policy and data, which must survive."""
    fake = FakeOpa()
    fake.policies["theirs.rego"] = "package theirs\n\nok := true\n"
    fake.data["other"] = {"keep": [1, 2]}
    return fake


def test_revisions_replace_each_other_and_converge(
    revisions: tuple[VerifiedBundle, VerifiedBundle],
) -> None:
    v1, v2 = revisions
    fake = with_neighbours()
    opa = opa_over(fake)
    first = opa.load(v1, name=NAME)
    assert opa.query("app/main/out") == "<rule value>"  # the fake does not evaluate
    v1_state = fake.state()
    assert opa.load(v1, name=NAME).changed == 0

    second = opa.load(v2, name=NAME)
    assert second.removed == (PREFIX + "app/old/old.rego",)
    policies, data = fake.state()
    assert set(policies) == {"theirs.rego", *second.modules}
    assert data["app"] == {"users": ["bob"], "cfg": {"mode": "lenient"}}
    assert data["other"] == {"keep": [1, 2]}
    # The renamed function needed a second round (a write refused, then retried).
    puts = [t for op, t in fake.attempts if op == "PUT policy"]
    assert len(puts) > len(set(puts))

    assert opa.load(v1, name=NAME).modules == first.modules
    assert fake.state() == v1_state
    opa.unload(NAME)
    policies, data = fake.state()
    assert set(policies) == {"theirs.rego"}
    assert "app" not in data
    assert opa.loaded() == {}


def _writes_of_a_clean_load(v1: VerifiedBundle, v2: VerifiedBundle, fault: str) -> list[int]:
    """The writes a v1 -> v2 load tries (1-based); for ``lose``, those OPA applied."""
    fake = with_neighbours()
    opa = opa_over(fake)
    opa.load(v1, name=NAME)
    start = len(fake.attempts)
    opa.load(v2, name=NAME)
    if fault == "lose":
        return [n - start for n in fake.accepted if n > start]
    return list(range(1, len(fake.attempts) - start + 1))


@pytest.mark.parametrize("fault", ["refuse", "lose", "drop"])
def test_each_write_failing_in_turn_rolls_back_to_the_old_revision(
    fault: str, revisions: tuple[VerifiedBundle, VerifiedBundle]
) -> None:
    """``refuse``: OPA says no; ``lose``: OPA applied it but the answer was lost;
    ``drop``: the write never reached OPA. In every case OPA ends as it was."""
    v1, v2 = revisions
    writes = _writes_of_a_clean_load(v1, v2, fault)
    assert len(writes) >= 8
    for n in writes:
        fake = with_neighbours()
        opa = opa_over(fake)
        opa.load(v1, name=NAME)
        before = fake.state()
        fake.faults = {len(fake.attempts) + n: fault}
        with pytest.raises(LoadError) as err:
            opa.load(v2, name=NAME)
        assert "were rolled back; OPA serves what it served before" in str(err.value), n
        assert fake.state() == before, n
        # and the next load, with nothing failing, goes through
        fake.faults = {}
        opa.load(v2, name=NAME)
        assert opa.loaded()[NAME]["revision"] == "2"


def test_an_interrupt_mid_load_rolls_back_then_propagates(
    revisions: tuple[VerifiedBundle, VerifiedBundle],
) -> None:
    v1, v2 = revisions
    fake = with_neighbours()
    opa = opa_over(fake)
    opa.load(v1, name=NAME)
    before = fake.state()
    fake.faults = {len(fake.attempts) + 3: "interrupt"}
    with pytest.raises(KeyboardInterrupt):
        opa.load(v2, name=NAME)
    assert fake.state() == before


def test_opa_gone_mid_load_says_the_rollback_is_incomplete(
    revisions: tuple[VerifiedBundle, VerifiedBundle],
) -> None:
    v1, v2 = revisions
    fake = with_neighbours()
    opa = opa_over(fake)
    opa.load(v1, name=NAME)
    before = fake.state()
    fake.faults = {len(fake.attempts) + 2: "down"}  # the first write lands, then OPA is gone
    with pytest.raises(LoadError, match="ROLLBACK INCOMPLETE") as err:
        opa.load(v2, name=NAME)
    assert "load the previous bundle again" in str(err.value)
    assert fake.state() != before
    # Back up: loading v1 again restores it. The loader no longer trusts its
    # memory of what it wrote, so it reads the data from OPA this time.
    fake.down, fake.faults = False, {}
    fake.reads.clear()
    opa.load(v1, name=NAME)
    assert fake.state() == before
    assert "data/app" in fake.reads


def test_a_load_remembers_what_it_wrote_while_opas_record_matches(
    revisions: tuple[VerifiedBundle, VerifiedBundle],
) -> None:
    v1, v2 = revisions
    fake = FakeOpa()
    opa = opa_over(fake)
    opa.load(v1, name=NAME)
    fake.reads.clear()
    opa.load(v2, name=NAME)
    assert "data/app" not in fake.reads  # the snapshot came from memory
    # Someone else changes the record: memory no longer describes OPA.
    record = fake.data["system"]["policysupply"]["bundles"]["acme~app"]
    record["revision"] = "tampered"
    fake.reads.clear()
    opa.load(v1, name=NAME)
    assert "data/app" in fake.reads


def test_a_module_opa_never_accepts_is_retried_then_everything_rolled_back(
    env: Env, revisions: tuple[VerifiedBundle, VerifiedBundle]
) -> None:
    v1, _ = revisions
    broken = release(
        env,
        "3",
        {**V2, "app/zz/broken.rego": "package app.zz\n\nx := nope(1)\n"},
        {"app": {"users": ["bob"]}},
    )
    fake = with_neighbours()
    opa = opa_over(fake)
    opa.load(v1, name=NAME)
    before = fake.state()
    with pytest.raises(LoadError) as err:
        opa.load(broken, name=NAME)
    message = str(err.value)
    assert "app/zz/broken.rego" in message
    assert "undefined function nope" in message
    assert "rolled back" in message
    assert fake.state() == before


def test_a_parse_error_is_not_retried() -> None:
    fake = FakeOpa()
    change = Change(
        name=NAME,
        roots=(("app",),),
        modules={PREFIX + "a.rego": "package app.a\n\nx := 1\n", PREFIX + "b.rego": "x := 1\n"},
        data={},
        record={"name": NAME, "roots": ["app"]},
    )
    with pytest.raises(LoadError, match="rego_parse_error"):
        apply(fake, change, {}, "fake")
    assert fake.attempts.count(("PUT policy", PREFIX + "b.rego")) == 1
    assert fake.state() == ({}, {})


def test_state_that_cannot_be_read_changes_nothing(
    revisions: tuple[VerifiedBundle, VerifiedBundle],
) -> None:
    v1, _ = revisions
    fake = FakeOpa()
    fake.refuse_reads = True
    with pytest.raises(LoadError, match="cannot read its state"):
        opa_over(fake).load(v1, name=NAME)
    assert fake.attempts == []
    fake.refuse_reads, fake.down = False, True
    with pytest.raises(LoadError, match="connection refused"):
        opa_over(fake).load(v1, name=NAME)
    assert fake.attempts == []


def test_roots_overlapping_another_load_are_refused_before_any_write(
    revisions: tuple[VerifiedBundle, VerifiedBundle],
) -> None:
    v1, v2 = revisions
    fake = FakeOpa()
    opa = opa_over(fake)
    opa.load(v1, name=NAME)
    before, attempts = fake.state(), len(fake.attempts)
    with pytest.raises(LoadError, match=f"overlaps root 'app' of {NAME}"):
        opa.load(v2, name="acme/other")
    assert fake.state() == before
    assert len(fake.attempts) == attempts


def _unrelated(n: int) -> FakeOpa:
    fake = with_neighbours()
    for i in range(n):
        fake.policies[f"other/{i}.rego"] = f"package other.m{i}\n\nx := {i}\n"
    return fake


@pytest.mark.parametrize("fresh", [False, True])
def test_a_load_reads_only_what_it_replaces_however_much_else_is_loaded(
    revisions: tuple[VerifiedBundle, VerifiedBundle], fresh: bool
) -> None:
    """What a load reads and writes does not grow with unrelated modules in OPA.

    ``fresh``: a new OPA object each time (no memory of the last load), so
    the recorded policy ids and the roots' data are read from OPA.
    """
    v1, v2 = revisions
    calls = {}
    for n in (0, 500):
        fake = _unrelated(n)
        opa = opa_over(fake)
        opa.load(v1, name=NAME)
        fake.reads.clear()
        start = len(fake.attempts)
        opa = opa_over(fake) if fresh else opa
        opa.load(v2, name=NAME)
        assert "policies" not in fake.reads  # never all of OPA's modules
        calls[n] = (list(fake.reads), fake.attempts[start:])
    assert calls[0] == calls[500]
    reads = calls[500][0]
    if fresh:  # the record, each recorded module by id, the data at the root
        assert reads == ["data/system/policysupply/bundles"] + [
            f"policy/{PREFIX}{m}" for m in sorted(V1)
        ] + ["data/app"]
    else:  # the record; the rest is remembered, except the AST of the one
        # changed module whose package now also holds data (app.cfg.mode)
        assert reads == ["data/system/policysupply/bundles", f"policy/{PREFIX}app/cfg/cfg.rego"]


def test_ids_a_failed_load_wrote_are_found_by_the_next_load(
    revisions: tuple[VerifiedBundle, VerifiedBundle],
) -> None:
    """A load whose rollback cannot finish may leave new policy ids behind.

    Without listing every module, the next load finds them through the load
    record, which lists every id before it is written.
    """
    v1, v2 = revisions
    fake = with_neighbours()
    opa = opa_over(fake)
    opa.load(v1, name=NAME)
    before = fake.state()
    writes = _writes_of_a_clean_load(v1, v2, "refuse")
    new_module = PREFIX + "app/new/new.rego"
    # OPA goes away right after the new module landed: the rollback cannot run.
    probe = with_neighbours()
    opa_over(probe).load(v1, name=NAME)
    start = len(probe.attempts)
    opa_over(probe).load(v2, name=NAME)
    landed = probe.attempts[start:].index(("PUT policy", new_module)) + 1
    assert landed in writes
    fake.faults = {len(fake.attempts) + landed + 1: "down"}
    with pytest.raises(LoadError, match="ROLLBACK INCOMPLETE"):
        opa.load(v2, name=NAME)
    fake.down, fake.faults = False, {}
    assert new_module in fake.policies
    opa_over(fake).load(v1, name=NAME)  # a new process, no memory of the failure
    assert fake.state() == before


def test_data_goes_to_opa_as_the_verified_bytes(env: Env) -> None:
    """Each root's document is sent as the bundle's own text where it is one piece.

    Numbers and strings stay as written (OPA reads them itself): integers
    beyond 64 bits, more digits than a float holds, -0, escapes, a lone
    surrogate (which OPA, like the bundle reader, reads as U+FFFD).
    """
    from policysupply._internal import tarball

    text = (
        b'{"big": 123456789012345678901234567890, "precise": 1.00000000000000000001,'
        b' "negzero": -0, "tiny": 5e-324, "esc": "caf\\u00e9 \\ud800",'
        b' "utf8": "\xc3\xa9\xf0\x9f\x98\x80"}'
    )
    entries = {
        ".manifest": b'{"revision":"r","roots":["app","cfg"]}',
        "app/data.json": text,  # exactly at a root: sent whole
        # a member of a file (the last of a repeated key, as Go's decoder keeps)
        "data.json": b'{"cfg": {"mode" : "strict"}, "cfg": {"mode" : "lax"}}',
        "app/main.rego": b"package app\n\nx := 1\n",
    }
    pushed = push_tarball(env.registry, "acme/app:raw", tarball.write_entries(entries))
    env.signer.sign(env.registry, pushed)
    verified = fetch_verified(env.registry, "acme/app:raw", env.verifier)
    assert verified.bundle.data["app"]["esc"] == "caf\u00e9 \ufffd"
    fake = FakeOpa()
    opa_over(fake).load(verified, name=NAME)
    sent = dict(fake.bodies)
    assert sent["app"] == text
    assert sent["cfg"] == b'{"mode" : "lax"}'


def test_data_without_a_verbatim_form_is_encoded_exactly(env: Env) -> None:
    """Merged files and YAML have no single piece of text: the encoder must be exact."""
    from policysupply._internal import tarball
    from policysupply.loaders._opa_http import encode_json

    entries = {
        ".manifest": b'{"revision":"r","roots":["app"]}',
        "app/data.json": b'{"a": {"big": 18446744073709551617, "neg": -0.0}}',
        "app/a/data.yaml": b"b: [1, 2.5, caf\xc3\xa9]\n",
    }
    layer = tarball.write_entries(entries)
    assert Bundle.from_bytes(layer)._raw_document(("app",)) is None  # merged: encoded
    env.signer.sign(env.registry, push_tarball(env.registry, "acme/app:enc", layer))
    verified = fetch_verified(env.registry, "acme/app:enc", env.verifier)
    fake = FakeOpa()
    opa_over(fake).load(verified, name=NAME)
    assert fake.bodies == []  # encoded by the adapter, not sent verbatim
    expected = {"a": {"big": 18446744073709551617, "neg": -0.0, "b": [1, 2.5, "café"]}}
    assert fake.data["app"] == expected
    body = encode_json({"big": 2**80, "z": -0.0, "s": "é\ud800", "f": 0.1}, what="x")
    assert body == b'{"big":1208925819614629174706176,"z":-0.0,"s":"\\u00e9\\ud800","f":0.1}'
    with pytest.raises(LoadError, match="cannot be sent to OPA as JSON"):
        encode_json({"x": float("inf")}, what="data/x")


# -- the paths a clean load does not take ---------------------------------------------
#
# Each is driven to success, then with every write it makes failing in turn:
# OPA must end with the complete old state or the complete new one, the error
# must be a LoadError, and the next load with nothing failing must go through.


def _each_write_failing_leaves_the_old_state(
    setup: Callable[[], tuple[FakeOpa, OPA]], target: VerifiedBundle
) -> int:
    """Loads ``target`` over ``setup()`` with each of its writes failing in turn.

    ``refuse``, ``drop``: every write tried; ``lose``: every write OPA applied.

    Returns:
        How many writes a load with nothing failing makes.
    """
    fake, opa = setup()
    start = len(fake.attempts)
    opa.load(target, name=NAME)
    writes = len(fake.attempts) - start
    accepted = [n - start for n in fake.accepted if n > start]  # a lost answer needs these
    for fault in ("refuse", "lose", "drop"):
        for n in accepted if fault == "lose" else range(1, writes + 1):
            fake, opa = setup()
            before = fake.state()
            fake.faults = {len(fake.attempts) + n: fault}
            with pytest.raises(LoadError) as err:
                opa.load(target, name=NAME)
            assert "were rolled back; OPA serves what it served before" in str(err.value), (
                fault,
                n,
            )
            assert fake.state() == before, (fault, n)
            fake.faults = {}
            opa.load(target, name=NAME)
            assert opa.loaded()[NAME]["revision"] == target.bundle.manifest.revision
    return writes


@pytest.mark.parametrize(
    "system",
    [{}, {"other": {"keep": 1}}, {"policysupply": {"other": {"keep": 1}}}],
    ids=["no-system", "system", "system-policysupply"],
)
def test_a_first_load_failing_removes_only_the_parents_of_the_records_it_created(
    revisions: tuple[VerifiedBundle, VerifiedBundle], system: dict[str, object]
) -> None:
    """``data.system`` or ``data.system.policysupply`` may hold someone else's data already."""
    v1, _ = revisions

    def setup() -> tuple[FakeOpa, OPA]:
        fake = with_neighbours()
        if system:
            fake.data["system"] = copy.deepcopy(system)
        return fake, opa_over(fake)

    # The old state includes what ``data.system`` held: a rollback deletes only
    # the highest parent the load created, and leaves no empty object behind.
    _each_write_failing_leaves_the_old_state(setup, v1)


@pytest.mark.parametrize("refused", ["data/system", "data/system/policysupply"])
def test_a_first_load_that_cannot_read_the_records_parents_changes_nothing(
    revisions: tuple[VerifiedBundle, VerifiedBundle], refused: str
) -> None:
    v1, _ = revisions
    fake = with_neighbours()
    fake.data["system"] = {"other": 1}  # so that data/system/policysupply is read too
    before = fake.state()
    fake.refused_reads = {refused}
    with pytest.raises(LoadError, match=r"cannot read its state: .*administrative policy"):
        opa_over(fake).load(v1, name=NAME)
    assert fake.attempts == []
    assert fake.state() == before
    fake.refused_reads = set()
    opa_over(fake).load(v1, name=NAME)
    assert opa_over(fake).loaded()[NAME]["revision"] == "1"


@pytest.mark.parametrize("refused", [f"policy/{PREFIX}app/main/main.rego", "data/app"])
def test_a_snapshot_that_cannot_be_read_changes_nothing(
    revisions: tuple[VerifiedBundle, VerifiedBundle], refused: str
) -> None:
    """A new OPA object reads each recorded module and each root; one refused stops the load."""
    v1, v2 = revisions
    fake = with_neighbours()
    opa_over(fake).load(v1, name=NAME)
    before, attempts = fake.state(), len(fake.attempts)
    fake.refused_reads = {refused}
    with pytest.raises(
        LoadError, match=r"cannot read the data it holds now \(.*\); nothing changed"
    ):
        opa_over(fake).load(v2, name=NAME)
    assert len(fake.attempts) == attempts
    assert fake.state() == before
    fake.refused_reads = set()
    opa_over(fake).load(v2, name=NAME)
    assert opa_over(fake).loaded()[NAME]["revision"] == "2"


def test_a_record_naming_ids_outside_its_prefix_never_touches_them(
    revisions: tuple[VerifiedBundle, VerifiedBundle],
) -> None:
    """A load record lists only its own ids: anything else in it is not read, kept or deleted."""
    v1, v2 = revisions
    fake = with_neighbours()
    other = "policysupply/acme/other/~/x.rego"
    fake.policies[other] = "package other.x\n\ny := 1\n"
    opa_over(fake).load(v1, name=NAME)
    record = fake.data["system"]["policysupply"]["bundles"]["acme~app"]
    record["modules"] += ["theirs.rego", other]  # someone edited the record
    fake.reads.clear()
    result = opa_over(fake).load(v2, name=NAME)
    assert "policy/theirs.rego" not in fake.reads
    assert f"policy/{other}" not in fake.reads
    policies, _ = fake.state()
    assert set(policies) == {"theirs.rego", other, *result.modules}
    assert result.removed == (PREFIX + "app/old/old.rego",)
    assert opa_over(fake).loaded()[NAME]["modules"] == sorted(result.modules)


def _collide(v1: VerifiedBundle, *, module: str | None = None) -> tuple[FakeOpa, OPA]:
    """v1 loaded: app.cfg holds a rule ``mode`` where v2 puts data (app.cfg.mode)."""
    fake = with_neighbours()
    opa = opa_over(fake)
    opa.load(v1, name=NAME)
    if module is not None:
        fake.policies[PREFIX + "app/cfg/cfg.rego"] = module
    return fake, opa


def test_an_old_module_this_side_cannot_parse_is_judged_by_opas_ast(
    revisions: tuple[VerifiedBundle, VerifiedBundle], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A module whose package this side cannot read (OPA's syntax may grow).

    Such a module (written under this load's id by hand) is not skipped: its
    AST, read from OPA, shows its rule sits where v2 puts data, so it is taken
    out before the data write and the data write is not refused.
    """
    from policysupply._internal.engines import rego_source

    v1, v2 = revisions
    cfg = 'package app[`cfg`]\n\nmode := "strict"\n'
    real = rego_source.package_path

    def unreadable(source: str, *, entry: str) -> tuple[str, ...]:
        if source == cfg:  # fault injection: this side cannot parse it
            raise BundleError("malformed package path", entry=entry)
        return real(source, entry=entry)

    monkeypatch.setattr(rego_source, "package_path", unreadable)

    def setup() -> tuple[FakeOpa, OPA]:
        fake, _ = _collide(v1, module=cfg)
        return fake, opa_over(fake)  # no memory: the module is read from OPA

    fake, opa = setup()
    start = len(fake.attempts)
    opa.load(v2, name=NAME)
    tried = fake.attempts[start:]
    assert tried.index(("DELETE policy", PREFIX + "app/cfg/cfg.rego")) < tried.index(
        ("PUT data", "app")
    )
    assert tried.count(("PUT data", "app")) == 1
    assert fake.data["app"] == {"users": ["bob"], "cfg": {"mode": "lenient"}}
    _each_write_failing_leaves_the_old_state(setup, v2)
    fake, opa = setup()
    before = fake.state()
    fake.faults = {len(fake.attempts) + 3: "refuse"}
    with pytest.raises(LoadError):
        opa.load(v2, name=NAME)
    assert fake.policies[PREFIX + "app/cfg/cfg.rego"] == cfg  # put back byte for byte
    assert fake.state() == before


def test_a_refused_ast_read_falls_back_to_clearing_the_old_modules(
    revisions: tuple[VerifiedBundle, VerifiedBundle],
) -> None:
    """The AST that shows a collision cannot be read: the data write is refused as a
    conflict, every old module of the load is taken out, and the data write retried."""
    v1, v2 = revisions
    cfg = PREFIX + "app/cfg/cfg.rego"

    def setup() -> tuple[FakeOpa, OPA]:
        fake, opa = _collide(v1)  # the same object: sources remembered, ASTs not
        fake.refused_reads = {f"policy/{cfg}"}
        return fake, opa

    fake, opa = setup()
    start = len(fake.attempts)
    result = opa.load(v2, name=NAME)
    tried = fake.attempts[start:]
    assert f"policy/{cfg}" not in fake.reads
    assert tried.count(("PUT data", "app")) == 2  # refused (a conflict), then after the clear
    first, second = (i for i, t in enumerate(tried) if t == ("PUT data", "app"))
    cleared = {t for op, t in tried[first:second] if op == "DELETE policy"}
    assert cleared == {
        PREFIX + m for m in ("app/lib/lib.rego", "app/main/main.rego", "app/cfg/cfg.rego")
    }
    policies, data = fake.state()
    assert set(policies) == {"theirs.rego", *result.modules}
    assert all(policies[PREFIX + m] == src for m, src in V2.items())
    assert data["app"] == {"users": ["bob"], "cfg": {"mode": "lenient"}}
    _each_write_failing_leaves_the_old_state(setup, v2)


def test_a_clear_that_gets_stuck_rolls_everything_back(
    revisions: tuple[VerifiedBundle, VerifiedBundle],
) -> None:
    """Another module calls a function of this load: the old module cannot be taken out."""
    v1, v2 = revisions
    lib = PREFIX + "app/lib/lib.rego"
    fake, opa = _collide(v1)
    fake.refused_reads = {f"policy/{PREFIX}app/cfg/cfg.rego"}  # forces the clear (as above)
    fake.policies["theirs.rego"] = "package theirs\n\nimport data.app.lib\n\nuse := lib.f(2)\n"
    before = fake.state()
    start = len(fake.attempts)
    with pytest.raises(LoadError) as err:
        opa.load(v2, name=NAME)
    message = str(err.value)
    assert "OPA refused it: invalid_parameter" in message
    assert "undefined function lib.f" in message
    assert "were rolled back; OPA serves what it served before" in message
    assert fake.state() == before
    tried = fake.attempts[start:]
    assert tried.count(("DELETE policy", lib)) >= 2  # retried in rounds, never accepted
    assert ("PUT policy", lib) not in tried[: tried.index(("DELETE policy", lib))]
    assert opa.loaded()[NAME]["revision"] == "1"


def test_unloading_a_name_that_is_not_loaded_writes_nothing(
    revisions: tuple[VerifiedBundle, VerifiedBundle],
) -> None:
    v1, _ = revisions
    fake = with_neighbours()
    opa = opa_over(fake)
    opa.load(v1, name=NAME)
    before, attempts = fake.state(), len(fake.attempts)
    opa.unload("acme/never")
    assert len(fake.attempts) == attempts
    assert fake.state() == before


def test_a_record_listing_something_other_than_an_id_is_ignored_like_a_foreign_id(
    revisions: tuple[VerifiedBundle, VerifiedBundle],
) -> None:
    """Entries of the record's lists that are not strings are not this load's, as
    foreign ids are not: they are skipped, and the load goes through."""
    v1, v2 = revisions
    fake = with_neighbours()
    opa_over(fake).load(v1, name=NAME)
    record = fake.data["system"]["policysupply"]["bundles"]["acme~app"]
    record["modules"] += [42, None]
    record["roots"] += [7]
    result = opa_over(fake).load(v2, name=NAME)  # v2 adds a module: the record is widened
    policies, data = fake.state()
    assert set(policies) == {"theirs.rego", *result.modules}
    assert data["app"] == {"users": ["bob"], "cfg": {"mode": "lenient"}}
    assert opa_over(fake).loaded()[NAME]["modules"] == sorted(result.modules)


@pytest.mark.parametrize("key", ["modules", "roots"])
def test_a_record_whose_lists_are_not_lists_is_refused_before_any_write(
    revisions: tuple[VerifiedBundle, VerifiedBundle], key: str
) -> None:
    """Then what the name owns is unknown: a typed error, and nothing changes."""
    v1, v2 = revisions
    fake = with_neighbours()
    opa_over(fake).load(v1, name=NAME)
    fake.data["system"]["policysupply"]["bundles"]["acme~app"][key] = 5
    before, attempts = fake.state(), len(fake.attempts)
    with pytest.raises(LoadError, match=f"load record of {NAME} .*{key}.* nothing changed"):
        opa_over(fake).load(v2, name=NAME)
    assert fake.state() == before
    assert len(fake.attempts) == attempts


def test_a_stuck_clear_names_the_module_it_could_not_take_out(
    revisions: tuple[VerifiedBundle, VerifiedBundle],
) -> None:
    """As a module OPA never accepts is named (see above), so is one it never lets go."""
    v1, v2 = revisions
    fake, opa = _collide(v1)
    fake.refused_reads = {f"policy/{PREFIX}app/cfg/cfg.rego"}
    fake.policies["theirs.rego"] = "package theirs\n\nimport data.app.lib\n\nuse := lib.f(2)\n"
    with pytest.raises(LoadError, match=f"removing {PREFIX}app/lib/lib.rego: theirs.rego: "):
        opa.load(v2, name=NAME)
