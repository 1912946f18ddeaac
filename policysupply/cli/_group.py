"""The click group: ``--help``, usage errors and every command the lean dispatch declines.

Imported only when click handles the command line (``policysupply.cli.cli``
is this module's ``cli``).
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from policysupply import __version__
from policysupply.cli._commands import _COMMANDS
from policysupply.cli._common import EXIT_USAGE, OUT, Command, report, wants_json
from policysupply.cli._output import guarded

__all__ = ["LazyGroup", "cli"]


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
        return guarded(
            lambda: super(LazyGroup, self).main(
                argv,
                prog_name=prog_name,
                complete_var=complete_var,
                standalone_mode=False,
                **extra,
            ),
            click_error=_usage,
        )


def _usage(exc: Exception) -> int:
    """A click usage error: click's text on stderr, or one JSON document with ``--json``."""
    if not isinstance(exc, click.ClickException):  # guarded() passes only these
        raise exc
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
