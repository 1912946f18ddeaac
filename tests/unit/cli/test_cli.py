"""The CLI as a user runs it: a real subprocess, exit codes and output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from policysupply import Bundle


def run(
    *args: str, cwd: Path | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "policysupply", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        input=stdin,
        timeout=120,
        check=False,
    )


def test_build_check_eval(tmp_path: Path, example_dir: Path) -> None:
    out = tmp_path / "b.tar.gz"
    proc = run("build", str(example_dir), "-o", str(out), "--revision", "r9", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["digest"] == Bundle.from_file(out).digest
    assert Bundle.from_file(out).manifest.revision == "r9"

    proc = run("check", str(out))
    assert proc.returncode == 0
    assert "ok:" in proc.stdout

    pod = {"request": {"object": {"metadata": {"labels": {}}, "spec": {"containers": []}}}}
    proc = run("eval", str(out), "data.k8s.labels.deny", "-i", "-", stdin=json.dumps(pod))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [
        "missing required label app.kubernetes.io/name",
        "missing required label owner",
    ]


def test_check_broken_module_exits_1_with_location(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "x.rego").write_text("package p\n\nallow {\n  true\n}\n")
    proc = run("check", str(tmp_path / "p"), "--json")
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    assert doc["ok"] is False
    assert doc["error"] | {"message": "", "reason": ""} == {
        "type": "BundleError",
        "entry": "x.rego",
        "line": 3,
        "message": "",
        "reason": "",
        "exit_code": 1,
    }


def test_corrupt_bundle_exits_1_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"\x1f\x8b not really")
    proc = run("check", str(bad))
    assert proc.returncode == 1
    assert "error:" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("args", [["build"], ["check"], ["nope"], ["eval", "x"]])
def test_usage_errors_exit_2(args: list[str]) -> None:
    assert run(*args).returncode == 2


def test_help_has_examples() -> None:
    proc = run("build", "--help")
    assert proc.returncode == 0
    assert "Example" in proc.stdout


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    proc = run("demo", "--workdir", str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "DENY" in proc.stdout
    assert "ALLOW" in proc.stdout
    for step in range(1, 8):
        assert f"[{step}]" in proc.stdout
    for error in (
        "NoSignatureError",
        "UntrustedSignatureError",
        "RollbackError",
        "DigestMismatchError",
    ):
        assert f"refused with {error}" in proc.stdout
    assert "unsigned: no signature" in proc.stdout
    assert "allowed_registries:" in proc.stdout
    assert (tmp_path / "keys" / "cosign.key").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "oci" / "acme" / "k8s-policy" / "oci-layout").exists()
    assert "acme/k8s-policy:stable" in (tmp_path / "trust-state.json").read_text()


def test_help_stays_light() -> None:
    # The CLI imports heavy dependencies only inside the command that needs them.
    code = (
        "import sys\n"
        "from policysupply.cli import cli\n"
        "try:\n"
        "    cli.main(['--help'], standalone_mode=False)\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = [m for m in ('httpx', 'tenacity', 'regopy', 'cryptography', 'yaml', 'rich',"
        " 'sigstore') if m in sys.modules]\n"
        "print('HEAVY=' + ','.join(heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert "HEAVY=\n" in out


def test_unexpected_errors_hide_their_text_unless_debugging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Fault injection: a bug whose message carries a secret must not print it.
    from policysupply import Registry
    from policysupply.cli import main

    def broken(self: Registry, ref: str) -> str:
        raise RuntimeError("token=s3cr3t-value")

    monkeypatch.setattr(Registry, "resolve", broken)
    monkeypatch.setattr(sys, "argv", ["policysupply", "pull", f"oci:{tmp_path}:a/b:1"])
    monkeypatch.delenv("POLICYSUPPLY_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 4  # a bug: neither a verdict (1) nor a usage error (2)
    err = capsys.readouterr().err
    assert "internal error (RuntimeError)" in err
    assert "s3cr3t" not in err

    monkeypatch.setenv("POLICYSUPPLY_DEBUG", "1")
    with pytest.raises(RuntimeError):
        main()
