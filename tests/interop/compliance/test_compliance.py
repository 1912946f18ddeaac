"""OPA's compliance suite (v1 and v0) through the engine seam, for each engine.

The OPA engine must agree on every comparable case; the embedded engine must
never answer differently and never crash (it agrees, or refuses with a clear
``BundleError``). The summaries, with the embedded agree rate, are printed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import peer
from tests.interop.compliance import runner

pytestmark = pytest.mark.interop

WORKERS = max(2, os.cpu_count() or 2)


def _cases(suite: str) -> list[runner.Case]:
    where = runner.cases_dir(suite)
    if not where.is_dir():
        pytest.fail(f"OPA's compliance suite is missing at {where}: run scripts/install-peers.sh")
    cases = runner.load_cases(suite)
    assert len(cases) > 1000, len(cases)
    return cases


def _report(report: dict[str, object], tmp_path: Path) -> str:
    summary = {k: v for k, v in report.items() if k != "non_agreeing"}
    print(json.dumps(summary))
    (tmp_path / f"{report['engine']}-{report['suite']}.json").write_text(json.dumps(report))
    bad = report["non_agreeing"]
    assert isinstance(bad, list)
    return "\n".join(f"{r['verdict']}: {r['note']}: {r['detail']}" for r in bad[:40])


@pytest.mark.timeout(1800)  # ~2 min per suite on 2 idle cores; more under load
@pytest.mark.parametrize("suite", ["v1", "v0"])
def test_opa_engine_agrees_with_opa_on_every_comparable_compliance_case(
    suite: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POLICYSUPPLY_OPA", str(peer("opa")))
    report = runner.run_suite("opa", suite, workers=WORKERS, cases=_cases(suite))
    listing = _report(report, tmp_path)
    assert report["comparable"] > 1000
    assert report["outcomes"] == {
        "agree": report["comparable"],
        "refused": 0,
        "different": 0,
        "crash": 0,
    }, listing


@pytest.mark.parametrize("suite", ["v1", "v0"])
def test_embedded_engine_never_differs_from_opa_and_never_crashes(
    suite: str, tmp_path: Path
) -> None:
    report = runner.run_suite("embedded", suite, workers=2, cases=_cases(suite))
    listing = _report(report, tmp_path)
    outcomes = report["outcomes"]
    assert isinstance(outcomes, dict)
    assert outcomes["different"] == 0, listing
    assert outcomes["crash"] == 0, listing
    if suite == "v1":
        # Most v1 cases are answered, not refused (v0 is refused as a whole).
        assert outcomes["agree"] > outcomes["refused"], report


@pytest.mark.timeout(1800)
def test_opa_server_answers_exactly_as_opa_eval_on_compliance_queries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The server answers `data` references (and, without strict builtin
    # errors, any one-expression query); its result sets must be opa eval's,
    # expressions' text and location included. Every 12th comparable v1 case,
    # in each case's strictness.
    import json as _json

    from policysupply._internal.engines.opa import OpaEngine
    from policysupply.errors import BundleError

    monkeypatch.setenv("POLICYSUPPLY_OPA", str(peer("opa")))
    engines = {s: OpaEngine(strict_builtin_errors=s) for s in (True, False)}
    cases = [c for c in _cases("v1") if c.not_comparable is None][::12]
    compared = 0
    for case in cases:
        modules = {f"test-{i}.rego": m for i, m in enumerate(case.modules)}
        versions = dict.fromkeys(modules, 1)
        p = engines[case.strict].prepare(modules, case.data, rego_versions=versions)
        try:
            inp = None if case.input is None else _json.dumps(case.input).encode()
            try:
                via_eval: object = p._via_eval(case.query, inp)
            except BundleError as exc:
                via_eval = ("error", exc.reason)
            try:
                got: object = p._via_server(case.query, inp)
            except BundleError as exc:
                got = ("error", exc.reason)
            if got is None:
                continue  # not a query the server answers
            compared += 1
            assert got == via_eval, case.note
        finally:
            p.close()
    print(f"server == opa eval on {compared} of {len(cases)} sampled cases")
    assert compared > len(cases) // 2
