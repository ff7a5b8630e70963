"""Every public name of ``choreo`` has an entry in the API reference page.

The reference (docs/reference/api.md) is rendered by mkdocstrings from ``::: path``
directives; a name added to ``choreo.__all__`` without one would be public and
undocumented, and a directive whose path no longer resolves would break the build.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import choreo

API_PAGE = Path(__file__).resolve().parents[2] / "docs" / "reference" / "api.md"
DIRECTIVE = re.compile(r"^::: ([\w.]+)\s*$", re.MULTILINE)


def _documented() -> dict[str, object]:
    """Map each directive's dotted path to the object it resolves to."""
    found: dict[str, object] = {}
    for path in DIRECTIVE.findall(API_PAGE.read_text(encoding="utf-8")):
        module_name, _, attribute = path.rpartition(".")
        found[path] = getattr(importlib.import_module(module_name), attribute)
    return found


def test_every_public_name_has_a_reference_entry() -> None:
    """Each object in ``choreo.__all__`` is the target of some ``:::`` directive."""
    targets = {id(obj) for obj in _documented().values()}
    missing = [
        name
        for name in choreo.__all__
        if name != "__version__" and id(getattr(choreo, name)) not in targets
    ]
    assert missing == [], f"add '::: <module>.<name>' entries to {API_PAGE.name}: {missing}"


def test_every_directive_resolves() -> None:
    """No directive names a path that does not import (a moved or renamed object)."""
    assert _documented(), f"{API_PAGE.name} has no ::: directives"
