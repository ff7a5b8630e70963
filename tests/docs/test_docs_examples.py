"""The documentation cannot drift from the code: its examples run, and the site builds.

Every ```python block of README.md and of docs/**/*.md runs here, the blocks of one page
in order in one fresh interpreter (so a later block may use an earlier one's names). A
page's first line may say where it runs, ``<!-- docs-test: cwd=docs/examples/... -->``
(that directory is also put on ``sys.path``); otherwise it runs at the repository top.
A block is skipped only when the line before it says why:
``<!-- docs-test: skip, <reason> -->``. The example project of Getting started
(docs/examples/getting_started) is tested by running its own tests.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
PAGES = sorted([REPO / "README.md", *DOCS.rglob("*.md")])
FENCE = re.compile(r"^```(\S*)[^\n]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
SKIP = re.compile(r"<!--\s*docs-test:\s*skip,\s*(\S.*?)\s*-->\s*$")
CWD = re.compile(r"\A<!--\s*docs-test:\s*cwd=(\S+)\s*-->")

# Runs one page's blocks in order, in one namespace; a failing block names its line.
RUNNER = """
import json, sys
blocks = json.load(sys.stdin)
namespace = {"__name__": "__docs__"}
for name, line, code in blocks:
    exec(compile("\\n" * (line - 1) + code, name, "exec"), namespace)
"""


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page."""

    line: int
    language: str
    code: str
    skip_reason: str | None


def blocks_of(text: str) -> list[Block]:
    """Return the fenced blocks of a Markdown text, with the skip reason given before each."""
    found = []
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        skip = SKIP.search(before)
        found.append(
            Block(line + 1, match.group(1), match.group(2), skip.group(1) if skip else None)
        )
    return found


def python_blocks(page: Path) -> list[Block]:
    """Return the page's ```python blocks (not the ones included from files)."""
    return [
        b
        for b in blocks_of(page.read_text(encoding="utf-8"))
        if b.language == "python" and not b.code.lstrip().startswith("--8<--")
    ]


PAGES_WITH_CODE = [p for p in PAGES if any(b.skip_reason is None for b in python_blocks(p))]


def test_block_extraction_sees_skips_and_lines() -> None:
    text = (
        "# t\n\n```python\nx = 1\n```\n\n"
        "<!-- docs-test: skip, needs a broker -->\n```python\ny\n```\n"
    )
    blocks = blocks_of(text)
    assert [(b.line, b.code, b.skip_reason) for b in blocks] == [
        (4, "x = 1\n", None),
        (9, "y\n", "needs a broker"),
    ]


def test_the_docs_have_python_examples() -> None:
    runnable = sum(
        1 for p in PAGES_WITH_CODE for b in python_blocks(p) if b.skip_reason is None
    )
    assert runnable >= 5, runnable


@pytest.mark.parametrize(
    "page", PAGES_WITH_CODE, ids=[str(p.relative_to(REPO)) for p in PAGES_WITH_CODE]
)
def test_python_examples_of_page_run(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    cwd_match = CWD.match(text)
    cwd = REPO / cwd_match.group(1) if cwd_match else REPO
    assert cwd.is_dir(), f"{page.name}: docs-test cwd {cwd} does not exist"
    runnable = [
        (str(page.relative_to(REPO)), b.line, b.code)
        for b in python_blocks(page)
        if b.skip_reason is None
    ]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(cwd), str(REPO), *filter(None, [env.get("PYTHONPATH")])]
    )
    result = subprocess.run(
        [sys.executable, "-c", RUNNER],
        input=json.dumps(runnable),
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, f"{page.name}:\n{result.stdout}\n{result.stderr}"


INCLUDE = re.compile(r'^--8<--\s+"([^":]+)(?::[^"]*)?"', re.MULTILINE)
LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(REPO)) for p in PAGES])
def test_every_include_has_a_link_to_its_file_for_github_readers(page: Path) -> None:
    """GitHub shows a ``--8<--`` include as the bare line: the text just above links the file."""
    text = page.read_text(encoding="utf-8")
    for block in blocks_of(text):
        included = INCLUDE.match(block.code.lstrip())
        if included is None:
            continue
        target = (REPO / included.group(1)).resolve()
        assert target.is_file(), f"{page.name}:{block.line}: {target} does not exist"
        lines = text.splitlines()[: block.line - 2]
        before = "\n".join(lines[-3:])
        linked = {(page.parent / href).resolve() for href in LINK.findall(before)}
        assert target in linked, (
            f"{page.name}:{block.line}: the include of {included.group(1)} has no link to "
            "that file in the lines above it (GitHub does not render includes)"
        )


def test_getting_started_example_project_passes_its_tests() -> None:
    project = DOCS / "examples" / "getting_started"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(project), str(REPO), *filter(None, [env.get("PYTHONPATH")])]
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_hotel.py"],
        capture_output=True,
        text=True,
        cwd=project,
        env=env,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout


def test_getting_started_events_are_generated_from_its_schemas() -> None:
    project = DOCS / "examples" / "getting_started"
    result = subprocess.run(
        [sys.executable, "-m", "choreo", "schemas", "codegen", "schemas/",
         "-o", "events.py", "--check"],
        capture_output=True,
        text=True,
        cwd=project,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None,
    reason="mkdocs is not installed (pip install -e '.[docs]')",
)
def test_the_site_builds_strictly(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=280,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "getting-started" / "index.html").is_file()
    cli = (tmp_path / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    assert "choreo schemas codegen" in cli


def test_api_reference_covers_every_public_name() -> None:
    import choreo

    api = (DOCS / "reference" / "api.md").read_text(encoding="utf-8")
    rendered = set(re.findall(r"^::: [\w.]+\.(\w+)$", api, re.MULTILINE))
    named = set(re.findall(r"`(\w+)`", api))
    public = {name for name in choreo.__all__ if not name.startswith("_")}
    assert public - rendered - named == set()
    # Beyond choreo.__all__, the reference documents a few classes users reach by module.
    assert rendered <= public | {"WorkerConfig", "KafkaConfig", "TrackerGroupMember", "Migration"}
