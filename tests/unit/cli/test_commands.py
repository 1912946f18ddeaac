"""Every registry and signing command through click's runner, on local OCI layouts."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from policysupply import Bundle, Registry, Signer
from policysupply.cli import cli

PASSWORD = "correct horse battery staple"


def invoke(*args: str, password: str | None = PASSWORD, stdin: str | None = None) -> Result:
    env = {"COSIGN_PASSWORD": password} if password is not None else {"COSIGN_PASSWORD": None}
    return CliRunner().invoke(cli, list(args), env=env, input=stdin, catch_exceptions=False)


def as_json(result: Result) -> dict[str, object]:
    doc: dict[str, object] = json.loads(result.stdout)
    return doc


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    result = invoke("keygen", "-d", str(tmp_path / "keys"))
    assert result.exit_code == 0, result.output
    return tmp_path / "keys" / "cosign.key", tmp_path / "keys" / "cosign.pub"


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    return tmp_path / "layout"


@pytest.fixture
def pushed(layout: Path, example_dir: Path) -> str:
    result = invoke("push", str(example_dir), f"oci:{layout}:acme/policy:1.0", "--json")
    assert result.exit_code == 0, result.output
    return f"oci:{layout}:acme/policy:1.0"


# -- keygen ---------------------------------------------------------------------


def test_keygen_writes_a_cosign_key_pair_without_printing_the_password(tmp_path: Path) -> None:
    result = invoke("keygen", "-d", str(tmp_path), "--json")
    assert result.exit_code == 0, result.output
    doc = as_json(result)
    key, pub = Path(str(doc["private_key"])), Path(str(doc["public_key"]))
    assert (key.name, pub.name) == ("cosign.key", "cosign.pub")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert b"ENCRYPTED SIGSTORE PRIVATE KEY" in key.read_bytes()
    signer = Signer.from_key_file(key, password=PASSWORD)
    assert signer.public_key_pem == pub.read_bytes()
    assert doc["key_id"] == signer.key_id
    assert PASSWORD not in result.output


def test_keygen_reads_the_password_from_stdin_off_a_terminal(tmp_path: Path) -> None:
    result = invoke(
        "keygen",
        "-d",
        str(tmp_path),
        "--output-key-prefix",
        "release",
        password=None,
        stdin="from-stdin\n",
    )
    assert result.exit_code == 0, result.output
    Signer.from_key_file(tmp_path / "release.key", password="from-stdin")
    assert "from-stdin" not in result.output


def test_keygen_never_overwrites_a_key(keys: tuple[Path, Path]) -> None:
    before = keys[0].read_bytes()
    result = invoke("keygen", "-d", str(keys[0].parent))
    assert result.exit_code == 2
    assert "refusing to overwrite" in result.output
    assert keys[0].read_bytes() == before


# -- push / pull ----------------------------------------------------------------


def test_push_directory_and_tarball_give_the_same_digest(
    layout: Path, example_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The manifest's creation time is to the second: pin it, as a reproducible build does.
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    built = Bundle.from_directory(example_dir)
    tarball = built.write(tmp_path / "b.tar.gz")
    a = as_json(invoke("push", str(example_dir), f"oci:{layout}:acme/p:dir", "--json"))
    b = as_json(invoke("push", str(tarball), f"oci:{layout}:acme/p:tar", "--json"))
    assert a["digest"] == b["digest"]
    assert a["bundle_digest"] == built.digest
    assert a["reference"] == f"oci:{layout}:acme/p@{a['digest']}"
    assert Registry.local(layout).pull("acme/p:tar") == built


def test_push_plain_output_prints_the_digest_reference(layout: Path, example_dir: Path) -> None:
    result = invoke("push", str(example_dir), f"oci:{layout}:acme/p:1")
    assert result.exit_code == 0, result.output
    digest = Registry.local(layout).resolve("acme/p:1")
    assert result.stdout.splitlines()[-1] == f"oci:{layout}:acme/p@{digest}"


def test_push_of_broken_rego_fails_with_2_and_pushes_nothing(layout: Path, tmp_path: Path) -> None:
    # Input error, not a verdict: 1 is only ever "not verified" or DENY.
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "x.rego").write_text("package p\n\nallow {\n")
    result = invoke("push", str(tmp_path / "p"), f"oci:{layout}:acme/p:1", "--json")
    assert result.exit_code == 2
    assert as_json(result)["error"]["type"] == "BundleError"
    assert not (layout / "acme" / "p" / "index.json").exists()


def test_pull_unverified_writes_the_exact_layer(pushed: str, layout: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.tar.gz"
    result = invoke("pull", pushed, "-o", str(out), "--json")
    assert result.exit_code == 0, result.output
    doc = as_json(result)
    assert doc["verified"] is False
    assert doc["bundle_digest"] == Bundle.from_file(out).digest
    assert doc["digest"] == Registry.local(layout).resolve("acme/policy:1.0")


def test_pull_with_key_verifies_first(pushed: str, keys: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "out.tar.gz"
    result = invoke("pull", pushed, "--key", str(keys[1]), "-o", str(out))
    assert result.exit_code == 1
    assert "no signatures" in result.output
    assert not out.exists()

    assert invoke("sign", pushed, "--key", str(keys[0])).exit_code == 0
    result = invoke("pull", pushed, "--verify", "--key", str(keys[1]), "-o", str(out), "--json")
    assert result.exit_code == 0, result.output
    doc = as_json(result)
    assert doc["verified"] is True
    assert [s["key_id"] for s in doc["signatures"]] == [  # type: ignore[union-attr]
        Signer.from_key_file(keys[0], password=PASSWORD).key_id
    ]
    assert out.exists()


def test_pull_verify_without_key_is_a_usage_error(pushed: str) -> None:
    assert invoke("pull", pushed, "--verify").exit_code == 2


def test_pull_missing_tag_is_exit_2(pushed: str, tmp_path: Path) -> None:
    result = invoke("pull", pushed.replace(":1.0", ":nope"), "-o", str(tmp_path / "x"), "--json")
    assert result.exit_code == 2
    assert as_json(result)["error"]["type"] == "NotFoundError"


# -- sign / verify --------------------------------------------------------------


def test_sign_then_verify_with_annotations(pushed: str, keys: tuple[Path, Path]) -> None:
    result = invoke("sign", pushed, "--key", str(keys[0]), "-a", "env=prod", "--json")
    assert result.exit_code == 0, result.output
    signed = as_json(result)
    assert signed["scheme"] == "legacy"
    assert str(signed["location"]).endswith(".sig")

    ok = invoke("verify", pushed, "--key", str(keys[1]), "-a", "env=prod", "--json")
    assert ok.exit_code == 0, ok.output
    assert as_json(ok)["digest"] == signed["digest"]

    wrong = invoke("verify", pushed, "--key", str(keys[1]), "-a", "env=dev", "--json")
    assert wrong.exit_code == 1
    assert "env" in str(as_json(wrong)["error"]["message"])


def test_sign_bundle_scheme_verifies(pushed: str, keys: tuple[Path, Path]) -> None:
    result = invoke("sign", pushed, "--key", str(keys[0]), "--scheme", "bundle", "--json")
    assert result.exit_code == 0, result.output
    assert as_json(result)["scheme"] == "bundle"
    ok = invoke("verify", pushed, "-k", str(keys[1]))
    assert ok.exit_code == 0, ok.output
    assert "bundle signature" in ok.stdout


def test_sign_with_wrong_password_is_exit_2_and_never_echoes_it(
    pushed: str, keys: tuple[Path, Path]
) -> None:
    result = invoke("sign", pushed, "--key", str(keys[0]), "--json", password="guess-Wr0ng")
    assert result.exit_code == 2
    assert "wrong password" in str(as_json(result)["error"]["message"])
    assert "guess-Wr0ng" not in result.output


def test_sign_prompts_off_terminal_from_stdin(pushed: str, keys: tuple[Path, Path]) -> None:
    result = invoke("sign", pushed, "--key", str(keys[0]), password=None, stdin=PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    assert PASSWORD not in result.output


def test_verify_failures_exit_1_with_the_specific_error(
    pushed: str, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    unsigned = invoke("verify", pushed, "--key", str(keys[1]), "--json")
    assert (unsigned.exit_code, as_json(unsigned)["error"]["type"]) == (1, "NoSignatureError")

    (tmp_path / "other").mkdir()
    _, other_pub = Signer.generate().write_key_pair(tmp_path / "other", password="x")
    assert invoke("sign", pushed, "--key", str(keys[0])).exit_code == 0
    untrusted = invoke("verify", pushed, "--key", str(other_pub), "--json")
    assert untrusted.exit_code == 1
    assert as_json(untrusted)["error"]["type"] == "UntrustedSignatureError"

    short = invoke(
        "verify", pushed, "-k", str(keys[1]), "-k", str(other_pub), "--threshold", "2", "--json"
    )
    assert (short.exit_code, as_json(short)["error"]["type"]) == (1, "ThresholdNotMetError")


def test_verify_configuration_errors_exit_2(pushed: str, keys: tuple[Path, Path]) -> None:
    too_high = invoke("verify", pushed, "-k", str(keys[1]), "--threshold", "2")
    assert too_high.exit_code == 2
    not_a_key = invoke("verify", pushed, "-k", str(keys[0]), "--json")
    assert not_a_key.exit_code == 2
    assert invoke("verify", pushed).exit_code == 2  # --key is required
    assert invoke("verify", pushed, "-k", "/nonexistent.pub").exit_code == 2


@pytest.mark.parametrize(
    "ref",
    [
        "acme/policy:1.0",
        "oci:",
        "oci:/tmp/x",
        "oci:/tmp/x:Bad/Repo",
        "oci:/tmp/x:reg.io/a/b:1",
        "Reg.io/UPPER:1",
        "host.io/a:b:c",
    ],
)
def test_malformed_references_are_usage_errors(ref: str, keys: tuple[Path, Path]) -> None:
    result = invoke("verify", ref, "--key", str(keys[1]))
    assert result.exit_code == 2
    assert "Traceback" not in result.output


# -- copy -----------------------------------------------------------------------


def test_copy_with_and_without_signatures(
    pushed: str, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    assert invoke("sign", pushed, "--key", str(keys[0])).exit_code == 0
    with_sigs = f"oci:{tmp_path / 'mirror'}:acme/policy:1.0"
    result = invoke("copy", pushed, with_sigs, "--json")
    assert result.exit_code == 0, result.output
    assert as_json(result)["with_signatures"] is True
    assert invoke("verify", with_sigs, "--key", str(keys[1])).exit_code == 0

    bare = f"oci:{tmp_path / 'bare'}:acme/policy:1.0"
    assert invoke("copy", pushed, bare, "--without-signatures").exit_code == 0
    result = invoke("verify", bare, "--key", str(keys[1]), "--json")
    assert (result.exit_code, as_json(result)["error"]["type"]) == (1, "NoSignatureError")


# -- help -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "command", ["", "build", "check", "eval", "push", "pull", "copy", "keygen", "sign", "verify"]
)
def test_every_command_has_help_with_examples(command: str) -> None:
    result = invoke(*filter(None, [command, "--help"]))
    assert result.exit_code == 0
    assert "Example" in result.stdout
    assert "\\b" not in result.stdout  # click's no-rewrap mark was honoured, not printed


# -- rollback and freeze protection --------------------------------------------


def test_pull_with_state_refuses_a_rollback(
    layout: Path, example_dir: Path, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    ref = f"oci:{layout}:acme/policy:stable"
    state = tmp_path / "trust.json"
    for revision, expected in (("2", 0), ("1", 1)):
        assert invoke("push", str(example_dir), ref, "--revision", revision).exit_code == 0
        assert invoke("sign", ref, "--key", str(keys[0])).exit_code == 0
        result = invoke(
            "pull",
            ref,
            "-k",
            str(keys[1]),
            "--state",
            str(state),
            "-o",
            str(tmp_path / f"r{revision}.tar.gz"),
            "--json",
        )
        assert result.exit_code == expected, result.output
    assert as_json(result)["error"]["type"] == "RollbackError"
    assert not (tmp_path / "r1.tar.gz").exists()
    assert Bundle.from_file(tmp_path / "r2.tar.gz").manifest.revision == "2"


def test_max_signature_age(pushed: str, keys: tuple[Path, Path]) -> None:
    assert invoke("sign", pushed, "--key", str(keys[0])).exit_code == 0
    assert invoke("verify", pushed, "-k", str(keys[1]), "--max-signature-age", "1h").exit_code == 0
    bad = invoke("verify", pushed, "-k", str(keys[1]), "--max-signature-age", "soon")
    assert bad.exit_code == 2
    assert invoke("pull", pushed, "--state", "x.json").exit_code == 2  # needs --key


def test_stale_signature_is_refused(pushed: str, keys: tuple[Path, Path]) -> None:
    old = "dev.policysupply/signed-at=2020-09-13T12:26:40Z"
    assert invoke("sign", pushed, "--key", str(keys[0]), "-a", old).exit_code == 0
    result = invoke("verify", pushed, "-k", str(keys[1]), "--max-signature-age", "7d", "--json")
    assert (result.exit_code, as_json(result)["error"]["type"]) == (1, "StaleSignatureError")
