"""Where :class:`LoggingMiddleware` was imported from; it lives in :mod:`choreo.runtime.middleware`.

:class:`LoggingMiddleware` is what :func:`~choreo.runtime.middleware.default_middleware`
installs (see its docstring); it moved beside the hooks it implements so that the two
modules do not import each other.
"""

from choreo.runtime.middleware import LoggingMiddleware

__all__ = ["LoggingMiddleware"]
