"""Bundles against real OPA: opa build → us, us → opa eval / opa run, check agreement."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from policysupply import Bundle, BundleError
from policysupply._internal.tarball import write_entries
from tests.interop.conftest import OpaServer, run_opa

pytestmark = pytest.mark.interop


def _sorted_sets(value: Any) -> Any:
    # OPA returns sets as JSON arrays; compare them order-insensitively.
    if isinstance(value, list):
        items = [_sorted_sets(v) for v in value]
        return sorted(items, key=lambda v: json.dumps(v, sort_keys=True))
    if isinstance(value, dict):
        return {k: _sorted_sets(v) for k, v in value.items()}
    return value


def _cases(fixtures_dir: Path) -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = json.loads((fixtures_dir / "kubernetes_cases.json").read_text())
    assert len(cases) >= 6
    return cases


@pytest.mark.parametrize("tree", ["pinned", "example"])
def test_opa_build_output_reads_identically(
    tree: str, opa_bin: Path, tmp_path: Path, fixtures_dir: Path, example_dir: Path
) -> None:
    src = fixtures_dir / "pinned" if tree == "pinned" else example_dir
    out = tmp_path / "opa.tar.gz"
    proc = run_opa(opa_bin, "build", "-b", ".", "-o", str(out), cwd=src)
    assert proc.returncode == 0, proc.stderr.decode()
    theirs = Bundle.from_file(out)
    ours = Bundle.from_directory(src)
    assert dict(theirs.modules) == dict(ours.modules)
    assert theirs.data == ours.data
    assert theirs.manifest.revision == ours.manifest.revision
    assert theirs.manifest.roots == ours.manifest.roots
    assert theirs.manifest.metadata == ours.manifest.metadata
    assert {theirs.rego_version_of(m) for m in theirs.modules} == {1}
    # And what we write from their bundle is again a bundle with the same content.
    assert Bundle.from_bytes(theirs.to_bytes()) == theirs


def test_opa_eval_on_our_bundle_matches_evaluate(
    opa_bin: Path, tmp_path: Path, fixtures_dir: Path, example_dir: Path
) -> None:
    bundle = Bundle.from_directory(example_dir)
    path = bundle.write(tmp_path / "bundle.tar.gz")
    for case in _cases(fixtures_dir):
        proc = run_opa(
            opa_bin,
            "eval",
            "--format",
            "json",
            "--bundle",
            str(path),
            "--stdin-input",
            case["query"],
            stdin=json.dumps(case["input"]).encode(),
        )
        assert proc.returncode == 0, proc.stderr.decode()
        result = json.loads(proc.stdout)["result"][0]["expressions"][0]["value"]
        ours = bundle.evaluate(case["query"], case["input"])
        assert _sorted_sets(result) == _sorted_sets(case["expected"]), case["name"]
        assert _sorted_sets(ours) == _sorted_sets(result), case["name"]


def test_opa_server_loads_our_bundle_and_agrees(
    start_opa: Any, tmp_path: Path, fixtures_dir: Path, example_dir: Path
) -> None:
    bundle = Bundle.from_directory(example_dir, revision="served-1")
    path = bundle.write(tmp_path / "bundle.tar.gz")
    opa: OpaServer = start_opa("--bundle", str(path))
    status = opa.get("/v1/data/system/bundles")
    manifests = [b["manifest"] for b in status["result"].values()]
    assert [m["revision"] for m in manifests] == ["served-1"]
    for case in _cases(fixtures_dir):
        api_path = "/v1/" + case["query"].replace(".", "/")
        answer = opa.post(api_path, {"input": case["input"]})
        assert _sorted_sets(answer.get("result")) == _sorted_sets(
            bundle.evaluate(case["query"], case["input"])
        ), case["name"]


def test_v0_bundle_builds_roundtrips_and_loads_into_opa(opa_bin: Path, tmp_path: Path) -> None:
    legacy = (
        "package legacy.k8s\n\n"
        "deny[msg] {\n"
        "  input.request.object.spec.hostNetwork\n"
        '  msg := "hostNetwork is not allowed"\n'
        "}\n\n"
        "allow { count(deny) == 0 }\n"
    )
    root = tmp_path / "legacy"
    (root / "legacy").mkdir(parents=True)
    (root / "legacy" / "policy.rego").write_text(legacy)
    b = Bundle.from_directory(root, roots=["legacy"], rego_version=0)
    b.check()
    again = Bundle.from_bytes(b.to_bytes())
    assert again == b
    assert again.manifest.rego_version == 0
    path = b.write(tmp_path / "legacy.tar.gz")
    bad = {"request": {"object": {"spec": {"hostNetwork": True}}}}
    proc = run_opa(
        opa_bin,
        "eval",
        "--format",
        "json",
        "--bundle",
        str(path),
        "--stdin-input",
        "data.legacy.k8s.deny",
        stdin=json.dumps(bad).encode(),
    )
    assert proc.returncode == 0, proc.stderr.decode()
    # OPA applies v0 semantics from the manifest: `deny[msg]` is a set.
    assert json.loads(proc.stdout)["result"][0]["expressions"][0]["value"] == [
        "hostNetwork is not allowed"
    ]
    # The OPA engine answers as opa eval; the embedded one refuses v0.
    assert b.evaluate("data.legacy.k8s.deny", bad, engine="opa") == ["hostNetwork is not allowed"]
    with pytest.raises(BundleError, match="Rego v0"):
        b.evaluate("data.legacy.k8s.deny", bad, engine="embedded")


def _check_module(name: str, source: str) -> None:
    # A module without a package line is refused when the Bundle is built;
    # anything else when it is checked.
    Bundle(modules={name: source}).check()


def _broken_cases(fixtures_dir: Path) -> list[Path]:
    files = sorted((fixtures_dir / "broken_rego").glob("*.rego"))
    assert len(files) >= 8
    return files


def test_opa_check_and_check_agree_on_broken_modules(opa_bin: Path, fixtures_dir: Path) -> None:
    # expected.json pins OPA's line and message for every broken module (taken
    # from the real `opa check`); check() reports the same line for all of them
    # and, for the semantic errors (assign to call, re-assignment, unsafe
    # variables, type errors, arity), OPA's message too.
    expected = json.loads((fixtures_dir / "broken_rego" / "expected.json").read_text())
    files = _broken_cases(fixtures_dir)
    assert sorted(expected) == [p.name for p in files]
    for path in files:
        proc = run_opa(opa_bin, "check", "--format", "json", str(path))
        assert proc.returncode != 0, f"opa check accepted {path.name}"
        errors = json.loads(proc.stdout or proc.stderr)["errors"]
        want = expected[path.name]
        assert errors[0]["location"]["row"] == want["opa_line"], path.name
        assert want["opa_message"] in errors[0]["message"], path.name
        with pytest.raises(BundleError) as err:
            _check_module(path.name, path.read_text())
        assert err.value.entry == path.name
        assert err.value.line == errors[0]["location"]["row"], (path.name, str(err.value))
        if "message" in want:
            assert want["message"] in str(err.value), path.name


def test_opa_check_and_check_agree_on_good_modules(
    opa_bin: Path, fixtures_dir: Path, example_dir: Path
) -> None:
    for src in (fixtures_dir / "pinned", example_dir):
        proc = run_opa(opa_bin, "check", "-b", str(src))
        assert proc.returncode == 0, proc.stderr.decode()
        Bundle.from_directory(src).check()


def test_opa_reads_every_entry_we_write(opa_bin: Path, tmp_path: Path) -> None:
    # Long names (PAX headers), unicode and nested data all survive into OPA.
    long_dir = "/".join(["segment"] * 12)
    entries = {
        f"deep/{long_dir}/policy.rego": 'package deep\n\ngreeting := "grüße"\n'.encode(),
        "deep/data.json": b'{"n": 1}',
        ".manifest": b'{"roots": ["deep"]}',
    }
    path = tmp_path / "long.tar.gz"
    path.write_bytes(Bundle.from_bytes(write_entries(entries)).to_bytes())
    proc = run_opa(opa_bin, "eval", "--format", "json", "--bundle", str(path), "data.deep")
    assert proc.returncode == 0, proc.stderr.decode()
    value = json.loads(proc.stdout)["result"][0]["expressions"][0]["value"]
    assert value == {"greeting": "grüße", "n": 1}


@pytest.mark.parametrize("engine", ["embedded", "opa"])
def test_a_wasm_bundle_from_opa_build_is_refused_where_opa_eval_fails(
    engine: str, opa_bin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `opa build -t wasm` maps the entrypoint to policy.wasm; `opa eval -b`
    # hands it to a Wasm runtime (none in this build: an error), so an answer
    # from the Rego beside it would be an answer OPA never gives.
    monkeypatch.setenv("POLICYSUPPLY_OPA", str(opa_bin))
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.rego").write_text("package a\n\nx := 1\n")
    out = tmp_path / "w.tar.gz"
    assert (
        run_opa(
            opa_bin, "build", "-t", "wasm", "-e", "a/x", "-b", "d", "-o", str(out), cwd=tmp_path
        ).returncode
        == 0
    )
    theirs = json.loads(run_opa(opa_bin, "eval", "-b", str(out), "data.a.x").stdout)
    assert "errors" in theirs
    b = Bundle.from_file(out)
    assert b.manifest.wasm
    with pytest.raises(BundleError, match="Wasm"):
        b.evaluate("data.a.x", engine=engine)


def test_a_manifest_naming_a_missing_wasm_module_is_refused_as_opa_refuses_it(
    opa_bin: Path, tmp_path: Path
) -> None:
    manifest = {"roots": [""], "wasm": [{"entrypoint": "a/x", "module": "/policy.wasm"}]}
    raw = write_entries(
        {".manifest": json.dumps(manifest).encode(), "a.rego": b"package a\n\nx := 1\n"}
    )
    path = tmp_path / "b.tar.gz"
    path.write_bytes(raw)
    proc = run_opa(opa_bin, "eval", "-b", str(path), "data.a.x")
    assert b"module file does not exist" in proc.stdout + proc.stderr
    with pytest.raises(BundleError, match="module file does not exist"):
        Bundle.from_file(path)
