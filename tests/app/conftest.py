"""The services the App tests run: the room-booking saga of Getting started.

The example project (docs/examples/getting_started) is imported as it is, so these tests
also keep the guide's code running under the App.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "getting_started"
SCHEMAS = EXAMPLE / "schemas"


@pytest.fixture
def hotel() -> Iterator[ModuleType]:
    """Return the example's ``hotel`` module (its rooms live in each run's own store)."""
    sys.path.insert(0, str(EXAMPLE))
    try:
        import hotel as module

        yield module
    finally:
        sys.path.remove(str(EXAMPLE))


@pytest.fixture
def events(hotel: ModuleType) -> ModuleType:
    """Return the example's generated ``events`` module."""
    import events as module

    return module
