"""Engine selection: names, POLICYSUPPLY_ENGINE, POLICYSUPPLY_OPA, and refusals."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from policysupply import Bundle
from policysupply._internal.engines import select_engine
from policysupply._internal.engines.base import (
    CheckRequest,
    EngineUnavailableError,
    RegoDiagnostic,
    UnsupportedByEngineError,
)
from policysupply.errors import BundleError
from tests.conftest import peer

V1 = Bundle(modules={"p.rego": "package p\n\nallow if input.x == 1\n"})


def test_embedded_by_name() -> None:
    assert select_engine("embedded").name == "embedded"


def test_opa_by_name_uses_the_binary_given(tmp_path: Path) -> None:
    opa = peer("opa")
    assert select_engine("opa", opa=opa).name == "opa"


def test_auto_picks_opa_when_its_binary_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLICYSUPPLY_OPA", str(peer("opa")))
    assert select_engine("auto").name == "opa"
    assert select_engine(None).name == "opa"


def test_auto_falls_back_to_embedded_without_opa(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POLICYSUPPLY_OPA", raising=False)
    monkeypatch.delenv("POLICYSUPPLY_ENGINE", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    assert select_engine("auto").name == "embedded"


def test_opa_asked_for_but_missing_is_a_typed_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POLICYSUPPLY_OPA", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(EngineUnavailableError, match="opa"):
        select_engine("opa")
    with pytest.raises(BundleError):  # EngineUnavailableError is a BundleError
        V1.evaluate("data.p.allow", {"x": 1}, engine="opa")


def test_a_named_opa_binary_that_is_missing_is_never_replaced_silently(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("POLICYSUPPLY_OPA", str(tmp_path / "no-such-opa"))
    with pytest.raises(EngineUnavailableError):
        select_engine("auto")


def test_environment_chooses_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLICYSUPPLY_ENGINE", "embedded")
    assert select_engine(None).name == "embedded"


def test_unknown_engine_name_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown Rego engine"):
        select_engine("wasm")


@pytest.mark.parametrize("engine", ["opa", "embedded"])
def test_each_engine_answers_through_the_bundle(engine: str) -> None:
    assert V1.evaluate("data.p.allow", {"x": 1}, engine=engine) is True
    assert V1.evaluate("data.p.allow", {"x": 2}, engine=engine) is None
    assert V1.query("data.p.allow", {"x": 1}, engine=engine)[0]["expressions"][0]["value"]


def test_embedded_refuses_a_builtin_it_gets_wrong_and_opa_answers() -> None:
    # net.cidr_contains gives nothing in rego-cpp where OPA gives true: an
    # allow-list by network would silently fail.
    b = Bundle(
        modules={
            "n.rego": 'package n\n\nallow if net.cidr_contains("10.0.0.0/8", input.net)\n',
        }
    )
    b.check(engine="embedded")  # a bundle for OPA may use it
    with pytest.raises(UnsupportedByEngineError, match="OPA engine"):
        b.evaluate("data.n.allow", {"net": "10.1.0.0/16"}, engine="embedded")
    assert b.evaluate("data.n.allow", {"net": "10.1.0.0/16"}, engine="opa") is True


def test_runtime_errors_are_errors_with_both_engines() -> None:
    # A deny rule whose body errors must not read as "no deny" (fail-open).
    b = Bundle(modules={"d.rego": "package d\n\ndeny contains m if { m := 1 / input.zero }\n"})
    for engine in ("opa", "embedded"):
        with pytest.raises(BundleError):
            b.evaluate("data.d.deny", {"zero": 0}, engine=engine)


def test_v0_bundles_are_answered_by_opa_and_refused_by_embedded() -> None:
    from policysupply.bundle import Manifest

    b = Bundle(
        manifest=Manifest(rego_version=0),
        modules={"v0.rego": 'package v0\n\ndeny[msg] { input.bad; msg := "bad" }\n'},
    )
    assert b.evaluate("data.v0.deny", {"bad": True}, engine="opa") == ["bad"]
    with pytest.raises(UnsupportedByEngineError, match="v0"):
        b.evaluate("data.v0.deny", {"bad": True}, engine="embedded")


class _RecordingEngine:
    """An engine object that answers check with what it is given."""

    def __init__(self, diags: list[RegoDiagnostic]) -> None:
        self.diags = diags
        self.calls: list[dict[str, object]] = []

    @property
    def name(self) -> str:
        return "recording"

    def check(self, request: CheckRequest) -> list[RegoDiagnostic]:
        self.calls.append(
            {
                "modules": dict(request.modules),
                "data": dict(request.data),
                "versions": dict(request.rego_versions),
                "strict": request.strict,
                "refuse": request.refuse,
            }
        )
        return self.diags

    def prepare(self, modules: Mapping[str, str], data: Mapping[str, Any], **_: Any) -> Any:
        raise AssertionError("check must not prepare")


@pytest.mark.parametrize("strict", [False, True])
def test_bundle_check_asks_the_engine_without_refusals(strict: bool) -> None:
    engine = _RecordingEngine([])
    V1.check(engine=engine, strict=strict)
    assert engine.calls == [
        {
            "modules": dict(V1.modules),
            "data": {},
            "versions": {"p.rego": 1},
            "strict": strict,
            "refuse": False,
        }
    ]


def test_bundle_check_raises_the_first_diagnostic_and_counts_the_rest() -> None:
    engine = _RecordingEngine(
        [
            RegoDiagnostic(entry="p.rego", line=3, message="first"),
            RegoDiagnostic(entry="q.rego", line=None, message="second"),
        ]
    )
    with pytest.raises(BundleError, match=r"first \(1 more problem\(s\):\n  q.rego: second\)") as e:
        V1.check(engine=engine)
    assert (e.value.entry, e.value.line) == ("p.rego", 3)


def test_strict_check_needs_the_opa_engine() -> None:
    with pytest.raises(UnsupportedByEngineError, match="need the OPA engine"):
        V1.check(engine="embedded", strict=True)


def test_strict_check_is_opt_in_with_opa() -> None:
    unused = Bundle(modules={"u.rego": "package u\n\nimport data.x\n\nallow := true\n"})
    unused.check(engine=select_engine("opa", opa=peer("opa")))
    with pytest.raises(BundleError, match=r"import data\.x unused"):
        unused.check(engine=select_engine("opa", opa=peer("opa")), strict=True)
    unused.check(engine="embedded")


def test_embedded_check_refuses_only_when_asked() -> None:
    engine = select_engine("embedded")
    modules = {"n.rego": 'package n\n\nallow if net.cidr_contains("10.0.0.0/8", input.net)\n'}
    versions = {"n.rego": 1}
    assert (
        engine.check(
            CheckRequest(
                modules=modules, data={}, rego_versions=versions, strict=False, refuse=False
            )
        )
        == []
    )
    with pytest.raises(UnsupportedByEngineError, match="OPA engine"):
        engine.check(
            CheckRequest(
                modules=modules, data={}, rego_versions=versions, strict=False, refuse=True
            )
        )


def test_an_unknown_engine_in_the_environment_is_a_typed_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from policysupply.errors import EngineUnavailableError

    monkeypatch.setenv("POLICYSUPPLY_ENGINE", "wasm")
    with pytest.raises(EngineUnavailableError, match="POLICYSUPPLY_ENGINE='wasm'"):
        select_engine(None)
