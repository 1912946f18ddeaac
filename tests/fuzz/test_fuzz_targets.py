"""Every fuzz target for its CI budget (seconds each); any finding fails the test.

The budget is ``POLICYSUPPLY_FUZZ_SECONDS`` (default 4); the long campaign is
``nox -s fuzz`` (tests/fuzz/campaign.py). A failure names the input libFuzzer
saved: replay it with ``python -m tests.fuzz.<module> FILE``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.fuzz import campaign

SECONDS = int(os.environ.get("POLICYSUPPLY_FUZZ_SECONDS", "4"))


@pytest.mark.parametrize("target", sorted(campaign.targets()))
def test_fuzz_target_has_no_findings(target: str, tmp_path: Path) -> None:
    result = campaign.run_target(target, SECONDS, tmp_path / "corpus", tmp_path / "findings")
    print(  # shown with -s / -rA: the CI figures in benchmarks/README.md
        f"{target}: {result.executions} executions in {result.seconds}s, "
        f"coverage {result.coverage}, corpus {result.corpus_size}"
    )
    assert result.ok, (
        f"fuzz target {target}: exit {result.returncode}, findings {result.findings}\n"
        + result.output[-6000:]
    )
    assert result.executions > 0, result.output[-3000:]


def test_every_target_has_seeds() -> None:
    for target in campaign.targets():
        seeds = campaign.CORPUS / target
        assert seeds.is_dir(), f"{target}: no seed corpus in {seeds}"
        assert any(seeds.iterdir()), f"{target}: empty seed corpus"
