"""The policysupply error tree.

Everything policysupply raises on purpose derives from :class:`PolicySupplyError`,
so callers can catch one type at the boundary of their tool and still branch on
the precise failure below it::

    PolicySupplyError
    ├── BundleError
    ├── RegistryError
    │   ├── NotFoundError
    │   ├── AuthenticationError
    │   └── TransientRegistryError
    ├── SigningError
    ├── VerificationError
    │   ├── NoSignatureError
    │   ├── UntrustedSignatureError
    │   ├── ThresholdNotMetError
    │   ├── DigestMismatchError
    │   └── RollbackError
    └── LoadError

Messages say what failed, on which file or reference, and what to do about it.
They never contain secrets.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "BundleError",
    "DigestMismatchError",
    "LoadError",
    "NoSignatureError",
    "NotFoundError",
    "PolicySupplyError",
    "RegistryError",
    "RollbackError",
    "SigningError",
    "ThresholdNotMetError",
    "TransientRegistryError",
    "UntrustedSignatureError",
    "VerificationError",
]


class PolicySupplyError(Exception):
    """Base class of every error policysupply raises on purpose."""


class BundleError(PolicySupplyError):
    """A bundle could not be read, built or checked.

    Attributes:
        entry: The bundle entry (tar member or file path relative to the bundle
            root) the problem is in, when there is one.
        line: 1-based line in ``entry``, for Rego and data parse errors.
        column: 1-based column in ``entry``, when known.
    """

    def __init__(
        self,
        message: str,
        *,
        entry: str | None = None,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        self.entry = entry
        self.line = line
        self.column = column
        where = ""
        if entry is not None:
            where = entry
            if line is not None:
                where += f":{line}"
                if column is not None:
                    where += f":{column}"
            where += ": "
        super().__init__(f"{where}{message}")
        self.reason = message


class RegistryError(PolicySupplyError):
    """A registry or OCI layout operation failed."""


class NotFoundError(RegistryError):
    """The reference, manifest or blob does not exist."""


class AuthenticationError(RegistryError):
    """The registry refused the credentials (or needed some and got none)."""


class TransientRegistryError(RegistryError):
    """The registry failed in a way that may succeed later (after retries ran out)."""


class SigningError(PolicySupplyError):
    """A signature could not be made, or a key could not be read or written."""


class VerificationError(PolicySupplyError):
    """An artifact failed verification. Nothing from it may be used."""


class NoSignatureError(VerificationError):
    """The artifact carries no signature at all."""


class UntrustedSignatureError(VerificationError):
    """Signatures exist, but none is valid from a trusted key or identity."""


class ThresholdNotMetError(VerificationError):
    """Fewer distinct trusted signers than the policy's threshold."""


class DigestMismatchError(VerificationError):
    """Content did not hash to the digest it was addressed by."""


class RollbackError(VerificationError):
    """An older revision, or different content under a known revision, was offered."""


class LoadError(PolicySupplyError):
    """A verified bundle could not be loaded into its destination."""
