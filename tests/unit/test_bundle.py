"""Unit tests for Bundle: building, reading, roots, determinism, evaluation."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest

from policysupply import Bundle, BundleError, Manifest
from policysupply._internal.engines.base import UnsupportedByEngineError
from policysupply._internal.tarball import write_entries

PINNED_DIGEST = "sha256:f5b9a78c364d42d7c3771f363ce120ba89b4caf3f4997c19ea18eadb6d1fa333"


def tree(tmp_path: Path, files: dict[str, str | bytes]) -> Path:
    for name, body in files.items():
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(body.encode() if isinstance(body, str) else body)
    return tmp_path


def test_pinned_fixture_digest(fixtures_dir: Path) -> None:
    b = Bundle.from_directory(fixtures_dir / "pinned")
    assert b.digest == PINNED_DIGEST


def test_same_tree_same_bytes_regardless_of_mtimes_and_modes(
    tmp_path: Path, fixtures_dir: Path
) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(fixtures_dir / "pinned", copy)
    for p in copy.rglob("*"):
        if p.is_file():
            os.utime(p, (1_000_000_000, 1_000_000_000))
            p.chmod(0o600)
    assert (
        Bundle.from_directory(copy).to_bytes()
        == Bundle.from_directory(fixtures_dir / "pinned").to_bytes()
    )


def test_from_directory_maps_data_by_directory(fixtures_dir: Path) -> None:
    b = Bundle.from_directory(fixtures_dir / "pinned")
    assert b.data["acme"]["teams"]["platform"]["members"] == ["alice", "bob"]
    assert b.data["acme"]["settings"] == {"audit": True, "ratio": 1.5}
    assert set(b.modules) == {"acme/authz/authz.rego"}
    assert b.manifest == Manifest(
        revision="pinned-1", roots=["acme"], metadata={"owner": "platform"}
    )


def test_overrides_and_skips_unrelated_files_but_not_hidden_ones(tmp_path: Path) -> None:
    # Hidden files and directories are read, as opa build -b does (see
    # tests/unit/_internal/test_bundle_read.py); other file names are not.
    root = tree(
        tmp_path,
        {
            "p/x.rego": "package p\nx := 1\n",
            ".git/config": "not rego",
            "p/.hidden.rego": "package p.hidden\ny := 1\n",
            "p/README.md": "# docs",
            "p/other.json": "not json",
        },
    )
    b = Bundle.from_directory(root, revision="abc", roots=["p"], metadata={"k": "v"})
    assert set(b.modules) == {"p/x.rego", "p/.hidden.rego"}
    assert (b.manifest.revision, b.manifest.roots, dict(b.manifest.metadata or {})) == (
        "abc",
        ("p",),
        {"k": "v"},
    )


def test_roundtrip_through_bytes(fixtures_dir: Path) -> None:
    b = Bundle.from_directory(fixtures_dir / "pinned")
    again = Bundle.from_bytes(b.to_bytes())
    assert again == b
    assert again.to_bytes() == b.to_bytes()


def test_other_files_are_carried_verbatim() -> None:
    sig = b'{"signatures":["a.b.c"]}'
    data = write_entries(
        {".signatures.json": sig, "policy.wasm": b"\0asm", "x.rego": b"package x\n"}
    )
    b = Bundle.from_bytes(data)
    assert dict(b.files) == {".signatures.json": sig, "policy.wasm": b"\0asm"}
    assert Bundle.from_bytes(b.to_bytes()).files == b.files


@pytest.mark.parametrize(
    ("files", "entry", "pattern"),
    [
        (
            {"a/x.rego": "package a\n", "b/data.json": '{"k": 1}', ".manifest": '{"roots": ["a"]}'},
            ".manifest",
            "do not permit data at path b$",
        ),
        (
            {"b/x.rego": "package b\n", ".manifest": '{"roots": ["a"]}'},
            "b/x.rego",
            "outside the manifest roots",
        ),
        ({".manifest": '{"roots": ["a/b", "a"]}'}, ".manifest", "overlap"),
        ({".manifest": '{"roots": ["", "a"]}'}, ".manifest", "overlap"),
        ({"x/data.json": '{"a": 1,}'}, "x/data.json", "invalid JSON"),
        ({"x/data.json": '{"a": NaN}'}, "x/data.json", "invalid JSON"),
        ({"x/data.yaml": "a: [1, 2\nb: 3\n"}, "x/data.yaml", "invalid YAML"),
        ({"data.json": "[1, 2]"}, "data.json", "must hold a JSON object"),
        ({"a/data.json": '{"k": 1}', "data.json": '{"a": {"k": 2}}'}, "data.json", "already set"),
        ({"x.rego": "allow := true\n"}, "x.rego", "package declaration"),
        ({".manifest": "[]"}, ".manifest", "JSON object"),
        ({".manifest": '{"rego_version": 3}'}, ".manifest", "rego_version"),
        ({".manifest": '{"roots": "a"}'}, ".manifest", "list of strings"),
    ],
)
def test_invalid_content_names_the_entry(
    tmp_path: Path, files: dict[str, str], entry: str, pattern: str
) -> None:
    root = tree(tmp_path, files)
    with pytest.raises(BundleError, match=pattern) as err:
        Bundle.from_directory(root)
    assert err.value.entry == entry
    # The same content as a tarball is refused the same way.
    data = write_entries({k: v.encode() for k, v in files.items()})
    with pytest.raises(BundleError, match=pattern):
        Bundle.from_bytes(data)


def test_non_utf8_rego_is_refused_with_line() -> None:
    data = write_entries({"x.rego": b'package x\n\nallow := "\xff"\n'})
    with pytest.raises(BundleError, match="UTF-8") as err:
        Bundle.from_bytes(data)
    assert (err.value.entry, err.value.line) == ("x.rego", 3)


def test_invalid_json_reports_line(tmp_path: Path) -> None:
    root = tree(tmp_path, {"x/data.json": '{\n  "a": 1,\n  "b": \n}\n'})
    with pytest.raises(BundleError) as err:
        Bundle.from_directory(root)
    assert err.value.line == 4


def test_yaml_keys_and_timestamps_follow_opa() -> None:
    data = write_entries({"y/data.yaml": b"1: one\ntrue: yes\nwhen: 2024-01-02\n"})
    assert Bundle.from_bytes(data).data == {"y": {"1": "one", "true": True, "when": "2024-01-02"}}


def test_delta_bundle_is_refused() -> None:
    with pytest.raises(BundleError, match="delta"):
        Bundle.from_bytes(write_entries({"patch.json": b'{"data": []}'}))


def test_two_manifests_are_refused() -> None:
    with pytest.raises(BundleError, match="more than one manifest"):
        Bundle.from_bytes(write_entries({".manifest": b"{}", "x/.manifest": b"{}"}))


def test_symlink_outside_tree_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside.rego"
    outside.write_text("package secret\n")
    root = tmp_path / "policies"
    root.mkdir()
    (root / "link.rego").symlink_to(outside)
    with pytest.raises(BundleError, match="symlink") as err:
        Bundle.from_directory(root)
    assert err.value.entry == "link.rego"


def test_write_is_atomic_and_keeps_good_file_on_failure(
    tmp_path: Path, fixtures_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    b = Bundle.from_directory(fixtures_dir / "pinned")
    target = tmp_path / "bundle.tar.gz"
    target.write_bytes(b"previous good bundle")

    def boom(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(BundleError, match="No space left"):
        b.write(target)
    assert target.read_bytes() == b"previous good bundle"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle.tar.gz"]
    monkeypatch.undo()
    b.write(target)
    assert target.read_bytes() == b.to_bytes()


def test_from_file_missing(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="cannot read"):
        Bundle.from_file(tmp_path / "nope.tar.gz")


def test_evaluate_single_value_set_and_undefined(fixtures_dir: Path) -> None:
    b = Bundle.from_directory(fixtures_dir / "pinned")
    assert (
        b.evaluate("data.acme.authz.allow", {"action": "read", "user": "carol", "team": "security"})
        is True
    )
    assert (
        b.evaluate(
            "data.acme.authz.allow", {"action": "write", "user": "carol", "team": "security"}
        )
        is False
    )
    assert b.evaluate("data.acme.nothing_here") is None
    assert b.evaluate("x := data.acme.settings.ratio") == {"x": 1.5}


def test_evaluate_input_with_quotes_backslashes_and_unicode() -> None:
    src = "package t\n\necho := input.s\n\nn := count(input.s)\n"
    tricky = 'say "hi" \\ x\n\u00e9\U0001f600'
    b = Bundle(modules={"t.rego": src}, data={})
    assert b.evaluate("data.t.n", {"s": tricky}, engine="opa") == len(tricky)
    assert b.evaluate("data.t.echo", {"s": tricky}, engine="opa") == tricky
    # rego-cpp applies builtins to the escaped form (count would be wrong): refused.
    with pytest.raises(UnsupportedByEngineError, match="printable ASCII"):
        b.evaluate("data.t.n", {"s": tricky}, engine="embedded")


def test_v0_bundles_are_evaluated_by_opa_and_refused_by_embedded() -> None:
    src = b'package legacy\n\ndeny[msg] {\n  input.bad\n  msg := "bad"\n}\n'
    b = Bundle.from_bytes(write_entries({".manifest": b'{"rego_version": 0}', "l.rego": src}))
    assert b.rego_version_of("l.rego") == 0
    with pytest.raises(UnsupportedByEngineError, match="Rego v0") as err:
        b.evaluate("data.legacy.deny", {"bad": True}, engine="embedded")
    assert err.value.entry == "l.rego"
    assert b.evaluate("data.legacy.deny", {"bad": True}, engine="opa") == ["bad"]
    b.check(engine="embedded")  # v0 syntax is accepted by check()
    b.check(engine="opa")


def test_file_rego_versions_glob_marks_one_file_v0() -> None:
    b = Bundle.from_bytes(
        write_entries(
            {
                ".manifest": b'{"file_rego_versions": {"/legacy/*.rego": 0}}',
                "legacy/l.rego": b"package legacy\nallow { true }\n",
                "new/n.rego": b"package new\nallow if true\n",
            }
        )
    )
    assert (b.rego_version_of("legacy/l.rego"), b.rego_version_of("new/n.rego")) == (0, 1)
    b.check()
    with pytest.raises(UnsupportedByEngineError, match="v0"):
        b.evaluate("data.new.allow", engine="embedded")
    assert b.evaluate("data.legacy.allow", engine="opa") is True
    assert b.evaluate("data.new.allow", engine="opa") is True


def test_check_reports_file_and_line(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            "ok.rego": "package ok\nallow if true\n",
            "bad/b.rego": "package bad\n\nallow if {\n  input.x == \n}\n",
        },
    )
    with pytest.raises(BundleError) as err:
        Bundle.from_directory(root).check()
    # OPA's line: `opa check` points at the `}` that cannot be the missing operand.
    assert (err.value.entry, err.value.line) == ("bad/b.rego", 5)


def test_check_v1_requires_if(tmp_path: Path) -> None:
    root = tree(tmp_path, {"x.rego": "package x\n\nallow {\n  true\n}\n"})
    with pytest.raises(BundleError, match="`if` keyword is required") as err:
        Bundle.from_directory(root).check()
    assert err.value.line == 3


def test_check_does_not_print_to_stdout(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    root = tree(tmp_path, {"x.rego": "package x\nallow := input.y +\n"})
    with pytest.raises(BundleError):
        Bundle.from_directory(root).check()
    out, _ = capfd.readouterr()
    assert out == ""


def test_repr_html_escapes(tmp_path: Path) -> None:
    root = tree(tmp_path, {"x.rego": "package x\n"})
    html = Bundle.from_directory(root, revision="<script>")._repr_html_()
    assert "&lt;script&gt;" in html
    assert "<script>" not in html
    assert "sha256:" in html


def test_bundle_is_immutable(fixtures_dir: Path) -> None:
    import attrs

    b = Bundle.from_directory(fixtures_dir / "pinned")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        b.manifest = Manifest()  # type: ignore[misc]
    with pytest.raises(TypeError):
        b.modules["x.rego"] = "package x"  # type: ignore[index]


def test_reads_tarball_written_by_other_tools(tmp_path: Path) -> None:
    # `tar -C dir -czf` style: ./-prefixed names and directory entries.
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        members = {"./p/x.rego": b"package p\nx := 1\n", "./p/data.json": b'{"a": 1}'}
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tf.addfile(info, io.BytesIO(body))
    b = Bundle.from_bytes(buf.getvalue())
    assert b.data == {"p": {"a": 1}}
    assert set(b.modules) == {"p/x.rego"}


def test_check_resolves_functions_across_modules_and_imports() -> None:
    main = (
        "package app\n\nimport data.lib.strings as s\nimport data.util\n\n"
        "allow if {\n\ts.clean(input.name)\n\tutil.ok(input)\n\tlocal(1)\n"
        '\tdata.lib.strings.clean(input.x)\n\tobject.get(input, "k", 1)\n}\n\n'
        "local(x) := x + 1\n"
    )
    b = Bundle(
        modules={
            "app.rego": main,
            "lib.rego": "package lib.strings\n\nclean(x) := trim_space(x)\n",
            "util.rego": "package util\n\nok(x) if x.ok\n",
        }
    )
    b.check()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ("missing(1)", "undefined function missing"),
        ("util.absent(1)", "undefined function data.util.absent"),
        ("object.get(input)", "arity mismatch"),
        ("strings.nope(1)", "undefined function strings.nope"),
    ],
)
def test_check_reports_bad_calls(call: str, message: str) -> None:
    b = Bundle(
        modules={
            "app.rego": f"package app\n\nimport data.util\n\nallow if {{\n\t{call}\n}}\n",
            "util.rego": "package util\n\nok(x) if x.ok\n",
        }
    )
    with pytest.raises(BundleError, match=message) as err:
        b.check()
    assert (err.value.entry, err.value.line) == ("app.rego", 6)


# -- hostile data and manifests (review findings) ---------------------------------


@pytest.mark.parametrize("number", [b"1e999", b"-1e400", b"1E+309"])
def test_data_json_number_out_of_float_range_is_refused_at_read(number: bytes) -> None:
    # OPA keeps such numbers as text; a Python float would become inf, which
    # could never be written back out, so the bundle is refused when read.
    raw = write_entries({"data.json": b'{"x": ' + number + b"}"})
    with pytest.raises(BundleError, match="out of the range") as exc:
        Bundle.from_bytes(raw)
    assert exc.value.entry == "data.json"


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_data_json_nan_and_infinity_are_refused(constant: bytes) -> None:
    raw = write_entries({"a/data.json": b'{"x": ' + constant + b"}"})
    with pytest.raises(BundleError, match="not valid JSON") as exc:
        Bundle.from_bytes(raw)
    assert exc.value.entry == "a/data.json"


def test_data_json_lone_surrogates_become_replacement_chars_as_in_opa() -> None:
    raw = write_entries(
        {"data.json": rb'{"s": "a\ud800b", "\udc00": ["\ud83d\ude00", "\udfff\ud800"]}'}
    )
    b = Bundle.from_bytes(raw)
    assert b.data == {"s": "a\ufffdb", "\ufffd": ["\U0001f600", "\ufffd\ufffd"]}
    # Serialisable, so the bundle can be digested, served and read back.
    assert Bundle.from_bytes(b.to_bytes()).data == b.data
    assert b.digest.startswith("sha256:")


def test_data_json_small_numbers_still_read() -> None:
    b = Bundle.from_bytes(write_entries({"data.json": b'{"a": 1e308, "b": 1e-999, "c": 2}'}))
    assert b.data == {"a": 1e308, "b": 0.0, "c": 2}


def test_unserialisable_data_given_directly_is_a_bundle_error() -> None:
    b = Bundle(data={"x": float("inf")})
    with pytest.raises(BundleError, match="cannot be written as JSON") as exc:
        b.to_bytes()
    assert exc.value.entry == "data.json"


def _billion_laughs(levels: int = 10) -> bytes:
    lines = ["a0: &a0 [x,x,x,x,x,x,x,x,x,x]"]
    lines += [f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels)]
    return ("\n".join(lines) + "\n").encode()


def test_yaml_billion_laughs_is_refused_quickly() -> None:
    import time

    raw = write_entries({"p/data.yaml": _billion_laughs()})
    assert len(raw) < 400
    start = time.monotonic()
    with pytest.raises(BundleError, match="excessive aliasing") as exc:
        Bundle.from_bytes(raw)
    assert exc.value.entry == "p/data.yaml"
    assert time.monotonic() - start < 5


def test_yaml_scalar_alias_expansion_is_bounded_by_entry_size_limit() -> None:
    from policysupply import Limits

    # Few aliases (go-yaml's ratio allows them) of one big string: 2 MB of JSON.
    doc = "s: &s " + "x" * 100_000 + "\nl: [" + ",".join(["*s"] * 20) + "]\n"
    raw = write_entries({"data.yaml": doc.encode()})
    with pytest.raises(BundleError, match="expands to more than") as exc:
        Bundle.from_bytes(raw, limits=Limits(max_entry_size=1_000_000))
    assert exc.value.entry == "data.yaml"
    assert len(Bundle.from_bytes(raw).data["l"]) == 20


def test_yaml_moderate_aliasing_is_accepted_as_by_opa() -> None:
    # opa 1.22 loads this (200 uses of a 100-item anchor); 5000 uses it refuses.
    def doc(uses: int) -> bytes:
        base = "base: &b [" + ",".join(str(i) for i in range(100)) + "]\nrefs:\n"
        return (base + "  - *b\n" * uses).encode()

    b = Bundle.from_bytes(write_entries({"data.yaml": doc(200)}))
    assert len(b.data["refs"]) == 200
    assert b.data["refs"][0] == list(range(100))
    with pytest.raises(BundleError, match="excessive aliasing"):
        Bundle.from_bytes(write_entries({"data.yaml": doc(5000)}))


@pytest.mark.parametrize("roots", [b"5", b"true", b'{"a": 1}', b'"a"', b'["a", 1]'])
def test_manifest_roots_of_wrong_type_are_a_bundle_error(roots: bytes) -> None:
    raw = write_entries({".manifest": b'{"roots": ' + roots + b"}"})
    with pytest.raises(BundleError, match="roots must be a list of strings") as exc:
        Bundle.from_bytes(raw)
    assert exc.value.entry == ".manifest"


# -- nesting the embedded engine cannot survive -----------------------------------

_DEEP_SCRIPT = """
import sys
sys.setrecursionlimit(100_000)
from policysupply import Bundle, BundleError
kind, n, engine = sys.argv[1], int(sys.argv[2]), sys.argv[3]
deep = []
for _ in range(n):
    deep = [deep]
try:
    if kind == "module":
        b = Bundle(modules={"a.rego": "package a\\nx := " + "[" * n + "]" * n + "\\n"})
        try:
            b.check(engine=engine)
            print("check ok")
        except BundleError as exc:
            print("check", exc.entry, exc.line, exc)
        b.evaluate("data.a.x", engine=engine)
    elif kind == "data":
        Bundle(modules={"a.rego": "package a\\nx := data.d\\n"}, data={"d": deep}).evaluate(
            "data.a.x", engine=engine
        )
    elif kind == "input":
        Bundle(modules={"a.rego": "package a\\nx := input\\n"}).evaluate(
            "data.a.x", deep, engine=engine
        )
    print("evaluated")
except BundleError as exc:
    print("BundleError", exc)
"""


def _run_deep(kind: str, n: int, engine: str = "embedded") -> str:
    import subprocess
    import sys

    # A child process, so that a crash in rego-cpp fails the test instead of
    # killing pytest.
    proc = subprocess.run(
        [sys.executable, "-c", _DEEP_SCRIPT, kind, str(n), engine],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-2000:]}"
    return proc.stdout


def test_deeply_nested_module_is_refused_by_check_and_evaluate() -> None:
    out = _run_deep("module", 10_000)
    assert "check a.rego 2 " in out
    assert "nested more than 500 deep" in out
    assert "BundleError a.rego:2: brackets nested more than 500 deep" in out


def test_module_nested_500_deep_still_checks_and_evaluates() -> None:
    # `opa check` accepts this; the limit must not refuse what OPA takes.
    n = 500
    b = Bundle(modules={"a.rego": "package a\nx := " + "[" * n + "]" * n + "\n"})
    b.check()
    assert b.evaluate("count(data.a.x)") == 1


def test_nesting_in_strings_and_comments_does_not_count() -> None:
    n = 2000
    src = f'package a\n# {"[" * n}\nx := "{"{" * n}"\ny := `{"(" * n}`\n'
    b = Bundle(modules={"a.rego": src})
    b.check()
    assert b.evaluate("data.a.x") == "{" * n


@pytest.mark.parametrize("kind", ["data", "input"])
def test_deeply_nested_data_or_input_is_refused_before_the_engine(kind: str) -> None:
    out = _run_deep(kind, 10_000)
    assert f"BundleError {'data.json: ' if kind == 'data' else ''}{kind} is nested more" in out


@pytest.mark.parametrize("kind", ["module", "data", "input"])
def test_deep_nesting_is_an_error_not_a_crash_with_opa(kind: str) -> None:
    out = _run_deep(kind, 10_000, engine="opa")
    assert "BundleError" in out
    assert "evaluated" not in out


def test_an_empty_file_rego_versions_reads_as_absent_and_round_trips() -> None:
    # OPA's manifest omits an empty file_rego_versions (omitempty); reading it
    # back gave a different Manifest (found by the bundle_format fuzz target).
    import json

    from policysupply.bundle import Manifest

    m = Manifest.from_json(b'{"revision": "r", "file_rego_versions": {}}')
    assert m == Manifest.from_json(b'{"revision": "r"}')
    assert Manifest.from_json(json.dumps(m.to_json()).encode()) == m


WASM = b"\0asm\1\0\0\0"


def _wasm_bundle(resolvers: list[dict[str, Any]], roots: tuple[str, ...] | None = None) -> Bundle:
    return Bundle(
        manifest=Manifest(wasm=tuple(resolvers), roots=roots),
        modules={"a.rego": "package a\n\nx := 1\n"},
        files={"policy.wasm": WASM},
    )


@pytest.mark.parametrize(
    ("resolvers", "roots", "match"),
    [
        ([{"entrypoint": "a/x", "module": "/missing.wasm"}], None, "does not exist"),
        ([{"entrypoint": "b/x", "module": "/policy.wasm"}], ("a",), "do not permit"),
        (
            [
                {"entrypoint": "a/x", "module": "/policy.wasm"},
                {"entrypoint": "a/x", "module": "/policy.wasm"},
            ],
            None,
            "more than one",
        ),
        ([{"entrypoint": 1, "module": "/policy.wasm"}], None, "entrypoint"),
    ],
    ids=["missing-module", "outside-roots", "entrypoint-twice", "not-a-string"],
)
def test_wasm_resolvers_are_validated_as_opa_reads_them(
    resolvers: list[dict[str, Any]], roots: tuple[str, ...] | None, match: str
) -> None:
    # OPA refuses to read such a bundle (Manifest.validateAndInjectDefaults).
    with pytest.raises(BundleError, match=match):
        _wasm_bundle(resolvers, roots)


@pytest.mark.parametrize("engine", ["embedded", "opa"])
def test_a_bundle_with_wasm_entrypoints_is_not_evaluated_from_its_rego(engine: str) -> None:
    # `opa eval -b` hands the entrypoints to its Wasm runtime (and fails
    # without one); answering from the Rego beside it would be another answer.
    b = _wasm_bundle([{"entrypoint": "a/x", "module": "/policy.wasm"}])
    with pytest.raises(UnsupportedByEngineError, match="Wasm"):
        b.evaluate("data.a.x", engine=engine)
    b.check(engine="embedded")  # `opa check` checks the Rego and passes it


@pytest.mark.parametrize(
    ("package", "path"),
    [
        ('a["b"]', ("a", "b")),
        ("a[`b`]", ("a", "b")),
        ('a[`b`]["c-d"].e', ("a", "b", "c-d", "e")),
        ('a[ "b" ]', ("a", "b")),
    ],
)
def test_package_paths_with_string_keys_read_as_opa_reads_them(
    package: str, path: tuple[str, ...]
) -> None:
    # `opa check` accepts each (a raw string key included); the roots check
    # must place the package where OPA does, not refuse it.
    b = Bundle(
        manifest=Manifest(roots=("/".join(path),)),
        modules={"m.rego": f"package {package}\n\nx := 1\n"},
    )
    assert b.modules


def test_a_package_path_with_a_number_key_is_refused_as_opa_refuses_it() -> None:
    with pytest.raises(BundleError, match="malformed package path"):
        Bundle(modules={"m.rego": "package a[1]\n\nx := 1\n"})
