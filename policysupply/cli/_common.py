"""Shared plumbing for the commands: references, errors, output, progress, passwords.

Kept free of heavy imports: rich, httpx and the crypto stack load only when a
command needs them, so ``policysupply --help`` stays quick.
"""

from __future__ import annotations

import functools
import ipaddress
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
    LoadError,
    PolicySupplyError,
    VerificationError,
)

if TYPE_CHECKING:
    from policysupply import Registry

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_USAGE = 2

LAYOUT_PREFIX = "oci:"

F = TypeVar("F", bound=Callable[..., Any])


def _no_rewrap_marks(text: str | None) -> str | None:
    # Docstrings are raw (ruff D301), so click's "\b" no-rewrap mark arrives as
    # a backslash and a "b"; turn it into the backspace click looks for.
    return text.replace("\\b\n", "\b\n") if text else text


class Command(click.Command):
    """A click command whose raw docstring may mark a no-rewrap block with backslash-b."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.help = _no_rewrap_marks(self.help)


class Group(click.Group):
    """A click group with the same docstring handling; its commands are :class:`Command`."""

    command_class = Command

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.help = _no_rewrap_marks(self.help)


def exit_code_for(exc: PolicySupplyError) -> int:
    """1 for a failed check (verification, bundle, load), 2 for configuration problems.

    Registry and signing errors are about the environment (host, credentials,
    key file, password), so a script can tell "fix your setup" from "refused".
    """
    if isinstance(exc, (VerificationError, BundleError, LoadError)):
        return EXIT_FAIL
    return EXIT_USAGE


def emit_json(doc: Mapping[str, Any]) -> None:
    """Prints one JSON document on stdout."""
    click.echo(json.dumps(doc, sort_keys=True))


def fail(exc: PolicySupplyError, as_json: bool, code: int | None = None) -> NoReturn:
    """Reports ``exc`` (JSON on stdout, or a red line on stderr) and exits."""
    code = exit_code_for(exc) if code is None else code
    if as_json:
        doc: dict[str, Any] = {"ok": False, "error": type(exc).__name__, "message": str(exc)}
        if isinstance(exc, BundleError):
            doc.update(entry=exc.entry, line=exc.line, message=exc.reason)
        emit_json(doc)
    else:
        click.secho(f"error: {exc}", fg="red", err=True)
    sys.exit(code)


@contextmanager
def reported(as_json: bool, *, code: int | None = None) -> Iterator[None]:
    """Turns a ``PolicySupplyError`` raised inside into a report and an exit code.

    Args:
        as_json: Report as JSON on stdout.
        code: Force this exit code (e.g. 2 while reading configuration).
    """
    try:
        yield
    except PolicySupplyError as exc:
        fail(exc, as_json, code)


def json_option(f: F) -> F:
    """The ``--json`` flag every command has."""
    return click.option(
        "--json", "as_json", is_flag=True, help="Print one JSON document on stdout."
    )(f)


@attrs.frozen(kw_only=True)
class NetOptions:
    """How to reach registries, from ``--insecure``, ``--docker-config`` and ``--timeout``.

    Attributes:
        insecure: Plain HTTP for every host (loopback hosts always get it).
        docker_config: A docker ``config.json`` for credentials.
        timeout: Seconds one registry operation may take, retries included.
    """

    insecure: bool = False
    docker_config: str | None = None
    timeout: float = 120.0


def registry_options(f: F) -> F:
    """Adds the registry options; the command receives them as ``net: NetOptions``."""

    @functools.wraps(f)
    def wrapper(
        *args: Any, insecure: bool, docker_config: str | None, timeout: float, **kwargs: Any
    ) -> Any:
        net = NetOptions(insecure=insecure, docker_config=docker_config, timeout=timeout)
        return f(*args, net=net, **kwargs)

    decorated: Any = wrapper
    decorated = click.option(
        "--timeout",
        type=click.FloatRange(min=0.1),
        default=120.0,
        show_default=True,
        metavar="SECONDS",
        help="Give up on a registry operation after this long (retries included).",
    )(decorated)
    decorated = click.option(
        "--docker-config",
        type=click.Path(dir_okay=False),
        envvar="POLICYSUPPLY_DOCKER_CONFIG",
        help="Docker config.json for credentials "
        "(default: $DOCKER_CONFIG/config.json or ~/.docker/config.json).",
    )(decorated)
    decorated = click.option(
        "--insecure",
        is_flag=True,
        help="Plain HTTP to the registry (implied for loopback hosts).",
    )(decorated)
    return decorated  # type: ignore[no-any-return]


def _is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    name = name.strip("[]")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@attrs.frozen(kw_only=True)
class Target:
    """A parsed command-line reference: the registry and the reference inside it.

    Attributes:
        registry: A remote registry or a local OCI layout.
        ref: The reference to hand to the registry (``[host/]repo[:tag][@digest]``).
        text: What the user typed, for messages.
        prefix: ``oci:DIR:`` for a local layout, else empty.
    """

    registry: Registry
    ref: str
    text: str
    prefix: str = ""

    def pinned(self, digest: str) -> str:
        """The user-facing reference pinned to ``digest``."""
        return self.prefix + by_digest(self.ref, digest)


def by_digest(ref: str, digest: str) -> str:
    """``ref`` with its tag (or digest) replaced by ``digest``."""
    base = ref.split("@", 1)[0]
    slash, colon = base.rfind("/"), base.rfind(":")
    if colon > slash:
        base = base[:colon]
    return f"{base}@{digest}"


def open_target(text: str, net: NetOptions, *, param: str) -> Target:
    """Parses ``host[:port]/repo[:tag|@digest]`` or ``oci:DIR:repo[:tag|@digest]``.

    Raises:
        click.BadParameter: The reference is malformed (exit code 2).
    """
    from policysupply import Reference, Registry, RetryPolicy, Timeout
    from policysupply.errors import RegistryError

    if text.startswith(LAYOUT_PREFIX):
        rest = text[len(LAYOUT_PREFIX) :]
        directory, sep, ref = rest.partition(":")
        if not sep or not directory or not ref:
            raise click.BadParameter(
                f"{text!r}: a local layout reference is oci:DIR:REPOSITORY[:TAG|@DIGEST]",
                param_hint=param,
            )
        try:
            r = Reference.parse(ref)
        except RegistryError as exc:
            raise click.BadParameter(str(exc), param_hint=param) from None
        if r.host:
            raise click.BadParameter(
                f"{text!r}: a local layout reference has no registry host", param_hint=param
            )
        return Target(
            registry=Registry.local(directory),
            ref=ref,
            text=text,
            prefix=f"{LAYOUT_PREFIX}{directory}:",
        )
    try:
        r = Reference.parse(text)
    except RegistryError as exc:
        raise click.BadParameter(str(exc), param_hint=param) from None
    if not r.host:
        raise click.BadParameter(
            f"{text!r} names no registry: use HOST[:PORT]/REPOSITORY[:TAG|@DIGEST], "
            "or oci:DIR:REPOSITORY[:TAG] for a local OCI layout",
            param_hint=param,
        )
    try:
        registry = Registry.remote(
            r.host,
            insecure=net.insecure or _is_loopback(r.host),
            docker_config=net.docker_config,
            timeout=Timeout(connect=min(10.0, net.timeout), pool=min(10.0, net.timeout)),
            retry=RetryPolicy(deadline=net.timeout),
        )
    except RegistryError as exc:
        raise click.BadParameter(str(exc), param_hint=param) from None
    return Target(registry=registry, ref=text, text=text)


def parse_annotations(values: tuple[str, ...], param: str = "-a") -> dict[str, str]:
    """``key=value`` pairs into a dict (usage error on anything else)."""
    out: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint=param)
        out[key] = value
    return out


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
    if not enabled:
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
    if not sys.stdin.isatty():
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
            raise click.UsageError("the two passwords do not match")
    return first


def key_is_encrypted(path: Path) -> bool:
    """Whether ``path`` is an encrypted cosign key (so a password is needed)."""
    try:
        head = path.read_bytes()[:200]
    except OSError:
        return False
    return b"ENCRYPTED" in head
