"""The embedded engine: isolation, strict errors, refusals, OPA's result shape."""

from __future__ import annotations

import gc
import os
import signal
import time
from pathlib import Path

import pytest

from policysupply._internal.engines.base import (
    CheckRequest,
    Prepared,
    RegoDiagnostic,
    RegoEngine,
    UnsupportedByEngineError,
)
from policysupply._internal.engines.embedded import (
    EmbeddedEngine,
    _sorted_json,
    unsupported_builtins,
)
from policysupply.errors import BundleError

FIXTURES = Path(__file__).resolve().parents[3] / "fixtures"
CRASH = FIXTURES / "embedded_crash" / "iteration_then_index.rego"
USE_OPA = "use the OPA engine (engine='opa')"


@pytest.fixture(scope="module")
def engine() -> EmbeddedEngine:
    return EmbeddedEngine()


def _prepare(engine: EmbeddedEngine, modules: dict[str, str], data: dict | None = None):
    return engine.prepare(modules, data or {}, rego_versions=dict.fromkeys(modules, 1))


def _check(engine: EmbeddedEngine, modules: dict[str, str]) -> list[RegoDiagnostic]:
    """``engine.check`` of v1 ``modules`` before it evaluates them (refusing, not strict)."""
    versions = dict.fromkeys(modules, 1)
    return engine.check(
        CheckRequest(modules=modules, data={}, rego_versions=versions, strict=False, refuse=True)
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_embedded_engine_implements_the_seam(engine: EmbeddedEngine) -> None:
    assert isinstance(engine, RegoEngine)
    assert engine.name == "embedded"
    p = _prepare(engine, {"a.rego": "package a\n\nx := 1\n"})
    try:
        assert isinstance(p, Prepared)
        assert p.engine == "embedded"
    finally:
        p.close()


# -- isolation ----------------------------------------------------------------


def test_policy_that_segfaults_rego_cpp_is_a_bundle_error_not_a_dead_host(
    engine: EmbeddedEngine,
) -> None:
    # This test process survives: the SIGSEGV happens in the worker.
    p = _prepare(engine, {"crash.rego": CRASH.read_text()})
    try:
        first_pid = p.worker_pid
        with pytest.raises(BundleError) as err:
            p.query("data.crash.iteration.allow", {"names": ["a"], "allowed": {"a": True}})
        message = str(err.value)
        assert "crashed" in message
        assert "SIGSEGV" in message or "SIGABRT" in message
        assert "crash.rego" in message  # names the module the query reached
        assert USE_OPA in message
        assert first_pid is not None
        assert not _alive(first_pid)
        # rego-cpp compiles every rule for any query: the same error again,
        # from a fresh worker with the modules reloaded.
        with pytest.raises(BundleError, match="crashed"):
            p.query("1 + 1")
    finally:
        p.close()
    # The host goes on evaluating other policies.
    ok = _prepare(engine, {"ok.rego": "package ok\n\nx := 2\n"})
    try:
        assert ok.query("data.ok.x") == [{"expressions": [{"value": 2, "text": "data.ok.x"}]}]
    finally:
        ok.close()


def test_worker_is_reused_across_queries_and_killed_with_its_owner(
    engine: EmbeddedEngine,
) -> None:
    p = _prepare(engine, {"a.rego": "package a\n\nx := input.n * 2\n"})
    pid = p.worker_pid
    assert pid is not None
    for n in range(5):
        assert p.query("data.a.x", {"n": n})[0]["expressions"][0]["value"] == n * 2
    assert p.worker_pid == pid
    del p
    gc.collect()
    # Without close(): garbage collection kills the worker.
    for _ in range(100):
        if not _alive(pid):
            break
        time.sleep(0.05)
    assert not _alive(pid)


def test_worker_killed_from_outside_is_an_error_then_recovers(engine: EmbeddedEngine) -> None:
    p = _prepare(engine, {"a.rego": "package a\n\nx := 1\n"})
    try:
        pid = p.worker_pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        # Whether the next query meets the dying worker (a "crashed" error) or
        # finds it already gone (a fresh worker, modules reloaded) depends on
        # scheduling; either way no wrong answer, and the engine recovers.
        try:
            first = p.query("data.a.x")
        except BundleError as exc:
            assert "crashed" in str(exc)  # noqa: PT017
        else:
            assert first[0]["expressions"][0]["value"] == 1
        assert p.query("data.a.x")[0]["expressions"][0]["value"] == 1
    finally:
        p.close()


def test_closed_preparation_refuses_queries(engine: EmbeddedEngine) -> None:
    p = _prepare(engine, {"a.rego": "package a\n\nx := 1\n"})
    p.close()
    p.close()
    with pytest.raises(BundleError, match="closed"):
        p.query("data.a.x")


# -- runtime errors are errors, never undefined ----------------------------------


@pytest.mark.parametrize(
    ("rule", "code"),
    [
        ("x := 1 / input.zero", "divide by zero"),
        ("x := input.s + 1", "eval_"),
        # (to_number("abc") was this case; to_number is refused now.)
        ('x := time.parse_rfc3339_ns("nope")', "eval_builtin_error"),
        ("x := input.a\nx := input.b", "eval_conflict_error"),
    ],
)
def test_runtime_error_is_a_bundle_error_not_undefined(
    engine: EmbeddedEngine, rule: str, code: str
) -> None:
    p = _prepare(engine, {"e.rego": f"package e\n\n{rule}\n"})
    try:
        with pytest.raises(BundleError, match=code):
            p.query("data.e.x", {"zero": 0, "s": "str", "a": 1, "b": 2})
    finally:
        p.close()


def test_deny_rule_with_runtime_error_fails_closed(engine: EmbeddedEngine) -> None:
    # Before: the deny set came back empty (undefined), i.e. an allow.
    src = (
        "package g\n\ndeny contains msg if {\n\tinput.replicas / input.zones > 3\n"
        '\tmsg := "too many"\n}\n\nallow if count(deny) == 0\n'
    )
    p = _prepare(engine, {"g.rego": src})
    try:
        with pytest.raises(BundleError):
            p.query("data.g.allow", {"replicas": 10, "zones": 0})
    finally:
        p.close()


# -- refusals: "use the OPA engine" ------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        'net.cidr_contains("10.0.0.0/8", "10.1.0.0/16")',
        'net.cidr_intersects("10.0.0.0/8", "10.1.0.0/16")',
        'net.cidr_merge(["10.0.0.0/8"])',
        'net.cidr_expand("10.0.0.0/30")',
        'json.match_schema({}, {"type": "object"})',
        'json.verify_schema({"type": "object"})',
        'graphql.parse_schema("type Q { a: Int }")',
        "rego.metadata.chain()",
        'strings.render_template("a", {})',
        "providers.aws.sign_req({}, {}, 0)",
    ],
)
def test_builtin_rego_cpp_gets_wrong_is_refused(engine: EmbeddedEngine, call: str) -> None:
    modules = {"b.rego": f"package b\n\nx := {call}\n"}
    with pytest.raises(UnsupportedByEngineError) as err:
        _check(engine, modules)
    assert USE_OPA in str(err.value)
    assert err.value.entry == "b.rego"
    assert err.value.line == 3
    with pytest.raises(UnsupportedByEngineError):
        _prepare(engine, modules)


def test_unsupported_list_comes_from_the_probe() -> None:
    table = unsupported_builtins()
    for name in ("net.cidr_contains", "json.match_schema", "graphql.parse", "semver.compare"):
        assert name in table
    # Builtins rego-cpp answers like OPA are not refused.
    for name in ("count", "concat", "startswith", "regex.match", "object.get"):
        assert name not in table


@pytest.mark.parametrize(
    "body",
    [
        'x := to_number("1.5Gi")',  # OPA: eval_builtin_error; rego-cpp: 1.5
        "x := format_int(-7, 16)",  # OPA: "-7"; rego-cpp: "fffffffffffffff9"
        "x := 2 == min([])",  # OPA: undefined; rego-cpp: false
        "x := max([]) != 1",
        "x := ceil(-0.5)",  # OPA: 1; rego-cpp: 0
        "x := floor(-0.5)",  # OPA: 0; rego-cpp: -1
        "x := round(100000000000000000000.0)",  # rego-cpp wraps past 2^63
        'x := indexof_n("ab", "")',  # OPA: eval_builtin_error
        'x := base64.decode("aGVsbG8")',  # OPA: illegal base64 data (no padding)
        "x := abs(-0.123456789)",  # rego-cpp: 0.123457 (six decimals)
        # Its output holds quotes, which rego-cpp keeps escaped: count is 6, not 4.
        'x := count(json.marshal("ab"))',
        'x := count(json.marshal_with_options("ab", {"pretty": true}))',
    ],
)
def test_builtins_difffuzz_found_different_are_refused(engine: EmbeddedEngine, body: str) -> None:
    # Found by scripts/difffuzz_rego.py; cases in tests/fixtures/embedded_difffuzz,
    # folded into embedded_unsupported.json by scripts/probe_embedded.py --derive.
    with pytest.raises(UnsupportedByEngineError, match="builtin") as err:
        _prepare(engine, {"b.rego": f"package b\n\n{body}\n"})
    assert USE_OPA in str(err.value)


@pytest.mark.parametrize(
    ("body", "what"),
    [
        ("x := [v | some i, v in input.xs]", "some k, v in"),
        ('x if { "a", "a" in {"a"} }', "two-value membership"),
        ("x := time.now_ns() with time.now_ns as opa.runtime", "with"),
        ('x := count("a\\"b")', "string literal"),
        ('x := upper("é")', "string literal"),
        ('x := sprintf("%d items", [3])', "sprintf"),
        # More or fewer arguments than verbs: OPA writes %!(EXTRA ...) / %!v(MISSING).
        ('x := sprintf("%v", ["a", 3])', "sprintf with 1 verb"),
        ('x := sprintf("%s and %s", ["a"])', "sprintf with 2 verbs"),
        # rego-cpp keeps -0 apart from 0: `0 in {-0}` is false, count({-0, 0}) 2.
        ("x := 0 in {-0}", "-0"),
        ("x := count({-0.0, 0})", "-0.0"),
        ("x := 1e30 + 1", "number"),
    ],
)
def test_construct_rego_cpp_answers_differently_is_refused(
    engine: EmbeddedEngine, body: str, what: str
) -> None:
    modules = {"c.rego": f"package c\n\n{body}\n"}
    with pytest.raises(UnsupportedByEngineError, match=what) as err:
        _prepare(engine, modules)
    assert USE_OPA in str(err.value)


def test_sprintf_with_as_many_arguments_as_verbs_is_evaluated(engine: EmbeddedEngine) -> None:
    src = (
        "package s\n\n"
        'x := [sprintf("%s-%v 100%%", ["a", 1]), sprintf("none", []), '
        'sprintf("%v", [[y | some y in [1, 2]]])]\n'
    )
    p = _prepare(engine, {"s.rego": src})
    try:
        assert p.query("data.s.x")[0]["expressions"][0]["value"] == ["a-1 100%", "none", "[1, 2]"]
    finally:
        p.close()


def test_subtracting_zero_is_evaluated(engine: EmbeddedEngine) -> None:
    p = _prepare(engine, {"z.rego": "package z\n\nx := [input.a-0, 1 - 0, (2)-0, [3][0]-0]\n"})
    try:
        assert p.query("data.z.x", {"a": 5})[0]["expressions"][0]["value"] == [5, 1, 2, 3]
    finally:
        p.close()


def test_regex_pattern_with_backslashes_is_evaluated(engine: EmbeddedEngine) -> None:
    src = 'package r\n\nok := [regex.match(`^\\d+$`, input.a), regex.match("a\\\\.b", input.b)]\n'
    p = _prepare(engine, {"r.rego": src})
    try:
        assert p.query("data.r.ok", {"a": "123", "b": "axb"})[0]["expressions"][0]["value"] == [
            True,
            False,
        ]
    finally:
        p.close()


@pytest.mark.parametrize("value", ['say "hi"', "back\\slash", "line\nbreak", "grüße"])
def test_input_string_rego_cpp_mishandles_is_refused(engine: EmbeddedEngine, value: str) -> None:
    p = _prepare(engine, {"s.rego": "package s\n\nn := count(input.s)\n"})
    try:
        with pytest.raises(UnsupportedByEngineError, match="use the OPA engine"):
            p.query("data.s.n", {"s": value})
        with pytest.raises(UnsupportedByEngineError):
            p.query("data.s.n", {"s": "ok", value: 1})  # keys too
    finally:
        p.close()
    with pytest.raises(UnsupportedByEngineError):
        _prepare(engine, {"s.rego": "package s\n\nn := 1\n"}, {"d": [value]})


def test_rego_v0_is_refused(engine: EmbeddedEngine) -> None:
    with pytest.raises(UnsupportedByEngineError, match="Rego v0"):
        engine.prepare(
            {"v0.rego": "package v0\n\ndeny[msg] { msg := 1 }\n"}, {}, rego_versions={"v0.rego": 0}
        )


# -- results in OPA's shape --------------------------------------------------------


def test_results_have_opa_shape(engine: EmbeddedEngine) -> None:
    p = _prepare(
        engine,
        {"a.rego": "package a\n\nflag := false\n\nitems contains x if some x in [1, 2]\n"},
        {"d": {"k": "v"}},
    )
    try:
        # A lone expression reports its value, even false (as opa eval does).
        assert p.query("data.a.flag") == [
            {"expressions": [{"value": False, "text": "data.a.flag"}]}
        ]
        assert p.query("1 == 2") == [{"expressions": [{"value": False, "text": "1 == 2"}]}]
        assert p.query("data.d.k") == [{"expressions": [{"value": "v", "text": "data.d.k"}]}]
        assert p.query("data.a.items") == [
            {"expressions": [{"value": [1, 2], "text": "data.a.items"}]}
        ]
        rows = p.query("x := data.a.items[_]")
        assert sorted(r["bindings"]["x"] for r in rows) == [1, 2]
        assert rows[0]["expressions"] == [{"value": True, "text": "x := data.a.items[_]"}]
        assert p.query("data.a.missing") == []
        assert p.query("x = 2; x > 3") == []
    finally:
        p.close()


def test_malformed_rule_is_a_bundle_error_at_prepare_with_opas_line(
    engine: EmbeddedEngine,
) -> None:
    # The rules Gate.decide once crashed on.
    src = 'package policysupply.gate\n\ndecision := {"allow": true} if {\n\tinput.x ==\n}\n'
    with pytest.raises(BundleError) as err:
        _prepare(engine, {"gate.rego": src})
    assert err.value.entry == "gate.rego"
    assert err.value.line == 5  # `opa check` reports the `}`


def test_check_reports_semantic_errors_as_opa(engine: EmbeddedEngine) -> None:
    modules = {
        "m.rego": (
            "package m\n\nallow if {\n\tx := input.a\n\tx := input.b\n}\n\n"
            "deny contains msg if input.bad\n\nn := count(42)\n"
        )
    }
    diags = _check(engine, modules)
    assert [(d.line, d.message) for d in diags] == [
        (5, "var x assigned above"),
        (8, "var msg is unsafe"),
        (10, "count: invalid argument(s)"),
    ]


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("r if {\n\tsome y in array.slice({x | x := 1}, 0, 1)\n}", (4, "array.slice")),
        ("r := x if {\n\tx := array.reverse(\n\t\t{1})\n}", (4, "array.reverse")),
        ('r := upper({"a": 1})', (3, "upper")),
        ("r := lower(set())", (3, "lower")),
        ("r := sum({k: 1 | some k in input.x})", (3, "sum")),
        ('r := concat(",", {"a"})', None),
        ("r := count({k: 1 | some k in input.x})", None),
        ("r := array.slice([[1], 2][0], 0, 1)", None),  # not known from the syntax
    ],
)
def test_check_reports_a_collection_of_the_wrong_kind_as_opa(
    engine: EmbeddedEngine, body: str, problem: tuple[int, str] | None
) -> None:
    # OPA's type checker: "array.slice: invalid argument(s)"; rego-cpp
    # evaluated it (found by scripts/difffuzz_rego.py; lines from `opa check`).
    diags = _check(engine, {"m.rego": f"package m\n\n{body}\n"})
    want = [] if problem is None else [(problem[0], f"{problem[1]}: invalid argument(s)")]
    assert [(d.line, d.message) for d in diags] == want


@pytest.mark.parametrize(
    ("body", "line", "var"),
    [
        ("r if {\n\tsome y in [1]\n\tsome y in [2]\n}", 5, "y"),
        ("r if {\n\tsome k, v in {1: 2}\n\tsome v in [2]\n}", 5, "v"),
        ("r := [1 | some y in [1]; some y in [2]]", 3, "y"),
    ],
)
def test_check_reports_a_variable_declared_twice_as_opa(
    engine: EmbeddedEngine, body: str, line: int, var: str
) -> None:
    # OPA: rego_compile_error "var y declared above"; rego-cpp evaluated it
    # (found by scripts/difffuzz_rego.py).
    modules = {"m.rego": f"package m\n\n{body}\n"}
    diags = _check(engine, modules)
    assert [(d.line, d.message) for d in diags] == [(line, f"var {var} declared above")]


@pytest.mark.parametrize(
    ("body", "line", "var"),
    [
        ("r if {\n\tevery y in [1] { true }\n}", 4, "y"),
        ('r if {\n\tevery k, v in {"a": 1} { v == 1 }\n}', 4, "k"),
        ('r if {\n\tevery k, v in {"a": 1} { k == "a" }\n}', 4, "v"),
        ("r := [1 | every y in [1] { true }]", 3, "y"),
        ("r if {\n\tsome y\n\tinput.x\n}", 4, "y"),
        # OPA reports the line of the body's first expression.
        ("r if {\n\tevery y in [1] {\n\n\t\tinput.a\n\t}\n}", 6, "y"),
        # A nested `every` declaring the same name hides the outer one in its body.
        ("r if {\n\tevery y in [1] { every y in input.xs {\n\t\ty > 1 } }\n}", 4, "y"),
        ("r if {\n\tevery k, y in [1] { every y in [k] {\n\t\ty > 1 } }\n}", 4, "y"),
    ],
)
def test_check_reports_a_declared_variable_never_used_as_opa(
    engine: EmbeddedEngine, body: str, line: int, var: str
) -> None:
    # OPA: rego_compile_error "declared var y unused" (difffuzz: rego-cpp evaluated it).
    modules = {"m.rego": f"package m\n\n{body}\n"}
    diags = _check(engine, modules)
    assert [(d.line, d.message) for d in diags] == [(line, f"declared var {var} unused")]


def test_declared_variables_that_are_used_are_fine(engine: EmbeddedEngine) -> None:
    body = (
        'r if {\n\tevery _, v in {"a": 1} { v == 1 }\n\tsome y in [1]\n'
        "\tevery x in {1, 2} { x > 0 }\n}\n\n"
        "s if {\n\tsome z\n\tinput.xs[z]\n\tevery w in input.xs {\n\t\tevery q in w { q }\n\t}\n}"
        "\n\n"
        # The inner domain is evaluated in the outer scope: a use.
        "t if {\n\tevery y in [1] { every y in [y] { y > 0 } }\n}"
    )
    modules = {"m.rego": f"package m\n\n{body}\n"}
    diags = _check(engine, modules)
    assert diags == []


def test_same_name_declared_in_separate_bodies_is_fine(engine: EmbeddedEngine) -> None:
    body = (
        "r if {\n\tsome y in [1]\n\tevery x in [1] {\n\t\tsome y in [x]\n\t}\n}\n\n"
        "s if {\n\tsome y in [1]\n} else := false if {\n\tsome y in [2]\n}\n\n"
        "t := [y | some y in [1]] if {\n\tsome y in [2]\n}"
    )
    modules = {"m.rego": f"package m\n\n{body}\n"}
    diags = _check(engine, modules)
    assert diags == []


def test_check_accepts_the_default_gate_rules(engine: EmbeddedEngine) -> None:
    rules = Path(__file__).resolve().parents[4] / "policysupply" / "rules" / "gate.rego"
    modules = {"gate.rego": rules.read_text()}
    assert _check(engine, modules) == []


def test_negated_query_is_refused(engine: EmbeddedEngine) -> None:
    # rego-cpp answers `not data.t.x` undefined; OPA reports true.
    p = engine.prepare({"t.rego": "package t\n\nr := 1\n"}, {}, rego_versions={"t.rego": 1})
    try:
        with pytest.raises(UnsupportedByEngineError, match="negated"):
            p.query("not data.t.x")
        assert p.query("data.t.r") == [{"expressions": [{"value": 1, "text": "data.t.r"}]}]
    finally:
        p.close()


def test_negation_of_undefined_argument_is_undefined_as_in_opa(engine: EmbeddedEngine) -> None:
    source = "package t\n\nr if not startswith(input.image, input.prefix)\n"
    p = engine.prepare({"t.rego": source}, {}, rego_versions={"t.rego": 1})
    try:
        assert p.query("data.t.r", {"image": "a"}) == []
        assert p.query("data.t.r", {"image": "a", "prefix": "b"}) != []
    finally:
        p.close()


def test_wildcard_under_not_is_a_compile_error_naming_the_module(engine: EmbeddedEngine) -> None:
    source = 'package t\n\nr if not startswith(input.xs[_], "a")\n'
    with pytest.raises(BundleError, match="var _ is unsafe") as info:
        engine.prepare({"t.rego": source}, {}, rego_versions={"t.rego": 1})
    assert (info.value.entry, info.value.line) == ("t.rego", 3)


def test_input_and_data_are_handed_over_with_sorted_keys() -> None:
    # rego-cpp iterates objects in the order it reads them; OPA by sorted key.
    assert _sorted_json({"b": {"d": 1, "c": [{"f": 1, "e": 2}]}, "a": 2}) == (
        '{"a": 2, "b": {"c": [{"e": 2, "f": 1}], "d": 1}}'
    )
    # Keys that are not strings sort as the strings JSON makes of them.
    assert _sorted_json({10: "x", 9: "y", "a": 1}) == '{"10": "x", "9": "y", "a": 1}'


def test_a_query_with_data_over_rules_using_with_is_refused(engine: EmbeddedEngine) -> None:
    # rego-cpp answers 1 (the inner `with` drops the query's `with data`); OPA 2.
    src = "package t\n\na := 1\n\nb := x if {\n\tx := a with input as {}\n}\n\nc := a\n"
    prepared = _prepare(engine, {"t.rego": src})
    try:
        with pytest.raises(UnsupportedByEngineError, match="with data"):
            prepared.query("data.t.b with data.t.a as 2")
        got = prepared.query("data.t.c with data.t.a as 2")
        assert got[0]["expressions"][0]["value"] == 2
    finally:
        prepared.close()
