"""Readers of what options name (``policysupply.cli._targets``)."""

from __future__ import annotations

import io
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from policysupply import Signer
from policysupply.cli import cli
from policysupply.cli._targets import read_text_argument


def test_stdin_that_is_not_utf8_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"\xff\n"), encoding="utf-8"))
    with pytest.raises(click.BadParameter, match=r"cannot read -: .*can't decode"):
        read_text_argument("-", param="--images-from")


def test_a_file_that_is_not_utf8_is_a_usage_error(tmp_path: Path) -> None:
    bad = tmp_path / "images.txt"
    bad.write_bytes(b"\xff\n")
    with pytest.raises(click.BadParameter, match=r"cannot read .*can't decode"):
        read_text_argument(str(bad), param="--images-from")


@pytest.mark.parametrize(
    "args",
    [
        ["gate", "--images-from", "-", "-k", "{pub}"],
        ["attest", "oci:{tmp}/layout:a/b:1", "-k", "{key}", "--predicate", "-",
         "--type", "https://example.test/review/v1"],
        ["eval", "{tmp}", "data", "--input", "-"],
        ["gate", "--context", "-", "-k", "{pub}", "example.test/a:1"],
    ],
    ids=["gate-images-from", "attest-predicate", "eval-input", "gate-context"],
)  # fmt: skip
def test_commands_reading_stdin_refuse_non_utf8_as_a_usage_error(
    tmp_path: Path, args: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Exit code 2 naming the option, not "internal error" (4): stdin is input.
    monkeypatch.setenv("COSIGN_PASSWORD", "")
    key, pub = Signer.generate().write_key_pair(tmp_path, password="")
    places = {"tmp": str(tmp_path), "pub": str(pub), "key": str(key)}
    argv = [a.format(**places) for a in args]
    result = CliRunner().invoke(cli, argv, input=b"\xff\n")
    assert result.exit_code == 2, result.output
    assert "can't decode" in result.output
