"""``demo``, ``version`` and ``completion``."""

from __future__ import annotations

import sys

import click

from policysupply.cli._common import EXIT_INTERNAL, Command, emit_json, json_option


@click.command(cls=Command)
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
@json_option
def demo(workdir: str | None, opa: str | None, as_json: bool) -> None:
    """Run the whole story on embedded defaults, narrated step by step.

    build → keygen → sign → push → verify → load → gate, then attacks that
    must be refused. Needs nothing set up: a local OCI layout in a temporary
    directory, the example policies shipped in the package, and the embedded
    Rego engine (plus a real OPA on loopback when one is available). Exit
    code 4 if any step does not behave as the story says.
    """
    from policysupply.cli._demo import run_demo

    code = run_demo(workdir, opa, as_json=as_json)
    sys.exit(EXIT_INTERNAL if code else 0)


def _dist_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


@click.command(cls=Command)
@json_option
def version(as_json: bool) -> None:
    r"""Print the version of policysupply and its engines.

    Shows the Python version, the optional parts that are installed (the
    embedded Rego engine, Sigstore for keyless) and the opa binary found.

    \b
    Example:
      policysupply version --json
    """
    import os
    import platform
    import shutil

    from policysupply import __version__

    opa = os.environ.get("POLICYSUPPLY_OPA") or shutil.which("opa")
    doc = {
        "version": __version__,
        "python": platform.python_version(),
        "platform": sys.platform,
        "regopy": _dist_version("regopy"),
        "sigstore": _dist_version("sigstore"),
        "opa": opa,
    }
    if as_json:
        emit_json({"ok": True, **doc})
        return
    click.echo(f"policysupply {__version__}")
    click.echo(f"python {doc['python']} ({doc['platform']})")
    for part, what in (("regopy", "embedded Rego engine"), ("sigstore", "keyless signing")):
        have = doc[part]
        click.echo(f"{part} {have}" if have else f"{part}: not installed ({what} unavailable)")
    click.echo(f"opa {opa}" if opa else "opa: not found (the embedded engine answers)")


@click.command(cls=Command)
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    r"""Print the shell completion script for bash, zsh or fish.

    \b
    Examples:
      policysupply completion bash > ~/.local/share/bash-completion/completions/policysupply
      policysupply completion zsh > "${fpath[1]}/_policysupply"
      policysupply completion fish > ~/.config/fish/completions/policysupply.fish
    """
    from click.shell_completion import get_completion_class

    from policysupply.cli import cli

    cls = get_completion_class(shell)
    assert cls is not None  # noqa: S101 - click.Choice admits only shells click knows
    click.echo(cls(cli, {}, "policysupply", "_POLICYSUPPLY_COMPLETE").source())
