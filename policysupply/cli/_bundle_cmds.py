"""``build``, ``check`` and ``eval``: bundles on disk, no registry involved."""

from __future__ import annotations

from typing import Any

import click

from policysupply.cli._bundle_run import BuildRequest, load_bundle, run_build, run_check
from policysupply.cli._common import (
    Command,
    emit_json,
    engine_option,
    json_option,
    reported,
    usage_error,
    v0_option,
)
from policysupply.cli._options import bundle_output_option, existing_file_option
from policysupply.cli._targets import read_json_argument
from policysupply.errors import BundleError, PolicySupplyError

__all__ = ["build", "check", "eval_", "load_bundle"]


@click.command(cls=Command)
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@bundle_output_option("the bundle")
@click.option("--revision", help="Manifest revision (e.g. a git SHA).")
@click.option("--root", "roots", multiple=True, help="Manifest root (repeatable).")
@click.option("--no-check", is_flag=True, help="Skip compiling the Rego before writing.")
@v0_option
@engine_option
@click.option(
    "--signing-key",
    metavar="KEY",
    help="Add an OPA-native signature (.signatures.json) as `opa build --signing-key` "
    "does: a PEM private key file (a cosign.key too, password from $COSIGN_PASSWORD), "
    "or the secret for HS* algorithms.",
)
@click.option(
    "--signing-alg",
    metavar="ALG",
    help="RS256 (default for RSA keys), RS384/512, PS256/384/512, ES256/384/512 "
    "(default by curve), HS256/384/512.",
)
@existing_file_option(
    "--claims-file",
    help="JSON file of extra claims for the signature (as opa build --claims-file).",
)
@click.option("--scope", help="Scope claim of the signature (OPA checks it against its config).")
@click.option(
    "--key-id",
    help="kid of the signature. Default: 'default' as opa build writes it (a cosign.key: "
    "its key id, as publish and serve --opa-signing use); none with --claims-file or --scope.",
)
@json_option
def build(**options: Any) -> None:
    r"""Build a deterministic OPA bundle from DIRECTORY.

    With --signing-key the bundle carries an OPA-native signature that
    `opa run --verification-key` and OPA's bundle `signing` config verify.
    Exit code 1 when the Rego or data does not check (the file and line are
    printed), 2 when the output cannot be written or the key is unusable.

    \b
    Example:
      policysupply build policies/ -o bundle.tar.gz --revision v1.2.0 --root k8s
      policysupply build policies/ -o bundle.tar.gz --signing-key private.pem
    """
    run_build(BuildRequest(**options))


@click.command(cls=Command)
@click.argument("source")
@click.option(
    "--strict",
    is_flag=True,
    help="Also OPA's strict-mode errors (unused imports and variables, deprecated "
    "builtins), as `opa check --strict`; needs the OPA engine.",
)
@v0_option
@engine_option
@json_option
def check(
    source: str, strict: bool, v0_compatible: bool, engine: str | None, as_json: bool
) -> None:
    r"""Check a bundle file or policy directory: structure, roots and Rego.

    Exit code 0 when it checks, 1 when it does not (file and line printed).

    \b
    Example:
      policysupply check bundle.tar.gz
    """
    run_check(source, strict, v0_compatible, engine, as_json)


def _read_input(value: str | None) -> Any:
    if value is None:
        return None
    return read_json_argument(value, param="--input", what="the input")


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
@v0_option
@engine_option
@json_option
def eval_(
    source: str,
    query: str,
    input_path: str | None,
    v0_compatible: bool,
    engine: str | None,
    as_json: bool,
) -> None:
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
    with reported(as_json, verdict=(BundleError,)):
        # As `opa eval`: a bundle that does not check is not evaluated.
        bundle = load_bundle(source, v0_compatible=v0_compatible)
        bundle.check(engine=engine)
    try:
        result = bundle.evaluate(query, doc, engine=engine)
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
