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
from policysupply._internal.engines.rego_rewrite_iter import rewrite_iteration_order
from policysupply._internal.engines.rego_rewrite_nest import rewrite_nesting
from policysupply._internal.engines.rego_rewrite_not import rewrite_not
from policysupply._internal.engines.rego_rewrite_order import rewrite_order

Stage = Callable[[str], str]

# Applied in order. Hoisting out of `not` comes first (OPA does it before
# anything else), then the checks stage's guards and refusals. Nesting
# threads generators before iteration order wraps their domains; ordering
# runs last, so the `sort` and `<` in the helpers the iteration stage appends
# take OPA's order too, and no other stage rewrites the ordering helpers.
STAGES: tuple[Stage, ...] = (
    rewrite_not,
    rewrite_checks,
    rewrite_nesting,
    rewrite_iteration_order,
    rewrite_order,
)


def rewrite(source: str) -> str:
    """Returns ``source`` after every stage, for evaluation by rego-cpp."""
    for stage in STAGES:
        source = stage(source)
    return source
