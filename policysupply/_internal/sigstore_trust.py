"""Sigstore trust material (``trusted_root.json``): CAs, log and CT keys, TSAs, validity windows."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from policysupply._internal import sigstore_adapter
from policysupply._internal.sigstore_adapter import apply_timeouts as apply_timeouts
from policysupply.errors import (
    CertificateError,
    TransparencyLogError,
    VerificationError,
)

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.x509.verification import Store

# -- trust material -----------------------------------------------------------

# How far ahead of our clock a log's integration time may be (the log's clock
# and ours differ by a little; a time further ahead has not happened yet).
MAX_CLOCK_SKEW = timedelta(minutes=1)


def _utc(when: datetime) -> datetime:
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)


@attrs.frozen(kw_only=True)
class Window:
    """A trusted-root ``validFor`` range: closed, ``[start, end]``; no end is open-ended."""

    start: datetime
    end: datetime | None

    @classmethod
    def of(cls, time_range: Any) -> Window:
        """The window of a ``sigstore_models`` ``TimeRange`` (None: always valid)."""
        if time_range is None:
            return cls(start=datetime.min.replace(tzinfo=timezone.utc), end=None)
        end = time_range.end
        return cls(start=_utc(time_range.start), end=_utc(end) if end is not None else None)

    def contains(self, when: datetime) -> bool:
        """Whether ``when`` lies in the window (both ends included)."""
        return self.start <= when and (self.end is None or when <= self.end)

    def describe(self) -> str:
        """The window as ``start .. end`` (ISO 8601)."""
        end = self.end.isoformat() if self.end is not None else "open"
        return f"{self.start.isoformat()} .. {end}"


@attrs.frozen(kw_only=True)
class _Trusted:
    """One trusted item of the root (a log key or a CA chain) and its window."""

    item: Any
    window: Window

    def valid_at(self, times: Sequence[datetime]) -> bool:
        return all(self.window.contains(t) for t in times)


class TrustMaterial:
    """A Sigstore trusted root, with each key and CA kept beside its validity window.

    Create with :meth:`load`. Loading a path is offline; ``production`` and
    ``staging`` go through sigstore-python's TUF client (network, cached).

    sigstore-python's keyrings drop a key only before its ``validFor`` start;
    here every Fulcio CA, log key, CT key and timestamp authority is used only
    at times inside its window (``[start, end]``), and those times are the
    verified signing times, not the clock. A root may lack any kind of
    service (a timestamp-only private deployment has no logs): what it lacks
    refuses, with a typed error, only the signatures that need it.
    """

    def __init__(self, root: Any, *, source: str) -> None:
        """Wraps a ``sigstore.models.TrustedRoot``.

        Raises:
            VerificationError: The trusted root's contents cannot be read.
        """
        self.source = source
        self.root = root
        try:
            inner = sigstore_adapter.trusted_root_model(root)
            self._cas = [
                _Trusted(item=self._ca_chain(a), window=Window.of(a.valid_for))
                for a in inner.certificate_authorities
            ]
            self._tsas = [
                _Trusted(item=self._ca_chain(a), window=Window.of(a.valid_for))
                for a in inner.timestamp_authorities
            ]
            self._tlogs = self._log_keys(inner.tlogs)
            self._ctlogs = self._log_keys(inner.ctlogs)
        except VerificationError:
            raise
        except Exception as exc:  # sigstore's Error, ValueError from bad DER, pydantic
            raise VerificationError(
                f"trusted root {source}: unreadable ({type(exc).__name__}: {exc})"
            ) from None
        self._stores: dict[tuple[int, ...], Store] = {}
        self._keyrings: dict[tuple[str, tuple[int, ...]], Any] = {}

    def _ca_chain(self, authority: Any) -> list[x509.Certificate]:
        from cryptography import x509

        certs = [
            x509.load_der_x509_certificate(c.raw_bytes) for c in authority.cert_chain.certificates
        ]
        if not certs:
            raise VerificationError(f"trusted root {self.source}: a CA with no certificates")
        return certs

    @staticmethod
    def _log_keys(logs: Sequence[Any]) -> list[_Trusted]:
        out = []
        for log in logs:
            if not sigstore_adapter.log_key_usable(log.public_key):
                continue  # as sigstore-python: an unusable key is no trusted key
            out.append(_Trusted(item=log.public_key, window=Window.of(log.public_key.valid_for)))
        return out

    @classmethod
    def load(cls, source: Any) -> TrustMaterial:
        """Loads trust material from one of several sources.

        ``source`` is a ``trusted_root.json`` path, ``"production"``,
        ``"staging"``, or a ``sigstore.models.TrustedRoot`` / ``ClientTrustConfig``.

        Raises:
            VerificationError: The trusted root cannot be read or parsed.
        """
        if isinstance(source, TrustMaterial):
            return source
        from sigstore.models import ClientTrustConfig, TrustedRoot

        if isinstance(source, TrustedRoot):
            return cls(source, source="TrustedRoot")
        if isinstance(source, ClientTrustConfig):
            return cls(source.trusted_root, source="ClientTrustConfig")
        if source in (None, "production", "staging"):
            name = source or "production"
            try:
                config = getattr(ClientTrustConfig, name)()
            except Exception as exc:  # TUF/network failures
                raise VerificationError(
                    f"cannot fetch Sigstore's {name} trusted root through TUF ({exc}); "
                    "pass trusted_root=<path to trusted_root.json> to verify offline"
                ) from None
            return cls(config.trusted_root, source=f"sigstore {name} (TUF)")
        path = Path(os.fspath(source))
        try:
            root = TrustedRoot.from_file(str(path))
        except OSError as exc:
            raise VerificationError(f"cannot read trusted root {path}: {exc.strerror}") from None
        except Exception as exc:  # pydantic ValidationError, sigstore Error
            raise VerificationError(
                f"{path}: not a Sigstore trusted root ({type(exc).__name__})"
            ) from None
        return cls(root, source=str(path))

    # -- Fulcio ---------------------------------------------------------------

    def fulcio_store(self, at: datetime | None) -> Store:
        """A path-validation store of the Fulcio CAs valid at ``at`` (None: every CA).

        Raises:
            CertificateError: No Fulcio CA of the trusted root is valid then.
        """
        from cryptography.x509.verification import Store

        chosen = tuple(i for i, ca in enumerate(self._cas) if at is None or ca.window.contains(at))
        if not chosen:
            raise CertificateError(
                f"no Fulcio CA of trusted root {self.source} is valid at "
                f"{at.isoformat() if at else 'any time'} (validFor: "
                + (", ".join(ca.window.describe() for ca in self._cas) or "no CA listed")
                + ")"
            )
        if chosen not in self._stores:
            self._stores[chosen] = Store([c for i in chosen for c in self._cas[i].item])
        return self._stores[chosen]

    # -- logs -----------------------------------------------------------------

    def keyring(self, kind: str, times: Sequence[datetime] | None) -> Any:
        """A sigstore keyring of the ``rekor`` or ``ct`` keys valid at every one of ``times``.

        ``None`` gives every key, whatever its window (used only to explain a
        refusal: "signed by a trusted key, but outside its window").
        """
        keys = self._tlogs if kind == "rekor" else self._ctlogs
        chosen = tuple(i for i, k in enumerate(keys) if times is None or k.valid_at(times))
        cached = self._keyrings.get((kind, chosen))
        if cached is None:
            cached = self._keyrings[(kind, chosen)] = sigstore_adapter.keyring(
                [keys[i].item for i in chosen]
            )
        return cached

    def has_keys(self, kind: str) -> bool:
        """Whether the trusted root lists any usable ``rekor`` or ``ct`` key."""
        return bool(self._tlogs if kind == "rekor" else self._ctlogs)

    def check_log_signature(
        self,
        what: str,
        verify: Callable[[Any], None],
        times: Sequence[datetime],
        *,
        kind: str = "rekor",
        error: type[VerificationError] = TransparencyLogError,
        detail: str = "",
    ) -> None:
        """Runs ``verify(keyring)`` with the keys valid at ``times``; explains a refusal.

        Raises:
            TransparencyLogError: (or ``error``) No key valid at those times
                verifies; the message says when a trusted key outside its
                window would have.
        """
        from sigstore.errors import VerificationError as SigstoreVerificationError

        label = "transparency log" if kind == "rekor" else "CT log"
        if not self.has_keys(kind):
            raise error(f"{what}: trusted root {self.source} lists no {label} key")
        try:
            verify(self.keyring(kind, times))
            return
        except SigstoreVerificationError as exc:
            first = exc
        except Exception as exc:  # malformed input inside sigstore's helpers
            raise error(f"{what} is malformed ({type(exc).__name__}: {exc})") from None
        try:
            verify(self.keyring(kind, None))
        except Exception:
            raise error(
                f"{what} does not verify with a trusted {label} key{detail}: {first}"
            ) from None
        when = ", ".join(sorted({t.isoformat() for t in times}))
        raise error(
            f"{what}: signed by a trusted {label} key, but at {when} that key is outside "
            f"its validity in trusted root {self.source} (validFor "
            + ", ".join(
                k.window.describe() for k in (self._tlogs if kind == "rekor" else self._ctlogs)
            )
            + ")"
        )

    def verify_log_signature(
        self, log_id: bytes, signature: bytes, data: bytes, times: Sequence[datetime]
    ) -> None:
        """Checks a signature by the transparency log ``log_id`` (SET) with its key at ``times``.

        Raises:
            TransparencyLogError: No trusted log key valid at ``times`` verifies it.
        """
        self.check_log_signature(
            "signed entry timestamp",
            lambda ring: sigstore_adapter.verify_by_log_id(ring, log_id, signature, data),
            times,
            detail=f" (log {log_id.hex()[:16]}…)",
        )

    # -- timestamp authorities -------------------------------------------------

    def timestamp_times(self, timestamps: Sequence[bytes], signature: bytes) -> list[datetime]:
        """Times of the RFC 3161 timestamps over ``signature`` that a trusted TSA signed.

        A timestamp counts when it verifies with a timestamp authority's chain
        of the trusted root (certificates valid at its time) and its time lies
        inside that authority's ``validFor`` window, end included, and is not
        later than now.

        Raises:
            VerificationError: A timestamp is malformed, or the trusted root
                has no timestamp authority to check one against.
        """
        if not timestamps:
            return []
        from rfc3161_client import VerifierBuilder, decode_timestamp_response
        from rfc3161_client.errors import VerificationError as TimestampVerificationError

        if not self._tsas:
            raise VerificationError(
                f"signature carries RFC 3161 timestamps, but trusted root {self.source} "
                "lists no timestamp authority"
            )
        latest = datetime.now(timezone.utc) + MAX_CLOCK_SKEW
        times = []
        for der in timestamps[:32]:  # sigstore-go's bound against timestamp floods
            try:
                response = decode_timestamp_response(der)
            except ValueError:
                raise VerificationError("malformed RFC 3161 timestamp") from None
            for tsa in self._tsas:
                certs = tsa.item
                if len(certs) < 2:  # a signing certificate and a root, at least
                    continue
                builder = (
                    VerifierBuilder().tsa_certificate(certs[0]).add_root_certificate(certs[-1])
                )
                for cert in certs[1:-1]:
                    builder = builder.add_intermediate_certificate(cert)
                try:
                    builder.build().verify_message(response, signature)
                    when = _utc(response.tst_info.gen_time)
                except (TimestampVerificationError, ValueError):
                    continue
                if tsa.window.contains(when) and when <= latest:
                    times.append(when)
                    break
        return times
