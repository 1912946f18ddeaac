"""The REST loader against FakeOpa: every rollback path, without a real OPA.

tests/interop/test_loaders_opa.py runs the same kinds of failure against a
real OPA behind a fault-injecting proxy; here each write of a load fails in
turn in every way the fake knows, quickly and deterministically.
"""

from __future__ import annotations

import pytest

from policysupply import Bundle, LoadError, Manifest
from policysupply.loaders import OPA, fetch_verified, publish
from policysupply.loaders._load import Change, apply
from policysupply.verifier import VerifiedBundle
from tests.unit.loaders._env import Env
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
