"""Shared plumbing for the commands: exit codes, errors, output, terminal, passwords.

Registry options and references are in ``_targets``.

Kept free of heavy imports: rich, httpx and the crypto stack load only when a
command needs them, so ``policysupply --help`` stays quick. Output, errors and
exit codes are in ``_output`` (no click), re-exported here.

The exit-code contract (docs/cli.md, ADR 0014):

====  ==============================================================
0     success; ``gate``: ALLOW
1     decided "no": not verified, DENY, ``check`` found the bundle invalid
2     usage, configuration or input error (fix the command or its files)
3     a service (registry, OPA, Sigstore) was unreachable or failed;
      nothing was decided, retrying may help
4     internal error (a bug in policysupply: please report it)
130   interrupted (Ctrl-C)
====  ==============================================================
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from policysupply.cli._output import (
    EXIT_FAIL as EXIT_FAIL,
)
from policysupply.cli._output import (
    EXIT_INTERNAL as EXIT_INTERNAL,
)
from policysupply.cli._output import (
    EXIT_INTERRUPTED as EXIT_INTERRUPTED,
)
from policysupply.cli._output import (
    EXIT_OK as EXIT_OK,
)
from policysupply.cli._output import (
    EXIT_UNAVAILABLE as EXIT_UNAVAILABLE,
)
from policysupply.cli._output import (
    EXIT_USAGE as EXIT_USAGE,
)
from policysupply.cli._output import (
    OUT as OUT,
)
from policysupply.cli._output import (
    UsageProblem,
)
from policysupply.cli._output import (
    describe as describe,
)
from policysupply.cli._output import (
    emit_json as emit_json,
)
from policysupply.cli._output import (
    error_document as error_document,
)
from policysupply.cli._output import (
    exit_code_for as exit_code_for,
)
from policysupply.cli._output import (
    fail as fail,
)
from policysupply.cli._output import (
    report as report,
)
from policysupply.cli._output import (
    reported as reported,
)
from policysupply.cli._output import (
    say as say,
)
from policysupply.cli._output import (
    unavailable_reason as unavailable_reason,
)
from policysupply.cli._output import (
    usage_error as usage_error,
)
from policysupply.cli._output import (
    wants_json as wants_json,
)

if TYPE_CHECKING:
    from policysupply import Verifier

F = TypeVar("F", bound=Callable[..., Any])

REFERENCE_HELP = """\b
References:
  HOST[:PORT]/REPO[:TAG|@DIGEST]   a registry (HTTPS; plain HTTP with
                                   --plain-http and for loopback hosts;
                                   credentials from the docker config)
  oci:DIR:REPO[:TAG|@DIGEST]       an OCI image layout under DIR (no server)
"""

KEY_PROMPT_HELP = """\b
Password: taken from $COSIGN_PASSWORD when set, otherwise asked for on the
terminal (hidden), or read as one line from stdin when that is not a terminal.
"""


class Command(click.Command):
    """A click command whose raw docstring may mark a no-rewrap block with backslash-b."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.help:  # docstrings are raw (ruff D301): "\\b" arrives as two characters
            self.help = self.help.replace("\\b\n", "\b\n")


class CliError(click.ClickException, UsageProblem):
    """A usage or configuration problem the CLI found itself (exit code 2, no usage text).

    Attributes:
        kind: The ``error.type`` reported with ``--json``.
        param: The option or argument at fault, if any.
    """

    exit_code = EXIT_USAGE

    def __init__(self, message: str, *, kind: str = "UsageError", param: str | None = None) -> None:
        click.ClickException.__init__(self, message)
        self.kind = kind
        self.param = param


def _verbosity(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if param.name == "as_json" and value:
        OUT.json = True
    elif param.name == "quiet" and value:
        OUT.quiet = True
    elif param.name == "verbose" and value:
        OUT.verbose = max(OUT.verbose, int(value))
        _configure_logging(OUT.verbose)
    return value


def _redact_query(record: Any) -> bool:
    """Drops query strings from logged URLs (pre-signed blob URLs carry signatures)."""
    if record.args:
        args = record.args if isinstance(record.args, tuple) else (record.args,)
        record.args = tuple(str(a).split("?", 1)[0] if "://" in str(a) else a for a in args)
    return True


def _configure_logging(level: int) -> None:
    """``-v``: policysupply's events on stderr; ``-vv``: also each HTTP request."""
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname).1s %(name)s: %(message)s"))
    handler.addFilter(_redact_query)
    for name, at in (("policysupply", 1), ("httpx", 2)):
        log = logging.getLogger(name)
        if level >= at:
            log.setLevel(logging.DEBUG if level >= 2 else logging.INFO)
            if not any(getattr(h, "_policysupply", False) for h in log.handlers):
                handler._policysupply = True  # type: ignore[attr-defined]
                log.addHandler(handler)


# Every command's output options, with the callback that sets the verbosity
# from them: declarations, settings, help (each applied in turn, so the last
# comes first in --help).
_OUTPUT_OPTIONS: tuple[tuple[tuple[str, ...], dict[str, Any], str], ...] = (
    (("-v", "--verbose"), {"count": True, "expose_value": False},
     "More detail on stderr (-v: events, -vv: every HTTP request)."),
    (("-q", "--quiet"), {"is_flag": True, "expose_value": False},
     "Print only errors and the essential result (e.g. the digest reference)."),
    (("--json", "as_json"), {"is_flag": True},
     "Print exactly one JSON document on stdout, errors included."),
)  # fmt: skip


def json_option(f: F) -> F:
    """``--json``, ``-q/--quiet`` and ``-v/--verbose``: every command has them."""
    g: Any = f
    for decls, settings, what in _OUTPUT_OPTIONS:
        g = click.option(*decls, **settings, callback=_verbosity, help=what)(g)
    return g  # type: ignore[no-any-return]


# -- terminal ----------------------------------------------------------------------


def on_terminal() -> bool:
    """Whether stderr is an interactive terminal (progress bars go there)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


@contextmanager
def progress_bar(description: str, enabled: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A rich byte progress bar on stderr, or ``None`` when not on a terminal.

    Yields the ``progress=`` callback the Registry methods take.
    """
    if not enabled or OUT.json or OUT.quiet:
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )
    task = bar.add_task(description, total=None)

    def update(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total or None)

    with bar:
        yield update
        final = bar.tasks[0]
        if final.total is not None:
            bar.update(task, completed=final.total)


def stdin_is_terminal() -> bool:
    """Whether stdin is an interactive terminal (prompts are possible)."""
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def _stdin_line() -> str:
    line = sys.stdin.readline()
    return line.rstrip("\r\n")


def read_password(*, confirm: bool) -> str:
    """The key password: ``COSIGN_PASSWORD`` if set, else a hidden prompt.

    Off a terminal the password is read as one line from stdin, as cosign does.
    It is never echoed or printed.
    """
    env = os.environ.get("COSIGN_PASSWORD")
    if env is not None:
        return env
    if not stdin_is_terminal():
        return _stdin_line()

    def ask(prompt: str) -> str:
        answer: str = click.prompt(
            prompt, hide_input=True, default="", show_default=False, err=True
        )
        return answer

    first = ask("Enter password for private key")
    if confirm:
        again = ask("Enter password for private key again")
        if again != first:
            raise CliError(
                "the two passwords do not match; nothing was written, run keygen again",
                kind="PasswordMismatch",
            )
    return first


def key_is_encrypted(path: Path) -> bool:
    """Whether ``path`` is an encrypted cosign key (so a password is needed)."""
    try:
        head = path.read_bytes()[:200]
    except OSError:
        return False
    return b"ENCRYPTED" in head


# -- Rego ------------------------------------------------------------------------


def engine_option(f: F) -> F:
    """``--engine auto|opa|embedded``: which Rego engine checks or evaluates."""
    g: Any = click.option(
        "--engine",
        type=click.Choice(["auto", "opa", "embedded"], case_sensitive=False),
        default=None,
        help="Rego engine: opa (the `opa` binary: --opa path, POLICYSUPPLY_OPA or PATH), "
        "embedded (rego-cpp, refuses what it cannot answer exactly as OPA), or auto "
        "(OPA when found). Default: $POLICYSUPPLY_ENGINE, else auto.",
    )(f)
    return g  # type: ignore[no-any-return]


def v0_option(f: F) -> F:
    """``--v0-compatible``, as OPA's: read modules as Rego v0 unless the manifest says otherwise."""
    return click.option(
        "--v0-compatible",
        "v0_compatible",
        is_flag=True,
        help="Parse the Rego as v0 (pre-1.0 syntax), as `opa ... --v0-compatible` does; "
        "a bundle manifest's rego_version still wins.",
    )(f)


def require_verifier(verifier: Verifier | None) -> Verifier:
    """The verifier that ``trust_options(required=True)`` guarantees (never ``None``)."""
    # trust_options(required=True) guarantees a key, identity or policy file.
    assert verifier is not None  # noqa: S101
    return verifier
