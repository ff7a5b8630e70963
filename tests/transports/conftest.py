"""Let pytest rewrite the asserts of the shared contract module for readable failures."""

import pytest

pytest.register_assert_rewrite("transports.contract", "tests.transports.contract")
