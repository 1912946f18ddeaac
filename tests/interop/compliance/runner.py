"""OPA's compliance suite through the engine seam, for each engine.

The cases come from the OPA module the project pins (the version in
scripts/install-peers.sh), in the Go module cache where the peer build put
it: ``<GOMODCACHE>/github.com/open-policy-agent/opa@<version>/v1/test/cases/
testdata/{v1,v0}``. Each case is prepared and queried exactly as a user's
bundle is (``engine.prepare(...).query(query, input)``), with OPA's own
settings for the case (``strict_error`` selects strict builtin errors for the
OPA engine; the embedded engine is always strict), and classified:

* ``agree``: the bindings OPA's suite expects (or the error it expects:
  for the OPA engine, the same error code and message);
* ``refused``: the engine raised ``UnsupportedByEngineError``, or (embedded
  only) a ``BundleError`` where OPA has an answer;
* ``different``: any other answer (a wrong result, a missed error, an error
  the OPA engine should not raise);
* ``crash``: the engine died (a rego-cpp crash in the embedded worker) or
  raised something other than ``BundleError``.

Cases that cannot go through the seam are counted, not compared: Rego-term
input that is not JSON, environment variables, experimental keywords.

Run ``python -m tests.interop.compliance.runner`` to write
``benchmarks/results/compliance.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs
import yaml

from tests.interop.compliance import values

ROOT = Path(__file__).resolve().parents[3]
RESULTS = ROOT / "benchmarks" / "results" / "compliance.json"
VERDICTS = ("agree", "refused", "different", "crash")


def pinned_opa_version() -> str:
    """The OPA version scripts/install-peers.sh builds (``v1.22.2``)."""
    text = (ROOT / "scripts" / "install-peers.sh").read_text()
    m = re.search(r'^OPA_VERSION="(v[^"]+)"', text, re.MULTILINE)
    if m is None:
        raise RuntimeError("no OPA_VERSION in scripts/install-peers.sh")
    return m.group(1)


def go_mod_cache() -> Path:
    """``go env GOMODCACHE`` (``$GOPATH/pkg/mod`` conventions when go is absent)."""
    try:
        out = subprocess.run(
            ["go", "env", "GOMODCACHE"], capture_output=True, text=True, timeout=60, check=True
        ).stdout.strip()
        if out:
            return Path(out)
    except (OSError, subprocess.SubprocessError):
        pass
    if os.environ.get("GOMODCACHE"):
        return Path(os.environ["GOMODCACHE"])
    gopath = os.environ.get("GOPATH", "").split(os.pathsep)[0] or str(Path.home() / "go")
    return Path(gopath) / "pkg" / "mod"


def cases_dir(suite: str) -> Path:
    """Where the pinned OPA's compliance cases of ``suite`` (``v1``/``v0``) are."""
    return (
        go_mod_cache()
        / f"github.com/open-policy-agent/opa@{pinned_opa_version()}"
        / "v1/test/cases/testdata"
        / suite
    )


class _GoYamlLoader(yaml.SafeLoader):
    """YAML as OPA reads its cases: only true/false are booleans (``on:`` is a key)."""


_GoYamlLoader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_GoYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


# Cases whose expectation holds in OPA's test harness but not for a bundle
# loaded into `opa` (by note, with the reason; the same in v1 and v0).
HARNESS_ONLY = {
    "baseandvirtualdocs/base/virtual: conflicts": (
        "its data overlaps a package's rules: `opa` refuses that bundle "
        "(conflicting rule for data path); the harness does not load it as one"
    ),
    "time/time caching": "calls test.sleep, a builtin only OPA's test harness registers",
    "withkeyword/builtin-builtin: arity 0": (
        "opa.runtime(): a real OPA reports its environment, the harness has none"
    ),
}


@attrs.frozen(kw_only=True)
class Case:
    """One compliance case, as the seam sees it."""

    suite: str
    file: str
    note: str
    query: str
    modules: tuple[str, ...]
    data: Mapping[str, Any]
    input: Any
    want_result: list[Mapping[str, Any]] | None
    want_error_code: str | None
    want_error: str | None
    strict: bool
    sort_bindings: bool
    ignore_generated_vars: bool
    not_comparable: str | None

    @property
    def wants_error(self) -> bool:
        return self.want_error_code is not None or self.want_error is not None

    @property
    def rego_version(self) -> int:
        return 0 if self.suite == "v0" else 1

    def group_key(self) -> tuple[Any, ...]:
        return (
            self.suite,
            self.modules,
            json.dumps(self.data, sort_keys=True, default=repr),
            self.strict,
        )


def load_cases(suite: str, base: Path | None = None) -> list[Case]:
    """Every case of one suite, in file order."""
    root = base or cases_dir(suite)
    out: list[Case] = []
    for path in sorted(root.rglob("*.yaml")):
        with path.open() as fh:
            for doc in yaml.load_all(fh, Loader=_GoYamlLoader):
                for raw in (doc or {}).get("cases", []):
                    out.append(_case(suite, str(path.relative_to(root)), raw))
    return out


def _case(suite: str, file: str, raw: Mapping[str, Any]) -> Case:
    why: str | None = None
    inp: Any = None
    if "input_term" in raw:
        try:
            inp = json.loads(str(raw["input_term"]))
        except ValueError:
            why = "input_term is Rego, not JSON"
    elif "input" in raw:
        inp = raw["input"]
    if raw.get("env"):
        why = "sets environment variables"
    if raw.get("experimental_keywords"):
        why = "experimental keywords"
    if str(raw["note"]) in HARNESS_ONLY:
        why = HARNESS_ONLY[str(raw["note"])]
    if "want_result" not in raw and "want_error" not in raw and "want_error_code" not in raw:
        why = "no expectation"
    return Case(
        suite=suite,
        file=file,
        note=str(raw["note"]),
        query=str(raw["query"]),
        modules=tuple(raw.get("modules") or ()),
        data=raw.get("data") or {},
        input=inp,
        want_result=raw.get("want_result"),
        want_error_code=raw.get("want_error_code"),
        want_error=raw.get("want_error"),
        strict=bool(raw.get("strict_error")),
        sort_bindings=bool(raw.get("sort_bindings")),
        ignore_generated_vars=bool(raw.get("ignore_generated_vars")),
        not_comparable=why,
    )


# -- comparing ------------------------------------------------------------------


def _got(results: Iterable[Mapping[str, Any]], case: Case) -> set[Any]:
    return values.result_bindings(
        results,
        ignore_generated_vars=case.ignore_generated_vars,
        sort_bindings=case.sort_bindings,
    )


@attrs.frozen(kw_only=True)
class Outcome:
    """How one engine answered one case."""

    case: Case
    verdict: str
    detail: str = ""


def classify(case: Case, *, engine: str, results: Any = None, error: BaseException | None) -> str:
    """``agree``, ``refused``, ``different`` or ``crash`` (see the module docstring)."""
    from policysupply._internal.engines.base import UnsupportedByEngineError
    from policysupply.errors import BundleError

    if error is not None:
        if not isinstance(error, BundleError):
            return "crash"
        if engine == "embedded" and "crashed" in str(error):
            return "crash"
        if isinstance(error, UnsupportedByEngineError):
            return "refused"
        if not case.wants_error:
            return "refused" if engine == "embedded" else "different"
        if engine == "opa":
            text = str(error)
            if case.want_error_code is not None and case.want_error_code not in text:
                return "different"
            if case.want_error is not None and not _error_matches(case.want_error, error):
                return "different"
        return "agree"
    if case.wants_error:
        return "different"
    want = values.expected_bindings(case.want_result)
    return "agree" if _got(results, case) == want else "different"


def _error_matches(want: str, error: Any) -> bool:
    """OPA's error text: ``test-0.rego:4: code: message`` is entry, line and text."""
    m = re.match(r"(\S+\.rego):(\d+): (.*)\Z", want, re.DOTALL)
    if m is None:
        return want in str(error)
    return (
        getattr(error, "entry", None) == m.group(1)
        and getattr(error, "line", None) == int(m.group(2))
        and m.group(3) in str(error)
    )


# -- running --------------------------------------------------------------------

EngineFactory = Callable[[bool], Any]


def _run_group(engine_name: str, factory: EngineFactory, cases: list[Case]) -> list[Outcome]:
    first = cases[0]
    engine = factory(first.strict)
    modules = {f"test-{i}.rego": m for i, m in enumerate(first.modules)}
    versions = dict.fromkeys(modules, first.rego_version)
    out: list[Outcome] = []
    try:
        prepared = engine.prepare(modules, first.data, rego_versions=versions)
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        return [
            Outcome(
                case=c,
                verdict=classify(c, engine=engine_name, error=exc),
                detail=f"{type(exc).__name__}: {exc}"[:400],
            )
            for c in cases
        ]
    try:
        for case in cases:
            try:
                results = list(prepared.query(case.query, case.input))
            except BaseException as exc:
                if isinstance(exc, KeyboardInterrupt):
                    raise
                out.append(
                    Outcome(
                        case=case,
                        verdict=classify(case, engine=engine_name, error=exc),
                        detail=f"{type(exc).__name__}: {exc}"[:400],
                    )
                )
                continue
            verdict = classify(case, engine=engine_name, results=results, error=None)
            detail = "" if verdict == "agree" else json.dumps(results, default=repr)[:400]
            out.append(Outcome(case=case, verdict=verdict, detail=detail))
    finally:
        prepared.close()
    return out


def groups(cases: Iterable[Case]) -> Iterator[list[Case]]:
    """Comparable cases sharing modules, data and settings: one preparation each."""
    by_key: dict[tuple[Any, ...], list[Case]] = {}
    for case in cases:
        if case.not_comparable is None:
            by_key.setdefault(case.group_key(), []).append(case)
    yield from by_key.values()


def factory_for(engine: str) -> EngineFactory:
    """Builds an engine for a case's strictness."""
    if engine == "opa":
        from policysupply._internal.engines.opa import OpaEngine

        engines = {
            strict: OpaEngine(strict_builtin_errors=strict, timeout=120) for strict in (True, False)
        }
        return lambda strict: engines[strict]
    from policysupply._internal.engines.embedded import EmbeddedEngine

    embedded = EmbeddedEngine(timeout=120)
    return lambda strict: embedded


def run_suite(
    engine: str, suite: str, *, workers: int = 2, cases: list[Case] | None = None
) -> dict[str, Any]:
    """Runs one suite through one engine; the summary and every non-agreeing case."""
    all_cases = cases if cases is not None else load_cases(suite)
    factory = factory_for(engine)
    t0 = time.monotonic()
    outcomes: list[Outcome] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for batch in pool.map(lambda g: _run_group(engine, factory, g), list(groups(all_cases))):
            outcomes.extend(batch)
    seconds = time.monotonic() - t0
    counts = Counter(o.verdict for o in outcomes)
    skipped = Counter(c.not_comparable for c in all_cases if c.not_comparable is not None)
    comparable = len(outcomes)
    return {
        "engine": engine,
        "suite": suite,
        "cases": len(all_cases),
        "comparable": comparable,
        "not_comparable": dict(sorted(skipped.items())),
        "outcomes": {v: counts.get(v, 0) for v in VERDICTS},
        "agree_rate": round(counts["agree"] / comparable, 4) if comparable else None,
        "seconds": round(seconds, 1),
        "workers": workers,
        "non_agreeing": [
            {
                "note": o.case.note,
                "file": o.case.file,
                "verdict": o.verdict,
                "detail": o.detail,
            }
            for o in outcomes
            if o.verdict != "agree"
        ],
    }


def main(argv: list[str] | None = None) -> int:
    """Runs the suites, prints the summaries, writes the JSON report."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--engine", action="append", choices=["opa", "embedded"])
    ap.add_argument("--suite", action="append", choices=["v1", "v0"])
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--json", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    reports = []
    for engine in args.engine or ["opa", "embedded"]:
        for suite in args.suite or ["v1", "v0"]:
            # The embedded engine's workers are a pool of two: more threads
            # would only start (and throw away) more workers.
            workers = args.workers if engine == "opa" else min(args.workers, 2)
            report = run_suite(engine, suite, workers=workers)
            summary = {k: v for k, v in report.items() if k != "non_agreeing"}
            print(json.dumps(summary), flush=True)
            if engine == "embedded":
                report["non_agreeing"] = [
                    r for r in report["non_agreeing"] if r["verdict"] != "refused"
                ]
            reports.append(report)
    doc = {
        "opa_version": pinned_opa_version(),
        "generated_by": "python -m tests.interop.compliance.runner",
        "reports": reports,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(doc, indent=1) + "\n")
    bad = [
        r
        for r in reports
        if r["outcomes"]["different"]
        or r["outcomes"]["crash"]
        or (r["engine"] == "opa" and r["outcomes"]["refused"])
    ]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
