"""Reporting without click: exit codes, output state, errors, and the guarded run.

Everything a command body needs to print and exit as the CLI contract says
(docs/cli.md, ADR 0014), importable without click or attrs, so that the lean
dispatch (``_lean``) runs the same bodies as the click commands. When click
is loaded (the click path, ``CliRunner``), output goes through ``click.echo``;
otherwise it is written exactly as ``click.echo`` would write it.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, NoReturn

from policysupply.errors import (
    BundleError,
    EngineUnavailableError,
    PolicySupplyError,
    TransientRegistryError,
    UnsupportedByEngineError,
    VerificationError,
)

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_INTERNAL = 4
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, as a shell reports a terminated command


class Terminated(KeyboardInterrupt):
    """SIGTERM (a cancelled CI job, a stopped pod), raised where Ctrl-C would be.

    A KeyboardInterrupt, so that every cleanup that runs for Ctrl-C (the
    check's temporary tree, a child ``opa``, half-written files) runs for it too.
    """


def on_sigterm(signum: int, frame: object) -> None:
    """Signal handler for the console script: SIGTERM unwinds as :class:`Terminated`."""
    del signum, frame
    raise Terminated


# click's pattern for ANSI escape sequences (``click._compat._ansi_re``).
_ANSI = r"\033\[[0-?]*[ -/]*[@-~]"
_COLORS = {
    "black": 30,
    "red": 31,
    "green": 32,
    "yellow": 33,
    "blue": 34,
    "magenta": 35,
    "cyan": 36,
    "white": 37,
}


# -- output state ------------------------------------------------------------------


class _Output:
    """How this process reports: set from ``--json``, ``-q`` and ``-v``."""

    __slots__ = ("json", "quiet", "verbose")

    def __init__(self, json: bool = False, quiet: bool = False, verbose: int = 0) -> None:
        self.json = json
        self.quiet = quiet
        self.verbose = verbose

    def __repr__(self) -> str:
        return f"_Output(json={self.json!r}, quiet={self.quiet!r}, verbose={self.verbose!r})"


OUT = _Output()


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except Exception:
        return False


def echo(message: str, *, err: bool = False, **style: Any) -> None:
    """One line on stdout (or stderr), as ``click.echo`` / ``click.secho`` print it.

    With click loaded, or a style other than a basic ``fg`` colour, click
    itself prints. Otherwise the line is written as click writes it: the
    style codes added, then every ANSI sequence stripped when the stream is
    not a terminal, and the stream flushed.
    """
    click = sys.modules.get("click")
    if click is None and (set(style) - {"fg"} or style.get("fg", "red") not in _COLORS):
        import click
    if click is not None:
        if style:
            click.secho(message, err=err, **style)
        else:
            click.echo(message, err=err)
        return
    stream = sys.stderr if err else sys.stdout
    if stream is None:
        return
    text = message
    if style.get("fg"):
        text = f"\033[{_COLORS[style['fg']]}m{text}\033[0m"
    text += "\n"
    if "\033" in text and not _isatty(stream):
        import re

        text = re.sub(_ANSI, "", text)
    stream.write(text)
    stream.flush()


def say(message: str = "", *, essential: bool = False, err: bool = False, **style: Any) -> None:
    """Prints a human line (never in JSON mode; with ``-q`` only ``essential`` ones)."""
    if OUT.json or (OUT.quiet and not essential):
        return
    echo(message, err=err, **style)


def emit_json(doc: Mapping[str, Any]) -> None:
    """Prints one JSON document on stdout."""
    echo(json.dumps(doc, sort_keys=True))


# -- errors and exit codes ---------------------------------------------------------


class UsageProblem(Exception):
    """A usage or configuration problem the CLI found itself (exit code 2, no usage text).

    Attributes:
        kind: The ``error.type`` reported with ``--json``.
        param: The option or argument at fault, if any.
    """

    def __init__(self, message: str, *, kind: str = "UsageError", param: str | None = None) -> None:
        super().__init__(message)
        self._text = message
        self.kind = kind
        self.param = param

    def format_message(self) -> str:
        """The message as printed."""
        return self._text


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
    # The engine could not judge (not installed, cannot answer exactly): a
    # configuration problem, never "the bundle is invalid".
    if isinstance(exc, (EngineUnavailableError, UnsupportedByEngineError)):
        return EXIT_USAGE
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
        echo(f"error: {message}", fg="red", err=True)
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
    raise UsageProblem(message, param=param)


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


def guarded(call: Callable[[], Any], click_error: Callable[[Exception], int] | None = None) -> int:
    """Runs ``call`` (a command) and returns its exit code; owns the exit-code contract.

    Usage errors, library errors, interrupts and bugs each get their code,
    and with ``--json`` their one JSON document. ``click_error`` reports a
    click usage error (only the click path raises those).
    """
    try:
        rv = call()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (EXIT_OK if exc.code is None else 1)
    except Terminated:
        # Whoever sent SIGTERM wants the process gone, not a report.
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        # As click's main (which the click path goes through): a blank line on
        # stderr closes the terminal's ^C echo before the report.
        echo("", err=True)
        return report("Interrupted", "interrupted", EXIT_INTERRUPTED)
    except UsageProblem as exc:
        return report(exc.kind, exc.format_message(), EXIT_USAGE, param=exc.param)
    except BrokenPipeError:
        # The reader went away (``| head``): nothing left to say to it. Exit
        # code 1, as click's main answers EPIPE on the click path.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - interpreter shutdown closes it
        return EXIT_FAIL
    except ModuleNotFoundError as exc:
        from policysupply._internal import extras

        if exc.name is None or exc.name.split(".")[0] not in extras.EXTRA_FOR:
            raise
        return report(
            "MissingExtraError",
            f"this needs the optional dependency {exc.name.split('.')[0]!r}, which is not "
            f"installed: {extras.hint(exc.name.split('.')[0])}",
            EXIT_USAGE,
        )
    except PolicySupplyError as exc:  # a command that forgot to report it
        return report(type(exc).__name__, str(exc), exit_code_for(exc))
    except Exception as exc:
        click = sys.modules.get("click")
        if click is not None and isinstance(exc, click.exceptions.Abort):
            return report("Interrupted", "interrupted", EXIT_INTERRUPTED)
        if click is not None and click_error is not None and isinstance(exc, click.ClickException):
            return click_error(exc)
        # A bug, not a verdict. Tracebacks and exception texts can carry
        # arguments (tokens, passwords in paths), so they are opt-in.
        if os.environ.get("POLICYSUPPLY_DEBUG") == "1":
            raise
        return report(
            "InternalError",
            f"internal error ({type(exc).__name__}); rerun with POLICYSUPPLY_DEBUG=1 "
            "for the traceback, and please report it",
            EXIT_INTERNAL,
            exception=type(exc).__name__,
        )
    return rv if isinstance(rv, int) else EXIT_OK
