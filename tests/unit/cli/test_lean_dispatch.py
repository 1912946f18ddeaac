"""The lean dispatch (``policysupply.cli._lean``) against the click path, byte for byte.

Each invocation of the catalogue runs twice as a fresh process: through the
console script's ``main()`` (lean when it recognises the command line) and
through the click group directly. stdout, stderr, the exit code and any
bundle written must be identical, and each case states which path ``main()``
took (a declined command line never imports click before falling back).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from policysupply import Bundle, Signer
from policysupply.cli._lean import dispatch

RUNNER = """
import os, sys
sys.argv = ["policysupply", *sys.argv[1:]]
try:
    if os.environ["LEAN_TEST_MODE"] == "click":
        from policysupply.cli._group import cli
        cli.main(prog_name="policysupply")
    else:
        from policysupply.cli import main
        main()
finally:
    with open(os.environ["LEAN_TEST_MARK"], "w") as f:
        f.write("click" if "click" in sys.modules else "lean")
"""


def _opa() -> str | None:
    given = os.environ.get("POLICYSUPPLY_OPA")
    if given and os.access(given, os.X_OK):
        return given
    peer = Path.home() / ".cache" / "policysupply" / "peers" / "bin" / "opa"
    return str(peer) if os.access(peer, os.X_OK) else shutil.which("opa")


OPA = _opa()

# (id, arguments with {dir} {broken} {tgz} {out} {missing} {outdir}, lean expected)
CATALOGUE: list[tuple[str, list[str], bool]] = [
    ("check-dir", ["check", "{dir}", "--engine", "embedded"], True),
    ("check-dir-q", ["check", "{dir}", "-q", "--engine", "embedded"], True),
    ("check-dir-quiet-json", ["check", "--quiet", "{dir}", "--json", "--engine=embedded"], True),
    ("check-tgz", ["check", "{tgz}", "--engine", "embedded"], True),
    ("check-v0", ["check", "{dir}", "--v0-compatible", "--engine", "embedded"], True),
    ("check-broken", ["check", "{broken}", "--engine", "embedded"], True),
    ("check-broken-json", ["check", "{broken}", "--json", "--engine", "embedded"], True),
    ("check-missing", ["check", "{missing}"], True),
    ("check-missing-json", ["check", "{missing}", "--json"], True),
    ("check-strict-embedded", ["check", "{dir}", "--strict", "--engine", "embedded"], True),
    ("check-bad-engine", ["check", "{dir}", "--engine", "bogus"], False),
    ("check-engine-case", ["check", "{dir}", "--engine", "EMBEDDED"], False),
    ("check-verbose", ["check", "{dir}", "-v", "--engine", "embedded"], False),
    ("check-no-arg", ["check"], False),
    ("check-two-args", ["check", "{dir}", "{dir}"], False),
    ("check-help", ["check", "--help"], False),
    ("check-unknown-option", ["check", "{dir}", "--nope"], False),
    ("check-repeated", ["check", "{dir}", "-q", "-q", "--engine", "embedded"], False),
    ("check-dashdash", ["check", "--", "{dir}"], False),
    ("build", ["build", "{dir}", "-o", "{out}", "--engine", "embedded"], True),
    ("build-json", ["build", "{dir}", "-o", "{out}", "--json", "--engine", "embedded"], True),
    (
        "build-options",
        ["build", "{dir}", "--output={out}", "-q", "--revision", "r1", "--root", "k8s",
         "--engine", "embedded"],
        True,
    ),
    ("build-no-check", ["build", "{dir}", "-o", "{out}", "--no-check"], True),
    ("build-roots-refused", ["build", "{dir}", "-o", "{out}", "--root", "nope"], True),
    ("build-two-roots", ["build", "{dir}", "-o", "{out}", "--root", "k8s", "--root", "z",
                         "--no-check"], True),
    ("build-broken", ["build", "{broken}", "-o", "{out}", "--engine", "embedded"], True),
    ("build-broken-json", ["build", "{broken}", "-o", "{out}", "--json"], True),
    ("build-unwritable", ["build", "{dir}", "-o", "{missing}/x.tar.gz", "--no-check"], True),
    ("build-output-json", ["build", "{dir}", "-o", "json", "--no-check"], True),
    ("build-missing-dir", ["build", "{missing}", "-o", "{out}"], False),
    ("build-output-is-dir", ["build", "{dir}", "-o", "{outdir}"], False),
    ("build-file-as-dir", ["build", "{tgz}", "-o", "{out}"], False),
    ("build-signing-option", ["build", "{dir}", "-o", "{out}", "--signing-alg", "RS256"], False),
    ("build-attached-short", ["build", "{dir}", "-o{out}", "--no-check"], False),
    ("build-value-dash", ["build", "{dir}", "-o", "-x"], False),
    ("build-help", ["build", "-h"], False),
    # Symlinks, as opa build -b / opa check --bundle read them (ADR 0023).
    ("check-link-root", ["check", "{linkroot}", "--engine", "embedded"], True),
    ("check-link-root-slash", ["check", "{linkroot}/", "--engine", "embedded"], True),
    ("check-linked-module", ["check", "{linked}", "--json", "--engine", "embedded"], True),
    ("build-link-root", ["build", "{linkroot}", "-o", "{out}", "--no-check"], True),
    ("build-link-root-slash", ["build", "{linkroot}/", "-o", "{out}", "--no-check"], True),
    ("build-linked-module", ["build", "{linked}", "-o", "{out}", "--engine", "embedded"], True),
    # verify: only `verify HOST/REPO[:TAG] -k KEY... [-q] [--json]` is lean.
    ("verify-unreachable", ["verify", "127.0.0.1:9/acme/p:1", "-k", "{pub}"], True),
    ("verify-unreachable-json", ["verify", "127.0.0.1:9/acme/p:1", "--key", "{pub}", "--json",
                                 "-q"], True),
    ("verify-not-a-key", ["verify", "127.0.0.1:9/acme/p:1", "-k", "{tgz}"], True),
    ("verify-not-a-key-json", ["verify", "127.0.0.1:9/acme/p:1", "-k", "{tgz}", "--json"], True),
    ("verify-missing-key", ["verify", "127.0.0.1:9/acme/p:1", "-k", "{missing}"], False),
    ("verify-no-key", ["verify", "127.0.0.1:9/acme/p:1"], False),
    ("verify-layout", ["verify", "oci:{root}:acme/p:1", "-k", "{pub}"], False),
    ("verify-no-host", ["verify", "acme/p:1", "-k", "{pub}"], False),
    ("verify-bad-ref", ["verify", "127.0.0.1:9/ACME", "-k", "{pub}"], False),
    ("verify-threshold", ["verify", "127.0.0.1:9/acme/p:1", "-k", "{pub}", "--threshold", "1"],
     False),
    ("verify-plain-http", ["verify", "127.0.0.1:9/acme/p:1", "-k", "{pub}", "--plain-http"],
     False),
    ("not-a-lean-command", ["version"], False),
    ("top-help", ["--help"], False),
]  # fmt: skip
if OPA is not None:
    CATALOGUE += [
        ("check-opa", ["check", "{dir}", "--engine", "opa"], True),
        ("check-opa-strict", ["check", "{dir}", "--engine", "opa", "--strict", "--json"], True),
        ("check-opa-broken", ["check", "{broken}", "--engine", "opa"], True),
        ("build-opa", ["build", "{dir}", "-o", "{out}", "--engine", "opa"], True),
        ("build-opa-broken", ["build", "{broken}", "-o", "{out}", "--engine=opa", "--json"], True),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def places(tmp_path_factory: pytest.TempPathFactory, example_dir: Path) -> dict[str, str]:
    root = tmp_path_factory.mktemp("lean")
    tree = root / "tree"
    shutil.copytree(example_dir, tree)
    broken = root / "broken"
    shutil.copytree(example_dir, broken)
    (broken / "k8s" / "oops.rego").write_text("package k8s.oops\n\nx if {\n\ty := 1\n\ty := 2\n}\n")
    tgz = root / "b.tar.gz"
    Bundle.from_directory(tree).write(tgz)
    pub = root / "cosign.pub"
    pub.write_bytes(Signer.generate().public_key_pem)
    (root / "outdir").mkdir()
    (root / "linkroot").symlink_to(tree)
    linked = root / "linked"
    shutil.copytree(example_dir, linked)
    (linked / "k8s" / "extra").mkdir()
    (linked / "k8s" / "extra" / "deny.rego").symlink_to(next(tree.rglob("*.rego")))
    return {
        "dir": str(tree),
        "broken": str(broken),
        "tgz": str(tgz),
        "out": str(root / "out.tar.gz"),
        "missing": str(root / "missing"),
        "outdir": str(root / "outdir"),
        "root": str(root),
        "pub": str(pub),
        "linkroot": str(root / "linkroot"),
        "linked": str(linked),
    }


def run_both(argv: list[str], cwd: str, out: str | None, lean: bool) -> None:
    """Runs ``argv`` on both paths; asserts the path ``main()`` took and identical results."""
    written: dict[str, bytes | None] = {}
    results = {}
    for mode in ("lean", "click"):
        for target in (out, str(Path(cwd) / "json")):
            if target is not None:
                Path(target).unlink(missing_ok=True)
        proc, path_taken = _run(mode, argv, cwd)
        # A retry report says how long it tried: the one part that differs by run.
        results[mode] = tuple(
            re.sub(rb"in [0-9.]+s\)", b"in _s)", x) if isinstance(x, bytes) else x
            for x in (proc.returncode, proc.stdout, proc.stderr)
        )
        written[mode] = Path(out).read_bytes() if out and Path(out).exists() else None
        if mode == "lean":
            assert path_taken == ("lean" if lean else "click"), (argv, proc.stderr)
    assert results["lean"] == results["click"]
    assert written["lean"] == written["click"]


def _run(mode: str, args: list[str], cwd: str) -> tuple[subprocess.CompletedProcess[bytes], str]:
    mark = Path(cwd) / f"mark-{mode}"
    drop = ("POLICYSUPPLY_ENGINE", "POLICYSUPPLY_POLICY", "POLICYSUPPLY_DOCKER_CONFIG",
            "POLICYSUPPLY_CA_FILE")  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(LEAN_TEST_MODE=mode, LEAN_TEST_MARK=str(mark))
    if OPA is not None:
        env["POLICYSUPPLY_OPA"] = OPA
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, *args],
        capture_output=True,
        cwd=cwd,
        env=env,
        timeout=120,
        check=False,
    )
    return proc, mark.read_text()


@pytest.mark.parametrize(
    ("args", "lean"), [c[1:] for c in CATALOGUE], ids=[c[0] for c in CATALOGUE]
)
def test_lean_and_click_paths_print_and_exit_identically(
    places: dict[str, str], args: list[str], lean: bool
) -> None:
    argv = [a.format(**places) for a in args]
    run_both(argv, places["root"], places["out"], lean)


@pytest.mark.parametrize(
    ("args", "code", "named"),
    [
        (["check", "{linkroot}"], 1, "{linkroot}"),
        (["check", "{linkroot}/"], 0, None),
        (["check", "{linked}"], 1, "k8s/extra/deny.rego"),
        (["build", "{linkroot}", "-o", "{out}", "--no-check"], 1, "{linkroot}"),
        (["build", "{linkroot}/", "-o", "{out}", "--no-check"], 0, None),
        (["build", "{linked}", "-o", "{out}", "--no-check"], 1, "k8s/extra/deny.rego"),
    ],
)
def test_symlinks_are_refused_where_opa_would_read_nothing_through_them(
    places: dict[str, str], args: list[str], code: int, named: str | None
) -> None:
    # `opa build -b link` builds an empty bundle, `-b link/` reads the tree;
    # a symlinked module is left out by OPA, so we refuse it (both paths).
    argv = [a.format(**places) for a in args]
    for mode in ("lean", "click"):
        proc, _ = _run(mode, argv, places["root"])
        assert proc.returncode == code, (mode, proc.stderr)
        if named is not None:
            assert named.format(**places) in proc.stderr.decode()
            assert "symlink" in proc.stderr.decode()


def test_dispatch_declines_without_running_anything(places: dict[str, str]) -> None:
    # Declining is decided from the command line alone: nothing is read or printed.
    assert dispatch([]) is None
    assert dispatch(["check"]) is None
    assert dispatch(["check", places["dir"], "--engine", "nope"]) is None
    assert dispatch(["build", places["missing"]]) is None


def _run_with(mode: str, args: list[str], cwd: str, **popen: object) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "POLICYSUPPLY_ENGINE"}
    env.update(LEAN_TEST_MODE=mode, LEAN_TEST_MARK=str(Path(cwd) / f"mark-{mode}"))
    extra_env = popen.pop("env", None)
    if isinstance(extra_env, dict):
        env.update(extra_env)
    return subprocess.Popen(  # type: ignore[call-overload,no-any-return]
        [sys.executable, "-c", RUNNER, *args], cwd=cwd, env=env, **popen
    )


@pytest.mark.parametrize(
    "args",
    [
        ["check", "{dir}", "--engine", "embedded"],
        ["check", "{broken}", "--json", "--engine", "embedded"],
        ["build", "{dir}", "-o", "{out}", "--no-check"],
    ],
    ids=["check", "check-broken-json", "build"],
)
def test_a_reader_gone_away_exits_as_on_the_click_path(
    places: dict[str, str], args: list[str]
) -> None:
    # `policysupply check DIR | head -0`: stdout is a pipe nobody reads. click
    # answers EPIPE with exit code 1 and nothing on stderr; so must the lean path.
    argv = [a.format(**places) for a in args]
    results = {}
    for mode in ("lean", "click"):
        read_end, write_end = os.pipe()
        os.close(read_end)
        try:
            proc = _run_with(mode, argv, places["root"], stdout=write_end, stderr=subprocess.PIPE)
        finally:
            os.close(write_end)
        _, err = proc.communicate(timeout=120)
        results[mode] = (proc.returncode, err)
    assert results["lean"] == results["click"]
    assert results["click"][0] == 1


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_an_interrupt_reports_as_on_the_click_path(
    places: dict[str, str], tmp_path: Path, as_json: bool
) -> None:
    # Ctrl-C while `opa check` runs: click closes the terminal's ^C echo with a
    # blank line on stderr before its report; the lean path must print the same.
    started = tmp_path / "started"
    fake = tmp_path / "opa"
    fake.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = version ]; then echo "Version: 1.22.2"; exit 0; fi\n'
        f"touch {started}\nsleep 30\n"
    )
    fake.chmod(0o755)
    argv = ["check", places["dir"], "--engine", "opa", *(["--json"] if as_json else [])]
    results = {}
    for mode in ("lean", "click"):
        started.unlink(missing_ok=True)
        proc = _run_with(
            mode,
            argv,
            places["root"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={"POLICYSUPPLY_OPA": str(fake)},
        )
        try:
            deadline = time.monotonic() + 60
            while not started.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            assert started.exists()
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        results[mode] = (proc.returncode, out, err)
    assert results["lean"] == results["click"]
    assert results["click"][0] == 130
