"""OPA bundles: read, build, check and evaluate policy bundles.

A :class:`Bundle` is an immutable value holding what OPA would load from a
``.tar.gz`` bundle: the manifest, the Rego modules and the merged data
document. Its :meth:`Bundle.to_bytes` is deterministic, so the same policy
tree always has the same :attr:`Bundle.digest`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from policysupply._internal import bundle_format as bf
from policysupply._internal import bundle_read, bundle_views, tarball
from policysupply._internal.tarball import DEFAULT_LIMITS, Limits
from policysupply._manifest import Manifest, freeze_mapping
from policysupply.errors import BundleError

if TYPE_CHECKING:
    from policysupply._internal.engines import EngineChoice
    from policysupply._internal.engines.base import Prepared, RegoDiagnostic
    from policysupply._native_trust import NativeTrust, NativeVerification

__all__ = ["Bundle", "Limits", "Manifest"]


@attrs.frozen(kw_only=True)
class Bundle:
    """An OPA bundle: manifest, Rego modules and data.

    Build one with :meth:`from_directory`, :meth:`from_bytes` or
    :meth:`from_file`. Construction validates what OPA validates when it reads
    a bundle (roots disjoint, every package and data leaf under a root);
    :meth:`check` additionally compiles the Rego.

    Attributes:
        manifest: The ``.manifest``.
        modules: Module path relative to the bundle root (``k8s/images.rego``)
            → Rego source.
        data: The merged data document (read-only view; do not mutate nested
            values).
        files: Other entries carried verbatim (``.signatures.json``,
            ``policy.wasm``, ``plan.json``, …), path → bytes.
    """

    manifest: Manifest = attrs.field(factory=Manifest)
    modules: Mapping[str, str] = attrs.field(factory=dict, converter=freeze_mapping)
    data: Mapping[str, Any] = attrs.field(factory=dict, converter=freeze_mapping)
    files: Mapping[str, bytes] = attrs.field(factory=dict, converter=freeze_mapping)
    _cache: bundle_views.Cache = attrs.field(
        init=False, factory=bundle_views.Cache, eq=False, repr=False
    )

    def __attrs_post_init__(self) -> None:
        roots = self.manifest.effective_roots
        for name, source in self.modules.items():
            from policysupply._internal.engines.rego_source import package_path

            pkg = package_path(source, entry=name)
            if not bf.path_under_roots(pkg, roots):
                raise BundleError(
                    f"package {'.'.join(pkg)} is outside the manifest roots {list(roots)}",
                    entry=name,
                )
        bf.check_data_in_roots(self.data, roots)
        clash = set(self.files) & (set(self.modules) | {".manifest", "data.json"})
        if clash:
            raise BundleError(
                "entry given both as a file and as a module/data/manifest", entry=sorted(clash)[0]
            )

    # -- constructors ------------------------------------------------------

    @classmethod
    def from_directory(
        cls,
        path: str | os.PathLike[str],
        *,
        revision: str | None = None,
        roots: list[str] | tuple[str, ...] | None = None,
        metadata: Mapping[str, Any] | None = None,
        rego_version: int | None = None,
    ) -> Bundle:
        """Builds a bundle from a policy directory.

        Reads every ``*.rego``, every ``data.json`` / ``data.yaml`` /
        ``data.yml`` (its directory is its data path) and ``.manifest`` at the
        top if present, in every directory: hidden files and directories
        (``.x.rego``, ``.git/``) are read too, as ``opa build -b`` reads them.
        As in OPA, leading dots of a data file's directory are stripped
        (``.hidden/data.json`` is ``data.hidden``). Other files are skipped.
        Refused, naming the path, where OPA would read the tree differently
        from how it looks: a ``*.manifest`` or ``.signatures.json`` below the
        top (OPA would take it as the bundle's manifest or signatures), a data
        directory named only of dots, a ``patch.json`` (a delta bundle to
        OPA), a symlink or FIFO named like a bundle file and a symlinked
        directory holding one (OPA leaves symlinks out), ``path`` itself a
        symlink unless given with a trailing ``/`` (``opa build -b link``
        reads nothing), and what ``opa build -b .`` reads differently from
        ``opa build -b DIR`` (it trims the first dot off top-level names):
        ``.h/x.rego`` beside ``h/x.rego``, a top-level ``.data.json``. A top-level
        ``.signatures.json`` (from ``opa sign``, or an extracted signed
        bundle) is kept, with the files as read, as :meth:`from_bytes` does;
        with an override below it is left out (it would no longer match).

        Args:
            path: The policy directory.
            revision: Overrides the manifest revision.
            roots: Overrides the manifest roots.
            metadata: Overrides the manifest metadata.
            rego_version: Overrides the manifest ``rego_version``.

        Raises:
            BundleError: Unreadable or invalid content, naming the file.
        """
        parts = bundle_read.read_directory(
            path, revision=revision, roots=roots, metadata=metadata, rego_version=rego_version
        )
        bundle = cls(
            manifest=parts.manifest, modules=parts.modules, data=parts.data, files=parts.files
        )
        bundle._cache.parsed_data = True
        if parts.source is not None:
            bundle._cache.source = parts.source
            bundle._cache.signed_source = True
        return bundle

    @classmethod
    def from_bytes(
        cls,
        data: bytes,
        *,
        limits: Limits = DEFAULT_LIMITS,
        native: NativeTrust | None = None,
    ) -> Bundle:
        """Reads a ``.tar.gz`` bundle (as ``opa build`` writes it) from memory.

        The input is treated as hostile: it is read within ``limits``, and
        links, devices, path traversal, duplicate entries, invalid UTF-8 Rego,
        invalid JSON/YAML and root violations are refused. Nothing is written
        to disk.

        A bundle carrying ``.signatures.json`` keeps its entries exactly as
        read, so that :meth:`to_bytes` writes the same signed content again.

        Args:
            data: The bundle bytes.
            limits: Size and count bounds.
            native: Require a valid OPA-native signature under this trust,
                checked on the entries as read, before anything is parsed.

        Raises:
            BundleError: The bundle is malformed or unsafe; the error names
                the entry.
            VerificationError: ``native`` is given and the signature is
                missing or does not verify (a subclass says what failed).
        """
        from policysupply._internal import opa_signatures as bf_sig

        entries = tarball.read_entries(bytes(data), limits)
        if native is not None:
            from policysupply.native import verify_entries

            verify_entries(entries, native)
        inexact = bf.inexact_numbers_seen()
        parts = bundle_read.parse_entries(entries, limits)
        bundle = cls(
            manifest=parts.manifest, modules=parts.modules, data=parts.data, files=parts.files
        )
        bundle._cache.sources = parts.sources
        bundle._cache.parsed_data = True
        bundle._cache.inexact = bf.inexact_numbers_seen() != inexact
        if any(bf_sig.is_signatures_file(n) for n in entries):
            bundle._cache.source = entries
            bundle._cache.signed_source = True
        return bundle

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        *,
        limits: Limits = DEFAULT_LIMITS,
        native: NativeTrust | None = None,
    ) -> Bundle:
        """Reads a ``.tar.gz`` bundle file; see :meth:`from_bytes`.

        Raises:
            BundleError: Unreadable, too large, or invalid.
            VerificationError: ``native`` is given and the signature fails.
        """
        p = Path(path)
        try:
            size = p.stat().st_size
            if size > limits.max_compressed:
                raise BundleError(f"{p} is {size} bytes, over the limit of {limits.max_compressed}")
            raw = p.read_bytes()
        except OSError as exc:
            raise BundleError(f"cannot read {p}: {exc.strerror}") from None
        return cls.from_bytes(raw, limits=limits, native=native)

    # -- serialisation -----------------------------------------------------

    def entries(self) -> dict[str, bytes]:
        """The tarball entries (name without leading ``/`` → bytes) ``to_bytes`` writes.

        Our canonical serialisation, except for a bundle read with an
        OPA-native signature: its entries as read.
        """
        cache = self._cache
        if cache.source is None:
            with cache.lock:
                if cache.source is None:
                    cache.source = bundle_views.canonical_entries(
                        self.manifest, self.modules, self.data, self.files
                    )
        return dict(cache.source)

    def to_bytes(self) -> bytes:
        """The bundle as a deterministic ``.tar.gz`` that OPA loads.

        The same bundle gives the same bytes on every run and machine: entries
        sorted, fixed mtime/owner/mode, no timestamp or name in the gzip
        header, data serialised with sorted keys.
        """
        cache = self._cache
        with cache.lock:
            if cache.bytes is None:
                cache.bytes = tarball.write_entries(self.entries())
            return cache.bytes

    @property
    def digest(self) -> str:
        """``sha256:<hex>`` of :meth:`to_bytes`."""
        return "sha256:" + hashlib.sha256(self.to_bytes()).hexdigest()

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Writes :meth:`to_bytes` to ``path`` atomically (temp file + rename).

        A reader never sees a partial file, and an existing good file is only
        replaced by a complete new one.

        Returns:
            The path written.

        Raises:
            BundleError: The file could not be written.
        """
        from policysupply._internal import fs

        target = Path(path)
        payload = self.to_bytes()
        try:
            with fs.atomic_file(target, mode=0o644, parents=False, into_device=True) as f:
                f.write(payload)
        except OSError as exc:
            raise BundleError(f"cannot write {target}: {exc.strerror}") from None
        return target

    def _raw_document(self, root: tuple[str, ...]) -> bytes | None:
        """The data document at ``root`` as JSON that reads as OPA reads the bundle.

        The bytes of the bundle's own data files where they hold the document
        in one piece (see ``bundle_format.raw_document``); else, when the data
        holds numbers a float cannot (kept as their text), an exact encoding;
        else ``None``: ``json.dumps`` of the value is exact.
        """
        return bundle_views.raw_document(self._cache, self.data, root)

    # -- OPA-native signatures ---------------------------------------------

    def sign(
        self,
        key: Any,
        *,
        alg: str | None = None,
        key_id: str | None = None,
        scope: str | None = None,
        claims: Mapping[str, Any] | None = None,
        append: bool = False,
    ) -> Bundle:
        """A copy of this bundle with an OPA-native signature in ``/.signatures.json``.

        The token is what ``opa build --signing-key`` writes: every other
        entry listed with its SHA-256 (``data.json`` and ``.manifest`` in
        OPA's canonical JSON form), signed with ``alg``. OPA verifies it when
        configured with the matching key. Everything but ``.signatures.json``
        stays byte-identical to the unsigned bundle.

        Args:
            key: A key-based :class:`~policysupply.Signer`, a ``cryptography``
                private key, PEM text/bytes or a path to a PEM file; for
                ``HS*`` the shared secret (``str``/``bytes``).
            alg: ``RS256``/``384``/``512``, ``PS*``, ``ES*`` or ``HS*``.
                Default: RS256 for RSA keys (OPA's default), ES256/384/512 by
                the curve of an ECDSA key, HS256 for a ``bytes`` secret.
            key_id: Written as the token's ``kid`` so that a verifier trusting
                several keys picks this one (and, without claims or scope, as
                the legacy ``keyid`` claim, as ``opa build`` does). ``None``
                writes neither, as ``opa sign`` does.
            scope: The ``scope`` claim; OPA requires it to equal the
                configured scope.
            claims: Extra claims (``iss``, ``iat``, ...). ``files`` is reserved.
            append: Add the token to the existing ones instead of replacing
                them. OPA (1.22) refuses bundles with more than one token;
                only policysupply's verifier counts them (threshold).

        Returns:
            The signed bundle.

        Raises:
            SigningError: Unusable key, algorithm or claims.
        """
        from policysupply._internal import opa_signatures as bf_sig
        from policysupply.native import sign_entries

        entries = {n: b for n, b in self.entries().items() if not bf_sig.is_signatures_file(n)}
        previous = self.files.get(bf_sig.SIGNATURES_FILE) if append else None
        known: dict[str, bytes] = {}
        if not self._cache.signed_source:
            # Our own writer's output is already canonical JSON except that
            # Go escapes U+2028/U+2029; no need to parse it again.
            for name in (".manifest", "data.json"):
                known[name] = (
                    entries[name]
                    .replace(b"\xe2\x80\xa8", b"\\u2028")
                    .replace(b"\xe2\x80\xa9", b"\\u2029")
                )
        signatures = sign_entries(
            entries,
            key=key,
            alg=alg,
            key_id=key_id,
            scope=scope,
            claims=claims,
            canonical=known,
            previous=previous,
        )
        files = {n: b for n, b in self.files.items() if not bf_sig.is_signatures_file(n)}
        files[bf_sig.SIGNATURES_FILE] = signatures
        signed = attrs.evolve(self, files=files)
        # Exactly the entries that were signed: for a bundle read with its
        # own bytes those bytes, otherwise what entries() would recompute
        # (kept so that 50 MB of data is not serialised a second time).
        signed._cache.source = {**entries, bf_sig.SIGNATURES_FILE: signatures}
        signed._cache.signed_source = self._cache.signed_source
        return signed

    def verify_native(self, trust: NativeTrust) -> NativeVerification:
        """Verifies this bundle's OPA-native signature against what :meth:`to_bytes` writes.

        Args:
            trust: Trusted keys and rules (:class:`~policysupply.native.NativeTrust`).

        Returns:
            The signatures that verified.

        Raises:
            VerificationError: A subclass naming what failed: no signature,
                an untrusted or forged token, a scope mismatch, a file added,
                missing or changed, an unsafe ``exclude_files``.
        """
        from policysupply.native import verify_entries

        return verify_entries(self.entries(), trust)

    # -- Rego --------------------------------------------------------------

    def rego_version_of(self, module: str) -> int:
        """The Rego version OPA parses ``module`` with (0 or 1)."""
        return bf.rego_version_of(
            module, self.manifest.rego_version, self.manifest.file_rego_versions
        )

    def _rego_versions(self) -> dict[str, int]:
        return {name: self.rego_version_of(name) for name in self.modules}

    def check(self, engine: EngineChoice = None, *, strict: bool = False) -> None:
        """Parses and compiles every module, as ``opa check`` does.

        Catches syntax errors, Rego v1 rule bodies without ``if``, calls to
        undefined functions, wrong arity, type errors, unsafe variables and
        re-assignments. Modules parsed as Rego v0 follow v0's rules.

        Args:
            engine: ``"opa"`` (``opa check`` itself), ``"embedded"``,
                ``"auto"`` (OPA when its binary is found) or an engine object;
                ``None``: ``POLICYSUPPLY_ENGINE``, else ``"auto"``. The
                embedded engine's check does not refuse builtins it cannot
                evaluate: such a bundle is fine for OPA.
            strict: Also OPA's strict-mode errors (unused imports and local
                variables, deprecated builtins, shadowed ``input``/``data``),
                as ``opa check --strict``. Needs the OPA engine: other
                engines raise ``UnsupportedByEngineError``.

        Raises:
            BundleError: Naming the first broken module and line; the message
                lists every problem found. ``EngineUnavailableError`` (a
                ``BundleError``) when ``"opa"`` is asked for and not found.
        """
        self._start_check(engine, strict=strict)()

    def _start_check(
        self, engine: EngineChoice = None, *, strict: bool = False
    ) -> Callable[[], None]:
        """Starts :meth:`check`; the function returned finishes it (and raises as ``check``).

        With the OPA engine, ``opa check`` runs while the caller does other
        work (the CLI writes the tarball meanwhile); the function returned
        must be called, on every path, to collect it. Errors that ``check``
        raises before running the engine (no engine, unusable modules) are
        raised here.
        """
        from policysupply._internal.engines import select_engine
        from policysupply._internal.engines.base import BackgroundCheck

        eng = select_engine(engine)
        modules, versions = dict(self.modules), self._rego_versions()
        if isinstance(eng, BackgroundCheck):
            pending = eng.start_check(
                modules,
                dict(self.data),
                rego_versions=versions,
                strict=strict,
                data_is_json=self._cache.parsed_data,
            )
            return lambda: _raise_first(pending())
        # Not refusing: a builtin the embedded engine cannot evaluate is fine
        # in a bundle that OPA will evaluate.
        _raise_first(
            eng.check(modules, dict(self.data), rego_versions=versions, strict=strict, refuse=False)
        )
        return lambda: None

    def prepare(self, engine: EngineChoice = None) -> Prepared:
        """The bundle compiled by ``engine`` for repeated queries (cached per engine).

        Raises:
            BundleError: A module does not compile, or the engine cannot
                answer for this bundle (``UnsupportedByEngineError``) or is
                not available (``EngineUnavailableError``).
        """
        from policysupply._internal.engines import select_engine

        # Keyed by the engine object (select_engine returns one per binary),
        # not by anything that would ask the engine about itself.
        eng = select_engine(engine)
        cache = self._cache
        with cache.lock:
            prepared = cache.prepared.get(eng)
            if prepared is None:
                prepared = eng.prepare(
                    dict(self.modules), dict(self.data), rego_versions=self._rego_versions()
                )
                cache.prepared[eng] = prepared
            return prepared

    def query(self, query: str, input: Any = None, *, engine: EngineChoice = None) -> list[Any]:
        """Evaluates ``query`` and returns OPA's result sets as ``opa eval`` prints them.

        Each result set is ``{"expressions": [{"value", "text"}], "bindings": {...}}``;
        an empty list means undefined.

        Raises:
            BundleError: See :meth:`evaluate`.
        """
        return [dict(r) for r in self.prepare(engine).query(query, input)]

    def evaluate(self, query: str, input: Any = None, engine: EngineChoice = None) -> Any:
        """Evaluates ``query`` with a Rego engine, as ``opa eval`` would.

        Args:
            query: A Rego query, e.g. ``"data.k8s.admission.deny"``.
            input: The ``input`` document.
            engine: ``"opa"`` (a managed ``opa run --server`` for this
                bundle), ``"embedded"`` (rego-cpp in a worker process: refuses
                what it cannot answer exactly, including Rego v0),
                ``"auto"`` (OPA when its binary is found) or an engine object;
                ``None``: ``POLICYSUPPLY_ENGINE``, else ``"auto"``.

        Returns:
            The value of a single-expression query (sets come back as sorted
            lists, as OPA returns them in JSON); a dict of bindings when the
            query binds variables; ``None`` when the result is undefined.

        Raises:
            BundleError: The query or a module failed to compile or evaluate
                (type errors, division by zero and builtin errors included:
                never an undefined result); ``UnsupportedByEngineError`` when
                the embedded engine cannot answer exactly as OPA would.
        """
        results = self.query(query, input, engine=engine)
        if not results:
            return None
        first = results[0]
        bindings = first.get("bindings") or {}
        if bindings:
            return bindings
        exprs = [e.get("value") for e in first.get("expressions", [])]
        return exprs[0] if len(exprs) == 1 else exprs

    # -- display -----------------------------------------------------------

    def __repr__(self) -> str:
        return (
            f"Bundle(revision={self.manifest.revision!r}, roots={self.manifest.roots!r}, "
            f"modules={len(self.modules)}, files={len(self.files)})"
        )

    def _repr_html_(self) -> str:
        """A summary table for Jupyter."""
        return bundle_views.summary_html(
            self.manifest,
            digest=self.digest,
            size=len(self.to_bytes()),
            modules=self.modules,
            data=self.data,
            files=self.files,
        )


def _raise_first(diags: Sequence[RegoDiagnostic]) -> None:
    """Raises ``BundleError`` for the first diagnostic, listing the others."""
    if diags:
        first = diags[0]
        more = "".join(
            f"\n  {d.entry}{f':{d.line}' if d.line else ''}: {d.message}" for d in diags[1:]
        )
        suffix = f" ({len(diags) - 1} more problem(s):{more})" if more else ""
        raise BundleError(first.message + suffix, entry=first.entry, line=first.line)
