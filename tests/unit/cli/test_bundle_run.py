"""The command bodies of ``check`` and ``build`` (``policysupply.cli._bundle_run``)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from policysupply import Bundle
from policysupply.cli import _bundle_run


@pytest.fixture
def opa_killed_by_the_interrupt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An ``opa`` that dies without diagnostics, as one does from the terminal's Ctrl-C.

    Returns the directory the temporary check bundles are made in.
    """
    fake = tmp_path / "opa"
    fake.write_text(
        '#!/bin/sh\nif [ "$1" = version ]; then echo "Version: 1.22.2"; exit 0; fi\nexit 2\n'
    )
    fake.chmod(0o755)
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setenv("POLICYSUPPLY_OPA", str(fake))
    monkeypatch.setenv("TMPDIR", str(temp))
    monkeypatch.setattr(tempfile, "tempdir", str(temp))

    def interrupted(self: Bundle) -> bytes:
        raise KeyboardInterrupt

    # Ctrl-C while the tarball is written, `opa check` still running.
    monkeypatch.setattr(Bundle, "to_bytes", interrupted)
    return temp


def test_ctrl_c_while_the_tarball_is_written_is_an_interrupt_not_a_failed_check(
    opa_killed_by_the_interrupt: Path, example_dir: Path
) -> None:
    # The terminal's SIGINT reaches `opa check` too; its death must not be
    # reported as "opa check failed" (exit code 1: the bundle does not check).
    with pytest.raises(KeyboardInterrupt):
        _bundle_run.run_check(str(example_dir), False, False, "opa", False)
    assert list(opa_killed_by_the_interrupt.iterdir()) == []


def test_ctrl_c_while_building_is_an_interrupt_and_writes_nothing(
    opa_killed_by_the_interrupt: Path, example_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out.tar.gz"
    with pytest.raises(KeyboardInterrupt):
        _bundle_run.run_build(
            _bundle_run.BuildRequest(directory=str(example_dir), output=str(out), engine="opa")
        )
    assert not out.exists()
    assert list(opa_killed_by_the_interrupt.iterdir()) == []
