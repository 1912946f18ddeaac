"""The ``policysupply`` command line: thin commands over the public API.

Only the command that runs is imported (``_COMMANDS`` names its module), so
``policysupply verify`` never loads the gate, the demo or the bundle builder.

Exit codes (docs/cli.md, ADR 0014): 0 success or ALLOW; 1 decided "no" (not
verified, DENY, invalid bundle for ``check``); 2 usage, configuration or
input error; 3 a service was unreachable or failed; 4 internal error;
130 interrupted; 143 terminated (SIGTERM).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from policysupply.cli._commands import _COMMANDS as _COMMANDS
from policysupply.cli._output import (
    EXIT_FAIL,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TERMINATED,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
)

if TYPE_CHECKING:
    from policysupply.cli._group import LazyGroup as LazyGroup
    from policysupply.cli._group import cli

__all__ = [
    "EXIT_FAIL",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_TERMINATED",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "cli",
    "main",
]


def __getattr__(name: str) -> Any:
    # The click group loads on first use: the lean dispatch never needs it.
    if name in ("cli", "LazyGroup"):
        from policysupply.cli import _group

        return getattr(_group, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    """Entry point of the ``policysupply`` console script.

    The common forms of the hot commands (``check``, ``build``) run their
    command body without importing click (``_lean``); everything else, and
    anything those forms do not cover, goes to the click group. SIGTERM
    unwinds as Ctrl-C does (temporary files removed, children stopped) and
    exits with 143.
    """
    import signal

    from policysupply.cli._lean import dispatch
    from policysupply.cli._output import on_sigterm

    signal.signal(signal.SIGTERM, on_sigterm)

    code = dispatch(sys.argv[1:])
    if code is None:
        from policysupply.cli._group import cli

        cli.main(prog_name="policysupply")
    sys.exit(code)
