"""extract_verified: exactly the bundle's entries, swapped in atomically."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from policysupply import (
    Bundle,
    LoadError,
)
from policysupply._internal import fs
from policysupply.loaders import (
    extract_verified,
)
from tests.unit.loaders._env import Env


def test_extract_writes_exactly_the_bundle_entries_and_replaces_atomically(
    env: Env, tmp_path: Path
) -> None:
    v1 = env.release("1", ["alice"])
    out = extract_verified(v1, tmp_path / "policy")
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == sorted(v1.bundle.entries())
    assert Bundle.from_directory(out) == v1.bundle
    v2 = env.release("2", ["bob"])
    extract_verified(v2, out)
    assert Bundle.from_directory(out).data == {"acme": {"users": ["bob"]}}
    # No temporary or backup directories are left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["oci", "policy"]


def test_extract_refuses_a_foreign_directory(env: Env, tmp_path: Path) -> None:
    v1 = env.release("1", ["alice"])
    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(LoadError, match="not a previous extraction"):
        extract_verified(v1, foreign)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize("swap", ["exchange", "two-renames"])
def test_extract_keeps_the_old_tree_on_failure(
    swap: str, env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    v1 = env.release("1", ["alice"])
    out = extract_verified(v1, tmp_path / "policy")
    before = (out / "data.json").read_bytes()
    v2 = env.release("2", ["bob"])
    if swap == "exchange":

        def failing_exchange(a: Path, b: Path) -> bool:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(fs, "exchange", failing_exchange)
    else:
        monkeypatch.setattr(fs, "exchange", lambda a, b: False)  # no renameat2
        real_rename = os.rename
        calls = {"n": 0}

        def failing_rename(src: Any, dst: Any) -> None:
            calls["n"] += 1
            if calls["n"] == 2:  # the new tree's rename into place
                raise OSError(28, "No space left on device")
            real_rename(src, dst)

        monkeypatch.setattr(os, "rename", failing_rename)
    with pytest.raises(LoadError, match="No space left"):
        extract_verified(v2, out)
    assert (out / "data.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["oci", "policy"]
    # and the fallback path, once it works, replaces the tree as the swap does
    monkeypatch.undo()
    monkeypatch.setattr(fs, "exchange", lambda a, b: False)
    extract_verified(v2, out)
    assert Bundle.from_directory(out) == v2.bundle
    assert sorted(p.name for p in tmp_path.iterdir()) == ["oci", "policy"]


@pytest.mark.skipif(
    not (sys.platform.startswith("linux") or sys.platform == "darwin"),
    reason="atomic directory swap needs renameat2 or renamex_np",
)
def test_extract_swaps_trees_without_a_gap(env: Env, tmp_path: Path) -> None:
    """A reader polling files under the directory always finds them, old or new."""
    v1, v2 = env.release("1", ["alice"]), env.release("2", ["bob"])
    out = extract_verified(v1, tmp_path / "policy")
    assert fs.exchange(tmp_path / "oci", out)  # the platform can swap here
    assert fs.exchange(tmp_path / "oci", out)  # and swap back
    known = {
        name: {v.bundle.entries()[name] for v in (v1, v2)} for name in (".manifest", "data.json")
    }
    stop = threading.Event()
    problems: list[str] = []
    reads = {"n": 0}

    def reader() -> None:
        while not stop.is_set():
            for name, wanted in known.items():
                try:
                    content = (out / name).read_bytes()
                except OSError as exc:
                    problems.append(f"{name}: {exc.strerror}")
                    continue
                if content not in wanted:
                    problems.append(f"{name}: partial or unknown content")
                reads["n"] += 1

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(200):
            extract_verified(v2 if i % 2 == 0 else v1, out)
    finally:
        stop.set()
        thread.join()
    assert problems == []
    assert reads["n"] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["oci", "policy"]
    assert Bundle.from_directory(out) == v1.bundle


def test_verified_bundle_extract_is_extract_verified(env: Env, tmp_path: Path) -> None:
    v1 = env.release("1", ["alice"])
    out = v1.extract(tmp_path / "policy")
    assert Bundle.from_directory(out) == v1.bundle
    from policysupply._internal.extraction import write_tree

    with pytest.raises(LoadError, match="not a safe relative path"):
        write_tree({"../escape": b"x"}, tmp_path / "policy")
    assert Bundle.from_directory(out) == v1.bundle


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("acme/deny.rego", "acme/DENY.rego"),  # case variants
        ("acme/deny.rego", "Acme/extra.rego"),  # a directory spelt two ways
        ("acme/caf\u00e9.rego", "acme/cafe\u0301.rego"),  # NFC vs NFD (macOS)
    ],
)
def test_case_variant_entries_collide_when_extracted_on_case_insensitive_filesystems(
    env: Env, tmp_path: Path, first: str, second: str
) -> None:
    # A signed bundle (a trusted CI tricked into signing it) holds two names
    # that Linux keeps apart but macOS/Windows file systems fold into one: the
    # second silently replaces the first (a deny rule), so what OPA loads from
    # the directory is not the bundle that was verified.
    from policysupply import Manifest
    from policysupply.loaders import fetch_verified, publish

    bundle = Bundle.from_bytes(
        Bundle(
            manifest=Manifest(revision="1", roots=["acme", "Acme"]),
            modules={
                first: "package acme.deny\n\ndeny contains 1\n",
                second: "package acme.other\n",
            },
        ).to_bytes()
    )
    publish(bundle, env.registry, "acme/policy:prod", env.signer)
    verified = fetch_verified(env.registry, "acme/policy:prod", env.verifier)
    with pytest.raises(LoadError, match="case"):
        extract_verified(verified, tmp_path / "policy")
    assert not (tmp_path / "policy").exists()
