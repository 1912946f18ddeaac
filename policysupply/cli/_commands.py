"""The command table: which module holds each command, and its one-line help.

Read by ``--help`` without importing any command (``_group``), and re-exported
by ``policysupply.cli``.
"""

from __future__ import annotations

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
