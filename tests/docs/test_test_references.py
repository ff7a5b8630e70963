"""The tests the documentation names as proof of a guarantee exist, under those names.

docs/operating.md's guarantee table, the README, ARCHITECTURE.md, the benchmark notes and
choreo's docstrings cite tests by path (``tests/x/test_y.py``), by path and name
(``tests/x/test_y.py::test_z``), or by a name of the file cited just before
(```::test_z``` or ```Class::test_z```). A renamed or deleted test would leave a guarantee
that reads as proven with nothing behind it; these checks catch that.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SPAN = re.compile(r"`([^`\n]+)`")
FILE_REF = re.compile(r"^(tests/[\w/.-]+?)(?:::([\w:\[\]-]+))?$")
NAME_REF = re.compile(r"^(?:::)?((?:[A-Z]\w*::)?test_\w+)(?:\[[^\]]*\])?$")


def _documents() -> list[Path]:
    """Return the files whose text may cite tests: docs, notes and choreo's modules."""
    found = [ROOT / "README.md", ROOT / "ARCHITECTURE.md", ROOT / "bench" / "README.md"]
    found += sorted((ROOT / "docs").rglob("*.md"))
    found += sorted((ROOT / "choreo").rglob("*.py"))
    return [path for path in found if path.is_file()]


def _citations(path: Path) -> list[tuple[str, str | None]]:
    """Return the (test path, test name or None) pairs ``path`` cites, in order."""
    cited: list[tuple[str, str | None]] = []
    last_file: str | None = None
    for raw in SPAN.findall(path.read_text(encoding="utf-8")):
        span = raw.strip()
        file_ref = FILE_REF.match(span)
        if file_ref is not None:
            last_file = file_ref.group(1)
            cited.append((last_file, file_ref.group(2)))
            continue
        name_ref = NAME_REF.match(span)
        if name_ref is not None and last_file is not None and "::" in span:
            cited.append((last_file, name_ref.group(1)))
    return cited


def _defined_in(source: str, name: str) -> bool:
    """Return whether ``source`` defines the function or class ``name``."""
    pattern = rf"^\s*(?:async\s+)?(?:def|class)\s+{re.escape(name)}\b"
    return re.search(pattern, source, re.M) is not None


def _defines(source: str, name: str) -> bool:
    """Return whether ``source`` defines ``test`` or ``Class::test`` (parameters dropped).

    A contract class the test file imports (a store or transport contract shipped in
    ``choreo.testing``) counts as the file's own when the file names it.
    """
    parts = [part.split("[", 1)[0] for part in name.split("::")]
    if all(_defined_in(source, part) for part in parts):
        return True
    if len(parts) != 2 or not re.search(rf"\b{re.escape(parts[0])}\b", source):
        return False
    for module in (ROOT / "choreo").rglob("*.py"):
        text = module.read_text(encoding="utf-8")
        if _defined_in(text, parts[0]) and _defined_in(text, parts[1]):
            return True
    return False


CITATIONS = [(doc, ref) for doc in _documents() for ref in _citations(doc)]


def test_the_documents_cite_tests() -> None:
    """The scan finds the guarantee table's citations (so an empty scan cannot pass)."""
    from_operating = [ref for doc, ref in CITATIONS if doc.name == "operating.md"]
    assert len(from_operating) >= 20
    assert any(name for _, name in from_operating)


@pytest.mark.parametrize(
    ("doc", "ref"),
    CITATIONS,
    ids=[f"{doc.relative_to(ROOT)}:{ref[0]}::{ref[1] or ''}" for doc, ref in CITATIONS],
)
def test_every_cited_test_exists(doc: Path, ref: tuple[str, str | None]) -> None:
    """Each cited test file (or folder) exists, and each cited test name is defined in it."""
    test_path, name = ref
    target = ROOT / test_path
    assert target.exists(), f"{doc.relative_to(ROOT)} cites {test_path}, which does not exist"
    if name is not None:
        source = target.read_text(encoding="utf-8")
        assert _defines(source, name), (
            f"{doc.relative_to(ROOT)} cites {test_path}::{name}, which that file does not define"
        )
