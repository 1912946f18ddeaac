"""Developer sessions: `nox -s tests lint typecheck docs demo fuzz conformance`."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    """Unit, property and interop tests (builds peer tools into the cache first)."""
    session.install("-e", ".[test]")
    session.run("bash", "scripts/install-peers.sh", external=True)
    session.run("pytest", *session.posargs, env={"POLICYSUPPLY_NO_SKIP": "1"})


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff lint and format check."""
    session.install("ruff")
    session.run("ruff", "check", "policysupply", "tests", "benchmarks", "noxfile.py")
    session.run("ruff", "format", "--check", "policysupply")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package."""
    session.install("-e", ".[lint]")
    session.run("mypy")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site with --strict."""
    session.install("-e", ".[docs]")
    session.run("mkdocs", "build", "--strict")


@nox.session
def demo(session: nox.Session) -> None:
    """Run `policysupply demo`."""
    session.install(".")
    session.run("policysupply", "demo", *session.posargs)


@nox.session
def fuzz(session: nox.Session) -> None:
    """The long fuzzing campaign: every target for FUZZ_SECONDS (default 300) each.

    Found inputs accumulate in .fuzz/corpus, findings land in .fuzz/findings
    (see tests/fuzz/campaign.py). `nox -s fuzz -- verifier` runs one target.
    """
    session.install("-e", ".[test]")
    seconds = session.env.get("FUZZ_SECONDS", "300")
    session.run("python", "-m", "tests.fuzz.campaign", "--seconds", seconds, *session.posargs)


@nox.session
def conformance(session: nox.Session) -> None:
    """sigstore-conformance bundle-verify cases through Verifier.verify_blob.

    Needs SIGSTORE_CONFORMANCE_ASSETS: the suite's test/assets directory at the
    commit pinned in tests/conformance/run.py (not vendored; see that file).
    """
    import os

    if not os.environ.get("SIGSTORE_CONFORMANCE_ASSETS"):
        session.error(
            "set SIGSTORE_CONFORMANCE_ASSETS to sigstore-conformance's test/assets "
            "(see tests/conformance/run.py for the pinned commit)"
        )
    session.install("-e", ".[test]")
    session.run("python", "-m", "tests.conformance.run", *session.posargs)
