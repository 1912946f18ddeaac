"""Source rewrites that make rego-cpp evaluate a module the way OPA does.

Each stage is a pure ``str -> str`` function over one Rego v1 module that
has already passed the embedded engine's checks and refusals. A stage may
change text within a line and append definitions after the last line, but
never moves an original token to another line, so rego-cpp's diagnostics
keep OPA's line numbers. Helper names a stage generates start with ``__ps``
(followed by the stage's own prefix), a prefix user code does not use.
Only evaluation sees the rewritten source; ``check()`` reads the original.
"""

from __future__ import annotations

from collections.abc import Callable

from policysupply._internal.engines.rego_rewrite_checks import rewrite_checks

Stage = Callable[[str], str]

# Applied in order.
STAGES: tuple[Stage, ...] = (rewrite_checks,)


def rewrite(source: str) -> str:
    """Returns ``source`` after every stage, for evaluation by rego-cpp."""
    for stage in STAGES:
        source = stage(source)
    return source
