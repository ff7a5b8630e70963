"""Pytest's assertion rewriting for the store contract imported from the package."""

import pytest

pytest.register_assert_rewrite("choreo.testing.store_contract")
