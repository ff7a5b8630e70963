"""Let pytest rewrite the asserts of the packaged contract suite for readable failures."""

import pytest

pytest.register_assert_rewrite("choreo.testing.transport_contract")
