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
    embedded Rego engine, Sigstore for keyless), the opa binary found and
    the Rego engine that commands will use by default.

    \b
    Example:
      policysupply version --json
    """
    import os
    import platform
    import shutil

    from policysupply import __version__
    from policysupply._internal.engines import ENGINE_ENV, select_engine
    from policysupply.errors import EngineUnavailableError

    opa = os.environ.get("POLICYSUPPLY_OPA") or shutil.which("opa")
    # Asked of the selector every command uses, so the answer cannot drift from it.
    engine: str | None
    try:
        engine, engine_error = select_engine(None).name, None
    except (EngineUnavailableError, ValueError) as exc:
        engine, engine_error = None, str(exc)
    doc = {
        "version": __version__,
        "python": platform.python_version(),
        "platform": sys.platform,
        "regopy": _dist_version("regopy"),
        "sigstore": _dist_version("sigstore"),
        "opa": opa,
        "engine": engine,
        **({"engine_error": engine_error} if engine_error else {}),
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
    source = ENGINE_ENV if os.environ.get(ENGINE_ENV) else "auto"
    click.echo(f"engine {engine} ({source})" if engine else f"engine: unavailable ({engine_error})")


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


@click.command(cls=Command)
@click.argument("directory", type=click.Path(file_okay=False), default="policysupply-examples")
@json_option
def examples(directory: str, as_json: bool) -> None:
    r"""Copy the example policies, inputs and trust policy into DIRECTORY.

    Writes policies/ (Kubernetes admission policies, a bundle source tree),
    pod.json and pod-privileged.json (inputs for eval), and
    trust-policy.yaml (for --policy) with its JSON Schema for editors.
    Existing files are never overwritten.
    The quickstart uses exactly these.

    \b
    Example:
      policysupply examples ./demo && cd demo && policysupply build policies/ -o bundle.tar.gz
    """
    import shutil
    from importlib import resources
    from pathlib import Path

    from policysupply.cli._common import say, usage_error

    target = Path(directory)
    plan = {
        "policies": "kubernetes",
        "pod.json": "pod.json",
        "pod-privileged.json": "pod-privileged.json",
        "trust-policy.yaml": "trust-policy.yaml",
        "trust-policy.schema.json": "../schemas/trust-policy.schema.json",
    }
    existing = [name for name in plan if (target / name).exists()]
    if existing:
        usage_error(
            f"{target / existing[0]} exists; refusing to overwrite (choose another DIRECTORY)"
        )
    try:
        target.mkdir(parents=True, exist_ok=True)
        with resources.as_file(resources.files("policysupply") / "examples") as source:
            for name, src in plan.items():
                if (source / src).is_dir():
                    shutil.copytree(source / src, target / name)
                else:
                    shutil.copyfile(source / src, target / name)
    except OSError as exc:
        usage_error(f"cannot write the examples to {target}: {exc.strerror or exc}")
    written = [str(target / name) for name in plan]
    if as_json:
        emit_json({"ok": True, "directory": str(target), "files": written})
    else:
        for path in written:
            say(f"wrote {path}")
