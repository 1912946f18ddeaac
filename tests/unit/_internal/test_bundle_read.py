"""Which files of a policy directory (or tarball) become part of the bundle.

``opa build -b DIR`` and ``opa check --bundle DIR`` walk every directory,
hidden ones included (``v1/bundle/file.go`` ``dirLoader.NextFile`` has no
hidden-name filter, and the CLI passes none unless ``--ignore`` is given), so
a policy kept under ``.hidden/`` is part of OPA's bundle. Dropping it would
silently change the policy (a deny rule there would vanish: fail-open).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from policysupply import Bundle, BundleError
from policysupply._internal import bundle_format as bf
from policysupply._internal.tarball import read_entries, write_entries

DENY = 'package h\n\ndeny contains msg if {\n\tinput.x\n\tmsg := "no"\n}\n'
POL = "package pol\n\nallow := true\n"


def tree(root: Path, files: dict[str, str]) -> Path:
    for name, body in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(body)
    return root


# -- the attack: a hidden directory's policy and data are part of the bundle ----------


def test_hidden_directory_policy_and_data_are_kept(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            ".hidden/x.rego": DENY,
            ".hidden/data.json": '{"z": 1}',
            "pol/p.rego": POL,
        },
    )
    b = Bundle.from_directory(root)
    assert set(b.modules) == {".hidden/x.rego", "pol/p.rego"}
    # OPA strips the leading dots of a data file's directory (getNormalizedPath).
    assert b.data == {"hidden": {"z": 1}}
    entries = read_entries(b.to_bytes())
    assert ".hidden/x.rego" in entries  # written as /.hidden/x.rego
    assert Bundle.from_bytes(b.to_bytes()) == b


def test_hidden_files_are_read_as_opa_reads_them(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            ".x.rego": "package hx\n\nx := 1\n",
            "p/.y.rego": "package hy\n\ny := 1\n",
            # Not a data file for OPA either: only the basenames data.json/yaml/yml are
            # (a top-level .data.json is refused: see test_a_top_level_hidden_data_file_is_refused).
            "p/.data.json": '{"ignored": 1}',
        },
    )
    b = Bundle.from_directory(root)
    assert set(b.modules) == {".x.rego", "p/.y.rego"}
    assert b.data == {}


def test_git_directory_is_walked_like_any_other(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            ".git/HEAD": "ref: refs/heads/main\n",
            ".git/objects/x.rego": "package g\n\ng := 1\n",
            ".git/data.json": '{"g": 1}',
            "p/p.rego": POL,
        },
    )
    b = Bundle.from_directory(root)
    assert set(b.modules) == {".git/objects/x.rego", "p/p.rego"}
    assert b.data == {"git": {"g": 1}}


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("data.json", ()),
        ("a/b/data.json", ("a", "b")),
        (".hidden/data.json", ("hidden",)),
        ("..x/data.json", ("x",)),
        ("/.hidden/data.json", ("hidden",)),
        # Only the leading dots of the whole directory are stripped, as OPA does.
        ("a/.b/data.json", ("a", ".b")),
        (".a/.b/data.json", ("a", ".b")),
    ],
)
def test_data_path_of_matches_opa(name: str, path: tuple[str, ...]) -> None:
    assert bf.data_path_of(name) == path


@pytest.mark.parametrize("name", [".../data.json", ".../q/data.json", "/..../data.yaml"])
def test_data_path_of_a_dots_only_directory_is_refused(name: str) -> None:
    # OPA would strip the whole component and move the data up a level.
    with pytest.raises(BundleError, match="only dots") as err:
        bf.data_path_of(name)
    assert err.value.entry == name


def test_hidden_and_plain_directory_merge_like_opa(tmp_path: Path) -> None:
    root = tree(tmp_path, {".h/data.json": '{"a": 1}', "h/data.json": '{"b": 2}'})
    assert Bundle.from_directory(root).data == {"h": {"a": 1, "b": 2}}


def test_hidden_and_plain_directory_conflict_is_refused(tmp_path: Path) -> None:
    root = tree(tmp_path, {".h/data.json": '{"a": 1}', "h/data.json": '{"a": 2}'})
    with pytest.raises(BundleError, match="already set") as err:
        Bundle.from_directory(root)
    assert err.value.entry == "h/data.json"


def test_hidden_module_outside_roots_is_refused(tmp_path: Path) -> None:
    root = tree(
        tmp_path, {".manifest": '{"roots": ["pol"]}', "pol/p.rego": POL, ".hidden/x.rego": DENY}
    )
    with pytest.raises(BundleError, match="outside the manifest roots") as err:
        Bundle.from_directory(root)
    assert err.value.entry == ".hidden/x.rego"


def test_dots_only_data_directory_is_refused(tmp_path: Path) -> None:
    root = tree(tmp_path, {"p/p.rego": POL, ".../data.json": '{"z": 1}'})
    with pytest.raises(BundleError, match="only dots") as err:
        Bundle.from_directory(root)
    assert err.value.entry == ".../data.json"


# -- files OPA would read as the manifest or the signatures: refused, never dropped ---


@pytest.mark.parametrize(
    ("name", "pattern"),
    [
        ("sub/.manifest", "manifest"),
        ("x.manifest", "manifest"),
        ("sub/x.manifest", "manifest"),
        (".manifest.pb", "manifest"),
        (".hidden/.manifest", "manifest"),
        ("sub/.signatures.json", "signatures"),
        (".hidden/.signatures.json", "signatures"),
    ],
)
def test_manifest_or_signatures_outside_the_root_is_refused(
    tmp_path: Path, name: str, pattern: str
) -> None:
    root = tree(tmp_path, {"pol/p.rego": POL, name: '{"roots": ["pol"]}'})
    with pytest.raises(BundleError, match=pattern) as err:
        Bundle.from_directory(root)
    assert err.value.entry == name


def test_hidden_tree_builds_deterministically(tmp_path: Path) -> None:
    files = {
        ".hidden/x.rego": DENY,
        ".hidden/data.json": '{"z": 1}',
        ".a/.b/data.json": '{"y": [1, 2]}',
        ".x.rego": "package hx\n\nx := 1\n",
        "pol/p.rego": POL,
    }
    one = Bundle.from_directory(tree(tmp_path / "one", files)).to_bytes()
    two = Bundle.from_directory(tree(tmp_path / "two", dict(reversed(files.items()))))
    assert one == two.to_bytes()


# -- tarballs: OPA's tar reader has no hidden-name filter either ----------------------


def test_tarball_hidden_entries_are_read_as_opa_reads_them() -> None:
    data = write_entries(
        {
            ".hidden/x.rego": DENY.encode(),
            ".hidden/data.json": b'{"z": 1}',
            "a/.b/data.json": b'{"y": 2}',
            ".x.rego": b"package hx\n\nx := 1\n",
        }
    )
    b = Bundle.from_bytes(data)
    assert set(b.modules) == {".hidden/x.rego", ".x.rego"}
    assert b.data == {"hidden": {"z": 1}, "a": {".b": {"y": 2}}}


@pytest.mark.parametrize(
    ("entries", "entry", "pattern"),
    [
        ({".../data.json": b'{"z": 1}'}, ".../data.json", "only dots"),
        ({"sub/.signatures.json": b'{"signatures": []}'}, "sub/.signatures.json", "signatures"),
        ({".manifest.pb": b""}, ".manifest.pb", "manifest"),
    ],
)
def test_tarball_entries_opa_reads_differently_are_refused(
    entries: dict[str, bytes], entry: str, pattern: str
) -> None:
    with pytest.raises(BundleError, match=pattern) as err:
        Bundle.from_bytes(write_entries({"x.rego": b"package x\n", **entries}))
    assert err.value.entry == entry


def test_a_directory_that_cannot_be_listed_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # OPA's walk skips it silently; a policy there would vanish, so we refuse.
    import os

    root = tree(tmp_path, {"pol/p.rego": POL, ".locked/x.rego": DENY})
    real = os.scandir

    def scandir(path: str) -> object:
        if str(path).endswith(".locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(BundleError, match="cannot read directory") as err:
        Bundle.from_directory(root)
    assert err.value.entry == ".locked"


# -- symlinks: OPA leaves every one out (v1/bundle/file.go dirLoader.NextFile walks --
# -- with filepath.Walk, which lstat()s, and keeps only regular files and dirs) ------


def _linked(tmp_path: Path) -> Path:
    """A tree with a real policy under ``real/``, and the root beside ``outside/``."""
    tree(tmp_path / "outside", {"o.rego": "package o\n\no := 1\n", "data.json": '{"o": 1}'})
    return tree(
        tmp_path / "d", {"pol/p.rego": POL, "real/deny.rego": DENY, "real/data.json": '{"r": 1}'}
    )


@pytest.mark.parametrize(
    ("link", "target"),
    [
        ("sub/deny.rego", "../real/deny.rego"),  # a symlinked module: OPA drops the deny rule
        ("sub/data.json", "../real/data.json"),  # a symlinked data file
        ("gone.rego", "nowhere.rego"),  # dangling
        ("out.rego", "../../outside/o.rego"),  # leaving the tree
        ("sub/.manifest", "../pol/p.rego"),  # a symlinked manifest: OPA reads no manifest
        ("linkdir", "real"),  # a symlinked directory holding policy
        ("outdir", "../outside"),  # a symlinked directory leaving the tree
        ("loop", "."),  # a symlinked directory that loops back to the root
    ],
)
def test_a_symlink_opa_would_leave_out_is_refused(tmp_path: Path, link: str, target: str) -> None:
    root = _linked(tmp_path)
    (root / link).parent.mkdir(parents=True, exist_ok=True)
    (root / link).symlink_to(target)
    with pytest.raises(BundleError, match="symlink") as err:
        Bundle.from_directory(root)
    assert err.value.entry == link


def test_symlinks_without_policy_are_left_out_as_opa_leaves_them(tmp_path: Path) -> None:
    root = _linked(tmp_path)
    tree(root, {"docs/readme.md": "x", ".venv/lib/site.py": "x"})
    before = Bundle.from_directory(root).to_bytes()
    (root / "README.md").symlink_to("docs/readme.md")
    (root / "gone.md").symlink_to("nowhere.md")
    (root / ".venv" / "lib64").symlink_to("lib")
    assert Bundle.from_directory(root).to_bytes() == before


def test_a_symlinked_root_is_refused_unless_given_with_a_slash(tmp_path: Path) -> None:
    # `opa build -b link` lstat()s the root and builds an empty bundle;
    # `opa build -b link/` follows it, as os.lstat does.
    root = _linked(tmp_path)
    (tmp_path / "link").symlink_to(root)
    with pytest.raises(BundleError, match="symlink") as err:
        Bundle.from_directory(tmp_path / "link")
    assert err.value.entry == str(tmp_path / "link")
    slash = Bundle.from_directory(f"{tmp_path / 'link'}/")
    assert slash.to_bytes() == Bundle.from_directory(root).to_bytes()


@pytest.mark.timeout(30)
def test_a_fifo_named_like_a_bundle_file_is_refused_not_read(tmp_path: Path) -> None:
    import os

    root = _linked(tmp_path)
    os.mkfifo(root / "pol" / "data.json")  # reading it would block; OPA leaves it out
    with pytest.raises(BundleError, match="not a regular file") as err:
        Bundle.from_directory(root)
    assert err.value.entry == "pol/data.json"


# -- `opa build -b .` trims the first dot off top-level names (formatPath, Chrooted) --


@pytest.mark.parametrize(
    ("one", "two"),
    [(".h/x.rego", "h/x.rego"), (".x.rego", "x.rego"), (".h/a/b.rego", "h/a/b.rego")],
)
def test_modules_opa_build_dot_takes_for_one_are_refused(
    tmp_path: Path, one: str, two: str
) -> None:
    root = tree(tmp_path, {one: "package a\n\na := 1\n", two: "package b\n\nb := 1\n"})
    with pytest.raises(BundleError, match="duplicate module") as err:
        Bundle.from_directory(root)
    assert err.value.entry == two
    assert one in err.value.reason


@pytest.mark.parametrize(
    "files", [("..x/a.rego", ".x/a.rego"), ("a/.h/x.rego", "a/h/x.rego"), (".x.rego", "y.rego")]
)
def test_modules_that_stay_apart_are_kept(tmp_path: Path, files: tuple[str, str]) -> None:
    root = tree(tmp_path, {f: f"package p{i}\n\nx := 1\n" for i, f in enumerate(files)})
    assert set(Bundle.from_directory(root).modules) == set(files)


@pytest.mark.parametrize("name", [".data.json", ".data.yaml", ".data.yml"])
def test_a_top_level_hidden_data_file_is_refused(tmp_path: Path, name: str) -> None:
    # `opa build -b .` reads it as data.json (the whole data document);
    # `opa build -b DIR` leaves it out: no answer matches both.
    root = tree(tmp_path, {"pol/p.rego": POL, name: '{"z": 1}', "p/.data.json": '{"y": 1}'})
    with pytest.raises(BundleError, match="opa build -b") as err:
        Bundle.from_directory(root)
    assert err.value.entry == name


# -- patch.json: OPA reads a delta bundle (v1/bundle/bundle.go preProcessBundle) -------


@pytest.mark.parametrize("name", ["patch.json", "sub/patch.json", ".patch.json"])
def test_a_patch_file_is_refused_not_dropped(tmp_path: Path, name: str) -> None:
    # OPA takes any patch.json (and, under `opa build -b .`, a top-level
    # .patch.json) as a delta bundle's patch; we would build a snapshot.
    root = tree(tmp_path, {name: '{"data": [{"op": "upsert", "path": "/x", "value": 1}]}'})
    with pytest.raises(BundleError, match="patch") as err:
        Bundle.from_directory(root)
    assert err.value.entry == name


def test_a_symlinked_directory_holding_a_patch_file_is_refused(tmp_path: Path) -> None:
    root = tree(tmp_path / "d", {"pol/p.rego": POL})
    tree(tmp_path / "elsewhere", {"patch.json": "{}"})
    (root / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(BundleError, match="symlink") as err:
        Bundle.from_directory(root)
    assert err.value.entry == "link"


def test_a_kubernetes_configmap_volume_is_refused_with_a_hint(tmp_path: Path) -> None:
    # A ConfigMap volume: real files in a timestamped hidden directory, reached
    # through `..data` and one symlink per key. OPA reads only the hidden
    # directory, with its data at data["2026_12_02_16_00_00.1"].
    stamp = "..2026_12_02_16_00_00.1"
    root = tree(tmp_path, {f"{stamp}/p.rego": POL, f"{stamp}/data.json": '{"a": 1}'})
    (root / "..data").symlink_to(stamp)
    (root / "p.rego").symlink_to("..data/p.rego")
    with pytest.raises(BundleError, match="ConfigMap") as err:
        Bundle.from_directory(root)
    assert err.value.entry == "..data"


def test_wasm_modules_and_plans_are_carried_as_opa_build_carries_them(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "policy.wasm").write_bytes(b"\0asm\1\0\0\0")
    (tmp_path / "sub" / "plan.json").write_bytes(b"{}")
    (tmp_path / "p.rego").write_text("package p\n\nx := 1\n")
    b = Bundle.from_directory(tmp_path)
    assert dict(b.files) == {"sub/policy.wasm": b"\0asm\1\0\0\0", "sub/plan.json": b"{}"}
    assert Bundle.from_bytes(b.to_bytes()).files == b.files


def test_a_protobuf_plan_is_refused_naming_it(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "plan.pb").write_bytes(b"\0")
    with pytest.raises(BundleError, match=r"plan\.pb") as err:
        Bundle.from_directory(tmp_path)
    assert err.value.entry == "p/plan.pb"
