"""The ``policysupply`` command line: thin commands over the public API.

Only the command that runs is imported (``_COMMANDS`` names its module), so
``policysupply verify`` never loads the gate, the demo or the bundle builder.

Exit codes (docs/cli.md, ADR 0014): 0 success or ALLOW; 1 decided "no" (not
verified, DENY, invalid bundle for ``check``); 2 usage, configuration or
input error; 3 a service was unreachable or failed; 4 internal error;
130 interrupted.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click

from policysupply import __version__
from policysupply.cli._common import (
    EXIT_FAIL,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    OUT,
    CliError,
    Command,
    report,
    wants_json,
)
from policysupply.errors import PolicySupplyError

__all__ = [
    "EXIT_FAIL",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "cli",
    "main",
]

# name -> (module under policysupply.cli, function, one-line help shown by --help).
# The help line is the first line of the command's docstring; a test keeps them equal.
_COMMANDS: dict[str, tuple[str, str, str]] = {
    "build": ("_bundle_cmds", "build", "Build a deterministic OPA bundle from DIRECTORY."),
    "check": (
        "_bundle_cmds",
        "check",
        "Check a bundle file or policy directory: structure, roots and Rego.",
    ),
    "eval": ("_bundle_cmds", "eval_", "Evaluate QUERY against a bundle; prints the result."),
    "push": (
        "_registry_cmds",
        "push",
        "Push a bundle (directory or .tar.gz) to REFERENCE as a policy image.",
    ),
    "pull": ("_registry_cmds", "pull", "Pull a policy image's bundle tarball from REFERENCE."),
    "copy": (
        "_registry_cmds",
        "copy",
        "Copy an artifact (and by default its signatures) from SOURCE to DESTINATION.",
    ),
    "tree": (
        "_registry_cmds",
        "tree",
        "Show what is attached to REFERENCE: signatures, attestations, referrers.",
    ),
    "login": ("_registry_cmds", "login", "Store credentials for REGISTRY in docker's config."),
    "logout": (
        "_registry_cmds",
        "logout",
        "Remove the credentials for REGISTRY from docker's config.",
    ),
    "keygen": (
        "_sign_cmds",
        "keygen",
        "Create an ECDSA P-256 key pair as `cosign generate-key-pair` does.",
    ),
    "sign": (
        "_sign_cmds",
        "sign",
        "Sign the artifact at REFERENCE where cosign looks for signatures.",
    ),
    "verify": (
        "_sign_cmds",
        "verify",
        "Verify the signatures on REFERENCE (a policy image or any OCI artifact).",
    ),
    "attest": (
        "_attest_cmds",
        "attest",
        "Attest a predicate about REFERENCE (an in-toto statement, as cosign attest).",
    ),
    "verify-attestation": (
        "_attest_cmds",
        "verify_attestation",
        "Verify that trusted signers attested REFERENCE (as cosign verify-attestation).",
    ),
    "sign-blob": (
        "_attest_cmds",
        "sign_blob",
        "Sign a file; writes a Sigstore bundle (as cosign sign-blob --bundle).",
    ),
    "verify-blob": (
        "_attest_cmds",
        "verify_blob",
        "Verify a file against its Sigstore bundle (as cosign verify-blob --bundle).",
    ),
    "load": (
        "_run_cmds",
        "load",
        "Verify the policy image at REFERENCE, then load it into a running OPA.",
    ),
    "serve": (
        "_run_cmds",
        "serve",
        "Serve verified bundles to OPA's bundle plugin, following each tag in REFERENCES.",
    ),
    "gate": (
        "_gate_cmds",
        "gate",
        "Decide whether IMAGES may be deployed: their signatures, then the rules.",
    ),
    "admission": (
        "_admission_cmds",
        "admission",
        "Run the gate as a Kubernetes admission service (validate, mutate, Gatekeeper).",
    ),
    "demo": (
        "_misc_cmds",
        "demo",
        "Run the whole story on embedded defaults, narrated step by step.",
    ),
    "examples": (
        "_misc_cmds",
        "examples",
        "Copy the example policies, inputs and trust policy into DIRECTORY.",
    ),
    "version": ("_misc_cmds", "version", "Print the version of policysupply and its engines."),
    "completion": (
        "_misc_cmds",
        "completion",
        "Print the shell completion script for bash, zsh or fish.",
    ),
}


class LazyGroup(click.Group):
    """A group that imports a command's module only when that command runs.

    ``--help`` lists commands from ``_COMMANDS`` without importing any. Every
    invocation goes through :meth:`main`, which owns the exit-code contract:
    usage errors, library errors, interrupts and bugs each get their code,
    and with ``--json`` their one JSON document.
    """

    command_class = Command

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.help:  # raw docstrings carry click's no-rewrap mark as backslash-b
            self.help = self.help.replace("\\b\n", "\b\n")

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*_COMMANDS, *super().list_commands(ctx)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = _COMMANDS.get(cmd_name)
        if entry is None:
            return super().get_command(ctx, cmd_name)
        module = importlib.import_module(f"policysupply.cli.{entry[0]}")
        command: click.Command = getattr(module, entry[1])
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, help_) for name, (_, _, help_) in _COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def main(  # type: ignore[override]
        self,
        args: list[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        OUT.json, OUT.quiet, OUT.verbose = wants_json(argv), False, 0
        code = self._run(argv, prog_name or "policysupply", complete_var, extra)
        if standalone_mode:
            sys.exit(code)
        return code

    def _run(
        self, argv: list[str], prog_name: str, complete_var: str | None, extra: dict[str, Any]
    ) -> int:
        try:
            rv = super().main(
                argv,
                prog_name=prog_name,
                complete_var=complete_var,
                standalone_mode=False,
                **extra,
            )
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else (EXIT_OK if exc.code is None else 1)
        except (click.exceptions.Abort, KeyboardInterrupt):
            return report("Interrupted", "interrupted", EXIT_INTERRUPTED)
        except CliError as exc:
            return report(exc.kind, exc.format_message(), EXIT_USAGE, param=exc.param)
        except click.ClickException as exc:
            return _usage(exc)
        except BrokenPipeError:
            # The reader went away (``| head``): nothing left to say to it.
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - interpreter shutdown closes it
            return EXIT_OK
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
            from policysupply.cli._common import exit_code_for

            return report(type(exc).__name__, str(exc), exit_code_for(exc))
        except Exception as exc:
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


def _usage(exc: click.ClickException) -> int:
    """A click usage error: click's text on stderr, or one JSON document with ``--json``."""
    if OUT.json:
        param = None
        if isinstance(exc, click.BadParameter):
            param = exc.param_hint if isinstance(exc.param_hint, str) else None
            if param is None and exc.param is not None:
                param = exc.param.opts[0] if exc.param.opts else exc.param.name
        elif isinstance(exc, click.NoSuchOption):
            param = exc.option_name
        return report(type(exc).__name__, exc.format_message(), EXIT_USAGE, param=param)
    exc.show()
    return EXIT_USAGE


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="policysupply")
def cli() -> None:
    r"""Build, sign, push, verify and load OPA policy bundles; gate images.

    Exit codes: 0 ok (or ALLOW); 1 not verified, DENY, or an invalid bundle
    for `check`; 2 usage, configuration or input error; 3 a registry, OPA or
    Sigstore service was unreachable or failed; 4 internal error.

    \b
    Examples:
      policysupply demo
      policysupply build policies/ -o bundle.tar.gz --revision "$(git rev-parse HEAD)"
      policysupply keygen
      policysupply push bundle.tar.gz registry.example.com/acme/policy:1.0
      policysupply sign registry.example.com/acme/policy:1.0 --key cosign.key
      policysupply verify registry.example.com/acme/policy:1.0 --key cosign.pub
      policysupply load registry.example.com/acme/policy:1.0 --key cosign.pub --opa http://127.0.0.1:8181
      policysupply gate registry.example.com/acme/app:1.4 --key cosign.pub -o junit
    """


def main() -> None:
    """Entry point of the ``policysupply`` console script."""
    cli.main(prog_name="policysupply")
