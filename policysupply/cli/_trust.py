"""Trust-policy options shared by ``verify``, ``pull``, ``load``, ``serve`` and ``gate``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from policysupply.cli._common import EXIT_USAGE, parse_annotations, reported

if TYPE_CHECKING:
    from policysupply import Verifier

F = TypeVar("F", bound=Callable[..., Any])


def trust_options(*, required: bool) -> Callable[[F], F]:
    """``--key`` (repeatable), ``--threshold``, ``-a`` and ``--docker-reference``."""

    def decorate(f: F) -> F:
        f = click.option(
            "--docker-reference",
            type=click.Choice(["repository", "exact", "off"]),
            default="repository",
            show_default=True,
            help="How the signed docker-reference must match: same repository on any host "
            "(survives mirroring), exact host too, or not checked (as cosign).",
        )(f)
        f = click.option(
            "-a",
            "--annotation",
            "annotations",
            multiple=True,
            metavar="KEY=VALUE",
            help="Annotation every counted signature must carry (repeatable).",
        )(f)
        f = click.option(
            "--threshold",
            type=click.IntRange(min=1),
            default=1,
            show_default=True,
            help="Distinct trusted keys that must have signed.",
        )(f)
        return click.option(
            "-k",
            "--key",
            "keys",
            multiple=True,
            required=required,
            type=click.Path(exists=True, dir_okay=False),
            help="Trusted public key (cosign.pub); repeatable.",
        )(f)

    return decorate


def verifier_from_options(
    keys: tuple[str, ...],
    threshold: int,
    annotations: tuple[str, ...],
    docker_reference: str,
    as_json: bool,
) -> Verifier | None:
    """A Verifier for the options, or ``None`` when no key was given.

    A key file that is not a public key, or a threshold the keys cannot meet,
    is a configuration error (exit code 2).
    """
    from policysupply import TrustPolicy, Verifier

    required = parse_annotations(annotations)
    if not keys:
        if threshold != 1 or required:
            raise click.UsageError("--threshold and -a need at least one --key")
        return None
    with reported(as_json, code=EXIT_USAGE):
        policy = TrustPolicy(
            keys=keys,
            threshold=threshold,
            annotations=required,
            docker_reference=docker_reference,  # type: ignore[arg-type]
        )
    return Verifier(policy)
