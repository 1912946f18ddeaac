"""Every code block in README.md and docs/ runs (or parses) as written, so docs cannot rot.

How a page runs: one bash process per page, in a fresh directory prepared with
``policysupply examples .`` (policies/, pod.json, trust-policy.yaml), with
``COSIGN_PASSWORD`` exported. ``console``/``bash``/``shell`` blocks run their
``$``-prefixed lines (or every line when none has a prompt; ``\\`` continues
a line), ``python`` blocks run as ``python -`` in the same shell, in order.
Each command must exit 0 unless the block says otherwise.

The test provides on loopback what the docs name, and substitutes them:

- ``registry.example.com``: a real registry (Debian's docker-registry) over
  TLS with a throwaway CA, trusted through ``SSL_CERT_FILE`` (Python, cosign,
  oras) and ``POLICYSUPPLY_CA_FILE`` (the CLI);
- ``http://127.0.0.1:8181``: a real ``opa run --server``;
- ``cosign``, ``oras`` and ``opa`` on ``PATH`` (the pinned peers).

Data blocks are parsed: ``json`` (JSON), ``yaml`` (YAML), ``rego`` (compiled as
a module), ``xml``. ``text`` blocks are output and are not run.

Markers (an HTML comment on the line before a block):

- ``<!-- docs-test: skip REASON -->`` the block cannot run here (it needs a
  public service, GitHub's OIDC tokens, or installs software); REASON is
  required;
- ``<!-- docs-test: exit N -->`` every command in the block must exit N.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import peer, peers_bin_dir

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted(
    [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")],
    key=lambda p: str(p),
)
RUNNABLE = {"console", "bash", "shell", "sh", "python"}
DATA = {"json", "yaml", "rego", "xml"}
FENCE = re.compile(r"^```([A-Za-z0-9_+-]*)\s*$")
MARKER = re.compile(r"^<!--\s*docs-test:\s*(skip|exit)\s*(.*?)\s*-->\s*$")
PASSWORD = "docs-test-password"


class Block:
    def __init__(self, page: Path, line: int, lang: str, text: str, marker: tuple[str, str] | None):
        self.page, self.line, self.lang, self.text, self.marker = page, line, lang, text, marker

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    out: list[Block] = []
    lines = page.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        lang = m.group(1).lower()
        marker = None
        prev = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        mm = MARKER.match(prev.strip())
        if mm:
            marker = (mm.group(1), mm.group(2))
        j = i + 1
        while j < len(lines) and not lines[j].startswith("```"):
            j += 1
        out.append(Block(page, i + 1, lang, "\n".join(lines[i + 1 : j]), marker))
        i = j + 1
    return out


def commands(text: str) -> list[str]:
    """The commands of a console block: ``$`` lines (with continuations), or all lines."""
    raw = text.splitlines()
    prompted = any(line.startswith("$ ") for line in raw)
    cmds: list[str] = []
    current: str | None = None
    for line in raw:
        if current is not None:
            current += "\n" + line
            if not line.rstrip().endswith("\\"):
                cmds.append(current)
                current = None
            continue
        if prompted and not line.startswith("$ "):
            continue  # output
        cmd = line[2:] if prompted else line
        if not cmd.strip() or cmd.lstrip().startswith("#"):
            continue
        if cmd.rstrip().endswith("\\"):
            current = cmd
        else:
            cmds.append(cmd)
    return cmds


def test_every_block_is_runnable_data_output_or_marked() -> None:
    for page in PAGES:
        for b in blocks(page):
            assert b.lang, f"{b.where}: give the block a language (console, python, text, ...)"
            assert b.lang in RUNNABLE | DATA | {"text"}, f"{b.where}: unknown language {b.lang}"
            if b.marker and b.marker[0] == "skip":
                assert b.marker[1], f"{b.where}: a skip marker needs a reason"


def test_data_blocks_parse() -> None:
    from policysupply import Bundle

    for page in PAGES:
        for b in blocks(page):
            if b.lang == "json":
                json.loads(b.text)
            elif b.lang == "yaml":
                list(yaml.safe_load_all(b.text))
            elif b.lang == "xml":
                import xml.etree.ElementTree as ET

                ET.fromstring(b.text)  # noqa: S314 - our own docs
            elif b.lang == "rego":
                Bundle(modules={"doc.rego": b.text}).check()


# -- the services the docs name -------------------------------------------------------


def _free_port() -> int:
    from tests._ports import free_port

    return free_port()


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    from tests.unit._internal.test_tls import _self_signed

    d = tmp_path_factory.mktemp("docs-services")
    cert, key = _self_signed(d)
    port = _free_port()
    (d / "config.yml").write_text(
        "version: 0.1\nlog:\n  level: error\n"
        f"storage:\n  filesystem:\n    rootdirectory: {d / 'data'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n  tls:\n    certificate: {cert}\n    key: {key}\n"
    )
    procs = []
    log = (d / "registry.log").open("wb")
    procs.append(
        subprocess.Popen(
            [str(peer("docker-registry")), "serve", str(d / "config.yml")],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    )
    opa_port = _free_port()
    procs.append(
        subprocess.Popen(
            [str(peer("opa")), "run", "--server", f"--addr=127.0.0.1:{opa_port}",
             "--log-level=error"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    )  # fmt: skip
    import ssl

    ctx = ssl.create_default_context(cafile=str(cert))
    deadline = time.monotonic() + 30
    for url, context in ((f"https://127.0.0.1:{port}/v2/", ctx),
                         (f"http://127.0.0.1:{opa_port}/health", None)):  # fmt: skip
        while True:
            try:
                with urllib.request.urlopen(url, timeout=1, context=context):
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    pytest.fail(f"{url} did not come up: {(d / 'registry.log').read_text()}")
                time.sleep(0.1)
    try:
        yield {"registry": f"127.0.0.1:{port}", "opa": f"http://127.0.0.1:{opa_port}",
               "ca": str(cert)}  # fmt: skip
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=10)
        log.close()


def _substitute(text: str, services: dict[str, str]) -> str:
    return text.replace("registry.example.com", services["registry"]).replace(
        "http://127.0.0.1:8181", services["opa"]
    )


def _script(page_blocks: list[Block], services: dict[str, str]) -> tuple[str, list[str]]:
    """One bash script for the page; each command reports its exit code after a marker."""
    lines = ["set -u", 'cd "$PAGE_DIR"']
    expected: list[str] = []
    for b in page_blocks:
        if b.lang not in RUNNABLE or (b.marker and b.marker[0] == "skip"):
            continue
        want = int(b.marker[1]) if b.marker and b.marker[0] == "exit" else 0
        body = _substitute(b.text, services)
        units = [f"python - <<'PYEOF'\n{body}\nPYEOF"] if b.lang == "python" else commands(body)
        for cmd in units:
            n = len(expected)
            expected.append(f"{b.where}: {cmd.splitlines()[0][:100]} (expect exit {want})")
            lines.append(f"echo '@@BEGIN {n}'")
            lines.append(cmd)
            lines.append(f'echo "@@RC {n} $? {want}"')
    return "\n".join(lines) + "\n", expected


@pytest.mark.interop
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_page_runs_as_written(page: Path, services: dict[str, str], tmp_path: Path) -> None:
    page_blocks = blocks(page)
    script, expected = _script(page_blocks, services)
    if not expected:
        return  # nothing runnable on this page (data and output blocks are checked above)
    home = tmp_path / "home"
    work = tmp_path / "work"
    home.mkdir()
    subprocess.run(
        [sys.executable, "-m", "policysupply", "examples", str(work), "-q"], check=True,
        timeout=60,
    )  # fmt: skip
    venv_bin = Path(sys.executable).parent
    tools = tmp_path / "bin"  # `cosign` in the docs is cosign 2 (the peers keep both majors)
    tools.mkdir()
    (tools / "cosign").symlink_to(peer("cosign2"))
    env = {
        "PATH": os.pathsep.join(
            [str(venv_bin), str(tools), str(peers_bin_dir()), os.environ["PATH"]]
        ),
        "HOME": str(home),
        "DOCKER_CONFIG": str(home / ".docker"),
        "COSIGN_PASSWORD": PASSWORD,
        "SSL_CERT_FILE": services["ca"],
        "POLICYSUPPLY_CA_FILE": services["ca"],
        "PAGE_DIR": str(work),
        "LANG": "C.UTF-8",
        "TERM": "dumb",
    }
    proc = subprocess.run(
        ["bash", "--noprofile", "--norc", "-s"],
        input=script,
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )
    out = proc.stdout
    failures = []
    for n, what in enumerate(expected):
        m = re.search(rf"^@@RC {n} (\d+) (\d+)$", out, re.MULTILINE)
        if m is None:
            failures.append(f"{what}: did not finish")
            break
        if m.group(1) != m.group(2):
            begin = out.index(f"@@BEGIN {n}")
            failures.append(f"{what}: exited {m.group(1)}\n{out[begin : m.start()][-3000:]}")
    assert not failures, "\n\n".join(failures) + f"\n\nstderr:\n{proc.stderr[-3000:]}"


def test_readme_links_stay_in_the_repository() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)]+)\)", text) + re.findall(r"<(https?://[^>]+)>", text):
        assert not re.match(r"^[a-z]+://", target), f"README links out of the repository: {target}"
        assert (ROOT / target.split("#", 1)[0]).exists(), (
            f"README links to a missing file: {target}"
        )


def test_shlex_can_read_every_console_command() -> None:
    # A stray quote in a doc command fails here with its location, not as a shell error.
    for page in PAGES:
        for b in blocks(page):
            if b.lang in {"console", "bash", "shell", "sh"} and not (
                b.marker and b.marker[0] == "skip"
            ):
                for cmd in commands(b.text):
                    try:
                        shlex.split(cmd.replace("\\\n", " "), comments=True)
                    except ValueError as exc:
                        pytest.fail(f"{b.where}: {cmd!r}: {exc}")


def test_troubleshooting_covers_every_error_type() -> None:
    import policysupply.errors

    text = (ROOT / "docs" / "troubleshooting.md").read_text(encoding="utf-8")
    for name in policysupply.errors.__all__:
        assert f"`{name}`" in text, f"docs/troubleshooting.md does not explain {name}"
