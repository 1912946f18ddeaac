"""``build``, ``check`` and ``eval``: bundles on disk, no registry involved."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from policysupply.cli._common import (
    Command,
    emit_json,
    json_option,
    read_json_document,
    reported,
    say,
    usage_error,
)
from policysupply.errors import BundleError, PolicySupplyError

if TYPE_CHECKING:
    from policysupply import Bundle


def load_bundle(source: str, *, param: str = "SOURCE") -> Bundle:
    """A bundle from a directory or a ``.tar.gz`` file (usage error if neither exists)."""
    from policysupply import Bundle

    p = Path(source)
    if p.is_dir():
        return Bundle.from_directory(p)
    if not p.exists():
        usage_error(f"{source} does not exist (give a policy directory or a .tar.gz bundle)", param)
    return Bundle.from_file(p)


@click.command(cls=Command)
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    default="bundle.tar.gz",
    show_default=True,
    help="Where to write the bundle.",
)
@click.option("--revision", help="Manifest revision (e.g. a git SHA).")
@click.option("--root", "roots", multiple=True, help="Manifest root (repeatable).")
@click.option("--no-check", is_flag=True, help="Skip compiling the Rego before writing.")
@json_option
def build(
    directory: str,
    output: str,
    revision: str | None,
    roots: tuple[str, ...],
    no_check: bool,
    as_json: bool,
) -> None:
    r"""Build a deterministic OPA bundle from DIRECTORY.

    Exit code 1 when the Rego or data does not check (the file and line are
    printed), 2 when the output cannot be written.

    \b
    Example:
      policysupply build policies/ -o bundle.tar.gz --revision v1.2.0 --root k8s
    """
    from policysupply import Bundle

    with reported(as_json, verdict=(BundleError,)):
        b = Bundle.from_directory(directory, revision=revision, roots=list(roots) or None)
        if not no_check:
            b.check()
    with reported(as_json):
        try:
            b.write(output)
        except OSError as exc:
            raise BundleError(f"cannot write {output}: {exc.strerror or exc}") from None
    if as_json:
        emit_json(
            {
                "ok": True,
                "path": output,
                "digest": b.digest,
                "revision": b.manifest.revision,
                "modules": len(b.modules),
            }
        )
    else:
        say(f"wrote {output} ({len(b.to_bytes()):,} bytes, {len(b.modules)} modules)")
        say(f"digest {b.digest}", essential=True)


@click.command(cls=Command)
@click.argument("source")
@json_option
def check(source: str, as_json: bool) -> None:
    r"""Check a bundle file or policy directory: structure, roots and Rego.

    Exit code 0 when it checks, 1 when it does not (file and line printed).

    \b
    Example:
      policysupply check bundle.tar.gz
    """
    with reported(as_json, verdict=(BundleError,)):
        b = load_bundle(source)
        b.check()
    if as_json:
        emit_json(
            {
                "ok": True,
                "digest": b.digest,
                "revision": b.manifest.revision,
                "modules": len(b.modules),
            }
        )
    else:
        say(f"ok: {len(b.modules)} modules, digest {b.digest}")


def _read_input(value: str | None) -> Any:
    if value is None:
        return None
    if value == "-":
        text = sys.stdin.read()
    else:
        try:
            text = Path(value).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise click.BadParameter(
                f"cannot read {value}: {reason}", param_hint="--input"
            ) from None
    return read_json_document(text, param="--input", what="the input")


def _query_problem(query: str) -> str | None:
    """Why ``query`` is not valid Rego, checked as the body of a rule (None when it parses)."""
    from policysupply import Bundle

    module = f"package policysupply_query_check\n\nq if {{\n{query}\n}}\n"
    try:
        Bundle(modules={"query.rego": module}).check()
    except BundleError as exc:
        where = f" (line {exc.line - 3} of the query)" if exc.line and exc.line > 3 else ""
        return f"{exc.reason}{where}"
    except PolicySupplyError:
        return None
    return None


@click.command("eval", cls=Command)
@click.argument("source")
@click.argument("query")
@click.option(
    "-i",
    "--input",
    "input_path",
    metavar="FILE|-",
    help="Input document (JSON file, or - for stdin).",
)
@json_option
def eval_(source: str, query: str, input_path: str | None, as_json: bool) -> None:
    r"""Evaluate QUERY against a bundle; prints the result.

    The result is printed as JSON (``null`` when undefined); with --json it is
    wrapped as {"ok": true, "query": ..., "result": ...}. Exit code 2 for an
    invalid query, input or bundle.

    \b
    Example:
      policysupply eval bundle.tar.gz data.k8s.admission.deny -i pod.json
    """
    import json

    doc = _read_input(input_path)
    with reported(as_json):
        bundle = load_bundle(source)
    try:
        result = bundle.evaluate(query, doc)
    except BundleError as exc:
        problem = _query_problem(query) if exc.entry is None else None
        if problem is not None:
            usage_error(f"the query {query!r} is not valid Rego: {problem}", "QUERY")
        with reported(as_json):
            raise
    if as_json:
        emit_json({"ok": True, "query": query, "result": result})
    else:
        click.echo(json.dumps(result, indent=2, sort_keys=True))
