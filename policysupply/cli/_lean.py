"""A lean dispatch for the common forms of ``check``, ``build`` and ``verify``: no click.

Importing click and building its command (~25-70 ms) costs more than a
10-file ``check`` itself. For the plain forms of these commands this module
parses the command line, runs the same command body as the click command
(``_bundle_run``, ``_verify_run``) under the same exit-code handling
(``_output.guarded``), and prints through the same functions. Anything it
does not recognise exactly (help, ``-v``, combined or attached short options,
repeated options, signing options, any ``verify`` option but ``--key``, a
value starting with ``-``, an argument click would refuse, an environment
variable an option reads, shell completion, a misconfigured stream encoding)
returns ``None`` and click handles the whole command line as before.
``tests/unit/cli/test_lean_dispatch.py`` holds a catalogue of invocations
whose stdout, stderr and exit code must be byte-identical on both paths.
"""

from __future__ import annotations

import codecs
import os
import stat
import sys
from typing import Any

__all__ = ["dispatch"]

ENGINES = ("auto", "opa", "embedded")

# option -> (keyword, takes a value); flags store True.
_COMMON = {
    "--json": ("as_json", False),
    "-q": ("quiet", False),
    "--quiet": ("quiet", False),
    "--v0-compatible": ("v0_compatible", False),
    "--engine": ("engine", True),
}
_OPTIONS: dict[str, dict[str, tuple[str, bool]]] = {
    "check": {**_COMMON, "--strict": ("strict", False)},
    "build": {
        **_COMMON,
        "-o": ("output", True),
        "--output": ("output", True),
        "--revision": ("revision", True),
        "--root": ("roots", True),
        "--no-check": ("no_check", False),
    },
    "verify": {
        "--json": ("as_json", False),
        "-q": ("quiet", False),
        "--quiet": ("quiet", False),
        "-k": ("keys", True),
        "--key": ("keys", True),
    },
}
_MULTIPLE = ("roots", "keys")
# Options of `verify` that read the environment: with one of these set, click decides.
_VERIFY_ENV = ("POLICYSUPPLY_POLICY", "POLICYSUPPLY_DOCKER_CONFIG", "POLICYSUPPLY_CA_FILE")
_HOST = r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::[0-9]{1,5})?\Z"


def _parse(command: str, args: list[str]) -> dict[str, Any] | None:
    """The options and the one positional argument, or ``None`` for anything unusual."""
    spec = _OPTIONS[command]
    found: dict[str, Any] = {"roots": [], "keys": []}
    positional: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if not arg.startswith("-") or arg == "-":
            if arg == "-":
                return None
            positional.append(arg)
            continue
        name, eq, attached = arg.partition("=")
        if not name.startswith("--"):
            eq, attached = "", ""
            name = arg
        entry = spec.get(name)
        if entry is None:
            return None
        key, takes_value = entry
        value: Any
        if takes_value:
            if eq:
                value = attached
            elif i < len(args):
                value = args[i]
                i += 1
            else:
                return None
            if value.startswith("-"):
                return None
            if key in _MULTIPLE:
                found[key].append(value)
                continue
        elif eq:
            return None
        else:
            value = True
        if key in found:
            return None
        found[key] = value
    if len(positional) != 1:
        return None
    found["positional"] = positional[0]
    engine = found.get("engine")
    if engine is not None and engine not in ENGINES:
        return None
    return found


def _path_ok(path: str, *, kind: str) -> bool:
    """Whether click.Path would accept ``path`` as this ``kind`` of argument.

    ``dir``: exists=True, file_okay=False; ``file``: exists=True,
    dir_okay=False; ``output``: dir_okay=False (a missing path is fine).
    """
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return kind == "output"
    if stat.S_ISDIR(st.st_mode) != (kind == "dir"):
        return False
    return os.access(path, os.R_OK)


def _plain_remote_reference(text: str) -> bool:
    """``HOST[:PORT]/REPO[:TAG|@DIGEST]`` that ``open_target`` accepts as it is."""
    import re

    from policysupply._internal.oci import Reference
    from policysupply.errors import RegistryError

    if text.startswith("oci:"):
        return False
    try:
        ref = Reference.parse(text)
    except RegistryError:
        return False
    return bool(ref.host) and re.match(_HOST, ref.host) is not None


def _streams_ok() -> bool:
    # click re-wraps a stream whose encoding is ASCII (or unset): leave those to it.
    for stream in (sys.stdout, sys.stderr):
        encoding = getattr(stream, "encoding", None)
        if stream is None or not encoding:
            return False
        try:
            if codecs.lookup(encoding).name == "ascii":
                return False
        except LookupError:
            return False
    return True


def dispatch(argv: list[str]) -> int | None:
    """Runs ``argv`` without click when it is a plain ``check`` or ``build``.

    Returns:
        The exit code, or ``None`` when click must handle the command line
        (nothing has run or been printed then).
    """
    if len(argv) < 2 or argv[0] not in _OPTIONS:
        return None
    if "_POLICYSUPPLY_COMPLETE" in os.environ or not _streams_ok():
        return None
    command = argv[0]
    opts = _parse(command, argv[1:])
    if opts is None:
        return None
    if command == "build":
        if not _path_ok(opts["positional"], kind="dir"):
            return None
        if not _path_ok(opts.get("output", "bundle.tar.gz"), kind="output"):
            return None
    if command == "verify":
        if any(name in os.environ for name in _VERIFY_ENV):
            return None
        if not opts["keys"] or not all(_path_ok(k, kind="file") for k in opts["keys"]):
            return None
        if not _plain_remote_reference(opts["positional"]):
            return None

    from policysupply.cli._output import OUT, guarded, wants_json

    OUT.json = wants_json(argv) or bool(opts.get("as_json"))
    OUT.quiet = bool(opts.get("quiet"))
    OUT.verbose = 0
    as_json = bool(opts.get("as_json"))
    engine = opts.get("engine")
    v0 = bool(opts.get("v0_compatible"))
    if command == "verify":
        return _verify(opts["positional"], tuple(opts["keys"]), as_json)
    from policysupply.cli import _bundle_run

    if command == "check":
        return guarded(
            lambda: _bundle_run.run_check(
                opts["positional"], bool(opts.get("strict")), v0, engine, as_json
            )
        )
    return guarded(
        lambda: _bundle_run.run_build(
            _bundle_run.BuildRequest(
                directory=opts["positional"],
                output=opts.get("output", "bundle.tar.gz"),
                revision=opts.get("revision"),
                roots=tuple(opts["roots"]),
                no_check=bool(opts.get("no_check")),
                v0_compatible=v0,
                engine=engine,
                as_json=as_json,
            )
        )
    )


def _verify(reference: str, keys: tuple[str, ...], as_json: bool) -> int:
    from policysupply.cli._output import guarded
    from policysupply.cli._targets import NetOptions
    from policysupply.cli._trust import TrustOptions
    from policysupply.cli._verify_run import run_verify

    # What the click options give when only --key is set (their defaults).
    trust = TrustOptions(keys=keys)
    return guarded(lambda: run_verify(reference, trust, (), NetOptions(), as_json))
