"""Keyless (Fulcio certificate + Rekor entry) verification, and signing through sigstore.

Verification of one signature goes, in this order (the first failure decides
the error type, so a single fault is reported precisely):

1. the signature verifies with the certificate's key (else
   ``UntrustedSignatureError``: altered signature or content);
2. a transparency log entry exists, is signed by a trusted log (signed entry
   timestamp and/or Merkle inclusion proof with its checkpoint), and its body
   names this signature, this certificate and this content (else
   ``TransparencyLogError``);
3. the signed integration time lies in the certificate's validity (else
   ``CertificateExpiredError``);
4. the certificate chains to a trusted Fulcio root at that time, has the
   code-signing usage and a valid embedded SCT (else ``CertificateError``);
5. the certificate's identity is one the policy trusts (done by the caller
   with :mod:`policysupply.identity`; ``IdentityMismatchError``).

Trust material (Fulcio roots, Rekor and CT log keys) comes from a Sigstore
``trusted_root.json`` through sigstore-python's ``TrustedRoot``; its keyrings,
SCT check and Merkle/checkpoint checks are reused. What sigstore-python does not
cover is ours: cosign's legacy annotations carry only a signed entry timestamp
(no inclusion proof), and key-signed bundles have no certificate.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from policysupply._internal import keys, sigstore_adapter
from policysupply._internal.sigstore_adapter import apply_timeouts as apply_timeouts
from policysupply._internal.sigstore_bundle import Envelope, ParsedBundle, TlogEntry
from policysupply.errors import (
    CertificateError,
    CertificateExpiredError,
    SigningError,
    TransparencyLogError,
    UntrustedSignatureError,
    VerificationError,
)

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.x509.verification import Store

# Fulcio's certificate extensions (1.3.6.1.4.1.57264.1.*), by the names cosign and
# sigstore-go use. The first five are raw strings (deprecated); the rest DER UTF8String.
FULCIO_OID = "1.3.6.1.4.1.57264.1"
EXTENSIONS = {
    "issuer": f"{FULCIO_OID}.1",
    "github_workflow_trigger": f"{FULCIO_OID}.2",
    "github_workflow_sha": f"{FULCIO_OID}.3",
    "github_workflow_name": f"{FULCIO_OID}.4",
    "github_workflow_repository": f"{FULCIO_OID}.5",
    "github_workflow_ref": f"{FULCIO_OID}.6",
    "issuer_v2": f"{FULCIO_OID}.8",
    "build_signer_uri": f"{FULCIO_OID}.9",
    "build_signer_digest": f"{FULCIO_OID}.10",
    "runner_environment": f"{FULCIO_OID}.11",
    "source_repository_uri": f"{FULCIO_OID}.12",
    "source_repository_digest": f"{FULCIO_OID}.13",
    "source_repository_ref": f"{FULCIO_OID}.14",
    "source_repository_identifier": f"{FULCIO_OID}.15",
    "source_repository_owner_uri": f"{FULCIO_OID}.16",
    "source_repository_owner_identifier": f"{FULCIO_OID}.17",
    "build_config_uri": f"{FULCIO_OID}.18",
    "build_config_digest": f"{FULCIO_OID}.19",
    "build_trigger": f"{FULCIO_OID}.20",
    "run_invocation_uri": f"{FULCIO_OID}.21",
    "source_repository_visibility_at_signing": f"{FULCIO_OID}.22",
}
_RAW_STRING_OIDS = {f"{FULCIO_OID}.{i}" for i in range(1, 7)}
OTHERNAME_OID = f"{FULCIO_OID}.7"
SCT_OID = "1.3.6.1.4.1.11129.2.4.2"


# -- certificates -------------------------------------------------------------


def _der_utf8(value: bytes) -> str | None:
    """The string in a DER UTF8String (tag 0x0C), or None if it is not one."""
    if len(value) < 2 or value[0] != 0x0C:
        return None
    n, off = value[1], 2
    if n & 0x80:
        width = n & 0x7F
        if width == 0 or width > 4 or len(value) < 2 + width:
            return None
        n, off = int.from_bytes(value[2 : 2 + width], "big"), 2 + width
    if len(value) != off + n:
        return None
    try:
        return value[off:].decode()
    except UnicodeDecodeError:
        return None


@attrs.frozen(kw_only=True)
class CertificateIdentity:
    """What a Fulcio certificate says about its holder.

    Attributes:
        issuer: The OIDC issuer (extension ``.1.8``; ``.1.1`` only when ``.1.8`` is absent).
        sans: Every Subject Alternative Name value (email, URI, DNS, IP,
            Fulcio OtherName username), in certificate order.
        extensions: Fulcio extension values by dotted OID.
        not_before: Start of validity (UTC).
        not_after: End of validity (UTC).
    """

    issuer: str | None
    sans: tuple[str, ...]
    extensions: Mapping[str, str]
    not_before: datetime
    not_after: datetime

    @property
    def subject(self) -> str:
        """The first SAN: what cosign prints as the certificate identity."""
        return self.sans[0] if self.sans else ""


def certificate_identity(cert: x509.Certificate) -> CertificateIdentity:
    """Reads the identity claims of a ``cryptography`` certificate.

    The issuer is the v2 extension (``.1.8``) when the certificate has it;
    only a certificate without it falls back to the deprecated ``.1.1``.

    Raises:
        CertificateError: The certificate has no Subject Alternative Name,
            or its ``.1.8`` issuer is empty or not a DER UTF8String.
    """
    from cryptography import x509

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise CertificateError("signing certificate has no Subject Alternative Name") from None
    sans: list[str] = []
    for name in san:
        if isinstance(name, x509.OtherName):
            if name.type_id.dotted_string == OTHERNAME_OID:
                text = _der_utf8(name.value)
                if text is not None:
                    sans.append(text)
        elif isinstance(name, x509.IPAddress):
            sans.append(str(name.value))
        elif isinstance(name, (x509.RFC822Name, x509.UniformResourceIdentifier, x509.DNSName)):
            sans.append(name.value)
    extensions: dict[str, str] = {}
    for ext in cert.extensions:
        oid = ext.oid.dotted_string
        if not oid.startswith(FULCIO_OID + ".") or not isinstance(
            ext.value, x509.UnrecognizedExtension
        ):
            continue
        raw = ext.value.value
        if oid in _RAW_STRING_OIDS:
            try:
                text = raw.decode()
            except UnicodeDecodeError:
                text = None
        else:
            # Fulcio writes these as DER UTF8String only; anything else is not a claim
            text = _der_utf8(raw)
        if oid == EXTENSIONS["issuer_v2"] and not text:
            # the v2 issuer is authoritative: when present it must be a non-empty
            # UTF8String, never a reason to fall back to the deprecated .1.1
            raise CertificateError(
                f"signing certificate's OIDC issuer extension {oid} is empty or not a "
                "DER UTF8String"
            )
        if text is not None:
            extensions[oid] = text
    issuer = extensions.get(EXTENSIONS["issuer_v2"]) or extensions.get(EXTENSIONS["issuer"])
    return CertificateIdentity(
        issuer=issuer,
        sans=tuple(sans),
        extensions=extensions,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
    )


def load_certificate(der_or_pem: bytes, *, what: str = "certificate") -> x509.Certificate:
    """A ``cryptography`` certificate from DER or PEM.

    Raises:
        CertificateError: Not a certificate.
    """
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm

    try:
        if der_or_pem.lstrip().startswith(b"-----"):
            cert = x509.load_pem_x509_certificate(der_or_pem)
        else:
            cert = x509.load_der_x509_certificate(der_or_pem)
        # cryptography parses extensions and the public key on first use: a
        # malformed one (a bad SAN, a duplicate extension, a point not on the
        # curve) must fail here, not as a ValueError deep inside verification.
        cert.extensions  # noqa: B018
        cert.public_key()
    except (
        ValueError,
        UnsupportedAlgorithm,
        x509.DuplicateExtension,
        x509.UnsupportedGeneralNameType,
        x509.InvalidVersion,
    ):
        raise CertificateError(f"{what}: not a valid X.509 certificate") from None
    return cert


def pem_chain(data: bytes | str) -> list[bytes]:
    """DER certificates of a PEM bundle (cosign's chain annotation); bad blocks are skipped."""
    raw = data.encode() if isinstance(data, str) else data
    return [der for kind, der in keys.pem_blocks(raw) if kind == "CERTIFICATE"]


def certificate_pem(der: bytes) -> bytes:
    """PEM of a DER certificate, as Go writes it."""
    return keys.pem_encode("CERTIFICATE", der)


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


# -- transparency log ---------------------------------------------------------


def _verify_set(entry: TlogEntry, trust: TrustMaterial, when: datetime) -> None:
    import rfc8785

    assert entry.signed_entry_timestamp is not None  # noqa: S101 - checked by caller
    payload = {
        "body": base64.b64encode(entry.body).decode(),
        "integratedTime": entry.integrated_time,
        "logID": entry.log_id.hex(),
        "logIndex": entry.log_index,
    }
    trust.verify_log_signature(
        entry.log_id, entry.signed_entry_timestamp, rfc8785.dumps(payload), [when]
    )


_NOTE_SIGNATURE = re.compile(r"\u2014 ([^\s+]+) ([A-Za-z0-9+/]+={0,2})")


def _check_checkpoint_note(envelope: str, log_id: bytes) -> None:
    """Reads a checkpoint as a signed note strictly, where sigstore-python is lenient.

    sigstore-python skips lines it cannot parse, decodes base64 loosely and
    never looks at the signer's name, so bytes of a checkpoint could change
    and it would still verify. Here every signature line must be well formed
    with canonical base64, and the line made by the log's key must carry the
    log's name: the origin line (Rekor v2), or its host part before " - "
    (Rekor v1, whose origin is "host - tree id").
    """
    if envelope.count("\n\n") != 1 or not envelope.endswith("\n"):
        raise TransparencyLogError("checkpoint is not a signed note (text, blank line, signatures)")
    body, signatures = envelope.split("\n\n")
    origin = body.split("\n", 1)[0]
    named = False
    for line in signatures[:-1].split("\n"):
        m = _NOTE_SIGNATURE.fullmatch(line)
        try:
            raw = base64.b64decode(m.group(2), validate=True) if m else b""
        except ValueError:  # binascii.Error: bad padding
            raw = b""
        if m is None or base64.b64encode(raw).decode() != m.group(2) or len(raw) < 5:
            raise TransparencyLogError(f"checkpoint has a malformed signature line {line!r}")
        if raw[:4] == log_id[:4]:
            name = m.group(1)
            if name != origin and not origin.startswith(name + " - "):
                raise TransparencyLogError(
                    f"checkpoint is signed by the log's key under the name {name!r}, "
                    f"not the log's own name ({origin!r})"
                )
            named = True
    if not named:
        raise TransparencyLogError("checkpoint carries no signature by the log's key")


def _verify_inclusion(entry: TlogEntry, trust: TrustMaterial, times: Sequence[datetime]) -> None:
    from sigstore.errors import VerificationError as SigstoreVerificationError

    assert entry.inclusion_proof is not None  # noqa: S101 - checked by caller
    assert entry.inclusion_proof.checkpoint is not None  # noqa: S101 - checked by caller
    _check_checkpoint_note(entry.inclusion_proof.checkpoint, entry.log_id)
    try:
        sig_entry = sigstore_adapter.verify_inclusion(entry.to_json())
    except SigstoreVerificationError as exc:
        raise TransparencyLogError(f"inclusion proof: {exc}") from None
    except Exception as exc:  # malformed proof (pydantic, ValueError)
        raise TransparencyLogError(f"inclusion proof is malformed ({exc})") from None
    trust.check_log_signature(
        "inclusion proof's checkpoint",
        lambda ring: sigstore_adapter.verify_checkpoint(ring, sig_entry),
        times,
    )


def verify_tlog_entry(
    entry: TlogEntry, trust: TrustMaterial, *, times: Sequence[datetime] = ()
) -> datetime | None:
    """Checks that a trusted log signed this entry: its SET and/or its inclusion proof.

    An entry counts only when at least one proof verifies against a log key
    of the trusted root, valid at the time that proof is about, and every
    proof it carries verifies: a signed entry timestamp (which needs the
    integration time it signs), or a Merkle inclusion proof with a signed
    checkpoint. Entries of bundles v0.2 and later must carry the inclusion
    proof (a SET is only a promise of inclusion). An integration time later
    than now is refused, signed or not.

    Args:
        entry: The log entry.
        trust: The trusted root.
        times: Independently verified signing times (RFC 3161), at which the
            checkpoint's log key must be valid when no signed integration
            time exists; with none either, the key must be valid now.

    Returns:
        The integration time, if a verified signed entry timestamp covers it
        (an inclusion proof alone does not sign the time).

    Raises:
        TransparencyLogError: No proof, a proof that fails, a SET without
            its time, a log key outside its validity, or a future time.
    """
    now = datetime.now(timezone.utc)
    integrated = (
        datetime.fromtimestamp(entry.integrated_time, tz=timezone.utc)
        if entry.integrated_time is not None
        else None
    )
    if integrated is not None and integrated > now + MAX_CLOCK_SKEW:
        raise TransparencyLogError(
            f"transparency log entry {entry.log_index} claims integration at "
            f"{integrated.isoformat()}, in the future"
        )
    proof = entry.inclusion_proof
    if entry.signed_entry_timestamp is None and proof is None:
        raise TransparencyLogError(
            "transparency log entry has neither a signed entry timestamp nor an inclusion proof"
        )
    if proof is None and entry.proof_required:
        raise TransparencyLogError(
            "transparency log entry has no inclusion proof (bundles v0.2 and later must "
            "prove inclusion; a signed entry timestamp alone is a promise)"
        )
    signed_time: datetime | None = None
    if entry.signed_entry_timestamp is not None:
        if integrated is None:
            raise TransparencyLogError(
                "transparency log entry has a signed entry timestamp but no integration "
                "time for it to sign"
            )
        _verify_set(entry, trust, integrated)
        signed_time = integrated
    if proof is not None:
        if proof.checkpoint is None:
            raise TransparencyLogError("inclusion proof has no signed checkpoint")
        at = [signed_time] if signed_time is not None else list(times) or [now]
        _verify_inclusion(entry, trust, at)
    return signed_time


def _b64_pem_der(value: Any) -> bytes | None:
    """DER inside a base64-encoded PEM (Rekor's publicKey/verifier fields)."""
    if not isinstance(value, str):
        return None
    try:
        blocks = keys.pem_blocks(base64.b64decode(value, validate=True))
    except ValueError:
        return None
    return blocks[0][1] if blocks else None


def _b64_raw(value: Any) -> bytes | None:
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        return None


def _spec(entry: TlogEntry) -> Mapping[str, Any]:
    spec = entry.body_json().get("spec")
    if not isinstance(spec, Mapping):
        raise TransparencyLogError("transparency log entry has no spec")
    return spec


def _get(doc: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(doc, Mapping):
            return None
        doc = doc.get(p)
    return doc


def check_entry_body(
    entry: TlogEntry,
    *,
    signature: bytes,
    verifier_der: bytes,
    artifact_sha256: bytes | None = None,
    envelope: Envelope | None = None,
    envelope_blob: bytes | None = None,
) -> None:
    """Checks that a log entry describes exactly this signature, key/certificate and content.

    Args:
        entry: The (already verified) log entry.
        signature: The signature being verified.
        verifier_der: DER of the certificate (keyless) or SubjectPublicKeyInfo (key).
        artifact_sha256: For ``hashedrekord``: SHA-256 of the signed bytes.
        envelope: For ``dsse``/``intoto``: the DSSE envelope.
        envelope_blob: For cosign's legacy ``.att`` layers: the exact envelope
            bytes, whose hash ``dsse``/``intoto`` entries record.

    Raises:
        TransparencyLogError: Another signature, key or content; or an entry
            kind this library does not check.
    """
    spec = _spec(entry)
    b64sig = base64.b64encode(signature).decode()
    kind = (entry.kind, entry.version)
    if kind == ("hashedrekord", "0.0.2"):
        # Rekor v2 logs DSSE as hashedrekord over the PAE (rekor-v2 spec)
        signed = envelope.pae() if envelope is not None else None
        digest = hashlib.sha256(signed).digest() if signed is not None else artifact_sha256
        v2 = spec.get("hashedRekordV002")
        verifier = _get(v2, "signature", "verifier")
        der = _b64_raw(_get(verifier, "x509Certificate", "rawBytes")) or _b64_raw(
            _get(verifier, "publicKey", "rawBytes")
        )
        if _get(v2, "signature", "content") != b64sig:
            raise TransparencyLogError("transparency log entry is for another signature")
        if der != verifier_der:
            raise TransparencyLogError("transparency log entry names another key or certificate")
        if (
            digest is None
            or _get(v2, "data", "algorithm") != "SHA2_256"
            or _b64_raw(_get(v2, "data", "digest")) != digest
        ):
            raise TransparencyLogError("transparency log entry is for other content")
        return
    if kind == ("hashedrekord", "0.0.1"):
        if artifact_sha256 is None:
            raise TransparencyLogError("hashedrekord entry for DSSE content")
        if _get(spec, "signature", "content") != b64sig:
            raise TransparencyLogError("transparency log entry is for another signature")
        if _b64_pem_der(_get(spec, "signature", "publicKey", "content")) != verifier_der:
            raise TransparencyLogError("transparency log entry names another key or certificate")
        if (
            _get(spec, "data", "hash", "algorithm") != "sha256"
            or _get(spec, "data", "hash", "value") != artifact_sha256.hex()
        ):
            raise TransparencyLogError("transparency log entry is for other content")
        return
    if kind == ("dsse", "0.0.1") or kind == ("intoto", "0.0.2"):
        if envelope is None:
            raise TransparencyLogError(f"{entry.kind} entry for a message signature")
        if kind == ("dsse", "0.0.1"):
            sigs = spec.get("signatures")
            pairs = [
                (s.get("signature"), _b64_pem_der(s.get("verifier")))
                for s in (sigs if isinstance(sigs, list) else [])
                if isinstance(s, Mapping)
            ]
            recorded = _get(spec, "payloadHash")
            wanted = hashlib.sha256(envelope.payload).hexdigest()
            env_hash = _get(spec, "envelopeHash")
        else:
            env_sigs = _get(spec, "content", "envelope", "signatures")
            pairs = [
                (s.get("sig"), _b64_pem_der(s.get("publicKey")))
                for s in (env_sigs if isinstance(env_sigs, list) else [])
                if isinstance(s, Mapping)
            ]
            recorded = _get(spec, "content", "payloadHash")
            wanted = hashlib.sha256(envelope.payload).hexdigest()
            env_hash = _get(spec, "content", "hash")
        # intoto v0.0.2 double-base64-encodes signatures; accept either form.
        accepted = {b64sig, base64.b64encode(b64sig.encode()).decode()}
        if not any(sig in accepted and der == verifier_der for sig, der in pairs):
            raise TransparencyLogError(
                "transparency log entry is for another signature or certificate"
            )
        payload_ok = isinstance(recorded, Mapping) and recorded.get("value") == wanted
        # cosign's legacy .att check: the entry hashes the stored envelope bytes
        envelope_ok = (
            envelope_blob is not None
            and isinstance(env_hash, Mapping)
            and env_hash.get("value") == hashlib.sha256(envelope_blob).hexdigest()
        )
        if not (payload_ok or envelope_ok):
            raise TransparencyLogError("transparency log entry is for another payload")
        return
    raise TransparencyLogError(
        f"unsupported transparency log entry kind {entry.kind}/{entry.version}"
    )


# -- certificate chain --------------------------------------------------------


def verify_chain(
    cert: x509.Certificate, at: datetime, trust: TrustMaterial, hints: Sequence[bytes]
) -> list[x509.Certificate]:
    """Path-validates a Fulcio leaf at ``at`` to a CA trusted then; returns issuer..root.

    Only the Fulcio CAs whose ``validFor`` window contains ``at`` are trust
    anchors: a CA the trusted root has retired does not vouch for
    certificates used after its end.

    Raises:
        CertificateError: No path to a Fulcio CA valid at ``at``, or no
            code-signing usage.
    """
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID
    from cryptography.x509.verification import Criticality, ExtensionPolicy, PolicyBuilder
    from cryptography.x509.verification import VerificationError as X509Error

    # Fulcio leaves carry code-signing, not client-auth: allow any EKU in the
    # path validator and check code-signing below (as sigstore-python does).
    ca = ExtensionPolicy.webpki_defaults_ca().may_be_present(
        x509.ExtendedKeyUsage, Criticality.NON_CRITICAL, None
    )
    ee = ExtensionPolicy.webpki_defaults_ee().may_be_present(
        x509.ExtendedKeyUsage, Criticality.NON_CRITICAL, None
    )
    intermediates = []
    for der in hints:
        try:
            hint = x509.load_der_x509_certificate(der)
            hint.extensions  # noqa: B018 - parsed lazily; a malformed one raises here
        except (
            ValueError,
            x509.DuplicateExtension,
            x509.UnsupportedGeneralNameType,
            x509.InvalidVersion,
        ):
            continue  # hints are untrusted: a bad one just does not help
        intermediates.append(hint)

    def path(store: Store) -> list[x509.Certificate]:
        verifier = (
            PolicyBuilder()
            .store(store)
            .time(at)
            .extension_policies(ca_policy=ca, ee_policy=ee)
            .build_client_verifier()
        )
        return list(verifier.verify(cert, intermediates).chain[1:])

    try:
        chain = path(trust.fulcio_store(at))
    except (X509Error, x509.UnsupportedGeneralNameType) as exc:
        retired = False
        try:
            path(trust.fulcio_store(None))
            retired = True
        except (CertificateError, X509Error, x509.UnsupportedGeneralNameType):
            pass
        if retired:
            raise CertificateError(
                f"signing certificate chains to a Fulcio CA of trusted root {trust.source} "
                f"that is outside its validity at {at.isoformat()}"
            ) from None
        raise CertificateError(
            f"signing certificate does not chain to a trusted Fulcio root ({trust.source}): {exc}"
        ) from None
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        raise CertificateError("signing certificate lacks key usage extensions") from None
    if not usage.digital_signature or ExtendedKeyUsageOID.CODE_SIGNING not in eku:
        raise CertificateError("signing certificate is not for code signing")
    return chain


def verify_sct(
    cert: x509.Certificate,
    chain: list[x509.Certificate],
    trust: TrustMaterial,
    times: Sequence[datetime] = (),
) -> None:
    """Checks the certificate's embedded SCT against the CT log keys valid at ``times``.

    ``times`` are the verified signing times (the SCT's own timestamp is
    signed by the very key being judged, so it cannot decide).

    Raises:
        CertificateError: No SCT, no CT keys, an invalid SCT, or a CT key
            outside its validity.
    """
    if not trust.has_keys("ct"):
        raise CertificateError(
            f"trusted root {trust.source} has no CT log keys to check the certificate's SCT "
            "(set require_sct=False for a deployment without CT)"
        )
    trust.check_log_signature(
        "signing certificate's SCT",
        lambda ring: sigstore_adapter.verify_sct(cert, chain, ring),
        list(times) or [datetime.now(timezone.utc)],
        kind="ct",
        error=CertificateError,
    )


# -- one signature ------------------------------------------------------------


@attrs.frozen(kw_only=True)
class KeylessCheck:
    """A keyless signature whose certificate, log entry and signature verified.

    Attributes:
        identity: The certificate's identity claims (matched by the caller).
        signed_time: The log's (or TSA's) signed time of signing.
        log_index: The log entry's index (None when no log entry was required).
        certificate_der: The signing certificate.
    """

    identity: CertificateIdentity
    signed_time: datetime
    log_index: int | None
    certificate_der: bytes = attrs.field(repr=False)


def verify_keyless(
    *,
    trust: TrustMaterial,
    certificate: bytes,
    chain_hints: Sequence[bytes],
    signature: bytes,
    message: bytes,
    tlog_entries: Sequence[TlogEntry],
    timestamps: Sequence[bytes] = (),
    artifact_sha256: bytes | None = None,
    envelope: Envelope | None = None,
    envelope_blob: bytes | None = None,
    require_tlog: bool = True,
    require_sct: bool = True,
) -> KeylessCheck:
    """Verifies one keyless signature up to (not including) identity matching.

    Args:
        trust: The trusted root.
        certificate: DER of the signing certificate.
        chain_hints: Untrusted intermediates offered with it.
        signature: The signature.
        message: The exact bytes signed (payload, artifact, or DSSE PAE).
        tlog_entries: Candidate log entries (one must verify and match).
        timestamps: RFC 3161 timestamps (DER) over the signature.
        artifact_sha256: ``hashedrekord`` content hash (message signatures).
        envelope: The DSSE envelope (DSSE content).
        envelope_blob: The stored envelope bytes (cosign legacy ``.att``).
        require_tlog: Whether a matching, verified log entry is mandatory.
        require_sct: Whether the certificate's SCT must verify.

    Raises:
        UntrustedSignatureError: The signature does not verify with the
            certificate's key.
        TransparencyLogError: No matching, verified log entry.
        CertificateExpiredError: Signed outside the certificate's validity.
        CertificateError: Untrusted CA, wrong usage, bad SCT.
        VerificationError: No signed time at all (neither SET nor timestamp).
    """
    from cryptography.hazmat.primitives import serialization

    cert = load_certificate(certificate, what="signing certificate")
    if not keys.verify(cert.public_key(), signature, message):
        raise UntrustedSignatureError("signature does not verify with its certificate's key")
    der = cert.public_bytes(serialization.Encoding.DER)
    stamped = trust.timestamp_times(timestamps, signature)
    if not stamped and timestamps and envelope_blob is not None:
        # cosign's legacy attestations timestamp the stored envelope, not the signature
        stamped = trust.timestamp_times(timestamps, envelope_blob)
    times: list[tuple[str, datetime]] = []
    entry: TlogEntry | None = None
    if tlog_entries or require_tlog:
        if not tlog_entries:
            raise TransparencyLogError("keyless signature has no transparency log entry")
        problems: list[str] = []
        for candidate in tlog_entries:
            try:
                check_entry_body(
                    candidate,
                    signature=signature,
                    verifier_der=der,
                    artifact_sha256=artifact_sha256,
                    envelope=envelope,
                    envelope_blob=envelope_blob,
                )
                when = verify_tlog_entry(candidate, trust, times=stamped)
            except TransparencyLogError as exc:
                problems.append(str(exc))
                continue
            entry = candidate
            if when is not None:
                times.append(("transparency log", when))
            break
        if entry is None:
            raise TransparencyLogError("; ".join(problems))
    times += [("timestamp authority", t) for t in stamped]
    if not times:
        raise VerificationError(
            "no verified signing time (neither a signed entry timestamp nor an RFC 3161 "
            "timestamp from a trusted authority): cannot check the certificate's validity"
        )
    identity = certificate_identity(cert)
    for source, when in times:
        if not identity.not_before <= when <= identity.not_after:
            raise CertificateExpiredError(
                f"signed at {when.isoformat()} ({source}), outside the certificate's "
                f"validity {identity.not_before.isoformat()} .. {identity.not_after.isoformat()}"
            )
    chain: list[x509.Certificate] = []
    for _, when in times:
        chain = verify_chain(cert, when, trust, chain_hints)
    if require_sct:
        verify_sct(cert, chain, trust, [t for _, t in times])
    return KeylessCheck(
        identity=identity,
        signed_time=min(t for _, t in times),
        log_index=entry.log_index if entry is not None else None,
        certificate_der=der,
    )


@attrs.frozen(kw_only=True)
class KeyTimeCheck:
    """What a key-signed signature's log entries and timestamps proved.

    Attributes:
        signed_time: The earliest verified signing time (a log's signed entry
            timestamp or a trusted TSA's RFC 3161 time), or None.
        log_index: The index of the verified, matching log entry, or None.
    """

    signed_time: datetime | None
    log_index: int | None


def verify_key_times(
    *,
    trust: TrustMaterial,
    key: Any,
    signature: bytes,
    tlog_entries: Sequence[TlogEntry],
    timestamps: Sequence[bytes] = (),
    artifact_sha256: bytes | None = None,
    envelope: Envelope | None = None,
    envelope_blob: bytes | None = None,
    require_tlog: bool = False,
) -> KeyTimeCheck:
    """Checks the log entries and RFC 3161 timestamps of a key-signed signature.

    The key signature itself must already have verified. Only verified
    material yields a time: a log entry must name this signature, key and
    content and carry a valid SET or inclusion proof; a timestamp must be
    signed by a timestamp authority of the trusted root over this signature
    (or, for cosign's legacy ``.att`` layers, over the stored envelope).

    Args:
        trust: The trusted root.
        key: The public key the signature verified with.
        signature: The signature.
        tlog_entries: Candidate log entries.
        timestamps: RFC 3161 timestamps (DER).
        artifact_sha256: ``hashedrekord`` content hash (message signatures).
        envelope: The DSSE envelope (DSSE content).
        envelope_blob: The stored envelope bytes (cosign legacy ``.att``).
        require_tlog: Whether a matching, verified log entry is mandatory.
            Without it, entries and timestamps that do not verify are
            ignored: they just give no time.

    Raises:
        TransparencyLogError: ``require_tlog`` and no matching, verified entry.
    """
    stamped: list[datetime] = []
    if timestamps:
        try:
            stamped = trust.timestamp_times(timestamps, signature)
            if not stamped and envelope_blob is not None:
                # cosign's legacy attestations timestamp the stored envelope
                stamped = trust.timestamp_times(timestamps, envelope_blob)
        except VerificationError:
            stamped = []  # malformed, or no TSA in the trusted root: no time from it
    times: list[datetime] = []
    log_index: int | None = None
    problems: list[str] = []
    for entry in tlog_entries:
        try:
            check_entry_body(
                entry,
                signature=signature,
                verifier_der=keys.spki_der(key),
                artifact_sha256=artifact_sha256,
                envelope=envelope,
                envelope_blob=envelope_blob,
            )
            when = verify_tlog_entry(entry, trust, times=stamped)
        except TransparencyLogError as exc:
            problems.append(str(exc))
            continue
        log_index = entry.log_index
        if when is not None:
            times.append(when)
        break
    if require_tlog and log_index is None:
        raise TransparencyLogError("; ".join(problems) or "signature has no transparency log entry")
    times += stamped
    return KeyTimeCheck(signed_time=min(times) if times else None, log_index=log_index)


# -- signing ------------------------------------------------------------------


def _parse_sigstore_bundle(bundle: Any) -> ParsedBundle:
    from policysupply._internal.sigstore_bundle import parse_bundle

    return parse_bundle(bundle.to_json(), what="bundle from sigstore")


DEFAULT_TIMEOUT = 60.0


def _failure(what: str, exc: Exception) -> SigningError:
    if sigstore_adapter.timed_out(exc):  # sigstore's message is requests', e.g. "(read timeout=60)"
        return SigningError(f"{what}: timed out ({exc})")
    return SigningError(f"{what}: {exc}")


class KeylessSession:
    """Signs through sigstore-python: an ephemeral key, a Fulcio certificate, a Rekor entry.

    Nothing touches the network until the first signature. Every request to
    Fulcio, Rekor and the TSA has a timeout (see :func:`apply_timeouts`).
    """

    def __init__(
        self, identity_token: str, trust: Any, *, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        """A session; nothing is fetched yet.

        Args:
            identity_token: A raw OIDC JWT.
            trust: See :func:`client_trust_config`.
            timeout: Seconds each Fulcio/Rekor/TSA request may take to connect,
                and to deliver each part of its answer.
        """
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, not {timeout!r}")
        self._token = identity_token
        self._trust = trust
        self._timeout = float(timeout)
        self._signer: Any = None
        self._context: Any = None

    def _get(self) -> Any:
        if self._signer is None:
            from sigstore.oidc import IdentityError, IdentityToken
            from sigstore.sign import SigningContext

            config = client_trust_config(self._trust)
            try:
                token = IdentityToken(self._token)
            except IdentityError as exc:
                raise SigningError(f"identity token rejected: {exc}") from None
            try:
                context = SigningContext.from_trust_config(config)
            except Exception as exc:
                raise SigningError(f"cannot get a Fulcio signing certificate: {exc}") from None
            sigstore_adapter.apply_timeouts(context, self._timeout)
            self._context = context
            try:
                self._signer = context.signer(token, cache=True).__enter__()
            except Exception as exc:  # Fulcio errors, network errors, expired tokens
                raise _failure("cannot get a Fulcio signing certificate", exc) from None
        return self._signer

    @property
    def identity(self) -> str:
        """The identity (token subject or email) the certificate will carry."""
        from sigstore.oidc import IdentityError, IdentityToken

        try:
            return str(IdentityToken(self._token).identity)
        except IdentityError as exc:
            raise SigningError(f"identity token rejected: {exc}") from None

    def sign_artifact(self, data: bytes) -> ParsedBundle:
        """A ``messageSignature`` bundle (hashedrekord entry) over ``data``.

        Raises:
            SigningError: Fulcio, Rekor or the token failed.
        """
        signer = self._get()
        try:
            return _parse_sigstore_bundle(signer.sign_artifact(data))
        except Exception as exc:
            raise _failure("keyless signing failed", exc) from None

    def sign_dsse(self, statement: bytes) -> ParsedBundle:
        """A ``dsseEnvelope`` bundle (dsse entry) over an in-toto statement.

        Raises:
            SigningError: Fulcio, Rekor or the token failed, or not a v1 statement.
        """
        return self.sign_dsse_envelope(statement)[0]

    def sign_dsse_envelope(self, statement: bytes) -> tuple[ParsedBundle, bytes]:
        """As :meth:`sign_dsse`, plus the exact envelope JSON the log entry hashed.

        cosign's legacy ``.att`` layer stores that envelope, and verifiers compare
        the entry's envelope hash with the stored bytes.

        Raises:
            SigningError: Fulcio, Rekor or the token failed, or not a v1 statement.
        """
        signer = self._get()
        try:
            bundle = signer.sign_dsse(sigstore_adapter.raw_statement(statement))
            return _parse_sigstore_bundle(bundle), sigstore_adapter.envelope_json(bundle)
        except Exception as exc:
            raise _failure("keyless signing failed", exc) from None

    def timestamp(self, data: bytes) -> bytes | None:
        """An RFC 3161 timestamp (DER) over ``data`` from the first configured TSA, if any.

        cosign's legacy attestations are timestamped over the stored envelope
        rather than over the signature, which sigstore-python stamps.

        Raises:
            SigningError: The timestamp authority failed.
        """
        self._get()
        clients = sigstore_adapter.timestamp_clients(self._context)
        if not clients:
            return None
        try:
            return bytes(clients[0].request_timestamp(data).as_bytes())
        except Exception as exc:  # sigstore's TimestampError, network errors
            raise _failure("timestamp authority failed", exc) from None

    def chain_pem(self, leaf_der: bytes) -> bytes:
        """The issuing chain (intermediates, root) from the trusted root, as cosign stores it."""
        config = client_trust_config(self._trust)
        return issuing_chain_pem(leaf_der, config.trusted_root)


def issuing_chain_pem(leaf_der: bytes, trusted_root: Any) -> bytes:
    """PEM of the trusted-root CA chain whose first certificate issued ``leaf_der``."""
    from cryptography.hazmat.primitives import serialization

    leaf = load_certificate(leaf_der)
    for certs in sigstore_adapter.ca_certificates(trusted_root):
        if certs and certs[0].subject == leaf.issuer:
            return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)
    return b""


def client_trust_config(trust: Any) -> Any:
    """A ``sigstore.models.ClientTrustConfig`` for signing.

    ``trust`` is ``"production"``, ``"staging"``, a ``ClientTrustConfig``, or a
    path to a client trust config JSON file (private deployments).

    Raises:
        SigningError: Unreadable or invalid configuration, or TUF failure.
    """
    from sigstore.models import ClientTrustConfig

    if isinstance(trust, ClientTrustConfig):
        return trust
    if trust in ("production", "staging"):
        try:
            return getattr(ClientTrustConfig, str(trust))()
        except Exception as exc:
            raise SigningError(f"cannot fetch Sigstore's {trust} trust config: {exc}") from None
    path = Path(os.fspath(trust))
    try:
        return ClientTrustConfig.from_json(path.read_text())
    except OSError as exc:
        raise SigningError(f"cannot read trust config {path}: {exc.strerror}") from None
    except Exception as exc:
        raise SigningError(f"{path}: not a Sigstore client trust config ({exc})") from None
