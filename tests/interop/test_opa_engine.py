"""The OPA engine against the real ``opa`` binary: check, results, errors, processes."""

from __future__ import annotations

import gc
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from policysupply import Bundle
from policysupply._internal.engines.base import (
    CheckRequest,
    EngineUnavailableError,
    Prepared,
    RegoEngine,
)
from policysupply._internal.engines.opa import OpaEngine, find_opa
from policysupply._internal.engines.opa_prepared import OpaPrepared
from policysupply.errors import BundleError
from tests.conftest import ROOT
from tests.interop.conftest import run_opa

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def engine(opa_bin: Path) -> OpaEngine:
    return OpaEngine(opa=opa_bin)


@pytest.fixture(scope="module")
def lax(opa_bin: Path) -> OpaEngine:
    return OpaEngine(opa=opa_bin, strict_builtin_errors=False)


def _v1(modules: dict[str, str]) -> dict[str, int]:
    return dict.fromkeys(modules, 1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _gone(pid: int) -> bool:
    # The watchdog kills and reaps OPA; allow the scheduler time, not a threshold.
    deadline = time.monotonic() + 30
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _write_bundle(root: Path, modules: dict[str, str], data: Any, manifest: Any) -> Path:
    for name, source in modules.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(source)
    (root / "data.json").write_text(json.dumps(data))
    (root / ".manifest").write_text(json.dumps(manifest))
    return root


def _opa_eval(
    opa_bin: Path, bundle: Path, query: str, input: Any, *, strict: bool, v0: bool = False
) -> dict[str, Any]:
    args = ["eval", "--format", "json", "--bundle", str(bundle)]
    if strict:
        args.append("--strict-builtin-errors")
    if v0:
        args.append("--v0-compatible")
    if input is not None:
        (bundle.parent / "input.json").write_text(json.dumps(input))
        args += ["--input", str(bundle.parent / "input.json")]
    proc = run_opa(opa_bin, *args, "--", query)
    doc: dict[str, Any] = json.loads(proc.stdout or proc.stderr)
    return doc


# -- the seam and finding the binary ----------------------------------------------


def test_opa_engine_implements_the_seam(engine: OpaEngine, opa_bin: Path) -> None:
    assert isinstance(engine, RegoEngine)
    assert engine.name == "opa"
    assert str(opa_bin) in repr(engine)
    assert "1.22.2" in repr(engine)
    p = engine.prepare({"a.rego": "package a\n\nx := 1\n"}, {}, rego_versions={"a.rego": 1})
    try:
        assert isinstance(p, Prepared)
        assert p.engine == "opa"
        assert p.query("data.a.x") == [
            {"expressions": [{"value": 1, "text": "data.a.x", "location": {"row": 1, "col": 1}}]}
        ]
    finally:
        p.close()


def test_find_opa_prefers_explicit_then_env_then_path(
    opa_bin: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("POLICYSUPPLY_OPA", str(opa_bin))
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_opa() == str(opa_bin)
    assert find_opa(opa_bin) == str(opa_bin)
    monkeypatch.delenv("POLICYSUPPLY_OPA")
    assert find_opa() is None
    (tmp_path / "opa").symlink_to(opa_bin)
    assert find_opa() == str(tmp_path / "opa")


def test_missing_opa_is_engine_unavailable_with_advice(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("POLICYSUPPLY_OPA", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EngineUnavailableError) as err:
        OpaEngine()
    assert "POLICYSUPPLY_OPA" in str(err.value)
    assert "engine='embedded'" in str(err.value)
    with pytest.raises(EngineUnavailableError, match="not an executable file"):
        OpaEngine(opa=tmp_path / "no-such-opa")
    monkeypatch.setenv("POLICYSUPPLY_OPA", str(tmp_path / "nope"))
    with pytest.raises(EngineUnavailableError, match="POLICYSUPPLY_OPA"):
        find_opa()


# -- check ------------------------------------------------------------------------


def _opa_check(opa_bin: Path, path: Path, *extra: str) -> list[tuple[int | None, str]]:
    proc = run_opa(opa_bin, "check", "--strict", "--format", "json", *extra, str(path))
    if proc.returncode == 0:
        return []
    errors = json.loads(proc.stdout or proc.stderr)["errors"]
    return [(e.get("location", {}).get("row"), e["message"]) for e in errors]


def test_check_equals_opa_check_on_the_broken_module_catalogue(
    engine: OpaEngine, opa_bin: Path, fixtures_dir: Path
) -> None:
    files = sorted((fixtures_dir / "broken_rego").glob("*.rego"))
    assert len(files) >= 19
    for path in files:
        want = _opa_check(opa_bin, path)
        assert want, f"opa check accepted {path.name}"
        diags = engine.check(
            CheckRequest(
                modules={path.name: path.read_text()},
                data={},
                rego_versions={path.name: 1},
                strict=True,
                refuse=False,
            )
        )
        assert [(d.line, d.message) for d in diags] == want, path.name
        assert {d.entry for d in diags} == {path.name}


# Rules that conflict with data, and some that do not: the check reads only the
# data's paths (values null), and must answer as `opa check` on the real data.
DATA_CONFLICTS = [
    ({"x": {"foo": 3}}, "package x\n\nfoo := 1\n"),
    ({"x": {"items": [1, 2]}}, "package x.items\n\nfoo := 1\n"),
    ({"x": {"items": []}}, "package x.items\n\nfoo := 1\n"),
    ({"x": {"items": None}}, "package x.items\n\nfoo := 1\n"),
    ({"x": {"items": "s"}}, "package x.items\n\nfoo := 1\n"),
    ({"x": {"items": {}}}, "package x.items\n\nfoo := 1\n"),
    ({"x": {"items": {"foo": {}}}}, "package x.items\n\nfoo := 1\n"),
    ({"x": {"items": {"bar": 1}}}, "package x.items\n\nfoo := 1\n"),
    ({"x": {"items": [{"foo": 1}]}}, "package x.items\n\nfoo := 1\n"),
    ({"x": {"n": 1.5, "t": True}}, 'package x\n\nfoo := data.x.n + "s"\n'),
]


@pytest.mark.parametrize(("data", "module"), DATA_CONFLICTS)
def test_check_answers_data_conflicts_as_opa_check_on_the_real_data(
    engine: OpaEngine, opa_bin: Path, tmp_path: Path, data: dict[str, Any], module: str
) -> None:
    (tmp_path / "p.rego").write_text(module)
    (tmp_path / "data.json").write_text(json.dumps(data))
    want = [(row, msg) for row, msg in _opa_check(opa_bin, tmp_path, "--bundle")]
    diags = engine.check(
        CheckRequest(
            modules={"p.rego": module},
            data=data,
            rego_versions={"p.rego": 1},
            strict=True,
            refuse=False,
        )
    )
    assert [(d.line, d.message) for d in diags] == want


def test_check_refuses_data_that_is_not_json(engine: OpaEngine) -> None:
    with pytest.raises(BundleError, match="data is not JSON"):
        engine.check(
            CheckRequest(
                modules={"p.rego": "package p\n"},
                data={"x": [float("nan")]},
                rego_versions={},
                strict=True,
                refuse=False,
            )
        )


# Semantic errors beyond the catalogue: one module each, then several in one
# tree; the diagnostics are OPA's, all of them, in OPA's order.
SEMANTIC_CASES = {
    "assign_to_call.rego": "package s\n\np if {\n\tcount(input.xs) := 2\n}\n",
    "reassign.rego": "package s\n\nq if {\n\ty := 1\n\ty := 2\n}\n",
    "unsafe_head.rego": "package s\n\nr := z if {\n\tinput.a == 1\n}\n",
    "unsafe_body.rego": "package s\n\nr if {\n\tx > 1\n}\n",
    "wrong_arity_fn.rego": "package s\n\nf(x) := x + 1\n\ns := f(1, 2)\n",
    "wrong_arity_builtin.rego": 'package s\n\ns := upper("a", "b")\n',
    "undefined_fn.rego": "package s\n\nt := nope.fn(1)\n",
    "type_error.rego": 'package s\n\nu := abs("a")\n',
    "type_error_ref.rego": 'package s\n\nv := {"a": 1} + 1\n',
    "unused_import.rego": "package s\n\nimport data.x\n\nw := 1\n",
    "unused_var.rego": "package s\n\nw if {\n\tsome x\n\ttrue\n}\n",
}
SEMANTIC = {
    "lib/a.rego": "package lib.a\n\nf(x) := x + 1\n\np if {\n\tcount(input.xs) := 2\n}\n"
    "\nq if {\n\ty := 1\n\ty := 2\n}\n",
    "lib/b.rego": "package lib.b\n\nimport data.lib.a\n\nv := a.f(1) + upper(1)\n"
    "\nw if {\n\tx := 1\n\tx := 2\n}\n",
}


def _bundle_errors(opa_bin: Path, root: Path) -> list[tuple[str, int, str]]:
    proc = run_opa(opa_bin, "check", "--strict", "--format", "json", "--bundle", str(root))
    if proc.returncode == 0:
        return []
    errors = json.loads(proc.stdout or proc.stderr)["errors"]
    return [
        (
            Path(e["location"]["file"]).relative_to(root).as_posix(),
            e["location"]["row"],
            e["message"],
        )
        for e in errors
    ]


@pytest.mark.parametrize("name", sorted(SEMANTIC_CASES))
def test_check_equals_opa_check_on_semantic_errors(
    engine: OpaEngine, opa_bin: Path, tmp_path: Path, name: str
) -> None:
    modules = {name: SEMANTIC_CASES[name]}
    want = _bundle_errors(opa_bin, _write_bundle(tmp_path / "b", modules, {}, {}))
    assert want, f"opa check accepted {name}"
    diags = engine.check(
        CheckRequest(
            modules=modules, data={}, rego_versions=_v1(modules), strict=True, refuse=False
        )
    )
    assert [(d.entry, d.line, d.message) for d in diags] == want


def test_check_equals_opa_check_on_a_tree_with_several_errors(
    engine: OpaEngine, opa_bin: Path, tmp_path: Path
) -> None:
    want = _bundle_errors(opa_bin, _write_bundle(tmp_path / "b", SEMANTIC, {}, {}))
    assert len(want) >= 2
    diags = engine.check(
        CheckRequest(
            modules=SEMANTIC, data={}, rego_versions=_v1(SEMANTIC), strict=True, refuse=False
        )
    )
    assert [(d.entry, d.line, d.message) for d in diags] == want


def test_check_reports_strict_mode_errors_like_opa_check_strict(engine: OpaEngine) -> None:
    modules = {"s.rego": "package s\n\nimport data.unused\n\np if { x := 1; true }\n"}
    msgs = [
        d.message
        for d in engine.check(
            CheckRequest(
                modules=modules, data={}, rego_versions=_v1(modules), strict=True, refuse=False
            )
        )
    ]
    assert any("unused" in m for m in msgs), msgs


def test_check_of_good_trees_is_empty(
    engine: OpaEngine, opa_bin: Path, fixtures_dir: Path, example_dir: Path
) -> None:
    for src in (fixtures_dir / "pinned", example_dir):
        b = Bundle.from_directory(src)
        versions = {m: b.rego_version_of(m) for m in b.modules}
        assert run_opa(opa_bin, "check", "--strict", "-b", str(src)).returncode == 0
        assert (
            engine.check(
                CheckRequest(
                    modules=dict(b.modules),
                    data=dict(b.data),
                    rego_versions=versions,
                    strict=True,
                    refuse=False,
                )
            )
            == []
        )


V0 = 'package legacy\n\ndeny[msg] {\n\tinput.privileged\n\tmsg := "privileged"\n}\n'
V1 = "package modern\n\nallow if count(data.legacy.deny) == 0\n"


def test_v0_modules_check_and_evaluate_with_v0_semantics(
    engine: OpaEngine, opa_bin: Path, tmp_path: Path
) -> None:
    assert (
        engine.check(
            CheckRequest(
                modules={"l.rego": V0},
                data={},
                rego_versions={"l.rego": 0},
                strict=True,
                refuse=False,
            )
        )
        == []
    )
    as_v1 = engine.check(
        CheckRequest(
            modules={"l.rego": V0}, data={}, rego_versions={"l.rego": 1}, strict=True, refuse=False
        )
    )
    assert as_v1
    assert "`if` keyword is required" in as_v1[0].message
    # A v0 module beside a v1 module (file_rego_versions in the manifest).
    modules = {"legacy/l.rego": V0, "modern/m.rego": V1}
    versions = {"legacy/l.rego": 0, "modern/m.rego": 1}
    assert (
        engine.check(
            CheckRequest(
                modules=modules, data={}, rego_versions=versions, strict=True, refuse=False
            )
        )
        == []
    )
    root = _write_bundle(
        tmp_path / "b",
        modules,
        {},
        {"rego_version": 1, "file_rego_versions": {"/legacy/l.rego": 0}},
    )
    p = engine.prepare(modules, {}, rego_versions=versions)
    try:
        for q in ("data.legacy.deny", "data.modern.allow", "x := data.legacy.deny"):
            want = _opa_eval(opa_bin, root, q, {"privileged": True}, strict=True)
            assert list(p.query(q, {"privileged": True})) == want.get("result", []), q
        assert p.query("data.legacy.deny", {"privileged": True})[0]["expressions"][0]["value"] == [
            "privileged"
        ]
    finally:
        p.close()
    # Only v0 modules: the query is read as v0 too (--v0-compatible).
    p = engine.prepare({"l.rego": V0}, {}, rego_versions={"l.rego": 0})
    try:
        assert p.query("data.legacy.deny", {"privileged": True})[0]["expressions"][0]["value"] == [
            "privileged"
        ]
    finally:
        p.close()


# -- prepare and query ------------------------------------------------------------

POLICY = {
    "authz/policy.rego": textwrap.dedent(
        """\
        package authz

        default allow := false

        allow if input.user in data.admins

        deny contains msg if {
        \tsome c in input.containers
        \tc.privileged
        \tmsg := sprintf("%s is privileged", [c.name])
        }

        ratio := input.a / input.b

        n := to_number(input.s)

        nets if net.cidr_contains("10.0.0.0/8", "10.1.0.0/16")

        f(x) := x * 2
        """
    ),
}
DATA = {"admins": ["alice", 'ünïcödé "q"']}
INPUTS: list[Any] = [
    None,
    {"user": "alice", "a": 1, "b": 0, "s": "x"},
    {"user": 'ünïcödé "q"', "a": 6, "b": 3, "s": "12", "containers": [{"name": "c\n1"}]},
    {
        "user": "bob",
        "containers": [{"name": "a", "privileged": True}, {"name": "b", "privileged": True}],
    },
]
QUERIES = [
    "data.authz.allow",
    "  data.authz.deny",
    "data.authz.ratio",
    "data.authz.n",
    "data.authz.nets",
    "data.authz.nope",
    "data",
    "x := data.authz.deny",
    "x = data.authz.allow",
    "data.authz.deny = y",
    "data.authz.deny = input",
    "data.authz.f(2)",
    "1 == 2",
    "data.authz.deny[m]",
    'x := data.authz.deny[_]; startswith(x, "a")',
    "input.containers[i].privileged == true",
    'data.authz.allow with input.user as "alice"',
    "some c in input.containers",
    "every c in input.containers { c.privileged }",
    "not data.authz.allow",
    "x := 1\ny := x + 1",
    'data.authz.f("a")',
    "upper(1)",
]


@pytest.mark.parametrize("strict", [True, False], ids=["strict", "default"])
def test_query_results_and_errors_equal_opa_eval(
    opa_bin: Path, tmp_path: Path, strict: bool
) -> None:
    engine = OpaEngine(opa=opa_bin, strict_builtin_errors=strict)
    root = _write_bundle(tmp_path / "b", POLICY, DATA, {"rego_version": 1})
    p = engine.prepare(POLICY, DATA, rego_versions=_v1(POLICY))
    try:
        for q in QUERIES:
            for inp in INPUTS:
                want = _opa_eval(opa_bin, root, q, inp, strict=strict)
                if "errors" in want:
                    with pytest.raises(BundleError) as err:
                        p.query(q, inp)
                    assert want["errors"][0]["message"] in str(err.value), (q, inp)
                else:
                    assert list(p.query(q, inp)) == want.get("result", []), (q, inp)
        # Both transports were used.
        assert p.stats["server"] > 0
        assert p.stats["eval"] > 0
    finally:
        p.close()


def test_builtin_errors_are_errors_when_strict_and_undefined_as_opa_default(
    engine: OpaEngine, lax: OpaEngine
) -> None:
    # A deny rule whose builtin fails must not silently not fire.
    modules = {"d.rego": 'package d\n\ndeny contains "big" if to_number(input.n) > 10\n'}
    p = engine.prepare(modules, {}, rego_versions=_v1(modules))
    q = lax.prepare(modules, {}, rego_versions=_v1(modules))
    try:
        with pytest.raises(BundleError, match="eval_builtin_error: to_number"):
            p.query("data.d.deny", {"n": "eleven"})
        assert q.query("data.d.deny", {"n": "eleven"})[0]["expressions"][0]["value"] == []
        assert p.query("data.d.deny", {"n": "11"})[0]["expressions"][0]["value"] == ["big"]
    finally:
        p.close()
        q.close()


def test_conflicts_are_errors_in_both_modes(lax: OpaEngine) -> None:
    modules = {"c.rego": "package c\n\nx := 1 if input.a\nx := 2 if input.b\n"}
    p = lax.prepare(modules, {}, rego_versions=_v1(modules))
    try:
        with pytest.raises(BundleError, match="eval_conflict_error"):
            p.query("data.c.x", {"a": True, "b": True})
    finally:
        p.close()


def test_compile_error_at_prepare_names_module_and_opa_line(engine: OpaEngine) -> None:
    modules = {
        "ok.rego": "package ok\n\np := 1\n",
        "pkg/bad.rego": "package bad\n\np if {\n\tinput.x ==\n}\n",
    }
    with pytest.raises(BundleError) as err:
        engine.prepare(modules, {}, rego_versions=_v1(modules))
    assert err.value.entry == "pkg/bad.rego"
    assert err.value.line == 5


def test_malformed_query_is_a_bundle_error(engine: OpaEngine) -> None:
    p = engine.prepare({"a.rego": "package a\n\nx := 1\n"}, {}, rego_versions={"a.rego": 1})
    try:
        with pytest.raises(BundleError, match="rego_parse_error"):
            p.query("data.a.x ==")
        with pytest.raises(BundleError, match="input is not JSON"):
            p.query("data.a.x", {"x": {1, 2}})
    finally:
        p.close()


def test_module_names_that_are_not_plain_paths_are_reported_by_name(engine: OpaEngine) -> None:
    modules = {"../odd name.rego": "package odd\n\np := 1 +\n"}
    diags = engine.check(
        CheckRequest(
            modules=modules, data={}, rego_versions=_v1(modules), strict=True, refuse=False
        )
    )
    assert diags
    assert diags[0].entry == "../odd name.rego"


# -- processes ----------------------------------------------------------------------


def test_server_listens_on_a_private_unix_socket_and_is_gone_after_close(
    engine: OpaEngine,
) -> None:
    p = engine.prepare({"a.rego": "package a\n\nx := 1\n"}, {}, rego_versions={"a.rego": 1})
    assert p.server_pid is None  # started lazily
    p.query("data.a.x")
    pid = p.server_pid
    assert pid is not None
    assert _alive(pid)
    root = p._root
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert stat.S_ISSOCK((root / "opa.sock").stat().st_mode)
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert b"--addr" in cmdline
    assert cmdline[cmdline.index(b"--addr") + 1].startswith(b"unix://")
    p.close()
    assert _gone(pid)
    assert not root.exists()
    with pytest.raises(BundleError, match="closed"):
        p.query("data.a.x")
    p.close()  # idempotent


def test_server_is_stopped_when_the_preparation_is_garbage_collected(engine: OpaEngine) -> None:
    p = engine.prepare({"a.rego": "package a\n\nx := 1\n"}, {}, rego_versions={"a.rego": 1})
    p.query("data.a.x")
    pid = p.server_pid
    assert pid is not None
    del p
    gc.collect()
    assert _gone(pid)


def test_server_and_its_directory_go_with_its_parent_process_even_on_sigkill(opa_bin: Path) -> None:
    script = textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, {str(ROOT)!r})
        from policysupply._internal.engines.opa import OpaEngine
        p = OpaEngine(opa={str(opa_bin)!r}).prepare(
            {{"a.rego": "package a\\n\\nx := 1\\n"}}, {{}}, rego_versions={{"a.rego": 1}})
        p.query("data.a.x")
        print(p.server_pid, p._root, flush=True)
        sys.stdin.read()
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert child.stdout is not None
    pid_text, root_text = child.stdout.readline().decode().split(maxsplit=1)
    pid, root = int(pid_text), Path(root_text.strip())
    assert _alive(pid)
    assert (root / "opa.sock").exists()
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert _gone(pid)
    # Its private directory (the bundle copy and the socket, in /dev/shm's memory)
    # goes with it: nobody else would ever remove it.
    deadline = time.monotonic() + 30
    while root.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not root.exists()


def test_a_killed_server_is_restarted_and_the_answer_is_unchanged(engine: OpaEngine) -> None:
    p = engine.prepare({"a.rego": "package a\n\nx := 1\n"}, {}, rego_versions={"a.rego": 1})
    try:
        first = p.query("data.a.x")
        pid = p.server_pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        assert _gone(pid)
        assert p.query("data.a.x") == first
        assert p.server_pid not in (None, pid)
    finally:
        p.close()


SLOW = (
    "package slow\n\n"
    "p if {\n\tsome i in numbers.range(1, 100000)\n\tsome j in numbers.range(1, 100000)\n"
    "\ti * j == -1\n}\n"
)


def test_a_query_past_the_timeout_is_a_bundle_error_and_the_next_query_works(
    opa_bin: Path,
) -> None:
    engine = OpaEngine(opa=opa_bin, timeout=1.0)
    modules = {"slow.rego": SLOW, "fast.rego": "package fast\n\nx := 1\n"}
    p = engine.prepare(modules, {}, rego_versions=_v1(modules))
    try:
        p.query("data.fast.x")
        busy = p.server_pid
        with pytest.raises(BundleError, match="took longer than"):
            p.query("data.slow.p")  # through the server
        # The server that was still evaluating is gone, not left burning CPU.
        assert busy is not None
        assert _gone(busy)
        with pytest.raises(BundleError, match="took longer than"):
            p.query("data.slow.p; true")  # through opa eval
        assert p.query("data.fast.x")[0]["expressions"][0]["value"] == 1
    finally:
        p.close()


def test_concurrent_queries_from_many_threads_all_answer_correctly(engine: OpaEngine) -> None:
    p = engine.prepare(POLICY, DATA, rego_versions=_v1(POLICY))
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            for j in range(30):
                user = "alice" if (i + j) % 2 else f"user{i}"
                got = p.query("data.authz.allow", {"user": user})
                assert got[0]["expressions"][0]["value"] is (user == "alice")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    p.close()
    assert not errors, errors[0]


def test_opa_prepared_repr_names_binary_and_server(engine: OpaEngine) -> None:
    p = engine.prepare({"a.rego": "package a\n\nx := 1\n"}, {}, rego_versions={"a.rego": 1})
    try:
        assert isinstance(p, OpaPrepared)
        assert engine.path in repr(p)
    finally:
        p.close()


def test_prepare_after_a_passing_check_of_the_same_content_compiles_once(
    opa_bin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = OpaEngine(opa=opa_bin)
    modules = {"a.rego": "package a\n\nx := 1\n"}
    assert (
        engine.check(
            CheckRequest(
                modules=modules,
                data={"d": 1},
                rego_versions=_v1(modules),
                strict=True,
                refuse=False,
            )
        )
        == []
    )
    calls: list[bool] = []
    real = engine._check_dir

    def spy(bundle: Any, *, strict: bool) -> Any:
        calls.append(strict)
        return real(bundle, strict=strict)

    monkeypatch.setattr(engine, "_check_dir", spy)
    p = engine.prepare(modules, {"d": 1}, rego_versions=_v1(modules))
    p.close()
    assert calls == []
    # Other data values compile the same (`opa check` reads only the data's
    # paths): not compiled again. Other paths, or another Rego version, are.
    engine.prepare(modules, {"d": 2}, rego_versions=_v1(modules)).close()
    assert calls == []
    engine.prepare(modules, {"e": 1}, rego_versions=_v1(modules)).close()
    engine.prepare(modules, {"d": 1}, rego_versions={"a.rego": 0}).close()
    assert calls == [False, False]
