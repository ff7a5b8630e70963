"""Optional dependencies: import one, or say which ``choreo[...]`` extra installs it.

The core install (``pip install choreo``) holds what every user needs: confluent-kafka
(the default transport), fastavro, click and rich. The rest is an extra:

- ``choreo[kafka-python]``: the pure-Python transport (kafka-python, and crc32c, its
  C CRC-32C that makes it about 1.5x faster); the confluent transport also uses it to
  remove a static member from its group at once when it leaves for good, and to find and
  end hanging transactions (:mod:`choreo.transports.hanging`);
- ``choreo[yaml]``: PyYAML, for AsyncAPI documents as YAML (``choreo asyncapi``);
- ``choreo[postgres]``, ``choreo[registry]``, ``choreo[metrics]``, ``choreo[otel]``
  (see the install page of the documentation).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from choreo.errors import ConfigurationError

__all__ = ["require"]


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Return the imported ``module``, or raise ConfigurationError naming the extra to install.

    ``purpose`` says what needs it, e.g. ``"the kafka-python transport"``.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigurationError(
            f"{purpose} needs the Python package {module!r}, which is not installed: "
            f"pip install 'choreo[{extra}]'"
        ) from exc
