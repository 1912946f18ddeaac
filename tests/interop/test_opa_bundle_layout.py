"""Which files of a policy directory are in the bundle: real ``opa build -b`` / ``opa check``.

Hidden directories and files (``.hidden/``, ``.x.rego``, ``.git/``) are read by
OPA, so they must be read by ``Bundle.from_directory`` too: same module set,
same data document, and a refusal wherever OPA refuses. Where OPA would read a
file in a surprising way (a ``.manifest`` or ``.signatures.json`` below the
root, a directory named only of dots) we refuse with the path named instead.
"""

from __future__ import annotations

import io
import json
import tarfile
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
        "p/.data.json": '{"ignored": 1}',
    },
    # `-b .` trims one dot off top-level names only: these stay apart.
    "dots-apart": {
        "..x/a.rego": "package a\n\na := 1\n",
        ".x/a.rego": "package b\n\nb := 1\n",
        "a/.h/x.rego": "package c\n\nc := 1\n",
        "a/h/x.rego": "package d\n\nd := 1\n",
    },
    "inner-dots": {
        "a/.b/data.json": '{"z": 1}',
        "..x/data.json": '{"y": 2}',
        ".c/.d/data.json": "3",
    },
    "git": {
        ".git/HEAD": "ref: x\n",
        ".git/objects/x.rego": "package g\n\ng := 1\n",
        ".git/data.json": '{"g": 1}',
        "pol/p.rego": POL,
    },
    "merge": {".h/data.json": '{"a": 1}', "h/data.json": '{"b": 2}'},
    "conflict": {".h/data.json": '{"a": 1}', "h/data.json": '{"a": 2}'},
    # Other data paths that normalise to one (getNormalizedPath strips all
    # leading dots; data.json, data.yaml and data.yml of a directory share it).
    "dots-merge": {"..h/data.json": '{"a": 1}', ".h/data.json": '{"b": 2}'},
    "dots-conflict": {"..h/data.json": '{"a": 1}', "h/data.json": '{"a": 2}'},
    "json-yaml-merge": {"h/data.json": '{"a": 1}', "h/data.yaml": "b: 2\n", "h/data.yml": "c: 3\n"},
    "json-yaml-conflict": {"h/data.json": '{"a": 1}', "h/data.yaml": "a: 2\n"},
    "roots": {".manifest": '{"roots": ["pol"]}', "pol/p.rego": POL, ".hidden/x.rego": DENY},
    "two-manifests": {
        ".manifest": '{"roots": ["pol"]}',
        "sub/.manifest": '{"roots": ["pol"]}',
        "pol/p.rego": POL,
    },
    "bad-hidden-rego": {".hidden/x.rego": "package h\n\nallow if {\n", "pol/p.rego": POL},
    # OPA carries Wasm modules and plans at any depth into the bundle as they are.
    "wasm-and-plans": {
        "sub/policy.wasm": "\0asm\1\0\0\0",
        "sub/plan.json": "{}",
        ".h/policy.wasm": "\0asm\1\0\0\0",
        "pol/p.rego": POL,
    },
}


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, body in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(body)
    return root


def _opa_build(opa_bin: Path, parent: Path, name: str = "d") -> Bundle | None:
    out = parent / "opa.tar.gz"
    # `-b d`: module paths are `/d/<path as on disk>`. With `-b .` (see
    # _opa_build_dot) OPA trims the first dot off top-level names.
    proc = run_opa(opa_bin, "build", "-b", name, "-o", str(out), cwd=parent)
    return Bundle.from_file(out) if proc.returncode == 0 else None


def _opa_build_dot(opa_bin: Path, root: Path) -> tuple[Bundle | None, str]:
    """``opa build -b .`` run inside ``root``: the bundle (None if refused) and its report."""
    out = root.parent / "opa-dot.tar.gz"
    proc = run_opa(opa_bin, "build", "-b", ".", "-o", str(out), cwd=root)
    # opa build prints its error on stdout.
    report = (proc.stdout + proc.stderr).decode()
    return (Bundle.from_file(out) if proc.returncode == 0 else None), report


def _trim_first_dot(module: str) -> str:
    # What formatPath (v1/bundle/file.go) does to a path under the root ".".
    return module.removeprefix("/").removeprefix(".")


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
    assert {f.removeprefix("d/"): b for f, b in theirs.files.items()} == dict(ours.files)
    assert theirs.manifest.roots == (ours.manifest.roots or ("",))  # OPA writes the default
    # Our bundle from the same tree again reads back the same, byte for byte.
    assert Bundle.from_directory(src).to_bytes() == ours.to_bytes()
    # What we accept, `opa build -b .` reads the same way as `opa build -b d`.
    dot, _ = _opa_build_dot(opa_bin, src)
    assert dot is not None, case
    assert dot.data == ours.data
    assert set(dot.modules) == {_trim_first_dot(m) for m in ours.modules}


def test_hidden_deny_rule_is_enforced_by_opa_on_our_bundle(opa_bin: Path, tmp_path: Path) -> None:
    src = _tree(tmp_path / "d", AGREE["hidden-dir"])
    path = Bundle.from_directory(src).write(tmp_path / "ours.tar.gz")
    proc = run_opa(
        opa_bin,
        "eval",
        "--format",
        "json",
        "--bundle",
        str(path),
        "--stdin-input",
        "data.h.deny",
        stdin=b'{"x": true}',
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert json.loads(proc.stdout)["result"][0]["expressions"][0]["value"] == ["hidden deny"]


# name -> (files, what OPA does): OPA accepts these but reads them in a way a
# reader of the tree would not expect; we refuse, naming the file.
REFUSE: dict[str, tuple[dict[str, str], str]] = {
    "sub-manifest": (
        {"sub/.manifest": '{"roots": ["pol"], "revision": "sub"}', "pol/p.rego": POL},
        "sub/.manifest",
    ),
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


def test_signatures_below_the_root_refused_as_opa_build_does(opa_bin: Path, tmp_path: Path) -> None:
    src = _tree(tmp_path / "d", {"sub/.signatures.json": '{"signatures": []}', "pol/p.rego": POL})
    # opa build takes it as the bundle's signatures file (and wants a key);
    # opa check skips verification and so ignores it.
    assert _opa_build(opa_bin, tmp_path) is None
    with pytest.raises(BundleError, match="signatures") as err:
        Bundle.from_directory(src)
    assert err.value.entry == "sub/.signatures.json"


def test_tarball_with_hidden_entries_reads_as_opa_reads_it(opa_bin: Path, tmp_path: Path) -> None:
    from policysupply._internal.tarball import write_entries

    raw = write_entries(
        {
            ".hidden/data.json": b'{"z": 1}',
            "a/.b/data.json": b"2",
            ".x.rego": b"package hx\nx := 1\n",
        }
    )
    path = tmp_path / "t.tar.gz"
    path.write_bytes(raw)
    proc = run_opa(opa_bin, "eval", "--format", "json", "--bundle", str(path), "data")
    assert proc.returncode == 0, proc.stderr.decode()
    value = json.loads(proc.stdout)["result"][0]["expressions"][0]["value"]
    b = Bundle.from_bytes(raw)
    assert set(b.modules) == {".x.rego"}
    assert b.data == {"a": {".b": 2}, "hidden": {"z": 1}}
    assert value == {**b.data, "hx": {"x": 1}}


# -- symlinks -------------------------------------------------------------------------
# OPA (without --follow-symlinks) leaves every symlink out: dirLoader.NextFile
# (v1/bundle/file.go) walks with filepath.Walk, which lstat()s, and keeps only
# regular files (and descends only into real directories). A symlinked deny
# rule would vanish from OPA's bundle, so we refuse the link, naming it.

SYMLINKS: dict[str, tuple[str, str]] = {
    "module": ("sub/deny.rego", "../real/deny.rego"),
    "data": ("sub/data.json", "../real/data.json"),
    "dangling": ("gone.rego", "nowhere.rego"),
    "leaving": ("out.rego", "../../outside/o.rego"),
    "directory": ("linkdir", "real"),
    "directory-leaving": ("outdir", "../outside"),
}


def _linked(root: Path) -> Path:
    _tree(root / "outside", {"o.rego": "package o\n\no := 1\n", "data.json": '{"o": 1}'})
    return _tree(
        root / "d",
        {
            "pol/p.rego": POL,
            "real/deny.rego": DENY.replace("h", "real", 1),
            "real/data.json": '{"r": 1}',
        },
    )


@pytest.mark.parametrize("case", sorted(SYMLINKS))
def test_a_symlink_opa_leaves_out_is_refused(case: str, opa_bin: Path, tmp_path: Path) -> None:
    link, target = SYMLINKS[case]
    src = _linked(tmp_path)
    without = _opa_build(opa_bin, tmp_path)
    (src / link).parent.mkdir(parents=True, exist_ok=True)
    (src / link).symlink_to(target)
    theirs = _opa_build(opa_bin, tmp_path)
    assert theirs is not None
    assert without is not None
    assert run_opa(opa_bin, "check", "--bundle", "d", cwd=tmp_path).returncode == 0
    # OPA accepts the tree, silently as if the link were not there ...
    assert set(theirs.modules) == set(without.modules)
    assert theirs.data == without.data
    # ... we refuse it, naming the link.
    with pytest.raises(BundleError, match="symlink") as err:
        Bundle.from_directory(src)
    assert err.value.entry == link


def test_symlinks_without_policy_are_left_out_by_both(opa_bin: Path, tmp_path: Path) -> None:
    src = _linked(tmp_path)
    _tree(src, {"docs/readme.md": "x", ".venv/lib/site.py": "x"})
    (src / "README.md").symlink_to("docs/readme.md")
    (src / ".venv" / "lib64").symlink_to("lib")
    theirs = _opa_build(opa_bin, tmp_path)
    assert theirs is not None
    ours = Bundle.from_directory(src)
    assert {m.removeprefix("d/") for m in theirs.modules} == set(ours.modules)
    assert theirs.data == ours.data


def test_a_symlinked_root_is_refused_as_opa_reads_nothing_through_it(
    opa_bin: Path, tmp_path: Path
) -> None:
    src = _linked(tmp_path)
    (tmp_path / "link").symlink_to("d")
    # `opa build -b link` lstat()s the root: an empty bundle, and `opa check` passes.
    empty = _opa_build(opa_bin, tmp_path, "link")
    assert empty is not None
    assert (empty.modules, empty.data) == ({}, {})
    assert run_opa(opa_bin, "check", "--bundle", "link", cwd=tmp_path).returncode == 0
    with pytest.raises(BundleError, match="symlink"):
        Bundle.from_directory(tmp_path / "link")
    # With a trailing slash both follow it.
    theirs = _opa_build(opa_bin, tmp_path, "link/")
    ours = Bundle.from_directory(f"{tmp_path / 'link'}/")
    assert theirs is not None
    assert {m.removeprefix("link/") for m in theirs.modules} == set(ours.modules)
    assert theirs.data == ours.data
    assert ours.to_bytes() == Bundle.from_directory(src).to_bytes()


# -- `opa build -b .`: the first dot of a top-level name is trimmed --------------------
# formatPath (v1/bundle/file.go, Chrooted) strips the root "." as a string
# prefix, so `.h/x.rego` becomes `/h/x.rego`; compile() (v1/compile/compile.go)
# then refuses two modules with one URL. `opa build -b d` keeps them apart.

DUPLICATES: dict[str, tuple[str, str]] = {
    "hidden-dir": (".h/x.rego", "h/x.rego"),
    "hidden-file": (".x.rego", "x.rego"),
}


@pytest.mark.parametrize("case", sorted(DUPLICATES))
def test_modules_opa_build_dot_takes_for_one_are_refused(
    case: str, opa_bin: Path, tmp_path: Path
) -> None:
    one, two = DUPLICATES[case]
    src = _tree(tmp_path / "d", {one: "package a\n\na := 1\n", two: "package b\n\nb := 1\n"})
    dot, report = _opa_build_dot(opa_bin, src)
    assert dot is None
    assert f"duplicate module URL: {two}" in report
    assert _opa_build(opa_bin, tmp_path) is not None  # `-b d` keeps them apart
    with pytest.raises(BundleError, match="duplicate module") as err:
        Bundle.from_directory(src)
    assert err.value.entry == two
    assert one in err.value.reason


@pytest.mark.parametrize("name", [".data.json", ".data.yaml"])
def test_top_level_hidden_data_file_is_refused(name: str, opa_bin: Path, tmp_path: Path) -> None:
    body = '{"z": 1}' if name.endswith("json") else "z: 1\n"
    src = _tree(tmp_path / "d", {"pol/p.rego": POL, name: body})
    dot, _ = _opa_build_dot(opa_bin, src)
    plain = _opa_build(opa_bin, tmp_path)
    assert dot is not None
    assert plain is not None
    assert dot.data == {"z": 1}  # `-b .` reads it as the top-level data.json ...
    assert plain.data == {}  # ... `-b d` leaves it out
    with pytest.raises(BundleError, match="opa build -b") as err:
        Bundle.from_directory(src)
    assert err.value.entry == name


def test_a_patch_file_is_refused_as_opa_builds_a_delta_bundle(
    opa_bin: Path, tmp_path: Path
) -> None:
    import tarfile

    patch = '{"data": [{"op": "upsert", "path": "/x", "value": 1}]}'
    src = _tree(tmp_path / "d", {"sub/patch.json": patch})
    out = tmp_path / "opa.tar.gz"
    proc = run_opa(opa_bin, "build", "-b", "d", "-o", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout
    with tarfile.open(out) as tar:
        assert "/patch.json" in tar.getnames()  # a delta bundle, not a snapshot
    with pytest.raises(BundleError, match="patch") as err:
        Bundle.from_directory(src)
    assert err.value.entry == "sub/patch.json"
    # Beside policy or data OPA refuses the tree; so do we.
    _tree(src, {"pol/p.rego": POL})
    assert _opa_build(opa_bin, tmp_path) is None
    with pytest.raises(BundleError, match="patch"):
        Bundle.from_directory(src)


def test_a_kubernetes_configmap_volume_is_refused(opa_bin: Path, tmp_path: Path) -> None:
    stamp = "..2026_12_02_16_00_00.1"
    src = _tree(tmp_path / "d", {f"{stamp}/p.rego": POL, f"{stamp}/data.json": '{"a": 1}'})
    (src / "..data").symlink_to(stamp)
    (src / "p.rego").symlink_to("..data/p.rego")
    (src / "data.json").symlink_to("..data/data.json")
    theirs = _opa_build(opa_bin, tmp_path)
    assert theirs is not None
    # OPA reads the timestamped directory only: its data lands under the stamp.
    assert theirs.data == {stamp.lstrip("."): {"a": 1}}
    assert set(theirs.modules) == {f"d/{stamp}/p.rego"}
    with pytest.raises(BundleError, match="ConfigMap") as err:
        Bundle.from_directory(src)
    assert err.value.entry == "..data"


def test_tarball_duplicate_module_paths_are_refused_where_opa_keeps_the_last(
    opa_bin: Path, tmp_path: Path
) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, body in [("x.rego", b"package a\na := 1\n"), ("/x.rego", b"package b\nb := 1\n")]:
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    path = tmp_path / "t.tar.gz"
    path.write_bytes(buf.getvalue())
    proc = run_opa(opa_bin, "eval", "--format", "json", "--bundle", str(path), "data")
    assert proc.returncode == 0
    # OPA loads one of the two silently (package a is gone) ...
    assert json.loads(proc.stdout)["result"][0]["expressions"][0]["value"] == {"b": {"b": 1}}
    with pytest.raises(BundleError, match="duplicate"):  # ... we refuse the archive
        Bundle.from_bytes(buf.getvalue())


def test_a_protobuf_plan_is_refused_as_opa_build_refuses_it(opa_bin: Path, tmp_path: Path) -> None:
    # A plan.pb beside a JSON manifest: `opa build` refuses ("proto plan"),
    # and a bundle tarball carrying one is refused the same way.
    src = _tree(tmp_path / "d", {"p/plan.pb": "\0", "pol/p.rego": POL})
    assert _opa_build(opa_bin, tmp_path) is None
    with pytest.raises(BundleError) as err:
        Bundle.from_directory(src)
    assert err.value.entry == "p/plan.pb"
    tarball = Bundle.from_directory(tmp_path / "d" / "pol").to_bytes()
    with tarfile.open(fileobj=io.BytesIO(tarball)) as tin:
        members = [(m, tin.extractfile(m)) for m in tin.getmembers()]
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w:gz") as tout:
            for m, f in members:
                tout.addfile(m, f)
            extra = tarfile.TarInfo("/p/plan.pb")
            extra.size = 1
            tout.addfile(extra, io.BytesIO(b"\0"))
    with pytest.raises(BundleError) as err:
        Bundle.from_bytes(out.getvalue())
    assert str(err.value.entry).endswith("p/plan.pb")


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
