"""The admission service's gate: the trust policy and the rules its configuration names."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from policysupply._internal.admission.config import AdmissionConfig
from policysupply.gate import Gate
from policysupply.trust_state import TrustState


def build_gate(
    config: AdmissionConfig,
    engine_registry: Callable[[str], Any] | None = None,
    rules_state: TrustState | None = None,
) -> Gate:
    """The gate the configuration describes (rules prepared by the engine: errors show at start).

    Args:
        config: The service configuration.
        engine_registry: The registry client for a host (rules from an image).
        rules_state: Rollback protection for the rule image; default: the
            configured ``rules.state`` file, if any.

    Raises:
        PolicySupplyError: The trust policy, rules or rule image is unusable.
    """
    from policysupply.bundle import Bundle
    from policysupply.verifier import TrustPolicy, Verifier

    root = str(config.trusted_root) if config.trusted_root else None
    verifier = Verifier(TrustPolicy.from_file(config.trust_policy), trusted_root=root)
    settings = dict(config.settings) or None
    if config.rules_image:
        from policysupply._internal.admission.engine import normalize

        rules_verifier = (
            Verifier(TrustPolicy.from_file(config.rules_trust_policy), trusted_root=root)
            if config.rules_trust_policy
            else None
        )
        ref = normalize(config.rules_image)
        if engine_registry is None:
            raise ValueError("a registry is needed for rules from an image")
        gate = Gate.from_registry(
            engine_registry(ref.host),
            ref,
            verifier,
            rules_verifier=rules_verifier,
            state=rules_state or (TrustState(config.rules_state) if config.rules_state else None),
            settings=settings,
            engine=config.engine,
        )
    elif config.rules_directory:
        rules = Bundle.from_directory(config.rules_directory)
        gate = Gate(verifier, rules, settings=settings, engine=config.engine)
    elif config.rules_bundle:
        rules = Bundle.from_file(config.rules_bundle)
        gate = Gate(verifier, rules, settings=settings, engine=config.engine)
    else:
        gate = Gate(verifier, settings=settings, engine=config.engine)
    return gate
