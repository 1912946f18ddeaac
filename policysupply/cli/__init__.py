"""The ``policysupply`` command line: thin commands over the public API.

Exit codes: 0 success (or allow), 1 a failed check or verification (or deny),
2 usage or configuration error.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from policysupply import __version__
from policysupply.cli._common import EXIT_FAIL, EXIT_OK, EXIT_USAGE, Group, fail
from policysupply.cli._registry_cmds import copy, pull, push
from policysupply.cli._run_cmds import gate, load, serve
from policysupply.cli._sign_cmds import keygen, sign, verify
from policysupply.errors import PolicySupplyError, SigningError

__all__ = ["EXIT_FAIL", "EXIT_OK", "EXIT_USAGE", "cli", "main"]


def _fail(exc: PolicySupplyError, as_json: bool) -> None:
    fail(exc, as_json)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="policysupply")
def cli() -> None:
    r"""Build, sign, push, verify and load OPA policy bundles; gate images.

    Exit codes: 0 ok (or allow), 1 a failed check, verification or deny,
    2 a usage or configuration error.

    \b
    Examples:
      policysupply demo
      policysupply build policies/ -o bundle.tar.gz --revision "$(git rev-parse HEAD)"
      policysupply keygen
      policysupply push bundle.tar.gz registry.example.com/acme/policy:1.0
      policysupply sign registry.example.com/acme/policy:1.0 --key cosign.key
      policysupply verify registry.example.com/acme/policy:1.0 --key cosign.pub
      policysupply load registry.example.com/acme/policy:1.0 --key cosign.pub --opa http://127.0.0.1:8181
      policysupply gate registry.example.com/acme/app:1.4 --key cosign.pub
    """


def _load(source: str) -> Any:
    from policysupply.bundle import Bundle

    p = Path(source)
    if p.is_dir():
        return Bundle.from_directory(p)
    if not p.exists():
        raise click.BadParameter(f"{source} does not exist", param_hint="SOURCE")
    return Bundle.from_file(p)


@cli.command()
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
@click.option(
    "--claims-file",
    type=click.Path(exists=True, dir_okay=False),
    help="JSON file of extra claims for the signature (as opa build --claims-file).",
)
@click.option("--scope", help="Scope claim of the signature (OPA checks it against its config).")
@click.option(
    "--key-id",
    help="kid of the signature. Default: 'default' as opa build writes it (a cosign.key: "
    "its key id, as publish and serve --opa-signing use); none with --claims-file or --scope.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def build(
    directory: str,
    output: str,
    revision: str | None,
    roots: tuple[str, ...],
    no_check: bool,
    signing_key: str | None,
    signing_alg: str | None,
    claims_file: str | None,
    scope: str | None,
    key_id: str | None,
    as_json: bool,
) -> None:
    r"""Build a deterministic OPA bundle from DIRECTORY.

    With --signing-key the bundle carries an OPA-native signature that
    `opa run --verification-key` and OPA's bundle `signing` config verify.

    \b
    Example:
      policysupply build policies/ -o bundle.tar.gz --revision v1.2.0 --root k8s
      policysupply build policies/ -o bundle.tar.gz --signing-key private.pem
    """
    from policysupply.bundle import Bundle

    signing = (claims_file, scope, key_id, signing_alg)
    if signing_key is None and any(v is not None for v in signing):
        raise click.UsageError(
            "--signing-alg, --claims-file, --scope and --key-id need --signing-key"
        )
    try:
        b = Bundle.from_directory(directory, revision=revision, roots=list(roots) or None)
        if not no_check:
            b.check()
        if signing_key is not None:
            b = _sign_native(b, signing_key, signing_alg, claims_file, scope, key_id)
        b.write(output)
    except PolicySupplyError as exc:
        _fail(exc, as_json)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "ok": True,
                    "path": output,
                    "digest": b.digest,
                    "revision": b.manifest.revision,
                    "modules": len(b.modules),
                }
            )
        )
    else:
        click.echo(f"wrote {output} ({len(b.to_bytes()):,} bytes, {len(b.modules)} modules)")
        click.echo(f"digest {b.digest}")


def _sign_native(
    b: Any,
    key: str,
    alg: str | None,
    claims_file: str | None,
    scope: str | None,
    key_id: str | None,
) -> Any:
    from policysupply._internal.opa_signatures import parse_claims

    claims = None
    if claims_file is not None:
        try:
            claims = parse_claims(Path(claims_file).read_bytes())
        except (OSError, ValueError) as exc:
            raise SigningError(f"cannot read claims file {claims_file}: {exc}") from None
    from policysupply.cli._common import key_is_encrypted, read_password

    signing_key: Any = key
    default_id = "default"  # what opa build writes (its --verification-key-id default)
    if Path(key).is_file() and key_is_encrypted(Path(key)):
        from policysupply.signer import Signer

        # A cosign.key: signed under its cosign key id, as publish() does, so
        # `serve --opa-signing -k cosign.pub` configures OPA to match.
        signer = Signer.from_key_file(key, password=read_password(confirm=False))
        signing_key, key_id = signer, key_id or signer.key_id
    if key_id is None and claims is None and scope is None:
        key_id = default_id
    return b.sign(signing_key, alg=alg, key_id=key_id, scope=scope, claims=claims)


@cli.command()
@click.argument("source")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def check(source: str, as_json: bool) -> None:
    r"""Check a bundle file or policy directory: structure, roots and Rego.

    \b
    Example:
      policysupply check bundle.tar.gz
    """
    try:
        b = _load(source)
        b.check()
    except PolicySupplyError as exc:
        _fail(exc, as_json)
    if as_json:
        click.echo(json.dumps({"ok": True, "digest": b.digest}))
    else:
        click.echo(f"ok: {len(b.modules)} modules, digest {b.digest}")


@cli.command("eval")
@click.argument("source")
@click.argument("query")
@click.option(
    "-i",
    "--input",
    "input_path",
    type=click.File("r"),
    help="Input document (JSON file, or - for stdin).",
)
def eval_(source: str, query: str, input_path: Any) -> None:
    r"""Evaluate QUERY against a bundle with the embedded engine; prints JSON.

    \b
    Example:
      policysupply eval bundle.tar.gz data.k8s.admission.deny -i pod.json
    """
    try:
        doc = json.load(input_path) if input_path is not None else None
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"input is not JSON: {exc}", param_hint="--input") from None
    try:
        result = _load(source).evaluate(query, doc)
    except PolicySupplyError as exc:
        _fail(exc, False)
    click.echo(json.dumps(result, indent=2, sort_keys=True))


@cli.command()
@click.option(
    "--workdir",
    type=click.Path(file_okay=False),
    help="Keep the demo's files here (default: a temporary directory).",
)
@click.option(
    "--opa",
    "opa",
    type=click.Path(dir_okay=False, exists=True),
    help="An opa binary to also load the verified bundle into a real OPA "
    "(default: $POLICYSUPPLY_OPA or opa on PATH, if any).",
)
def demo(workdir: str | None, opa: str | None) -> None:
    """Run the whole story on embedded defaults, narrated step by step.

    build → keygen → sign → push → verify → load → gate, then attacks that
    must be refused. Needs nothing set up: a local OCI layout in a temporary
    directory, the example policies shipped in the package, and the embedded
    Rego engine (plus a real OPA on loopback when one is available).
    """
    from policysupply.cli._demo import run_demo

    sys.exit(run_demo(workdir, opa))


for _command in (push, pull, copy, keygen, sign, verify, load, serve, gate):
    cli.add_command(_command)


def main() -> None:
    """Entry point of the ``policysupply`` console script."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(EXIT_FAIL)
    except click.ClickException as exc:
        exc.show()
        sys.exit(EXIT_USAGE)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except PolicySupplyError as exc:  # a command that forgot to report it
        fail(exc, False)
    except Exception as exc:
        # A bug, not a verdict. Tracebacks and exception texts can carry
        # arguments (tokens, passwords in paths), so they are opt-in.
        if os.environ.get("POLICYSUPPLY_DEBUG") == "1":
            raise
        click.secho(
            f"internal error ({type(exc).__name__}); rerun with POLICYSUPPLY_DEBUG=1 "
            "for the traceback, and please report it",
            fg="red",
            err=True,
        )
        sys.exit(EXIT_FAIL)
