"""Shared plumbing for the commands: exit codes, errors, output, terminal, passwords.

Registry options and references are in ``_targets``.

Kept free of heavy imports: rich, httpx and the crypto stack load only when a
command needs them, so ``policysupply --help`` stays quick.

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

import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import attrs
import click

from policysupply.errors import (
    BundleError,
    PolicySupplyError,
    TransientRegistryError,
    VerificationError,
)

if TYPE_CHECKING:
    from policysupply import Verifier

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_INTERNAL = 4
EXIT_INTERRUPTED = 130

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


# -- output state ------------------------------------------------------------------


@attrs.define
class _Output:
    """How this process reports: set from ``--json``, ``-q`` and ``-v``."""

    json: bool = False
    quiet: bool = False
    verbose: int = 0


OUT = _Output()


def say(message: str = "", *, essential: bool = False, err: bool = False, **style: Any) -> None:
    """Prints a human line (never in JSON mode; with ``-q`` only ``essential`` ones)."""
    if OUT.json or (OUT.quiet and not essential):
        return
    if style:
        click.secho(message, err=err, **style)
    else:
        click.echo(message, err=err)


def emit_json(doc: Mapping[str, Any]) -> None:
    """Prints one JSON document on stdout."""
    click.echo(json.dumps(doc, sort_keys=True))


# -- errors and exit codes ---------------------------------------------------------


class CliError(click.ClickException):
    """A usage or configuration problem the CLI found itself (exit code 2, no usage text).

    Attributes:
        kind: The ``error.type`` reported with ``--json``.
        param: The option or argument at fault, if any.
    """

    exit_code = EXIT_USAGE

    def __init__(self, message: str, *, kind: str = "UsageError", param: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.param = param


# Exception class names (not imported: they belong to optional dependencies)
# that mean a service could not be reached or did not answer in time.
_UNREACHABLE_NAMES = frozenset(
    {
        "NewConnectionError",
        "MaxRetryError",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "ConnectError",
        "ConnectTimeout",
        "ReadTimeout",
        "Timeout",
        "ProtocolError",
        "RemoteDisconnected",
        "ConnectionsError",
    }
)


def unavailable_reason(exc: BaseException) -> str | None:
    """Why a service was unreachable, if that is what ``exc`` (or its causes) says.

    Walks ``__cause__``/``__context__`` (kept even behind ``raise ... from None``).
    """
    import socket
    import ssl

    if isinstance(exc, TransientRegistryError):
        return "the registry did not answer usefully before the deadline"
    seen: BaseException | None = exc
    for _ in range(12):  # a TLS failure is configuration (trust), not unavailability
        if seen is None:
            break
        if isinstance(seen, ssl.SSLError):
            return None
        seen = seen.__cause__ or seen.__context__
    seen = exc
    for _ in range(12):
        if seen is None:
            return None
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused"
        if isinstance(seen, socket.gaierror):
            return "host name not resolved"
        if isinstance(seen, TimeoutError):
            return "timed out"
        if isinstance(seen, ConnectionError):
            return "connection failed"
        name = type(seen).__name__
        if name in _UNREACHABLE_NAMES:
            text = str(seen).lower()
            if "refused" in text:
                return "connection refused"
            if "name or service not known" in text or "nodename nor servname" in text:
                return "host name not resolved"
            if "timed out" in text or "timeout" in name.lower():
                return "timed out"
            return "connection failed"
        seen = seen.__cause__ or seen.__context__
    return None


def exit_code_for(exc: PolicySupplyError, *, verdict: tuple[type[Exception], ...] = ()) -> int:
    """The documented exit code for ``exc``.

    1 for a failed verification (or a type the command declares its verdict,
    e.g. ``BundleError`` for ``check``), 3 when a service was unreachable, 2 for
    everything else (setup, input, credentials, not found).
    """
    if unavailable_reason(exc):
        return EXIT_UNAVAILABLE
    if isinstance(exc, (VerificationError, *verdict)):
        return EXIT_FAIL
    return EXIT_USAGE


def error_document(kind: str, message: str, code: int, **extra: Any) -> dict[str, Any]:
    """The one JSON document every failure prints with ``--json``."""
    err: dict[str, Any] = {"type": kind, "message": message, "exit_code": code}
    err.update({k: v for k, v in extra.items() if v is not None})
    return {"ok": False, "error": err}


def report(kind: str, message: str, code: int, **extra: Any) -> int:
    """Prints a failure (JSON on stdout, or a red ``error:`` line on stderr); returns ``code``."""
    if OUT.json:
        emit_json(error_document(kind, message, code, **extra))
    else:
        click.secho(f"error: {message}", fg="red", err=True)
    return code


def describe(exc: PolicySupplyError, *, service: str | None = None) -> str:
    """The message for ``exc``; an unreachable service gets a short, plain one."""
    reason = unavailable_reason(exc)
    if reason and service and not isinstance(exc, TransientRegistryError):
        return f"cannot reach {service} ({reason}); check that it is running and the address"
    return str(exc)


def fail(
    exc: PolicySupplyError,
    as_json: bool | None = None,
    code: int | None = None,
    *,
    verdict: tuple[type[Exception], ...] = (),
    service: str | None = None,
) -> NoReturn:
    """Reports ``exc`` and exits with its code (3 for an unreachable service, always)."""
    if as_json:
        OUT.json = True
    if unavailable_reason(exc):
        code = EXIT_UNAVAILABLE
    elif code is None:
        code = exit_code_for(exc, verdict=verdict)
    extra: dict[str, Any] = {}
    if isinstance(exc, BundleError):
        extra.update(entry=exc.entry, line=exc.line, column=exc.column, reason=exc.reason)
    sys.exit(report(type(exc).__name__, describe(exc, service=service), code, **extra))


@contextmanager
def reported(
    as_json: bool = False,
    *,
    code: int | None = None,
    verdict: tuple[type[Exception], ...] = (),
    service: str | None = None,
) -> Iterator[None]:
    """Turns a ``PolicySupplyError`` raised inside into a report and an exit code.

    Args:
        as_json: Report as JSON on stdout.
        code: Force this exit code (e.g. 2 while reading configuration); an
            unreachable service is 3 regardless.
        verdict: Error types that are this command's "no" (exit code 1).
        service: What is being reached (``OPA at http://...``), for the message
            when it cannot be.
    """
    try:
        yield
    except PolicySupplyError as exc:
        fail(exc, as_json, code, verdict=verdict, service=service)


def usage_error(message: str, param: str | None = None) -> NoReturn:
    """Raises a usage error (exit code 2) that prints without click's usage header."""
    raise CliError(message, param=param)


def wants_json(args: list[str]) -> bool:
    """Whether the command line asks for JSON (so even usage errors print JSON)."""
    for i, a in enumerate(args):
        if a == "--":
            return False
        if a in ("--json", "--output=json", "-ojson"):
            return True
        if a in ("--output", "-o") and i + 1 < len(args) and args[i + 1] == "json":
            return True
    return False


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


def json_option(f: F) -> F:
    """``--json``, ``-q/--quiet`` and ``-v/--verbose``: every command has them."""
    g: Any = click.option(
        "-v",
        "--verbose",
        count=True,
        expose_value=False,
        callback=_verbosity,
        help="More detail on stderr (-v: events, -vv: every HTTP request).",
    )(f)
    g = click.option(
        "-q",
        "--quiet",
        is_flag=True,
        expose_value=False,
        callback=_verbosity,
        help="Print only errors and the essential result (e.g. the digest reference).",
    )(g)
    g = click.option(
        "--json",
        "as_json",
        is_flag=True,
        callback=_verbosity,
        help="Print exactly one JSON document on stdout, errors included.",
    )(g)
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
    first: str = click.prompt(
        "Enter password for private key",
        hide_input=True,
        default="",
        show_default=False,
        err=True,
    )
    if confirm:
        again: str = click.prompt(
            "Enter password for private key again",
            hide_input=True,
            default="",
            show_default=False,
            err=True,
        )
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
    g: Any = click.option(
        "--v0-compatible",
        "v0_compatible",
        is_flag=True,
        help="Parse the Rego as v0 (pre-1.0 syntax), as `opa ... --v0-compatible` does; "
        "a bundle manifest's rego_version still wins.",
    )(f)
    return g  # type: ignore[no-any-return]


def require_verifier(verifier: Verifier | None) -> Verifier:
    """The verifier that ``trust_options(required=True)`` guarantees (never ``None``)."""
    # trust_options(required=True) guarantees a key, identity or policy file.
    assert verifier is not None  # noqa: S101
    return verifier
