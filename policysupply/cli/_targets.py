"""Registries on the command line: the registry options, and references to registries or layouts.

Also the readers of what other options name: ``KEY=VALUE`` annotations, files
(or stdin) and JSON documents.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from policysupply.cli._output import usage_error

if TYPE_CHECKING:
    from policysupply import Registry

LAYOUT_PREFIX = "oci:"

F = TypeVar("F", bound=Callable[..., Any])


def _bad(message: str, param: str) -> Exception:
    """A BadParameter error (click loads only when a reference or value is refused)."""
    import click

    return click.BadParameter(message, param_hint=param)


@attrs.frozen(kw_only=True)
class NetOptions:
    """How to reach registries, from the registry options.

    Attributes:
        plain_http: Plain HTTP for every host (loopback hosts always get it).
        insecure: Accept any TLS certificate (no verification).
        ca_file: Trust exactly these CA certificates (PEM) for https registries.
        docker_config: A docker ``config.json`` for credentials.
        timeout: Seconds one registry operation may take, retries included.
    """

    plain_http: bool = False
    insecure: bool = False
    ca_file: str | None = None
    docker_config: str | None = None
    timeout: float = 120.0


def registry_options(f: F) -> F:
    """Adds the registry options; the command receives them as ``net: NetOptions``."""
    # click loads here, when the click commands are built, not for the lean path.
    import click

    from policysupply.cli._options import existing_file_option, option_group

    return option_group(
        NetOptions,
        "net",
        [
            click.option(
                "--plain-http",
                is_flag=True,
                help="Talk plain HTTP to the registry (implied for loopback hosts).",
            ),
            click.option(
                "--insecure",
                is_flag=True,
                help="Do not verify the registry's TLS certificate (as oras --insecure).",
            ),
            existing_file_option(
                "--ca-file",
                envvar="POLICYSUPPLY_CA_FILE",
                help="Trust exactly the CA certificates in this PEM file for https registries "
                "(default: the system trust store).",
            ),
            click.option(
                "--docker-config",
                type=click.Path(dir_okay=False),
                envvar="POLICYSUPPLY_DOCKER_CONFIG",
                help="Docker config.json for credentials "
                "(default: $DOCKER_CONFIG/config.json or ~/.docker/config.json).",
            ),
            click.option(
                "--timeout",
                type=click.FloatRange(min=0.1, max=86400),
                default=120.0,
                show_default=True,
                metavar="SECONDS",
                help="Give up on a registry operation after this long (retries included).",
            ),
        ],
    )(f)


def plain_http(net: NetOptions, host: str) -> bool:
    """Plain HTTP: asked for, or a loopback host without TLS options (--ca-file, --insecure)."""
    return net.plain_http or (_is_loopback(host) and not (net.ca_file or net.insecure))


def _is_loopback(host: str) -> bool:
    import ipaddress

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


def _split_layout(rest: str) -> tuple[str, str]:
    """``DIR:REPO[:TAG]`` into ``(DIR, REPO[:TAG])``.

    ``DIR`` may itself contain ``:`` when such a directory exists (the longest
    existing one wins); otherwise the first ``:`` separates.
    """
    cuts = [i for i, c in enumerate(rest) if c == ":"]
    for i in reversed(cuts):
        try:
            if Path(rest[:i]).is_dir():
                return rest[:i], rest[i + 1 :]
        except (OSError, ValueError):  # too long a name, a NUL byte: not a directory
            continue
    directory, _, ref = rest.partition(":")
    return directory, ref


def check_net(net: NetOptions) -> None:
    """Refuses contradictory registry options (usage error)."""
    if net.plain_http and (net.insecure or net.ca_file):
        usage_error("--plain-http talks HTTP: --insecure and --ca-file are for HTTPS")


def open_target(text: str, net: NetOptions, *, param: str) -> Target:
    """Parses ``host[:port]/repo[:tag|@digest]`` or ``oci:DIR:repo[:tag|@digest]``.

    Raises:
        click.BadParameter: The reference is malformed (exit code 2).
    """
    from policysupply import Reference, Registry, RetryPolicy, Timeout
    from policysupply.errors import RegistryError

    if text.startswith(LAYOUT_PREFIX):
        rest = text[len(LAYOUT_PREFIX) :]
        directory, ref = _split_layout(rest)
        if ":" not in rest or not directory or not ref:
            raise _bad(
                f"{text!r}: a local layout reference is oci:DIR:REPOSITORY[:TAG|@DIGEST]",
                param,
            )
        try:
            r = Reference.parse(ref)
        except RegistryError as exc:
            raise _bad(str(exc), param) from None
        if r.host:
            raise _bad(
                f"{text!r}: read as directory {directory!r} and repository {ref!r}, which "
                "starts with a registry host; if the directory's name contains ':', create "
                "it first (an existing directory is recognised) or use a path without ':'",
                param,
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
        raise _bad(str(exc), param) from None
    if not r.host:
        raise _bad(
            f"{text!r} names no registry: use HOST[:PORT]/REPOSITORY[:TAG|@DIGEST], "
            "or oci:DIR:REPOSITORY[:TAG] for a local OCI layout",
            param,
        )
    check_net(net)
    try:
        registry = Registry.remote(
            r.host,
            insecure=plain_http(net, r.host),
            docker_config=net.docker_config,
            timeout=Timeout(connect=min(10.0, net.timeout), pool=min(10.0, net.timeout)),
            retry=RetryPolicy(deadline=net.timeout),
            ca_file=net.ca_file,
            verify_tls=not net.insecure,
        )
    except RegistryError as exc:
        raise _bad(str(exc), param) from None
    return Target(registry=registry, ref=text, text=text)


def parse_annotations(values: tuple[str, ...], param: str = "-a") -> dict[str, str]:
    """``key=value`` pairs into a dict (usage error on anything else)."""
    out: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise _bad(f"{item!r} is not KEY=VALUE", param)
        out[key] = value
    return out


def read_text_argument(value: str, *, param: str) -> str:
    """The UTF-8 text of the file an option names, or of stdin for ``-``.

    Raises:
        click.BadParameter: The file cannot be read or is not UTF-8 (exit code 2).
    """
    import sys

    try:
        if value == "-":
            return sys.stdin.read()
        return Path(value).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise _bad(f"cannot read {value}: {reason}", param) from None


def read_json_argument(value: str, *, param: str, what: str) -> Any:
    """The JSON document in the file an option names, or on stdin for ``-``.

    Raises:
        click.BadParameter: Unreadable, or not JSON (exit code 2).
    """
    return read_json_document(read_text_argument(value, param=param), param=param, what=what)


def read_json_document(value: str, *, param: str, what: str = "JSON") -> Any:
    """Parses JSON given on the command line, refusing what Python cannot parse safely.

    Raises:
        click.BadParameter: Not JSON, or nested so deeply the parser gives up.
    """
    try:
        return json.loads(value)
    except RecursionError:
        raise _bad(f"{what} is nested too deeply to read", param) from None
    except ValueError as exc:
        raise _bad(f"{what} is not JSON: {exc}", param) from None
