"""Which files of a policy directory are in the bundle: real ``opa build -b`` / ``opa check``.

Hidden directories and files (``.hidden/``, ``.x.rego``, ``.git/``) are read by
OPA, so they must be read by ``Bundle.from_directory`` too: same module set,
same data document, and a refusal wherever OPA refuses. Where OPA would read a
file in a surprising way (a ``.manifest`` or ``.signatures.json`` below the
root, a directory named only of dots) we refuse with the path named instead.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from policysupply import Bundle, BundleError
from tests import _tar_differential as tar_differential
from tests.interop.conftest import run_opa

pytestmark = pytest.mark.interop

DENY = 'package h\n\ndeny contains "hidden deny" if input.x\n'
POL = "package pol\n\nallow := true\n"

# name -> files; OPA and we agree on these (both accept, or both refuse).
AGREE: dict[str, dict[str, str]] = {
    "hidden-dir": {".hidden/x.rego": DENY, ".hidden/data.json": '{"z": 1}', "pol/p.rego": POL},
    "hidden-files": {
        ".x.rego": "package hx\n\nx := 1\n",
        "p/.y.rego": "package hy\n\ny := 1\n",
        ".data.json": '{"ignored": 1}',
        "p/.data.json": '{"ignored": 1}',
    },
    "inner-dots": {
        "a/.b/data.json": '{"z": 1}', "..x/data.json": '{"y": 2}', ".c/.d/data.json": "3"},
    "git": {".git/HEAD": "ref: x\n", ".git/objects/x.rego": "package g\n\ng := 1\n",
            ".git/data.json": '{"g": 1}', "pol/p.rego": POL},
    "merge": {".h/data.json": '{"a": 1}', "h/data.json": '{"b": 2}'},
    "conflict": {".h/data.json": '{"a": 1}', "h/data.json": '{"a": 2}'},
    "roots": {".manifest": '{"roots": ["pol"]}', "pol/p.rego": POL, ".hidden/x.rego": DENY},
    "two-manifests": {".manifest": '{"roots": ["pol"]}', "sub/.manifest": '{"roots": ["pol"]}',
                      "pol/p.rego": POL},
    "bad-hidden-rego": {".hidden/x.rego": "package h\n\nallow if {\n", "pol/p.rego": POL},
}


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, body in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(body)
    return root


def _opa_build(opa_bin: Path, parent: Path) -> Bundle | None:
    out = parent / "opa.tar.gz"
    # `-b d`, not `-b .`: with `.` OPA also trims the first dot off top-level
    # names in module paths (`.x.rego` -> `/x.rego`); with a directory name
    # the paths are `/d/<path as on disk>`.
    proc = run_opa(opa_bin, "build", "-b", "d", "-o", str(out), cwd=parent)
    return Bundle.from_file(out) if proc.returncode == 0 else None


@pytest.mark.parametrize("case", sorted(AGREE))
def test_we_read_a_directory_as_opa_build_and_check_do(
    case: str, opa_bin: Path, tmp_path: Path
) -> None:
    src = _tree(tmp_path / "d", AGREE[case])
    theirs = _opa_build(opa_bin, tmp_path)
    checked = run_opa(opa_bin, "check", "--bundle", "d", cwd=tmp_path).returncode == 0
    assert checked == (theirs is not None), case
    try:
        ours: Bundle | None = Bundle.from_directory(src)
        ours.check()
    except BundleError:
        ours = None
    assert (ours is None) == (theirs is None), case
    if ours is None or theirs is None:
        return
    assert {m.removeprefix("d/") for m in theirs.modules} == set(ours.modules)
    assert theirs.data == ours.data
    assert theirs.manifest.roots == (ours.manifest.roots or ("",))  # OPA writes the default
    # Our bundle from the same tree again reads back the same, byte for byte.
    assert Bundle.from_directory(src).to_bytes() == ours.to_bytes()


def test_hidden_deny_rule_is_enforced_by_opa_on_our_bundle(opa_bin: Path, tmp_path: Path) -> None:
    src = _tree(tmp_path / "d", AGREE["hidden-dir"])
    path = Bundle.from_directory(src).write(tmp_path / "ours.tar.gz")
    proc = run_opa(opa_bin, "eval", "--format", "json", "--bundle", str(path),
                   "--stdin-input", "data.h.deny", stdin=b'{"x": true}')
    assert proc.returncode == 0, proc.stderr.decode()
    assert json.loads(proc.stdout)["result"][0]["expressions"][0]["value"] == ["hidden deny"]


# name -> (files, what OPA does): OPA accepts these but reads them in a way a
# reader of the tree would not expect; we refuse, naming the file.
REFUSE: dict[str, tuple[dict[str, str], str]] = {
    "sub-manifest": ({"sub/.manifest": '{"roots": ["pol"], "revision": "sub"}',
                      "pol/p.rego": POL}, "sub/.manifest"),
    "x-manifest": ({"x.manifest": '{"roots": ["pol"]}', "pol/p.rego": POL}, "x.manifest"),
    "dots-only-dir": ({".../data.json": '{"z": 1}', "pol/p.rego": POL}, ".../data.json"),
}


@pytest.mark.parametrize("case", sorted(REFUSE))
def test_we_refuse_what_opa_reads_surprisingly(case: str, opa_bin: Path, tmp_path: Path) -> None:
    files, entry = REFUSE[case]
    src = _tree(tmp_path / "d", files)
    theirs = _opa_build(opa_bin, tmp_path)
    assert theirs is not None  # OPA accepts ...
    if case.endswith("manifest"):
        assert theirs.manifest.roots == ("pol",)  # ... and takes it as the bundle's manifest
    else:
        assert theirs.data == {"z": 1}  # ... and moves the data to the top
    with pytest.raises(BundleError) as err:
        Bundle.from_directory(src)
    assert err.value.entry == entry


def test_signatures_below_the_root_refused_as_opa_build_does(
    opa_bin: Path, tmp_path: Path
) -> None:
    src = _tree(tmp_path / "d", {"sub/.signatures.json": '{"signatures": []}', "pol/p.rego": POL})
    # opa build takes it as the bundle's signatures file (and wants a key);
    # opa check skips verification and so ignores it.
    assert _opa_build(opa_bin, tmp_path) is None
    with pytest.raises(BundleError, match="signatures") as err:
        Bundle.from_directory(src)
    assert err.value.entry == "sub/.signatures.json"


def test_tarball_with_hidden_entries_reads_as_opa_reads_it(opa_bin: Path, tmp_path: Path) -> None:
    from policysupply._internal.tarball import write_entries

    raw = write_entries({
        ".hidden/data.json": b'{"z": 1}',
        "a/.b/data.json": b"2",
        ".x.rego": b"package hx\nx := 1\n",
    })
    path = tmp_path / "t.tar.gz"
    path.write_bytes(raw)
    proc = run_opa(opa_bin, "eval", "--format", "json", "--bundle", str(path), "data")
    assert proc.returncode == 0, proc.stderr.decode()
    value = json.loads(proc.stdout)["result"][0]["expressions"][0]["value"]
    b = Bundle.from_bytes(raw)
    assert set(b.modules) == {".x.rego"}
    assert b.data == {"a": {".b": 2}, "hidden": {"z": 1}}
    assert value == {**b.data, "hx": {"x": 1}}


@pytest.mark.parametrize("case", sorted(tar_differential.CASES))
def test_tarball_opa_reads_differently_is_refused(
    case: str, opa_bin: Path, tmp_path: Path
) -> None:
    import gzip

    raw = gzip.compress(tar_differential.CASES[case]())
    path = tmp_path / "t.tar.gz"
    path.write_bytes(raw)
    proc = run_opa(opa_bin, "eval", "--format", "json", "--bundle", str(path), "data")
    assert proc.returncode == 0, proc.stderr.decode()
    value = json.loads(proc.stdout)["result"][0]["expressions"][0]["value"]
    assert value == {"a": {"allow": True}, "b": {"evil": True}}  # OPA runs package b ...
    from policysupply._internal.tarball import read_entries

    with pytest.raises(BundleError):  # ... so a reader that does not see it must refuse
        read_entries(raw)


@pytest.mark.parametrize(
    "case",
    [
        "ustar_name",
        "pax_path",
    ],
)
def test_regular_file_with_a_trailing_slash_is_not_loaded_by_opa(
    case: str, opa_bin: Path, tmp_path: Path
) -> None:
    import gzip

    from policysupply._internal.tarball import read_entries

    raw = gzip.compress(tar_differential.SLASH_CASES[case]())
    path = tmp_path / "t.tar.gz"
    path.write_bytes(raw)
    proc = run_opa(opa_bin, "eval", "--format", "json", "--bundle", str(path), "data")
    assert proc.returncode == 0, proc.stderr.decode()
    value = json.loads(proc.stdout)["result"][0]["expressions"][0]["value"]
    assert value == {"a": {"allow": True}}  # OPA does not load package d ...
    with pytest.raises(BundleError):  # ... so a reader that would must refuse the file
        read_entries(raw)
