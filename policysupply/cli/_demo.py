"""``policysupply demo``: the whole story on embedded defaults, narrated.

For now the story is build → check → evaluate → write → read back → refuse a
tampered copy; later steps (sign, push, verify, load, gate) join as the
library grows.
"""

from __future__ import annotations

import json
import tempfile
from contextlib import ExitStack
from importlib import resources
from pathlib import Path
from typing import Any

import click

from policysupply.bundle import Bundle
from policysupply.errors import BundleError, PolicySupplyError

_GOOD_POD: dict[str, Any] = {
    "request": {
        "kind": {"kind": "Pod"},
        "object": {
            "metadata": {
                "name": "web",
                "labels": {"app.kubernetes.io/name": "web", "owner": "team-web"},
                "annotations": {"policysupply.dev/base-image": "gcr.io/distroless/static"},
            },
            "spec": {
                "containers": [
                    {
                        "name": "web",
                        "image": "registry.example.com/web:1.4.2",
                        "securityContext": {"privileged": False, "allowPrivilegeEscalation": False},
                    },
                ]
            },
        },
    }
}

_BAD_POD: dict[str, Any] = {
    "request": {
        "kind": {"kind": "Pod"},
        "object": {
            "metadata": {"name": "miner", "labels": {"app.kubernetes.io/name": "miner"}},
            "spec": {
                "containers": [
                    {
                        "name": "miner",
                        "image": "docker.io/evil/miner:latest",
                        "securityContext": {"privileged": True},
                    },
                ]
            },
        },
    }
}


def _step(n: int, title: str) -> None:
    click.echo()
    click.secho(f"[{n}] {title}", bold=True)


def _ok(msg: str) -> None:
    click.secho("    ✓ ", fg="green", nl=False)
    click.echo(msg)


class _StepFailed(Exception):
    """A demo step did not behave as the story says it should."""


def _expect(condition: bool, failure: str) -> None:
    if not condition:
        raise _StepFailed(failure)


def _info(msg: str) -> None:
    click.echo(f"    {msg}")


def run_demo(workdir: str | None) -> int:
    """Runs the demo; returns the process exit code (0 when every step behaved)."""
    with ExitStack() as stack:
        work = (
            Path(workdir)
            if workdir
            else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="policysupply-demo-")))
        )
        work.mkdir(parents=True, exist_ok=True)
        example = stack.enter_context(
            resources.as_file(resources.files("policysupply") / "examples" / "kubernetes")
        )
        try:
            return _story(example, work)
        except _StepFailed as exc:
            click.secho(f"    ✗ {exc}", fg="red")
            return 1
        except PolicySupplyError as exc:
            click.secho(f"\ndemo failed: {exc}", fg="red", err=True)
            return 1


def _story(example: Path, work: Path) -> int:
    click.secho("policysupply demo: a policy bundle from source to decision", bold=True)
    _info(f"example policies: {example}")
    _info(f"working directory: {work}")

    _step(1, "Build a bundle from the example Kubernetes admission policies")
    bundle = Bundle.from_directory(example)
    _ok(
        f"{len(bundle.modules)} Rego modules, roots {list(bundle.manifest.effective_roots)}, "
        f"revision {bundle.manifest.revision!r}"
    )
    for name in sorted(bundle.modules):
        _info(f"  {name}")

    _step(2, "Builds are deterministic: build again, compare digests")
    again = Bundle.from_directory(example)
    _expect(again.digest == bundle.digest, "two builds of the same tree differ")
    _ok(f"both builds are {bundle.digest}")

    _step(3, "Check: compile every module with the embedded Rego engine")
    bundle.check()
    _ok("no syntax errors, roots respected, every module compiles")

    _step(4, "Evaluate admission decisions in-process")
    verdicts = {}
    for label, pod in (("compliant pod", _GOOD_POD), ("privileged pod from docker.io", _BAD_POD)):
        allowed = bool(bundle.evaluate("data.k8s.admission.allow", pod))
        verdicts[label] = allowed
        verdict = click.style("ALLOW", fg="green") if allowed else click.style("DENY", fg="red")
        click.echo(f"    {label}: {verdict}")
        for reason in bundle.evaluate("data.k8s.admission.deny", pod) or []:
            _info(f"  - {reason}")
    _expect(
        verdicts == {"compliant pod": True, "privileged pod from docker.io": False},
        "decisions are not what the example policies intend",
    )

    _step(5, "Write the bundle atomically and read it back as untrusted input")
    path = bundle.write(work / "bundle.tar.gz")
    read_back = Bundle.from_file(path)
    _expect(read_back.digest == bundle.digest, "the bundle read back differs")
    _ok(f"{path} ({path.stat().st_size:,} bytes), read back with the same digest")

    _step(6, "A tampered bundle is refused")
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    try:
        Bundle.from_bytes(bytes(raw))
    except BundleError as exc:
        _ok(f"refused: {exc}")
    else:
        raise _StepFailed("a corrupted bundle was accepted")

    click.echo()
    click.secho("Done. Next in the pipeline: sign, push, verify, load and gate.", bold=True)
    _info(json.dumps({"digest": bundle.digest, "path": str(path)}))
    return 0
