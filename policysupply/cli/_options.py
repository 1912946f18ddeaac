"""Option decorators shared by several commands.

:func:`option_group` turns a block of options into one attrs object the
command receives (``net: NetOptions``, ``trust: TrustOptions``,
``signing: SignerOptions``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import attrs
import click

F = TypeVar("F", bound=Callable[..., Any])


def option_group(
    cls: type[Any],
    into: str,
    options: Sequence[Callable[[Any], Any]],
    check: Callable[[Any], None] | None = None,
) -> Callable[[F], F]:
    """Adds ``options`` (in this order in ``--help``); the command receives them as one ``cls``.

    Each option's parameter name is the name of a field of the attrs class
    ``cls``; the command gets the instance as its argument ``into``, and
    none of the options' own parameters. A field without an option keeps
    its default.

    Args:
        cls: The attrs class the values become.
        into: The command's parameter name for the instance.
        options: ``click.option(...)`` decorators.
        check: Called with the instance before the command runs (a usage error
            refuses it).
    """
    names = [a.name for a in attrs.fields(cls)]

    def decorate(f: F) -> F:
        @functools.wraps(f)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            group = cls(**{n: kwargs.pop(n) for n in names if n in kwargs})
            if check is not None:
                check(group)
            return f(*args, **{into: group}, **kwargs)

        g: Any = wrapper
        for option in reversed(options):
            g = option(g)
        return g  # type: ignore[no-any-return]

    return decorate


def bundle_output_option(what: str) -> Callable[[F], F]:
    """``-o/--output FILE``, by default ``bundle.tar.gz``: where to write ``what``."""
    return click.option(
        "-o",
        "--output",
        type=click.Path(dir_okay=False),
        default="bundle.tar.gz",
        show_default=True,
        help=f"Where to write {what}.",
    )


def directory_option(default: str, what: str) -> Callable[[F], F]:
    """``-d/--directory DIR``, by default ``default`` (shown); ``what`` is its help."""
    return click.option(
        "-d",
        "--directory",
        type=click.Path(file_okay=False),
        default=default,
        show_default=True,
        help=what,
    )


def existing_file_option(*decls: str, **settings: Any) -> Callable[[F], F]:
    """An option naming a file that must exist (not a directory): click refuses others first."""
    return click.option(*decls, type=click.Path(exists=True, dir_okay=False), **settings)
