"""tree, attest, verify-attestation, sign-blob, verify-blob, version, completion, examples."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from policysupply import Registry, Signer
from policysupply.cli import _COMMANDS, cli

PASSWORD = "new-commands-pw"


def invoke(*args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(
        cli, list(args), env={"COSIGN_PASSWORD": PASSWORD, "SIGSTORE_ID_TOKEN": None}, input=stdin
    )


def doc(result: Result) -> dict[str, object]:
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, result.stdout
    out: dict[str, object] = json.loads(lines[0])
    return out


@pytest.fixture
def world(tmp_path: Path, example_dir: Path) -> tuple[Path, str]:
    Signer.generate().write_key_pair(tmp_path, password=PASSWORD)
    ref = f"oci:{tmp_path / 'layout'}:acme/policy:1"
    assert invoke("push", str(example_dir), ref, "-q").exit_code == 0
    return tmp_path, ref


def test_help_lists_each_command_by_its_docstring_without_importing_it() -> None:
    for name, (module, attr, line) in _COMMANDS.items():
        command = getattr(importlib.import_module(f"policysupply.cli.{module}"), attr)
        assert command.name == name
        assert (command.help or "").splitlines()[0] == line, name


def test_tree_lists_signatures_attestations_and_referrers(world: tuple[Path, str]) -> None:
    d, ref = world
    empty = invoke("tree", ref)
    assert empty.exit_code == 0
    assert "nothing attached" in empty.stdout
    assert invoke("sign", ref, "-k", str(d / "cosign.key")).exit_code == 0
    assert invoke("sign", ref, "-k", str(d / "cosign.key"), "--scheme", "bundle").exit_code == 0
    (d / "pred.json").write_text('{"builder": {"id": "ci"}}')
    attest = invoke(
        "attest", ref, "-k", str(d / "cosign.key"), "--predicate", str(d / "pred.json"),
        "--type", "slsaprovenance1",
    )  # fmt: skip
    assert attest.exit_code == 0, attest.output
    shown = invoke("tree", ref)
    assert shown.exit_code == 0
    assert "signatures (cosign tag sha256-" in shown.stdout
    assert "attestations (cosign tag sha256-" in shown.stdout
    assert "referrers (OCI 1.1)" in shown.stdout
    tree = doc(invoke("tree", ref, "--json"))
    assert tree["reference"] == ref.rsplit(":", 1)[0] + "@" + str(tree["digest"])
    assert len(tree["signatures"]["layers"]) == 1  # type: ignore[index]
    assert tree["attestations"]["tag"].endswith(".att")  # type: ignore[index]
    assert tree["sboms"] is None
    assert [r["artifact_type"] for r in tree["referrers"]] == [  # type: ignore[attr-defined]
        "application/vnd.dev.sigstore.bundle.v0.3+json"
    ]


def test_attest_then_verify_attestation(world: tuple[Path, str]) -> None:
    d, ref = world
    (d / "pred.json").write_text('{"builder": {"id": "ci"}}')
    # Unlike cosign, the artifact's own signature is verified too (the library's verify).
    assert invoke("sign", ref, "-k", str(d / "cosign.key")).exit_code == 0
    missing = invoke("verify-attestation", ref, "-k", str(d / "cosign.pub"), "--type", "vuln")
    assert missing.exit_code == 1
    made = invoke(
        "attest", ref, "-k", str(d / "cosign.key"), "--predicate", str(d / "pred.json"),
        "--type", "slsaprovenance1", "--json",
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    assert doc(made)["predicate_type"] == "https://slsa.dev/provenance/v1"
    ok = invoke(
        "verify-attestation", ref, "-k", str(d / "cosign.pub"), "--type", "slsaprovenance1",
        "--json",
    )  # fmt: skip
    assert ok.exit_code == 0, ok.output
    atts = doc(ok)["attestations"]
    assert atts[0]["predicate"] == {"builder": {"id": "ci"}}  # type: ignore[index]
    other = Signer.generate()
    (d / "other.pub").write_bytes(other.public_key_pem)
    untrusted = invoke(
        "verify-attestation", ref, "-k", str(d / "other.pub"), "--type", "slsaprovenance1"
    )
    assert untrusted.exit_code == 1
    bad_type = invoke("attest", ref, "-k", str(d / "cosign.key"), "--predicate",
                      str(d / "pred.json"), "--type", "nonsense")  # fmt: skip
    assert bad_type.exit_code == 2


def test_sign_blob_then_verify_blob(world: tuple[Path, str], tmp_path: Path) -> None:
    d, _ = world
    blob = tmp_path / "bundle.tar.gz"
    blob.write_bytes(b"release asset")
    made = invoke("sign-blob", str(blob), "-k", str(d / "cosign.key"), "--json")
    assert made.exit_code == 0, made.output
    assert Path(str(doc(made)["bundle"])) == Path(f"{blob}.sigstore.json")
    ok = invoke("verify-blob", str(blob), "-k", str(d / "cosign.pub"), "--json")
    assert ok.exit_code == 0, ok.output
    assert doc(ok)["verified"] is True
    blob.write_bytes(b"release asset, changed")
    changed = invoke("verify-blob", str(blob), "-k", str(d / "cosign.pub"), "--json")
    assert changed.exit_code == 1
    assert doc(changed)["error"]["type"] == "DigestMismatchError"  # type: ignore[index]


def test_version_and_completion() -> None:
    v = invoke("version", "--json")
    assert v.exit_code == 0
    info = doc(v)
    assert info["version"]
    assert info["python"]
    for shell, marker in (("bash", "complete -o"), ("zsh", "compdef"), ("fish", "complete")):
        out = invoke("completion", shell)
        assert out.exit_code == 0
        assert "_POLICYSUPPLY_COMPLETE" in out.stdout
        assert marker in out.stdout


def test_examples_are_copied_and_never_overwritten(tmp_path: Path) -> None:
    first = invoke("examples", str(tmp_path / "ex"), "--json")
    assert first.exit_code == 0, first.output
    assert (tmp_path / "ex" / "policies" / ".manifest").is_file()
    assert (tmp_path / "ex" / "trust-policy.yaml").is_file()
    assert (tmp_path / "ex" / "trust-policy.schema.json").is_file()
    again = invoke("examples", str(tmp_path / "ex"))
    assert again.exit_code == 2
    assert "refusing to overwrite" in again.output


def test_demo_json_is_one_document(tmp_path: Path) -> None:
    result = invoke("demo", "--workdir", str(tmp_path), "--json")
    assert result.exit_code == 0, result.output
    report = doc(result)
    assert report["ok"] is True
    steps = report["steps"]
    assert [s["step"] for s in steps] == list(range(1, 8))  # type: ignore[union-attr,index]
    assert all(s["ok"] for s in steps)  # type: ignore[union-attr,index]


def test_quiet_prints_only_the_essential_result(world: tuple[Path, str], example_dir: Path) -> None:
    d, ref = world
    pushed = invoke("push", str(example_dir), ref, "-q")
    assert pushed.stdout.strip().count("\n") == 0
    assert "@sha256:" in pushed.stdout
    verified = invoke("verify", ref, "-k", str(d / "cosign.pub"), "-q")
    assert verified.exit_code == 1  # unsigned
    assert verified.stdout == ""


def test_layout_directory_with_a_colon(tmp_path: Path, example_dir: Path) -> None:
    odd = tmp_path / "a:b"
    odd.mkdir()
    ref = f"oci:{odd}:acme/p:1"
    assert invoke("push", str(example_dir), ref).exit_code == 0
    assert Registry.local(odd).resolve("acme/p:1").startswith("sha256:")
